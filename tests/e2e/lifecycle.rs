//! The key lifecycle through the real router: store, list, rotate, verify, remove.

use axum::http::StatusCode;
use serde_json::json;

use crate::keys;
use keyledger_tests::{on_both_backends, Backend, TestApp};

on_both_backends!(a_key_is_stored_listed_rotated_verified_and_removed);

async fn a_key_is_stored_listed_rotated_verified_and_removed(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    let first = keys::anthropic();

    let stored = app
        .post(
            "/v1/orgs/acme/keys",
            &owner,
            json!({"provider": "anthropic", "key": first, "description": "production"}),
        )
        .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    let body = stored.json();
    assert_eq!(body["masked"], format!("sk-ant-••••{}", keys::last4(&first)));
    assert_eq!(body["hint"], keys::last4(&first));
    assert_eq!(body["version"], 1);
    assert_eq!(body["status"], "active");
    assert_eq!(body["description"], "production");

    let listed = app.get("/v1/orgs/acme/keys", &owner).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert_eq!(listed.json()["keys"].as_array().map(Vec::len), Some(1));
    assert_eq!(listed.json()["keys"][0]["masked"], body["masked"]);
    assert_eq!(listed.json()["byok_active"], true);

    let second = keys::anthropic();
    let rotated = app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": second})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.everything());
    assert_eq!(rotated.json()["version"], 2);
    assert_eq!(rotated.json()["masked"], format!("sk-ant-••••{}", keys::last4(&second)));
    assert!(rotated.json()["rotated_at"].is_string());

    app.provider.accept(&second);
    let valid = app
        .send(axum::http::Method::POST, "/v1/orgs/acme/keys/anthropic/verify", Some(&owner), None)
        .await;
    assert_eq!(valid.status, StatusCode::OK, "{}", valid.everything());
    assert_eq!(valid.json()["ok"], true);
    assert_eq!(valid.json()["outcome"], "valid");
    let shown = app.get("/v1/orgs/acme/keys/anthropic", &owner).await.json();
    assert_eq!(shown["last_verification"]["outcome"], "valid");

    let third = keys::anthropic();
    app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": third})).await;
    let rejected = app
        .send(axum::http::Method::POST, "/v1/orgs/acme/keys/anthropic/verify", Some(&owner), None)
        .await;
    assert_eq!(rejected.status, StatusCode::OK);
    assert_eq!(rejected.json()["ok"], false);
    assert_eq!(rejected.json()["outcome"], "invalid_key");
    assert_eq!(app.provider.requests(), 2, "each verify makes one provider call");

    let removed = app.delete("/v1/orgs/acme/keys/anthropic", &owner).await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let listed = app.get("/v1/orgs/acme/keys", &owner).await.json();
    assert_eq!(listed["keys"], json!([]));
    assert_eq!(listed["byok_active"], false);
    assert_eq!(app.get("/v1/orgs/acme/keys/anthropic", &owner).await.code(), "key_not_found");
    app.finish().await;
}

on_both_backends!(storing_with_verify_keeps_only_keys_the_provider_accepts);

async fn storing_with_verify_keeps_only_keys_the_provider_accepts(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    let refused = keys::openai();
    let response = app
        .post(
            "/v1/orgs/acme/keys",
            &owner,
            json!({"provider": "openai", "key": refused, "verify": true}),
        )
        .await;
    assert_eq!(response.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(response.code(), "key_verification_failed");
    assert_eq!(app.get("/v1/orgs/acme/keys", &owner).await.json()["keys"], json!([]));
    assert_eq!(
        app.count("select count(*) from key_material").await,
        0,
        "nothing sealed is left behind"
    );

    let accepted = keys::openai();
    app.provider.accept(&accepted);
    let response = app
        .post(
            "/v1/orgs/acme/keys",
            &owner,
            json!({"provider": "openai", "key": accepted, "verify": true}),
        )
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.everything());
    assert_eq!(response.json()["last_verification"]["ok"], true);
    app.finish().await;
}

on_both_backends!(keys_as_of_an_instant_are_rebuilt_from_the_log);

async fn keys_as_of_an_instant_are_rebuilt_from_the_log(backend: Backend) {
    let app = TestApp::start(backend).await;
    keys::store_accepted(&app, &["anthropic"]).await;
    let owner = app.owner("acme");
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": keys::anthropic()})).await;

    let then = app
        .get(
            &format!("/v1/orgs/acme/keys?as_of={}", between.to_rfc3339().replace('+', "%2B")),
            &owner,
        )
        .await;
    assert_eq!(then.status, StatusCode::OK, "{}", then.everything());
    assert_eq!(then.json()["keys"][0]["version"], 1);
    let now = app
        .get(
            &format!(
                "/v1/orgs/acme/keys?as_of={}",
                chrono::Utc::now().to_rfc3339().replace('+', "%2B")
            ),
            &owner,
        )
        .await;
    assert_eq!(now.json(), app.get("/v1/orgs/acme/keys", &owner).await.json());
    app.finish().await;
}
