//! Concurrent commands on one organization: optimistic concurrency never lets two win the same
//! version.

use std::collections::BTreeSet;

use axum::http::StatusCode;
use serde_json::json;

use crate::keys;
use keyledger_tests::{on_both_backends, Backend, TestApp};

on_both_backends!(concurrent_rotations_never_both_win_the_same_version);

async fn concurrent_rotations_never_both_win_the_same_version(backend: Backend) {
    let app = std::sync::Arc::new(TestApp::start(backend).await);
    keys::store_accepted(&app, &["anthropic"]).await;
    let owner = app.owner("acme");

    let rotations: Vec<_> = (0..8)
        .map(|_| {
            let (app, owner) = (std::sync::Arc::clone(&app), owner.clone());
            tokio::spawn(async move {
                app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": keys::anthropic()}))
                    .await
            })
        })
        .collect();
    let mut versions = BTreeSet::new();
    let mut conflicts = 0;
    for rotation in rotations {
        let response = rotation.await.expect("task");
        match response.status {
            StatusCode::OK => {
                let version = response.json()["version"].as_u64().expect("version");
                assert!(versions.insert(version), "two rotations both won version {version}");
            }
            StatusCode::CONFLICT => {
                assert_eq!(response.code(), "conflict");
                conflicts += 1;
            }
            other => {
                let causes: Vec<String> = keyledger_tests::captured()
                    .lines()
                    .filter(|l| l.contains("cause"))
                    .map(str::to_owned)
                    .collect();
                panic!("unexpected {other}: {}\n{causes:#?}", response.everything())
            }
        }
    }
    assert!(!versions.is_empty());
    let current = app.get("/v1/orgs/acme/keys/anthropic", &owner).await.json()["version"]
        .as_u64()
        .expect("version");
    assert_eq!(current, 1 + versions.len() as u64, "every winner is a version; {conflicts} lost");
    assert_eq!(versions.last().copied(), Some(current));
    assert_eq!(
        app.count("select count(*) from key_material").await,
        1,
        "losers' material was destroyed"
    );
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.finish().await,
        Err(_) => panic!("tasks still hold the app"),
    }
}

on_both_backends!(a_rotation_whose_caller_goes_away_still_runs_to_its_end);

/// The caller hangs up while the provider checks the new key: the rotation still commits, the
/// old version is still shredded, and the views still show it.
async fn a_rotation_whose_caller_goes_away_still_runs_to_its_end(backend: Backend) {
    let app = TestApp::start(backend).await;
    keys::store_accepted(&app, &["anthropic"]).await;
    let owner = app.owner("acme");
    let rotated = keys::anthropic();
    app.provider.accept(&rotated);
    app.provider
        .delay(keyledger_domain::ProviderId::Anthropic, std::time::Duration::from_millis(800));
    let request = axum::http::Request::put("/v1/orgs/acme/keys/anthropic")
        .header("authorization", format!("Bearer {owner}"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(json!({"key": rotated, "verify": true}).to_string()))
        .expect("request");
    let hung_up = tokio::time::timeout(
        std::time::Duration::from_millis(200),
        tower::ServiceExt::oneshot(app.router.clone(), request),
    )
    .await;
    assert!(hung_up.is_err(), "the caller left before the answer");
    let mut version = serde_json::Value::Null;
    for _ in 0..100 {
        version = app.get("/v1/orgs/acme/keys/anthropic", &owner).await.json()["version"].clone();
        if version == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(version, 2, "the rotation committed and the views show it");
    assert_eq!(app.count("select count(*) from key_material").await, 1, "version 1 was shredded");
    app.finish().await;
}
