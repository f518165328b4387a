//! Loading an organization through snapshots gives the state a full replay gives.

use cqrs_es::EventStore;
use serde_json::json;

use crate::keys;
use keyledger_domain::Keyring;
use keyledger_store::event_store::{EventRepository, SnapshottingStore, SNAPSHOT_EVERY};
use keyledger_store::Database;
use keyledger_tests::{on_both_backends, Backend, TestApp};

on_both_backends!(state_loaded_through_snapshots_equals_state_replayed_from_events);

async fn state_loaded_through_snapshots_equals_state_replayed_from_events(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    app.post(
        "/v1/orgs/acme/keys",
        &owner,
        json!({"provider": "anthropic", "key": keys::anthropic()}),
    )
    .await;
    app.post("/v1/orgs/acme/keys", &owner, json!({"provider": "openai", "key": keys::openai()}))
        .await;
    for i in 0..300 {
        let response = match i % 4 {
            0 => app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": keys::anthropic()})).await,
            1 => app.send(axum::http::Method::PATCH, "/v1/orgs/acme/keys/openai", Some(&owner), Some(json!({"description": format!("edit {i}")}))).await,
            2 => app.put("/v1/orgs/acme/provider-order", &owner, json!({"providers": if i % 8 == 2 { json!(["openai", "anthropic"]) } else { json!(["anthropic"]) }})).await,
            _ => app.put("/v1/orgs/acme/plan", &app.platform_admin(), json!({"plan": if i % 8 == 3 { "business" } else { "pro" }})).await,
        };
        assert!(response.status.is_success(), "command {i}: {}", response.everything());
    }
    let db = Database::connect(&app.database_url).await.expect("connect");
    let store = SnapshottingStore::<_, Keyring>::new(EventRepository::new(&db));
    let replayed = store.replay_from_events("acme").await.expect("replay");
    let context = store.load_aggregate("acme").await.expect("load");
    assert_eq!(context.aggregate, replayed, "snapshot + tail equals a full replay");
    assert_eq!(replayed.keys()[&keyledger_domain::ProviderId::Anthropic].version, 76);

    let events = app.count("select count(*) from events where aggregate_id = 'acme'").await;
    let snapshot_at =
        app.count("select max(last_sequence) from snapshots where aggregate_id = 'acme'").await;
    assert!(events > 300, "{events} events");
    assert!(
        events - snapshot_at < SNAPSHOT_EVERY as i64,
        "loading replays at most {SNAPSHOT_EVERY} events, not {events}"
    );
    app.finish().await;
}
