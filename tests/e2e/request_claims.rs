//! Each recorded call's request id is claimed once in `usage_requests`, on PostgreSQL: by the
//! usage writer's appender in the statement that writes the calls, and by the events table's
//! trigger for every other writer. A repeated id turns the whole write away either way.

use chrono::{Datelike, Utc};
use cqrs_es::persist::SerializedEvent;
use serde_json::json;
use sqlx::{Connection as _, PgConnection, PgPool};

use keyledger_store::event_store::{AppendError, Appender};
use keyledger_store::Database;
use keyledger_tests::postgres;

fn calls(ledger: &str, sequence: usize, request_ids: &[&str]) -> SerializedEvent {
    let calls: Vec<_> =
        request_ids.iter().map(|id| json!({"org": "acme", "request_id": id})).collect();
    SerializedEvent {
        aggregate_id: ledger.to_owned(),
        sequence,
        aggregate_type: "UsageLedger".to_owned(),
        event_type: "ModelCallsRecorded".to_owned(),
        event_version: "1.0".to_owned(),
        payload: json!({"ModelCallsRecorded": {"calls": calls}}),
        metadata: json!({}),
    }
}

fn by_hand(ledger: &str, sequence: usize, request_id: &str) -> String {
    let payload = json!({"ModelCallRecorded": {"org": "acme", "request_id": request_id}});
    format!(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         values ('UsageLedger', '{ledger}', {sequence}, 'ModelCallRecorded', '1.0', '{payload}', '{{}}')"
    )
}

async fn claims(pool: &PgPool) -> Vec<(String, String, i64)> {
    sqlx::query_as("select request_id, ledger, sequence from usage_requests order by request_id")
        .fetch_all(pool)
        .await
        .expect("claims")
}

async fn events(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from events").fetch_one(pool).await.expect("events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_is_claimed_once_whoever_writes_its_call() {
    let url = postgres::fresh_database().await;
    let db = Database::connect(&url).await.expect("database");
    db.migrate().await.expect("migrations");
    let pool = PgPool::connect(&url).await.expect("connect");
    let now = Utc::now();
    let ledger = format!("acme/{:04}-{:02}", now.year(), now.month());
    let claim = |id: &str, sequence: i64| (id.to_owned(), ledger.clone(), sequence);

    // The appender claims the calls it writes, where they are.
    let mut appender = Appender::new(&db);
    appender.append(&[calls(&ledger, 1, &["r1", "r2"])], &[]).await.expect("append");
    assert_eq!(claims(&pool).await, [claim("r1", 1), claim("r2", 1)]);

    // A batch repeating a claimed id is turned away whole: its other call is not claimed and
    // its events are not written.
    let repeated =
        appender.append(&[calls(&ledger, 2, &["r3"]), calls(&ledger, 3, &["r1"])], &[]).await;
    assert!(matches!(repeated, Err(AppendError::Conflict)), "{repeated:?}");
    assert_eq!(claims(&pool).await, [claim("r1", 1), claim("r2", 1)]);
    assert_eq!(events(&pool).await, 1);

    // Written by hand, a call is claimed by the trigger, and a repeat is refused.
    sqlx::query(&by_hand(&ledger, 2, "r4")).execute(&pool).await.expect("by hand");
    assert_eq!(claims(&pool).await, [claim("r1", 1), claim("r2", 1), claim("r4", 2)]);
    let again = sqlx::query(&by_hand(&ledger, 3, "r2")).execute(&pool).await;
    assert!(again.is_err_and(|e| e.as_database_error().is_some_and(|d| d.is_unique_violation())));

    // The appender's word to the trigger lasts for its own transaction only: a later write on
    // the same connection is claimed for again.
    let mut connection = PgConnection::connect(&url).await.expect("connect");
    sqlx::query("select set_config('keyledger.usage_requests_claimed', 'on', true)")
        .execute(&mut connection)
        .await
        .expect("setting");
    sqlx::query(&by_hand(&ledger, 3, "r5")).execute(&mut connection).await.expect("by hand");
    assert_eq!(claims(&pool).await.last(), Some(&claim("r5", 3)));

    // And the appender goes on after both.
    appender.append(&[calls(&ledger, 4, &["r6"])], &[]).await.expect("append");
    assert_eq!(claims(&pool).await.len(), 5);
    assert_eq!(events(&pool).await, 4);

    connection.close().await.expect("close");
    pool.close().await;
    postgres::drop_database(&url).await;
}
