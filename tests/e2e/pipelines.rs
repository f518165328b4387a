//! The projector's pipelines read only the events they show: the Keyring views never read a
//! model call, the usage cockpit never a Keyring event. The organization directory lists both
//! kinds of organization, each kept by its own projection, whichever of them is rebuilt.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::keys;
use keyledger_api::Role;
use keyledger_domain::plan::PlanId;
use keyledger_domain::{KeyringCommand, OrgId};
use keyledger_infra::Actor;
use keyledger_projections::projector::BATCH;
use keyledger_projections::{Cursor, Selection};
use keyledger_store::event_store::{read_after_statement, GlobalOrder};
use keyledger_store::Arg;
use keyledger_tests::postgres::prepared_plan;
use keyledger_tests::{on_both_backends, Backend, TestApp};

fn orgs_of(page: &Value) -> Vec<String> {
    let orgs = page["orgs"].as_array().expect("orgs");
    orgs.iter().map(|o| o["org"].as_str().expect("org id").to_owned()).collect()
}

on_both_backends!(
    the_directory_keeps_organizations_known_only_from_usage_whichever_view_is_rebuilt
);

/// acme has a Keyring; globex only ever called on the platform's key, so only its usage says
/// it exists. The directory lists both after a rebuild of the Keyring directory alone, of the
/// usage cockpit alone, and of everything.
async fn the_directory_keeps_organizations_known_only_from_usage_whichever_view_is_rebuilt(
    backend: Backend,
) {
    let app = TestApp::start(backend).await;
    let admin = app.platform_admin();
    app.set_plan("acme", "pro").await;
    let key = json!({"provider": "openai", "key": keys::openai()});
    let stored = app.post("/v1/orgs/acme/keys", &app.owner("acme"), key).await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    let call = json!({"request_id": "g-1", "provider": "openai", "model": "gpt-4o-mini",
                      "input_tokens": 10, "output_tokens": 5});
    let worker = app.token("globex", Role::Service, "worker");
    let recorded = app.post("/v1/orgs/globex/usage", &worker, call).await;
    assert_eq!(recorded.status, StatusCode::CREATED, "{}", recorded.everything());

    let listed = app.get("/v1/orgs", &admin).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.everything());
    assert_eq!(orgs_of(&listed.json()), ["acme", "globex"]);
    for rebuilt in [Some("org_directory"), Some("usage"), None] {
        app.state.projector.rebuild(rebuilt).await.expect("a rebuild");
        let listed = app.get("/v1/orgs", &admin).await.json();
        assert_eq!(orgs_of(&listed), ["acme", "globex"], "after rebuilding {rebuilt:?}");
        assert_eq!(listed["orgs"][1]["calls_this_month"], 1, "after rebuilding {rebuilt:?}");
    }
    app.finish().await;
}

/// Changes acme's plan, straight through the Keyring (the views are stopped, so nothing waits
/// on them).
async fn change_plan(app: &TestApp, plan: &str) {
    let actor =
        Actor { sub: "owner".to_owned(), role: "owner".to_owned(), request_id: String::new() };
    let org = OrgId::parse("acme").expect("an organization id");
    let command = KeyringCommand::ChangePlan { plan: PlanId::new(plan) };
    app.state.keyrings.execute(&org, command, &actor).await.expect("the plan changed");
}

async fn write_calls(app: &TestApp, org: &str, count: usize) {
    app.write_calls_by_hand(&format!("{org}/2026-12"), count, |i| {
        json!({"org": org, "request_id": format!("{org}-{i}"), "provider": "openai", "model": "m",
               "input_tokens": 1, "output_tokens": 1, "cost_usd": 0.0, "key_source": "platform",
               "at": "2026-12-01T00:00:00Z"})
    })
    .await;
}

