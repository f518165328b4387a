//! OpenAI-shaped chat calls routed by model: a bare name to the providers that serve it in the
//! organization's order, `provider/model` to that provider, a `models` chain one entry after
//! the other, moving past providers that fail and never past a refused BYOK key.

use axum::http::StatusCode;
use serde_json::json;

use crate::keys;
use keyledger_api::Role;
use keyledger_domain::ProviderId;
use keyledger_tests::{on_both_backends, Backend, TestApp};

/// A loopback address where nothing listens.
pub(crate) fn unreachable_provider() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

pub(crate) async fn chat(app: &TestApp, body: serde_json::Value) -> keyledger_tests::TestResponse {
    app.post("/v1/orgs/acme/chat/completions", &app.token("acme", Role::Service, "worker"), body)
        .await
}

fn hi() -> serde_json::Value {
    json!([{"role": "user", "content": "Hi"}])
}

/// An organization on `pro` with accepted keys for OpenAI, Groq, Mistral and Anthropic, in the
/// order `order`.
pub(crate) async fn with_keys(backend: Backend, extra: &[(&str, &str)], order: &[&str]) -> TestApp {
    let app = TestApp::start_with(backend, extra).await;
    keys::store_accepted(&app, &["openai", "groq", "mistral", "anthropic"]).await;
    let ordered = app
        .put("/v1/orgs/acme/provider-order", &app.owner("acme"), json!({"providers": order}))
        .await;
    assert_eq!(ordered.status, StatusCode::OK, "{}", ordered.everything());
    app
}

/// The provider and model of the last model call the fakes received.
fn last_call(app: &TestApp) -> (ProviderId, String) {
    let call = app.provider.model_calls().pop().expect("a model call went out");
    (call.provider, call.body["model"].as_str().unwrap_or_default().to_owned())
}

on_both_backends!(
    a_bare_model_name_goes_to_the_provider_that_serves_it_whatever_the_order_says_first
);

