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
        capped: false,
    }
}

fn call(source: KeySource, limits: Option<UsageLimits>) -> UsageCommand {
    UsageCommand::Record(RecordModelCall { call: made(source), limits })
}

fn reserve(request_id: &str) -> UsageCommand {
    reserve_costing(request_id, 0.0)
}

fn reserve_costing(request_id: &str, estimated_cost_usd: f64) -> UsageCommand {
    UsageCommand::Reserve(ReservePlatformCall {
        org: "acme".to_owned(),
        request_id: request_id.to_owned(),
        at: made(KeySource::Platform).at,
        limits: LIMITS,
        estimated_cost_usd,
    })
}

fn reserved(request_id: &str) -> UsageEvent {
    reserved_costing(request_id, 0.0)
}

fn reserved_costing(request_id: &str, estimated_cost_usd: f64) -> UsageEvent {
    UsageEvent::PlatformCallReserved(PlatformCallReserved {
        org: "acme".to_owned(),
        request_id: request_id.to_owned(),
        at: made(KeySource::Platform).at,
        estimated_cost_usd,
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

const ROOMY: UsageLimits = UsageLimits { max_calls: 100, cost_cap_usd: 10.0 };

fn reserve_under(request_id: &str, estimated_cost_usd: f64, limits: UsageLimits) -> UsageCommand {
    UsageCommand::Reserve(ReservePlatformCall {
        org: "acme".to_owned(),
        request_id: request_id.to_owned(),
        at: made(KeySource::Platform).at,
        limits,
        estimated_cost_usd,
    })
}

#[tokio::test]
async fn calls_in_flight_hold_their_estimated_cost_against_the_cap() {
    // Two calls that may cost 4 USD each are running: a third would pass the 10 USD cap.
    TestFramework::<UsageLedger>::with(())
        .given(vec![reserved_costing("a", 4.0), reserved_costing("b", 4.0)])
        .when_async(reserve_under("c", 4.0, ROOMY))
        .await
        .then_expect_error(UsageError::CostCapReached { cap: 10.0 });
    TestFramework::<UsageLedger>::with(())
        .given(vec![reserved_costing("a", 4.0), reserved_costing("b", 4.0)])
        .when_async(reserve_under("c", 2.0, ROOMY))
        .await
        .then_expect_events(vec![reserved_costing("c", 2.0)]);
}

#[tokio::test]
async fn a_recorded_call_replaces_its_estimate_with_its_real_cost() {
    let mut ledger = UsageLedger::default();
    ledger.apply(reserved_costing("req-1", 9.0));
    assert!((ledger.committed_cost_usd() - 9.0).abs() < 1e-9);
    ledger.apply(recorded(KeySource::Platform));
    assert!((ledger.committed_cost_usd() - 0.5).abs() < 1e-9, "0.5 USD really spent");
    assert_eq!(ledger.platform_calls, 1);
}

#[tokio::test]
async fn a_call_given_back_frees_its_estimate() {
    let mut ledger = UsageLedger::default();
    ledger.apply(reserved_costing("req-9", 9.0));
    ledger.apply(UsageEvent::PlatformCallReleased(PlatformCallReleased {
        org: "acme".to_owned(),
        request_id: "req-9".to_owned(),
        at: made(KeySource::Platform).at,
    }));
    assert!(ledger.committed_cost_usd().abs() < 1e-9);
    assert_eq!(ledger.platform_calls, 0);
}

#[test]
fn a_reservation_recorded_before_estimates_existed_still_reads() {
    let old = r#"{"org":"acme","request_id":"r","at":"2026-01-01T00:00:00Z"}"#;
    let event: PlatformCallReserved = serde_json::from_str(old).expect("old shape");
    assert!(event.estimated_cost_usd.abs() < f64::EPSILON);
}

fn recorded_as(request_id: &str, source: KeySource, cost_usd: f64) -> UsageEvent {
    UsageEvent::ModelCallRecorded(ModelCallRecorded {
        request_id: request_id.to_owned(),
        cost_usd,
        ..made(source)
    })
}

fn released(request_id: &str) -> UsageEvent {
    UsageEvent::PlatformCallReleased(PlatformCallReleased {
        org: "acme".to_owned(),
        request_id: request_id.to_owned(),
        at: made(KeySource::Platform).at,
    })
}

fn applied(events: &[UsageEvent]) -> UsageLedger {
    let mut ledger = UsageLedger::default();
    for event in events {
        ledger.apply(event.clone());
    }
    ledger
}

#[test]
fn calls_in_a_row_are_stored_as_one_event_and_a_lone_call_as_itself() {
    let events = vec![
        recorded_as("a", KeySource::Byok, 1.0),
        recorded_as("b", KeySource::Byok, 1.0),
        reserved("c"),
        recorded_as("c", KeySource::Platform, 1.0),
        released("d"),
    ];
    let grouped = group_calls(events, 100);
    let types: Vec<String> = grouped.iter().map(cqrs_es::DomainEvent::event_type).collect();
    assert_eq!(
        types,
        ["ModelCallsRecorded", "PlatformCallReserved", "ModelCallRecorded", "PlatformCallReleased"]
    );
    assert_eq!(grouped[0].calls().len(), 2);
    assert_eq!(grouped[0].org(), Some("acme"));
}

#[test]
fn a_group_holds_at_most_its_bound() {
    let events: Vec<UsageEvent> =
        (0..7).map(|i| recorded_as(&format!("r{i}"), KeySource::Byok, 0.1)).collect();
    let sizes: Vec<usize> = group_calls(events, 3).iter().map(|e| e.calls().len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
}

#[test]
fn a_group_of_calls_reads_back_as_it_was_written() {
    let grouped = group_calls(vec![recorded(KeySource::Byok), recorded(KeySource::Platform)], 10);
    let json = serde_json::to_string(&grouped[0]).expect("serializes");
    assert!(json.starts_with(r#"{"ModelCallsRecorded":{"calls":[{"org":"acme""#), "{json}");
    assert_eq!(serde_json::from_str::<UsageEvent>(&json).expect("reads"), grouped[0]);
}

mod grouping {
    use proptest::prelude::*;

    use super::*;

    /// A ledger's history: calls on either key, reservations and releases, in any order.
    fn history() -> impl Strategy<Value = Vec<UsageEvent>> {
        let event = (0..4u8, 0..6u8, 0..50u32).prop_map(|(kind, id, cost)| {
            let id = format!("req-{id}");
            let cost = f64::from(cost) / 10.0;
            match kind {
                0 => recorded_as(&id, KeySource::Byok, cost),
                1 => recorded_as(&id, KeySource::Platform, cost),
                2 => reserved_costing(&id, cost),
                _ => released(&id),
            }
        });
        proptest::collection::vec(event, 0..60)
    }

    proptest! {
        #[test]
        fn grouping_changes_no_ledger_and_no_call(events in history(), bound in 1..8usize) {
            let grouped = group_calls(events.clone(), bound);
            prop_assert_eq!(applied(&grouped), applied(&events));
            let calls = |events: &[UsageEvent]| -> Vec<ModelCallRecorded> {
                events.iter().flat_map(|e| e.calls().to_vec()).collect()
            };
            prop_assert_eq!(calls(&grouped), calls(&events));
            prop_assert!(grouped.iter().all(|e| e.calls().len() <= bound));
            prop_assert!(grouped.len() <= events.len());
        }
    }
}
