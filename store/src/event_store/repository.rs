//! The event repository of the configured backend: postgres-es or sqlite-es behind one type.
//!
//! cqrs-es's repository trait returns `impl Future`, so it cannot be a trait object; an enum
//! chooses the backend at run time instead.

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use postgres_es::PostgresEventRepository;
use serde_json::Value;
use sqlite_es::SqliteEventRepository;
use sqlx::PgPool;

use crate::database::{is_unavailable, Database};

/// postgres-es or sqlite-es, as the database is. On PostgreSQL an aggregate's events are read
/// here rather than by postgres-es, whose queries name no log month: PostgreSQL would look for
/// the aggregate in every month's partition of the log (and plan that afresh for each snapshot
/// position, which postgres-es writes into the statement's text).
pub enum EventRepository {
    Postgres(PostgresEventRepository, PgPool),
    Sqlite(SqliteEventRepository),
}

impl EventRepository {
    /// The repository over the `events` and `snapshots` tables of `db`.
    #[must_use]
    pub fn new(db: &Database) -> Self {
        match db {
            Database::Postgres(pool) => {
                Self::Postgres(PostgresEventRepository::new(pool.clone()), pool.clone())
            }
            Database::Sqlite(pool) => Self::Sqlite(SqliteEventRepository::new(pool.clone())),
        }
    }
}

impl std::fmt::Debug for EventRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Postgres(..) => f.write_str("EventRepository::Postgres"),
            Self::Sqlite(_) => f.write_str("EventRepository::Sqlite"),
        }
    }
}

async fn pg_events_after(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
    after: usize,
) -> Result<Vec<SerializedEvent>, PersistenceError> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let (table, month) = crate::log_months::pg_events_of(aggregate_type, "$2");
    let sql = format!(
        "select aggregate_type, aggregate_id, sequence, event_type, event_version, payload, \
         metadata from {table} where {month} aggregate_type = $1 and aggregate_id = $2 \
         and sequence > $3 order by sequence"
    );
    let rows: Vec<PgEventRow> = sqlx::query_as(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(after)
        .fetch_all(pool)
        .await
        .map_err(persistence_error)?;
    Ok(rows.into_iter().map(PgEventRow::into_event).collect())
}

/// Where an aggregate's load starts: its latest snapshot, if any, and the events after it (all
/// of them without one).
pub(super) type SnapshotAndTail = (Option<SerializedSnapshot>, Vec<SerializedEvent>);

/// An aggregate's snapshot and the events after it in one statement on PostgreSQL: a command's
/// load is one round trip, not one for the snapshot and another for what follows it.
async fn pg_snapshot_and_tail(
    pool: &PgPool,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<SnapshotAndTail, PersistenceError> {
    let (table, month) = crate::log_months::pg_events_of(aggregate_type, "$2");
    // The snapshot's row says where it stands (`last_sequence`); an event's row does not.
    let sql = format!(
        "with taken as (select last_sequence, current_snapshot, payload from snapshots \
                        where aggregate_type = $1 and aggregate_id = $2) \
         select last_sequence, current_snapshot, last_sequence as sequence, \
                null::text as event_type, null::text as event_version, payload, \
                null::json as metadata from taken \
         union all \
         select null, null, sequence, event_type, event_version, payload, metadata \
         from {table} where {month} aggregate_type = $1 and aggregate_id = $2 \
         and sequence > coalesce((select last_sequence from taken), 0)"
    );
    let rows: Vec<PgLoadRow> = sqlx::query_as(&sql)
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_all(pool)
        .await
        .map_err(persistence_error)?;
    let mut snapshot = None;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let sequence = usize::try_from(row.sequence).unwrap_or_default();
        match (row.last_sequence, row.event_type, row.event_version, row.metadata) {
            (Some(_), ..) => {
                snapshot = Some(SerializedSnapshot {
                    aggregate_id: aggregate_id.to_owned(),
                    aggregate: row.payload,
                    current_sequence: sequence,
                    current_snapshot: row
                        .current_snapshot
                        .and_then(|n| usize::try_from(n).ok())
                        .unwrap_or_default(),
                });
            }
            (None, Some(event_type), Some(event_version), Some(metadata)) => {
                events.push(SerializedEvent::new(
                    aggregate_id.to_owned(),
                    sequence,
                    aggregate_type.to_owned(),
                    event_type,
                    event_version,
                    row.payload,
                    metadata,
                ));
            }
            _ => {}
        }
    }
    events.sort_by_key(|e| e.sequence);
    Ok((snapshot, events))
}

