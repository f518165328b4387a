//! One try of a model call at one provider: choose the key, send the call within its time,
//! judge the answer, and either relay it, give way to the next provider, or stop the call.

use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::Method;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::key_choice::{Chosen, KeyUse, Reservation};
use super::relay::{Clocks, Durability, Recording, Relay};
use super::{Answer, Gateway, GatewayError};
use crate::providers::{read_bounded, Outgoing, SendError};
use crate::usage::Slot;
use keyledger_domain::routing::{judge, Failure, Verdict};
use keyledger_domain::usage::CallEstimate;
use keyledger_domain::{Keyring, KeyringCommand, OrgId, ProviderId, VerificationOutcome};
use keyledger_store::metadata::Actor;

/// Headers of the provider's answer that describe its connection, not the answer. Its
/// length stays: the body is relayed byte for byte, and a known length lets the caller's
/// client finish without waiting for a closing chunk.
const NOT_RETURNED: [&str; 4] = ["connection", "keep-alive", "transfer-encoding", "set-cookie"];

/// An error answer is read (up to this much) before it is judged.
const ERROR_BODY_LIMIT: usize = 256 * 1024;

/// One try of a call at one provider.
pub(crate) struct Try<'a> {
    pub(crate) org: &'a OrgId,
    pub(crate) keyring: &'a Keyring,
    pub(crate) actor: &'a Actor,
    /// The call's id and the provider's: a reservation and the record of its call pair up by it.
    pub(crate) attempt_id: String,
    pub(crate) provider: ProviderId,
    pub(crate) method: Method,
    pub(crate) path_and_query: &'a str,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: Bytes,
    /// The model the call is sent for, if known.
    pub(crate) model: Option<String>,
    /// The model was routed from a bare name.
    pub(crate) bare: bool,
    /// Sent to the provider's OpenAI-compatible endpoint.
    pub(crate) openai_compatible: bool,
    /// A model call: metered, and counted in the platform quota.
    pub(crate) model_call: bool,
    /// The call generates output (not embeddings), for its cost estimate.
    pub(crate) expects_output: bool,
    /// Another provider may take the call if this one fails it; otherwise the provider's own
    /// failure answer goes back as it is.
    pub(crate) may_move_on: bool,
    pub(crate) deadline: Instant,
}

impl Try<'_> {
    /// The most the call is expected to use.
    fn estimate(&self) -> CallEstimate {
        CallEstimate::of_request(&self.body, self.expects_output)
    }
}

/// How one provider took a call.
pub(crate) enum Tried {
    /// It answered: this goes back to the caller.
    Answered(Answer),
    /// It failed the call in a way another provider may not.
    Failed(Failure),
}

impl Gateway {
    /// Tries the call at its provider.
    ///
    /// # Errors
    /// [`GatewayError`] when the call cannot be made there (no key, no quota: another provider
    /// may do) or must stop (a refused BYOK key, time out, storage).
    pub(crate) async fn try_at(&self, t: Try<'_>) -> Result<Tried, GatewayError> {
        use tracing::field::Empty;
        // A span per provider the call is tried at, for traces: what the usage record says,
        // never a header or a body. It ends when the answer has passed through.
        let span = tracing::info_span!(
            "model_call",
            "otel.name" = %format_args!("model call {}", t.provider),
            "otel.kind" = "client",
            "otel.status_code" = Empty,
            org = %t.org,
            provider = %t.provider,
            model = t.model.as_deref().unwrap_or_default(),
            response_model = Empty,
            key_source = Empty,
            key_version = Empty,
            status = Empty,
            input_tokens = Empty,
            output_tokens = Empty,
            cost_usd = Empty,
        );
        let tried = self.attempt(t, &span).instrument(span.clone()).await;
        match &tried {
            Ok(Tried::Answered(answer)) if !answer.status.is_server_error() => {}
            _ => {
                span.record("otel.status_code", "ERROR");
            }
        }
        tried
    }

