//! Appending the events of many aggregates in one transaction (group commit).
//!
//! postgres-es and sqlite-es commit one aggregate per transaction, one statement per event.
//! A busy gateway records thousands of calls a second on hundreds of usage ledgers; writing
//! them one commit each spends the database on round trips and log flushes. Here a whole batch
//! is one statement and one commit, still checked by the events table's key, so a sequence
//! another writer took turns the batch away as a conflict and nothing of it is written.

use std::time::Duration;

use cqrs_es::persist::SerializedEvent;
use serde_json::Value;
use sqlx::{Connection as _, PgConnection};
use tokio::time::Instant;

use super::request_claims::{RequestClaims, CLAIMED_SETTING};
use crate::database::Database;
use crate::sql::{Arg, Tx};

/// A snapshot to write with a batch: the aggregate's state after its last event in the batch.
#[derive(Debug, Clone)]
pub struct SnapshotUpdate {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub last_sequence: usize,
    pub current_snapshot: usize,
    pub payload: Value,
}

/// Why a batch was not appended.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// An event's key or another unique index of the events table was taken: another writer
    /// got there first, or the batch repeats something recorded before. Nothing was written.
    #[error("an event of the batch collides with one already stored")]
    Conflict,
    #[error("event store: {0}")]
    Storage(#[source] sqlx::Error),
}

impl From<sqlx::Error> for AppendError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::Database(db) if db.is_unique_violation() => Self::Conflict,
            _ => Self::Storage(error),
        }
    }
}

/// SQLite allows 32,766 bound values a statement; seven a row keeps a chunk well inside that.
const SQLITE_ROWS_PER_STATEMENT: usize = 1_000;

/// Appends events of many aggregates for one writer. On PostgreSQL it keeps a connection of
/// its own, with generic plans: its one statement is the same every time, and planning it
/// afresh for each batch cost the database more than inserting a call.
#[derive(Debug)]
pub struct Appender {
    db: Database,
    connection: Option<PgConnection>,
    /// When the connection last did a batch: one idle for long is replaced, not trusted (a
    /// firewall may have dropped it without a word, and a write on it would hang).
    last_used: Instant,
}

/// How long a batch may take before its connection is given up as dead (a half-open
/// connection would otherwise hold every usage command until the kernel gave up on it).
const APPEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the connection may stay idle and still be used.
const IDLE_LIMIT: Duration = Duration::from_secs(60);

impl Appender {
    /// An appender writing to `db`.
    #[must_use]
    pub fn new(db: &Database) -> Self {
        Self { db: db.clone(), connection: None, last_used: Instant::now() }
    }

    /// Appends `events` (in the order given, which becomes their global order) and writes
    /// `snapshots`, all in one transaction.
    ///
    /// # Errors
    /// [`AppendError::Conflict`] when any event collides with a stored one; nothing is written.
    pub async fn append(
        &mut self,
        events: &[SerializedEvent],
        snapshots: &[SnapshotUpdate],
    ) -> Result<(), AppendError> {
        if events.is_empty() {
            return Ok(());
        }
        if self.last_used.elapsed() > IDLE_LIMIT {
            self.connection = None;
        }
        self.last_used = Instant::now();
        let appending = async {
            match &self.db {
                Database::Postgres(pool) => {
                    let connection = match &mut self.connection {
                        Some(connection) => connection,
                        None => {
                            let options = pool
                                .connect_options()
                                .as_ref()
                                .clone()
                                .options([("plan_cache_mode", "force_generic_plan")]);
                            self.connection.insert(PgConnection::connect_with(&options).await?)
                        }
                    };
                    append_postgres(connection, events, snapshots).await
                }
                Database::Sqlite(pool) => append_sqlite(pool, events, snapshots).await,
            }
        };
        let appended = tokio::time::timeout(APPEND_TIMEOUT, appending).await.unwrap_or_else(|_| {
            Err(AppendError::Storage(sqlx::Error::Io(std::io::ErrorKind::TimedOut.into())))
        });
        if let Err(AppendError::Storage(_)) = &appended {
            // The connection may be what failed: the next batch gets a new one.
            self.connection = None;
        }
        appended
    }
}

/// The batch insert, as it is (`plain`) and with the claims of its calls' request ids
/// (`claiming`), built once.
struct BatchStatements {
    plain: String,
    claiming: String,
}

static BATCH_STATEMENTS: std::sync::LazyLock<BatchStatements> = std::sync::LazyLock::new(|| {
    let insert_events = "insert into events \
         (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, log_month) \
         select t, i, s, e, v, p::json, m::json, keyledger_log_month_of(t, i) \
         from unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[]) \
         with ordinality as batch(t, i, s, e, v, p, m, n)";
    BatchStatements {
        plain: format!("{insert_events} order by n"),
        // Joined with the one row that makes the setting, so it is made before any event row
        // is (and so before the trigger runs, at the statement's end).
        claiming: format!(
            "with claimed as ( \
                 insert into usage_requests (org, request_id, ledger, sequence) \
                 select * from unnest($8::text[], $9::text[], $10::text[], $11::bigint[]) \
             ), told as (select set_config('{CLAIMED_SETTING}', 'on', true)) \
             {insert_events} cross join told order by n"
        ),
    }
});

