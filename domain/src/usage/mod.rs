//! The UsageLedger aggregate: one per organization and month, recording model calls apart
//! from the Keyring so a busy organization's calls never contend with its key commands.

mod bounds;
mod estimate;
mod ledger;
#[cfg(test)]
mod tests;

pub use bounds::{capped, check_reported_at, ReportedAtError, CLOCK_SKEW, MAX_TOKENS_PER_CALL};
pub use estimate::{CallEstimate, BINARY_PAYLOAD_TOKENS, DEFAULT_MAX_OUTPUT_TOKENS};
pub use ledger::{
    group_calls, KeySource, ModelCallRecorded, ModelCallsRecorded, PlatformCallReleased,
    PlatformCallReserved, RecordModelCall, ReleasePlatformCall, ReservePlatformCall, UsageCommand,
    UsageError, UsageEvent, UsageLedger, UsageLimits,
};

use chrono::{DateTime, Datelike, Utc};

use crate::org::OrgId;

/// The aggregate id of `org`'s ledger for the month of `at`: `org/YYYY-MM`.
#[must_use]
pub fn ledger_id(org: &OrgId, at: DateTime<Utc>) -> String {
    format!("{org}/{:04}-{:02}", at.year(), at.month())
}

/// The organization a ledger id belongs to.
#[must_use]
pub fn org_of_ledger(ledger_id: &str) -> Option<OrgId> {
    ledger_id.rsplit_once('/').and_then(|(org, _)| OrgId::parse(org).ok())
}
