//! Time limits that fit model calls: no request time limit cuts a long generation, a provider
//! that stops talking ends the stream with an SSE error event, a provider that never answers is
//! a problem+json 504, and a caller that goes away closes the provider's connection.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::json;
use tower::ServiceExt as _;

use crate::gateway::{call, chat_body, claude, recorded_calls};
use crate::keys;
use keyledger_api::Role;
use keyledger_domain::ProviderId;
use keyledger_tests::{on_both_backends, Backend, TestApp};

async fn with_keys(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let app = TestApp::start_with(backend, extra).await;
    keys::store_accepted(&app, &["openai", "anthropic"]).await;
    app
}

/// A streamed Anthropic call the fake holds after its first chunk (`x-test-hold`).
fn held_stream(app: &TestApp) -> Request<Body> {
    let mut body = claude();
    body["stream"] = json!(true);
    Request::post("/v1/orgs/acme/gateway/anthropic/v1/messages")
        .header("authorization", format!("Bearer {}", app.token("acme", Role::Service, "worker")))
        .header("x-test-hold", "1")
        .body(Body::from(body.to_string()))
        .expect("request")
}

on_both_backends!(a_long_non_streamed_answer_is_not_cut_off);

/// Reasoning models answer after minutes; the 30 s limit of other routes must not apply.
async fn a_long_non_streamed_answer_is_not_cut_off(backend: Backend) {
    let app = with_keys(backend, &[]).await;
    app.provider.delay(ProviderId::Openai, Duration::from_secs(45));
    let service = app.token("acme", Role::Service, "w");
    let (answer, unified) = tokio::join!(
        call(&app, "openai", "v1/chat/completions", chat_body("o3-mini")),
        app.post("/v1/orgs/acme/chat/completions", &service, chat_body("o3-mini")),
    );
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
    assert_eq!(answer.json()["choices"][0]["message"]["content"], "Hello");
    assert_eq!(unified.status, StatusCode::OK, "{}", unified.everything());
    app.finish().await;
}

on_both_backends!(a_stalled_stream_ends_with_an_error_event_and_records_what_came);

async fn a_stalled_stream_ends_with_an_error_event_and_records_what_came(backend: Backend) {
    let app = with_keys(backend, &[("KEYLEDGER_STREAM_IDLE_TIMEOUT", "1s")]).await;
    let response = app.router.clone().oneshot(held_stream(&app)).await.expect("router");
    assert_eq!(response.status(), StatusCode::OK);
    let started = std::time::Instant::now();
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the stream ends instead of hanging")
        .expect("body")
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(started.elapsed() >= Duration::from_millis(900), "ended by the idle timeout");
    assert!(text.contains("event: message_start"), "what came first came through: {text}");
    assert!(text.ends_with("\n\n"), "the stream ends on a whole event: {text}");
    let error = text.rsplit("event: error\ndata: ").next().expect("an error event");
    let error: serde_json::Value =
        serde_json::from_str(error.trim()).expect("the event's data is JSON");
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "provider_timeout");
    assert!(error["error"]["message"].as_str().unwrap_or_default().contains("sent nothing"));
    // The provider's connection was closed, and the input it reported was recorded.
    for _ in 0..100 {
        if app.provider.cancelled() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.provider.cancelled(), 1, "the stalled provider's stream was dropped");
    let calls = recorded_calls(&app, 1).await;
    assert_eq!(
        (calls[0]["input_tokens"].clone(), calls[0]["provider"].clone()),
        (json!(25), json!("anthropic"))
    );
    app.finish().await;
}

on_both_backends!(a_slow_reader_cannot_stretch_a_call_past_its_time_limit);

