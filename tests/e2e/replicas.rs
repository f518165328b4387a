//! Replicas on one PostgreSQL: each uses its cached Keyrings without asking the log on every
//! call, and still no call anywhere uses a key once its rotation or removal has returned.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::json;

use crate::gateway::{call, claude};
use crate::keys;
use keyledger_tests::{Backend, TestApp};

/// Waits until `app`'s model calls use its cache without asking the log.
async fn trusting(app: &TestApp) {
    for _ in 0..100 {
        if app.metric("keyledger_keyring_cache_trusted").await == 1.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replica never came to trust its cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_that_trust_their_caches_never_call_with_a_replaced_key() {
    let app = TestApp::start(Backend::Postgres).await;
    let other = app.replica().await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    let mut key = keys::anthropic();
    app.provider.accept(&key);
    app.post("/v1/orgs/acme/keys", &owner, json!({"provider": "anthropic", "key": key})).await;
    trusting(&app).await;
    trusting(&other).await;
    for round in 0..5 {
        // The other replica holds the current key in its cache...
        assert_eq!(call(&other, "anthropic", "v1/messages", claude()).await.status, StatusCode::OK);
        assert_eq!(app.provider.seen().pop().expect("called")["x-api-key"], key.as_str());
        // ...and the rotation returns only once it has let go of it.
        key = keys::anthropic();
        app.provider.accept(&key);
        let rotated = app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": key})).await;
        assert_eq!(rotated.status, StatusCode::OK);
        call(&other, "anthropic", "v1/messages", claude()).await;
        assert_eq!(
            app.provider.seen().pop().expect("called")["x-api-key"],
            key.as_str(),
            "round {round}: the other replica's next call carried the new key"
        );
    }
    app.delete("/v1/orgs/acme/keys/anthropic", &owner).await;
    assert_eq!(call(&other, "anthropic", "v1/messages", claude()).await.code(), "no_key_available");
    assert_eq!(
        other.metric("keyledger_keyring_cache_trusted").await,
        1.0,
        "the calls above were served from the cache"
    );
    drop(other);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_waits_for_a_silent_replica_until_its_cache_could_no_longer_be_trusted() {
    let app = TestApp::start(Backend::Postgres).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    trusting(&app).await;
    app.execute_sql(
        "insert into keyledger_replicas (id, expires_at) values ('gone', now() - interval '1 minute')",
    )
    .await;
    let started = Instant::now();
    let stored = app
        .post(
            "/v1/orgs/acme/keys",
            &owner,
            json!({"provider": "anthropic", "key": keys::anthropic()}),
        )
        .await;
    assert_eq!(stored.status, StatusCode::CREATED);
    assert!(started.elapsed() < Duration::from_secs(1), "a lease long lapsed is not waited for");

    // A replica that renewed its lease but hears nothing: the change waits until any cache it
    // could still trust would be out of date by its own lease (3 s after the commit).
    app.execute_sql(
        "insert into keyledger_replicas (id, expires_at) values ('deaf', now() + interval '2 seconds')",
    )
    .await;
    let started = Instant::now();
    let rotated =
        app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": keys::anthropic()})).await;
    assert_eq!(rotated.status, StatusCode::OK);
    let waited = started.elapsed();
    assert!(
        (Duration::from_millis(2_900)..Duration::from_secs(5)).contains(&waited),
        "waited {waited:?} for the deaf replica"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_hearing_the_log_asks_it_on_every_call_until_it_hears_again() {
    let app = TestApp::start(Backend::Postgres).await;
    let other = app.replica().await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    let (first, second) = (keys::anthropic(), keys::anthropic());
    app.provider.accept(&first);
    app.provider.accept(&second);
    app.post("/v1/orgs/acme/keys", &owner, json!({"provider": "anthropic", "key": first})).await;
    trusting(&other).await;
    call(&other, "anthropic", "v1/messages", claude()).await;

    // Cut every replica's listening connection.
    let cut = app
        .count(
            "select count(pg_terminate_backend(pid)) from pg_stat_activity \
             where datname = current_database() and query ilike 'listen%keyledger_watch%'",
        )
        .await;
    assert_eq!(cut, 2, "one listener a replica");
    // Whatever the replicas heard or missed meanwhile, the change reaches the next call.
    let rotated = app.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": second})).await;
    assert_eq!(rotated.status, StatusCode::OK);
    call(&other, "anthropic", "v1/messages", claude()).await;
    assert_eq!(app.provider.seen().pop().expect("called")["x-api-key"], second.as_str());

    trusting(&other).await;
    assert_eq!(call(&other, "anthropic", "v1/messages", claude()).await.status, StatusCode::OK);
    assert_eq!(app.provider.seen().pop().expect("called")["x-api-key"], second.as_str());
    drop(other);
    app.finish().await;
}

/// A replica decides its next command on an organization on the Keyring as its own last command
/// there left it, without loading it; a change another replica committed in between is heard
/// before that change returns, so the next command here decides on it: no conflict, no version
/// taken twice, and a key removed elsewhere can be stored here again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_on_alternating_replicas_each_decide_on_the_other_replicas_changes() {
    let app = TestApp::start(Backend::Postgres).await;
    let other = app.replica().await;
    trusting(&app).await;
    trusting(&other).await;
    app.set_plan("acme", "pro").await;
    let owner = app.owner("acme");
    let key = keys::anthropic();
    app.provider.accept(&key);
    let stored =
        app.post("/v1/orgs/acme/keys", &owner, json!({"provider": "anthropic", "key": key})).await;
    assert_eq!(stored.status, StatusCode::CREATED, "{}", stored.everything());
    let mut version = 1;
    for round in 0..6 {
        let replica = if round % 2 == 0 { &other } else { &app };
        for _ in 0..2 {
            let key = keys::anthropic();
            app.provider.accept(&key);
            let rotated =
                replica.put("/v1/orgs/acme/keys/anthropic", &owner, json!({"key": key})).await;
            assert_eq!(rotated.status, StatusCode::OK, "round {round}: {}", rotated.everything());
            version += 1;
            assert_eq!(rotated.json()["version"].as_u64(), Some(version), "round {round}");
        }
    }
    let removed = other.delete("/v1/orgs/acme/keys/anthropic", &owner).await;
    assert!(removed.status.is_success(), "{}", removed.everything());
    let key = keys::anthropic();
    app.provider.accept(&key);
    let again =
        app.post("/v1/orgs/acme/keys", &owner, json!({"provider": "anthropic", "key": key})).await;
    assert_eq!(again.status, StatusCode::CREATED, "stored again: {}", again.everything());

    for replica in [&app, &other] {
        let kept = replica.metric("keyledger_keyring_commands_on_kept_state_total").await;
        assert!(
            kept >= 3.0,
            "the second rotation of each turn was decided on a kept state: {kept}"
        );
    }
    drop(other);
    app.finish().await;
}

/// A commit of commands announces the sequence it committed right before the notification every
/// version of keyledger knows, in the same transaction: a replica of this version keeps the
/// state its own command left, and one of an older version (which knows only `keyring:<org>`)
/// still drops the organization's cached Keyring, during a rolling upgrade too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commands_commit_announces_its_sequence_before_the_notification_every_version_knows() {
    let app = TestApp::start(Backend::Postgres).await;
    let url = app.setting("DATABASE_URL").expect("the database");
    let mut listener = sqlx::postgres::PgListener::connect(url).await.expect("connect");
    listener.listen("keyledger_watch").await.expect("listen");
    app.set_plan("acme", "pro").await;
    app.set_plan("globex", "pro").await;
    let key = keys::anthropic();
    app.provider.accept(&key);
    let owner = app.owner("acme");
    app.post("/v1/orgs/acme/keys", &owner, json!({"provider": "anthropic", "key": key})).await;

    let mut said = Vec::new();
    while said.len() < 6 {
        let heard = tokio::time::timeout(Duration::from_secs(5), listener.recv()).await;
        let notification = heard.expect("notified in time").expect("heard");
        if notification.payload().starts_with("keyring") {
            said.push(notification.payload().to_owned());
        }
    }
    let mut last = HashMap::new();
    for pair in said.chunks(2) {
        let (org, plain) = pair[1].split_once(':').map(|(k, o)| (o, k)).expect("kind:org");
        assert_eq!(plain, "keyring", "the plain notification second: {said:?}");
        let announced = pair[0].strip_prefix("keyring@").expect("announced first");
        let (sequence, announced_org) = announced.split_once(':').expect("sequence:org");
        assert_eq!(announced_org, org, "{said:?}");
        let sequence: u64 = sequence.parse().expect("a sequence");
        assert!(last.insert(org.to_owned(), sequence).is_none_or(|before| before < sequence));
    }
    assert_eq!(last.len(), 2, "both organizations: {said:?}");
    app.finish().await;
}