    async fn attempt(&self, t: Try<'_>, span: &tracing::Span) -> Result<Tried, GatewayError> {
        // Room in the usage backlog first: a call that could not be recorded is not made.
        let slot = if t.model_call { Some(self.usage.admit()?) } else { None };
        let estimate = || {
            let tokens = t.estimate();
            let model = t.model.as_deref().unwrap_or("*");
            self.prices.cost(t.provider, model, tokens.input_tokens, tokens.output_tokens)
        };
        let usage =
            KeyUse { attempt_id: &t.attempt_id, model_call: t.model_call, estimate_usd: estimate };
        let chosen = self.choose_key(t.org, t.keyring, t.provider, t.actor, usage).await?;
        span.record("key_source", chosen.source.as_str());
        if let Some((_, version)) = chosen.byok {
            span.record("key_version", version);
        }
        let sent = tokio::time::timeout_at(
            t.deadline,
            self.providers().forward(Outgoing {
                method: t.method.clone(),
                provider: t.provider,
                endpoint: chosen.endpoint.as_deref(),
                path_and_query: t.path_and_query,
                headers: t.headers,
                body: t.body.clone(),
                key: chosen.key.as_ref(),
                openai_compatible: t.openai_compatible,
            }),
        )
        .await;
        let upstream = match sent {
            Ok(Ok(upstream)) => upstream,
            // Checked when stored, and again where the call connects: a name can resolve
            // elsewhere since (DNS rebinding).
            Ok(Err(SendError::Refused(reason))) => {
                tracing::warn!(provider = %t.provider, %reason, "a stored endpoint is refused");
                give_back(chosen.reservation).await;
                return Ok(Tried::Failed(Failure::EndpointRefused));
            }
            Ok(Err(SendError::Transport(_))) => {
                give_back(chosen.reservation).await;
                return Ok(Tried::Failed(Failure::Unreachable));
            }
            Err(_) => {
                give_back(chosen.reservation).await;
                return Err(self.timed_out(t.provider));
            }
        };
        let status = upstream.status();
        span.record("status", status.as_u16());
        self.counts.answered(t.provider, chosen.source, status.as_u16());
        if status.is_success() || status.is_redirection() {
            return Ok(Tried::Answered(self.relayed(&t, chosen, upstream, slot, span)));
        }
        let head = upstream.headers().clone();
        let Ok(body) =
            tokio::time::timeout_at(t.deadline, read_bounded(upstream, ERROR_BODY_LIMIT)).await
        else {
            give_back(chosen.reservation).await;
            return Err(self.timed_out(t.provider));
        };
        let Chosen { key, source, byok, endpoint, reservation } = chosen;
        // Whatever follows, the call was not made: a platform call's place goes back.
        give_back(reservation).await;
        let deliver = |body: Bytes| {
            Ok(Tried::Answered(Answer {
                status,
                headers: returned_headers(&head, false),
                key_source: source,
                provider: t.provider,
                body: Box::pin(futures::stream::once(async move { Ok(body) })),
            }))
        };
        match judge(status.as_u16(), &body, t.bare, source) {
            Verdict::KeyRefused(refused) => {
                let provider = t.provider;
                let check = self.confirm_refusal(&t, Refused { key, endpoint, byok }).await;
                if check.is_refusal() || t.may_move_on {
                    return Err(GatewayError::KeyRejected { provider, refused, check });
                }
                // The key itself is not refused: the provider refused this request (a path the
                // key may not use), and says why in its own answer.
                deliver(body)
            }
            Verdict::MoveOn(failure @ Failure::PlatformKeyRefused(_)) => {
                tracing::error!(provider = %t.provider, %status, "the provider refuses the platform's key");
                Ok(Tried::Failed(failure))
            }
            Verdict::MoveOn(failure) if t.may_move_on => Ok(Tried::Failed(failure)),
            Verdict::MoveOn(_) | Verdict::Deliver => deliver(body),
        }
    }

