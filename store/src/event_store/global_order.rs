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

use futures::TryStreamExt as _;

use crate::database::Database;
use crate::sql::{Arg, Tx};

/// A point in the global order: everything up to and including it has been read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, sqlx::FromRow)]
pub struct Cursor {
    pub txid: i64,
    pub position: i64,
}

/// An event as the log stores it. Payload and metadata are the stored JSON text, or `null` for
/// events a reader did not ask the JSON of.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub position: i64,
    pub txid: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
}

impl StoredEvent {
    /// Where the event stands in the global order.
    #[must_use]
    pub fn cursor(&self) -> Cursor {
        Cursor { txid: self.txid, position: self.position }
    }
}

/// Read by position, in the order [`columns`] selects them (the fields' order), without asking
/// each value's type: the statement says what they are. A rebuild decodes a million rows;
/// finding each of nine columns by its name in a hash map and checking its type was a sixth
/// of what decoding a batch cost.
impl<'r, R> sqlx::FromRow<'r, R> for StoredEvent
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        Ok(Self {
            position: row.try_get_unchecked(0)?,
            txid: row.try_get_unchecked(1)?,
            aggregate_type: row.try_get_unchecked(2)?,
            aggregate_id: row.try_get_unchecked(3)?,
            sequence: row.try_get_unchecked(4)?,
            event_type: row.try_get_unchecked(5)?,
            event_version: row.try_get_unchecked(6)?,
            payload: row.try_get_unchecked(7)?,
            metadata: row.try_get_unchecked(8)?,
        })
    }
}

/// The columns of an event, in the order of [`StoredEvent`]'s fields; payload and metadata only
/// of events of the `selection`'s JSON types (all if none are named), and metadata not at all
/// if it reads none. The other events still come, so a reader's cursor moves over them, but
/// without their JSON.
pub(super) fn columns(postgres: bool, selection: Selection<'_>) -> String {
    // Decoded by position without a type check, values cross as they are stored: a `xid8` as
    // the eight bytes of a bigint, a `json` as its text. Converted in the statement instead
    // (`::text::bigint`, `::text`), they cost PostgreSQL a third of a batch's read.
    let txid = if postgres { "transaction_id" } else { "0" };
    let types = selection.json_of;
    let wanted = |column: &str| {
        if types.is_empty() {
            column.to_owned()
        } else {
            // Aggregate type names come from the code, never from a request.
            let list = types.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
            format!(
                "case when aggregate_type in ({list}) then {column} else 'null' end as {column}"
            )
        }
    };
    let metadata = if selection.without_metadata {
        "'null' as metadata".to_owned()
    } else {
        wanted("metadata")
    };
    format!(
        "global_position as position, {txid} as txid, aggregate_type, aggregate_id, sequence, \
         event_type, event_version, {}, {metadata}",
        wanted("payload"),
    )
}

/// How much one read of the log returns at most: a number of events, and bytes of their JSON.
/// A usage event carries up to a hundred calls, so a count alone would let one read of ten
/// thousand events hold a million calls in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    pub events: i64,
    /// Bytes of payload and metadata text (of the types whose JSON is read; the others come
    /// as `null`): the event that crosses it is the last read, and the first is read whatever
    /// its size, so a reader always moves on.
    pub json_bytes: i64,
}

impl ReadLimit {
    /// Up to `events` events, whatever their size.
    #[must_use]
    pub const fn events(events: i64) -> Self {
        Self { events, json_bytes: i64::MAX }
    }

