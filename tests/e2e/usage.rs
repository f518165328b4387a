//! Recording model calls made elsewhere: priced, attributed to the right key, idempotent, and
//! never over the plan's platform-key quota, however many arrive at once.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::json;

use crate::keys;
use keyledger_api::Role;
use keyledger_tests::{on_both_backends, Backend, TestApp};

fn call(request_id: &str) -> serde_json::Value {
    json!({"request_id": request_id, "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 1_000_000, "output_tokens": 1_000_000})
}

on_both_backends!(a_call_is_priced_attributed_and_recorded_once_per_request_id);

async fn a_call_is_priced_attributed_and_recorded_once_per_request_id(backend: Backend) {
    let app = TestApp::start(backend).await;
    let service = app.token("acme", Role::Service, "worker");
    let first = app.post("/v1/orgs/acme/usage", &service, call("req-1")).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.everything());
    assert_eq!(
        first.json(),
        json!({"cost_usd": 0.75, "key_source": "platform"}),
        "gpt-4o-mini list price"
    );

    let again = app.post("/v1/orgs/acme/usage", &service, call("req-1")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json(), first.json(), "the first answer");
    let recorded =
        app.count("select count(*) from events where aggregate_type = 'UsageLedger'").await;
    assert_eq!(recorded, 1, "recorded once");

    app.set_plan("acme", "pro").await;
    app.post(
        "/v1/orgs/acme/keys",
        &app.owner("acme"),
        json!({"provider": "openai", "key": keys::openai()}),
    )
    .await;
    let byok = app.post("/v1/orgs/acme/usage", &service, call("req-2")).await;
    assert_eq!(byok.json()["key_source"], "byok", "the organization's active key paid");

    let everywhere = app.token("*", Role::Service, "gateway");
    assert_eq!(
        app.post("/v1/orgs/other/usage", &everywhere, call("req-3")).await.status,
        StatusCode::CREATED
    );
    let owner = app.post("/v1/orgs/acme/usage", &app.owner("acme"), call("req-4")).await;
    assert_eq!(owner.status, StatusCode::FORBIDDEN, "only services record usage");
    let unknown = app.post("/v1/orgs/acme/usage", &service, json!({"request_id": "r", "provider": "nope", "model": "m", "input_tokens": 1, "output_tokens": 1})).await;
    assert_eq!(unknown.code(), "unknown_provider");
    let missing = app
        .post("/v1/orgs/acme/usage", &service, json!({"request_id": "r", "provider": "openai"}))
        .await;
    assert_eq!(missing.code(), "invalid_request");
    app.finish().await;
}

pub(crate) fn plans_file(plans: serde_json::Value) -> String {
    let path = std::env::temp_dir().join(format!("keyledger-plans-{}.json", uuid::Uuid::new_v4()));
    let mut all: BTreeMap<String, serde_json::Value> =
        serde_json::from_value(plans).expect("plans");
    all.insert("starter".to_owned(), json!({"byok": false, "max_providers": null, "provider_order": false, "monthly_platform_queries": 2000, "monthly_platform_cost_cap_usd": 50.0}));
    std::fs::write(&path, serde_json::to_string(&all).expect("json")).expect("write plans");
    path.to_string_lossy().into_owned()
}

on_both_backends!(fifty_concurrent_platform_calls_never_exceed_the_quota);

async fn fifty_concurrent_platform_calls_never_exceed_the_quota(backend: Backend) {
    let plans = plans_file(
        json!({"tiny": {"byok": false, "max_providers": null, "provider_order": false, "monthly_platform_queries": 20, "monthly_platform_cost_cap_usd": 1000.0}}),
    );
    let app = Arc::new(TestApp::start_with(backend, &[("KEYLEDGER_PLANS_FILE", &plans)]).await);
    app.set_plan("acme", "tiny").await;
    let service = app.token("acme", Role::Service, "worker");
    let calls: Vec<_> = (0..50)
        .map(|n| {
            let (app, service) = (Arc::clone(&app), service.clone());
            tokio::spawn(async move {
                app.post("/v1/orgs/acme/usage", &service, call(&format!("race-{n}"))).await
            })
        })
        .collect();
    let mut statuses = BTreeMap::new();
    for call in calls {
        let response = call.await.expect("task");
        if response.status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(response.code(), "quota_exceeded");
        }
        *statuses.entry(response.status.as_u16()).or_insert(0) += 1;
    }
    assert_eq!(statuses, BTreeMap::from([(201, 20), (429, 30)]), "exactly the quota gets through");
    assert_eq!(
        app.count("select count(*) from events where aggregate_type = 'UsageLedger'").await,
        20
    );
    match Arc::try_unwrap(app) {
        Ok(app) => app.finish().await,
        Err(_) => panic!("tasks still hold the app"),
    }
}

