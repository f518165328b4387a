//! An organization's history, read by its aggregates' keys and merged, is exactly what walking
//! the whole log in its global order finds of it: its Keyring and every month's ledger, in
//! the same order, page after page, and nothing of an organization whose name starts alike.

use std::time::Duration;

use keyledger_projections::{Cursor, EventLog, ReadLimit, Selection};
use keyledger_store::Database;
use keyledger_tests::{on_both_backends, Backend, TestApp};

on_both_backends!(an_organizations_history_is_its_events_of_every_month_in_global_order);

async fn an_organizations_history_is_its_events_of_every_month_in_global_order(backend: Backend) {
    let app = TestApp::start(backend).await;
    let db = Database::connect(&app.database_url).await.expect("connect");
    if db.is_postgres() {
        // October and November get partitions; September's events land in the default one.
        app.execute_sql("select keyledger_create_log_months('2026-10-01', '2026-11-01')").await;
    }
    let mut sequences = std::collections::HashMap::new();
    let mut write = |aggregate_type: &'static str, aggregate_id: &'static str| {
        let sequence = sequences.entry(aggregate_id).or_insert(0_i64);
        *sequence += 1;
        (aggregate_type, aggregate_id, *sequence)
    };
    let events = [
        write("Keyring", "acme"),
        write("UsageLedger", "acme/2026-11"),
        write("UsageLedger", "acme-eu/2026-11"),
        write("Keyring", "acme-eu"),
        write("UsageLedger", "acme/2026-10"),
        write("UsageLedger", "acme.x/2026-10"),
        write("UsageLedger", "acme/2026-11"),
        write("UsageLedger", "acme/2026-09"),
        write("Keyring", "acme"),
        write("UsageLedger", "acme/2026-10"),
        write("UsageLedger", "acme/2026-09"),
        write("UsageLedger", "acme/2026-11"),
        write("UsageLedger", "acmeco/2026-11"),
        write("Keyring", "acme"),
    ];
    for (aggregate_type, aggregate_id, sequence) in events {
        insert(&db, aggregate_type, aggregate_id, sequence).await;
    }
    let mut written = events.len();
    if let Database::Postgres(pool) = &db {
        // A transaction that took its id first but writes last comes first in the global
        // order, ahead of an event with a smaller position.
        let mut first = pool.begin().await.expect("begin");
        sqlx::query("select pg_current_xact_id()").execute(&mut *first).await.expect("xid");
        insert(&db, "UsageLedger", "acme/2026-11", 4).await;
        insert_in(&mut first, "UsageLedger", "acme/2026-10", 3).await;
        first.commit().await.expect("commit");
        written += 2;
    }

    let log = EventLog::new(db.clone());
    let whole_log = settled_log(&log, written).await;
    let of = |org: &str| -> Vec<i64> {
        whole_log
            .iter()
            .filter(|(_, id, _)| id == org || id.starts_with(&format!("{org}/")))
            .map(|(position, _, _)| *position)
            .collect()
    };
    let acme = of("acme");
    let acmes = events.iter().filter(|(_, id, _)| *id == "acme" || id.starts_with("acme/")).count();
    assert_eq!(acme.len(), acmes + written - events.len(), "{whole_log:?}");
    if db.is_postgres() {
        assert!(
            acme.windows(2).any(|w| w[0] > w[1]),
            "the late writer's event comes before a smaller position: {acme:?}"
        );
    }

    for org in ["acme", "acme-eu", "acme.x", "acmeco", "nobody"] {
        for page in [2, 3, 1_000] {
            let mut read = Vec::new();
            let mut after = 0;
            loop {
                let events = log.read_org_after(org, after, page).await.expect("read");
                assert!(events.len() as i64 <= page, "a page holds at most its limit");
                let Some(last) = events.last() else { break };
                after = last.cursor.position;
                read.extend(events.iter().map(|e| e.cursor.position));
            }
            assert_eq!(read, of(org), "{org} in pages of {page}: as the global order has it");
        }
    }
    app.finish().await;
}

/// Every event of the log in the global order, `(position, aggregate id, sequence)`, once all
/// `written` are settled (other tests' transactions may hold PostgreSQL's horizon a moment).
async fn settled_log(log: &EventLog, written: usize) -> Vec<(i64, String, i64)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut all = Vec::new();
        let mut cursor = Cursor::default();
        loop {
            let batch = log
                .read_after_of(cursor, ReadLimit::events(100), Selection::ALL)
                .await
                .expect("read")
                .events;
            let Some(last) = batch.last() else { break };
            cursor = last.cursor;
            all.extend(
                batch
                    .iter()
                    .map(|e| (e.cursor.position, e.stored.aggregate_id.clone(), e.stored.sequence)),
            );
        }
        let ours = all.iter().filter(|(_, id, _)| id.starts_with("acme")).count();
        if ours == written || tokio::time::Instant::now() > deadline {
            assert_eq!(ours, written, "every event written is in the log");
            return all;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const INSERT: &str = "insert into events (aggregate_type, aggregate_id, sequence, event_type, \
                      event_version, payload, metadata) values ($1, $2, $3, 'Happened', '1.0', ";

async fn insert(db: &Database, aggregate_type: &str, aggregate_id: &str, sequence: i64) {
    match db {
        Database::Postgres(pool) => {
            let mut tx = pool.begin().await.expect("begin");
            insert_in(&mut tx, aggregate_type, aggregate_id, sequence).await;
            tx.commit().await.expect("commit");
        }
        Database::Sqlite(pool) => {
            sqlx::query(&format!("{INSERT} '{{}}', '{{}}')"))
                .bind(aggregate_type)
                .bind(aggregate_id)
                .bind(sequence)
                .execute(pool)
                .await
                .expect("insert");
        }
    }
}

async fn insert_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) {
    sqlx::query(&format!("{INSERT} '{{}}'::json, '{{}}'::json)"))
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(sequence)
        .execute(&mut **tx)
        .await
        .expect("insert");
}
