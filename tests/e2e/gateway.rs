//! The gateway: the resolved key goes to the provider in the provider's way, the caller's own
//! credentials never do, answers stream through, and usage is recorded from the answer.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::json;
use tower::ServiceExt as _;

use crate::keys;
use keyledger_api::Role;
use keyledger_tests::{on_both_backends, Backend, TestApp, TestResponse};

pub(crate) async fn call(
    app: &TestApp,
    provider: &str,
    path: &str,
    body: serde_json::Value,
) -> TestResponse {
    call_as(app, "acme", provider, path, body).await
}

/// [`call`] for `org`.
pub(crate) async fn call_as(
    app: &TestApp,
    org: &str,
    provider: &str,
    path: &str,
    body: serde_json::Value,
) -> TestResponse {
    let request = Request::post(format!("/v1/orgs/{org}/gateway/{provider}/{path}"))
        .header("authorization", format!("Bearer {}", app.token(org, Role::Service, "worker")))
        .header("x-api-key", "the-callers-own-secret")
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let response = app.router.clone().oneshot(request).await.expect("router");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
    TestResponse { status, headers, body }
}

/// An Anthropic Messages body for a model the fake Anthropic serves.
pub(crate) fn claude() -> serde_json::Value {
    json!({"model": "claude-3-5-haiku-latest", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]})
}

/// A streamed Claude call whose provider holds it after the first chunk (until
/// `provider.release()`): its body, the first chunk read.
pub(crate) async fn held_stream(app: &TestApp) -> Body {
    let mut body = claude();
    body["stream"] = json!(true);
    let held = Request::post("/v1/orgs/acme/gateway/anthropic/v1/messages")
        .header("authorization", format!("Bearer {}", app.token("acme", Role::Service, "worker")))
        .header("x-test-hold", "1")
        .body(Body::from(body.to_string()))
        .expect("request");
    let mut held = app.router.clone().oneshot(held).await.expect("router").into_body();
    held.frame().await.expect("the first chunk").expect("data");
    held
}

/// An OpenAI chat completions body for `model`.
pub(crate) fn chat_body(model: &str) -> serde_json::Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