on_both_backends!(platform_calls_stop_at_the_cost_cap);

async fn platform_calls_stop_at_the_cost_cap(backend: Backend) {
    let plans = plans_file(
        json!({"capped": {"byok": false, "max_providers": null, "provider_order": false, "monthly_platform_queries": 1000, "monthly_platform_cost_cap_usd": 1.0}}),
    );
    let app = TestApp::start_with(backend, &[("KEYLEDGER_PLANS_FILE", &plans)]).await;
    app.set_plan("acme", "capped").await;
    let service = app.token("acme", Role::Service, "worker");
    assert_eq!(
        app.post("/v1/orgs/acme/usage", &service, call("c-1")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        app.post("/v1/orgs/acme/usage", &service, call("c-2")).await.status,
        StatusCode::CREATED,
        "0.75 of 1.00 spent"
    );
    let over = app.post("/v1/orgs/acme/usage", &service, call("c-3")).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(over.code(), "cost_cap_reached");
    app.finish().await;
}

on_both_backends!(two_replicas_recording_at_once_never_exceed_the_quota_between_them);

async fn two_replicas_recording_at_once_never_exceed_the_quota_between_them(backend: Backend) {
    let plans = plans_file(
        json!({"tiny": {"byok": false, "max_providers": null, "provider_order": false, "monthly_platform_queries": 20, "monthly_platform_cost_cap_usd": 1000.0}}),
    );
    let first = Arc::new(TestApp::start_with(backend, &[("KEYLEDGER_PLANS_FILE", &plans)]).await);
    let second = Arc::new(first.replica().await);
    first.set_plan("acme", "tiny").await;
    let service = first.token("acme", Role::Service, "worker");
    // Each replica has recorded before, so each holds the ledger as it last saw it.
    for (app, id) in [(&first, "warm-1"), (&second, "warm-2")] {
        assert_eq!(
            app.post("/v1/orgs/acme/usage", &service, call(id)).await.status,
            StatusCode::CREATED
        );
    }
    let calls: Vec<_> = (0..40)
        .map(|n| {
            let (app, service) =
                (Arc::clone(if n % 2 == 0 { &first } else { &second }), service.clone());
            tokio::spawn(async move {
                app.post("/v1/orgs/acme/usage", &service, call(&format!("both-{n}"))).await.status
            })
        })
        .collect();
    let mut created = 0;
    for call in calls {
        if call.await.expect("task") == StatusCode::CREATED {
            created += 1;
        }
    }
    assert_eq!(created, 18, "20 in all, 2 of them before the race");
    assert_eq!(
        first.count("select count(*) from events where aggregate_type = 'UsageLedger'").await,
        20
    );
    drop(second);
    match Arc::try_unwrap(first) {
        Ok(app) => app.finish().await,
        Err(_) => panic!("tasks still hold the app"),
    }
}

on_both_backends!(a_recorded_call_is_in_every_usage_read_that_follows);

async fn a_recorded_call_is_in_every_usage_read_that_follows(backend: Backend) {
    let app = TestApp::start(backend).await;
    let service = app.token("*", Role::Service, "worker");
    let reader = app.token("*", Role::PlatformAdmin, "analyst");
    let today = chrono::Utc::now().date_naive();
    for n in 0..20 {
        let org = format!("ryw{n}");
        // Recording answers once committed, alone or in a batch; the reads wait for the views.
        let recorded = if n % 2 == 0 {
            app.post(&format!("/v1/orgs/{org}/usage"), &service, call("req")).await
        } else {
            let batch = json!({"calls": [call("req")]});
            app.post(&format!("/v1/orgs/{org}/usage/batch"), &service, batch).await
        };
        assert!(recorded.status.is_success(), "{}", recorded.everything());
        let totals = app.get(&format!("/v1/orgs/{org}/usage"), &reader).await.json();
        assert_eq!(totals["totals"]["calls"], 1, "{org}: the totals show the call at once");
        let calls = app.get(&format!("/v1/orgs/{org}/usage/calls"), &reader).await.json();
        assert_eq!(calls["calls"].as_array().map(Vec::len), Some(1), "{org}: so does the list");
        let listed = app.get(&format!("/v1/orgs?q={org}"), &reader).await.json();
        let summary = listed["orgs"]
            .as_array()
            .and_then(|orgs| orgs.iter().find(|o| o["org"] == org.as_str()));
        assert_eq!(
            summary.map(|o| o["calls_this_month"].clone()),
            Some(json!(1)),
            "{org}: and the organizations: {listed}"
        );
        let export = format!("/usage/export?from={today}&to={today}&format=ndjson");
        for path in [format!("/v1/orgs/{org}{export}"), format!("/v1{export}")] {
            let exported = app.get(&path, &reader).await;
            let body = String::from_utf8_lossy(&exported.body).into_owned();
            assert!(
                body.lines().any(|line| line.contains(&format!("\"{org}\""))),
                "{path}: {body}"
            );
        }
    }
    app.finish().await;
}

on_both_backends!(a_batch_is_recorded_once_with_the_quota_decided_call_by_call);

async fn a_batch_is_recorded_once_with_the_quota_decided_call_by_call(backend: Backend) {
    let plans = plans_file(
        json!({"tiny": {"byok": true, "max_providers": null, "provider_order": true, "monthly_platform_queries": 3, "monthly_platform_cost_cap_usd": 1000.0}}),
    );
    let app = TestApp::start_with(backend, &[("KEYLEDGER_PLANS_FILE", &plans)]).await;
    app.set_plan("acme", "tiny").await;
    let key = keys::anthropic();
    let stored = app
        .post(
            "/v1/orgs/acme/keys",
            &app.owner("acme"),
            json!({"provider": "anthropic", "key": key}),
        )
        .await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    let service = app.token("acme", Role::Service, "worker");
    // Five platform calls (OpenAI: no key of acme's) against a quota of three, and one BYOK
    // call (Anthropic), which no quota limits, last.
    let mut calls: Vec<serde_json::Value> = (1..=5).map(|n| call(&format!("p-{n}"))).collect();
    calls.push(json!({"request_id": "b-1", "provider": "anthropic", "model": "claude-3-5-haiku-latest", "input_tokens": 10, "output_tokens": 5}));
    let first = app.post("/v1/orgs/acme/usage/batch", &service, json!({"calls": calls})).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.everything());
    let body = first.json();
    assert_eq!(
        (body["recorded"].clone(), body["duplicates"].clone(), body["refused"].clone()),
        (json!(4), json!(0), json!(2))
    );
    let outcomes: Vec<(String, String)> = body["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .map(|c| {
            (
                c["request_id"].as_str().expect("id").to_owned(),
                c["outcome"].as_str().expect("o").to_owned(),
            )
        })
        .collect();
    let expected = [
        ("p-1", "recorded"),
        ("p-2", "recorded"),
        ("p-3", "recorded"),
        ("p-4", "refused"),
        ("p-5", "refused"),
        ("b-1", "recorded"),
    ];
    assert_eq!(
        outcomes,
        expected.map(|(a, b)| (a.to_owned(), b.to_owned())),
        "decided in the batch's order"
    );
    assert_eq!(body["calls"][3]["code"], "quota_exceeded");
    assert_eq!(body["calls"][5]["key_source"], "byok");
    assert_eq!(body["calls"][0]["key_source"], "platform");

    // Sent again: every recorded call is a duplicate, the refused ones are still refused, and
    // the usage read right after counts each call once.
    let again = app.post("/v1/orgs/acme/usage/batch", &service, json!({"calls": calls})).await;
    let again = again.json();
    assert_eq!(
        (again["recorded"].clone(), again["duplicates"].clone(), again["refused"].clone()),
        (json!(0), json!(4), json!(2))
    );
    let single = app.post("/v1/orgs/acme/usage", &service, call("p-2")).await;
    assert_eq!(
        single.status,
        StatusCode::OK,
        "a recorded call sent again is no refusal: {}",
        single.everything()
    );
    let usage = app.get("/v1/orgs/acme/usage?group_by=key_source", &app.owner("acme")).await.json();
    assert_eq!(usage["totals"]["calls"], 4, "{usage}");
    app.finish().await;
}

