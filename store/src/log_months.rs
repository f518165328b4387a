//! The log's monthly partitions on PostgreSQL (migration 0014): each month's usage events go
//! to a partition of their own, `events_YYYY_MM`, which an operator can detach and archive
//! whole. Partitions are made ahead of their month, so none is created while calls pour in;
//! a month that has none still takes its events, in `events_usage_default`.

use std::time::Duration;

use tokio::sync::watch;

use crate::database::Database;

/// Whether the events of `aggregate_type` are kept by month: the usage ledgers' alone (their ids
/// end in `/YYYY-MM`); the database's `keyledger_log_month_of` says the same.
#[must_use]
pub(crate) fn is_monthly(aggregate_type: &str) -> bool {
    aggregate_type == crate::USAGE_LEDGER
}

/// Where a PostgreSQL read of one aggregate of `aggregate_type` finds its events: the table,
/// and a condition (to follow `where`, ending in `and`) naming the month of the aggregate whose
/// id is the SQL expression `id`.
///
/// A usage ledger's events are in its month's partition: naming the month keeps the read to
/// that one partition. Every other aggregate's events are in `events_main`, read as a plain
/// table: through the partitioned parent PostgreSQL would plan each read afresh (it prunes per
/// value), which cost more than the read itself.
#[must_use]
pub(crate) fn pg_events_of(aggregate_type: &str, id: &str) -> (&'static str, String) {
    if is_monthly(aggregate_type) {
        ("events", format!("log_month = keyledger_log_month_of($1, {id}) and"))
    } else {
        ("events_main", String::new())
    }
}

/// Where a PostgreSQL read across every aggregate of `aggregate_type` finds its events: the
/// table, and a condition (to follow `where`, ending in `and`) that leaves out the partitions
/// holding none of them. Walking an index backwards to the latest usage event, PostgreSQL
/// otherwise read every entry of `events_main` (every Keyring's events) to learn it had none
/// (measured: 76 ms for 20,000 Keyring events, under load).
#[must_use]
pub(crate) fn pg_events_of_type(aggregate_type: &str) -> (&'static str, &'static str) {
    pg_events_of_types(&[aggregate_type])
}

/// [`pg_events_of_type`] for the events of any of `types` (all if empty): `events_main` when
/// none of them is kept by month, the months alone when all are, the whole log otherwise. A
/// projector of Keyring views thus never reads a usage month, however many calls it holds.
#[must_use]
pub(crate) fn pg_events_of_types(types: &[&str]) -> (&'static str, &'static str) {
    if types.is_empty() {
        ("events", "")
    } else if types.iter().all(|t| is_monthly(t)) {
        // `events_main` holds the months before the year 1: `-infinity`, everything else's.
        ("events", "log_month >= '0001-01-01' and")
    } else if types.iter().any(|t| is_monthly(t)) {
        ("events", "")
    } else {
        ("events_main", "")
    }
}

/// How often a serving replica makes sure the coming months have their partitions.
const LOOK_EVERY: Duration = Duration::from_secs(6 * 60 * 60);

/// Makes the partitions of this month and the next two that do not exist yet (nothing on
/// SQLite, whose log is one table).
///
/// # Errors
/// The database's error.
pub async fn prepare(db: &Database) -> Result<(), sqlx::Error> {
    if !db.is_postgres() {
        return Ok(());
    }
    db.execute(
        "select keyledger_create_log_months(current_date, (current_date + interval '2 months')::date)",
        &[],
    )
    .await
    .map(drop)
}

/// Prepares the coming months now and every six hours until `shutdown` turns true.
pub async fn keep_ahead(db: Database, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(error) = prepare(&db).await {
            tracing::warn!(%error, "could not make the coming months' log partitions; trying again later");
        }
        tokio::select! {
            () = tokio::time::sleep(LOOK_EVERY) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}
