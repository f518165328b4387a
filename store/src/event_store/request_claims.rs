//! The request ids of the model calls a batch of events records, claimed by the statement that
//! appends them on PostgreSQL.
//!
//! A trigger on the events table claims each recorded call's request id in `usage_requests`
//! (migration 0011), whoever writes the event. It reads them back out of the statement's
//! payloads, parsing each event's JSON again: a sixth of a usage batch's time went there. The
//! appender has those payloads parsed already, so it claims the ids itself, in the same
//! statement, and tells the trigger so for that transaction (migration 0019). Every other
//! writer (a single command, a restore, a hand-written insert) is still claimed for by the
//! trigger.

use cqrs_es::persist::SerializedEvent;
use serde_json::Value;

use crate::USAGE_LEDGER;

/// The setting, local to the appending transaction, that tells the trigger the ids are
/// claimed already.
pub(super) const CLAIMED_SETTING: &str = "keyledger.usage_requests_claimed";

/// The claims of a batch as columns, in the order of `usage_requests`.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct RequestClaims {
    pub(super) orgs: Vec<Option<String>>,
    pub(super) request_ids: Vec<Option<String>>,
    pub(super) ledgers: Vec<String>,
    pub(super) sequences: Vec<i64>,
}

impl RequestClaims {
    /// The claims of the calls `events` record, read from the same payload fields the
    /// trigger reads: a usage ledger's `ModelCallRecorded` holds one call, its
    /// `ModelCallsRecorded` a list. A call without them is claimed as the trigger would claim
    /// it, with nulls, which the table refuses.
    pub(super) fn of(events: &[SerializedEvent]) -> Self {
        let mut claims = Self::default();
        for event in events.iter().filter(|e| e.aggregate_type == USAGE_LEDGER) {
            let calls: Vec<&Value> = match event.event_type.as_str() {
                "ModelCallRecorded" => vec![&event.payload["ModelCallRecorded"]],
                "ModelCallsRecorded" => match &event.payload["ModelCallsRecorded"]["calls"] {
                    Value::Array(calls) => calls.iter().collect(),
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            for call in calls {
                claims.orgs.push(text(&call["org"]));
                claims.request_ids.push(text(&call["request_id"]));
                claims.ledgers.push(event.aggregate_id.clone());
                claims.sequences.push(super::append::sequence(event.sequence));
            }
        }
        claims
    }

    pub(super) fn is_empty(&self) -> bool {
        self.request_ids.is_empty()
    }
}

fn text(value: &Value) -> Option<String> {
    value.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event(
        aggregate_type: &str,
        event_type: &str,
        sequence: usize,
        payload: Value,
    ) -> SerializedEvent {
        SerializedEvent {
            aggregate_id: "acme/2026-12".to_owned(),
            sequence,
            aggregate_type: aggregate_type.to_owned(),
            event_type: event_type.to_owned(),
            event_version: "1".to_owned(),
            payload,
            metadata: json!({}),
        }
    }

    #[test]
    fn the_calls_of_usage_events_are_claimed_and_nothing_else() {
        let one = json!({"ModelCallRecorded": {"org": "acme", "request_id": "r1"}});
        let many = json!({"ModelCallsRecorded": {"calls": [
            {"org": "acme", "request_id": "r2"},
            {"org": "acme", "request_id": "r3"},
        ]}});
        let reserved = json!({"PlatformCallReserved": {"org": "acme", "request_id": "r4"}});
        let keyring = json!({"ModelCallRecorded": {"org": "acme", "request_id": "r5"}});
        let claims = RequestClaims::of(&[
            event("UsageLedger", "ModelCallRecorded", 1, one),
            event("UsageLedger", "PlatformCallReserved", 2, reserved),
            event("UsageLedger", "ModelCallsRecorded", 3, many),
            event("Keyring", "ModelCallRecorded", 4, keyring),
        ]);
        let ids: Vec<_> = claims.request_ids.iter().flatten().map(String::as_str).collect();
        assert_eq!(ids, ["r1", "r2", "r3"]);
        assert_eq!(claims.orgs, vec![Some("acme".to_owned()); 3]);
        assert_eq!(claims.ledgers, ["acme/2026-12"; 3]);
        assert_eq!(claims.sequences, [1, 3, 3]);
    }

    #[test]
    fn a_batch_without_calls_claims_nothing() {
        let released = json!({"PlatformCallReleased": {"org": "acme", "request_id": "r"}});
        assert!(RequestClaims::of(&[event("UsageLedger", "PlatformCallReleased", 1, released)])
            .is_empty());
    }
}
