//! One organization's history in the global order, for auditors: its own aggregates' events
//! and its monthly ledgers', merged.
//!
//! An organization is a sliver of a busy log, so its history is not found by walking the
//! global order: that read every other organization's events on the way (70–580 ms a page of
//! a million-event log, and the whole log for an organization with little history). Its
//! aggregates are few and known by key: the ones named by the organization's id, and a ledger
//! a month, `org/YYYY-MM`. Each ledger is read through an index that keeps a ledger's events
//! in the global order (`events_by_aggregate_in_global_order`, of usage events alone, so key
//! commands do not write it); the organization's own aggregates hold few events, read by the
//! primary key and sorted. The reads are merged as the database goes, so a page costs its own
//! events and one step into each aggregate.

use chrono::NaiveDate;

use super::global_order::{columns, GlobalOrder, Selection, StoredEvent, PG_SETTLED};
use crate::sql::{Arg, Tx};

/// One of an organization's monthly ledgers: its id, and on PostgreSQL the first day of its
/// month, which names the partition holding its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Ledger {
    pub id: String,
    pub month: Option<NaiveDate>,
}

/// The aggregates that make up an organization's history.
#[derive(Debug, Clone, Copy)]
pub(super) struct OrgAggregates<'a> {
    pub org: &'a str,
    /// Types of the aggregates whose id is the organization's (code's names, never a request's).
    pub own_types: &'a [&'a str],
    /// The type of its monthly ledgers.
    pub ledger_type: &'a str,
    pub ledgers: &'a [Ledger],
}

impl GlobalOrder {
    /// Up to `limit` events of `org` after the event at global position `after` (0: from the
    /// start), in global order: those of its aggregates of the `own_types` (whose id is `org`)
    /// and of its ledgers of `ledger_type` (ids `org/YYYY-MM`).
    ///
    /// # Errors
    /// The database's error.
    pub async fn read_org_after(
        &self,
        org: &str,
        own_types: &[&str],
        ledger_type: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        // One snapshot: the ledgers found are those whose events the read then sees.
        let mut tx = self.pool.begin_reading_one_snapshot().await?;
        let ledgers = org_ledgers(&mut tx, org, ledger_type).await?;
        let aggregates = OrgAggregates { org, own_types, ledger_type, ledgers: &ledgers };
        let (sql, args) = org_read_statement(self.pool.is_postgres(), &aggregates, after, limit);
        let events = tx.fetch_all(&sql, &args).await?;
        tx.commit().await?;
        Ok(events)
    }
}

/// The ledgers `org` has events in.
///
/// PostgreSQL keeps each month's ledgers in a partition of their own (`events_YYYY_MM`), so
/// the months are those of the partitions, and of the events in the default partition (months
/// without one, normally none); a month where `org` has no ledger costs its read one index
/// probe. Ids are not looked up by prefix there, as a collation other than `C` does not keep
/// the ids that start with `org/` together. SQLite compares text by its bytes: its ledgers are
/// found in the primary key's order, one step from each to the next.
async fn org_ledgers(
    tx: &mut Tx,
    org: &str,
    ledger_type: &str,
) -> Result<Vec<Ledger>, sqlx::Error> {
    let args = [Arg::Text(org.to_owned()), Arg::Text(ledger_type.to_owned())];
    if tx.is_postgres() {
        let months: Vec<(String,)> = tx.fetch_all(PG_LEDGER_MONTHS, &args).await?;
        Ok(months
            .into_iter()
            .filter_map(|(day,)| NaiveDate::parse_from_str(&day, "%Y-%m-%d").ok())
            .map(|month| Ledger {
                id: format!("{org}/{}", month.format("%Y-%m")),
                month: Some(month),
            })
            .collect())
    } else {
        let ids: Vec<(String,)> = tx.fetch_all(SQLITE_LEDGERS, &args).await?;
        Ok(ids.into_iter().map(|(id,)| Ledger { id, month: None }).collect())
    }
}

