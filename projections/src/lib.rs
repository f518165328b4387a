//! keyledger's read models: each view a pure fold of the global event log plus its table, and
//! the projector that keeps them caught up, durable and rebuildable.

pub mod audit;
pub mod audit_tree;
pub mod log;
pub mod projection;
pub mod projector;
pub mod queries;
mod replicas;
pub mod retention;
pub mod views;

pub use log::{Batch, Cursor, EventLog, LoggedEvent, ReadLimit, Selection};
pub use projection::{Projection, ProjectionError};
pub use projector::{Lag, Projector};
pub use retention::CallRetention;
