//! Reading the event log in its global order, for projectors and auditors.
//!
//! postgres-es orders events only within one aggregate. keyledger numbers every event
//! (`global_position`) and, on PostgreSQL, records the writing transaction
//! (`transaction_id`, a `xid8`). Positions are handed out at insert time, not at commit, so a
//! slow transaction can commit position 10 after a fast one committed position 11; a reader
//! that had moved past 11 would never see 10. Reading in `(transaction_id, global_position)`
//! order and only events of transactions older than the snapshot's `xmin` (every transaction
//! before it has finished) closes that gap: nothing can later appear behind the cursor. The
//! price is that a long-open transaction anywhere in the database holds readers back, which is
//! why commands keep theirs short. SQLite runs one writer at a time, so the position alone is
//! commit order there and the transaction id is taken as 0.

use chrono::{DateTime, Utc};
use serde_json::Value;

use cqrs_es::Aggregate;
use keyledger_domain::usage::{UsageEvent, UsageLedger};
use keyledger_domain::{Keyring, KeyringEvent};
use keyledger_store::{Arg, Database, Tx};

/// A point in the global order: everything up to and including it has been read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
pub struct Cursor {
    pub txid: i64,
    pub position: i64,
}

/// An event as the log holds it, decoded.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub cursor: Cursor,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// The payload as stored (JSON text); [`LoggedEvent::fact`] is its typed reading.
    pub payload: String,
    /// The metadata as stored (JSON text).
    pub metadata: String,
    pub fact: Fact,
    meta: Meta,
}

/// What views read of the metadata (parsed without building a map).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize)]
struct Meta {
    #[serde(default)]
    actor: Option<String>,
    #[serde(default)]
    occurred_at: Option<String>,
}

/// What an event says, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    Keyring(KeyringEvent),
    Usage(UsageEvent),
    /// An event type this version does not know (from a newer writer): skipped by views.
    Unknown,
}

impl LoggedEvent {
    /// The payload as JSON.
    #[must_use]
    pub fn payload_json(&self) -> Value {
        serde_json::from_str(&self.payload).unwrap_or(Value::Null)
    }

    /// The metadata as JSON.
    #[must_use]
    pub fn metadata_json(&self) -> Value {
        serde_json::from_str(&self.metadata).unwrap_or(Value::Null)
    }

    /// Who caused the event (`sub` of the token), from its metadata.
    #[must_use]
    pub fn actor(&self) -> &str {
        self.meta.actor.as_deref().unwrap_or("system")
    }

    /// When the event happened, from its metadata.
    #[must_use]
    pub fn occurred_at(&self) -> Option<DateTime<Utc>> {
        self.meta
            .occurred_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    position: i64,
    txid: i64,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
}

impl Row {
    fn decode(self) -> LoggedEvent {
        let fact = match self.aggregate_type.as_str() {
            _ if self.payload == "null" => Fact::Unknown,
            t if t == <Keyring as Aggregate>::TYPE => {
                serde_json::from_str(&self.payload).map(Fact::Keyring).unwrap_or(Fact::Unknown)
            }
            t if t == <UsageLedger as Aggregate>::TYPE => {
                serde_json::from_str(&self.payload).map(Fact::Usage).unwrap_or(Fact::Unknown)
            }
            _ => Fact::Unknown,
        };
        LoggedEvent {
            cursor: Cursor { txid: self.txid, position: self.position },
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            sequence: self.sequence,
            event_type: self.event_type,
            event_version: self.event_version,
            payload: self.payload,
            meta: serde_json::from_str(&self.metadata).unwrap_or_default(),
            metadata: self.metadata,
            fact,
        }
    }
}

/// The columns of an event; payload and metadata only of events of `types` (all if empty).
/// The others still come, so a reader's cursor moves over them, but without their JSON.
fn columns(postgres: bool, types: &[&str]) -> String {
    let txid = if postgres { "transaction_id::text::bigint" } else { "0" };
    let (payload, metadata) =
        if postgres { ("payload::text", "metadata::text") } else { ("payload", "metadata") };
    let wanted = |column: &str| {
        if types.is_empty() {
            format!("{column} as {}", column.split("::").next().unwrap_or(column))
        } else {
            // Aggregate type names come from the code, never from a request.
            let list = types.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
            let name = column.split("::").next().unwrap_or(column);
            format!("case when aggregate_type in ({list}) then {column} else 'null' end as {name}")
        }
    };
    format!(
        "global_position as position, {txid} as txid, aggregate_type, aggregate_id, sequence, \
         event_type, event_version, {}, {}",
        wanted(payload),
        wanted(metadata)
    )
}
/// Only transactions older than every one still running: nothing can commit behind them.
const PG_SETTLED: &str = "transaction_id < pg_snapshot_xmin(pg_current_snapshot())";

fn read_after_query(
    postgres: bool,
    cursor: Cursor,
    limit: i64,
    types: &[&str],
) -> (String, Vec<Arg>) {
    let columns = columns(postgres, types);
    if postgres {
        (
            format!(
                "select {columns} from events \
                 where (transaction_id, global_position) > ($1::bigint::text::xid8, $2) and {PG_SETTLED} \
                 order by transaction_id, global_position limit $3"
            ),
            vec![Arg::Int(cursor.txid), Arg::Int(cursor.position), Arg::Int(limit)],
        )
    } else {
        (
            format!("select {columns} from events where global_position > $1 order by global_position limit $2"),
            vec![Arg::Int(cursor.position), Arg::Int(limit)],
        )
    }
}

/// Up to `limit` events after `cursor`, read within `tx` (a projector holding SQLite's write
/// lock must not wait for a second connection); JSON only of events of `types` (all if empty).
///
/// # Errors
/// The database's error.
pub async fn read_after_in(
    tx: &mut Tx,
    cursor: Cursor,
    limit: i64,
    types: &[&str],
) -> Result<Vec<LoggedEvent>, sqlx::Error> {
    let (sql, args) = read_after_query(matches!(tx, Tx::Postgres(_)), cursor, limit, types);
    let rows: Vec<Row> = tx.fetch_all(&sql, &args).await?;
    Ok(rows.into_iter().map(Row::decode).collect())
}

/// The global event log.
#[derive(Debug, Clone)]
pub struct EventLog {
    pool: Database,
}

impl EventLog {
    /// The log in `pool`'s database.
    #[must_use]
    pub fn new(pool: Database) -> Self {
        Self { pool }
    }

