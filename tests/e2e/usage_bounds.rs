//! No usage record can wedge the views: figures are bounded at the edge, a provider's absurd
//! figures are capped and flagged, sums saturate, and a view that falls behind is named.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::{Datelike, Duration, TimeZone, Utc};
use http_body_util::BodyExt as _;
use serde_json::json;
use tower::ServiceExt as _;

use keyledger_api::Role;
use keyledger_domain::usage::{KeySource, ModelCallRecorded, RecordModelCall};
use keyledger_domain::{OrgId, ProviderId};
use keyledger_infra::Actor;
use keyledger_tests::{on_both_backends, Backend, TestApp};

fn usage(request_id: &str, input: u64, at: Option<chrono::DateTime<Utc>>) -> serde_json::Value {
    let mut body = json!({"request_id": request_id, "provider": "openai", "model": "gpt-4o-mini", "input_tokens": input, "output_tokens": 1});
    if let Some(at) = at {
        body["at"] = json!(at);
    }
    body
}

on_both_backends!(a_usage_record_out_of_bounds_is_refused_and_changes_nothing);

async fn a_usage_record_out_of_bounds_is_refused_and_changes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let service = app.token("acme", Role::Service, "worker");
    let now = Utc::now();
    let last_month =
        Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().expect("instant")
            - Duration::hours(1);
    for (body, says) in [
        (usage("r1", 1_000_000_001, None), "input_tokens"),
        (usage("r2", 5_000_000_000_000_000_000, None), "input_tokens"),
        (usage("r3", 10, Some(last_month)), "closed month"),
        (usage("r4", 10, Some(now + Duration::hours(1))), "future"),
    ] {
        let refused = app.post("/v1/orgs/acme/usage", &service, body).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.everything());
        assert_eq!(refused.code(), "invalid_request");
        assert!(refused.json()["detail"].as_str().unwrap_or_default().contains(says));
    }
    assert_eq!(
        app.count("select count(*) from events where aggregate_type = 'UsageLedger'").await,
        0,
        "nothing was recorded"
    );
    let taken = app
        .post(
            "/v1/orgs/acme/usage",
            &service,
            usage("r5", 1_000_000_000, Some(now - Duration::minutes(1))),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CREATED, "{}", taken.everything());
    app.finish().await;
}

on_both_backends!(the_largest_figures_the_log_can_hold_stop_no_view);

/// Records written before the bounds (5e18 tokens, a cost of trillions) stay in the log
/// forever: every view must still take them, and everyone else's usage after them.
async fn the_largest_figures_the_log_can_hold_stop_no_view(backend: Backend) {
    let app = TestApp::start(backend).await;
    let actor =
        Actor { sub: "old".to_owned(), role: "service".to_owned(), request_id: String::new() };
    let huge = OrgId::parse("huge").expect("org");
    for n in 0..3 {
        let call = ModelCallRecorded {
            org: "huge".to_owned(),
            request_id: format!("old-{n}"),
            provider: ProviderId::Openai,
            model: "gpt-4o".to_owned(),
            input_tokens: 5_000_000_000_000_000_000,
            output_tokens: u64::MAX,
            cost_usd: 5e12,
            key_source: KeySource::Byok,
            key_version: Some(1),
            at: Utc::now(),
            capped: false,
        };
        app.state
            .usage
            .record(&huge, RecordModelCall { call, limits: None }, &actor)
            .await
            .expect("recorded");
    }
    let service = app.token("acme", Role::Service, "worker");
    let after = app.post("/v1/orgs/acme/usage", &service, usage("after", 12, None)).await;
    assert_eq!(after.status, StatusCode::CREATED);

    let auditor = app.token("acme", Role::Auditor, "carol");
    let mut calls = 0;
    for _ in 0..200 {
        calls = app.get("/v1/orgs/acme/usage", &auditor).await.json()["totals"]["calls"]
            .as_u64()
            .unwrap_or_default();
        if calls == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(calls, 1, "another organization's usage came through after the largest records");
    let totals = app.get("/v1/orgs/huge/usage", &app.token("huge", Role::Auditor, "c")).await;
    assert_eq!(totals.status, StatusCode::OK, "{}", totals.everything());
    assert_eq!(totals.json()["totals"]["calls"], 3);
    assert_eq!(totals.json()["totals"]["input_tokens"], i64::MAX, "saturated, not wrapped");
    assert!(totals.json()["totals"]["cost_usd"].as_f64().unwrap_or(-1.0) > 0.0);
    let ready = app.send(axum::http::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.everything());
    app.finish().await;
}

on_both_backends!(a_provider_reporting_absurd_usage_is_recorded_capped_and_flagged);

async fn a_provider_reporting_absurd_usage_is_recorded_capped_and_flagged(backend: Backend) {
    let app = TestApp::start(backend).await;
    crate::keys::store_accepted(&app, &["openai"]).await;
    let request = Request::post("/v1/orgs/acme/gateway/openai/v1/chat/completions")
        .header("authorization", format!("Bearer {}", app.token("acme", Role::Service, "worker")))
        .header("x-test-prompt-tokens", "5000000000000000000")
        .body(Body::from(crate::gateway::chat_body("gpt-4o").to_string()))
        .expect("request");
    let response = app.router.clone().oneshot(request).await.expect("router");
    assert_eq!(response.status(), StatusCode::OK, "the call was made: it is never refused after");
    response.into_body().collect().await.expect("body");
    let calls = crate::gateway::recorded_calls(&app, 1).await;
    assert_eq!(calls[0]["input_tokens"], 1_000_000_000, "capped at the bound");
    let events = app.get("/v1/orgs/acme/events", &app.owner("acme")).await;
    let text = String::from_utf8_lossy(&events.body).into_owned();
    assert!(text.contains(r#""capped":true"#), "the record says it was capped: {text}");
    app.finish().await;
}

on_both_backends!(a_view_that_falls_behind_is_named_by_readiness);

async fn a_view_that_falls_behind_is_named_by_readiness(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.stop_projecting();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    app.write_calls_by_hand("acme/2026-12", 10_000, |i| {
        json!({"org": "acme", "request_id": format!("b-{i}"), "provider": "openai", "model": "m",
               "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0, "key_source": "byok",
               "key_version": 1, "at": "2026-12-01T00:00:00Z"})
    })
    .await;
    let ready = app.send(axum::http::Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.everything());
    // The view behind is named: the one that reads usage events.
    let named = ready.json()["projection"].as_str().unwrap_or_default().to_owned();
    assert_eq!(named, "usage", "{}", ready.everything());
    assert!(ready.json()["reason"].as_str().unwrap_or_default().contains(&named));
    app.finish().await;
}
