//! Recording model calls on organizations' monthly usage ledgers, once per request id, with
//! the calls of many callers committed together.

mod group_commit;
mod ledgers;
mod recorder;

pub use recorder::{Overloaded, RecordError, Recorded, Slot, UsageRecorder};
