//! The projector: keeps every projection caught up with the log. A batch and the checkpoints of
//! the projections it advances are written in one transaction, so a crash loses nothing and
//! doubles nothing. On PostgreSQL each projection runs under an advisory lock, so with several
//! replicas it runs in exactly one of them, and another takes over when that one dies.
//!
//! **A projection never stalls on an event.** Its batch is retried until it applies, so one
//! event it cannot apply would stop that view for every organization. Every projection must
//! therefore apply every event the log can hold, including events written before today's
//! bounds: no arithmetic that can overflow (sums saturate; counts that do not fit a bigint
//! are kept at its largest), no constraint a legal event can break, and an event it has no use
//! for skipped, not refused. `/readyz` names a projection that falls behind anyway.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::log::{Cursor, EventLog, LoggedEvent};
pub use crate::projection::{Projection, ProjectionError};
use crate::replicas::{drain_notifications, listen, next_notification, Locks};
use keyledger_store::{Arg, Database};

/// Events read and applied per transaction.
const BATCH: i64 = 10_000;
/// How often an idle projector looks for new events when nothing woke it (on PostgreSQL a
/// notification normally does, on SQLite a local nudge).
const POLL: Duration = Duration::from_millis(100);
/// How long a pipeline that panicked waits before it runs again.
const RETRY: Duration = Duration::from_secs(1);

/// How far the views trail the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Events the projection furthest behind has yet to apply (counted up to a bound).
    pub events: i64,
    /// That projection, if any is behind.
    pub projection: Option<&'static str>,
}

/// Runs projections over the log.
#[derive(Debug)]
pub struct Projector {
    pool: Database,
    projections: Vec<Arc<dyn Projection>>,
    /// A wake-up channel per aggregate type the projections consume: a pipeline wakes only
    /// for the types it projects.
    nudges: Vec<(&'static str, watch::Sender<u64>)>,
    progress: watch::Sender<u64>,
    /// Pipelines whose last run panicked (by their projections' names), with the panic's
    /// message, until they complete a step again: said by `/readyz`.
    panicked: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
}

#[derive(sqlx::FromRow)]
struct Checkpoint {
    name: String,
    txid: i64,
    position: i64,
}

impl Projector {
    /// A projector of `projections` over the log in `pool`.
    #[must_use]
    pub fn new(pool: Database, projections: Vec<Arc<dyn Projection>>) -> Self {
        let mut types: Vec<&'static str> =
            projections.iter().flat_map(|p| p.consumes().iter().copied()).collect();
        types.sort_unstable();
        types.dedup();
        let nudges = types.into_iter().map(|t| (t, watch::channel(0).0)).collect();
        let panicked = std::sync::Mutex::default();
        Self { pool, projections, nudges, progress: watch::channel(0).0, panicked }
    }

    /// The names of its projections.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.projections.iter().map(|p| p.name())
    }

    /// Wakes the pipelines that project events of `aggregate_type`: one was just written.
    pub fn nudge_for(&self, aggregate_type: &str) {
        for (_, nudges) in self.nudges.iter().filter(|(t, _)| *t == aggregate_type) {
            nudges.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Creates missing checkpoints (at the start of the log).
    ///
    /// # Errors
    /// The database's error.
    pub async fn ensure_checkpoints(&self) -> Result<(), ProjectionError> {
        // A rebuild that died while loading left its indexes dropped.
        self.create_bulk_load_indexes(&self.projections.iter().collect::<Vec<_>>()).await?;
        for name in self.names() {
            self.pool
                .execute(
                    "insert into projection_checkpoints (name, transaction_id, position) values ($1, 0, 0) \
                     on conflict (name) do nothing",
                    &[Arg::Text(name.to_owned())],
                )
                .await?;
        }
        Ok(())
    }

    async fn create_bulk_load_indexes(
        &self,
        projections: &[&Arc<dyn Projection>],
    ) -> Result<(), ProjectionError> {
        for projection in projections {
            for (_, create) in projection.bulk_load_indexes() {
                self.pool.execute(create, &[]).await?;
            }
        }
        Ok(())
    }

    /// Where each projection stands.
    ///
    /// # Errors
    /// The database's error.
    pub async fn checkpoints(&self) -> Result<Vec<(String, Cursor)>, ProjectionError> {
        let rows: Vec<Checkpoint> = self
            .pool
            .fetch_all("select name, transaction_id as txid, position from projection_checkpoints order by name", &[])
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| (r.name, Cursor { txid: r.txid, position: r.position }))
            .collect())
    }

