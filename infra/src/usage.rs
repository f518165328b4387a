//! Recording model calls on organizations' monthly usage ledgers, once per request id.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventStore};
use tokio::sync::Mutex;

use crate::db::Database;
use crate::event_store::{EventRepository, SnapshottingStore};
use crate::keyrings::Actor;
use keyledger_domain::usage::{
    ledger_id, ModelCallRecorded, RecordModelCall, ReservePlatformCall, UsageCommand, UsageError,
    UsageEvent, UsageLedger,
};
use keyledger_domain::OrgId;

/// Why a call was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Refused(UsageError),
    #[error("usage store: {0}")]
    Storage(String),
}

/// What recording did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Recorded now, as event `sequence` of ledger `ledger_id`.
    New { call: ModelCallRecorded, ledger_id: String, sequence: usize },
    /// The request id was recorded before: this is that first call.
    Duplicate(ModelCallRecorded),
}

/// All organizations' usage ledgers.
#[derive(Debug)]
pub struct UsageRecorder {
    store: SnapshottingStore<EventRepository, UsageLedger>,
    db: Database,
    /// Calls to one ledger queue here instead of racing for it; other replicas still race and
    /// are retried.
    stripes: Vec<Mutex<()>>,
    hasher: RandomState,
    /// Each ledger as this process last committed it. Only used under the ledger's stripe; a
    /// stale entry (another replica committed since) is caught by the events table's key on
    /// commit, dropped, and the ledger loaded again.
    ledgers: std::sync::Mutex<HashMap<String, Cached>>,
}

/// A ledger's state and where it stands.
#[derive(Debug, Clone)]
struct Cached {
    ledger: UsageLedger,
    sequence: usize,
    snapshot: Option<usize>,
}

/// Attempts before concurrent recorders on one ledger (across replicas) give up.
const ATTEMPTS: usize = 20;
const STRIPES: usize = 64;