on_both_backends!(a_batch_with_one_bad_call_records_nothing_and_a_full_batch_fits);

async fn a_batch_with_one_bad_call_records_nothing_and_a_full_batch_fits(backend: Backend) {
    let app = TestApp::start(backend).await;
    let service = app.token("acme", Role::Service, "worker");
    let bad = json!({"calls": [call("ok-1"), {"request_id": "bad", "provider": "nope", "model": "m", "input_tokens": 1, "output_tokens": 1}]});
    let refused = app.post("/v1/orgs/acme/usage/batch", &service, bad).await;
    assert_eq!(
        (refused.status, refused.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "unknown_provider")
    );
    assert!(
        refused.json()["detail"].as_str().unwrap_or_default().starts_with("calls[1]"),
        "{}",
        refused.everything()
    );
    for empty in [
        json!({"calls": []}),
        json!({"calls": (0..1001).map(|n| call(&format!("x-{n}"))).collect::<Vec<_>>()}),
    ] {
        let answer = app.post("/v1/orgs/acme/usage/batch", &service, empty).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.everything());
    }
    let owner = app
        .post("/v1/orgs/acme/usage/batch", &app.owner("acme"), json!({"calls": [call("o")]}))
        .await;
    assert_eq!(owner.status, StatusCode::FORBIDDEN, "only services record usage");
    let usage = app.get("/v1/orgs/acme/usage", &app.owner("acme")).await.json();
    assert_eq!(usage["totals"]["calls"], 0, "nothing of a refused batch is recorded: {usage}");

    // A thousand calls with long ids and model names: well past the 64 KiB of other requests.
    let full: Vec<serde_json::Value> = (0..1000)
        .map(|n| json!({"request_id": format!("{n:0>150}"), "provider": "openai", "model": format!("gpt-4o-mini-{}", "x".repeat(100)), "input_tokens": 3, "output_tokens": 2}))
        .collect();
    let body = json!({"calls": full});
    assert!(body.to_string().len() > 256 * 1024);
    let answer = app.post("/v1/orgs/acme/usage/batch", &service, body).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&answer.body[..200.min(answer.body.len())])
    );
    assert_eq!(answer.json()["recorded"], 1000);
    let usage = app.get("/v1/orgs/acme/usage", &app.owner("acme")).await.json();
    assert_eq!(usage["totals"]["calls"], 1000, "read-your-writes for the whole batch");
    app.finish().await;
}

