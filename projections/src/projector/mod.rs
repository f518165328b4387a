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

use crate::log::{Batch, Cursor, EventLog, LoggedEvent, ReadLimit, Selection};
pub use crate::projection::{Projection, ProjectionError, StepFold};
use keyledger_store::{Arg, Database};

mod catch_up;
mod lag;
mod running;

pub use lag::Lag;

/// Events read and applied per transaction, at most: twenty thousand, or as many as hold 8 MiB
/// of JSON (twenty thousand single calls, or about 380 groups of a hundred), so a pipeline's
/// memory stays bounded whatever the events carry. Read ahead, two batches are in memory at
/// once. Twice the ten thousand of earlier builds: a rebuild of a million events ran 5-10 %
/// faster (fewer round trips and batch ends), while forty thousand ran slower again (the read
/// of the next batch and the applying of this one overlap less).
pub const BATCH: ReadLimit = ReadLimit { events: 20_000, json_bytes: 8 * 1024 * 1024 };
/// Batches a step applies in one transaction on PostgreSQL, at most, when they are waiting (a
/// rebuild, a backlog): writes a projection makes once a transaction, such as the usage
/// cockpit's daily sums (one row per organization, model and day however many calls add to
/// it), are then spread over up to a hundred thousand events instead of twenty. Each batch is
/// applied while the next one is read, so a step still holds two batches in memory, not five.
/// SQLite reads inside its one writing transaction, so nothing overlaps there and a longer step
/// would only hold the writer's lock longer: it applies one batch a step.
pub const CATCH_UP_BATCHES: usize = 5;
/// How often an idle projector looks for new events when nothing woke it (on PostgreSQL a
/// notification normally does, on SQLite a local nudge).
const POLL: Duration = Duration::from_millis(100);
/// How long a pipeline that panicked waits before it runs again.
const RETRY: Duration = Duration::from_secs(1);

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
    /// The latest read of the checkpoints for commands waiting on the views, and when it began:
    /// concurrent waiters share one read instead of each asking the database.
    shared_read: tokio::sync::Mutex<Option<CheckpointsRead>>,
}

