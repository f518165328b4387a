//! The log partitioned by month for usage, on PostgreSQL: each month's usage events sit in a
//! partition of their own that an operator can detach and archive, everything else in
//! `events_main`, and a database of an earlier version keeps its whole history, in its order,
//! when it is moved over.

use std::borrow::Cow;
use std::time::Duration;

use axum::http::StatusCode;
use chrono::{Datelike, Months, Utc};
use cqrs_es::persist::SerializedEvent;
use serde_json::json;
use sqlx::{PgPool, Row};

use keyledger_api::Role;
use keyledger_store::event_store::{AppendError, Appender};
use keyledger_store::Database;
use keyledger_tests::{postgres, Backend, TestApp};

/// The partition each event of `aggregate_type` sits in, in log order.
async fn partitions_of(app: &TestApp, aggregate_type: &str) -> Vec<String> {
    app.texts(&format!(
        "select tableoid::regclass::text from events where aggregate_type = '{aggregate_type}' \
         order by global_position"
    ))
    .await
}

fn month_partition(at: chrono::DateTime<Utc>) -> String {
    format!("events_{:04}_{:02}", at.year(), at.month())
}

/// A usage event as an older version of keyledger, a restore or a hand wrote it: without a
/// log month.
fn old_call_sql(ledger: &str, request_id: &str, at: chrono::DateTime<Utc>) -> String {
    let payload = json!({"ModelCallRecorded": {"org": "acme", "request_id": request_id,
        "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5,
        "cost_usd": 0.25, "key_source": "byok", "key_version": 1, "at": at.to_rfc3339()}});
    format!(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         values ('UsageLedger', '{ledger}', 1, 'ModelCallRecorded', '1.0', '{payload}'::json, '{{}}'::json)"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_months_usage_has_a_partition_an_operator_can_detach() {
    let app = TestApp::start(Backend::Postgres).await;
    let now = Utc::now();
    let months: Vec<String> =
        (0..3).map(|ahead| month_partition(now + Months::new(ahead))).collect();
    let partitions = app
        .texts(
            "select inhrelid::regclass::text from pg_inherits where inhparent = 'events'::regclass",
        )
        .await;
    for month in &months {
        assert!(partitions.contains(month), "{month} is made ahead of time: {partitions:?}");
    }

    app.set_plan("acme", "pro").await;
    let service = app.token("acme", Role::Service, "worker");
    let call = json!({"request_id": "now-1", "provider": "openai", "model": "gpt-4o-mini",
                      "input_tokens": 10, "output_tokens": 5});
    let recorded = app.post("/v1/orgs/acme/usage", &service, call).await;
    assert_eq!(recorded.status, StatusCode::CREATED, "{}", recorded.everything());
    assert_eq!(partitions_of(&app, "UsageLedger").await, [months[0].clone()]);
    let elsewhere = app
        .texts("select distinct tableoid::regclass::text from events where aggregate_type <> 'UsageLedger'")
        .await;
    assert_eq!(elsewhere, ["events_main"], "only usage is split by month");

    // A closed month that keyledger made no partition for, given one by hand, takes its
    // events whoever writes them, and claims their request ids as any usage event does.
    let closed = now - Months::new(2);
    let ledger = format!("acme/{:04}-{:02}", closed.year(), closed.month());
    let day = closed.format("%Y-%m-%d").to_string();
    app.execute_sql(&format!("select keyledger_create_log_months('{day}', '{day}')")).await;
    app.execute_sql(&old_call_sql(&ledger, "closed-1", closed)).await;
    assert_eq!(
        partitions_of(&app, "UsageLedger").await,
        [months[0].clone(), month_partition(closed)]
    );
    assert_eq!(
        app.count("select count(*) from events_main where aggregate_type = 'UsageLedger'").await,
        0,
        "events_main handed the event on and kept no copy"
    );
    assert_eq!(
        app.count("select count(*) from usage_requests where request_id = 'closed-1'").await,
        1
    );

    // The cockpit counts the closed month; detached and archived, the month leaves the log
    // but not the daily totals, and keyledger carries on.
    let owner = app.owner("acme");
    let path = format!("/v1/orgs/acme/usage?from={day}&to={}", now.format("%Y-%m-%d"));
    let mut totals = serde_json::Value::Null;
    for _ in 0..200 {
        totals = app.get(&path, &owner).await.json();
        if totals["totals"]["calls"] == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(totals["totals"]["calls"], 2, "{totals}");
    let closed_partition = month_partition(closed);
    app.execute_sql(&format!("alter table events detach partition {closed_partition}")).await;
    app.execute_sql(&format!("create table archived as select * from {closed_partition}")).await;
    app.execute_sql(&format!("drop table {closed_partition}")).await;
    assert_eq!(app.count("select count(*) from archived").await, 1);
    assert_eq!(partitions_of(&app, "UsageLedger").await, [months[0].clone()]);
    let next = json!({"request_id": "now-2", "provider": "openai", "model": "gpt-4o-mini",
                      "input_tokens": 10, "output_tokens": 5});
    let recorded = app.post("/v1/orgs/acme/usage", &service, next).await;
    assert_eq!(recorded.status, StatusCode::CREATED, "{}", recorded.everything());
    let mut totals = serde_json::Value::Null;
    for _ in 0..200 {
        totals = app.get(&path, &owner).await.json();
        if totals["totals"]["calls"] == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(totals["totals"]["calls"], 3, "the daily totals keep the archived month: {totals}");
    app.finish().await;
}

/// An event of `aggregate_id` at `sequence`, as the store serializes one.
fn event(aggregate_type: &str, aggregate_id: &str, sequence: usize) -> SerializedEvent {
    SerializedEvent {
        aggregate_id: aggregate_id.to_owned(),
        sequence,
        aggregate_type: aggregate_type.to_owned(),
        event_type: "Tested".to_owned(),
        event_version: "1.0".to_owned(),
        payload: json!({"Tested": {"n": sequence}}),
        metadata: json!({}),
    }
}

/// Every event as text, in log order, with the columns an earlier version had.
async fn log_as_text(pool: &PgPool) -> Vec<String> {
    sqlx::query(
        "select concat_ws('|', global_position, transaction_id, aggregate_type, aggregate_id, \
         sequence, event_type, payload::text, recorded_at) from events order by global_position",
    )
    .fetch_all(pool)
    .await
    .expect("log")
    .iter()
    .map(|row| row.get::<String, _>(0))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_of_an_earlier_version_moves_into_partitions_whole_and_in_order() {
    let url = postgres::fresh_database().await;
    let pool = PgPool::connect(&url).await.expect("connect");
    let mut before_partitions = sqlx::migrate!("../migrations/postgres");
    before_partitions.migrations = Cow::Owned(
        before_partitions.migrations.iter().filter(|m| m.version < 14).cloned().collect(),
    );
    before_partitions.run(&pool).await.expect("migrations before partitioning");

    let now = Utc::now();
    let this_month = format!("acme/{:04}-{:02}", now.year(), now.month());
    let earlier = now - Months::new(3);
    let earlier_month = format!("acme/{:04}-{:02}", earlier.year(), earlier.month());
    let usage = |ledger: &str, sequence: i64, request_id: &str| {
        let payload = json!({"ModelCallRecorded": {"org": "acme", "request_id": request_id}});
        format!("('UsageLedger', '{ledger}', {sequence}, 'ModelCallRecorded', '1.0', '{payload}', '{{}}')")
    };
    sqlx::query(&format!(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) values \
         ('Keyring', 'acme', 1, 'Tested', '1.0', '{{}}', '{{}}'), {}, {}, \
         ('Keyring', 'acme', 2, 'Tested', '1.0', '{{}}', '{{}}'), {}",
        usage(&earlier_month, 1, "r1"),
        usage(&this_month, 1, "r2"),
        usage(&this_month, 2, "r3"),
    ))
    .execute(&pool)
    .await
    .expect("history of an earlier version");
    let before = log_as_text(&pool).await;

    let db = Database::connect(&url).await.expect("database");
    db.migrate().await.expect("partitioning migration");
    assert_eq!(log_as_text(&pool).await, before, "the same events, positions and transactions");
    let placed: Vec<String> =
        sqlx::query_scalar("select tableoid::regclass::text from events order by global_position")
            .fetch_all(&pool)
            .await
            .expect("partitions");
    let (early, late) = (month_partition(earlier), month_partition(now));
    assert_eq!(placed, ["events_main", &early, &late, "events_main", &late]);
    let claims: i64 = sqlx::query_scalar("select count(*) from usage_requests")
        .fetch_one(&pool)
        .await
        .expect("claims");
    assert_eq!(claims, 3, "request ids claimed before stay claimed once");

    // Appends carry on after the last position, and a taken sequence is still a conflict,
    // whether the writer names the month or not.
    let mut appender = Appender::new(&db);
    appender
        .append(&[event("UsageLedger", &this_month, 3), event("Keyring", "acme", 3)], &[])
        .await
        .expect("append");
    let last: Vec<(String, i64)> = sqlx::query_as(
        "select tableoid::regclass::text, global_position from events order by global_position desc limit 2",
    )
    .fetch_all(&pool)
    .await
    .expect("last");
    assert_eq!(last, [("events_main".to_owned(), 7), (late.clone(), 6)]);
    let taken = appender.append(&[event("UsageLedger", &this_month, 3)], &[]).await;
    assert!(matches!(taken, Err(AppendError::Conflict)), "{taken:?}");
    let by_hand = sqlx::query(&format!(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         values {}",
        usage(&this_month, 3, "r9")
    ))
    .execute(&pool)
    .await;
    assert!(by_hand.is_err_and(|e| e.as_database_error().is_some_and(|d| d.is_unique_violation())));
    pool.close().await;
    postgres::drop_database(&url).await;
}

/// A usage event of a hundred calls holds 20–30 kB of JSON, which PostgreSQL compresses as it
/// writes it: with lz4, at less than half pglz's cost, in the months made before migration 0017
/// ran as in those made after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_events_are_compressed_with_lz4_in_every_month() {
    let app = TestApp::start(Backend::Postgres).await;
    let later = Utc::now() + Months::new(30);
    let day = later.format("%Y-%m-%d").to_string();
    app.execute_sql(&format!("select keyledger_create_log_months('{day}', '{day}')")).await;
    let methods = app
        .texts(
            "select distinct a.attcompression::text from pg_attribute a \
             where a.attname = 'payload' and (a.attrelid = 'events'::regclass \
             or a.attrelid in (select inhrelid from pg_inherits where inhparent = 'events'::regclass))",
        )
        .await;
    assert_eq!(methods, ["l"], "every partition, the one made just now included");

    app.set_plan("acme", "pro").await;
    let service = app.token("acme", Role::Service, "worker");
    let calls: Vec<serde_json::Value> = (0..200)
        .map(|n| {
            json!({"request_id": format!("lz-{n}"), "provider": "openai", "model": "gpt-4o-mini",
                   "input_tokens": 10, "output_tokens": 5})
        })
        .collect();
    let recorded = app.post("/v1/orgs/acme/usage/batch", &service, json!({"calls": calls})).await;
    assert!(recorded.status.is_success(), "{}", recorded.everything());
    let stored = app
        .texts(
            "select distinct coalesce(pg_column_compression(payload), 'none') from events \
             where event_type = 'ModelCallsRecorded'",
        )
        .await;
    assert_eq!(stored, ["lz4"], "a hundred calls' event is stored compressed with lz4");
    app.finish().await;
}
