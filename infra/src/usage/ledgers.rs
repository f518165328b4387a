//! The usage ledgers as this process knows them: loaded from the store, kept in memory between
//! commits, and committed one command at a time when a group commit could not take them.

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::{Aggregate, AggregateError, EventStore};

use super::outcome::{RecordError, Recorded};
use keyledger_domain::usage::{ModelCallRecorded, UsageCommand, UsageEvent, UsageLedger};
use keyledger_domain::OrgId;
use keyledger_store::event_store::{storage_failure, EventRepository, SnapshottingStore};
use keyledger_store::{Database, StorageFailure};

/// Attempts before concurrent recorders on one ledger (across replicas) give up.
const ATTEMPTS: usize = 20;

/// A ledger's state and where it stands in the log.
#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub(super) ledger: UsageLedger,
    pub(super) sequence: usize,
    pub(super) snapshot: Option<usize>,
}

/// Where a ledger's state came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Freshness {
    /// Loaded from the store just now.
    Loaded,
    /// Kept in memory since this process last committed it.
    Kept,
}

/// What committing one command did.
#[derive(Debug)]
pub(super) enum Done {
    Recorded(Recorded),
    /// A place in the platform-key quota was taken or given back.
    Quota,
}

impl Done {
    /// What committing `command` did, its last event being `sequence` of ledger `id`.
    pub(super) fn of(command: &UsageCommand, id: &str, sequence: usize) -> Self {
        match command {
            UsageCommand::Record(record) => Self::Recorded(Recorded::New {
                call: record.call.clone(),
                ledger_id: id.to_owned(),
                sequence,
            }),
            UsageCommand::Reserve(_) | UsageCommand::Release(_) => Self::Quota,
        }
    }
}

