//! What recording a usage command comes to, as the writer, the ledgers and the recorder's
//! callers all see it.

use keyledger_domain::usage::{ModelCallRecorded, UsageError};
use keyledger_store::StorageFailure;

/// Why a call was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Refused(UsageError),
    #[error("usage store: {0}")]
    Storage(StorageFailure),
}

impl RecordError {
    /// Whether the database was unavailable: worth a 503 and a retry, not a refusal.
    #[must_use]
    pub fn unavailable(&self) -> bool {
        matches!(self, Self::Storage(failure) if failure.unavailable())
    }
}

/// What recording did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Recorded now, as event `sequence` of ledger `ledger_id`.
    New { call: ModelCallRecorded, ledger_id: String, sequence: usize },
    /// The request id was recorded before: this is that first call.
    Duplicate(ModelCallRecorded),
}
