//! Recording model calls, and the platform-key quota and cost cap as invariants.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::provider::ProviderId;

/// Whose key paid for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    Byok,
    Platform,
}

impl KeySource {
    /// The contract's name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Byok => "byok",
            Self::Platform => "platform",
        }
    }
}

/// The plan's monthly limits on platform-key calls.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsageLimits {
    pub max_calls: u64,
    pub cost_cap_usd: f64,
}

/// Record one model call, checking `limits` if it ran on the platform's key.
#[derive(Debug, Clone)]
pub struct RecordModelCall {
    pub call: ModelCallRecorded,
    /// Limits to enforce on platform-key calls; `None` records without checking.
    pub limits: Option<UsageLimits>,
}

/// Hold a place in the month's platform-key quota for a call about to be made, and what it
/// may cost in the month's cost cap.
#[derive(Debug, Clone)]
pub struct ReservePlatformCall {
    pub org: String,
    pub request_id: String,
    pub at: DateTime<Utc>,
    pub limits: UsageLimits,
    /// The most the call is expected to cost (its prompt and `max_tokens` at its model's
    /// price), held against the cost cap until its real cost is recorded.
    pub estimated_cost_usd: f64,
}

/// Give back the place a reserved call took, because the call did not happen (the provider
/// was unreachable, failed, or refused it).
#[derive(Debug, Clone)]
pub struct ReleasePlatformCall {
    pub org: String,
    pub request_id: String,
    pub at: DateTime<Utc>,
}

/// A command to a UsageLedger.
#[derive(Debug, Clone)]
pub enum UsageCommand {
    Record(RecordModelCall),
    Reserve(ReservePlatformCall),
    Release(ReleasePlatformCall),
}

/// A place in the platform-key quota, taken before the call so that concurrent calls cannot
/// all slip under the limit; the call's `ModelCallRecorded` follows with the same request id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformCallReserved {
    pub org: String,
    pub request_id: String,
    pub at: DateTime<Utc>,
    /// Held against the cost cap until the call's real cost is recorded. Reservations
    /// recorded before estimates existed read as 0 (they held a place only).
    #[serde(default)]
    pub estimated_cost_usd: f64,
}

/// A reserved place given back: the call it was for was not made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformCallReleased {
    pub org: String,
    pub request_id: String,
    pub at: DateTime<Utc>,
}

/// A model call that was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCallRecorded {
    pub org: String,
    pub request_id: String,
    pub provider: ProviderId,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    pub key_source: KeySource,
    pub key_version: Option<u32>,
    pub at: DateTime<Utc>,
    /// The provider reported more tokens than a call can use; the figures are capped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub capped: bool,
}

/// Model calls recorded one after another on one ledger, stored as one event: the same facts
/// as their `ModelCallRecorded` events in a row. One event per call made the log's row, its
/// indexes and its commit the cost of every call; a busy ledger's calls committed together
/// share them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCallsRecorded {
    pub calls: Vec<ModelCallRecorded>,
}

/// An event of the UsageLedger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UsageEvent {
    ModelCallRecorded(ModelCallRecorded),
    ModelCallsRecorded(ModelCallsRecorded),
    PlatformCallReserved(PlatformCallReserved),
    PlatformCallReleased(PlatformCallReleased),
}

impl UsageEvent {
    /// The model calls this event records: one, many, or none (a quota place).
    #[must_use]
    pub fn calls(&self) -> &[ModelCallRecorded] {
        match self {
            Self::ModelCallRecorded(call) => std::slice::from_ref(call),
            Self::ModelCallsRecorded(recorded) => &recorded.calls,
            Self::PlatformCallReserved(_) | Self::PlatformCallReleased(_) => &[],
        }
    }

    /// The organization the event belongs to (`None` only for an empty group of calls).
    #[must_use]
    pub fn org(&self) -> Option<&str> {
        match self {
            Self::PlatformCallReserved(reserved) => Some(&reserved.org),
            Self::PlatformCallReleased(released) => Some(&released.org),
            recorded => recorded.calls().first().map(|call| call.org.as_str()),
        }
    }
}

/// `events` of one ledger with each run of recorded calls stored as one event of at most
/// `max_calls` calls; a run of one stays a `ModelCallRecorded`. Applied in order, the result
/// leaves a ledger exactly as `events` would: only consecutive calls are grouped, so no call
/// moves past a reservation or a release.
#[must_use]
pub fn group_calls(events: Vec<UsageEvent>, max_calls: usize) -> Vec<UsageEvent> {
    let max_calls = max_calls.max(1);
    let mut grouped = Vec::with_capacity(events.len());
    let mut run: Vec<ModelCallRecorded> = Vec::new();
    let flush = |run: &mut Vec<ModelCallRecorded>, grouped: &mut Vec<UsageEvent>| match run.len() {
        0 => {}
        1 => grouped.extend(run.pop().map(UsageEvent::ModelCallRecorded)),
        _ => grouped.push(UsageEvent::ModelCallsRecorded(ModelCallsRecorded {
            calls: std::mem::take(run),
        })),
    };
    for event in events {
        match event {
            UsageEvent::ModelCallRecorded(call) => {
                run.push(call);
                if run.len() == max_calls {
                    flush(&mut run, &mut grouped);
                }
            }
            UsageEvent::ModelCallsRecorded(recorded) => {
                for call in recorded.calls {
                    run.push(call);
                    if run.len() == max_calls {
                        flush(&mut run, &mut grouped);
                    }
                }
            }
            other => {
                flush(&mut run, &mut grouped);
                grouped.push(other);
            }
        }
    }
    flush(&mut run, &mut grouped);
    grouped
}

