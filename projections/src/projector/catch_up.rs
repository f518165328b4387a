//! Bringing projections up to the log on demand: catching up, rebuilding from position zero,
//! and waiting for a command's events to be shown (read-your-writes).

use std::sync::Arc;
use std::time::Duration;

use super::{Projection, ProjectionError, Projector};
use crate::log::{Cursor, EventLog};
use keyledger_store::Arg;

impl Projector {
    /// Applies batches to every projection until the log is exhausted; returns events read.
    ///
    /// # Errors
    /// The database's error.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let names: Vec<&'static str> = self.names().collect();
        self.drain(&names).await
    }

    /// Steps `names` until every event committed so far is applied, the pipelines side by
    /// side; returns events read, by the pipelines together (on PostgreSQL each reads the
    /// events of its own aggregate types only).
    pub(super) async fn drain(&self, names: &[&'static str]) -> Result<u64, ProjectionError> {
        let pipelines = self.pipelines(names);
        let runs = pipelines.iter().map(|group| self.drain_pipeline(group));
        let mut total = 0;
        for read in futures::future::join_all(runs).await {
            total += read?;
        }
        Ok(total)
    }

    async fn drain_pipeline(&self, names: &[&'static str]) -> Result<u64, ProjectionError> {
        let log = EventLog::new(self.pool.clone());
        let consumed = self.consumed_by(names);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut total = 0;
        let mut ahead = None;
        loop {
            let read = self.step_ahead(names, &mut ahead).await?.read;
            total += read as u64;
            if read > 0 {
                continue;
            }
            // Nothing to take yet; but committed events may still wait for older transactions
            // (anywhere on the server) to finish.
            let behind = self
                .checkpoints()
                .await?
                .into_iter()
                .filter(|(n, _)| names.contains(&n.as_str()))
                .map(|(_, c)| c)
                .min();
            match behind {
                Some(cursor)
                    if log.order().has_unsettled_after(cursor, &consumed).await?
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                _ => return Ok(total),
            }
        }
    }

    /// Empties the tables of `name` (or of every projection), puts their checkpoints back to
    /// the start of the log, and projects the whole log again; returns events read.
    ///
    /// # Errors
    /// [`ProjectionError::Unknown`] for a name that is not a projection; the database's error.
    pub async fn rebuild(&self, name: Option<&str>) -> Result<u64, ProjectionError> {
        let chosen: Vec<&Arc<dyn Projection>> = match name {
            Some(name) => vec![self
                .projections
                .iter()
                .find(|p| p.name() == name)
                .ok_or_else(|| ProjectionError::Unknown(name.to_owned()))?],
            None => self.projections.iter().collect(),
        };
        self.ensure_checkpoints().await?;
        let mut tx = self.pool.begin().await?;
        for projection in &chosen {
            // Steps of the running projector wait behind this lock.
            tx.lock_rows("projection_checkpoints", "name", &[projection.name()]).await?;
            for (index, _) in projection.bulk_load_indexes() {
                tx.execute(&format!("drop index if exists {index}"), &[]).await?;
            }
            for table in projection.tables() {
                // Rolls back with the transaction, like everything here.
                tx.empty(table).await?;
            }
            tx.execute(
                "update projection_checkpoints set transaction_id = 0, position = 0 where name = $1",
                &[Arg::Text(projection.name().to_owned())],
            )
            .await?;
        }
        tx.commit().await?;
        // Waiters must not take the checkpoints before the rebuild for where the views stand.
        *self.shared_read.lock().await = None;
        let names: Vec<&'static str> = chosen.iter().map(|p| p.name()).collect();
        let read = self.drain(&names).await?;
        self.create_bulk_load_indexes(&chosen).await?;
        Ok(read)
    }

    /// Waits until every projection that shows events of `aggregate_type` has passed `target`
    /// (an event of that type), or `timeout` elapses; whether it did. The others need not
    /// move: they have nothing of it to show.
    pub async fn wait_until(
        &self,
        target: Cursor,
        aggregate_type: &str,
        timeout: Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut progress = self.progress.subscribe();
        let showing = self.consumers_of(aggregate_type);
        if self.known_to_have_passed(target, &showing).await {
            return true;
        }
        loop {
            match self.shared_checkpoints().await {
                Ok(checkpoints) if all_passed(&checkpoints, &showing, target) => return true,
                _ => {}
            }
            self.nudge_for(aggregate_type);
            tokio::select! {
                _ = progress.changed() => {}
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
                () = tokio::time::sleep_until(deadline) => return false,
            }
        }
    }

    /// Whether every projection named in `showing` is known to have passed `target`, without
    /// asking the database: by the last read of the checkpoints, kept true to this process's
    /// steps since. Checkpoints only move forward (a rebuild forgets what was known), so most
    /// waits for an organization's latest event end here.
    async fn known_to_have_passed(&self, target: Cursor, showing: &[&str]) -> bool {
        let known = self.shared_read.lock().await;
        known.as_ref().is_some_and(|(_, known)| all_passed(known, showing, target))
    }

    /// The checkpoints, as read by a read that began after this was asked. Waiters asking at
    /// once share a read: one waits for the read under way to end, and if that read began after
    /// it asked, takes its answer; otherwise it reads, for itself and whoever asks meanwhile.
    async fn shared_checkpoints(&self) -> Result<Vec<(String, Cursor)>, ProjectionError> {
        let asked = tokio::time::Instant::now();
        let mut latest = self.shared_read.lock().await;
        if let Some((began, checkpoints)) = latest.as_ref() {
            if *began >= asked {
                return Ok(checkpoints.clone());
            }
        }
        let began = tokio::time::Instant::now();
        let checkpoints = self.checkpoints().await?;
        *latest = Some((began, checkpoints.clone()));
        Ok(checkpoints)
    }
}

/// Whether each of the projections named `showing` stands at or past `target` in
/// `checkpoints`.
fn all_passed(checkpoints: &[(String, Cursor)], showing: &[&str], target: Cursor) -> bool {
    checkpoints
        .iter()
        .filter(|(name, _)| showing.contains(&name.as_str()))
        .all(|(_, c)| *c >= target)
}