    /// Up to `limit` events after `cursor`, in global order.
    ///
    /// # Errors
    /// The database's error.
    pub async fn read_after(
        &self,
        cursor: Cursor,
        limit: i64,
    ) -> Result<Vec<LoggedEvent>, sqlx::Error> {
        self.read_after_of(cursor, limit, &[]).await
    }

    /// [`EventLog::read_after`], with JSON only of events of `types` (all if empty).
    ///
    /// # Errors
    /// The database's error.
    pub async fn read_after_of(
        &self,
        cursor: Cursor,
        limit: i64,
        types: &[&str],
    ) -> Result<Vec<LoggedEvent>, sqlx::Error> {
        let (sql, args) = read_after_query(self.pool.is_postgres(), cursor, limit, types);
        let rows: Vec<Row> = self.pool.fetch_all(&sql, &args).await?;
        Ok(rows.into_iter().map(Row::decode).collect())
    }

    /// Up to `limit` events of `org` (its Keyring and usage ledgers) after the event at global
    /// position `after` (0: from the start), in global order.
    ///
    /// # Errors
    /// The database's error.
    pub async fn read_org_after(
        &self,
        org: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LoggedEvent>, sqlx::Error> {
        let of_org = "(aggregate_id = $1 or (aggregate_type = 'UsageLedger' \
                      and substr(aggregate_id, 1, length($1) + 1) = $1 || '/'))";
        let columns = columns(self.pool.is_postgres(), &[]);
        let (sql, args) = if self.pool.is_postgres() {
            (
                format!(
                    "select {columns} from events where {of_org} and {PG_SETTLED} \
                     and (transaction_id, global_position) > \
                         (coalesce((select transaction_id from events where global_position = $2), '0'::xid8), $2) \
                     order by transaction_id, global_position limit $3"
                ),
                vec![Arg::Text(org.to_owned()), Arg::Int(after), Arg::Int(limit)],
            )
        } else {
            (
                format!("select {columns} from events where {of_org} and global_position > $2 order by global_position limit $3"),
                vec![Arg::Text(org.to_owned()), Arg::Int(after), Arg::Int(limit)],
            )
        };
        let rows: Vec<Row> = self.pool.fetch_all(&sql, &args).await?;
        Ok(rows.into_iter().map(Row::decode).collect())
    }

    /// Whether committed events exist after `cursor` that a reader may not take yet (their
    /// transactions are not below every running one). Always false on SQLite.
    ///
    /// # Errors
    /// The database's error.
    pub async fn has_unsettled_after(&self, cursor: Cursor) -> Result<bool, sqlx::Error> {
        if !self.pool.is_postgres() {
            return Ok(false);
        }
        let rows: Vec<(bool,)> = self
            .pool
            .fetch_all(
                "select exists(select 1 from events where (transaction_id, global_position) > ($1::bigint::text::xid8, $2))",
                &[Arg::Int(cursor.txid), Arg::Int(cursor.position)],
            )
            .await?;
        Ok(rows.first().is_some_and(|(b,)| *b))
    }

    /// Where the latest event of an aggregate stands in the global order (`None`: no events).
    ///
    /// # Errors
    /// The database's error.
    pub async fn latest_cursor(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<Cursor>, sqlx::Error> {
        let txid = if self.pool.is_postgres() { "transaction_id::text::bigint" } else { "0" };
        let sql = format!(
            "select {txid} as txid, global_position as position from events \
             where aggregate_type = $1 and aggregate_id = $2 order by sequence desc limit 1"
        );
        let args = [Arg::Text(aggregate_type.to_owned()), Arg::Text(aggregate_id.to_owned())];
        Ok(self.pool.fetch_all::<Cursor>(&sql, &args).await?.into_iter().next())
    }

    /// Where event `sequence` of an aggregate stands in the global order.
    ///
    /// # Errors
    /// The database's error.
    pub async fn cursor_of(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
    ) -> Result<Option<Cursor>, sqlx::Error> {
        let txid = if self.pool.is_postgres() { "transaction_id::text::bigint" } else { "0" };
        let sql = format!(
            "select {txid} as txid, global_position as position from events \
             where aggregate_type = $1 and aggregate_id = $2 and sequence = $3"
        );
        let args = [
            Arg::Text(aggregate_type.to_owned()),
            Arg::Text(aggregate_id.to_owned()),
            Arg::Int(sequence),
        ];
        Ok(self.pool.fetch_all::<Cursor>(&sql, &args).await?.into_iter().next())
    }
}