/// A lone statement is a transaction of its own: most batches commit in one round trip. Each
/// event names its log month, so a usage event goes straight to its month's partition. The
/// request ids of the calls recorded are claimed in the same statement, from the payloads as
/// bound (see [`super::request_claims`]); the setting it makes, for its transaction alone,
/// spares the trigger parsing them again.
async fn append_postgres(
    connection: &mut PgConnection,
    events: &[SerializedEvent],
    snapshots: &[SnapshotUpdate],
) -> Result<(), AppendError> {
    let claims = RequestClaims::of(events);
    let statements = &*BATCH_STATEMENTS;
    let insert =
        sqlx::query(if claims.is_empty() { &statements.plain } else { &statements.claiming })
            .bind(column(events, |e| e.aggregate_type.clone()))
            .bind(column(events, |e| e.aggregate_id.clone()))
            .bind(column(events, |e| sequence(e.sequence)))
            .bind(column(events, |e| e.event_type.clone()))
            .bind(column(events, |e| e.event_version.clone()))
            .bind(column(events, |e| e.payload.to_string()))
            .bind(column(events, |e| e.metadata.to_string()));
    let insert = if claims.is_empty() {
        insert
    } else {
        insert
            .bind(claims.orgs)
            .bind(claims.request_ids)
            .bind(claims.ledgers)
            .bind(claims.sequences)
    };
    if snapshots.is_empty() {
        insert.execute(&mut *connection).await?;
    } else {
        let upsert = upsert_snapshot("$5::json");
        let mut tx = connection.begin().await?;
        insert.execute(&mut *tx).await?;
        for snapshot in snapshots {
            bind_snapshot(sqlx::query(&upsert), snapshot).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

async fn append_sqlite(
    pool: &sqlx::SqlitePool,
    events: &[SerializedEvent],
    snapshots: &[SnapshotUpdate],
) -> Result<(), AppendError> {
    let statements: Vec<String> = events
        .chunks(SQLITE_ROWS_PER_STATEMENT)
        .map(|chunk| {
            let rows = vec!["(?, ?, ?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            format!(
                "insert into events \
                 (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                 values {rows}"
            )
        })
        .collect();
    let inserts =
        statements.iter().zip(events.chunks(SQLITE_ROWS_PER_STATEMENT)).map(|(sql, chunk)| {
            // Built for this chunk's size: not kept prepared (see `Tx::execute_built`).
            chunk.iter().fold(sqlx::query(sql).persistent(false), |insert, event| {
                insert
                    .bind(&event.aggregate_type)
                    .bind(&event.aggregate_id)
                    .bind(sequence(event.sequence))
                    .bind(&event.event_type)
                    .bind(&event.event_version)
                    .bind(event.payload.to_string())
                    .bind(event.metadata.to_string())
            })
        });
    if snapshots.is_empty() && statements.len() == 1 {
        for insert in inserts {
            insert.execute(pool).await?;
        }
    } else {
        let upsert = upsert_snapshot("$5");
        let mut tx = pool.begin().await?;
        for insert in inserts {
            insert.execute(&mut *tx).await?;
        }
        for snapshot in snapshots {
            bind_snapshot(sqlx::query(&upsert), snapshot).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Appends one command's events, and its snapshot, inside `tx`: the few events of a command
/// do not need the batch statements above.
pub(super) async fn append_in(
    tx: &mut Tx,
    events: &[SerializedEvent],
    snapshot: Option<&SnapshotUpdate>,
) -> Result<(), sqlx::Error> {
    // PostgreSQL keeps payloads as json and takes them as text only with a cast; SQLite keeps
    // the text.
    let (insert, upsert) = if tx.is_postgres() {
        (
            "insert into events \
             (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, log_month) \
             values ($1, $2, $3, $4, $5, $6::json, $7::json, keyledger_log_month_of($1, $2))",
            upsert_snapshot("$5::json"),
        )
    } else {
        (
            "insert into events \
             (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             values ($1, $2, $3, $4, $5, $6, $7)",
            upsert_snapshot("$5"),
        )
    };
    for event in events {
        let row = [
            Arg::Text(event.aggregate_type.clone()),
            Arg::Text(event.aggregate_id.clone()),
            Arg::Int(sequence(event.sequence)),
            Arg::Text(event.event_type.clone()),
            Arg::Text(event.event_version.clone()),
            Arg::Text(event.payload.to_string()),
            Arg::Text(event.metadata.to_string()),
        ];
        tx.execute(insert, &row).await?;
    }
    if let Some(snapshot) = snapshot {
        let row = [
            Arg::Text(snapshot.aggregate_type.clone()),
            Arg::Text(snapshot.aggregate_id.clone()),
            Arg::Int(sequence(snapshot.last_sequence)),
            Arg::Int(sequence(snapshot.current_snapshot)),
            Arg::Text(snapshot.payload.to_string()),
        ];
        tx.execute(&upsert, &row).await?;
    }
    Ok(())
}

/// Writes a snapshot whose payload is bound as `payload` (text, cast as the backend needs).
/// The events' key already makes the batch the only writer of these sequences; the guard
/// keeps a snapshot from ever going back.
fn upsert_snapshot(payload: &str) -> String {
    format!(
        "insert into snapshots \
         (aggregate_type, aggregate_id, last_sequence, current_snapshot, payload) \
         values ($1, $2, $3, $4, {payload}) \
         on conflict (aggregate_type, aggregate_id) do update \
         set last_sequence = excluded.last_sequence, current_snapshot = excluded.current_snapshot, \
             payload = excluded.payload \
         where snapshots.last_sequence < excluded.last_sequence"
    )
}

fn bind_snapshot<'q, DB>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    snapshot: &'q SnapshotUpdate,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    query
        .bind(snapshot.aggregate_type.as_str())
        .bind(snapshot.aggregate_id.as_str())
        .bind(sequence(snapshot.last_sequence))
        .bind(sequence(snapshot.current_snapshot))
        .bind(snapshot.payload.to_string())
}

/// A sequence or snapshot number as the tables keep it.
pub(super) fn sequence(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn column<T>(events: &[SerializedEvent], field: impl Fn(&SerializedEvent) -> T) -> Vec<T> {
    events.iter().map(field).collect()
}
