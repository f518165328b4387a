//! `KEYLEDGER_USAGE_CALLS_DAYS`: the list of single calls reaches back so many days; the daily
//! totals keep every day.

use std::time::Duration;

use axum::http::StatusCode;
use chrono::{Datelike, TimeDelta, Utc};
use serde_json::json;

use keyledger_api::Role;
use keyledger_tests::{on_both_backends, Backend, TestApp};

const KEEP: (&str, &str) = ("KEYLEDGER_USAGE_CALLS_DAYS", "30");

/// A usage event row as the log holds it, for `org`'s ledger of the month of `at`.
fn call(request_id: &str, at: chrono::DateTime<Utc>) -> serde_json::Value {
    json!({"org": "acme", "request_id": request_id, "provider": "openai", "model": "gpt-4o-mini",
           "input_tokens": 10, "output_tokens": 5, "cost_usd": 0.25, "key_source": "byok",
           "key_version": 1, "at": at.to_rfc3339()})
}

/// Polls `path` until `done` holds of its JSON (the views follow the log on their own).
async fn until(
    app: &TestApp,
    path: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let owner = app.owner("acme");
    for _ in 0..200 {
        let answer = app.get(path, &owner).await.json();
        if done(&answer) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never showed what was expected");
}

on_both_backends!(calls_older_than_the_retention_leave_the_list_and_stay_in_the_totals);

async fn calls_older_than_the_retention_leave_the_list_and_stay_in_the_totals(backend: Backend) {
    let app = TestApp::start_with(backend, &[KEEP]).await;
    // Sixty days ago: one call alone and two stored together, written to the log as an older
    // version of keyledger (or a restore) would have.
    let old = Utc::now() - TimeDelta::days(60);
    let ledger = format!("acme/{:04}-{:02}", old.year(), old.month());
    let cast = if backend == Backend::Postgres { "::json" } else { "" };
    let alone = json!({"ModelCallRecorded": call("old-1", old)});
    let together =
        json!({"ModelCallsRecorded": {"calls": [call("old-2", old), call("old-3", old)]}});
    app.execute_sql(&format!(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) values \
         ('UsageLedger', '{ledger}', 1, 'ModelCallRecorded', '1.0', '{alone}'{cast}, '{{}}'{cast}), \
         ('UsageLedger', '{ledger}', 2, 'ModelCallsRecorded', '1.0', '{together}'{cast}, '{{}}'{cast})"
    ))
    .await;
    let service = app.token("acme", Role::Service, "worker");
    let fresh = json!({"request_id": "new-1", "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5});
    let recorded = app.post("/v1/orgs/acme/usage", &service, fresh).await;
    assert_eq!(recorded.status, StatusCode::CREATED, "{}", recorded.everything());

    let (from, to) = (old.format("%Y-%m-%d"), Utc::now().format("%Y-%m-%d"));
    let usage = until(&app, &format!("/v1/orgs/acme/usage?from={from}&to={to}"), |u| {
        u["totals"]["calls"] == 4
    })
    .await;
    assert_eq!(usage["totals"]["calls"], 4, "the totals keep every day: {usage}");
    let listed = app.get("/v1/orgs/acme/usage/calls?limit=10", &app.owner("acme")).await.json();
    let ids: Vec<&str> = listed["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter_map(|c| c["request_id"].as_str())
        .collect();
    assert_eq!(ids, ["new-1"], "calls older than 30 days are not listed");
    let export = app
        .get(
            &format!("/v1/orgs/acme/usage/export?from={from}&to={to}&format=ndjson"),
            &app.owner("acme"),
        )
        .await;
    let text = String::from_utf8_lossy(&export.body).into_owned();
    assert_eq!(text.lines().count(), 1, "the export reaches back as far as the list: {text}");
    assert!(text.contains("new-1"));

    // A call listed while it was recent (an older version kept every call) leaves the list
    // when a replica with the retention starts, and the recent call stays.
    let listed_then = (Utc::now() - TimeDelta::days(45)).to_rfc3339();
    let at = if backend == Backend::Postgres {
        format!("'{listed_then}'::timestamptz")
    } else {
        format!("'{listed_then}'")
    };
    app.execute_sql(&format!(
        "insert into usage_calls (org_id, position, slot, request_id, provider, model, key_source, key_version, \
         input_tokens, output_tokens, cost_micros, at) values ('acme', 1, 0, 'listed-then', 'openai', 'gpt-4o-mini', \
         'byok', 1, 10, 5, 250000, {at})"
    ))
    .await;
    assert_eq!(
        app.count("select count(*) from usage_calls where request_id = 'listed-then'").await,
        1
    );
    let replica = app.replica_with(&[KEEP]).await;
    let mut left = false;
    for _ in 0..200 {
        if app.count("select count(*) from usage_calls where request_id = 'listed-then'").await == 0
        {
            left = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(left, "the pruning at start took the old call out of the list");
    assert_eq!(app.count("select count(*) from usage_calls where request_id = 'new-1'").await, 1);
    assert_eq!(
        app.count("select count(*) from usage_requests where org = 'acme'").await,
        4,
        "the log keeps every call"
    );
    replica.finish().await;
    app.finish().await;
}

on_both_backends!(without_a_retention_every_call_stays_listed);

async fn without_a_retention_every_call_stays_listed(backend: Backend) {
    let app = TestApp::start(backend).await;
    let old = Utc::now() - TimeDelta::days(400);
    let ledger = format!("acme/{:04}-{:02}", old.year(), old.month());
    let cast = if backend == Backend::Postgres { "::json" } else { "" };
    let alone = json!({"ModelCallRecorded": call("old-1", old)});
    app.execute_sql(&format!(
        "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) values \
         ('UsageLedger', '{ledger}', 1, 'ModelCallRecorded', '1.0', '{alone}'{cast}, '{{}}'{cast})"
    ))
    .await;
    let listed = until(&app, "/v1/orgs/acme/usage/calls?limit=10", |l| {
        l["calls"].as_array().is_some_and(|calls| !calls.is_empty())
    })
    .await;
    assert_eq!(listed["calls"][0]["request_id"], "old-1");
    app.finish().await;
}
