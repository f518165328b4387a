//! The event store: cqrs-es over postgres-es or sqlite-es, with snapshots that are right, and
//! group commits of many aggregates' events.

mod append;
mod global_order;
mod group_commit;
mod heads;
mod one_statement;
mod org_history;
mod repository;
mod request_claims;
mod snapshot_store;

pub use append::{AppendError, Appender, SnapshotUpdate};
pub use global_order::{
    count_after_sql, read_after_in, read_after_statement, Batch, Cursor, GlobalOrder, ReadLimit,
    Selection, StoredEvent, COUNT_AFTER_PLAN,
};
pub use heads::Heads;
pub use repository::EventRepository;
pub use snapshot_store::serialize_event;
pub use snapshot_store::{Commit, SnapshottingStore, SNAPSHOT_EVERY};

use cqrs_es::AggregateError;

use crate::database::StorageFailure;

/// What an aggregate's store failed with, other than the aggregate's own refusal or a
/// conflict, classified by the database error cqrs-es boxed.
pub fn storage_failure<E: std::error::Error>(error: &AggregateError<E>) -> StorageFailure {
    match error {
        AggregateError::DatabaseConnectionError(cause)
        | AggregateError::DeserializationError(cause)
        | AggregateError::UnexpectedError(cause) => StorageFailure::of(cause.as_ref()),
        other => StorageFailure::other(other.to_string()),
    }
}