/// The provider sends everything at once; the caller reads the rest only after the call's
/// time is up, and gets the error event instead.
async fn a_slow_reader_cannot_stretch_a_call_past_its_time_limit(backend: Backend) {
    let app = with_keys(backend, &[("KEYLEDGER_MODEL_CALL_TIMEOUT", "1s")]).await;
    let mut body = claude();
    body["stream"] = json!(true);
    let request = Request::post("/v1/orgs/acme/gateway/anthropic/v1/messages")
        .header("authorization", format!("Bearer {}", app.token("acme", Role::Service, "worker")))
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = app.router.clone().oneshot(request).await.expect("router");
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("data");
    assert!(String::from_utf8_lossy(first.data_ref().expect("bytes")).contains("message_start"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let rest = body.collect().await.expect("the rest").to_bytes();
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.contains("event: error") && rest.contains("time limit"), "{rest}");
    assert!(!rest.contains("message_stop"), "nothing past the limit: {rest}");
    app.finish().await;
}

on_both_backends!(a_provider_that_does_not_answer_in_time_is_a_problem_json_504);

async fn a_provider_that_does_not_answer_in_time_is_a_problem_json_504(backend: Backend) {
    let app = with_keys(backend, &[("KEYLEDGER_MODEL_CALL_TIMEOUT", "1s")]).await;
    app.provider.delay(ProviderId::Openai, Duration::from_secs(5));
    let gateway = call(&app, "openai", "v1/chat/completions", chat_body("gpt-4o")).await;
    assert_eq!(gateway.status, StatusCode::GATEWAY_TIMEOUT, "{}", gateway.everything());
    assert_eq!(gateway.code(), "provider_timeout");
    assert_eq!(gateway.headers["content-type"], "application/problem+json");
    let unified = app
        .post(
            "/v1/orgs/acme/chat/completions",
            &app.token("acme", Role::Service, "w"),
            chat_body("gpt-4o"),
        )
        .await;
    assert_eq!(unified.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(unified.json()["error"]["code"], "provider_timeout");
    app.finish().await;
}

on_both_backends!(
    a_caller_that_goes_away_mid_stream_closes_the_provider_and_is_billed_for_what_came
);

async fn a_caller_that_goes_away_mid_stream_closes_the_provider_and_is_billed_for_what_came(
    backend: Backend,
) {
    let app = with_keys(backend, &[]).await;
    let response = app.router.clone().oneshot(held_stream(&app)).await.expect("router");
    let mut body = response.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk")
        .expect("a frame")
        .expect("data");
    assert!(String::from_utf8_lossy(first.data_ref().expect("bytes")).contains("message_start"));
    drop(body);
    for _ in 0..100 {
        if app.provider.cancelled() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(app.provider.cancelled(), 1, "the provider's connection was closed");
    let calls = recorded_calls(&app, 1).await;
    assert_eq!(calls[0]["input_tokens"], 25, "the input the provider reported is recorded");
    app.finish().await;
}

on_both_backends!(no_error_answer_has_an_empty_body);

async fn no_error_answer_has_an_empty_body(backend: Backend) {
    let app = with_keys(backend, &[]).await;
    let service = app.token("acme", Role::Service, "w");
    let huge = "x".repeat(keyledger_api::app::BODY_LIMIT + 1);
    let cases: Vec<(Method, &str, Option<&str>, Option<String>)> = vec![
        (Method::GET, "/nowhere", None, None),
        (Method::DELETE, "/healthz", None, None),
        (Method::GET, "/v1/orgs/acme/keys", None, None),
        (Method::POST, "/v1/orgs/acme/keys", Some(&service), Some("{not json".to_owned())),
        (Method::PUT, "/v1/orgs/acme/plan", Some(&service), Some(huge)),
        (Method::GET, "/v1/orgs/acme/models", None, None),
        (Method::POST, "/v1/orgs/acme/chat/completions", Some(&service), Some("[]".to_owned())),
        (
            Method::POST,
            "/v1/orgs/acme/embeddings",
            Some(&service),
            Some(r#"{"input": "x"}"#.to_owned()),
        ),
        (Method::GET, "/v1/orgs/acme/gateway/openai/v1/../../x", Some(&service), None),
    ];
    for (method, path, token, body) in cases {
        let answer = app.send_raw(method.clone(), path, token, body.as_deref()).await;
        assert!(answer.status.is_client_error(), "{method} {path}: {}", answer.status);
        assert_eq!(answer.headers["content-type"], "application/problem+json", "{method} {path}");
        assert!(!answer.code().is_empty(), "{method} {path}: {}", answer.everything());
        assert_eq!(answer.json()["status"], answer.status.as_u16(), "{method} {path}");
    }
    app.finish().await;
}
