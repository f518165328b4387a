//! Commands answered before the views show them, a bounded number at a time.
//!
//! A Keyring command answers once committed (and past the replica barrier); a read of the
//! views first waits until they show its organization's latest Keyring event (see
//! [`crate::state::AppState::settle`]), so a client still reads its own writes. Waiting in the
//! reads rather than in the commands takes the projector's step off every command's time:
//! commands far outnumber the reads that follow them at once.
//!
//! The views must not fall behind without end, or reads would wait for them: at most
//! [`ViewsAhead::BOUND`] commands may have answered that the views do not show yet. Past it a
//! command waits for its views before answering, as every command once did.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use keyledger_projections::{Cursor, Projector};

/// Commands that answered ahead of their views, each held until the views show it.
#[derive(Debug)]
pub struct ViewsAhead {
    room: Arc<Semaphore>,
    shown: mpsc::Sender<(Cursor, OwnedSemaphorePermit)>,
}

impl ViewsAhead {
    /// Commands that may have answered before the views show them, at most. The views apply
    /// a few thousand Keyring events a second here: this many is well under a second of
    /// their work, the longest a read should wait for them.
    pub const BOUND: usize = 256;

    /// Starts the task that lets go of each command once the views of `aggregate_type` show
    /// it (a task of the current tokio runtime, ended when this is dropped).
    #[must_use]
    pub fn start(projector: Arc<Projector>, aggregate_type: &'static str) -> Self {
        let room = Arc::new(Semaphore::new(Self::BOUND));
        let (shown, mut waiting) = mpsc::channel::<(Cursor, OwnedSemaphorePermit)>(Self::BOUND);
        tokio::spawn(async move {
            let mut held = Vec::with_capacity(Self::BOUND);
            while waiting.recv_many(&mut held, Self::BOUND).await > 0 {
                // Views that show the latest show every earlier one. Held until they do, however
                // long: views that stop moving then stop commands answering ahead of them too
                // (each waits for its views for a while, as every command once did).
                if let Some(latest) = held.iter().map(|(cursor, _)| *cursor).max() {
                    while !projector
                        .wait_until(latest, aggregate_type, Duration::from_secs(60))
                        .await
                    {
                        if waiting.is_closed() {
                            return; // the server is gone
                        }
                        tracing::warn!("the views have not moved for a minute");
                    }
                }
                held.clear();
            }
        });
        Self { room, shown }
    }

    /// Whether a command committed at `cursor` may answer now; `false` when
    /// [`ViewsAhead::BOUND`] commands already have and it must wait for its views.
    pub fn answer_ahead(&self, cursor: Cursor) -> bool {
        let Ok(permit) = Arc::clone(&self.room).try_acquire_owned() else { return false };
        // Never full: the channel has room for every permit.
        self.shown.try_send((cursor, permit)).is_ok()
    }

    /// Commands that answered and that the views do not show yet (as far as this knows).
    #[must_use]
    pub fn depth(&self) -> usize {
        Self::BOUND - self.room.available_permits()
    }
}
