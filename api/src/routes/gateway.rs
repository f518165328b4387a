//! The gateway: a model call for an organization, with the key keyledger resolves for it,
//! forwarded to the provider and streamed back, its usage recorded from the provider's answer.

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use crate::auth::{Access, Caller};
use crate::error::{ApiError, Problem};
use crate::extract::{parse_provider, OrgParam};
use crate::routes::key_choice::{choose_key, Reservation};
use crate::routes::relay::{Recording, Relay};
use crate::state::AppState;
use keyledger_domain::{Keyring, KeyringCommand, OrgId, ProviderId, VerificationOutcome};
use keyledger_infra::providers::{Outgoing, ProviderSpec};

/// Headers of the provider's answer that describe its connection, not the answer. Its
/// length stays: the body is relayed byte for byte, and a known length lets the caller's
/// client finish without waiting for a closing chunk.
const NOT_RETURNED: [&str; 4] = ["connection", "keep-alive", "transfer-encoding", "set-cookie"];

/// What a call's body says of itself (the rest is passed over unread).
#[derive(serde::Deserialize)]
struct Requested {
    model: Option<String>,
}

/// `POST /v1/orgs/{org}/gateway/{provider}/{*path}`: forwards the body to the provider's
/// `path` with the resolved key; the provider's answer, whatever it is, goes back as it is.
#[utoipa::path(post, path = "/v1/orgs/{org}/gateway/{provider}/{path}", tag = "gateway",
    params(("org" = String, Path), ("provider" = String, Path, description = "a registry provider id"),
           ("path" = String, Path, description = "the provider's own path, e.g. v1/messages")),
    request_body(content = serde_json::Value, description = "the provider's own request body"),
    responses((status = 200, description = "the provider's answer, streamed as it comes, with x-keyledger-key-source: byok|platform"),
              (status = 429, body = Problem, content_type = "application/problem+json", description = "quota_exceeded or cost_cap_reached (platform key)"),
              (status = 502, body = Problem, content_type = "application/problem+json", description = "byok_key_rejected or provider_unreachable"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "no_key_available"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org, provider))]
pub(crate) async fn forward(
    State(state): State<AppState>,
    caller: Caller,
    Path((org, provider, path)): Path<(String, String, String)>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    let org = OrgId::parse(&org).map_err(|e| ApiError::invalid_request(e.to_string()))?;
    caller.authorize(&org, Access::RecordUsage)?;
    let provider = parse_provider(&provider)?;
    tracing::Span::current().record("org", org.as_str()).record("provider", provider.as_str());
    let body =
        body.map_err(|e| ApiError::new(e.status(), "payload_too_large", "the body is too large"))?;
    let path_and_query = match uri.query() {
        Some(query) => format!("/{path}?{query}"),
        None => format!("/{path}"),
    };
    let call = Call {
        state: &state,
        org: &org,
        keyring: state.keyrings.current(&org).await?,
        call_id: uuid::Uuid::new_v4().to_string(),
        caller: &caller,
        headers: &headers,
        requested_model: serde_json::from_slice::<Requested>(&body).ok().and_then(|r| r.model),
        body,
    };
    match call.attempt(provider, &path_and_query, false).await? {
        Attempt::Answered(response) => Ok(response),
        Attempt::Failed(error) => Err(error),
    }
}