    fn timed_out(&self, provider: ProviderId) -> GatewayError {
        GatewayError::Timeout { provider, after: self.timeouts.call }
    }

    /// A successful answer on its way back, to be recorded once it has passed through.
    fn relayed(
        &self,
        t: &Try<'_>,
        chosen: Chosen,
        upstream: reqwest::Response,
        slot: Option<Slot>,
        span: &tracing::Span,
    ) -> Answer {
        let status = upstream.status();
        // A record committed before the answer's end needs an end the client waits for: the
        // provider's length would let it finish with the last byte.
        let sync = self.durability == Durability::Sync && slot.is_some();
        let headers = returned_headers(upstream.headers(), !sync);
        let recording = slot.map(|slot| Recording {
            usage: std::sync::Arc::clone(&self.usage),
            prices: std::sync::Arc::clone(&self.prices),
            org: t.org.clone(),
            attempt_id: t.attempt_id.clone(),
            provider: t.provider,
            actor: t.actor.clone(),
            source: chosen.source,
            byok: chosen.byok,
            model: t.model.clone(),
            // A platform call belongs to the month whose quota it took a place in.
            at: chosen.reservation.as_ref().and_then(Reservation::at),
            estimate: chosen.reservation.is_some().then(|| t.estimate()),
            slot,
            durability: self.durability,
            span: span.clone(),
        });
        // The call was made: its record takes the reserved place over.
        if let Some(reservation) = chosen.reservation {
            reservation.keep();
        }
        let clocks = Clocks { deadline: t.deadline, idle: self.timeouts.stream_idle };
        Answer {
            status,
            headers,
            key_source: chosen.source,
            provider: t.provider,
            body: Box::pin(Relay::new(upstream, recording, clocks)),
        }
    }

    /// The provider refused the organization's own key on a call. keyledger checks the key
    /// itself (the provider's models listing); only a refusal that check confirms is recorded
    /// against the key, so a caller cannot mark a good key invalid by calling a path the
    /// provider refuses. The check and its record run to their end even if the caller goes
    /// away. What the check said.
    async fn confirm_refusal(&self, t: &Try<'_>, refused: Refused) -> VerificationOutcome {
        let provider = t.provider;
        let Some((key_id, version)) = refused.byok else {
            return VerificationOutcome::ProviderError;
        };
        let (keyrings, deps, org, actor) = (
            std::sync::Arc::clone(&self.keyrings),
            std::sync::Arc::clone(&self.deps),
            t.org.clone(),
            t.actor.clone(),
        );
        let (key, endpoint) = (refused.key, refused.endpoint);
        let check = tokio::spawn(async move {
            let outcome = deps.providers.verify(provider, endpoint.as_deref(), key.as_ref()).await;
            drop(key);
            if outcome.is_refusal() {
                let command =
                    KeyringCommand::RecordVerification { provider, key_id, version, outcome };
                if let Err(error) = keyrings.execute(&org, command, &actor).await {
                    tracing::warn!(%error, "could not record the refused key");
                }
            }
            outcome
        });
        check.await.unwrap_or(VerificationOutcome::ProviderError)
    }
}

/// A refused BYOK key, as the call had it.
struct Refused {
    key: Option<keyledger_domain::ApiKey>,
    endpoint: Option<String>,
    byok: Option<(u32, u32)>,
}

async fn give_back(reservation: Option<Reservation>) {
    if let Some(reservation) = reservation {
        reservation.give_back().await;
    }
}

/// The provider's headers that go back with its answer; its length only where `keep_length`
/// (a body read ahead and sent whole gets the server's own).
fn returned_headers(headers: &HeaderMap, keep_length: bool) -> HeaderMap {
    headers
        .iter()
        .filter(|(name, _)| !NOT_RETURNED.contains(&name.as_str()))
        .filter(|(name, _)| keep_length || *name != reqwest::header::CONTENT_LENGTH)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}