    /// Applies the next batch to the projections named `names`; returns how many events it read.
    ///
    /// # Errors
    /// The database's error; the batch is then not applied at all.
    pub async fn step(&self, names: &[&'static str]) -> Result<usize, ProjectionError> {
        self.step_ahead(names, &mut None).await
    }

    /// [`Projector::step`], reading the following batch on another connection while this one
    /// is applied (PostgreSQL; SQLite reads inside the writing transaction). A batch read ahead
    /// is used only if the checkpoints still stand where it was read from.
    async fn step_ahead(
        &self,
        names: &[&'static str],
        ahead: &mut Option<ReadAhead>,
    ) -> Result<usize, ProjectionError> {
        if names.is_empty() {
            return Ok(0);
        }
        let mut tx = self.pool.begin_projecting().await?;
        let in_list = (1..=names.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        let args: Vec<Arg> = names.iter().map(|n| Arg::Text((*n).to_owned())).collect();
        // Lock the checkpoints first: concurrent steps (a rebuild, another process on SQLite)
        // wait here instead of applying a batch twice.
        let lock = if self.pool.is_postgres() { " for update" } else { "" };
        if !self.pool.is_postgres() {
            tx.execute(&format!("update projection_checkpoints set position = position where name in ({in_list})"), &args)
                .await?;
        }
        let checkpoints: Vec<Checkpoint> = tx
            .fetch_all(
                &format!("select name, transaction_id as txid, position from projection_checkpoints where name in ({in_list}){lock}"),
                &args,
            )
            .await?;
        let Some(from) =
            checkpoints.iter().map(|c| Cursor { txid: c.txid, position: c.position }).min()
        else {
            return Ok(0);
        };
        let mut types: Vec<&'static str> = self
            .projections
            .iter()
            .filter(|p| names.contains(&p.name()))
            .flat_map(|p| p.consumes().iter().copied())
            .collect();
        types.sort_unstable();
        types.dedup();
        let events = match ahead.take() {
            Some(read) if read.from == from => {
                read.events.await.map_err(|e| sqlx::Error::Protocol(e.to_string()))??
            }
            _ => crate::log::read_after_in(&mut tx, from, BATCH, &types).await?,
        };
        let Some(last) = events.last().map(|e| e.cursor) else {
            return Ok(0);
        };
        // Only a full batch says more is waiting (a rebuild, a backlog): worth reading ahead.
        if let (Database::Postgres(_), true) = (&self.pool, events.len() as i64 == BATCH) {
            let log = EventLog::new(self.pool.clone());
            *ahead = Some(ReadAhead {
                from: last,
                events: tokio::spawn(async move { log.read_after_of(last, BATCH, &types).await }),
            });
        }
        for checkpoint in &checkpoints {
            let at = Cursor { txid: checkpoint.txid, position: checkpoint.position };
            let Some(projection) = self.projections.iter().find(|p| p.name() == checkpoint.name)
            else {
                continue;
            };
            let newer: Vec<&LoggedEvent> = events.iter().filter(|e| e.cursor > at).collect();
            if newer.is_empty() {
                continue;
            }
            projection.apply(&mut tx, &newer).await?;
            tx.execute(
                "update projection_checkpoints set transaction_id = $1, position = $2, updated_at = $3 where name = $4",
                &[Arg::Int(last.txid), Arg::Int(last.position), Arg::Time(chrono::Utc::now()), Arg::Text(checkpoint.name.clone())],
            )
            .await?;
        }
        tx.commit().await?;
        self.progress.send_modify(|n| *n += 1);
        Ok(events.len())
    }

    /// Applies batches to every projection until the log is exhausted; returns events read.
    ///
    /// # Errors
    /// The database's error.
    pub async fn catch_up(&self) -> Result<u64, ProjectionError> {
        let names: Vec<&'static str> = self.names().collect();
        self.drain(&names).await
    }

    /// Steps `names` until every event committed so far is applied, the pipelines side by
    /// side; returns events read (by the busiest pipeline).
    async fn drain(&self, names: &[&'static str]) -> Result<u64, ProjectionError> {
        let pipelines = self.pipelines(names);
        let runs = pipelines.iter().map(|group| self.drain_pipeline(group));
        let mut total = 0;
        for read in futures::future::join_all(runs).await {
            total = total.max(read?);
        }
        Ok(total)
    }

    async fn drain_pipeline(&self, names: &[&'static str]) -> Result<u64, ProjectionError> {
        let log = EventLog::new(self.pool.clone());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut total = 0;
        let mut ahead = None;
        loop {
            let read = self.step_ahead(names, &mut ahead).await?;
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
                    if log.has_unsettled_after(cursor).await?
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
        // Steps of the running projector wait behind this lock. On SQLite it is a write, so the
        // transaction holds the write lock from its first statement: one that read first could
        // not write any more once another connection had committed (SQLITE_BUSY_SNAPSHOT).
        let lock = if self.pool.is_postgres() {
            "select name from projection_checkpoints where name = $1 for update"
        } else {
            "update projection_checkpoints set position = position where name = $1"
        };
        for projection in &chosen {
            tx.execute(lock, &[Arg::Text(projection.name().to_owned())]).await?;
            for (index, _) in projection.bulk_load_indexes() {
                tx.execute(&format!("drop index if exists {index}"), &[]).await?;
            }
            for table in projection.tables() {
                // TRUNCATE leaves no dead rows for the rebuild to wade through (and, like
                // everything here, rolls back with the transaction).
                let empty = if self.pool.is_postgres() { "truncate table" } else { "delete from" };
                tx.execute(&format!("{empty} {table}"), &[]).await?;
            }
            tx.execute(
                "update projection_checkpoints set transaction_id = 0, position = 0 where name = $1",
                &[Arg::Text(projection.name().to_owned())],
            )
            .await?;
        }
        tx.commit().await?;
        let names: Vec<&'static str> = chosen.iter().map(|p| p.name()).collect();
        let read = self.drain(&names).await?;
        self.create_bulk_load_indexes(&chosen).await?;
        Ok(read)
    }

    /// How many events the projection furthest behind has yet to apply, counted up to `bound`,
    /// and its name. Events of types a projection does not consume are not its lag (it steps
    /// over them whenever it next wakes).
    ///
    /// # Errors
    /// The database's error.
    pub async fn lag(&self, bound: i64) -> Result<Lag, ProjectionError> {
        let checkpoints = self.checkpoints().await?;
        // Projections of one pipeline stand at one checkpoint over the same types: ask once.
        let mut asked: Vec<(Cursor, &[&'static str], i64)> = Vec::new();
        let mut furthest = Lag { events: 0, projection: None };
        for projection in self.projections.iter() {
            let Some((_, at)) = checkpoints.iter().find(|(name, _)| name == projection.name())
            else {
                continue;
            };
            let consumes = projection.consumes();
            let known = asked.iter().find(|(a, c, _)| a == at && *c == consumes).map(|q| q.2);
            let behind = match known {
                Some(behind) => behind,
                None => {
                    let behind = self.behind(*at, consumes, bound).await?;
                    asked.push((*at, consumes, behind));
                    behind
                }
            };
            if behind > furthest.events {
                furthest = Lag { events: behind, projection: Some(projection.name()) };
            }
        }
        Ok(furthest)
    }

    /// Events of `types` after `at`, counted up to `bound`.
    async fn behind(
        &self,
        at: Cursor,
        types: &[&'static str],
        bound: i64,
    ) -> Result<i64, ProjectionError> {
        // PostgreSQL orders the log by (transaction, position); SQLite by position alone.
        let (after, mut args) = if self.pool.is_postgres() {
            (
                "(transaction_id, global_position) > ($2::bigint::text::xid8, $3)",
                vec![Arg::Int(bound), Arg::Int(at.txid), Arg::Int(at.position)],
            )
        } else {
            ("global_position > $2", vec![Arg::Int(bound), Arg::Int(at.position)])
        };
        let first = args.len() + 1;
        let in_list =
            (first..first + types.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
        args.extend(types.iter().map(|t| Arg::Text((*t).to_owned())));
        let sql = format!(
            "select count(*) from (select 1 from events where {after} \
             and aggregate_type in ({in_list}) limit $1) behind"
        );
        let rows: Vec<(i64,)> = self.pool.fetch_all(&sql, &args).await?;
        Ok(rows.first().map_or(0, |(n,)| *n))
    }

    /// The projections that show events of `aggregate_type`.
    pub fn consumers_of(&self, aggregate_type: &str) -> Vec<&'static str> {
        self.projections
            .iter()
            .filter(|p| p.consumes().contains(&aggregate_type))
            .map(|p| p.name())
            .collect()
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
        loop {
            match self.checkpoints().await {
                Ok(checkpoints)
                    if checkpoints
                        .iter()
                        .filter(|(name, _)| showing.contains(&name.as_str()))
                        .all(|(_, c)| *c >= target) =>
                {
                    return true
                }
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

    /// The groups of projections that run side by side, each in its own transactions: on
    /// PostgreSQL the usage cockpit (one row per call) apart from the rest; SQLite writes one
    /// transaction at a time, so there it is one group.
    fn pipelines(&self, names: &[&'static str]) -> Vec<Vec<&'static str>> {
        if !self.pool.is_postgres() {
            return vec![names.to_vec()];
        }
        let (usage, rest): (Vec<&'static str>, Vec<&'static str>) =
            names.iter().partition(|n| **n == "usage");
        [rest, usage].into_iter().filter(|group| !group.is_empty()).collect()
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
        let mine: Vec<Arc<dyn Projection>> =
            self.projections.iter().filter(|p| names.contains(&p.name())).cloned().collect();
        let consumed: Vec<&'static str> =
            mine.iter().flat_map(|p| p.consumes().iter().copied()).collect();
        let mut nudged: Vec<watch::Receiver<u64>> = self
            .nudges
            .iter()
            .filter(|(t, _)| consumed.contains(t))
            .map(|(_, n)| n.subscribe())
            .collect();
        let mut listener = match &self.pool {
            Database::Postgres(pool) => listen(pool, &consumed).await,
            Database::Sqlite(_) => None,
        };
        let gather = mine.iter().map(|p| p.gather()).min().unwrap_or_default();
        let mut ahead = None;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let held = match &self.pool {
                Database::Postgres(pool) => locks.acquire(pool, &mine).await,
                Database::Sqlite(_) => names.clone(),
            };
            drain_notifications(&mut listener);
            let read =
                if held.is_empty() { Ok(0) } else { self.step_ahead(&held, &mut ahead).await };
            if read.is_ok() {
                self.panicked_slot().remove(&pipeline);
            }
            match read {
                // A full batch: more is waiting. Anything committed while a smaller one was
                // applied has nudged or notified since, so waiting for that loses nothing.
                Ok(read) if read as i64 == BATCH => {}
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

/// A batch being read ahead from `from`.
struct ReadAhead {
    from: Cursor,
    events: tokio::task::JoinHandle<Result<Vec<LoggedEvent>, sqlx::Error>>,
}