/// `POST /v1/orgs/{org}/chat/completions`: an OpenAI-shaped chat call, sent to the provider the
/// body names (`"provider"`) or to the first that answers in the organization's provider order.
#[utoipa::path(post, path = "/v1/orgs/{org}/chat/completions", tag = "gateway",
    params(("org" = String, Path)),
    request_body(content = serde_json::Value, description = "an OpenAI chat completions body, optionally with \"provider\""),
    responses((status = 200, description = "the answering provider's OpenAI-shaped answer, with x-keyledger-key-source"),
              (status = 429, body = Problem, content_type = "application/problem+json"),
              (status = 502, body = Problem, content_type = "application/problem+json", description = "byok_key_rejected, or every candidate failed (provider_unreachable)"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "no_key_available"),
              (status = "4XX", body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
#[tracing::instrument(skip_all, fields(org = %org))]
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    caller: Caller,
    OrgParam(org): OrgParam,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, ApiError> {
    caller.authorize(&org, Access::RecordUsage)?;
    let body =
        body.map_err(|e| ApiError::new(e.status(), "payload_too_large", "the body is too large"))?;
    let mut request: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&body)
        .map_err(|_| ApiError::invalid_request("the body is not a JSON object"))?;
    let explicit = match request.remove("provider") {
        Some(serde_json::Value::String(id)) => Some(parse_provider(&id)?),
        Some(_) => return Err(ApiError::invalid_request("provider is a provider id")),
        None => None,
    };
    let keyring = state.keyrings.current(&org).await?;
    let candidates = match explicit {
        Some(provider) => vec![provider],
        None => candidates(&state, &keyring)?,
    };
    let forwarded = Bytes::from(serde_json::to_vec(&request).map_err(|e| ApiError::internal(&e))?);
    let call = Call {
        state: &state,
        org: &org,
        keyring,
        call_id: uuid::Uuid::new_v4().to_string(),
        caller: &caller,
        headers: &headers,
        requested_model: request.get("model").and_then(|m| m.as_str()).map(str::to_owned),
        body: forwarded,
    };
    let mut failed = false;
    let mut refusal = None;
    for provider in candidates {
        let path = ProviderSpec::of(provider).chat_path;
        match call.attempt(provider, path, true).await {
            Ok(Attempt::Answered(response)) => return Ok(response),
            Ok(Attempt::Failed(error)) => {
                tracing::info!(%provider, code = error.code(), "provider failed; trying the next");
                failed = true;
            }
            // No key or no quota for this one: another provider may have them.
            Err(error)
                if matches!(
                    error.code(),
                    "no_key_available" | "quota_exceeded" | "cost_cap_reached"
                ) =>
            {
                refusal = Some(error);
            }
            Err(error) => return Err(error),
        }
    }
    match (failed, refusal) {
        (false, Some(refusal)) => Err(refusal),
        _ => Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            "provider_unreachable",
            "every candidate provider failed to answer",
        )),
    }
}

/// The providers a chat call may go to, in order: the organization's provider order, else its
/// providers with an active key, else those the platform has a key for.
fn candidates(state: &AppState, keyring: &Keyring) -> Result<Vec<ProviderId>, ApiError> {
    let ordered =
        state.keyrings.deps().plans.rules(&keyring.plan).is_some_and(|r| r.provider_order);
    let candidates: Vec<ProviderId> = if ordered && !keyring.provider_order.is_empty() {
        keyring.provider_order.clone()
    } else if keyring.byok_active() {
        ProviderId::ALL.into_iter().filter(|p| keyring.active_key(*p).is_some()).collect()
    } else {
        state.platform_keys.keys().copied().collect()
    };
    if candidates.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_key_available",
            "no provider has a key for this organization",
        ));
    }
    Ok(candidates)
}

/// One model call of one caller, as it is tried at one provider or several.
struct Call<'a> {
    state: &'a AppState,
    org: &'a OrgId,
    /// The organization's Keyring, read once per call (fresh: see `Keyrings::current`).
    keyring: Keyring,
    /// This call's own id: its reservation and its usage record pair up by it. Never the
    /// caller's request id (that stays in the events' metadata): a caller sending one id twice
    /// still makes two calls, each recorded and each counted.
    call_id: String,
    caller: &'a Caller,
    headers: &'a HeaderMap,
    /// The model the body asks for: recorded when the provider's answer does not say.
    requested_model: Option<String>,
    body: Bytes,
}

