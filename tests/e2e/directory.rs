//! What a console or settings page reads before it asks about one organization: the list of
//! organizations (platform admin), the provider registry, the plan catalogue, the audit trail
//! filtered, and the console itself.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::keys;
use keyledger_api::Role;
use keyledger_tests::{on_both_backends, Backend, TestApp};

fn orgs_of(page: &Value) -> Vec<String> {
    page["orgs"]
        .as_array()
        .expect("orgs")
        .iter()
        .map(|o| o["org"].as_str().expect("org id").to_owned())
        .collect()
}

on_both_backends!(the_platform_admin_lists_every_organization_with_its_plan_keys_and_month);

async fn the_platform_admin_lists_every_organization_with_its_plan_keys_and_month(
    backend: Backend,
) {
    let app = TestApp::start(backend).await;
    let admin = app.platform_admin();
    // acme keeps a key; globex only ever called on the platform's key; initech only changed plan.
    app.set_plan("acme", "pro").await;
    let stored = app
        .post(
            "/v1/orgs/acme/keys",
            &app.owner("acme"),
            json!({"provider": "openai", "key": keys::openai()}),
        )
        .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    let call = json!({"request_id": "g-1", "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1_000_000, "output_tokens": 0});
    let recorded = app
        .post("/v1/orgs/globex/usage", &app.token("globex", Role::Service, "worker"), call)
        .await;
    assert_eq!(recorded.status, StatusCode::CREATED, "{}", recorded.everything());
    app.set_plan("initech", "business").await;

    let all = app.get("/v1/orgs", &admin).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.everything());
    let all = all.json();
    assert_eq!(orgs_of(&all), ["acme", "globex", "initech"]);
    assert_eq!(all["next"], Value::Null);
    assert_eq!(
        all["orgs"][0],
        json!({"org": "acme", "plan": "pro", "byok_access": true, "byok_active": true, "keys": 1,
               "calls_this_month": 0, "cost_usd_this_month": 0.0})
    );
    assert_eq!(
        all["orgs"][1],
        json!({"org": "globex", "plan": "starter", "byok_access": true, "byok_active": false, "keys": 0,
               "calls_this_month": 1, "cost_usd_this_month": 0.15}),
        "an organization known only from its usage is listed, on the default plan"
    );
    assert_eq!(all["orgs"][2]["plan"], "business");

    let first = app.get("/v1/orgs?limit=2", &admin).await.json();
    assert_eq!(orgs_of(&first), ["acme", "globex"]);
    assert_eq!(first["next"], "globex");
    let second = app.get("/v1/orgs?limit=2&after=globex", &admin).await.json();
    assert_eq!(orgs_of(&second), ["initech"]);
    assert_eq!(second["next"], Value::Null);

    assert_eq!(orgs_of(&app.get("/v1/orgs?q=obe", &admin).await.json()), ["globex"]);
    assert!(
        orgs_of(&app.get("/v1/orgs?q=%25", &admin).await.json()).is_empty(),
        "a % searched for is a character, not a pattern"
    );
    app.finish().await;
}

on_both_backends!(only_a_platform_admin_of_every_organization_lists_them);

async fn only_a_platform_admin_of_every_organization_lists_them(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    for (org, role) in [
        ("acme", Role::Owner),
        ("acme", Role::Auditor),
        ("acme", Role::PlatformAdmin),
        ("*", Role::Service),
    ] {
        let refused = app.get("/v1/orgs", &app.token(org, role, "someone")).await;
        assert_eq!(
            refused.status,
            StatusCode::FORBIDDEN,
            "{org} {role:?}: {}",
            refused.everything()
        );
        assert_eq!(refused.code(), "forbidden");
    }
    assert_eq!(
        app.send(Method::GET, "/v1/orgs", None, None).await.status,
        StatusCode::UNAUTHORIZED
    );

    let admin = app.platform_admin();
    for bad in
        ["limit=0", "limit=201", "limit=ten", "colour=blue", &format!("q={}", "x".repeat(65))]
    {
        let refused = app.get(&format!("/v1/orgs?{bad}"), &admin).await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(refused.code(), "invalid_request", "{bad}");
        assert!(!refused.json()["detail"].as_str().unwrap_or_default().is_empty(), "{bad}");
    }
    app.finish().await;
}

on_both_backends!(the_registry_and_the_plan_catalogue_are_readable_by_any_signed_in_role);

async fn the_registry_and_the_plan_catalogue_are_readable_by_any_signed_in_role(backend: Backend) {
    let app = TestApp::start(backend).await;
    let member = app.token("acme", Role::Member, "mia");
    let providers = app.get("/v1/providers", &member).await;
    assert_eq!(providers.status, StatusCode::OK, "{}", providers.everything());
    let providers = providers.json();
    let ids: Vec<&str> = providers["providers"]
        .as_array()
        .expect("providers")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "anthropic",
            "openai",
            "google",
            "mistral",
            "groq",
            "azure_openai",
            "aleph_alpha",
            "ollama",
            "lmstudio",
            "vllm"
        ]
    );
    let ollama = &providers["providers"][7];
    assert_eq!(ollama["name"], "Ollama");
    assert_eq!(ollama["needs_endpoint"], true);
    assert_eq!(ollama["key_optional"], true);
    assert_eq!(providers["providers"][1]["key_optional"], false, "OpenAI needs its key");

    let plans = app.get("/v1/plans", &member).await.json();
    let plan = |id: &str| {
        plans["plans"].as_array().expect("plans").iter().find(|p| p["id"] == id).cloned().expect(id)
    };
    assert_eq!(plan("starter")["byok"], false);
    assert_eq!(plan("private")["max_providers"], 1);
    assert_eq!(plan("private")["provider_order"], false);
    assert_eq!(plan("pro")["provider_order"], true);
    assert!(plan("pro")["monthly_platform_queries"].as_u64().is_some_and(|q| q > 0));

    assert_eq!(app.get("/v1/plans", "not-a-token").await.status, StatusCode::UNAUTHORIZED);
    app.finish().await;
}