    /// This limit for a read after `events` events that held `json_bytes` of JSON: as many
    /// events as fit the JSON bound at their average size and a quarter more, never more than
    /// `self.events`.
    ///
    /// A read stops taking rows at the one that crosses the bound, but PostgreSQL sends every
    /// row the statement's limit allows, and the rest are read off the connection unused.
    /// Events of a few hundred bytes never reach the bound; usage events of a hundred calls
    /// each (about 22 KB) reach it after about 380, and a limit of twenty thousand would have
    /// sent fifty times the JSON a read keeps.
    #[must_use]
    pub fn sized_for(self, events: usize, json_bytes: i64) -> Self {
        let Ok(events @ 1..) = i64::try_from(events) else { return self };
        let average = (json_bytes / events).max(1);
        let fit = self.json_bytes / average;
        Self { events: fit.saturating_add(fit / 4).clamp(1, self.events), ..self }
    }
}
/// Which events a read of the log takes, and which of them come with their JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection<'a> {
    /// The aggregate types whose events the reader needs (all if empty). On PostgreSQL the read
    /// leaves out the partitions that hold none of them, and a reader's cursor passes those
    /// events unread: a reader of Keyring events reads `events_main` and no usage month,
    /// however many model calls the months hold. Events of other types kept in the same
    /// place still come (on SQLite, every event: its log is one table), as with [`Self::ALL`].
    pub events_of: &'a [&'a str],
    /// The aggregate types whose payload and metadata are read (all if empty); the other
    /// events still come, so a reader's cursor moves over them, but with `null` for their JSON.
    pub json_of: &'a [&'a str],
    /// Leaves every event's metadata out (`null`), for readers that never ask who caused an
    /// event or when: a usage event's metadata is about a quarter of the bytes a read of model
    /// calls carries, and the usage cockpit reads a million of them in a rebuild.
    pub without_metadata: bool,
}

impl Selection<'static> {
    /// Every event, with its JSON.
    pub const ALL: Self = Self { events_of: &[], json_of: &[], without_metadata: false };
}

impl<'a> Selection<'a> {
    /// Every event, with JSON only of events of `types`.
    #[must_use]
    pub const fn json_of(types: &'a [&'a str]) -> Self {
        Self { events_of: &[], json_of: types, without_metadata: false }
    }

    /// Where a read of these events looks: the table, and a condition (to follow `where`,
    /// ending in `and`) naming the partitions that can hold them. Where they are is the whole
    /// test: a test of each event's type as well made PostgreSQL guess that few events pass it
    /// (an expression's default selectivity) and read every usage month whole and sort it
    /// rather than walk the global order to the batch's end (a rebuild ran at half the speed).
    fn source(&self, postgres: bool) -> (&'static str, &'static str) {
        if postgres {
            crate::log_months::pg_events_of_types(self.events_of)
        } else {
            ("events", "")
        }
    }
}

/// Only transactions older than every one still running: nothing can commit behind them.
pub(super) const PG_SETTLED: &str = "transaction_id < pg_snapshot_xmin(pg_current_snapshot())";

/// The statement that reads up to `limit.events` of the `selection`'s events after `cursor`,
/// and its arguments: `$1` and `$2` the cursor on PostgreSQL (`$1` on SQLite), then the number
/// of events. The JSON bound is kept as the rows arrive ([`read_after_in`]). Public so a test
/// can read its plan.
#[must_use]
pub fn read_after_statement(
    postgres: bool,
    cursor: Cursor,
    limit: ReadLimit,
    selection: Selection<'_>,
) -> (String, Vec<Arg>) {
    let columns = columns(postgres, selection);
    let (events, of) = selection.source(postgres);
    let (after, order, mut args) = if postgres {
        (
            format!(
                "{of} (transaction_id, global_position) > ($1::bigint::text::xid8, $2) and {PG_SETTLED}"
            ),
            "transaction_id, global_position",
            vec![Arg::Int(cursor.txid), Arg::Int(cursor.position)],
        )
    } else {
        (format!("{of} global_position > $1"), "global_position", vec![Arg::Int(cursor.position)])
    };
    args.push(Arg::Int(limit.events));
    let count = format!("${}", args.len());
    let sql =
        format!("select {columns} from {events} where {after} order by {order} limit {count}");
    (sql, args)
}

/// Events read in global order under a [`ReadLimit`].
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub events: Vec<StoredEvent>,
    /// The read stopped at its limit rather than at the end of the log: more may wait.
    pub full: bool,
    /// Bytes of the events' payload and metadata text, as [`ReadLimit::json_bytes`] counts them.
    pub json_bytes: i64,
}

