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

/// Hold a place in the month's platform-key quota for a call about to be made.
#[derive(Debug, Clone)]
pub struct ReservePlatformCall {
    pub org: String,
    pub request_id: String,
    pub at: DateTime<Utc>,
    pub limits: UsageLimits,
}

/// A command to a UsageLedger.
#[derive(Debug, Clone)]
pub enum UsageCommand {
    Record(RecordModelCall),
    Reserve(ReservePlatformCall),
}

/// A place in the platform-key quota, taken before the call so that concurrent calls cannot
/// all slip under the limit; the call's `ModelCallRecorded` follows with the same request id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlatformCallReserved {
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
}

/// An event of the UsageLedger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum UsageEvent {
    ModelCallRecorded(ModelCallRecorded),
    PlatformCallReserved(PlatformCallReserved),
}

impl DomainEvent for UsageEvent {
    fn event_type(&self) -> String {
        match self {
            Self::ModelCallRecorded(_) => "ModelCallRecorded",
            Self::PlatformCallReserved(_) => "PlatformCallReserved",
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
    pub calls: u64,
    /// Platform-key calls recorded or reserved.
    pub platform_calls: u64,
    pub platform_cost_usd: f64,
    /// Reserved calls not recorded yet (in flight): already counted in `platform_calls`.
    #[serde(default)]
    pub reserved: std::collections::BTreeSet<String>,
}

impl UsageLedger {
    fn check(&self, limits: UsageLimits) -> Result<(), UsageError> {
        if self.platform_calls >= limits.max_calls {
            return Err(UsageError::QuotaExceeded { max: limits.max_calls });
        }
        if self.platform_cost_usd >= limits.cost_cap_usd {
            return Err(UsageError::CostCapReached { cap: limits.cost_cap_usd });
        }
        Ok(())
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
                    self.check(limits)?;
                }
                UsageEvent::ModelCallRecorded(record.call)
            }
            UsageCommand::Reserve(reserve) => {
                self.check(reserve.limits)?;
                UsageEvent::PlatformCallReserved(PlatformCallReserved {
                    org: reserve.org,
                    request_id: reserve.request_id,
                    at: reserve.at,
                })
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            UsageEvent::ModelCallRecorded(call) => {
                self.calls += 1;
                if call.key_source == KeySource::Platform {
                    // A reserved call took its place in the quota already.
                    if !self.reserved.remove(&call.request_id) {
                        self.platform_calls += 1;
                    }
                    self.platform_cost_usd += call.cost_usd;
                }
            }
            UsageEvent::PlatformCallReserved(reserved) => {
                self.platform_calls += 1;
                self.reserved.insert(reserved.request_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    fn made(source: KeySource) -> ModelCallRecorded {
        ModelCallRecorded {
            org: "acme".to_owned(),
            request_id: "req-1".to_owned(),
            provider: ProviderId::Openai,
            model: "gpt-4o-mini".to_owned(),
            input_tokens: 100,
            output_tokens: 20,
            cost_usd: 0.5,
            key_source: source,
            key_version: None,
            at: DateTime::from_timestamp(1_767_225_600, 0).expect("instant"),
        }
    }

    fn call(source: KeySource, limits: Option<UsageLimits>) -> UsageCommand {
        UsageCommand::Record(RecordModelCall { call: made(source), limits })
    }

    fn reserve(request_id: &str) -> UsageCommand {
        UsageCommand::Reserve(ReservePlatformCall {
            org: "acme".to_owned(),
            request_id: request_id.to_owned(),
            at: made(KeySource::Platform).at,
            limits: LIMITS,
        })
    }

    fn reserved(request_id: &str) -> UsageEvent {
        UsageEvent::PlatformCallReserved(PlatformCallReserved {
            org: "acme".to_owned(),
            request_id: request_id.to_owned(),
            at: made(KeySource::Platform).at,
        })
    }

    fn recorded(source: KeySource) -> UsageEvent {
        UsageEvent::ModelCallRecorded(made(source))
    }

    const LIMITS: UsageLimits = UsageLimits { max_calls: 2, cost_cap_usd: 10.0 };

    #[tokio::test]
    async fn a_call_is_recorded_with_its_figures() {
        TestFramework::<UsageLedger>::with(())
            .given_no_previous_events()
            .when_async(call(KeySource::Platform, Some(LIMITS)))
            .await
            .then_expect_events(vec![recorded(KeySource::Platform)]);
    }

    #[tokio::test]
    async fn platform_calls_past_the_quota_are_refused() {
        TestFramework::<UsageLedger>::with(())
            .given(vec![recorded(KeySource::Platform), recorded(KeySource::Platform)])
            .when_async(call(KeySource::Platform, Some(LIMITS)))
            .await
            .then_expect_error(UsageError::QuotaExceeded { max: 2 });
    }

    #[tokio::test]
    async fn platform_calls_past_the_cost_cap_are_refused() {
        let limits = UsageLimits { max_calls: 100, cost_cap_usd: 1.0 };
        TestFramework::<UsageLedger>::with(())
            .given(vec![recorded(KeySource::Platform), recorded(KeySource::Platform)])
            .when_async(call(KeySource::Platform, Some(limits)))
            .await
            .then_expect_error(UsageError::CostCapReached { cap: 1.0 });
    }

    #[tokio::test]
    async fn byok_calls_bypass_quota_and_cap() {
        TestFramework::<UsageLedger>::with(())
            .given(vec![recorded(KeySource::Platform), recorded(KeySource::Platform)])
            .when_async(call(KeySource::Byok, Some(LIMITS)))
            .await
            .then_expect_events(vec![recorded(KeySource::Byok)]);
    }

    #[tokio::test]
    async fn a_reservation_takes_a_place_in_the_quota() {
        TestFramework::<UsageLedger>::with(())
            .given(vec![recorded(KeySource::Platform)])
            .when_async(reserve("req-2"))
            .await
            .then_expect_events(vec![reserved("req-2")]);
        TestFramework::<UsageLedger>::with(())
            .given(vec![recorded(KeySource::Platform), reserved("req-2")])
            .when_async(reserve("req-3"))
            .await
            .then_expect_error(UsageError::QuotaExceeded { max: 2 });
    }

    #[tokio::test]
    async fn a_reserved_call_is_recorded_without_counting_twice() {
        // req-1 reserved the second place; its record does not need a third.
        TestFramework::<UsageLedger>::with(())
            .given(vec![recorded(KeySource::Platform), reserved("req-1")])
            .when_async(call(KeySource::Platform, Some(LIMITS)))
            .await
            .then_expect_events(vec![recorded(KeySource::Platform)]);
        let mut ledger = UsageLedger::default();
        for event in [reserved("req-1"), recorded(KeySource::Platform)] {
            ledger.apply(event);
        }
        assert_eq!((ledger.calls, ledger.platform_calls, ledger.reserved.len()), (1, 1, 0));
    }
}
