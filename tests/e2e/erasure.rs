//! The right to erasure: `DELETE /v1/orgs/{org}` destroys every key's material and forgets the
//! organization's order and plan, while its audit trail and usage history stay.

use axum::http::StatusCode;
use serde_json::json;

use crate::gateway::claude;
use crate::keys;
use keyledger_api::Role;
use keyledger_tests::{on_both_backends, Backend, TestApp};

on_both_backends!(erasing_destroys_every_key_keeps_the_history_and_a_later_store_starts_afresh);

async fn erasing_destroys_every_key_keeps_the_history_and_a_later_store_starts_afresh(
    backend: Backend,
) {
    let platform = keys::anthropic();
    let app =
        TestApp::start_with(backend, &[("KEYLEDGER_PLATFORM_KEY_ANTHROPIC", &platform)]).await;
    app.provider.accept(&platform);
    let (admin, owner) = (app.platform_admin(), app.owner("acme"));
    let service = app.token("acme", Role::Service, "worker");
    app.set_plan("acme", "pro").await;
    let (anthropic, openai) = (keys::anthropic(), keys::openai());
    for (provider, key) in [("anthropic", &anthropic), ("openai", &openai)] {
        app.provider.accept(key);
        let stored =
            app.post("/v1/orgs/acme/keys", &owner, json!({"provider": provider, "key": key})).await;
        assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    }
    let rotated = keys::of("anthropic");
    app.provider.accept(&rotated);
    let rotation = app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": rotated})).await;
    assert_eq!(rotation.status, StatusCode::OK, "{}", rotation.everything());
    let order = json!({"providers": ["openai", "anthropic"]});
    assert_eq!(app.put("/v1/orgs/acme/provider-order", &owner, order).await.status, StatusCode::OK);
    let byok = app.post("/v1/orgs/acme/gateway/anthropic/v1/messages", &service, claude()).await;
    assert_eq!(byok.status, StatusCode::OK, "{}", byok.everything());
    let calls_before = crate::gateway::recorded_calls(&app, 1).await.len();
    let audit_before = app.get("/v1/orgs/acme/audit?limit=200", &owner).await.json()["entries"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(app.count("select count(*) from key_material").await, 2);

    for refused_by in [owner.clone(), app.token("acme", Role::Admin, "ada")] {
        let refused = app.delete("/v1/orgs/acme", &refused_by).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.everything());
    }
    assert_eq!(app.count("select count(*) from key_material").await, 2, "a refusal erases nothing");

    let erased = app.delete("/v1/orgs/acme", &admin).await;
    assert_eq!(erased.status, StatusCode::OK, "{}", erased.everything());
    let status = erased.json();
    assert_eq!(status["keys"], json!([]));
    assert_eq!(status["provider_order"], json!([]));
    assert_eq!(status["plan"], "starter");
    assert!(status["erased_at"].is_string(), "{status}");
    assert_eq!(app.count("select count(*) from key_material").await, 0, "every version shredded");

    // The views say so, read by anyone who may read them.
    let read = app.get("/v1/orgs/acme", &owner).await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.everything());
    let read = read.json();
    assert_eq!((read["keys"].clone(), read["provider_order"].clone()), (json!([]), json!([])));
    assert_eq!(read["erased_at"], status["erased_at"]);
    assert_eq!(app.get("/v1/orgs/acme/keys", &owner).await.json()["keys"], json!([]));
    let listed = app.get("/v1/orgs?q=acme", &admin).await.json();
    assert_eq!(listed["orgs"][0]["keys"], 0);

    // No key serves a call now, not even the platform's.
    let call = app.post("/v1/orgs/acme/gateway/anthropic/v1/messages", &service, claude()).await;
    assert_eq!(call.status, StatusCode::SERVICE_UNAVAILABLE, "{}", call.everything());
    assert_eq!(call.code(), "no_key_available");
    assert!(call.json()["detail"].as_str().is_some_and(|d| d.contains("erased")));

    // History stays: the audit trail (one entry more, intact) and the usage.
    let trail = app.get("/v1/orgs/acme/audit?limit=200", &owner).await.json();
    let entries = trail["entries"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), audit_before + 1);
    let last = entries.last().expect("an entry");
    assert_eq!(last["action"], "organization.erased");
    assert_eq!(last["actor"], "billing");
    assert_eq!(app.get("/v1/orgs/acme/audit/verify", &owner).await.json()["ok"], true);
    assert_eq!(crate::gateway::recorded_calls(&app, calls_before).await.len(), calls_before);

    // Erasing again changes nothing.
    let again = app.delete("/v1/orgs/acme", &admin).await;
    assert_eq!(again.status, StatusCode::OK);
    let events = app.count("select count(*) from events where aggregate_type = 'Keyring'").await;

    // The next change starts the organization afresh, and says so.
    app.set_plan("acme", "pro").await;
    let stored = app
        .post("/v1/orgs/acme/keys", &owner, json!({"provider": "anthropic", "key": rotated}))
        .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    assert_eq!(stored.json()["version"], 1);
    let after = app.count("select count(*) from events where aggregate_type = 'Keyring'").await;
    assert_eq!(after, events + 3, "restarted, plan changed, key stored");
    let trail = app.get("/v1/orgs/acme/audit?action=organization.restarted", &owner).await.json();
    assert_eq!(
        trail["entries"][0]["summary"], "Organization starts afresh after its erasure",
        "{trail}"
    );
    assert_eq!(app.get("/v1/orgs/acme", &owner).await.json()["erased_at"], json!(null));
    let call = app.post("/v1/orgs/acme/gateway/anthropic/v1/messages", &service, claude()).await;
    assert_eq!(call.status, StatusCode::OK, "calls work again: {}", call.everything());

    // No key that was ever stored is anywhere in the database in plaintext.
    app.keyring_views_settled().await;
    let everything = app.dump_database().await;
    for key in [&anthropic, &openai, &rotated] {
        assert!(!everything.contains(key.as_str()), "a key is in the database");
    }
    app.finish().await;
}
