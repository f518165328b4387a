//! The usage backlog: model calls in flight or waiting to be recorded, counted so that it stays
//! within `KEYLEDGER_USAGE_QUEUE` (what a crash can lose is bounded by it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One command nobody waits for, counted in `unsettled` until it is dropped: answered,
/// dropped with a batch that panicked, or never taken by a writer that stopped.
#[derive(Debug)]
pub(super) struct Unsettled(Arc<AtomicU64>);

impl Unsettled {
    pub(super) fn new(unsettled: &Arc<AtomicU64>) -> Self {
        unsettled.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(unsettled))
    }

    /// One more if fewer than `bound` are unsettled; `None` when the bound is reached.
    pub(super) fn within(unsettled: &Arc<AtomicU64>, bound: u64) -> Option<Self> {
        let mut current = unsettled.load(Ordering::Acquire);
        loop {
            if current >= bound {
                return None;
            }
            match unsettled.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Self(Arc::clone(unsettled))),
                Err(now) => current = now,
            }
        }
    }
}

impl Drop for Unsettled {
    fn drop(&mut self) {
        // Release: whoever sees the count reach zero also sees what the command committed.
        self.0.fetch_sub(1, Ordering::Release);
    }
}
