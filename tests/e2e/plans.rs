//! Plan gating: which plans allow BYOK, how many providers, and what a plan change does.

use axum::http::StatusCode;
use serde_json::json;

use crate::keys;
use keyledger_tests::{on_both_backends, Backend, TestApp};

on_both_backends!(starter_refuses_byok_and_writes_nothing);

async fn starter_refuses_byok_and_writes_nothing(backend: Backend) {
    let app = TestApp::start(backend).await;
    let owner = app.owner("acme");
    let status = app.get("/v1/orgs/acme", &owner).await.json();
    assert_eq!(status["plan"], "starter", "a new org is on starter");
    assert_eq!(status["byok_access"], true);

    let response = app
        .post(
            "/v1/orgs/acme/keys",
            &owner,
            json!({"provider": "anthropic", "key": keys::anthropic()}),
        )
        .await;
    assert_eq!(response.status, StatusCode::FORBIDDEN);
    assert_eq!(response.code(), "byok_not_allowed");
    assert_eq!(app.count("select count(*) from events").await, 0);
    assert_eq!(app.count("select count(*) from key_material").await, 0);
    app.finish().await;
}

on_both_backends!(private_allows_one_provider_and_replace_swaps_it);

async fn private_allows_one_provider_and_replace_swaps_it(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "private").await;
    let owner = app.owner("acme");
    let first = app
        .post(
            "/v1/orgs/acme/keys",
            &owner,
            json!({"provider": "anthropic", "key": keys::anthropic()}),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);

    let second = app
        .post("/v1/orgs/acme/keys", &owner, json!({"provider": "openai", "key": keys::openai()}))
        .await;
    assert_eq!(second.status, StatusCode::CONFLICT);
    assert_eq!(second.code(), "provider_limit_reached");

    let replaced = app
        .post(
            "/v1/orgs/acme/keys",
            &owner,
            json!({"provider": "openai", "key": keys::openai(), "replace": true}),
        )
        .await;
    assert_eq!(replaced.status, StatusCode::CREATED, "{}", replaced.everything());
    let listed = app.get("/v1/orgs/acme/keys", &owner).await.json();
    let providers: Vec<_> =
        listed["keys"].as_array().expect("keys").iter().map(|k| k["provider"].clone()).collect();
    assert_eq!(providers, vec![json!("openai")]);
    assert_eq!(
        app.count("select count(*) from key_material").await,
        1,
        "the replaced key was shredded"
    );

    let order =
        app.put("/v1/orgs/acme/provider-order", &owner, json!({"providers": ["openai"]})).await;
    assert_eq!(order.code(), "provider_order_not_allowed");
    app.finish().await;
}

on_both_backends!(a_downgrade_suspends_all_but_one_key_and_an_upgrade_reinstates_them);

async fn a_downgrade_suspends_all_but_one_key_and_an_upgrade_reinstates_them(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    for (provider, key) in
        [("anthropic", keys::anthropic()), ("openai", keys::openai()), ("google", keys::google())]
    {
        let response =
            app.post("/v1/orgs/acme/keys", &owner, json!({"provider": provider, "key": key})).await;
        assert_eq!(response.status, StatusCode::CREATED, "{provider}: {}", response.everything());
    }
    let order = app
        .put("/v1/orgs/acme/provider-order", &owner, json!({"providers": ["google", "anthropic"]}))
        .await;
    assert_eq!(order.json()["providers"], json!(["google", "anthropic"]));

    app.set_plan("acme", "private").await;
    let status = app.get("/v1/orgs/acme", &owner).await.json();
    let statuses: Vec<(String, String)> = status["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["provider"].as_str().unwrap_or_default().to_owned(),
                k["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            ("anthropic".to_owned(), "suspended".to_owned()),
            ("openai".to_owned(), "suspended".to_owned()),
            ("google".to_owned(), "active".to_owned()),
        ],
        "the first provider of the order stays active"
    );
    assert_eq!(status["byok_active"], true);
    assert_eq!(
        app.count("select count(*) from key_material").await,
        3,
        "suspended keys stay sealed"
    );

    app.set_plan("acme", "pro").await;
    let status = app.get("/v1/orgs/acme", &owner).await.json();
    assert!(
        status["keys"].as_array().expect("keys").iter().all(|k| k["status"] == "active"),
        "{status}"
    );

    let withdrawn = app
        .put("/v1/orgs/acme/byok-access", &app.platform_admin(), json!({"enabled": false}))
        .await;
    assert_eq!(withdrawn.status, StatusCode::OK);
    assert_eq!(withdrawn.json()["byok_active"], false);
    let refused = app
        .post("/v1/orgs/acme/keys", &owner, json!({"provider": "mistral", "key": "a".repeat(32)}))
        .await;
    assert_eq!(refused.code(), "byok_not_allowed");
    app.finish().await;
}

on_both_backends!(an_unknown_plan_is_refused);

async fn an_unknown_plan_is_refused(backend: Backend) {
    let app = TestApp::start(backend).await;
    let response =
        app.put("/v1/orgs/acme/plan", &app.platform_admin(), json!({"plan": "platinum"})).await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.code(), "unknown_plan");
    app.finish().await;
}