/// How one provider took a call.
enum Attempt {
    /// It answered: this goes back to the caller.
    Answered(Response),
    /// Unreachable, or (OpenAI-compatible routing) a 5xx or 429: another provider may do.
    Failed(ApiError),
}

impl Call<'_> {
    async fn attempt(
        &self,
        provider: ProviderId,
        path_and_query: &str,
        openai_compatible: bool,
    ) -> Result<Attempt, ApiError> {
        let (state, org) = (self.state, self.org);
        // One id per provider tried: a reservation and the record of its call pair up by it.
        let attempt_id = format!("{}:{provider}", self.call_id);
        let chosen =
            choose_key(state, org, &self.keyring, provider, &attempt_id, self.caller).await?;
        // Checked when stored, and again now: a name can resolve elsewhere since (DNS rebinding).
        if let Some(endpoint) = &chosen.endpoint {
            if let Err(reason) = state.endpoints.check(endpoint).await {
                return Ok(Attempt::Failed(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "provider_unreachable",
                    format!("the stored endpoint is refused: {reason}"),
                )));
            }
        }
        let sent = state
            .keyrings
            .deps()
            .providers
            .forward(Outgoing {
                provider,
                endpoint: chosen.endpoint.as_deref(),
                path_and_query,
                headers: self.headers,
                body: self.body.clone(),
                key: chosen.key.as_ref(),
                openai_compatible,
            })
            .await;
        // The plaintext is not needed past sending the request.
        drop(chosen.key);
        let reservation = chosen.reservation;
        let Ok(upstream) = sent else {
            if let Some(reservation) = reservation {
                reservation.give_back().await;
            }
            return Ok(Attempt::Failed(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "provider_unreachable",
                format!("{provider} did not answer"),
            )));
        };
        let status = upstream.status();
        state.metrics.call_answered(provider, chosen.source, status.as_u16());
        if let (Some((key_id, version)), 401 | 403) = (chosen.byok, status.as_u16()) {
            let outcome = if status == StatusCode::UNAUTHORIZED {
                VerificationOutcome::InvalidKey
            } else {
                VerificationOutcome::InsufficientPermissions
            };
            let command = KeyringCommand::RecordVerification { provider, key_id, version, outcome };
            if let Err(error) = state.execute(org, command, self.caller).await {
                tracing::warn!(error = %error.code(), "could not record the refused key");
            }
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "byok_key_rejected",
                format!("{provider} refused the organization's own key ({}); it was not replaced by the platform's", outcome.as_str()),
            ));
        }
        if openai_compatible
            && (status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS)
        {
            if let Some(reservation) = reservation {
                reservation.give_back().await;
            }
            return Ok(Attempt::Failed(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "provider_unreachable",
                format!("{provider} answered {status}"),
            )));
        }
        let mut response = Response::builder().status(status);
        for (name, value) in upstream.headers() {
            if !NOT_RETURNED.contains(&name.as_str()) {
                response = response.header(name, value);
            }
        }
        response = response
            .header("x-keyledger-key-source", HeaderValue::from_static(chosen.source.as_str()));
        // Only a call the provider took is recorded; a refusal goes back at once, and its
        // place in the quota is given back meanwhile (the reservation's drop).
        let record = status.is_success().then(|| Recording {
            state: state.clone(),
            org: org.clone(),
            attempt_id,
            provider,
            caller: self.caller.clone(),
            source: chosen.source,
            byok: chosen.byok,
            requested_model: self.requested_model.clone(),
            // A platform call belongs to the month whose quota it took a place in.
            at: reservation.as_ref().and_then(Reservation::at),
        });
        match reservation {
            Some(reservation) if record.is_some() => reservation.keep(),
            Some(reservation) => drop(reservation),
            None => {}
        }
        let body = Body::from_stream(Relay::new(upstream, record));
        response.body(body).map(Attempt::Answered).map_err(|e| ApiError::internal(&e))
    }
}
