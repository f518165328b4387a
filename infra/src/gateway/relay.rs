//! A provider's answer on its way back to the caller, and the record of the call it made.
//!
//! The answer is passed on chunk by chunk as the caller reads it (SSE included), polled by the
//! caller's own connection: no task or queue in between, and the provider is read no faster
//! than the caller takes it. Two clocks run while it flows: the provider may stay quiet
//! between chunks for at most the stream idle timeout, and the whole call must end by its
//! deadline. When either runs out, the provider's connection is closed and a streamed answer
//! ends with an SSE `error` event both official SDKs raise. The first MiB is kept aside to
//! read the provider's usage figures from once the answer has ended, timed out, or the caller
//! has gone away.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use futures::{Stream, StreamExt as _};
use tokio::time::{Instant, Sleep};

use crate::providers::UsageFigures;
use crate::usage::{Slot, UsageRecorder};
use keyledger_domain::pricing::PriceTable;
use keyledger_domain::usage::{CallEstimate, KeySource, ModelCallRecorded, RecordModelCall};
use keyledger_domain::{OrgId, ProviderId};
use keyledger_store::metadata::Actor;

/// How much of an answer is kept to read its usage figures from (the answer itself streams on).
const USAGE_CAPTURE: usize = 1024 * 1024;

/// The body of an answer, as the API streams it to the caller.
pub type AnswerBody = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// What is needed to record a call once its answer has passed through.
#[derive(Debug)]
pub(crate) struct Recording {
    pub(crate) usage: Arc<UsageRecorder>,
    pub(crate) prices: Arc<PriceTable>,
    pub(crate) org: OrgId,
    pub(crate) attempt_id: String,
    pub(crate) provider: ProviderId,
    pub(crate) actor: Actor,
    pub(crate) source: KeySource,
    /// BYOK: (key id, version) of the key the call went out with.
    pub(crate) byok: Option<(u32, u32)>,
    /// The model the call was sent for: recorded when the provider's answer does not say.
    pub(crate) model: Option<String>,
    /// When the call counts as made (its month); `None`: when its answer ended.
    pub(crate) at: Option<DateTime<Utc>>,
    /// A platform call's estimate, recorded if the answer reports no usage (a stream cut
    /// before its usage chunk), so the cost cap still counts the call.
    pub(crate) estimate: Option<CallEstimate>,
    /// The call's place in the usage backlog, freed once its record is committed.
    pub(crate) slot: Slot,
    pub(crate) durability: Durability,
    /// The call's trace span: it ends with the answer, and is told what the call used.
    pub(crate) span: tracing::Span,
}

/// When an answered call's record is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the answer has gone back, with the records of calls answered around it (a crash
    /// can lose what is still queued: at most the usage backlog's bound).
    Async,
    /// Before the answer's end reaches the caller: a call whose answer the caller received
    /// whole is recorded, whatever happens to the process next.
    Sync,
}

/// When a relayed answer must have ended, and how long its provider may stay quiet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clocks {
    pub(crate) deadline: Instant,
    pub(crate) idle: Duration,
}

/// The provider's answer as the caller's response body.
pub(crate) struct Relay {
    upstream: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    captured: Vec<u8>,
    /// Taken when the call is recorded, so it is recorded once.
    recording: Option<Recording>,
    clocks: Clocks,
    /// When the provider last sent something.
    heard_at: Instant,
    /// Set the first time the provider keeps the caller waiting: one timer, for whichever
    /// limit comes first (most answers arrive whole and never need one).
    alarm: Option<Pin<Box<Sleep>>>,
    /// The answer is a server-sent-event stream: a timeout ends it with an `error` event.
    event_stream: bool,
    /// The last chunk ended an event (`\n\n`), so an `error` event can follow as it is.
    at_event_boundary: bool,
    ended: bool,
    /// Durability::Sync: the record being committed before the answer ends.
    committing: Option<Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl Relay {
    /// Relays `upstream`'s body under `clocks`; records the call when it ends if `recording`
    /// is given.
    pub(crate) fn new(
        upstream: reqwest::Response,
        recording: Option<Recording>,
        clocks: Clocks,
    ) -> Self {
        let event_stream = upstream
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        Self {
            upstream: Box::pin(upstream.bytes_stream()),
            captured: Vec::new(),
            recording,
            clocks,
            heard_at: Instant::now(),
            alarm: None,
            event_stream,
            at_event_boundary: true,
            ended: false,
            committing: None,
        }
    }

    /// Records the call from what was captured; the caller has its answer and does not wait.
    fn finish(&mut self) {
        self.ended = true;
        // The provider's connection closes now, not when the caller's does.
        self.upstream = Box::pin(futures::stream::empty());
        if let Some(recording) = self.recording.take() {
            let (recorded, r) = recorded(recording, &std::mem::take(&mut self.captured));
            r.usage.record_answered(r.slot, &r.org, recorded, &r.actor);
        }
    }

    /// The answer ended whole: recorded as its durability says, the commit (Sync) left to be
    /// awaited before the caller hears the end.
    fn complete(&mut self) {
        match self.recording.as_ref().map(|r| r.durability) {
            Some(Durability::Sync) => {
                self.ended = true;
                self.upstream = Box::pin(futures::stream::empty());
                let Some(recording) = self.recording.take() else { return };
                let (call, r) = recorded(recording, &std::mem::take(&mut self.captured));
                self.committing = Some(Box::pin(async move {
                    let command = RecordModelCall { call: call.clone(), limits: None };
                    match r.usage.record(&r.org, command, &r.actor).await {
                        Ok(_) => drop(r.slot),
                        // The record is not dropped for an outage: it waits, in memory, with
                        // the calls nobody waits for, until the database is back.
                        Err(error) if error.unavailable() => {
                            tracing::warn!(%error, "an answered call is held until the database is back");
                            r.usage.record_answered(r.slot, &r.org, call, &r.actor);
                        }
                        Err(error) => {
                            tracing::error!(%error, "could not record an answered call");
                            drop(r.slot);
                        }
                    }
                }));
            }
            _ => self.finish(),
        }
    }

    /// Ends a stream whose provider ran out of time: an `error` event for a streamed answer,
    /// a broken body otherwise (there is no way to say more once the head went out).
    fn time_out(&mut self, why: &str) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        let event_stream = self.event_stream;
        let separator = if self.at_event_boundary { "" } else { "\n\n" };
        tracing::warn!(reason = why, "a provider's answer ran out of time");
        self.finish();
        if !event_stream {
            return Poll::Ready(Some(Err(std::io::Error::other(why.to_owned()))));
        }
        let error = serde_json::json!({
            "type": "error",
            "error": {"type": "provider_timeout", "code": "provider_timeout", "message": why},
        });
        Poll::Ready(Some(Ok(Bytes::from(format!("{separator}event: error\ndata: {error}\n\n")))))
    }
}