/// Where each projection stood, by name, and when the read that said so began.
type CheckpointsRead = (tokio::time::Instant, Vec<(String, Cursor)>);

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
        Self {
            pool,
            projections,
            nudges,
            progress: watch::channel(0).0,
            panicked,
            shared_read: tokio::sync::Mutex::default(),
        }
    }

    /// The names of its projections.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.projections.iter().map(|p| p.name())
    }

    /// The projections named `names`.
    fn named<'a>(
        &'a self,
        names: &'a [&'static str],
    ) -> impl Iterator<Item = &'a Arc<dyn Projection>> + 'a {
        self.projections.iter().filter(move |p| names.contains(&p.name()))
    }

    /// The aggregate types the projections named `names` show, each once: what a step of
    /// theirs reads.
    fn consumed_by(&self, names: &[&'static str]) -> Vec<&'static str> {
        self.types_of(names, |p| p.consumes())
    }

    /// The aggregate types `of` names for the projections named `names`, each once.
    fn types_of(
        &self,
        names: &[&'static str],
        of: impl Fn(&dyn Projection) -> &'static [&'static str],
    ) -> Vec<&'static str> {
        let mut types: Vec<&'static str> =
            self.named(names).flat_map(|p| of(p.as_ref()).iter().copied()).collect();
        types.sort_unstable();
        types.dedup();
        types
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

    /// Builds the projections' bulk-load indexes that are missing; on PostgreSQL two at a
    /// time, each on its own connection. A build sorts with PostgreSQL's parallel workers but
    /// writes its index alone, and a second build beside it takes the core the first leaves
    /// (a million calls' four indexes, timed by turns: 2.0–2.4 s in pairs, 2.1–2.7 s one after
    /// another; a few per cent of a rebuild). SQLite builds one at a time.
    async fn create_bulk_load_indexes(
        &self,
        projections: &[&Arc<dyn Projection>],
    ) -> Result<(), ProjectionError> {
        let at_once = if self.pool.is_postgres() { 2 } else { 1 };
        let creates: Vec<&'static str> = projections
            .iter()
            .flat_map(|p| p.bulk_load_indexes())
            .map(|(_, create)| *create)
            .collect();
        for builds in creates.chunks(at_once) {
            futures::future::try_join_all(
                builds.iter().map(|create| self.pool.execute(create, &[])),
            )
            .await?;
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

    /// Keeps what waiters know of the checkpoints true to a step just committed: `names` stand
    /// at `cursor`. Skipped while a read of them is under way (it holds the lock): that read
    /// replaces what is known anyway.
    fn known_to_stand_at(&self, names: &[&str], cursor: Cursor) {
        let Ok(mut known) = self.shared_read.try_lock() else { return };
        if let Some((_, checkpoints)) = known.as_mut() {
            for (_, at) in checkpoints.iter_mut().filter(|(name, _)| names.contains(&name.as_str()))
            {
                *at = cursor.max(*at);
            }
        }
    }

    /// Applies the next batch to the projections named `names`; returns how many events it read.
    ///
    /// # Errors
    /// The database's error; the batch is then not applied at all.
    pub async fn step(&self, names: &[&'static str]) -> Result<usize, ProjectionError> {
        Ok(self.step_ahead(names, &mut None).await?.read)
    }

    /// [`Projector::step`], reading the following batch on another connection while this one
    /// is applied (PostgreSQL; SQLite reads inside the writing transaction). A batch read ahead
    /// is used only if the checkpoints still stand where it was read from.
    async fn step_ahead(
        &self,
        names: &[&'static str],
        ahead: &mut Option<ReadAhead>,
    ) -> Result<Stepped, ProjectionError> {
        if names.is_empty() {
            return Ok(Stepped::default());
        }
        let mut tx = self.pool.begin_projecting().await?;
        // Lock the checkpoints as they are read: concurrent steps (a rebuild, another process
        // on SQLite) wait here instead of applying a batch twice.
        let checkpoints: Vec<Checkpoint> = tx
            .fetch_locked(
                "projection_checkpoints",
                "name",
                names,
                "name, transaction_id as txid, position",
            )
            .await?;
        let Some(from) =
            checkpoints.iter().map(|c| Cursor { txid: c.txid, position: c.position }).min()
        else {
            return Ok(Stepped::default());
        };
        // Only the events the step's projections show are read, the JSON of those that they
        // decode, and metadata only if one of them asks it.
        let consumed = self.consumed_by(names);
        let json_of = self.types_of(names, |p| p.reads_payloads_of());
        let without_metadata = self.named(names).all(|p| !p.reads_metadata());
        let selection = Selection { events_of: &consumed, json_of: &json_of, without_metadata };
        let mut steps: Vec<(&str, Cursor, Box<dyn StepFold + '_>)> = checkpoints
            .iter()
            .filter_map(|checkpoint| {
                let at = Cursor { txid: checkpoint.txid, position: checkpoint.position };
                let projection = self.projections.iter().find(|p| p.name() == checkpoint.name)?;
                Some((checkpoint.name.as_str(), at, projection.begin_step()))
            })
            .collect();
        let mut advanced: Vec<&str> = Vec::with_capacity(steps.len());
        // Batches that are waiting are applied in this one transaction, up to CATCH_UP_BATCHES
        // of them, each while the next is read.
        let batches = if self.pool.is_postgres() { CATCH_UP_BATCHES } else { 1 };
        let mut after = from;
        let mut full = true;
        let mut read = 0;
        for _ in 0..batches {
            let Batch { events, full: more, json_bytes } = match ahead.take() {
                Some(read) if read.from == after => {
                    read.events.await.map_err(|e| sqlx::Error::Protocol(e.to_string()))??
                }
                _ => crate::log::read_after_in(&mut tx, after, BATCH, selection).await?,
            };
            full = more;
            let Some(last) = events.last().map(|e| e.cursor) else { break };
            after = last;
            read += events.len();
            // Only a full batch says more is waiting (a rebuild, a backlog): worth reading ahead.
            if let (Database::Postgres(_), true) = (&self.pool, full) {
                let log = EventLog::new(self.pool.clone());
                let (events_of, json_of) = (consumed.clone(), json_of.clone());
                // As many events as fit the JSON bound if they are like these.
                let limit = BATCH.sized_for(events.len(), json_bytes);
                *ahead = Some(ReadAhead {
                    from: last,
                    events: tokio::spawn(async move {
                        let selection = Selection {
                            events_of: &events_of,
                            json_of: &json_of,
                            without_metadata,
                        };
                        log.read_after_of(last, limit, selection).await
                    }),
                });
            }
            for (name, at, step) in &mut steps {
                let newer: Vec<&LoggedEvent> = events.iter().filter(|e| e.cursor > *at).collect();
                if newer.is_empty() {
                    continue;
                }
                step.add(&mut tx, &newer).await?;
                if !advanced.contains(name) {
                    advanced.push(name);
                }
            }
            if !full {
                break;
            }
        }
        if read == 0 {
            return Ok(Stepped::default());
        }
        for (_, _, step) in steps {
            step.finish(&mut tx).await?;
        }
        // Every projection that applied the step now stands at its end: one statement for all
        // of them (a pipeline has a handful, so the statement has as many shapes).
        if !advanced.is_empty() {
            let (names, named) = keyledger_store::in_list(4, &advanced);
            let sql = format!(
                "update projection_checkpoints set transaction_id = $1, position = $2, \
                 updated_at = $3 where name in ({names})"
            );
            let mut args =
                vec![Arg::Int(after.txid), Arg::Int(after.position), Arg::Time(chrono::Utc::now())];
            args.extend(named);
            tx.execute(&sql, &args).await?;
        }
        tx.commit().await?;
        self.known_to_stand_at(&advanced, after);
        self.progress.send_modify(|n| *n += 1);
        Ok(Stepped { read, full })
    }
}

/// What a step did.
#[derive(Debug, Default, Clone, Copy)]
struct Stepped {
    /// Events read.
    read: usize,
    /// Whether the batch stopped at [`BATCH`]: more is waiting.
    full: bool,
}

/// A batch being read ahead from `from`.
struct ReadAhead {
    from: Cursor,
    events: tokio::task::JoinHandle<Result<Batch, sqlx::Error>>,
}