/// The recent calls once the cockpit shows `count` of them.
pub(crate) async fn recorded_calls(app: &TestApp, count: usize) -> Vec<serde_json::Value> {
    let auditor = app.token("acme", Role::Auditor, "carol");
    for _ in 0..100 {
        let calls = app.get("/v1/orgs/acme/usage/calls", &auditor).await.json()["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if calls.len() >= count {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{count} calls were not recorded");
}

on_both_backends!(
    a_byok_call_goes_out_with_the_organizations_key_and_records_the_providers_figures
);

async fn a_byok_call_goes_out_with_the_organizations_key_and_records_the_providers_figures(
    backend: Backend,
) {
    let platform = keys::anthropic();
    let app =
        TestApp::start_with(backend, &[("KEYLEDGER_PLATFORM_KEY_ANTHROPIC", &platform)]).await;
    app.set_plan("acme", "pro").await;
    let own = keys::anthropic();
    app.provider.accept(&own);
    app.provider.accept(&platform);
    app.post(
        "/v1/orgs/acme/keys",
        &app.owner("acme"),
        json!({"provider": "anthropic", "key": own}),
    )
    .await;

    let answer = call(
        &app,
        "anthropic",
        "v1/messages",
        json!({"model": "claude-3-5-haiku-latest", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
    assert_eq!(answer.headers["x-keyledger-key-source"], "byok");
    assert_eq!(answer.json()["content"][0]["text"], "Hello");
    let seen = app.provider.seen().pop().expect("the provider was called");
    assert_eq!(seen["x-api-key"], own.as_str(), "the organization's key, where Anthropic wants it");
    assert_eq!(seen["anthropic-version"], "2023-06-01");
    assert!(!seen.contains_key("authorization"), "the caller's token stays here");
    assert!(!answer.everything().contains(&own[12..]), "the key is not in the answer");

    let calls = recorded_calls(&app, 1).await;
    assert_eq!(calls[0]["input_tokens"], 30);
    assert_eq!(calls[0]["output_tokens"], 5);
    assert_eq!(calls[0]["key_source"], "byok");
    assert_eq!(calls[0]["model"], "claude-3-5-haiku-latest");
    let metrics = app.send(axum::http::Method::GET, "/metrics", None, None).await;
    let metrics = String::from_utf8_lossy(&metrics.body).into_owned();
    assert!(
        metrics.contains(
            r#"keyledger_model_calls_total{provider="anthropic",key_source="byok",status="200"} 1"#
        ) && metrics.contains("keyledger_usage_recorded_total 1"),
        "{metrics}"
    );

    // Rotation takes effect at once: the next call carries the new key.
    let rotated = keys::anthropic();
    app.provider.accept(&rotated);
    app.put("/v1/orgs/acme/keys/anthropic", &app.owner("acme"), json!({"key": rotated})).await;
    call(&app, "anthropic", "v1/messages", claude()).await;
    assert_eq!(app.provider.seen().pop().expect("called")["x-api-key"], rotated.as_str());
    let log = keyledger_tests::captured();
    for key in [&own, &rotated, &platform] {
        assert!(!log.contains(&key[12..]), "a key used for a call is in the log");
    }
    app.finish().await;
}

on_both_backends!(without_a_byok_key_the_platform_key_is_used_and_without_either_none);

async fn without_a_byok_key_the_platform_key_is_used_and_without_either_none(backend: Backend) {
    let platform = keys::openai();
    let app = TestApp::start_with(backend, &[("KEYLEDGER_PLATFORM_KEY_OPENAI", &platform)]).await;
    app.provider.accept(&platform);
    let answer = call(&app, "openai", "v1/chat/completions", chat_body("gpt-4o-mini")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
    assert_eq!(answer.headers["x-keyledger-key-source"], "platform");
    let seen = app.provider.seen().pop().expect("called");
    assert_eq!(seen["authorization"], format!("Bearer {platform}").as_str());
    assert!(!seen.contains_key("x-api-key"), "the caller's own credentials are not passed on");
    let calls = recorded_calls(&app, 1).await;
    assert_eq!(
        (calls[0]["input_tokens"].clone(), calls[0]["key_source"].clone()),
        (json!(12), json!("platform"))
    );

    assert!(
        !keyledger_tests::captured().contains(&platform[10..]),
        "the platform key is in the log"
    );
    let none =
        call(&app, "mistral", "v1/chat/completions", chat_body("mistral-small-latest")).await;
    assert_eq!(none.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(none.code(), "no_key_available");
    app.finish().await;
}

on_both_backends!(a_refused_byok_key_is_an_error_and_an_audit_entry_never_a_silent_fallback);

async fn a_refused_byok_key_is_an_error_and_an_audit_entry_never_a_silent_fallback(
    backend: Backend,
) {
    let platform = keys::anthropic();
    let app =
        TestApp::start_with(backend, &[("KEYLEDGER_PLATFORM_KEY_ANTHROPIC", &platform)]).await;
    app.provider.accept(&platform);
    app.set_plan("acme", "pro").await;
    app.post(
        "/v1/orgs/acme/keys",
        &app.owner("acme"),
        json!({"provider": "anthropic", "key": keys::anthropic()}),
    )
    .await;
    let before = app.provider.model_calls().len();

    let answer = call(&app, "anthropic", "v1/messages", claude()).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.code(), "byok_key_rejected");
    assert_eq!(
        app.provider.model_calls().len(),
        before + 1,
        "one call, with the organization's key only"
    );
    let check = app.provider.calls().pop().expect("keyledger checked the key");
    assert_eq!((check.method.as_str(), check.path.as_str()), ("GET", "/v1/models"));
    let audit =
        app.get("/v1/orgs/acme/audit", &app.token("acme", Role::Auditor, "carol")).await.json();
    let last = audit["entries"].as_array().and_then(|e| e.last().cloned()).expect("entries");
    assert_eq!(last["action"], "key.verification_failed");
    assert_eq!(last["details"], json!({"version": 1, "outcome": "invalid_key"}).to_string());

    // A suspended key is not the organization's choice any more: the platform key serves.
    app.set_plan("acme", "starter").await;
    let answer = call(&app, "anthropic", "v1/messages", claude()).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers["x-keyledger-key-source"], "platform");
    app.finish().await;
}

on_both_backends!(a_streamed_answer_flows_chunk_by_chunk_and_its_usage_is_recorded);

/// The caller did not ask the stream for its usage: keyledger does, so the call is metered.
async fn a_streamed_answer_flows_chunk_by_chunk_and_its_usage_is_recorded(backend: Backend) {
    let platform = keys::openai();
    let app = TestApp::start_with(backend, &[("KEYLEDGER_PLATFORM_KEY_OPENAI", &platform)]).await;
    app.provider.accept(&platform);
    let request = Request::post("/v1/orgs/acme/gateway/openai/v1/chat/completions")
        .header("authorization", format!("Bearer {}", app.token("acme", Role::Service, "worker")))
        .header("x-test-hold", "1")
        .body(Body::from(json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "Hi"}]}).to_string()))
        .expect("request");
    let response = app.router.clone().oneshot(request).await.expect("router");
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/event-stream"));
    let mut body = response.into_body();
    // The provider holds the rest until it is told: if keyledger waited for the whole answer,
    // this first chunk would never come.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk streams at once");
    let first = first.expect("a frame").expect("data").into_data().expect("bytes");
    assert!(String::from_utf8_lossy(&first).contains("Hel"));
    app.provider.release();
    let rest = body.collect().await.expect("the rest").to_bytes();
    assert!(String::from_utf8_lossy(&rest).contains("[DONE]"));

    let calls = recorded_calls(&app, 1).await;
    assert_eq!(
        (calls[0]["input_tokens"].clone(), calls[0]["output_tokens"].clone()),
        (json!(9), json!(2))
    );
    assert_eq!(calls[0]["model"], "gpt-4o");
    app.finish().await;
}