#[derive(sqlx::FromRow)]
struct PgLoadRow {
    last_sequence: Option<i64>,
    current_snapshot: Option<i64>,
    sequence: i64,
    event_type: Option<String>,
    event_version: Option<String>,
    payload: Value,
    metadata: Option<Value>,
}

fn persistence_error(error: sqlx::Error) -> PersistenceError {
    if is_unavailable(&error) {
        PersistenceError::ConnectionError(Box::new(error))
    } else {
        PersistenceError::UnknownError(Box::new(error))
    }
}

impl EventRepository {
    /// The PostgreSQL pool underneath, if it is PostgreSQL's.
    pub(super) fn pg_pool(&self) -> Option<&PgPool> {
        match self {
            Self::Postgres(_, pool) => Some(pool),
            Self::Sqlite(_) => None,
        }
    }

    /// `aggregate_id`'s latest snapshot and the events after it: one statement on PostgreSQL,
    /// sqlite-es's two reads on SQLite (where a read is no round trip).
    ///
    /// # Errors
    /// The database's error.
    pub(super) async fn snapshot_and_tail<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<SnapshotAndTail, PersistenceError> {
        match self {
            Self::Postgres(_, pool) => pg_snapshot_and_tail(pool, A::TYPE, aggregate_id).await,
            Self::Sqlite(repo) => {
                let snapshot = repo.get_snapshot::<A>(aggregate_id).await?;
                let after = snapshot.as_ref().map_or(0, |s| s.current_sequence);
                Ok((snapshot, repo.get_last_events::<A>(aggregate_id, after).await?))
            }
        }
    }
}

#[derive(sqlx::FromRow)]
struct PgEventRow {
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
}

impl PgEventRow {
    fn into_event(self) -> SerializedEvent {
        SerializedEvent::new(
            self.aggregate_id,
            usize::try_from(self.sequence).unwrap_or_default(),
            self.aggregate_type,
            self.event_type,
            self.event_version,
            self.payload,
            self.metadata,
        )
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Postgres(_, pool) => pg_events_after(pool, A::TYPE, aggregate_id, 0).await,
            Self::Sqlite(repo) => repo.get_events::<A>(aggregate_id).await,
        }
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        match self {
            Self::Postgres(_, pool) => {
                pg_events_after(pool, A::TYPE, aggregate_id, last_sequence).await
            }
            Self::Sqlite(repo) => repo.get_last_events::<A>(aggregate_id, last_sequence).await,
        }
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        match self {
            Self::Postgres(repo, _) => repo.get_snapshot::<A>(aggregate_id).await,
            Self::Sqlite(repo) => repo.get_snapshot::<A>(aggregate_id).await,
        }
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        match self {
            Self::Postgres(repo, _) => repo.persist::<A>(events, snapshot_update).await,
            Self::Sqlite(repo) => repo.persist::<A>(events, snapshot_update).await,
        }
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        match self {
            Self::Postgres(repo, _) => repo.stream_events::<A>(aggregate_id).await,
            Self::Sqlite(repo) => repo.stream_events::<A>(aggregate_id).await,
        }
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        match self {
            Self::Postgres(repo, _) => repo.stream_all_events::<A>().await,
            Self::Sqlite(repo) => repo.stream_all_events::<A>().await,
        }
    }
}