/// The first day of every month the log has a partition for, and of the months of `$1`'s
/// ledgers (of type `$2`) in the default partition.
const PG_LEDGER_MONTHS: &str = r"
select to_char(month, 'YYYY-MM-DD') from (
    select generate_series(bounds[1]::date, bounds[2]::date - 1, interval '1 month')::date as month
    from pg_inherits
    join pg_class on pg_class.oid = pg_inherits.inhrelid
    cross join lateral regexp_match(pg_get_expr(pg_class.relpartbound, pg_class.oid),
        'FROM \(''(\d{4}-\d{2}-\d{2})''\) TO \(''(\d{4}-\d{2}-\d{2})''\)') as bounds
    where pg_inherits.inhparent = 'events'::regclass
    union
    select log_month from events_usage_default
    where aggregate_type = $2 and substr(aggregate_id, 1, length($1) + 1) = $1 || '/'
) months
order by 1";

/// The ids of `$1`'s ledgers (of type `$2`): a walk of the primary key that jumps from each
/// ledger to the next (`/` and `0` are neighbours in byte order, so the ids that start with
/// `org/` are those from `org/` up to `org0`).
const SQLITE_LEDGERS: &str = r"
with recursive ledger(id) as (
    select (select min(aggregate_id) from events
            where aggregate_type = $2 and aggregate_id >= $1 || '/' and aggregate_id < $1 || '0')
    union all
    select (select min(aggregate_id) from events
            where aggregate_type = $2 and aggregate_id > ledger.id and aggregate_id < $1 || '0')
    from ledger where ledger.id is not null
)
select id from ledger where id is not null";

/// The statement reading up to `limit` of the organization's events after position `after`,
/// and its arguments: one branch per aggregate, each in the global order, merged
/// by the outer order (`Merge Append` on PostgreSQL, `MERGE (UNION ALL)` on SQLite).
pub(super) fn org_read_statement(
    postgres: bool,
    aggregates: &OrgAggregates<'_>,
    after: i64,
    limit: i64,
) -> (String, Vec<Arg>) {
    let columns = columns(postgres, Selection::ALL);
    let mut args = vec![Arg::Text(aggregates.org.to_owned()), Arg::Int(after), Arg::Int(limit)];
    let mut branches: Vec<String> = Vec::new();
    let after_cursor = if postgres {
        format!("(transaction_id, global_position) > ((select txid from after_event), $2) and {PG_SETTLED}")
    } else {
        "global_position > $2".to_owned()
    };
    let main = if postgres { "events_main" } else { "events" };
    for own_type in aggregates.own_types {
        branches.push(format!(
            "select {columns} from {main} where aggregate_type = '{own_type}' \
             and aggregate_id = $1 and {after_cursor}"
        ));
    }
    for ledger in aggregates.ledgers {
        args.push(Arg::Text(ledger.id.clone()));
        // The month as a constant, so PostgreSQL plans the read of its partition alone.
        let month = ledger
            .month
            .map(|m| format!("log_month = '{}' and ", m.format("%Y-%m-%d")))
            .unwrap_or_default();
        branches.push(format!(
            "select {columns} from events where {month}aggregate_type = '{}' \
             and aggregate_id = ${} and {after_cursor}",
            aggregates.ledger_type,
            args.len(),
        ));
    }
    if branches.is_empty() {
        branches.push(format!("select {columns} from events where 1 = 0"));
    }
    if postgres {
        // Each branch in its own order, or PostgreSQL sorts the union whole instead of
        // merging the branches (it does not see that an index gives each one the order); and
        // each to the page's limit, or it plans to sort a month's whole ledger rather than
        // walk the index that has it in order.
        for branch in &mut branches {
            *branch = format!("({branch} order by transaction_id, global_position limit $3)");
        }
    }
    let union = branches.join("\nunion all\n");
    let order = if postgres { "txid, position" } else { "position" };
    let sql = if postgres {
        // The cursor's transaction, looked up once for every branch.
        format!(
            "with after_event as materialized (\
                 select coalesce((select transaction_id from events where global_position = $2), \
                                 '0'::xid8) as txid)\n\
             {union}\norder by {order} limit $3"
        )
    } else {
        format!("{union}\norder by {order} limit $3")
    };
    (sql, args)
}
