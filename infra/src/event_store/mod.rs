//! The event store: cqrs-es over postgres-es or sqlite-es, with snapshots that are right.

mod repository;
mod snapshot_store;

pub use repository::EventRepository;
pub use snapshot_store::{SnapshottingStore, SNAPSHOT_EVERY};
