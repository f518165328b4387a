//! keyledger's storage layer, under infra and projections alike: the one database handle
//! (PostgreSQL or an embedded SQLite file), its migrations, what a storage failure is, the SQL
//! both dialects share (and where they differ), and the event store cqrs-es runs on.

mod copy_binary;
pub mod database;
pub mod event_store;
pub mod log_months;
pub mod material;
pub mod metadata;
mod sql;
mod upsert;

pub use database::{is_unavailable, Database, DatabaseError, StorageFailure};
pub use sql::{in_list, Arg, Tx};

/// The aggregate type of the usage ledgers: the one whose events are kept by month, and whose
/// recorded calls' request ids are claimed once (the migrations' functions name it too).
pub(crate) const USAGE_LEDGER: &str = "UsageLedger";