on_both_backends!(a_batch_is_stored_as_a_few_events_and_reads_back_call_by_call);

/// A batch's calls share events in the log (a hundred to an event), and nothing a reader sees
/// changes: each call is counted, listed and exported once, in order, and a request id sent
/// again is answered with the call stored inside a shared event.
async fn a_batch_is_stored_as_a_few_events_and_reads_back_call_by_call(backend: Backend) {
    let app = TestApp::start(backend).await;
    let service = app.token("acme", Role::Service, "worker");
    let owner = app.owner("acme");
    let priced = |id: String, tokens: u64| json!({"request_id": id, "provider": "openai", "model": "gpt-4o-mini", "input_tokens": tokens, "output_tokens": tokens});
    let calls: Vec<serde_json::Value> =
        (0..1000).map(|n| priced(format!("c-{n:04}"), 10_000)).collect();
    let first = app.post("/v1/orgs/acme/usage/batch", &service, json!({"calls": calls})).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.json()["recorded"], 1000, "{}", first.json()["refused"]);
    let events = "select count(*) from events where aggregate_type = 'UsageLedger'";
    let stored = app.count(events).await;
    assert!((10..=20).contains(&stored), "1,000 calls in {stored} events");
    assert_eq!(app.count("select count(*) from usage_requests where org = 'acme'").await, 1000);
    // A snapshot follows grouped calls: loading the ledger never replays thousands of calls.
    let last = "select max(sequence) from events where aggregate_type = 'UsageLedger'";
    let snapshot = "select max(last_sequence) from snapshots where aggregate_type = 'UsageLedger'";
    assert_eq!(app.count(snapshot).await, app.count(last).await, "snapshotted at its last event");

    // Ten calls sent again (with other figures) and ten new ones.
    let again: Vec<serde_json::Value> = (0..10)
        .map(|n| priced(format!("c-{:04}", n * 99), 1))
        .chain((0..10).map(|n| priced(format!("d-{n}"), 1)))
        .collect();
    let second = app.post("/v1/orgs/acme/usage/batch", &service, json!({"calls": again})).await;
    let second = second.json();
    assert_eq!((second["recorded"].clone(), second["duplicates"].clone()), (json!(10), json!(10)));
    let original_cost = first.json()["calls"][0]["cost_usd"].clone();
    assert!(original_cost.as_f64().unwrap_or_default() > 0.001, "{original_cost}");
    assert_eq!(second["calls"][0]["outcome"], "duplicate");
    assert_eq!(second["calls"][0]["cost_usd"], original_cost, "the first call's figures");

    let usage = app.get("/v1/orgs/acme/usage", &owner).await.json();
    assert_eq!(usage["totals"]["calls"], 1010, "{usage}");
    let recent = app.get("/v1/orgs/acme/usage/calls?limit=3", &owner).await.json();
    let newest: Vec<&str> = recent["calls"]
        .as_array()
        .expect("calls")
        .iter()
        .filter_map(|c| c["request_id"].as_str())
        .collect();
    assert_eq!(newest, ["d-9", "d-8", "d-7"], "newest first, within an event too");

    // The export pages a thousand calls at a time, through events whose calls share a position.
    let export = app.get("/v1/orgs/acme/usage/export?format=ndjson", &owner).await;
    assert_eq!(export.status, StatusCode::OK, "{}", export.everything());
    let exported: Vec<String> = String::from_utf8_lossy(&export.body)
        .lines()
        .map(|line| {
            let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            line["request_id"].as_str().expect("request id").to_owned()
        })
        .collect();
    let expected: Vec<String> =
        (0..1000).map(|n| format!("c-{n:04}")).chain((0..10).map(|n| format!("d-{n}"))).collect();
    let differs = exported.iter().zip(&expected).position(|(a, b)| a != b);
    assert_eq!(
        (exported.len(), differs),
        (expected.len(), None),
        "every call once, in log order; first out of place: {:?}",
        differs.map(|i| (&exported[i], &expected[i]))
    );
    app.finish().await;
}

