//! The audit trail: an entry per key event, paged, hash-chained, and tamper-evident.

use axum::http::StatusCode;
use serde_json::json;

use crate::keys;
use keyledger_api::Role;
use keyledger_tests::{on_both_backends, Backend, TestApp};

/// An org with a short history: plan, store, rotate, verify, order, remove (six entries).
pub(crate) async fn history(app: &TestApp) {
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    let key = keys::anthropic();
    app.post(
        "/v1/orgs/acme/keys",
        &owner,
        json!({"provider": "anthropic", "key": keys::anthropic()}),
    )
    .await;
    app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": key})).await;
    app.send(axum::http::Method::POST, "/v1/orgs/acme/keys/anthropic/verify", Some(&owner), None)
        .await;
    app.put("/v1/orgs/acme/provider-order", &owner, json!({"providers": ["anthropic"]})).await;
    app.delete("/v1/orgs/acme/keys/anthropic", &owner).await;
}

on_both_backends!(every_key_event_has_an_audit_entry_with_actor_action_and_summary);

async fn every_key_event_has_an_audit_entry_with_actor_action_and_summary(backend: Backend) {
    let app = TestApp::start(backend).await;
    history(&app).await;
    let auditor = app.token("acme", Role::Auditor, "carol");
    let page = app.get("/v1/orgs/acme/audit", &auditor).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.everything());
    let entries = page.json()["entries"].as_array().cloned().expect("entries");
    let actions: Vec<&str> =
        entries.iter().map(|e| e["action"].as_str().unwrap_or_default()).collect();
    assert_eq!(
        actions,
        [
            "plan.changed",
            "key.stored",
            "key.rotated",
            "key.verification_failed",
            "provider_order.set",
            "key.removed"
        ]
    );
    assert_eq!(entries[1]["summary"], "AI key stored");
    assert_eq!(entries[1]["actor"], "alice");
    assert_eq!(entries[0]["actor"], "billing");
    assert_eq!(entries[1]["provider"], "anthropic");
    assert_eq!(entries[1]["prev_hash"], entries[0]["hash"]);
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap_or_default()).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);

    let first = app.get("/v1/orgs/acme/audit?limit=4", &auditor).await.json();
    assert_eq!(first["entries"].as_array().map(Vec::len), Some(4));
    assert_eq!(first["next"], 4);
    let rest = app.get("/v1/orgs/acme/audit?after=4&limit=4", &auditor).await.json();
    assert_eq!(rest["entries"][0]["seq"], 5);
    assert_eq!(rest["next"], json!(null));

    // Model calls of the organization (its usage ledger) and another organization's keys
    // around its history change nothing the trail or its verification says.
    let service = app.token("acme", Role::Service, "worker");
    for request in 0..3 {
        let call = json!({"request_id": format!("r-{request}"), "provider": "anthropic",
                          "model": "claude-sonnet-4-5", "input_tokens": 10, "output_tokens": 5});
        let recorded = app.post("/v1/orgs/acme/usage", &service, call).await;
        assert_eq!(recorded.status, StatusCode::CREATED, "{}", recorded.everything());
    }
    app.set_plan("globex", "pro").await;
    let verified = app.get("/v1/orgs/acme/audit/verify", &auditor).await.json();
    assert_eq!(
        verified,
        json!({"ok": true, "entries": 6, "head": entries[5]["hash"], "first_bad_seq": null})
    );
    let member = app.get("/v1/orgs/acme/audit", &app.token("acme", Role::Member, "m")).await;
    assert_eq!(member.status, StatusCode::FORBIDDEN, "members do not read the audit trail");
    app.finish().await;
}

async fn auditor_verify(app: &TestApp) -> serde_json::Value {
    let token = app.token("acme", Role::Auditor, "carol");
    app.get("/v1/orgs/acme/audit/verify", &token).await.json()
}

on_both_backends!(tampering_with_the_audit_table_is_detected_at_the_first_bad_seq);

async fn tampering_with_the_audit_table_is_detected_at_the_first_bad_seq(backend: Backend) {
    let tamperings: [(&str, &[&str], i64); 4] = [
        ("edited", &["update audit_log set summary = 'nothing to see' where org_id = 'acme' and seq = 3"], 3),
        ("deleted", &["delete from audit_log where org_id = 'acme' and seq = 4"], 4),
        (
            "inserted",
            &["insert into audit_log (org_id, seq, at, actor, action, summary, provider, details, prev_hash, hash, position) \
               select org_id, 7, at, actor, action, summary, provider, details, hash, hash, position from audit_log \
               where org_id = 'acme' and seq = 6"],
            7,
        ),
        (
            "reordered",
            &[
                "update audit_log set seq = -2 where org_id = 'acme' and seq = 2",
                "update audit_log set seq = 2 where org_id = 'acme' and seq = 3",
                "update audit_log set seq = 3 where org_id = 'acme' and seq = -2",
            ],
            2,
        ),
    ];
    for (how, statements, bad) in tamperings {
        let app = TestApp::start(backend).await;
        history(&app).await;
        assert_eq!(auditor_verify(&app).await["ok"], true);
        for sql in statements {
            app.execute_sql(sql).await;
        }
        let report = auditor_verify(&app).await;
        assert_eq!(report["ok"], false, "{how} entry went unnoticed: {report}");
        assert_eq!(report["first_bad_seq"], bad, "{how}: {report}");
        app.finish().await;
    }
}

