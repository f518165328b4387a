//! Organizations' Keyrings: commands (load, decide, commit, shred), and what model calls need
//! of them, cached and kept true to the log.

mod cache;
mod calls;
mod store;
mod watch;

pub use store::{CommandError, Committed, Keyrings};
