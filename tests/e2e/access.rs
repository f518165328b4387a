//! Authentication and authorization: tokens, roles, and organizations kept apart.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::keys;
use keyledger_api::Role;
use keyledger_tests::{on_both_backends, Backend, TestApp};

fn org_b_endpoints() -> Vec<(Method, &'static str, Option<serde_json::Value>)> {
    vec![
        (Method::GET, "/v1/orgs/beta", None),
        (Method::PUT, "/v1/orgs/beta/plan", Some(json!({"plan": "pro"}))),
        (Method::PUT, "/v1/orgs/beta/byok-access", Some(json!({"enabled": false}))),
        (Method::GET, "/v1/orgs/beta/keys", None),
        (
            Method::POST,
            "/v1/orgs/beta/keys",
            Some(json!({"provider": "anthropic", "key": keys::anthropic()})),
        ),
        (Method::GET, "/v1/orgs/beta/keys/anthropic", None),
        (Method::PUT, "/v1/orgs/beta/keys/anthropic", Some(json!({"key": keys::anthropic()}))),
        (Method::PATCH, "/v1/orgs/beta/keys/anthropic", Some(json!({"description": "mine now"}))),
        (Method::DELETE, "/v1/orgs/beta/keys/anthropic", None),
        (Method::POST, "/v1/orgs/beta/keys/anthropic/verify", None),
        (Method::GET, "/v1/orgs/beta/provider-order", None),
        (Method::PUT, "/v1/orgs/beta/provider-order", Some(json!({"providers": ["openai"]}))),
    ]
}

on_both_backends!(an_org_a_token_is_forbidden_on_every_org_b_endpoint);

async fn an_org_a_token_is_forbidden_on_every_org_b_endpoint(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("beta", "pro").await;
    let beta_key = keys::anthropic();
    app.post(
        "/v1/orgs/beta/keys",
        &app.owner("beta"),
        json!({"provider": "anthropic", "key": beta_key}),
    )
    .await;
    let events_before = app.count("select count(*) from events").await;

    for role in [Role::Owner, Role::Admin, Role::Member, Role::Auditor, Role::Service] {
        let alpha = app.token("alpha", role, "mallory");
        for (method, path, body) in org_b_endpoints() {
            let response = app.send(method.clone(), path, Some(&alpha), body).await;
            assert_eq!(response.status, StatusCode::FORBIDDEN, "{role:?} {method} {path}");
            assert_eq!(response.code(), "forbidden");
        }
    }
    assert_eq!(
        app.count("select count(*) from events").await,
        events_before,
        "nothing was written"
    );
    let listed = app.get("/v1/orgs/beta/keys", &app.owner("beta")).await.json();
    assert_eq!(listed["keys"][0]["version"], 1);
    app.finish().await;
}

on_both_backends!(roles_get_what_the_contract_gives_them);

async fn roles_get_what_the_contract_gives_them(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let store = json!({"provider": "anthropic", "key": keys::anthropic()});
    for role in [Role::Member, Role::Auditor, Role::Service, Role::PlatformAdmin] {
        let token =
            app.token(if role == Role::PlatformAdmin { "*" } else { "acme" }, role, "someone");
        let response = app.post("/v1/orgs/acme/keys", &token, store.clone()).await;
        assert_eq!(response.status, StatusCode::FORBIDDEN, "{role:?} may not store keys");
    }
    for role in [Role::Member, Role::Auditor] {
        let response = app.get("/v1/orgs/acme/keys", &app.token("acme", role, "reader")).await;
        assert_eq!(response.status, StatusCode::OK, "{role:?} reads masked keys");
    }
    let admin = app.post("/v1/orgs/acme/keys", &app.token("acme", Role::Admin, "ops"), store).await;
    assert_eq!(admin.status, StatusCode::CREATED);
    let owner_plan =
        app.put("/v1/orgs/acme/plan", &app.owner("acme"), json!({"plan": "business"})).await;
    assert_eq!(owner_plan.status, StatusCode::FORBIDDEN, "only the platform sets plans");
    let wildcard_owner = app.get("/v1/orgs/acme", &app.token("*", Role::Owner, "eve")).await;
    assert_eq!(wildcard_owner.status, StatusCode::FORBIDDEN, "only platform roles span orgs");
    app.finish().await;
}

on_both_backends!(missing_bad_and_expired_tokens_are_unauthenticated);

async fn missing_bad_and_expired_tokens_are_unauthenticated(backend: Backend) {
    let app = TestApp::start(backend).await;
    let none = app.send(Method::GET, "/v1/orgs/acme", None, None).await;
    assert_eq!((none.status, none.code().as_str()), (StatusCode::UNAUTHORIZED, "unauthenticated"));
    assert_eq!(none.headers["content-type"], "application/problem+json");

    let forged =
        keyledger_api::TokenKeys::new(&secrecy::SecretString::from("another-secret".to_owned()))
            .issue("acme", Role::Owner, "eve", std::time::Duration::from_secs(60))
            .expect("token");
    assert_eq!(app.get("/v1/orgs/acme", &forged).await.status, StatusCode::UNAUTHORIZED);

    // exp is whole seconds with a few seconds of leeway; an hour in the past is expired.
    let claims = json!({"sub": "alice", "role": "owner", "org": "acme", "exp": chrono::Utc::now().timestamp() - 3600});
    let old = signed(&app, &claims);
    let response = app.get("/v1/orgs/acme", &old).await;
    assert_eq!(response.status, StatusCode::UNAUTHORIZED);
    assert!(response.json()["detail"].as_str().unwrap_or_default().contains("expired"));
    app.finish().await;
}

on_both_backends!(tokens_not_yet_valid_too_long_lived_or_from_elsewhere_are_refused);

async fn tokens_not_yet_valid_too_long_lived_or_from_elsewhere_are_refused(backend: Backend) {
    let app = TestApp::start_with(
        backend,
        &[("KEYLEDGER_JWT_ISSUER", "https://idp.example"), ("KEYLEDGER_JWT_AUDIENCE", "keyledger")],
    )
    .await;
    let now = chrono::Utc::now().timestamp();
    let base = json!({"sub": "alice", "role": "owner", "org": "acme", "exp": now + 600, "iss": "https://idp.example", "aud": "keyledger"});
    let with = |field: &str, value: serde_json::Value| {
        let mut claims = base.clone();
        claims[field] = value;
        signed(&app, &claims)
    };
    assert_eq!(app.get("/v1/orgs/acme", &with("sub", json!("alice"))).await.status, StatusCode::OK);
    assert_eq!(
        app.get("/v1/orgs/acme", &app.owner("acme")).await.status,
        StatusCode::OK,
        "issued here: iss and aud set"
    );
    for (token, says) in [
        (with("nbf", json!(now + 600)), "not valid yet"),
        (with("exp", json!(now + 31 * 86_400)), "longer than 30 days"),
        (with("iss", json!("https://evil.example")), "another issuer"),
        (with("aud", json!("someone-else")), "another audience"),
        (with("iss", serde_json::Value::Null), "not valid"),
    ] {
        let refused = app.get("/v1/orgs/acme", &token).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{says}");
        assert!(
            refused.json()["detail"].as_str().unwrap_or_default().contains(says),
            "{}",
            refused.everything()
        );
    }
    app.finish().await;
}

fn signed(app: &TestApp, claims: &serde_json::Value) -> String {
    let claims: keyledger_api::auth::Claims =
        serde_json::from_value(claims.clone()).expect("claims");
    app.sign(&claims)
}
