//! Usage for analytics: every call in a range, as CSV or NDJSON, for one organization or (for
//! the platform admin) for all of them, page after page.

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{json, Value};
use sqlx::Connection;

use keyledger_api::Role;
use keyledger_tests::{on_both_backends, Backend, TestApp};

fn today() -> String {
    Utc::now().format("%Y-%m-%d").to_string()
}

async fn record(app: &TestApp, org: &str, request_id: &str, model: &str) {
    let service = app.token(org, Role::Service, "worker");
    let call = json!({"request_id": request_id, "provider": "openai", "model": model, "input_tokens": 1000, "output_tokens": 500});
    let recorded = app.post(&format!("/v1/orgs/{org}/usage"), &service, call).await;
    assert_eq!(recorded.status, StatusCode::CREATED, "{}", recorded.everything());
}

on_both_backends!(an_export_has_every_call_of_the_range_as_csv_or_ndjson);

async fn an_export_has_every_call_of_the_range_as_csv_or_ndjson(backend: Backend) {
    let app = TestApp::start(backend).await;
    record(&app, "acme", "r-1", "gpt-4o-mini").await;
    record(&app, "acme", "=HYPERLINK(\"http://x\",\"y\")", "gpt-4o").await;
    record(&app, "globex", "g-1", "gpt-4o-mini").await;
    let (auditor, day) = (app.token("acme", Role::Auditor, "carol"), today());

    let csv = app.get(&format!("/v1/orgs/acme/usage/export?from={day}&to={day}"), &auditor).await;
    assert_eq!(csv.status, StatusCode::OK, "{}", csv.everything());
    assert!(csv.header("content-type").starts_with("text/csv"));
    let text = String::from_utf8_lossy(&csv.body).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "at,org,request_id,provider,model,key_source,key_version,input_tokens,output_tokens,cost_usd"
    );
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].contains(",acme,r-1,openai,gpt-4o-mini,platform,,1000,500,"), "{}", lines[1]);
    assert!(
        lines[2].contains(r#","'=HYPERLINK(""http://x"",""y"")","#),
        "a formula is quoted text: {}",
        lines[2]
    );

    let ndjson = app
        .get(&format!("/v1/orgs/acme/usage/export?from={day}&to={day}&format=ndjson"), &auditor)
        .await;
    assert_eq!(ndjson.header("content-type"), "application/x-ndjson");
    let calls: Vec<Value> = String::from_utf8_lossy(&ndjson.body)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["request_id"], "r-1");
    assert_eq!(calls[0]["input_tokens"], 1000);
    assert_eq!(calls[0]["key_source"], "platform");
    assert!(calls[0]["cost_usd"].as_f64().is_some_and(|c| c > 0.0));

    let earlier =
        app.get("/v1/orgs/acme/usage/export?from=2020-01-01&to=2020-01-31", &auditor).await;
    assert_eq!(String::from_utf8_lossy(&earlier.body).lines().count(), 1, "the header only");

    let backwards =
        app.get("/v1/orgs/acme/usage/export?from=2026-12-02&to=2026-12-01", &auditor).await;
    assert_eq!(backwards.status, StatusCode::OK, "to before from is an empty range");
    assert_eq!(String::from_utf8_lossy(&backwards.body).lines().count(), 1);

    let everyone = app
        .get(&format!("/v1/usage/export?from={day}&to={day}&format=ndjson"), &app.platform_admin())
        .await;
    assert_eq!(everyone.status, StatusCode::OK);
    let orgs: Vec<String> = String::from_utf8_lossy(&everyone.body)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["org"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    assert_eq!(orgs, ["acme", "acme", "globex"]);

    let refused =
        app.get(&format!("/v1/usage/export?from={day}&to={day}"), &app.owner("acme")).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let other =
        app.get(&format!("/v1/orgs/globex/usage/export?from={day}&to={day}"), &auditor).await;
    assert_eq!(other.status, StatusCode::FORBIDDEN, "another organization's calls");
    for bad in
        ["colour=blue", "from=yesterday&to=2026-12-01", &format!("from={day}&to={day}&format=xlsx")]
    {
        let refused = app.get(&format!("/v1/orgs/acme/usage/export?{bad}"), &auditor).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(refused.code(), "invalid_request");
    }
    app.finish().await;
}

on_both_backends!(an_export_pages_through_more_calls_than_a_page_in_log_order);

async fn an_export_pages_through_more_calls_than_a_page_in_log_order(backend: Backend) {
    let app = TestApp::start(backend).await;
    // Written straight into the usage view: 2,500 calls, more than two pages of 1,000; `at` as
    // each backend keeps an instant (sqlx writes RFC 3339 text on SQLite).
    let at = if backend == Backend::Postgres {
        "now()"
    } else {
        "strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')"
    };
    for start in (0..2_500).step_by(500) {
        let rows: Vec<String> = (start..start + 500)
            .map(|i| {
                format!(
                    "('bulk', {}, 'b-{i}', 'openai', 'gpt-4o-mini', 'byok', 1, {i}, 1, 10, {at})",
                    i + 1
                )
            })
            .collect();
        app.execute_sql(&format!(
            "insert into usage_calls (org_id, position, request_id, provider, model, key_source, key_version, \
             input_tokens, output_tokens, cost_micros, at) values {}",
            rows.join(", ")
        ))
        .await;
    }
    let day = today();
    let export = app
        .get(
            &format!("/v1/orgs/bulk/usage/export?from={day}&to={day}&format=ndjson"),
            &app.token("bulk", Role::Auditor, "a"),
        )
        .await;
    assert_eq!(export.status, StatusCode::OK, "{}", export.everything());
    let inputs: Vec<i64> = String::from_utf8_lossy(&export.body)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json")["input_tokens"]
                .as_i64()
                .expect("tokens")
        })
        .collect();
    assert_eq!(inputs.len(), 2_500, "every call");
    assert!(inputs.iter().copied().eq(0..2_500), "each once, in log order");
    app.finish().await;
}

/// On PostgreSQL, BI tools read the cockpit through `analytics` as `keyledger_analytics`, and
/// that role reads nothing else.
#[tokio::test]
async fn the_analytics_role_reads_the_usage_views_and_nothing_else() {
    let app = TestApp::start(Backend::Postgres).await;
    record(&app, "acme", "r-1", "gpt-4o-mini").await;
    // The analytics views trail the log as every view does; a usage read waits for them.
    let usage = app.get("/v1/orgs/acme/usage", &app.owner("acme")).await.json();
    assert_eq!(usage["totals"]["calls"], 1, "{usage}");
    let mut db = sqlx::PgConnection::connect(&app.database_url).await.expect("connect");
    sqlx::query("set role keyledger_analytics").execute(&mut db).await.expect("set role");
    let (calls,): (i64,) =
        sqlx::query_as("select count(*) from analytics.calls where org_id = 'acme'")
            .fetch_one(&mut db)
            .await
            .expect("the role reads the calls");
    assert_eq!(calls, 1);
    let (days,): (i64,) = sqlx::query_as("select count(*) from analytics.daily")
        .fetch_one(&mut db)
        .await
        .expect("the role reads the daily figures");
    assert_eq!(days, 1);
    for table in ["events", "key_material", "usage_calls", "audit_log", "snapshots"] {
        let denied =
            sqlx::query(&format!("select 1 from public.{table} limit 1")).execute(&mut db).await;
        let error = denied.expect_err(table).to_string();
        assert!(error.contains("permission denied"), "{table}: {error}");
    }
    drop(db);
    app.finish().await;
}
