//! OpenAI-compatible chat calls routed along the organization's provider order.

use axum::http::StatusCode;
use serde_json::json;

use crate::keys;
use keyledger_api::Role;
use keyledger_tests::{on_both_backends, Backend, TestApp};

/// A provider that answers every request with `status`.
async fn failing_provider(status: StatusCode) -> String {
    let app = axum::Router::new().fallback(move || async move { (status, "{\"error\":\"down\"}") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A loopback address where nothing listens.
fn unreachable_provider() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

async fn chat(app: &TestApp, body: serde_json::Value) -> keyledger_tests::TestResponse {
    app.post("/v1/orgs/acme/chat/completions", &app.token("acme", Role::Service, "worker"), body)
        .await
}

async fn with_keys(backend: Backend, extra: &[(&str, &str)]) -> (TestApp, String) {
    let app = TestApp::start_with(backend, extra).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    let anthropic = keys::anthropic();
    app.provider.accept(&anthropic);
    for (provider, key) in [
        ("openai", keys::openai()),
        ("groq", format!("gsk_{}", "g".repeat(52))),
        ("mistral", "m".repeat(32)),
        ("anthropic", anthropic.clone()),
    ] {
        let stored =
            app.post("/v1/orgs/acme/keys", &owner, json!({"provider": provider, "key": key})).await;
        assert_eq!(stored.status, StatusCode::CREATED, "{provider}");
    }
    (app, anthropic)
}

on_both_backends!(a_chat_call_moves_past_unreachable_failing_and_throttled_providers_in_order);

async fn a_chat_call_moves_past_unreachable_failing_and_throttled_providers_in_order(
    backend: Backend,
) {
    let (down, busy, unreachable) = (
        failing_provider(StatusCode::INTERNAL_SERVER_ERROR).await,
        failing_provider(StatusCode::TOO_MANY_REQUESTS).await,
        unreachable_provider(),
    );
    let (app, anthropic) = with_keys(
        backend,
        &[
            ("KEYLEDGER_PROVIDER_OPENAI_BASE_URL", &unreachable),
            ("KEYLEDGER_PROVIDER_GROQ_BASE_URL", &down),
            ("KEYLEDGER_PROVIDER_MISTRAL_BASE_URL", &busy),
        ],
    )
    .await;
    let owner = app.owner("acme");
    app.put(
        "/v1/orgs/acme/provider-order",
        &owner,
        json!({"providers": ["openai", "groq", "mistral", "anthropic"]}),
    )
    .await;

    let answer = chat(&app, json!({"model": "claude-3-5-haiku-latest", "messages": [{"role": "user", "content": "Hi"}]})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
    assert_eq!(answer.json()["object"], "chat.completion");
    assert_eq!(answer.headers["x-keyledger-key-source"], "byok");
    let seen = app.provider.seen().pop().expect("anthropic was called");
    assert_eq!(
        seen["authorization"],
        format!("Bearer {anthropic}").as_str(),
        "the OpenAI-compatible endpoint takes a bearer key"
    );

    let named = chat(&app, json!({"provider": "anthropic", "model": "m", "messages": []})).await;
    assert_eq!(named.status, StatusCode::OK, "the body's provider goes first");
    let nowhere = chat(&app, json!({"provider": "openai", "model": "m", "messages": []})).await;
    assert_eq!(nowhere.status, StatusCode::BAD_GATEWAY);
    assert_eq!(nowhere.code(), "provider_unreachable");
    app.finish().await;
}

on_both_backends!(a_refused_byok_key_stops_the_chat_call_instead_of_falling_back);

async fn a_refused_byok_key_stops_the_chat_call_instead_of_falling_back(backend: Backend) {
    let (app, _) = with_keys(backend, &[]).await;
    // openai's key is not one the fake accepts; anthropic's is.
    app.put(
        "/v1/orgs/acme/provider-order",
        &app.owner("acme"),
        json!({"providers": ["openai", "anthropic"]}),
    )
    .await;
    let before = app.provider.requests();
    let answer = chat(&app, json!({"model": "m", "messages": []})).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.code(), "byok_key_rejected");
    assert_eq!(
        app.provider.requests(),
        before + 1,
        "no other provider and no platform key was tried"
    );
    app.finish().await;
}

on_both_backends!(an_unreachable_provider_leaves_the_platform_quota_as_it_was);

async fn an_unreachable_provider_leaves_the_platform_quota_as_it_was(backend: Backend) {
    let plans = crate::usage::plans_file(
        json!({"single": {"byok": false, "max_providers": null, "provider_order": false, "monthly_platform_queries": 1, "monthly_platform_cost_cap_usd": 1000.0}}),
    );
    let (openai, anthropic, unreachable) =
        (keys::openai(), keys::anthropic(), unreachable_provider());
    let app = TestApp::start_with(
        backend,
        &[
            ("KEYLEDGER_PLANS_FILE", &plans),
            ("KEYLEDGER_PLATFORM_KEY_OPENAI", &openai),
            ("KEYLEDGER_PLATFORM_KEY_ANTHROPIC", &anthropic),
            ("KEYLEDGER_PROVIDER_OPENAI_BASE_URL", &unreachable),
        ],
    )
    .await;
    app.provider.accept(&anthropic);
    app.set_plan("acme", "single").await;
    let failed = chat(&app, json!({"provider": "openai", "model": "gpt-4o-mini"})).await;
    assert_eq!(failed.code(), "provider_unreachable");
    let made = chat(&app, json!({"provider": "anthropic", "model": "claude"})).await;
    assert_eq!(made.status, StatusCode::OK, "the month's one place was still free");
    let over = chat(&app, json!({"provider": "anthropic", "model": "claude"})).await;
    assert_eq!(over.code(), "quota_exceeded");
    app.finish().await;
}
