//! The projector at work: its pipelines, each woken by commits and polling, supervised so a
//! panic is said and the pipeline runs again.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{Projection, Projector, POLL, RETRY};
use crate::replicas::{drain_notifications, listen, next_notification, Locks};
use keyledger_store::Database;

/// How often a pipeline whose listener broke tries to listen again.
const LISTEN_AGAIN: Duration = Duration::from_secs(1);

impl Projector {
    /// The groups of projections that run side by side, each in its own transactions: on
    /// PostgreSQL, projections of the same aggregate types together, each group reading only
    /// those types' events (the Keyring views never read a model call; the usage cockpit, one
    /// row per call, never waits behind them). SQLite writes one transaction at a time, so
    /// there it is one group.
    pub(super) fn pipelines(&self, names: &[&'static str]) -> Vec<Vec<&'static str>> {
        if !self.pool.is_postgres() {
            return vec![names.to_vec()];
        }
        let mut groups: Vec<(Vec<&'static str>, Vec<&'static str>)> = Vec::new();
        for name in names {
            let consumed = self.consumed_by(&[*name]);
            match groups.iter_mut().find(|(types, _)| *types == consumed) {
                Some((_, group)) => group.push(*name),
                None => groups.push((consumed, vec![*name])),
            }
        }
        groups.into_iter().map(|(_, group)| group).collect()
    }

    /// Keeps the projections this process may run caught up until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        if let Err(error) = self.ensure_checkpoints().await {
            tracing::error!(%error, "projector cannot create its checkpoints");
        }
        let names: Vec<&'static str> = self.names().collect();
        let runs: Vec<_> = self
            .pipelines(&names)
            .into_iter()
            .map(|group| tokio::spawn(Arc::clone(&self).supervise(group, shutdown.clone())))
            .collect();
        futures::future::join_all(runs).await;
    }

    /// Runs one pipeline, and runs it again after a pause should it panic: the panic is
    /// logged and said by [`Projector::panicked`], never lost with the task.
    async fn supervise(self: Arc<Self>, names: Vec<&'static str>, shutdown: watch::Receiver<bool>) {
        loop {
            let run = tokio::spawn(Arc::clone(&self).run_pipeline(names.clone(), shutdown.clone()));
            match run.await {
                Ok(()) => return,
                Err(error) if error.is_panic() => {
                    let panic = error.into_panic();
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".to_owned());
                    tracing::error!(pipeline = ?names, panic = %message, "a projection pipeline panicked; restarting it");
                    self.panicked_slot().insert(names.join(", "), message);
                    if *shutdown.borrow() {
                        return;
                    }
                    tokio::time::sleep(RETRY).await;
                }
                Err(_) => return, // cancelled with the runtime
            }
        }
    }

    /// A pipeline whose last run panicked and that has not completed a step since: its
    /// projections and the panic's message.
    #[must_use]
    pub fn panicked(&self) -> Option<String> {
        self.panicked_slot().iter().next().map(|(names, message)| format!("{names}: {message}"))
    }

    fn panicked_slot(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, String>> {
        self.panicked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn run_pipeline(
        self: Arc<Self>,
        names: Vec<&'static str>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut locks = Locks::default();
        let pipeline = names.join(", ");
        let mine: Vec<Arc<dyn Projection>> = self.named(&names).cloned().collect();
        let consumed: Vec<&'static str> =
            mine.iter().flat_map(|p| p.consumes().iter().copied()).collect();
        let mut nudged: Vec<watch::Receiver<u64>> = self
            .nudges
            .iter()
            .filter(|(t, _)| consumed.contains(t))
            .map(|(_, n)| n.subscribe())
            .collect();
        let mut listener = None;
        let mut listen_again_at = Instant::now();
        let gather = mine.iter().map(|p| p.gather()).min().unwrap_or_default();
        let mut ahead = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            // On PostgreSQL, a listener that broke (the database went away) is made again once
            // in a while: until then local nudges and polling carry on, but other replicas'
            // commits wait for the next poll. The step below reads whatever was committed
            // before the listener was back.
            if let (Database::Postgres(pool), None) = (&self.pool, &listener) {
                if Instant::now() >= listen_again_at {
                    listener = listen(pool, &consumed).await;
                    listen_again_at = Instant::now() + LISTEN_AGAIN;
                }
            }
            let held = match &self.pool {
                Database::Postgres(pool) => locks.acquire(pool, &mine).await,
                Database::Sqlite(_) => names.clone(),
            };
            drain_notifications(&mut listener);
            let read = if held.is_empty() {
                Ok(super::Stepped::default())
            } else {
                self.step_ahead(&held, &mut ahead).await
            };
            if read.is_ok() {
                self.panicked_slot().remove(&pipeline);
            }
            match read {
                // A full batch: more is waiting. Anything committed while a smaller one was
                // applied has nudged or notified since, so waiting for that loses nothing.
                Ok(stepped) if stepped.full => {}
                Ok(_) => {
                    // With notifications, every commit announces itself (in any replica):
                    // local nudges would only wake the pipeline twice for one commit.
                    let listening = listener.is_some();
                    tokio::select! {
                        () = any_changed(&mut nudged), if !listening => {}
                        () = tokio::time::sleep(POLL) => {}
                        notified = next_notification(&mut listener) => {
                            if !notified {
                                listener = None;
                            }
                        }
                        changed = shutdown.changed() => {
                            if changed.is_err() {
                                return;
                            }
                        }
                    }
                    if !gather.is_zero() {
                        tokio::time::sleep(gather).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "projector batch failed; retrying");
                    ahead = None;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

/// Completes when any of `receivers` has a value not seen yet.
async fn any_changed(receivers: &mut [watch::Receiver<u64>]) {
    if receivers.is_empty() {
        return std::future::pending().await;
    }
    let changes = receivers.iter_mut().map(|r| Box::pin(r.changed()));
    let _ = futures::future::select_all(changes).await;
}
