//! One organization's history in the global order, for auditors: its own aggregates' events
//! and its monthly ledgers', merged.
//!
//! An organization is a sliver of a busy log, so its history is not found by walking the
//! global order: that read every other organization's events on the way (about half a second
//! in a log of a million events, for an organization with a few hundred or none). Its
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
        let months: Vec<(NaiveDate,)> = tx.fetch_all(PG_LEDGER_MONTHS, &args).await?;
        Ok(months
            .into_iter()
            .map(|(month,)| Ledger {
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
select month from (
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
/// and its arguments (`$1` the organization, `$2` the position, `$3` the limit, then the
/// ledgers' ids): a branch for its own aggregates and one per ledger, each in the global
/// order, merged by the outer order (`Merge Append` on PostgreSQL, `MERGE (UNION ALL)` on
/// SQLite).
pub(super) fn org_read_statement(
    postgres: bool,
    aggregates: &OrgAggregates<'_>,
    after: i64,
    limit: i64,
) -> (String, Vec<Arg>) {
    let mut args = vec![Arg::Text(aggregates.org.to_owned()), Arg::Int(after), Arg::Int(limit)];
    // Each ledger's id is bound to the placeholder after those before it.
    let mut ledgers: Vec<(usize, Option<NaiveDate>)> = Vec::new();
    for ledger in aggregates.ledgers {
        args.push(Arg::Text(ledger.id.clone()));
        ledgers.push((args.len(), ledger.month));
    }
    // Aggregate type names come from the code, never from a request.
    let own_types =
        aggregates.own_types.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
    let sql = if postgres {
        pg_org_read(&own_types, aggregates.ledger_type, &ledgers)
    } else {
        sqlite_org_read(&own_types, aggregates.ledger_type, &ledgers)
    };
    (sql, args)
}

/// PostgreSQL's read: run without sorting where an index gives the order (the transaction says
/// `enable_sort = off`). Planned on estimates instead, the plan that PostgreSQL keeps for a
/// statement it has run a few times sorted a month's whole ledger for every page of a big
/// organization (5.4 s instead of 2.6 for 200,000 events). The organization's own aggregates
/// are read first by the primary key, their few events then sorted: otherwise the one order
/// that needs no sort is the walk of every Keyring's events.
fn pg_org_read(
    own_types: &str,
    ledger_type: &str,
    ledgers: &[(usize, Option<NaiveDate>)],
) -> String {
    let columns = columns(true, Selection::ALL);
    let after = format!(
        "(transaction_id, global_position) > ((select txid from after_event), $2) and {PG_SETTLED}"
    );
    // The cursor's transaction, looked up once for every branch.
    let mut with = vec!["after_event as materialized (select coalesce(\
         (select transaction_id from events where global_position = $2), '0'::xid8) as txid)"
        .to_owned()];
    // Each branch in its own order and to the page's limit, or PostgreSQL sorts the union
    // whole instead of merging the branches.
    let mut branches = Vec::new();
    if !own_types.is_empty() {
        with.push(format!(
            "own as materialized (select {columns} from events_main \
             where aggregate_type in ({own_types}) and aggregate_id = $1 and {after})"
        ));
        branches.push("(select * from own order by txid, position limit $3)".to_owned());
    }
    for (placeholder, month) in ledgers {
        // The month as a constant, so PostgreSQL plans the read of its partition alone.
        let month = month.map(|m| format!("log_month = '{}' and ", m.format("%Y-%m-%d")));
        branches.push(format!(
            "(select {columns} from events where {}aggregate_type = '{ledger_type}' \
             and aggregate_id = ${placeholder} and {after} \
             order by transaction_id, global_position limit $3)",
            month.unwrap_or_default(),
        ));
    }
    if branches.is_empty() {
        branches.push(format!("select {columns} from events where false"));
    }
    format!(
        "with {}\n{}\norder by txid, position limit $3",
        with.join(",\n"),
        branches.join("\nunion all\n")
    )
}

/// SQLite's read: it merges the branches of the compound, each in the order of an index or
/// sorted when none has it (the organization's own aggregates).
fn sqlite_org_read(
    own_types: &str,
    ledger_type: &str,
    ledgers: &[(usize, Option<NaiveDate>)],
) -> String {
    let columns = columns(false, Selection::ALL);
    let mut branches = Vec::new();
    if !own_types.is_empty() {
        branches.push(format!(
            "select {columns} from events where aggregate_type in ({own_types}) \
             and aggregate_id = $1 and global_position > $2"
        ));
    }
    for (placeholder, _) in ledgers {
        branches.push(format!(
            "select {columns} from events where aggregate_type = '{ledger_type}' \
             and aggregate_id = ${placeholder} and global_position > $2"
        ));
    }
    if branches.is_empty() {
        branches.push(format!("select {columns} from events where false"));
    }
    format!("{}\norder by position limit $3", branches.join("\nunion all\n"))
}