on_both_backends!(fifty_concurrent_platform_key_calls_never_exceed_the_quota);

async fn fifty_concurrent_platform_key_calls_never_exceed_the_quota(backend: Backend) {
    let plans = crate::usage::plans_file(
        json!({"tiny": {"byok": false, "max_providers": null, "provider_order": false, "monthly_platform_queries": 20, "monthly_platform_cost_cap_usd": 1000.0}}),
    );
    let platform = keys::openai();
    let app = std::sync::Arc::new(
        TestApp::start_with(
            backend,
            &[("KEYLEDGER_PLANS_FILE", &plans), ("KEYLEDGER_PLATFORM_KEY_OPENAI", &platform)],
        )
        .await,
    );
    app.provider.accept(&platform);
    app.set_plan("acme", "tiny").await;
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let app = std::sync::Arc::clone(&app);
            tokio::spawn(async move {
                call(&app, "openai", "v1/chat/completions", chat_body("gpt-4o-mini")).await
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for call in calls {
        let answer = call.await.expect("task");
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(answer.code(), "quota_exceeded");
        }
        *statuses.entry(answer.status.as_u16()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses,
        std::collections::BTreeMap::from([(200, 20), (429, 30)]),
        "exactly the quota gets through"
    );
    assert_eq!(app.provider.requests(), 20, "refused calls never reach the provider");
    assert_eq!(recorded_calls(&app, 20).await.len(), 20);
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.finish().await,
        Err(_) => panic!("tasks still hold the app"),
    }
}

on_both_backends!(once_a_rotation_or_removal_returns_no_replica_calls_with_the_old_key);

async fn once_a_rotation_or_removal_returns_no_replica_calls_with_the_old_key(backend: Backend) {
    let app = TestApp::start(backend).await;
    let other = app.replica().await;
    app.set_plan("acme", "pro").await;
    let (first, second) = (keys::anthropic(), keys::anthropic());
    app.provider.accept(&first);
    app.provider.accept(&second);
    app.post(
        "/v1/orgs/acme/keys",
        &app.owner("acme"),
        json!({"provider": "anthropic", "key": first}),
    )
    .await;
    assert_eq!(call(&other, "anthropic", "v1/messages", claude()).await.status, StatusCode::OK);
    assert_eq!(app.provider.seen().pop().expect("called")["x-api-key"], first.as_str());

    let rotated =
        app.put("/v1/orgs/acme/keys/anthropic", &app.owner("acme"), json!({"key": second})).await;
    assert_eq!(rotated.status, StatusCode::OK);
    call(&other, "anthropic", "v1/messages", claude()).await;
    assert_eq!(
        app.provider.seen().pop().expect("called")["x-api-key"],
        second.as_str(),
        "the other replica used the new key at once"
    );

    app.delete("/v1/orgs/acme/keys/anthropic", &app.owner("acme")).await;
    let after = call(&other, "anthropic", "v1/messages", claude()).await;
    assert_eq!(after.code(), "no_key_available", "a removed key is gone everywhere at once");
    drop(other);
    app.finish().await;
}

on_both_backends!(a_stored_endpoint_is_checked_again_when_a_call_goes_out);

async fn a_stored_endpoint_is_checked_again_when_a_call_goes_out(backend: Backend) {
    // Stored while private endpoints were allowed; the operator has since withdrawn that.
    let app = TestApp::start_with(backend, &[("KEYLEDGER_ALLOW_PRIVATE_ENDPOINTS", "true")]).await;
    app.set_plan("acme", "pro").await;
    let stored = app
        .post(
            "/v1/orgs/acme/keys",
            &app.owner("acme"),
            json!({"provider": "ollama", "endpoint": app.provider.url("ollama")}),
        )
        .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    let strict = app.replica_with(&[("KEYLEDGER_ALLOW_PRIVATE_ENDPOINTS", "false")]).await;
    let before = app.provider.requests();
    let refused = call(&strict, "ollama", "api/chat", chat_body("llama3.2")).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.everything());
    assert_eq!(refused.code(), "provider_unreachable");
    assert_eq!(app.provider.requests(), before, "nothing was sent to the endpoint");
    drop(strict);
    app.finish().await;
}