#[tokio::test]
async fn the_keyring_views_read_no_model_call_and_catch_up_past_any_number_of_them() {
    let app = TestApp::start(Backend::Postgres).await;
    app.stop_projecting();
    tokio::time::sleep(Duration::from_millis(200)).await;
    change_plan(&app, "pro").await;
    write_calls(&app, "acme", 5_000).await;
    change_plan(&app, "business").await;
    write_calls(&app, "globex", 5_000).await;

    // The Keyring views' pipeline ends at the last Keyring event, with calls after it that it
    // never reads: catching up must see that nothing of its own is left, not wait for them.
    let caught_up = tokio::time::timeout(Duration::from_secs(30), app.state.projector.catch_up())
        .await
        .expect("a catch-up that ends")
        .expect("caught up");
    assert!(caught_up >= 10_000, "the usage cockpit read every call: {caught_up}");
    let status = app.get("/v1/orgs/acme", &app.owner("acme")).await;
    assert_eq!(status.json()["plan"], "business", "{}", status.everything());
    let order = GlobalOrder::new(app.state.db.clone());
    let latest = |of: &'static str| {
        let order = order.clone();
        async move { order.latest_cursor_of_type(of).await.expect("read").expect("an event") }
    };
    let (keyring, usage) = (latest("Keyring").await, latest("UsageLedger").await);
    let checkpoints = app.state.projector.checkpoints().await.expect("checkpoints");
    for (name, at) in &checkpoints {
        let expected = if name == "usage" { usage } else { keyring };
        assert_eq!(*at, expected, "{name} stands at the last event it shows");
    }

    // Where each pipeline's read looks: only the partitions that can hold its events.
    let keyledger_store::Database::Postgres(pool) = &app.state.db else { unreachable!() };
    let mut connection = pool.acquire().await.expect("a connection");
    // Month partitions are named `events_YYYY_MM`; a month without one goes to the default.
    let reads: [(&[&str], &str, &[&str]); 2] = [
        (&["Keyring"], "events_main", &["events_usage_default", "events_2"]),
        (&["UsageLedger"], "events_usage_default", &["events_main"]),
    ];
    for (types, holds, not) in reads {
        let (sql, values) = first_read_of(types);
        let plan = prepared_plan(&mut connection, "", &sql, &values).await;
        assert!(plan.contains(holds), "{types:?} read from {holds}:\n{plan}");
        for other in not {
            assert!(!plan.contains(other), "{types:?} never read from {other}:\n{plan}");
        }
    }

    // The reads walk the index in order whatever the partition's statistics say. These calls
    // were never analyzed: planned freely, the read takes the whole partition and sorts it
    // (over 300,000 such events, 390 ms a batch where walking the index took 27).
    let (sql, values) = first_read_of(&["UsageLedger"]);
    let sorts = |plan: &str| plan.contains("Sort  (cost");
    let free = prepared_plan(&mut connection, "", &sql, &values).await;
    assert!(sorts(&free), "planned freely, the read sorts (or this proves nothing):\n{free}");
    for begun in
        [app.state.db.begin_reading_in_order().await, app.state.db.begin_projecting().await]
    {
        let keyledger_store::Tx::Postgres(mut tx) = begun.expect("begun") else { unreachable!() };
        let plan = prepared_plan(&mut tx, "", &sql, &values).await;
        assert!(!sorts(&plan), "a reader of the log never sorts it:\n{plan}");
        assert!(plan.contains("Index Scan"), "{plan}");
    }
    drop(connection);
    app.finish().await;
}

/// The statement of the first read of `types`' events, with its arguments as SQL literals.
fn first_read_of(types: &'static [&'static str]) -> (String, String) {
    let selection = Selection { events_of: types, json_of: types, without_metadata: false };
    let (sql, args) = read_after_statement(true, Cursor::default(), BATCH, selection);
    assert_eq!(args.len(), 3, "{sql}");
    let values = args
        .iter()
        .map(|arg| match arg {
            Arg::Int(n) => n.to_string(),
            _ => panic!("a read's arguments are numbers"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    (sql, values)
}