impl UsageRecorder {
    /// Ledgers kept in `db`.
    #[must_use]
    pub fn new(db: &Database) -> Self {
        Self {
            store: SnapshottingStore::new(EventRepository::new(db)),
            db: db.clone(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
            ledgers: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// `org`'s ledger for the month of `at`.
    ///
    /// # Errors
    /// [`RecordError::Storage`] when it cannot be loaded.
    pub async fn ledger(
        &self,
        org: &OrgId,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<UsageLedger, RecordError> {
        Ok(self.store.load_aggregate(&ledger_id(org, at)).await.map_err(storage)?.aggregate)
    }

    /// The call `org` recorded under `request_id`, if any.
    ///
    /// # Errors
    /// [`RecordError::Storage`] when the log cannot be read.
    pub async fn find(
        &self,
        org: &OrgId,
        request_id: &str,
    ) -> Result<Option<ModelCallRecorded>, RecordError> {
        let payload: Option<String> = match &self.db {
            Database::Postgres(pool) => {
                sqlx::query_scalar(
                    "select payload::text from events where aggregate_type = 'UsageLedger' \
                 and (payload->'ModelCallRecorded'->>'org') = $1 \
                 and (payload->'ModelCallRecorded'->>'request_id') = $2",
                )
                .bind(org.as_str())
                .bind(request_id)
                .fetch_optional(pool)
                .await
            }
            Database::Sqlite(pool) => {
                sqlx::query_scalar(
                    "select payload from events where aggregate_type = 'UsageLedger' \
                 and json_extract(payload, '$.ModelCallRecorded.org') = $1 \
                 and json_extract(payload, '$.ModelCallRecorded.request_id') = $2",
                )
                .bind(org.as_str())
                .bind(request_id)
                .fetch_optional(pool)
                .await
            }
        }
        .map_err(|e| RecordError::Storage(e.to_string()))?;
        Ok(payload.and_then(|p| match serde_json::from_str::<UsageEvent>(&p) {
            Ok(UsageEvent::ModelCallRecorded(call)) => Some(call),
            _ => None,
        }))
    }

    /// Records `call` on `org`'s ledger for the call's month, unless its request id was
    /// recorded before; limits hold however many record at once.
    ///
    /// # Errors
    /// [`RecordError::Refused`] over quota or cost cap.
    pub async fn record(
        &self,
        org: &OrgId,
        call: RecordModelCall,
        actor: &Actor,
    ) -> Result<Recorded, RecordError> {
        let id = ledger_id(org, call.call.at);
        let _queued = self.queue(&id).await;
        for _ in 0..ATTEMPTS {
            match self.commit(&id, UsageCommand::Record(call.clone()), actor, call.call.at).await? {
                Some(sequence) => {
                    return Ok(Recorded::New { call: call.call, ledger_id: id, sequence })
                }
                // The unique index turns a repeated request id away: look for the first call
                // only then, rather than before every call.
                None => {
                    if let Some(first) = self.find(org, &call.call.request_id).await? {
                        return Ok(Recorded::Duplicate(first));
                    }
                }
            }
        }
        Err(RecordError::Storage(format!("gave up after {ATTEMPTS} attempts")))
    }

    /// Takes a place in `org`'s platform-key quota for a call about to be made; the call is
    /// then recorded under the same request id without counting twice.
    ///
    /// # Errors
    /// [`RecordError::Refused`] when the quota or cost cap leaves no place.
    pub async fn reserve(
        &self,
        org: &OrgId,
        reserve: ReservePlatformCall,
        actor: &Actor,
    ) -> Result<(), RecordError> {
        let id = ledger_id(org, reserve.at);
        let _queued = self.queue(&id).await;
        for _ in 0..ATTEMPTS {
            if self
                .commit(&id, UsageCommand::Reserve(reserve.clone()), actor, reserve.at)
                .await?
                .is_some()
            {
                return Ok(());
            }
        }
        Err(RecordError::Storage(format!("gave up after {ATTEMPTS} attempts")))
    }

    fn forget(&self, ledger: &str) {
        if let Ok(mut ledgers) = self.ledgers.lock() {
            ledgers.remove(ledger);
        }
    }

    /// Calls to one ledger queue here instead of racing for it.
    async fn queue(&self, ledger: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.stripes[(self.hasher.hash_one(ledger) as usize) % STRIPES].lock().await
    }

    /// One attempt at `command`: the committed sequence, or `None` when another writer got in
    /// first (and it is worth trying again).
    async fn commit(
        &self,
        ledger: &str,
        command: UsageCommand,
        actor: &Actor,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<usize>, RecordError> {
        let metadata = HashMap::from([
            ("actor".to_owned(), actor.sub.clone()),
            ("role".to_owned(), actor.role.clone()),
            ("request_id".to_owned(), actor.request_id.clone()),
            ("occurred_at".to_owned(), at.to_rfc3339()),
        ]);
        let cached = self.ledgers.lock().ok().and_then(|l| l.get(ledger).cloned());
        let mut context = match cached {
            Some(c) => EventStoreAggregateContext {
                aggregate_id: ledger.to_owned(),
                aggregate: c.ledger,
                current_sequence: c.sequence,
                current_snapshot: c.snapshot,
            },
            None => self.store.load_aggregate(ledger).await.map_err(storage)?,
        };
        let sink = EventSink::default();
        // A ledger only grows within its month: a cached state never shows more use than the
        // stored one, so a refusal decided on it stands; an acceptance is checked by the commit.
        context.aggregate().handle(command, &(), &sink).await.map_err(RecordError::Refused)?;
        let (from, after) = (context.current_sequence, context.aggregate.clone());
        let snapshot = context.current_snapshot;
        let events = sink.collect().await;
        let to = from + events.len();
        match self.store.commit(events, context, metadata).await {
            Ok(_) => {
                let snapshot = if self.store.snapshot_after(from, to) {
                    Some(snapshot.map_or(1, |n| n + 1))
                } else {
                    snapshot
                };
                if let Ok(mut ledgers) = self.ledgers.lock() {
                    ledgers.insert(
                        ledger.to_owned(),
                        Cached { ledger: after, sequence: to, snapshot },
                    );
                }
                Ok(Some(to))
            }
            // Another writer took the ledger's next sequence, or (on SQLite, where the unique
            // index is not mapped to a conflict) the same request id: look again.
            Err(AggregateError::AggregateConflict | AggregateError::UnexpectedError(_)) => {
                self.forget(ledger);
                Ok(None)
            }
            Err(other) => {
                self.forget(ledger);
                Err(storage(other))
            }
        }
    }
}

fn storage(error: AggregateError<UsageError>) -> RecordError {
    match error {
        AggregateError::UserError(refusal) => RecordError::Refused(refusal),
        other => RecordError::Storage(other.to_string()),
    }
}