on_both_backends!(a_platform_call_the_provider_does_not_take_gives_its_quota_place_back);

async fn a_platform_call_the_provider_does_not_take_gives_its_quota_place_back(backend: Backend) {
    let plans = crate::usage::plans_file(
        json!({"single": {"byok": false, "max_providers": null, "provider_order": false, "monthly_platform_queries": 1, "monthly_platform_cost_cap_usd": 1000.0}}),
    );
    let platform = keys::openai();
    let app = TestApp::start_with(
        backend,
        &[("KEYLEDGER_PLANS_FILE", &plans), ("KEYLEDGER_PLATFORM_KEY_OPENAI", &platform)],
    )
    .await;
    app.set_plan("acme", "single").await;
    let chat = chat_body("gpt-4o-mini");
    // The provider does not take the platform's key yet: the operator's problem, not the
    // caller's, and the provider's words about the platform's key stay here.
    let refused = call(&app, "openai", "v1/chat/completions", chat.clone()).await;
    assert_eq!(refused.status, StatusCode::BAD_GATEWAY, "{}", refused.everything());
    assert_eq!(refused.code(), "provider_unreachable");
    assert!(!refused.everything().contains(&platform[platform.len() - 4..]), "nothing of the key");
    app.provider.accept(&platform);
    // The month's single place is free again (given back in the background: allow a moment).
    let mut made = refused;
    for _ in 0..50 {
        made = call(&app, "openai", "v1/chat/completions", chat.clone()).await;
        if made.status != StatusCode::TOO_MANY_REQUESTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(made.status, StatusCode::OK, "{}", made.everything());
    let over = call(&app, "openai", "v1/chat/completions", chat).await;
    assert_eq!(over.code(), "quota_exceeded", "the call that was made keeps its place");
    app.finish().await;
}

on_both_backends!(the_calls_a_stopping_process_answered_are_recorded_before_it_goes);

async fn the_calls_a_stopping_process_answered_are_recorded_before_it_goes(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let own = keys::anthropic();
    app.provider.accept(&own);
    app.post(
        "/v1/orgs/acme/keys",
        &app.owner("acme"),
        json!({"provider": "anthropic", "key": own}),
    )
    .await;

    for _ in 0..30 {
        let answer = call(&app, "anthropic", "v1/messages", claude()).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
    }
    // Every caller has its answer; the records were handed off, nobody waited for them.
    assert!(app.usage_settled(Duration::from_secs(10)).await, "records still pending");
    assert_eq!(
        app.count("select count(*) from usage_requests").await,
        30,
        "settled means committed"
    );
    app.finish().await;
}

on_both_backends!(every_provider_gets_the_key_where_it_expects_it_and_nothing_of_the_callers);

async fn every_provider_gets_the_key_where_it_expects_it_and_nothing_of_the_callers(
    backend: Backend,
) {
    let app = TestApp::start_with(backend, &[("KEYLEDGER_ALLOW_PRIVATE_ENDPOINTS", "true")]).await;
    app.set_plan("acme", "pro").await;
    let canary = || uuid::Uuid::new_v4().simple().to_string();
    // (provider, its key, the path called, its body, where the key must arrive, with what prefix)
    let cases = [
        ("anthropic", keys::anthropic(), "v1/messages", claude(), "x-api-key", ""),
        (
            "openai",
            keys::openai(),
            "v1/chat/completions",
            chat_body("gpt-4o"),
            "authorization",
            "Bearer ",
        ),
        (
            "google",
            keys::google(),
            "v1beta/models/gemini-1.5-flash:generateContent",
            json!({"contents": [{"parts": [{"text": "Hi"}]}]}),
            "x-goog-api-key",
            "",
        ),
        (
            "mistral",
            canary(),
            "v1/chat/completions",
            chat_body("mistral-small-latest"),
            "authorization",
            "Bearer ",
        ),
        (
            "groq",
            format!("gsk_{}", canary()),
            "openai/v1/chat/completions",
            chat_body("llama-3.3-70b-versatile"),
            "authorization",
            "Bearer ",
        ),
        (
            "azure_openai",
            canary(),
            "openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
            json!({"messages": [{"role": "user", "content": "Hi"}]}),
            "api-key",
            "",
        ),
        (
            "aleph_alpha",
            format!("CANARY.{}", canary()),
            "complete",
            json!({"model": "luminous-base", "prompt": "Hi", "maximum_tokens": 8}),
            "authorization",
            "Bearer ",
        ),
        (
            "ollama",
            format!("local-{}", canary()),
            "api/chat",
            chat_body("llama3.2"),
            "authorization",
            "Bearer ",
        ),
        (
            "lmstudio",
            format!("local-{}", canary()),
            "v1/chat/completions",
            chat_body("qwen2.5-7b-instruct"),
            "authorization",
            "Bearer ",
        ),
        (
            "vllm",
            format!("local-{}", canary()),
            "v1/chat/completions",
            chat_body("meta-llama/Llama-3.3-70B-Instruct"),
            "authorization",
            "Bearer ",
        ),
    ];
    let credentials = ["authorization", "x-api-key", "x-goog-api-key", "api-key"];
    for (provider, key, path, body, header, prefix) in &cases {
        app.provider.accept(key);
        let mut stored = json!({"provider": provider, "key": key});
        if ["azure_openai", "ollama", "lmstudio", "vllm"].contains(provider) {
            stored["endpoint"] = json!(app.provider.url(provider));
        }
        let stored = app.post("/v1/orgs/acme/keys", &app.owner("acme"), stored).await;
        assert_eq!(stored.status, StatusCode::CREATED, "{provider}: {}", stored.everything());

        let answer = call(&app, provider, path, body.clone()).await;
        assert_eq!(answer.status, StatusCode::OK, "{provider}: {}", answer.everything());
        assert_eq!(answer.headers["x-keyledger-key-source"], "byok", "{provider}");
        let seen = app.provider.seen().pop().expect("the provider was called");
        assert_eq!(seen[*header], format!("{prefix}{key}").as_str(), "{provider}: {header}");
        for other in credentials.iter().filter(|name| *name != header) {
            assert!(!seen.contains_key(*other), "{provider}: {other} was passed on");
        }
        assert!(!answer.everything().contains(key.as_str()), "{provider}: the key came back");
    }
    assert_eq!(recorded_calls(&app, cases.len()).await.len(), cases.len(), "every call recorded");
    app.finish().await;
}

on_both_backends!(a_model_call_over_the_size_limit_is_refused_before_it_goes_out);

async fn a_model_call_over_the_size_limit_is_refused_before_it_goes_out(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let own = keys::openai();
    app.provider.accept(&own);
    app.post("/v1/orgs/acme/keys", &app.owner("acme"), json!({"provider": "openai", "key": own}))
        .await;
    let huge = "x".repeat(keyledger_api::app::GATEWAY_BODY_LIMIT + 1);
    let answer =
        call(&app, "openai", "v1/chat/completions", json!({"model": "gpt-4o", "pad": huge})).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", answer.everything());
    assert_eq!(answer.code(), "payload_too_large");
    assert_eq!(answer.headers["content-type"], "application/problem+json");
    assert_eq!(app.provider.requests(), 0, "nothing went out");
    app.finish().await;
}

on_both_backends!(
    past_the_cache_bound_the_least_recent_organization_leaves_and_still_calls_with_its_key
);

/// `KEYLEDGER_CACHE_ORGS` bounds what a replica keeps per organization: memory stays flat
/// however many organizations call, and one that left the cache loads its Keyring again.
async fn past_the_cache_bound_the_least_recent_organization_leaves_and_still_calls_with_its_key(
    backend: Backend,
) {
    let app = TestApp::start_with(backend, &[("KEYLEDGER_CACHE_ORGS", "2")]).await;
    let mut keys_of = Vec::new();
    for org in ["alpha", "beta", "gamma"] {
        app.set_plan(org, "pro").await;
        let own = keys::anthropic();
        app.provider.accept(&own);
        let stored = app
            .post(
                &format!("/v1/orgs/{org}/keys"),
                &app.owner(org),
                json!({"provider": "anthropic", "key": own}),
            )
            .await;
        assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
        keys_of.push((org, own));
    }
    for _ in 0..2 {
        for (org, own) in &keys_of {
            let answer = call_as(&app, org, "anthropic", "v1/messages", claude()).await;
            assert_eq!(answer.status, StatusCode::OK, "{org}: {}", answer.everything());
            let seen = app.provider.seen().pop().expect("the provider was called");
            assert_eq!(seen["x-api-key"], own.as_str(), "{org} calls with its own key");
            // At most the bound; possibly none: on PostgreSQL the replica watch empties the
            // cache whenever its trust begins anew (a late heartbeat on a busy machine).
            let held = app.metric("keyledger_keyring_cache_orgs").await;
            assert!((0.0..=2.0).contains(&held), "{org}: {held} organizations held, bound 2");
        }
    }
    assert!(app.usage_settled(Duration::from_secs(10)).await);
    let ledgers = app.metric("keyledger_usage_ledgers_cached").await;
    assert!((1.0..=2.0).contains(&ledgers), "{ledgers} usage ledgers held, bound 2");
    app.finish().await;
}
