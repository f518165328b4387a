//! Recording model calls on organizations' monthly usage ledgers, once per request id, with
//! the calls of many callers committed together.

mod backlog;
mod group_commit;
mod ledgers;
mod outcome;
mod recorder;

pub use outcome::{RecordError, Recorded};
pub use recorder::{Overloaded, Slot, UsageRecorder};