/// Up to `limit` of the `selection`'s events after `cursor`, read within `tx` (a projector
/// holding SQLite's write lock must not wait for a second connection). `tx` is one begun by
/// [`Database::begin_reading_in_order`] or [`Database::begin_projecting`], which keep
/// PostgreSQL from sorting the log where its index gives the order.
///
/// # Errors
/// The database's error.
pub async fn read_after_in(
    tx: &mut Tx,
    cursor: Cursor,
    limit: ReadLimit,
    selection: Selection<'_>,
) -> Result<Batch, sqlx::Error> {
    let (sql, args) = read_after_statement(matches!(tx, Tx::Postgres(_)), cursor, limit, selection);
    // The JSON bound is kept here, as the rows arrive, rather than by the statement: a running
    // sum over the rows (a window) was two fifths of PostgreSQL's time for a read of 20,000
    // events. The rows after the one that crosses it are not decoded; PostgreSQL still sends
    // them, which [`ReadLimit::sized_for`] keeps to a few.
    let mut rows = tx.fetch::<StoredEvent>(&sql, &args);
    let mut batch = Batch::default();
    while let Some(event) = rows.try_next().await? {
        batch.json_bytes = batch.json_bytes.saturating_add(json_length(&event));
        batch.events.push(event);
        if batch.json_bytes >= limit.json_bytes {
            batch.full = true;
            break;
        }
    }
    batch.full |= batch.events.len() as i64 >= limit.events;
    Ok(batch)
}

/// The bytes of an event's JSON that a [`ReadLimit`] counts.
fn json_length(event: &StoredEvent) -> i64 {
    i64::try_from(event.payload.len() + event.metadata.len()).unwrap_or(i64::MAX)
}

/// The events table read in global order.
#[derive(Debug, Clone)]
pub struct GlobalOrder {
    pub(super) pool: Database,
}

impl GlobalOrder {
    /// The log in `pool`'s database.
    #[must_use]
    pub fn new(pool: Database) -> Self {
        Self { pool }
    }

    /// Up to `limit` of the `selection`'s events after `cursor`, in global order.
    ///
    /// # Errors
    /// The database's error.
    pub async fn read_after_of(
        &self,
        cursor: Cursor,
        limit: ReadLimit,
        selection: Selection<'_>,
    ) -> Result<Batch, sqlx::Error> {
        let mut tx = self.pool.begin_reading_in_order().await?;
        let batch = read_after_in(&mut tx, cursor, limit, selection).await?;
        tx.commit().await?;
        Ok(batch)
    }

    /// Up to `limit` events of one aggregate after its event `after_sequence` (0: from its
    /// first), in its own order, which is where they stand in the global order too (an event
    /// is decided on the one before it, committed). Found by the aggregate's key, so a reader
    /// of one organization's Keyring reads its events and no one else's: walking the global
    /// order for them instead read every event of every organization, a million model calls
    /// to find four key changes.
    ///
    /// # Errors
    /// The database's error.
    pub async fn read_aggregate_after(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let columns = columns(self.pool.is_postgres(), Selection::ALL);
        let (_, table, month) = self.cursor_columns(aggregate_type);
        let sql = format!(
            "select {columns} from {table} where {month} aggregate_type = $1 and aggregate_id = $2 \
             and sequence > $3 order by sequence limit $4"
        );
        let args = [
            Arg::Text(aggregate_type.to_owned()),
            Arg::Text(aggregate_id.to_owned()),
            Arg::Int(after_sequence),
            Arg::Int(limit),
        ];
        self.pool.fetch_all(&sql, &args).await
    }

    /// Whether committed events of `events_of` (all if empty) exist after `cursor` that a reader
    /// may not take yet (their transactions are not below every running one), asked once a
    /// read found nothing to take. Always false on SQLite.
    ///
    /// # Errors
    /// The database's error.
    pub async fn has_unsettled_after(
        &self,
        cursor: Cursor,
        events_of: &[&str],
    ) -> Result<bool, sqlx::Error> {
        if !self.pool.is_postgres() {
            return Ok(false);
        }
        let (events, of) = Selection { events_of, ..Selection::ALL }.source(true);
        let sql = format!(
            "select exists(select 1 from {events} where {of} \
             (transaction_id, global_position) > ($1::bigint::text::xid8, $2))"
        );
        let rows: Vec<(bool,)> =
            self.pool.fetch_all(&sql, &[Arg::Int(cursor.txid), Arg::Int(cursor.position)]).await?;
        Ok(rows.first().is_some_and(|(b,)| *b))
    }

