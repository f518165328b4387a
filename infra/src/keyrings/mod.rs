//! Organizations' Keyrings: the command side ([`Keyrings`]: load, prepare, check and seal,
//! decide, commit) and the call-key side ([`CallKeys`]: what model calls need of them, cached
//! and kept true to the log).

mod cache;
mod calls;
mod contexts;
mod error;
mod reseal;
mod store;
mod watch;

pub use calls::{CallKeys, KeyringStore};
pub use error::CommandError;
pub use reseal::ResealReport;
pub use store::{Committed, Keyrings};