on_both_backends!(the_audit_trail_filters_by_action_and_provider);

async fn the_audit_trail_filters_by_action_and_provider(backend: Backend) {
    let app = TestApp::start(backend).await;
    let owner = app.owner("acme");
    app.set_plan("acme", "pro").await;
    for (provider, key) in [("openai", keys::openai()), ("anthropic", keys::anthropic())] {
        let stored =
            app.post("/v1/orgs/acme/keys", &owner, json!({"provider": provider, "key": key})).await;
        assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    }
    let rotated =
        app.put("/v1/orgs/acme/keys/openai", &owner, json!({"key": keys::openai()})).await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.everything());

    let entries = |page: Value| -> Vec<(String, String)> {
        page["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap_or("").to_owned(),
                    e["provider"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    };
    let rotations = app.get("/v1/orgs/acme/audit?action=key.rotated", &owner).await.json();
    assert_eq!(entries(rotations), [("key.rotated".to_owned(), "openai".to_owned())]);
    let stores =
        app.get("/v1/orgs/acme/audit?action=key.stored&provider=anthropic", &owner).await.json();
    assert_eq!(entries(stores), [("key.stored".to_owned(), "anthropic".to_owned())]);
    let anthropic = entries(app.get("/v1/orgs/acme/audit?provider=anthropic", &owner).await.json());
    assert!(
        !anthropic.is_empty() && anthropic.iter().all(|(_, p)| p == "anthropic"),
        "{anthropic:?}"
    );
    let plans = entries(app.get("/v1/orgs/acme/audit?action=plan.changed", &owner).await.json());
    assert_eq!(plans, [("plan.changed".to_owned(), String::new())]);

    let unknown_action = app.get("/v1/orgs/acme/audit?action=key.eaten", &owner).await;
    assert_eq!(unknown_action.status, StatusCode::BAD_REQUEST);
    assert!(unknown_action.json()["detail"].as_str().is_some_and(|d| d.contains("key.rotated")));
    let unknown_provider = app.get("/v1/orgs/acme/audit?provider=skynet", &owner).await;
    assert_eq!(unknown_provider.code(), "unknown_provider", "as everywhere a provider is named");
    app.finish().await;
}

on_both_backends!(the_console_is_served_from_the_binary_under_a_strict_content_policy);

async fn the_console_is_served_from_the_binary_under_a_strict_content_policy(backend: Backend) {
    let app = TestApp::start(backend).await;
    let page = app.send(Method::GET, "/console/", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.header("content-type").starts_with("text/html"));
    let policy = page.header("content-security-policy");
    assert!(
        policy.contains("default-src 'none'") && policy.contains("script-src 'self'"),
        "{policy}"
    );
    assert!(String::from_utf8_lossy(&page.body).contains("js/app.js"));

    let script = app.send(Method::GET, "/console/js/app.js", None, None).await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(script.header("content-type").starts_with("text/javascript"));
    let chart = app.send(Method::GET, "/console/vendor/uPlot.iife.min.js", None, None).await;
    assert_eq!(chart.status, StatusCode::OK, "the chart library is served, not fetched from a CDN");

    let bare = app.send(Method::GET, "/console", None, None).await;
    assert_eq!(bare.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(bare.header("location"), "/console/");

    for missing in ["/console/nope.js", "/console/../Cargo.toml", "/console/js/%2e%2e/index.html"] {
        let refused = app.send(Method::GET, missing, None, None).await;
        assert_eq!(refused.status, StatusCode::NOT_FOUND, "{missing}");
        assert_eq!(refused.header("content-type"), "application/problem+json", "{missing}");
    }
    app.finish().await;
}
