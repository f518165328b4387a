//! A provider's answer on its way back to the caller, and the record of the call it made.
//!
//! The answer is passed on chunk by chunk as the caller reads it (SSE included), polled by the
//! caller's own connection: no task or queue in between, and the provider is read no faster
//! than the caller takes it. The first MiB is kept aside to read the provider's usage figures
//! from once the answer has ended, or the caller has gone away.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use futures::{Stream, StreamExt as _};

use crate::auth::Caller;
use crate::state::AppState;
use keyledger_domain::usage::{KeySource, ModelCallRecorded, UsageFigures};
use keyledger_domain::{OrgId, ProviderId};

/// How much of an answer is kept to read its usage figures from (the answer itself streams on).
const USAGE_CAPTURE: usize = 1024 * 1024;

/// What is needed to record a call once its answer has passed through.
#[derive(Debug)]
pub(crate) struct Recording {
    pub(crate) state: AppState,
    pub(crate) org: OrgId,
    pub(crate) attempt_id: String,
    pub(crate) provider: ProviderId,
    pub(crate) caller: Caller,
    pub(crate) source: KeySource,
    /// BYOK: (key id, version) of the key the call went out with.
    pub(crate) byok: Option<(u32, u32)>,
    pub(crate) requested_model: Option<String>,
    /// When the call counts as made (its month); `None`: when its answer ended.
    pub(crate) at: Option<DateTime<Utc>>,
}

type Upstream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// The provider's answer as the caller's response body.
pub(crate) struct Relay {
    upstream: Upstream,
    captured: Vec<u8>,
    /// Taken when the call is recorded, so it is recorded once.
    recording: Option<Recording>,
}

impl Relay {
    /// Relays `upstream`'s body; records the call when it ends if `recording` is given.
    pub(crate) fn new(upstream: reqwest::Response, recording: Option<Recording>) -> Self {
        Self { upstream: Box::pin(upstream.bytes_stream()), captured: Vec::new(), recording }
    }

    /// Records the call from what was captured; the caller has its answer and does not wait.
    fn finish(&mut self) {
        if let Some(recording) = self.recording.take() {
            record(recording, &std::mem::take(&mut self.captured));
        }
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.upstream.poll_next_unpin(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(bytes))) => {
                if self.recording.is_some() {
                    let room = USAGE_CAPTURE.saturating_sub(self.captured.len());
                    self.captured.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(Some(Err(_))) => {
                self.finish();
                Poll::Ready(Some(Err(std::io::Error::other("the provider's answer broke off"))))
            }
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
        }
    }
}

/// A caller that goes away mid-answer still made the call: it is recorded with what came.
impl Drop for Relay {
    fn drop(&mut self) {
        self.finish();
    }
}

fn record(r: Recording, answer: &[u8]) {
    let figures = UsageFigures::from_body(answer).unwrap_or_default();
    let model = figures.model.or(r.requested_model).unwrap_or_else(|| "unknown".to_owned());
    let call = ModelCallRecorded {
        org: r.org.to_string(),
        request_id: r.attempt_id,
        provider: r.provider,
        cost_usd: r.state.prices.cost(
            r.provider,
            &model,
            figures.input_tokens,
            figures.output_tokens,
        ),
        model,
        input_tokens: figures.input_tokens,
        output_tokens: figures.output_tokens,
        key_source: r.source,
        key_version: r.byok.map(|(_, version)| version),
        at: r.at.unwrap_or_else(|| Utc::now().trunc_subsecs(6)),
    };
    // The call was made: it is recorded whatever the limits say now, and nobody waits for it.
    r.state.usage.record_answered(&r.org, call, &r.caller.actor());
}