on_both_backends!(the_event_history_streams_as_ndjson_with_positions_and_no_secret);

async fn the_event_history_streams_as_ndjson_with_positions_and_no_secret(backend: Backend) {
    let app = TestApp::start(backend).await;
    app.set_plan("acme", "pro").await;
    app.set_plan("other", "pro").await;
    let key = keys::anthropic();
    app.post(
        "/v1/orgs/acme/keys",
        &app.owner("acme"),
        json!({"provider": "anthropic", "key": key}),
    )
    .await;
    let auditor = app.token("acme", Role::Auditor, "carol");
    let response = app.get("/v1/orgs/acme/events", &auditor).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.headers["content-type"], "application/x-ndjson");
    let text = String::from_utf8(response.body.clone()).expect("utf-8");
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert_eq!(lines.len(), 2, "acme's two events only: {text}");
    assert_eq!(lines[0]["event_type"], "PlanChanged");
    assert_eq!(lines[1]["event_type"], "KeyStored");
    assert_eq!(lines[1]["sequence"], 2);
    assert_eq!(lines[1]["metadata"]["actor"], "alice");
    assert!(lines[1]["payload"]["KeyStored"]["masked"].is_string());
    assert!(lines[0]["position"].as_i64() < lines[1]["position"].as_i64());
    assert!(!text.contains(&key[10..]), "no key material in the history");

    let after = lines[0]["position"].as_i64().expect("position");
    let rest = app.get(&format!("/v1/orgs/acme/events?after={after}"), &auditor).await;
    assert_eq!(String::from_utf8_lossy(&rest.body).lines().count(), 1);
    app.finish().await;
}

on_both_backends!(trails_of_organizations_projected_in_one_batch_each_chain_on_their_own);

/// Organizations whose events the projector applies in one batch (here a rebuild, which reads
/// the whole log at once) each get their own chain: every trail verifies, and the rows are
/// those the running projector wrote one command at a time.
async fn trails_of_organizations_projected_in_one_batch_each_chain_on_their_own(backend: Backend) {
    let app = TestApp::start(backend).await;
    let orgs = ["acme", "globex", "initech"];
    for org in orgs {
        app.set_plan(org, "pro").await;
    }
    for round in 0..3 {
        for org in orgs {
            let owner = app.owner(org);
            let key = json!({"provider": "anthropic", "key": keys::anthropic()});
            if round == 0 {
                app.post(&format!("/v1/orgs/{org}/keys"), &owner, key).await;
            } else {
                app.put(
                    &format!("/v1/orgs/{org}/keys/anthropic"),
                    &owner,
                    json!({"key": keys::anthropic()}),
                )
                .await;
            }
        }
    }
    app.keyring_views_settled().await;
    let trail = "select org_id || ' ' || seq || ' ' || prev_hash || ' ' || hash from audit_log \
                 order by org_id, seq";
    let before = app.texts(trail).await;
    // The trails' Merkle trees too: every complete subtree, as the commands left them.
    let tree = "select org_id || ' ' || level || ' ' || idx || ' ' || hash from audit_tree \
                order by org_id, level, idx";
    let tree_before = app.texts(tree).await;
    assert!(tree_before.len() >= 2 * before.len() - orgs.len(), "{tree_before:?}");
    app.state.projector.rebuild(Some("audit")).await.expect("rebuild");
    assert_eq!(app.texts(trail).await, before, "the same chains, batch or not");
    assert_eq!(app.texts(tree).await, tree_before, "the same trees, batch or not");
    for org in orgs {
        let entries = before.iter().filter(|row| row.starts_with(&format!("{org} "))).count();
        assert!(entries >= 3, "{org}: an entry for each key event at least");
        let auditor = app.token(org, Role::Auditor, "carol");
        let verified = app.get(&format!("/v1/orgs/{org}/audit/verify"), &auditor).await;
        assert_eq!(verified.json()["ok"], true, "{org}: {}", verified.everything());
        assert_eq!(verified.json()["entries"], entries, "{org}");
    }
    app.finish().await;
}