impl DomainEvent for UsageEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ModelCallRecorded(_) => "ModelCallRecorded",
            Self::ModelCallsRecorded(_) => "ModelCallsRecorded",
            Self::PlatformCallReserved(_) => "PlatformCallReserved",
            Self::PlatformCallReleased(_) => "PlatformCallReleased",
        }
        .to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}

/// Why a call may not be recorded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UsageError {
    #[error("the plan's {max} platform-key calls this month are used up")]
    QuotaExceeded { max: u64 },
    #[error("the plan's platform-key cost cap of {cap} USD this month is reached")]
    CostCapReached { cap: f64 },
}

/// One organization's model calls in one month.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageLedger {
    pub(crate) calls: u64,
    /// Platform-key calls recorded or reserved.
    pub(crate) platform_calls: u64,
    pub(crate) platform_cost_usd: f64,
    /// Reserved calls not recorded yet (in flight): already counted in `platform_calls`.
    #[serde(default)]
    pub(crate) reserved: std::collections::BTreeSet<String>,
    /// What each reserved call may cost, held against the cost cap while it runs.
    #[serde(default)]
    pub(crate) reserved_cost_usd: std::collections::BTreeMap<String, f64>,
}

impl UsageLedger {
    /// What of the month's cost cap is spent, or held for platform calls in flight.
    #[must_use]
    pub fn committed_cost_usd(&self) -> f64 {
        self.platform_cost_usd + self.reserved_cost_usd.values().sum::<f64>()
    }

    /// Whether one more platform call, that may cost `estimate`, fits the month's limits.
    fn check(&self, limits: UsageLimits, estimate: f64) -> Result<(), UsageError> {
        if self.platform_calls >= limits.max_calls {
            return Err(UsageError::QuotaExceeded { max: limits.max_calls });
        }
        let committed = self.committed_cost_usd();
        if committed >= limits.cost_cap_usd || committed + estimate > limits.cost_cap_usd {
            return Err(UsageError::CostCapReached { cap: limits.cost_cap_usd });
        }
        Ok(())
    }

    fn record(&mut self, call: &ModelCallRecorded) {
        self.calls += 1;
        if call.key_source == KeySource::Platform {
            // A reserved call took its place in the quota already; its real cost replaces its
            // estimate.
            if !self.settle(&call.request_id) {
                self.platform_calls += 1;
            }
            self.platform_cost_usd += call.cost_usd;
        }
    }

    /// A reservation is settled (recorded or given back): its place and estimate go.
    fn settle(&mut self, request_id: &str) -> bool {
        self.reserved_cost_usd.remove(request_id);
        self.reserved.remove(request_id)
    }
}

impl Aggregate for UsageLedger {
    const TYPE: &'static str = "UsageLedger";
    type Command = UsageCommand;
    type Event = UsageEvent;
    type Error = UsageError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            UsageCommand::Record(record) => {
                let reserved = self.reserved.contains(&record.call.request_id);
                if let (KeySource::Platform, Some(limits), false) =
                    (record.call.key_source, record.limits, reserved)
                {
                    self.check(limits, 0.0)?;
                }
                UsageEvent::ModelCallRecorded(record.call)
            }
            // A place already held is not taken twice (a reservation sent again).
            UsageCommand::Reserve(reserve) if self.reserved.contains(&reserve.request_id) => {
                return Ok(());
            }
            UsageCommand::Reserve(reserve) => {
                let estimate = reserve.estimated_cost_usd.max(0.0);
                self.check(reserve.limits, estimate)?;
                UsageEvent::PlatformCallReserved(PlatformCallReserved {
                    org: reserve.org,
                    request_id: reserve.request_id,
                    at: reserve.at,
                    estimated_cost_usd: estimate,
                })
            }
            // Only a place still held can be given back: a recorded call keeps its place.
            UsageCommand::Release(release) if !self.reserved.contains(&release.request_id) => {
                return Ok(());
            }
            UsageCommand::Release(release) => {
                UsageEvent::PlatformCallReleased(PlatformCallReleased {
                    org: release.org,
                    request_id: release.request_id,
                    at: release.at,
                })
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UsageEvent::ModelCallRecorded(call) => self.record(&call),
            UsageEvent::ModelCallsRecorded(recorded) => {
                for call in &recorded.calls {
                    self.record(call);
                }
            }
            UsageEvent::PlatformCallReserved(reserved) => {
                self.platform_calls += 1;
                if reserved.estimated_cost_usd > 0.0 {
                    self.reserved_cost_usd
                        .insert(reserved.request_id.clone(), reserved.estimated_cost_usd);
                }
                self.reserved.insert(reserved.request_id);
            }
            UsageEvent::PlatformCallReleased(released) => {
                if self.settle(&released.request_id) {
                    self.platform_calls = self.platform_calls.saturating_sub(1);
                }
            }
        }
    }
}
