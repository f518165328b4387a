//! Organizations' endpoints are checked where every call connects, verification included: a
//! policy the operator tightened holds at once, and a name cannot be re-pointed at the
//! platform's own network after it was checked.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::gateway::{call, chat_body};
use keyledger_tests::{on_both_backends, Backend, TestApp};

/// `acme` on pro with an Ollama endpoint on loopback, stored while private endpoints were
/// allowed; and a replica of the same service where they no longer are.
async fn stored_then_tightened(
    backend: Backend,
    endpoint: impl Fn(&TestApp) -> String,
) -> (TestApp, TestApp) {
    let app = TestApp::start_with(backend, &[("KEYLEDGER_ALLOW_PRIVATE_ENDPOINTS", "true")]).await;
    let endpoint = endpoint(&app);
    app.set_plan("acme", "pro").await;
    let stored = app
        .post(
            "/v1/orgs/acme/keys",
            &app.owner("acme"),
            json!({"provider": "ollama", "key": "local-token-1", "endpoint": endpoint}),
        )
        .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    let strict = app.replica_with(&[("KEYLEDGER_ALLOW_PRIVATE_ENDPOINTS", "false")]).await;
    (app, strict)
}

on_both_backends!(verifying_or_rotating_with_verify_sends_nothing_to_a_refused_endpoint);

async fn verifying_or_rotating_with_verify_sends_nothing_to_a_refused_endpoint(backend: Backend) {
    let (app, strict) = stored_then_tightened(backend, |app| app.provider.url("ollama")).await;
    let before = app.provider.requests();
    let owner = strict.owner("acme");
    let verified =
        strict.send(Method::POST, "/v1/orgs/acme/keys/ollama/verify", Some(&owner), None).await;
    assert_eq!(verified.status, StatusCode::OK, "{}", verified.everything());
    assert_eq!(verified.json()["outcome"], "unreachable");
    let rotated = strict
        .put("/v1/orgs/acme/keys/ollama", &owner, json!({"key": "local-token-2", "verify": true}))
        .await;
    assert_eq!(rotated.code(), "provider_unreachable", "{}", rotated.everything());
    assert_eq!(app.provider.requests(), before, "the key went nowhere");
    drop(strict);
    app.finish().await;
}

on_both_backends!(a_name_that_resolves_to_a_private_address_is_refused_where_the_call_connects);

/// `localhost` passed the check when private endpoints were allowed; on a server that allows
/// none, the call's own resolution finds only loopback and connects nowhere.
async fn a_name_that_resolves_to_a_private_address_is_refused_where_the_call_connects(
    backend: Backend,
) {
    let (app, strict) = stored_then_tightened(backend, |app| {
        format!("https://localhost:{}/ollama", app.provider.addr().port())
    })
    .await;
    let refused = call(&strict, "ollama", "v1/chat/completions", chat_body("llama3.2")).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.everything());
    assert_eq!(refused.code(), "provider_unreachable");
    assert!(
        refused.json()["detail"].as_str().unwrap_or_default().contains("refuses"),
        "refused by the policy, not merely unreachable: {}",
        refused.everything()
    );
    drop(strict);
    app.finish().await;
}