    /// How a cursor's transaction is read, and where (PostgreSQL: the table and the month's
    /// condition, see [`crate::log_months::pg_events_of`]) a lookup of aggregate `$1`/`$2`
    /// finds its events.
    fn cursor_columns(&self, aggregate_type: &str) -> (&'static str, &'static str, String) {
        if self.pool.is_postgres() {
            let (table, month) = crate::log_months::pg_events_of(aggregate_type, "$2");
            ("transaction_id::text::bigint", table, month)
        } else {
            ("0", "events", String::new())
        }
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
        let (txid, table, month) = self.cursor_columns(aggregate_type);
        let sql = format!(
            "select {txid} as txid, global_position as position from {table} \
             where {month} aggregate_type = $1 and aggregate_id = $2 order by sequence desc limit 1"
        );
        let args = [Arg::Text(aggregate_type.to_owned()), Arg::Text(aggregate_id.to_owned())];
        Ok(self.pool.fetch_all::<Cursor>(&sql, &args).await?.into_iter().next())
    }

    /// [`GlobalOrder::latest_cursor`] as a derived table (`txid`, `position`; no row: no
    /// events) that another statement joins beside its own rows, of the aggregate whose id is
    /// the statement's parameter `id_param`: a read of a view learns in the same round trip
    /// whether the view shows the aggregate's latest event. Only for an aggregate type whose
    /// events are not kept by month (one table, no partition to choose).
    #[must_use]
    pub fn latest_cursor_table(&self, aggregate_type: &'static str, id_param: &str) -> String {
        debug_assert!(!crate::log_months::is_monthly(aggregate_type), "{aggregate_type}");
        debug_assert!(aggregate_type.chars().all(|c| c.is_ascii_alphanumeric()));
        let (txid, table, _) = self.cursor_columns(aggregate_type);
        format!(
            "(select {txid} as txid, global_position as position from {table} \
             where aggregate_type = '{aggregate_type}' and aggregate_id = {id_param} \
             order by sequence desc limit 1)"
        )
    }

    /// Where the latest event of any aggregate of `aggregate_type` stands in the global order
    /// (`None`: no events): every such event committed so far is at or before it.
    ///
    /// # Errors
    /// The database's error.
    pub async fn latest_cursor_of_type(
        &self,
        aggregate_type: &str,
    ) -> Result<Option<Cursor>, sqlx::Error> {
        // Readers take events in (transaction, position) order on PostgreSQL: the latest is the
        // greatest pair, which the `events_transaction_position` index walks backwards to.
        let sql = if self.pool.is_postgres() {
            let (table, partitions) = crate::log_months::pg_events_of_type(aggregate_type);
            format!(
                "select transaction_id::text::bigint as txid, global_position as position \
                 from {table} where {partitions} aggregate_type = $1 \
                 order by transaction_id desc, global_position desc limit 1"
            )
        } else {
            "select 0 as txid, global_position as position from events \
             where aggregate_type = $1 order by global_position desc limit 1"
                .to_owned()
        };
        let args = [Arg::Text(aggregate_type.to_owned())];
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
        let (txid, table, month) = self.cursor_columns(aggregate_type);
        let sql = format!(
            "select {txid} as txid, global_position as position from {table} \
             where {month} aggregate_type = $1 and aggregate_id = $2 and sequence = $3"
        );
        let args = [
            Arg::Text(aggregate_type.to_owned()),
            Arg::Text(aggregate_id.to_owned()),
            Arg::Int(sequence),
        ];
        Ok(self.pool.fetch_all::<Cursor>(&sql, &args).await?.into_iter().next())
    }

    /// Events of `types` after `at`, counted up to `bound`: how far a reader at `at` trails.
    ///
    /// # Errors
    /// The database's error.
    pub async fn count_after(
        &self,
        at: Cursor,
        types: &[&str],
        bound: i64,
    ) -> Result<i64, sqlx::Error> {
        let postgres = self.pool.is_postgres();
        let mut args = if postgres {
            vec![Arg::Int(bound), Arg::Int(at.txid), Arg::Int(at.position)]
        } else {
            vec![Arg::Int(bound), Arg::Int(at.position)]
        };
        args.extend(types.iter().map(|t| Arg::Text((*t).to_owned())));
        let sql = count_after_sql(postgres, types);
        let rows: Vec<(i64,)> = if postgres {
            let mut tx = self.pool.begin().await?;
            tx.execute(COUNT_AFTER_PLAN, &[]).await?;
            let rows = tx.fetch_all(&sql, &args).await?;
            tx.commit().await?;
            rows
        } else {
            self.pool.fetch_all(&sql, &args).await?
        };
        Ok(rows.first().map_or(0, |(n,)| *n))
    }
}