async fn a_bare_model_name_goes_to_the_provider_that_serves_it_whatever_the_order_says_first(
    backend: Backend,
) {
    let app = with_keys(backend, &[], &["anthropic", "groq", "openai"]).await;
    let answer = chat(&app, json!({"model": "gpt-4o-mini", "messages": hi()})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
    assert_eq!(answer.json()["model"], "gpt-4o-mini");
    assert_eq!(last_call(&app), (ProviderId::Openai, "gpt-4o-mini".to_owned()));
    assert!(
        app.provider.model_calls().iter().all(|c| c.provider == ProviderId::Openai),
        "no other provider was sent a model it does not serve"
    );

    // An open-weight model no family names: the providers' own model lists say who serves it.
    let answer = chat(&app, json!({"model": "llama-3.3-70b-versatile", "messages": hi()})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
    assert_eq!(last_call(&app), (ProviderId::Groq, "llama-3.3-70b-versatile".to_owned()));

    // Usage goes to the provider that served each call.
    let calls = crate::gateway::recorded_calls(&app, 2).await;
    let mut served: Vec<(String, String)> = calls
        .iter()
        .map(|c| {
            (
                c["provider"].as_str().unwrap_or_default().to_owned(),
                c["model"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    served.sort();
    assert_eq!(
        served,
        [
            ("groq".to_owned(), "llama-3.3-70b-versatile".to_owned()),
            ("openai".to_owned(), "gpt-4o-mini".to_owned())
        ]
    );
    app.finish().await;
}

on_both_backends!(a_provider_prefix_picks_the_provider_and_is_not_sent_to_it);

async fn a_provider_prefix_picks_the_provider_and_is_not_sent_to_it(backend: Backend) {
    let app = with_keys(backend, &[], &["anthropic", "groq", "openai"]).await;
    let answer =
        chat(&app, json!({"model": "groq/llama-3.3-70b-versatile", "messages": hi()})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
    assert_eq!(last_call(&app), (ProviderId::Groq, "llama-3.3-70b-versatile".to_owned()));

    // A model the caller placed itself: the provider's own "not found" goes back unchanged.
    let unknown = chat(&app, json!({"model": "openai/gpt-9-turbo", "messages": hi()})).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.everything());
    assert_eq!(unknown.json()["error"]["code"], "model_not_found");
    assert_eq!(unknown.headers["x-keyledger-key-source"], "byok");
    let forced =
        chat(&app, json!({"provider": "openai", "model": "gpt-9-turbo", "messages": hi()})).await;
    assert_eq!(forced.status, StatusCode::NOT_FOUND, "a forced provider's word goes back too");
    app.finish().await;
}

on_both_backends!(a_model_no_callable_provider_serves_is_not_routable);

async fn a_model_no_callable_provider_serves_is_not_routable(backend: Backend) {
    let app = with_keys(backend, &[], &["anthropic", "groq", "openai"]).await;
    let before = app.provider.model_calls().len();
    for model in ["mystery-model-7b", "gemini-2.0-flash"] {
        let answer = chat(&app, json!({"model": model, "messages": hi()})).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{model}: {}", answer.everything());
        assert_eq!(answer.code(), "model_not_routable");
        assert_eq!(answer.headers["content-type"], "application/problem+json");
        let detail = answer.json()["detail"].as_str().unwrap_or_default().to_owned();
        assert!(detail.contains("'provider/model'"), "says how to name a provider: {detail}");
        assert_eq!(answer.json()["error"]["message"], detail.as_str(), "an SDK shows the same");
        assert_eq!(answer.json()["error"]["code"], "model_not_routable");
    }
    assert_eq!(app.provider.model_calls().len(), before, "no model call went out");
    app.finish().await;
}

on_both_backends!(a_provider_that_does_not_know_a_bare_name_is_passed_over);

/// An operator's family table (wrongly) says Anthropic serves `llama-`: Anthropic answers its
/// own `not_found_error`, and the call moves on to the provider whose list has the model.
async fn a_provider_that_does_not_know_a_bare_name_is_passed_over(backend: Backend) {
    let families = std::env::temp_dir().join(format!("families-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&families, r#"{"llama-": "anthropic"}"#).expect("write");
    let families = families.to_string_lossy().into_owned();
    let app = with_keys(
        backend,
        &[("KEYLEDGER_MODEL_FAMILIES_FILE", &families)],
        &["anthropic", "groq", "openai"],
    )
    .await;
    let answer = chat(&app, json!({"model": "llama-3.1-8b-instant", "messages": hi()})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
    let tried: Vec<ProviderId> = app.provider.model_calls().iter().map(|c| c.provider).collect();
    assert_eq!(tried, [ProviderId::Anthropic, ProviderId::Groq]);
    app.finish().await;
}

on_both_backends!(a_models_chain_moves_past_unreachable_failing_and_throttled_providers_in_order);

async fn a_models_chain_moves_past_unreachable_failing_and_throttled_providers_in_order(
    backend: Backend,
) {
    let unreachable = unreachable_provider();
    let app = with_keys(
        backend,
        &[("KEYLEDGER_PROVIDER_OPENAI_BASE_URL", &unreachable)],
        &["openai", "groq", "mistral", "anthropic"],
    )
    .await;
    app.provider.fail(ProviderId::Groq, 500);
    app.provider.fail(ProviderId::Mistral, 429);
    let chain = json!([
        "openai/gpt-4o",
        "groq/llama-3.3-70b-versatile",
        "mistral/mistral-small-latest",
        "anthropic/claude-3-5-haiku-latest"
    ]);
    let answer = chat(&app, json!({"models": chain, "messages": hi()})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
    assert_eq!(answer.json()["object"], "chat.completion");
    assert_eq!(answer.headers["x-keyledger-key-source"], "byok");
    let tried: Vec<(ProviderId, String)> = app
        .provider
        .model_calls()
        .iter()
        .map(|c| (c.provider, c.body["model"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(
        tried,
        [
            (ProviderId::Groq, "llama-3.3-70b-versatile".to_owned()),
            (ProviderId::Mistral, "mistral-small-latest".to_owned()),
            (ProviderId::Anthropic, "claude-3-5-haiku-latest".to_owned()),
        ],
        "each entry at its own provider with its own name (openai was unreachable)"
    );
    let anthropic = app.provider.model_calls().pop().expect("anthropic was called");
    assert!(
        anthropic.headers["authorization"]
            .to_str()
            .unwrap_or_default()
            .starts_with("Bearer sk-ant-"),
        "the OpenAI-compatible endpoint takes a bearer key"
    );

    let nowhere =
        chat(&app, json!({"provider": "openai", "model": "gpt-4o", "messages": hi()})).await;
    assert_eq!(nowhere.status, StatusCode::BAD_GATEWAY);
    assert_eq!(nowhere.code(), "provider_unreachable");
    app.finish().await;
}

on_both_backends!(a_refused_byok_key_stops_the_chat_call_instead_of_falling_back);

async fn a_refused_byok_key_stops_the_chat_call_instead_of_falling_back(backend: Backend) {
    let platform = keys::anthropic();
    let app = with_keys(
        backend,
        &[("KEYLEDGER_PLATFORM_KEY_ANTHROPIC", &platform)],
        &["openai", "anthropic"],
    )
    .await;
    app.provider.accept(&platform);
    // The organization's OpenAI key is rotated to one the provider does not accept.
    let refused = keys::openai();
    let rotated =
        app.put("/v1/orgs/acme/keys/openai", &app.owner("acme"), json!({"key": refused})).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let before = app.provider.model_calls().len();
    let chain = json!(["openai/gpt-4o", "anthropic/claude-3-5-haiku-latest"]);
    let answer = chat(&app, json!({"models": chain, "messages": hi()})).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{}", answer.everything());
    assert_eq!(answer.code(), "byok_key_rejected");
    assert_eq!(answer.json()["error"]["code"], "byok_key_rejected");
    assert_eq!(
        app.provider.model_calls().len(),
        before + 1,
        "no other provider and no platform key was tried"
    );
    let shown = app.get("/v1/orgs/acme/keys/openai", &app.owner("acme")).await.json();
    assert_eq!(shown["last_verification"]["outcome"], "invalid_key", "confirmed and recorded");
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
    let failed = chat(&app, json!({"model": "openai/gpt-4o-mini", "messages": hi()})).await;
    assert_eq!(failed.code(), "provider_unreachable");
    let made = chat(&app, json!({"model": "claude-3-5-haiku-latest", "messages": hi()})).await;
    assert_eq!(made.status, StatusCode::OK, "the month's one place was still free");
    assert_eq!(made.headers["x-keyledger-key-source"], "platform");
    let over = chat(&app, json!({"model": "claude-3-5-haiku-latest", "messages": hi()})).await;
    assert_eq!(over.code(), "quota_exceeded");
    app.finish().await;
}
