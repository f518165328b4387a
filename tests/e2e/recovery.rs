//! The database going away and coming back (a PostgreSQL restart, seen through a proxy the
//! test cuts, and every session terminated by the server): keyledger answers 503 while it cannot reach its store, serves again without a
//! restart once it can, loses no command it acknowledged and no call it answered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::json;
use sqlx::Connection as _;
use tokio::time::Instant;

use crate::gateway::{call, claude, held_stream};
use keyledger_api::Role;
use keyledger_tests::{StoreProxy, TestApp, TestResponse};

/// Model calls the log holds for `org` (each claims its request id in the transaction that
/// writes its event).
async fn recorded_calls(app: &TestApp, org: &str) -> i64 {
    app.count(&format!("select count(*) from usage_requests where org = '{org}'")).await
}

/// Rotations the log holds for `org`.
async fn rotations(app: &TestApp, org: &str) -> i64 {
    app.count(&format!(
        "select count(*) from events where aggregate_type = 'Keyring' and aggregate_id = '{org}' \
         and payload::text like '%\"KeyRotated\"%'"
    ))
    .await
}

/// Waits until `listeners` sessions of the app's database listen for commits (one a projector
/// pipeline, one the Keyring watch's), as the server tells it.
async fn listen_within(app: &TestApp, listeners: i64, patience: Duration) {
    let deadline = Instant::now() + patience;
    let mut server = sqlx::PgConnection::connect(&keyledger_tests::postgres::server_url())
        .await
        .expect("connect to the server");
    loop {
        let listening: i64 = sqlx::query_scalar(
            "select count(*) from pg_stat_activity where datname = $1 and query like 'LISTEN %'",
        )
        .bind(database_of(app))
        .fetch_one(&mut server)
        .await
        .expect("count listening sessions");
        if listening == listeners {
            return;
        }
        assert!(Instant::now() < deadline, "{listening} sessions listen, not {listeners}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn database_of(app: &TestApp) -> &str {
    app.database_url.rsplit_once('/').expect("a database name").1
}

async fn rotate(app: &TestApp, org: &str) -> TestResponse {
    let key = crate::keys::anthropic();
    app.provider.accept(&key);
    app.put(&format!("/v1/orgs/{org}/keys/anthropic"), &app.owner(org), json!({"key": key})).await
}

/// An answer given while the database is away: a 503 problem that says so, and when to retry.
fn assert_unavailable(what: &str, answer: &TestResponse) {
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{what}: {}", answer.everything());
    assert_eq!(answer.code(), "store_unavailable", "{what}: {}", answer.everything());
    assert_eq!(
        answer.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/problem+json"[..]),
        "{what}"
    );
    assert!(answer.headers.contains_key("retry-after"), "{what}: {}", answer.everything());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_away_requests_get_503_and_service_resumes_without_a_restart() {
    away_and_back("async").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sync_durability_a_call_answered_while_the_database_is_away_is_still_recorded() {
    away_and_back("sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_server_refused_connections_the_projector_listens_again() {
    let app = TestApp::start(keyledger_tests::Backend::Postgres).await;
    listen_within(&app, 3, Duration::from_secs(10)).await;
    let database = database_of(&app);
    let mut admin = sqlx::PgConnection::connect(&keyledger_tests::postgres::server_url())
        .await
        .expect("connect to the server");

    // The server turns every session of the database away at once, and refuses new ones with
    // an error of its own (no waiting for a timeout): each listener's reconnect fails.
    for sql in [
        format!("alter database {database} allow_connections false"),
        format!(
            "select pg_terminate_backend(pid) from pg_stat_activity where datname = '{database}'"
        ),
    ] {
        sqlx::query(&sql).execute(&mut admin).await.expect("turn sessions away");
    }
    listen_within(&app, 0, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    sqlx::query(&format!("alter database {database} allow_connections true"))
        .execute(&mut admin)
        .await
        .expect("allow connections again");

    listen_within(&app, 3, Duration::from_secs(10)).await;
    app.finish().await;
}

async fn away_and_back(durability: &str) {
    let proxy = StoreProxy::start().await;
    let app = TestApp::start_behind(&proxy, &[("KEYLEDGER_USAGE_DURABILITY", durability)]).await;
    crate::keys::store_accepted(&app, &["anthropic"]).await;

    // A streamed call under way when the database goes: its answer needs no database, its
    // record will have to wait for one.
    let held = held_stream(&app).await;
    // The projector's two pipelines on PostgreSQL (Keyrings, usage) and the Keyring watch.
    let listeners = 3;
    listen_within(&app, listeners, Duration::from_secs(10)).await;

    proxy.cut();
    app.provider.release();
    held.collect().await.expect("the answer ends whole while the database is away");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // (With sync durability the answer's end waited for the commit, which failed: the record
    // went to the writer's held commands rather than being dropped.)
    assert_eq!(
        app.metric("keyledger_usage_backlog").await,
        1.0,
        "the answered call's record is held, not dropped"
    );

    // Cached Keyrings are trusted only while this replica hears its own beats.
    let deadline = Instant::now() + Duration::from_secs(10);
    while app.metric("keyledger_keyring_cache_trusted").await != 0.0 {
        assert!(Instant::now() < deadline, "the cache stays trusted with the database away");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls_before = app.provider.model_calls().len();
    let (owner, service) = (app.owner("acme"), app.token("acme", Role::Service, "worker"));
    let (read, rotated, usage, model_call, ready) = tokio::join!(
        app.get("/v1/orgs/acme/keys", &owner),
        rotate(&app, "acme"),
        app.post(
            "/v1/orgs/acme/usage",
            &service,
            json!({"provider": "anthropic", "model": "claude-3-5-haiku-latest",
                   "input_tokens": 10, "output_tokens": 5, "request_id": "while-away"}),
        ),
        call(&app, "anthropic", "v1/messages", claude()),
        app.send(Method::GET, "/readyz", None, None),
    );
    assert_unavailable("a read of the keys", &read);
    assert_unavailable("a rotation", &rotated);
    assert_unavailable("a usage record", &usage);
    assert_unavailable("a model call", &model_call);
    assert_eq!(app.provider.model_calls().len(), calls_before, "no call went out unrecorded");
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{}", ready.everything());

    proxy.restore().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut read = app.get("/v1/orgs/acme/keys", &owner).await;
    while read.status != StatusCode::OK {
        assert!(Instant::now() < deadline, "still not serving: {}", read.everything());
        tokio::time::sleep(Duration::from_millis(100)).await;
        read = app.get("/v1/orgs/acme/keys", &owner).await;
    }
    assert_eq!(read.json()["keys"][0]["version"], 1, "the refused rotation changed nothing");
    let rotated = rotate(&app, "acme").await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.described());
    assert_eq!(rotated.json()["version"], 2);
    let made = call(&app, "anthropic", "v1/messages", claude()).await;
    assert_eq!(made.status, StatusCode::OK, "{}", made.described());

    assert!(app.usage_settled(Duration::from_secs(15)).await, "the held record is written");
    assert_eq!(recorded_calls(&app, "acme").await, 2, "the held call and the call after");
    assert_eq!(rotations(&app, "acme").await, 1);
    let ready = app.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.everything());
    // Every listener that broke with the connection listens again: other replicas' commits
    // wake this one's projector at once, not at its next poll.
    listen_within(&app, listeners, Duration::from_secs(10)).await;
    app.finish().await;
}

/// What one worker of the load saw.
#[derive(Debug, Default)]
struct Seen {
    /// Answers by status and code.
    answers: HashMap<(u16, String), usize>,
    /// Versions of the rotations acknowledged, by organization.
    acknowledged: HashMap<String, Vec<u64>>,
    /// Model calls answered 200.
    answered_calls: usize,
    /// Successes after the database came back.
    after_restore: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_under_load_loses_no_acknowledged_command_and_no_answered_call() {
    let proxy = StoreProxy::start().await;
    let app = Arc::new(TestApp::start_behind(&proxy, &[]).await);
    crate::keys::store_accepted(&app, &["anthropic"]).await;
    let orgs = ["beta", "gamma", "delta"];
    for org in orgs {
        crate::keys::store_accepted_for(&app, org, &["anthropic"]).await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let restored = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut workers = Vec::new();
    // One rotating worker per organization (no two commands race on one), and model calls on
    // acme, whose key the rotations never touch.
    for org in orgs {
        let (app, stop, restored, seen) =
            (Arc::clone(&app), Arc::clone(&stop), Arc::clone(&restored), Arc::clone(&seen));
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let answer = rotate(&app, org).await;
                let mut seen = seen.lock().expect("seen");
                *seen.answers.entry((answer.status.as_u16(), answer.code())).or_default() += 1;
                if answer.status == StatusCode::OK {
                    let version = answer.json()["version"].as_u64().expect("a version");
                    seen.acknowledged.entry(org.to_owned()).or_default().push(version);
                    if restored.load(Ordering::Acquire) {
                        seen.after_restore += 1;
                    }
                }
            }
        }));
    }
    for _ in 0..3 {
        let (app, stop, restored, seen) =
            (Arc::clone(&app), Arc::clone(&stop), Arc::clone(&restored), Arc::clone(&seen));
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let answer = call(&app, "anthropic", "v1/messages", claude()).await;
                let mut seen = seen.lock().expect("seen");
                *seen.answers.entry((answer.status.as_u16(), answer.code())).or_default() += 1;
                if answer.status == StatusCode::OK {
                    seen.answered_calls += 1;
                    if restored.load(Ordering::Acquire) {
                        seen.after_restore += 1;
                    }
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let held_while_away = app.metric("keyledger_usage_backlog").await;
    proxy.restore().await;
    restored.store(true, Ordering::Release);
    let recovered = |count: usize| {
        let seen = Arc::clone(&seen);
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while seen.lock().expect("seen").after_restore < count {
                assert!(Instant::now() < deadline, "no recovery: {:?}", seen.lock().expect("seen"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    recovered(20).await;
    // The other way a server drops its sessions: every connection to the database terminated
    // from inside (the pool's, the projector's, the replica watch's, the usage writer's).
    app.execute_sql(
        "select pg_terminate_backend(pid) from pg_stat_activity \
         where datname = current_database() and pid <> pg_backend_pid()",
    )
    .await;
    recovered(60).await;
    stop.store(true, Ordering::Release);
    for worker in workers {
        worker.await.expect("worker");
    }
    assert!(app.usage_settled(Duration::from_secs(15)).await, "every record is written");

    let seen = std::mem::take(&mut *seen.lock().expect("seen"));
    for (status, code) in seen.answers.keys() {
        let fine = *status == 200 || (*status == 503 && code == "store_unavailable");
        assert!(fine, "answered {status} {code}: {:?}", seen.answers);
    }
    let unavailable = seen.answers.get(&(503, "store_unavailable".to_owned())).copied();
    assert!(unavailable.unwrap_or(0) > 0, "the outage was noticed: {:?}", seen.answers);

    for org in orgs {
        let acknowledged = seen.acknowledged.get(org).cloned().unwrap_or_default();
        let in_log = rotations(&app, org).await;
        let last = acknowledged.iter().max().copied().unwrap_or(1);
        // A rotation answered 503 may still have committed (its answer was lost with the
        // connection), never the other way round.
        assert!(
            in_log >= acknowledged.len() as i64,
            "{org}: {in_log} in the log, {acknowledged:?}"
        );
        assert!(last <= 1 + in_log as u64, "{org}: acknowledged v{last}, {in_log} in the log");
        // A rotation whose answer was lost had nobody waiting for its view: the view catches
        // up on its own.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let view = app.get(&format!("/v1/orgs/{org}/keys/anthropic"), &app.owner(org)).await;
            if view.json()["version"] == 1 + in_log {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{org}: {in_log} rotations, the view shows {}",
                view.everything()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let made = app.provider.model_calls().len() as i64;
    let answered = seen.answered_calls as i64;
    assert_eq!(made, answered, "every call made was answered");
    assert_eq!(recorded_calls(&app, "acme").await, answered, "every answered call is recorded");
    eprintln!(
        "recovery under load: {:?}; {held_while_away} records held while the database was away",
        seen.answers
    );
    match Arc::try_unwrap(app) {
        Ok(app) => app.finish().await,
        Err(_) => panic!("workers still hold the app"),
    }
}
