//! The usage backlog is bounded: a model call is admitted only while fewer than
//! `KEYLEDGER_USAGE_QUEUE` calls are in flight or waiting to be recorded, so what a crash can
//! lose is bounded too; and `KEYLEDGER_USAGE_DURABILITY=sync` commits a call's record before
//! its answer ends.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use http_body_util::BodyExt as _;

use crate::gateway::{call, claude, held_stream};
use keyledger_tests::{on_both_backends, Backend, TestApp};

on_both_backends!(a_full_backlog_turns_calls_away_before_they_go_out);

async fn a_full_backlog_turns_calls_away_before_they_go_out(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYLEDGER_USAGE_QUEUE", "1")]).await;
    crate::keys::store_accepted(&app, &["anthropic"]).await;
    // A streamed call the provider holds after its first chunk keeps the one slot.
    let held = held_stream(&app).await;

    let before = app.provider.requests();
    let turned_away = call(&app, "anthropic", "v1/messages", claude()).await;
    assert_eq!(turned_away.status, StatusCode::SERVICE_UNAVAILABLE, "{}", turned_away.everything());
    assert_eq!(turned_away.code(), "overloaded");
    assert_eq!(app.provider.requests(), before, "the call was not made");
    let metrics = app.send(Method::GET, "/metrics", None, None).await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("keyledger_usage_backlog 1"));

    app.provider.release();
    held.collect().await.expect("the rest");
    let mut made = turned_away;
    for _ in 0..100 {
        made = call(&app, "anthropic", "v1/messages", claude()).await;
        if made.status == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(made.status, StatusCode::OK, "the slot is free once the record is committed");
    app.finish().await;
}

on_both_backends!(with_sync_durability_an_answered_call_is_recorded_before_its_answer_ends);

async fn with_sync_durability_an_answered_call_is_recorded_before_its_answer_ends(
    backend: Backend,
) {
    let app = TestApp::start_with(backend, &[("KEYLEDGER_USAGE_DURABILITY", "sync")]).await;
    crate::keys::store_accepted(&app, &["anthropic"]).await;
    for n in 1..=10 {
        let mut body = claude();
        body["stream"] = serde_json::json!(n % 2 == 0);
        let answer = call(&app, "anthropic", "v1/messages", body).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(!answer.headers.contains_key("content-length"), "the end is the stream's end");
        let recorded = app.count("select count(*) from usage_requests").await;
        assert_eq!(recorded, n, "committed before the caller had the whole answer");
    }
    app.finish().await;
}
