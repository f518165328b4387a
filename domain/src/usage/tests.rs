//! The UsageLedger's rules, given/when/then.

use chrono::DateTime;
use cqrs_es::test::TestFramework;
use cqrs_es::Aggregate;

use super::ledger::*;
use crate::provider::ProviderId;

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

fn release(request_id: &str) -> UsageCommand {
    UsageCommand::Release(ReleasePlatformCall {
        org: "acme".to_owned(),
        request_id: request_id.to_owned(),
        at: made(KeySource::Platform).at,
    })
}

#[tokio::test]
async fn a_call_that_was_not_made_gives_its_place_back() {
    let released = UsageEvent::PlatformCallReleased(PlatformCallReleased {
        org: "acme".to_owned(),
        request_id: "req-2".to_owned(),
        at: made(KeySource::Platform).at,
    });
    TestFramework::<UsageLedger>::with(())
        .given(vec![recorded(KeySource::Platform), reserved("req-2")])
        .when_async(release("req-2"))
        .await
        .then_expect_events(vec![released.clone()]);
    TestFramework::<UsageLedger>::with(())
        .given(vec![recorded(KeySource::Platform), reserved("req-2"), released])
        .when_async(reserve("req-3"))
        .await
        .then_expect_events(vec![reserved("req-3")]);
}

#[tokio::test]
async fn only_a_place_still_held_is_given_back() {
    // Recorded: the call was made and keeps its place. Unknown: nothing to give back.
    TestFramework::<UsageLedger>::with(())
        .given(vec![reserved("req-1"), recorded(KeySource::Platform)])
        .when_async(release("req-1"))
        .await
        .then_expect_events(vec![]);
    TestFramework::<UsageLedger>::with(())
        .given_no_previous_events()
        .when_async(release("never"))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_reservation_sent_again_holds_one_place() {
    TestFramework::<UsageLedger>::with(())
        .given(vec![reserved("req-2")])
        .when_async(reserve("req-2"))
        .await
        .then_expect_events(vec![]);
}
