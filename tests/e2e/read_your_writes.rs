//! Read-your-writes with commands that answer once committed: a read waits until the views
//! show its organization's latest change, and only so many commands may answer ahead of the
//! views before the next one waits for them itself.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::keys;
use keyledger_api::ViewsAhead;
use keyledger_tests::{on_both_backends, Backend, TestApp};

/// Stops the projector of `app` once the views show every change so far, and lets a step
/// under way end: from here on only the test moves the views (with `catch_up`).
async fn views_held(app: &TestApp) {
    app.keyring_views_settled().await;
    app.stop_projecting();
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn providers(list: &Value) -> Vec<String> {
    list["keys"]
        .as_array()
        .map(|keys| keys.iter().map(|k| k["provider"].as_str().unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

on_both_backends!(a_command_answers_before_the_views_show_it_and_a_read_waits_for_them);

async fn a_command_answers_before_the_views_show_it_and_a_read_waits_for_them(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    views_held(&app).await;

    let stored = app
        .post("/v1/orgs/acme/keys", &owner, json!({"provider": "openai", "key": keys::openai()}))
        .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    assert_eq!(stored.json()["version"], 1, "the answer shows the change itself");
    assert_eq!(app.metric("keyledger_commands_ahead_of_views").await, 1.0);
    assert_eq!(
        app.count("select count(*) from view_keys where org_id = 'acme'").await,
        0,
        "answered before the views show it"
    );

    // The read cannot answer from views that do not show the key yet: it waits for them.
    let read = app.get("/v1/orgs/acme/keys", &owner);
    let views_move = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.state.projector.catch_up().await.expect("caught up")
    };
    let (listed, _) = tokio::join!(read, views_move);
    assert_eq!(providers(&listed.json()), ["openai"], "{}", listed.everything());
    let status = app.get("/v1/orgs/acme", &owner).await.json();
    assert_eq!(providers(&status), ["openai"], "{status}");

    // A key the view already shows, rotated: the view's row is now older than the log.
    let rotated =
        app.put("/v1/orgs/acme/keys/openai", &owner, json!({"key": keys::openai()})).await;
    assert_eq!(rotated.json()["version"], 2, "{}", rotated.everything());
    let read = app.get("/v1/orgs/acme/keys/openai", &owner);
    let views_move = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.state.projector.catch_up().await.expect("caught up")
    };
    let (key, _) = tokio::join!(read, views_move);
    assert_eq!(key.json()["version"], 2, "{}", key.everything());

    // Once the views show it, the command no longer counts as ahead of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while app.metric("keyledger_commands_ahead_of_views").await != 0.0 {
        assert!(tokio::time::Instant::now() < deadline, "the views showed it; it is let go");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.finish().await;
}

on_both_backends!(past_the_bound_of_commands_ahead_of_the_views_a_command_waits_for_them);

async fn past_the_bound_of_commands_ahead_of_the_views_a_command_waits_for_them(backend: Backend) {
    let app = TestApp::start(backend).await;
    views_held(&app).await;
    let admin = app.platform_admin();
    let plan = |n: usize| json!({"plan": if n % 2 == 0 { "pro" } else { "business" }});
    for n in 0..ViewsAhead::BOUND {
        let changed = app.put("/v1/orgs/acme/plan", &admin, plan(n)).await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.everything());
    }
    assert_eq!(app.metric("keyledger_commands_ahead_of_views").await, ViewsAhead::BOUND as f64);

    // One more: it is committed, but answers only once the views show it.
    let answered = {
        let command = app.put("/v1/orgs/acme/plan", &admin, plan(ViewsAhead::BOUND));
        tokio::pin!(command);
        let early = tokio::time::timeout(Duration::from_millis(500), &mut command).await;
        assert!(early.is_err(), "a command past the bound waits for the views");
        let (answered, caught_up) = tokio::join!(command, app.state.projector.catch_up());
        caught_up.expect("caught up");
        answered
    };
    assert_eq!(answered.status, StatusCode::OK, "{}", answered.everything());
    let status = app.get("/v1/orgs/acme", &admin).await.json();
    assert_eq!(status["plan"], plan(ViewsAhead::BOUND)["plan"], "{status}");
    app.finish().await;
}
