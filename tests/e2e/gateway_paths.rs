//! The gateway passes GET, POST, PUT, PATCH and DELETE to the provider's own API with the query
//! string, confined under the provider's base path; a path the provider refuses does not mark
//! a good key invalid.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::json;
use tower::ServiceExt as _;

use crate::keys;
use keyledger_api::Role;
use keyledger_domain::ProviderId;
use keyledger_tests::{on_both_backends, Backend, TestApp, TestResponse};

/// Sends `method` to the raw gateway `path` (not normalized by any client).
async fn raw(app: &TestApp, method: Method, path: &str) -> TestResponse {
    let request = Request::builder()
        .method(method)
        .uri(format!("/v1/orgs/acme/gateway/{path}"))
        .header("authorization", format!("Bearer {}", app.token("acme", Role::Service, "worker")))
        .body(Body::empty())
        .expect("request");
    let response = app.router.clone().oneshot(request).await.expect("router");
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    TestResponse { status, headers, body }
}

async fn with_openai_key(backend: Backend, extra: &[(&str, &str)]) -> (TestApp, String) {
    let app = TestApp::start_with(backend, extra).await;
    app.set_plan("acme", "pro").await;
    let own = keys::openai();
    app.provider.accept(&own);
    let stored = app
        .post("/v1/orgs/acme/keys", &app.owner("acme"), json!({"provider": "openai", "key": own}))
        .await;
    assert_eq!(stored.status, StatusCode::CREATED);
    (app, own)
}

on_both_backends!(a_get_goes_through_with_its_query_and_is_not_a_model_call);

async fn a_get_goes_through_with_its_query_and_is_not_a_model_call(backend: Backend) {
    let (app, own) = with_openai_key(backend, &[]).await;
    let listed = raw(&app, Method::GET, "openai/v1/models?limit=5").await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.everything());
    assert_eq!(listed.json()["data"][0]["id"], "gpt-4o");
    assert_eq!(listed.headers["x-keyledger-key-source"], "byok");
    let seen = app.provider.calls().pop().expect("the provider was asked");
    assert_eq!((seen.method.as_str(), seen.path.as_str()), ("GET", "/v1/models?limit=5"));
    assert_eq!(seen.headers["authorization"], format!("Bearer {own}").as_str());

    // Other methods pass too; the provider's own answer comes back as it is.
    for method in [Method::DELETE, Method::PUT, Method::PATCH] {
        let answer = raw(&app, method.clone(), "openai/v1/files/file-abc123").await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method}: {}", answer.everything());
        assert_eq!(answer.json()["error"]["message"], "Invalid URL", "OpenAI's own body");
        assert_eq!(app.provider.calls().pop().expect("sent").method, method.as_str());
    }
    // Only model calls are metered.
    let usage =
        app.get("/v1/orgs/acme/usage/calls", &app.token("acme", Role::Auditor, "carol")).await;
    assert_eq!(usage.json()["calls"], json!([]));
    app.finish().await;
}

on_both_backends!(the_platform_key_is_lent_out_for_model_calls_only);

async fn the_platform_key_is_lent_out_for_model_calls_only(backend: Backend) {
    let platform = keys::openai();
    let app = TestApp::start_with(backend, &[("KEYLEDGER_PLATFORM_KEY_OPENAI", &platform)]).await;
    app.provider.accept(&platform);
    let listed = raw(&app, Method::GET, "openai/v1/files").await;
    assert_eq!(listed.status, StatusCode::SERVICE_UNAVAILABLE, "{}", listed.everything());
    assert_eq!(listed.code(), "no_key_available");
    assert_eq!(app.provider.requests(), 0, "the shared key reads nobody's files");
    app.finish().await;
}

on_both_backends!(the_path_cannot_leave_the_providers_base_path);

async fn the_path_cannot_leave_the_providers_base_path(backend: Backend) {
    let app = TestApp::start_with(backend, &[("KEYLEDGER_ALLOW_PRIVATE_ENDPOINTS", "true")]).await;
    app.set_plan("acme", "pro").await;
    let key = "a".repeat(32);
    app.provider.accept(&key);
    let stored = app
        .post(
            "/v1/orgs/acme/keys",
            &app.owner("acme"),
            json!({"provider": "azure_openai", "key": key, "endpoint": app.provider.url("azure_openai")}),
        )
        .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    let deployment = "azure_openai/openai/deployments/mine";
    for escape in [
        format!("{deployment}/../../x"),
        format!("{deployment}/%2e%2e/%2e%2e/x"),
        format!("{deployment}/%2E%2e/.%2E/x"),
        format!("{deployment}/%252e%252e/x"),
        format!("{deployment}/..%2F..%2Fx"),
        format!("{deployment}/./chat/completions"),
    ] {
        for method in [Method::POST, Method::GET] {
            let refused = raw(&app, method.clone(), &escape).await;
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{method} {escape}");
            assert_eq!(refused.code(), "invalid_request", "{escape}");
            assert_eq!(refused.headers["content-type"], "application/problem+json");
        }
    }
    assert_eq!(app.provider.requests(), 0, "nothing went out, with the key or without");
    app.finish().await;
}

on_both_backends!(a_refused_path_alone_does_not_mark_a_good_key_invalid);

async fn a_refused_path_alone_does_not_mark_a_good_key_invalid(backend: Backend) {
    let (app, _) = with_openai_key(backend, &[]).await;
    let events = app.count("select count(*) from events").await;
    for _ in 0..3 {
        let answer = raw(&app, Method::GET, "openai/v1/organization/users").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.everything());
        assert!(
            answer.json()["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("Missing scopes"),
            "the provider's own reason goes back"
        );
    }
    let checks = app.provider.calls().iter().filter(|c| c.path == "/v1/models").count();
    assert_eq!(checks, 3, "keyledger checked the key itself each time");
    assert_eq!(app.count("select count(*) from events").await, events, "nothing was recorded");
    let shown = app.get("/v1/orgs/acme/keys/openai", &app.owner("acme")).await.json();
    assert_eq!(shown["last_verification"], json!(null));
    assert!(app.provider.calls().iter().all(|c| c.provider == ProviderId::Openai));
    app.finish().await;
}