/// All organizations' usage ledgers.
#[derive(Debug)]
pub(super) struct Ledgers {
    pub(super) store: SnapshottingStore<EventRepository, UsageLedger>,
    pub(super) db: Database,
    /// Each ledger as this process last committed it. Only the group-commit writer changes
    /// it; a stale entry (another replica committed since) is caught by the events table's
    /// key on commit, dropped, and the ledger loaded again.
    /// At most a bound of ledgers (`KEYLEDGER_CACHE_ORGS`), the least recently used leaving
    /// first: last month's ledgers leave as this month's come, and a ledger that left is
    /// loaded again from its snapshot.
    cached: std::sync::Mutex<hashlink::LruCache<String, Cached>>,
    /// Model calls recorded (new, not repeated) since the process started.
    pub(super) recorded: std::sync::atomic::AtomicU64,
    /// Records queued without anyone waiting for them and not yet committed or failed.
    pub(super) unsettled: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Ledgers {
    pub(super) fn new(db: &Database) -> Self {
        Self {
            store: SnapshottingStore::new(EventRepository::new(db)),
            db: db.clone(),
            cached: std::sync::Mutex::new(hashlink::LruCache::new(
                crate::config::DEFAULT_CACHE_ORGS,
            )),
            recorded: std::sync::atomic::AtomicU64::new(0),
            unsettled: std::sync::Arc::default(),
        }
    }

    /// Ledger `id` as last committed here, else as stored; and whether it was just loaded.
    ///
    /// A state kept here can be behind the store: another replica may have recorded calls
    /// (caught by the events' key on commit) or given quota places back (not caught: a
    /// refusal writes nothing). So a refusal decided on a kept state is decided again on a
    /// fresh one before it stands.
    pub(super) async fn state(&self, id: &str) -> Result<(Cached, Freshness), RecordError> {
        if let Some(cached) = self.cached.lock().ok().and_then(|mut c| c.get(id).cloned()) {
            return Ok((cached, Freshness::Kept));
        }
        let context = self.store.load_aggregate(id).await.map_err(storage)?;
        let state = Cached {
            ledger: context.aggregate,
            sequence: context.current_sequence,
            snapshot: context.current_snapshot,
        };
        Ok((state, Freshness::Loaded))
    }

    pub(super) fn remember(&self, id: String, state: Cached) {
        if let Ok(mut cached) = self.cached.lock() {
            cached.insert(id, state);
        }
    }

    /// Keeps at most `ledgers` ledgers from now on.
    pub(super) fn bound(&self, ledgers: usize) {
        if let Ok(mut cached) = self.cached.lock() {
            cached.set_capacity(ledgers.max(1));
        }
    }

    /// Whether ledger `id` is held in memory.
    pub(super) fn holds(&self, id: &str) -> bool {
        self.cached.lock().is_ok_and(|cached| cached.contains_key(id))
    }

    /// Ledgers held in memory.
    pub(super) fn held(&self) -> usize {
        self.cached.lock().map_or(0, |cached| cached.len())
    }

    pub(super) fn forget_all(&self) {
        if let Ok(mut cached) = self.cached.lock() {
            cached.clear();
        }
    }

    pub(super) fn forget(&self, id: &str) {
        if let Ok(mut cached) = self.cached.lock() {
            cached.remove(id);
        }
    }

    /// The call `org` recorded under `request_id`, if any.
    pub(super) async fn find(
        &self,
        org: &OrgId,
        request_id: &str,
    ) -> Result<Option<ModelCallRecorded>, RecordError> {
        // The claim says which event holds the call; the event, which of its calls it is.
        let sql = |payload: &str| {
            format!(
                "select {payload} from usage_requests r join events e \
                 on e.aggregate_type = 'UsageLedger' and e.aggregate_id = r.ledger \
                 and e.sequence = r.sequence where r.org = $1 and r.request_id = $2"
            )
        };
        let payload: Option<String> = match &self.db {
            Database::Postgres(pool) => {
                sqlx::query_scalar(&sql("e.payload::text"))
                    .bind(org.as_str())
                    .bind(request_id)
                    .fetch_optional(pool)
                    .await
            }
            Database::Sqlite(pool) => {
                sqlx::query_scalar(&sql("e.payload"))
                    .bind(org.as_str())
                    .bind(request_id)
                    .fetch_optional(pool)
                    .await
            }
        }
        .map_err(|e| RecordError::Storage(e.into()))?;
        let Some(event) = payload.and_then(|p| serde_json::from_str::<UsageEvent>(&p).ok()) else {
            return Ok(None);
        };
        Ok(event.calls().iter().find(|call| call.request_id == request_id).cloned())
    }

    /// Commits `command` on ledger `id` in a transaction of its own, loading the ledger again
    /// as often as another writer gets in first; a repeated request id answers the first call.
    pub(super) async fn commit_alone(
        &self,
        id: &str,
        command: &UsageCommand,
        metadata: &HashMap<String, String>,
    ) -> Result<Done, RecordError> {
        for _ in 0..ATTEMPTS {
            if let Some(sequence) = self.attempt(id, command.clone(), metadata.clone()).await? {
                return Ok(Done::of(command, id, sequence));
            }
            // The unique index turns a repeated request id away: look for the first call
            // only then, rather than before every call.
            if let UsageCommand::Record(record) = command {
                let org = OrgId::parse(&record.call.org)
                    .map_err(|e| RecordError::Storage(StorageFailure::other(e.to_string())))?;
                if let Some(first) = self.find(&org, &record.call.request_id).await? {
                    return Ok(Done::Recorded(Recorded::Duplicate(first)));
                }
            }
        }
        Err(RecordError::Storage(StorageFailure::other(format!(
            "gave up after {ATTEMPTS} attempts"
        ))))
    }

    /// One attempt at `command`: the committed sequence, or `None` when another writer got in
    /// first (and it is worth trying again).
    async fn attempt(
        &self,
        id: &str,
        command: UsageCommand,
        metadata: HashMap<String, String>,
    ) -> Result<Option<usize>, RecordError> {
        let (state, freshness) = self.state(id).await?;
        let mut context = EventStoreAggregateContext {
            aggregate_id: id.to_owned(),
            aggregate: state.ledger,
            current_sequence: state.sequence,
            current_snapshot: state.snapshot,
        };
        let sink = EventSink::default();
        // An acceptance is checked by the commit; a refusal only on a state just loaded.
        match context.aggregate.handle(command, &(), &sink).await {
            Ok(()) => {}
            Err(_) if freshness == Freshness::Kept => {
                self.forget(id);
                return Ok(None);
            }
            Err(refusal) => return Err(RecordError::Refused(refusal)),
        }
        let (from, after, snapshot) =
            (context.current_sequence, context.aggregate.clone(), context.current_snapshot);
        let events = sink.collect().await;
        let to = from + events.len();
        match self.store.commit(events, context, metadata).await {
            // A database that cannot be reached is no conflict: trying again at once is futile.
            Err(error) if storage_failure(&error).unavailable() => {
                self.forget(id);
                Err(storage(error))
            }
            Ok(_) => {
                let snapshot = self.store.next_snapshot(from, to, snapshot).or(snapshot);
                self.remember(id.to_owned(), Cached { ledger: after, sequence: to, snapshot });
                Ok(Some(to))
            }
            // Another writer took the ledger's next sequence, or (on SQLite, where the unique
            // index is not mapped to a conflict) the same request id: look again.
            Err(AggregateError::AggregateConflict | AggregateError::UnexpectedError(_)) => {
                self.forget(id);
                Ok(None)
            }
            Err(other) => {
                self.forget(id);
                Err(storage(other))
            }
        }
    }
}

pub(super) fn storage(error: AggregateError<keyledger_domain::usage::UsageError>) -> RecordError {
    match error {
        AggregateError::UserError(refusal) => RecordError::Refused(refusal),
        other => RecordError::Storage(storage_failure(&other)),
    }
}