on_both_backends!(batches_of_several_organizations_at_once_are_each_decided_in_their_order);

/// Batches of several organizations at once keep many calls waiting for the writer, which then
/// commits two batches side by side: each organization's calls are still decided in the order
/// sent, so exactly the first calls within its quota are recorded, and every call once.
async fn batches_of_several_organizations_at_once_are_each_decided_in_their_order(
    backend: Backend,
) {
    const ORGS: usize = 6;
    const CALLS: usize = 1000;
    const QUOTA: usize = 300;
    let plans = plans_file(
        json!({"tiny": {"byok": false, "max_providers": null, "provider_order": false, "monthly_platform_queries": QUOTA, "monthly_platform_cost_cap_usd": 1.0e9}}),
    );
    let app = Arc::new(TestApp::start_with(backend, &[("KEYLEDGER_PLANS_FILE", &plans)]).await);
    for org in 0..ORGS {
        app.set_plan(&format!("org{org}"), "tiny").await;
    }
    let sent: Vec<_> = (0..ORGS)
        .map(|org| {
            let app = Arc::clone(&app);
            let service = app.token(&format!("org{org}"), Role::Service, "worker");
            tokio::spawn(async move {
                let calls: Vec<_> = (0..CALLS).map(|n| call(&format!("o{org}-{n:04}"))).collect();
                let path = format!("/v1/orgs/org{org}/usage/batch");
                app.post(&path, &service, json!({"calls": calls})).await
            })
        })
        .collect();
    for (org, answer) in sent.into_iter().enumerate() {
        let answer = answer.await.expect("task");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.everything());
        let body = answer.json();
        assert_eq!(
            (body["recorded"].clone(), body["refused"].clone()),
            (json!(QUOTA), json!(CALLS - QUOTA))
        );
        let outcomes: Vec<&str> = body["calls"]
            .as_array()
            .expect("calls")
            .iter()
            .map(|c| c["outcome"].as_str().expect("outcome"))
            .collect();
        let recorded = outcomes.iter().take_while(|o| **o == "recorded").count();
        assert_eq!(recorded, QUOTA, "org{org}: the first calls within the quota, in order");
        let requests = format!("select count(*) from usage_requests where org = 'org{org}'");
        assert_eq!(app.count(&requests).await, QUOTA as i64);
    }
    match Arc::try_unwrap(app) {
        Ok(app) => app.finish().await,
        Err(_) => panic!("tasks still hold the app"),
    }
}