impl Stream for Relay {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(commit) = self.committing.as_mut() {
            if commit.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.committing = None;
        }
        if self.ended {
            return Poll::Ready(None);
        }
        match self.upstream.poll_next_unpin(cx) {
            // A caller that reads slowly from a fast provider never sees it quiet: the call's
            // time limit is checked on every chunk too.
            Poll::Ready(Some(Ok(_))) if Instant::now() >= self.clocks.deadline => {
                return self
                    .time_out("the call reached its time limit before the provider finished");
            }
            Poll::Ready(Some(Ok(bytes))) => {
                if self.recording.is_some() {
                    let room = USAGE_CAPTURE.saturating_sub(self.captured.len());
                    self.captured.extend_from_slice(&bytes[..bytes.len().min(room)]);
                }
                if !bytes.is_empty() {
                    self.at_event_boundary = bytes.ends_with(b"\n\n");
                }
                self.heard_at = Instant::now();
                return Poll::Ready(Some(Ok(bytes)));
            }
            Poll::Ready(Some(Err(_))) => {
                self.finish();
                return Poll::Ready(Some(Err(std::io::Error::other(
                    "the provider's answer broke off",
                ))));
            }
            Poll::Ready(None) => {
                self.complete();
                return self.poll_next(cx);
            }
            Poll::Pending => {}
        }
        // Nothing new: the alarm wakes this stream when the first of its limits runs out.
        let wake_at = (self.heard_at + self.clocks.idle).min(self.clocks.deadline);
        let alarm = match &mut self.alarm {
            Some(alarm) => {
                if alarm.deadline() != wake_at {
                    alarm.as_mut().reset(wake_at);
                }
                alarm
            }
            empty => empty.insert(Box::pin(tokio::time::sleep_until(wake_at))),
        };
        if alarm.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        if Instant::now() >= self.clocks.deadline {
            return self.time_out("the call reached its time limit before the provider finished");
        }
        let why = format!("the provider sent nothing for {:?}", self.clocks.idle);
        self.time_out(&why)
    }
}

/// A caller that goes away mid-answer still made the call: it is recorded with what came.
impl Drop for Relay {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The record of a call from the answer it got, and what recording it needs.
fn recorded(r: Recording, answer: &[u8]) -> (ModelCallRecorded, Recording) {
    let figures = match (UsageFigures::from_body(answer), r.estimate) {
        (Some(figures), _) => figures,
        (None, Some(estimate)) => {
            tracing::warn!(provider = %r.provider, "the answer reported no usage: its estimate is recorded");
            UsageFigures {
                model: None,
                input_tokens: estimate.input_tokens,
                output_tokens: estimate.output_tokens,
                capped: false,
            }
            .within_bounds()
        }
        (None, None) => UsageFigures::default(),
    };
    if figures.capped {
        tracing::warn!(provider = %r.provider, "the provider reported more tokens than a call can use: recorded capped");
    }
    let model = figures.model.or_else(|| r.model.clone()).unwrap_or_else(|| "unknown".to_owned());
    let cost_usd = r.prices.cost(r.provider, &model, figures.input_tokens, figures.output_tokens);
    r.span.record("response_model", model.as_str());
    r.span.record("input_tokens", figures.input_tokens);
    r.span.record("output_tokens", figures.output_tokens);
    r.span.record("cost_usd", cost_usd);
    // The call was made: it is recorded whatever the limits say now.
    let call = ModelCallRecorded {
        org: r.org.to_string(),
        request_id: r.attempt_id.clone(),
        provider: r.provider,
        cost_usd,
        model,
        input_tokens: figures.input_tokens,
        output_tokens: figures.output_tokens,
        key_source: r.source,
        key_version: r.byok.map(|(_, version)| version),
        at: r.at.unwrap_or_else(|| Utc::now().trunc_subsecs(6)),
        capped: figures.capped,
    };
    (call, r)
}
