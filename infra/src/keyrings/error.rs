//! Why a Keyring command or a call's use of a Keyring did not succeed.

use cqrs_es::AggregateError;

use crate::crypto::CryptoError;
use keyledger_domain::KeyringError;
use keyledger_store::event_store::storage_failure;
use keyledger_store::StorageFailure;

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rejected(KeyringError),
    #[error("the organization changed concurrently; retry")]
    Conflict,
    #[error("event store: {0}")]
    Storage(StorageFailure),
    /// Key material could not be sealed or opened (a master key left the ring, or it was
    /// altered).
    #[error(transparent)]
    Crypto(CryptoError),
}

impl CommandError {
    /// Whether the database was unavailable: worth a 503 and a retry, not a refusal.
    #[must_use]
    pub fn unavailable(&self) -> bool {
        matches!(self, Self::Storage(failure) if failure.unavailable())
    }
}

impl From<AggregateError<KeyringError>> for CommandError {
    fn from(error: AggregateError<KeyringError>) -> Self {
        match error {
            AggregateError::UserError(e) => Self::Rejected(e),
            AggregateError::AggregateConflict => Self::Conflict,
            other => Self::Storage(storage_failure(&other)),
        }
    }
}
