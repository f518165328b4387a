//! How long the list of single calls keeps a call (`KEYLEDGER_USAGE_CALLS_DAYS`).
//!
//! A platform making 10,000 calls a second adds 864 million rows a day to `usage_calls`; few
//! keep every one for ever. The daily totals (`usage_daily`) keep every day: the cockpit's
//! figures and the organization list never change with retention, only the recent-calls list
//! and the exports reach back no further than it. The log keeps every call whatever this says.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::watch;

use keyledger_store::{Arg, Database};

/// How often old calls are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);
/// Rows one statement deletes: a day of a busy platform goes in many short statements, none
/// holding its locks or the log for long.
const ROWS_PER_DELETE: i64 = 10_000;

/// How many days a call stays in the list of single calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRetention {
    pub days: u32,
}

impl CallRetention {
    /// Calls made before this instant are no longer listed.
    #[must_use]
    pub fn cutoff(self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - TimeDelta::days(i64::from(self.days))
    }

    /// Deletes the listed calls made before the cutoff; how many went.
    ///
    /// # Errors
    /// The database's error (what was deleted before it stays deleted).
    pub async fn prune(self, db: &Database) -> Result<u64, sqlx::Error> {
        let cutoff = self.cutoff(Utc::now());
        let row = if db.is_postgres() { "ctid" } else { "rowid" };
        let sql = format!(
            "delete from usage_calls where {row} in \
             (select {row} from usage_calls where at < $1 limit $2)"
        );
        let mut pruned = 0;
        loop {
            let deleted = db.execute(&sql, &[Arg::Time(cutoff), Arg::Int(ROWS_PER_DELETE)]).await?;
            pruned += deleted;
            if deleted < ROWS_PER_DELETE.unsigned_abs() {
                return Ok(pruned);
            }
        }
    }

    /// Prunes now and every hour until `shutdown` turns true. Several replicas pruning at once
    /// delete the same rows: harmless.
    pub async fn run(self, db: Database, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.prune(&db).await {
                Ok(0) => {}
                Ok(pruned) => {
                    tracing::info!(pruned, days = self.days, "old calls left the calls list")
                }
                Err(error) => {
                    tracing::warn!(%error, "could not prune the calls list; trying again later")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(PRUNE_EVERY) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}
