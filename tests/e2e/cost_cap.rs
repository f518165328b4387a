//! The platform key's cost cap holds under concurrency: each call holds its estimated cost
//! (prompt and `max_tokens` at its model's price) while it runs, settled to the real cost when
//! it is recorded; and a model without a price of its own costs its provider's `*` price.

use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;

use crate::gateway::{call, recorded_calls};
use crate::keys;
use keyledger_tests::{on_both_backends, Backend, TestApp};

fn prices_file(prices: serde_json::Value) -> String {
    let path = std::env::temp_dir().join(format!("keyledger-prices-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&path, prices.to_string()).expect("write prices");
    path.to_string_lossy().into_owned()
}

on_both_backends!(fifty_concurrent_platform_calls_cannot_overshoot_the_cost_cap);

async fn fifty_concurrent_platform_calls_cannot_overshoot_the_cost_cap(backend: Backend) {
    const CAP: f64 = 0.02;
    let plans = crate::usage::plans_file(
        json!({"capped": {"byok": false, "max_providers": null, "provider_order": false, "monthly_platform_queries": 1000, "monthly_platform_cost_cap_usd": CAP}}),
    );
    // 100 USD per million tokens: a call of 12 + 7 tokens costs 0.0019 USD.
    let prices = prices_file(
        json!({"openai/gpt-4o-mini": {"input_per_million_usd": 100.0, "output_per_million_usd": 100.0}}),
    );
    let platform = keys::openai();
    let app = Arc::new(
        TestApp::start_with(
            backend,
            &[
                ("KEYLEDGER_PLANS_FILE", &plans),
                ("KEYLEDGER_PRICES_FILE", &prices),
                ("KEYLEDGER_PLATFORM_KEY_OPENAI", &platform),
            ],
        )
        .await,
    );
    app.provider.accept(&platform);
    app.set_plan("acme", "capped").await;
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]});
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (app, body) = (Arc::clone(&app), body.clone());
            tokio::spawn(async move { call(&app, "openai", "v1/chat/completions", body).await })
        })
        .collect();
    let mut made = 0;
    for call in calls {
        let answer = call.await.expect("task");
        match answer.status {
            StatusCode::OK => made += 1,
            StatusCode::TOO_MANY_REQUESTS => assert_eq!(answer.code(), "cost_cap_reached"),
            other => panic!("unexpected {other}: {}", answer.everything()),
        }
    }
    assert!(made > 0 && made < 50, "some calls fit under the cap, not all: {made}");
    assert_eq!(app.provider.model_calls().len(), made, "refused calls never reached the provider");
    let recorded = recorded_calls(&app, made).await;
    let spent: f64 = recorded.iter().map(|c| c["cost_usd"].as_f64().unwrap_or_default()).sum();
    // Each estimate (about 40 tokens) is above the real cost (19 tokens): no overshoot at all.
    assert!(spent <= CAP + 1e-9, "spent {spent} USD of a {CAP} USD cap in {made} calls");
    match Arc::try_unwrap(app) {
        Ok(app) => app.finish().await,
        Err(_) => panic!("tasks still hold the app"),
    }
}

on_both_backends!(a_platform_call_to_an_unpriced_model_costs_its_providers_price);

async fn a_platform_call_to_an_unpriced_model_costs_its_providers_price(backend: Backend) {
    let prices = prices_file(
        json!({"openai/gpt-4o": {"input_per_million_usd": 1.0, "output_per_million_usd": 1.0}}),
    );
    let platform = keys::openai();
    let app = TestApp::start_with(
        backend,
        &[("KEYLEDGER_PRICES_FILE", &prices), ("KEYLEDGER_PLATFORM_KEY_OPENAI", &platform)],
    )
    .await;
    app.provider.accept(&platform);
    let answer =
        call(&app, "openai", "v1/chat/completions", crate::gateway::chat_body("o3-mini")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
    let recorded = recorded_calls(&app, 1).await;
    // 12 input and 7 output tokens at openai/*'s list price (2.50 and 10.00 per million).
    let cost = recorded[0]["cost_usd"].as_f64().unwrap_or_default();
    assert!((cost - 0.0001).abs() < 1e-9, "{cost}");
    app.finish().await;
}

on_both_backends!(a_platform_call_whose_answer_reports_no_usage_is_recorded_at_its_estimate);

/// Google's OpenAI-compatible stream reports no usage: the call still counts against the cap.
async fn a_platform_call_whose_answer_reports_no_usage_is_recorded_at_its_estimate(
    backend: Backend,
) {
    let platform = keys::google();
    let app = TestApp::start_with(backend, &[("KEYLEDGER_PLATFORM_KEY_GOOGLE", &platform)]).await;
    app.provider.accept(&platform);
    let service = app.token("acme", keyledger_api::Role::Service, "worker");
    let body = json!({"model": "google/gemini-2.0-flash", "max_tokens": 10, "stream": true, "messages": [{"role": "user", "content": "Hi"}]});
    let answer = app.post("/v1/orgs/acme/chat/completions", &service, body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
    assert!(!String::from_utf8_lossy(&answer.body).contains("usage"), "the stream reports none");
    let recorded = recorded_calls(&app, 1).await;
    assert_eq!(recorded[0]["output_tokens"], 10, "the call's own limit, as estimated");
    assert!(recorded[0]["input_tokens"].as_u64().unwrap_or_default() > 0);
    assert!(recorded[0]["cost_usd"].as_f64().unwrap_or_default() > 0.0, "not free");
    app.finish().await;
}
