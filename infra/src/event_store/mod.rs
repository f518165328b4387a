//! The event store: cqrs-es over postgres-es or sqlite-es, with snapshots that are right, and
//! group commits of many aggregates' events.

mod append;
mod heads;
mod repository;
mod snapshot_store;

pub use append::{AppendError, Appender, SnapshotUpdate};
pub use heads::Heads;
pub use repository::EventRepository;
pub(crate) use snapshot_store::serialize_event;
pub use snapshot_store::{SnapshottingStore, SNAPSHOT_EVERY};