/// What [`GlobalOrder::count_after`] sets, for its transaction, before it counts on PostgreSQL:
/// the walk along the index is the only plan whose cost follows the events behind rather than
/// the month. The planner guesses that a third of the table follows a cursor (a row comparison
/// has no statistics of its own) and, planning for the values at hand, chose to read the whole
/// month's partition instead (measured in a soak: 90,000 pages and 450 ms to count 193 events,
/// every few seconds). For the same guess it starts parallel workers, whose start took 70 ms
/// on a busy 2-core machine to read 55 pages.
pub const COUNT_AFTER_PLAN: &str = "select set_config('enable_seqscan', 'off', true), \
     set_config('enable_bitmapscan', 'off', true), \
     set_config('max_parallel_workers_per_gather', '0', true)";

/// The statement [`GlobalOrder::count_after`] runs for `types`: `$1` the bound, then the
/// cursor (`$2`, `$3` on PostgreSQL: transaction and position; `$2` on SQLite: position), then
/// the types, bound in their order. Public so a test can read its plan.
///
/// On PostgreSQL it walks the `(transaction_id, global_position)` index from the cursor and
/// tests each event's type, so it reads about as many events as were committed since the
/// cursor (with [`COUNT_AFTER_PLAN`] set), in the partitions that can hold them only: the
/// Keyring views stand at the last Keyring event, however many model calls came after it, and
/// a count over the whole log would walk every one of those calls. The type test is kept out of
/// the index's reach (`|| ''`): where a month's partition had not been analyzed yet, PostgreSQL
/// intersected with the primary key's `aggregate_type` prefix, reading every event of the type
/// in the month (measured in a soak with autovacuum off: 647,073 index entries and 113 ms to
/// count 141 usage events behind, growing with the month, on every `/metrics` and `/readyz`).
#[must_use]
pub fn count_after_sql(postgres: bool, types: &[&str]) -> String {
    let first = if postgres { 4 } else { 3 };
    let in_list =
        (first..first + types.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
    if postgres {
        let (events, partitions) = crate::log_months::pg_events_of_types(types);
        format!(
            "select count(*) from (select 1 from {events} \
             where {partitions} (transaction_id, global_position) > ($2::bigint::text::xid8, $3) \
             and (aggregate_type || '') in ({in_list}) \
             order by transaction_id, global_position limit $1) behind"
        )
    } else {
        format!(
            "select count(*) from (select 1 from events where global_position > $2 \
             and aggregate_type in ({in_list}) limit $1) behind"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::ReadLimit;

    const LIMIT: ReadLimit = ReadLimit { events: 20_000, json_bytes: 8 * 1024 * 1024 };

    #[test]
    fn events_that_never_reach_the_json_bound_keep_the_whole_row_limit() {
        // Model calls without metadata: about 250 bytes each.
        assert_eq!(LIMIT.sized_for(20_000, 20_000 * 250), LIMIT);
        assert_eq!(LIMIT.sized_for(3, 900), LIMIT);
    }

    #[test]
    fn after_large_events_a_read_asks_for_about_as_many_as_the_bound_keeps() {
        // Usage events of a hundred calls: about 22 KB each, 381 fit in 8 MiB.
        let sized = LIMIT.sized_for(382, 382 * 22_000);
        assert_eq!(sized.json_bytes, LIMIT.json_bytes);
        assert_eq!(sized.events, 476, "381 that fit and a quarter more");
        // Larger than the bound: still one, so a reader moves on.
        assert_eq!(LIMIT.sized_for(1, 100 * 1024 * 1024).events, 1);
    }

    #[test]
    fn nothing_read_says_nothing_about_the_next_read() {
        assert_eq!(LIMIT.sized_for(0, 0), LIMIT);
        assert_eq!(ReadLimit::events(7).sized_for(5, 5_000), ReadLimit::events(7));
    }
}
