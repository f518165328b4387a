//! Real `keyledger` processes on a shared database: crash recovery of the projector, rebuilds,
//! two replicas sharing the projections, and the audit CLI.

mod harness;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use harness::{Db, Server, Setup};

/// Writes `count` usage events for `org` straight into the log, in one transaction: they
/// become visible at once, leaving the projector several batches of work.
async fn write_usage_burst(db: &mut Db, org: &str, count: usize) {
    db.execute("begin").await;
    for start in (0..count).step_by(1_000) {
        let rows: Vec<String> = (start..(start + 1_000).min(count))
            .map(|i| {
                let payload = json!({"ModelCallRecorded": {
                    "org": org, "request_id": format!("burst-{i}"), "provider": "openai", "model": format!("m{}", i % 7),
                    "input_tokens": 10 + i % 5, "output_tokens": 3, "cost_usd": 0.0001, "key_source": "platform",
                    "key_version": null, "at": format!("2026-11-{:02}T10:00:00Z", 1 + i % 20)}});
                let metadata = json!({"actor": "burst", "role": "service", "request_id": "", "occurred_at": "2026-11-20T10:00:00Z"});
                let cast = if matches!(db, Db::Postgres(_)) { "::json" } else { "" };
                format!("('UsageLedger', '{org}/2026-11', {}, 'ModelCallRecorded', '1.0', '{payload}'{cast}, '{metadata}'{cast})", i + 1)
            })
            .collect();
        db.execute(&format!(
            "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) values {}",
            rows.join(", ")
        ))
        .await;
    }
    db.execute("commit").await;
}

async fn projector_survives_sigkill_mid_burst_and_matches_a_rebuild(postgres: bool) {
    let setup = Setup::new(postgres).await;
    let server = setup.serve().await;
    let admin = setup.token("*", "platform_admin");
    let client = reqwest::Client::new();
    // A burst of commands through the API, and a large burst of usage written straight to the log.
    let commands: Vec<_> = (0..40)
        .map(|i| {
            let (client, admin, base) = (client.clone(), admin.clone(), server.base.clone());
            tokio::spawn(async move {
                client
                    .put(format!("{base}/v1/orgs/org{i}/plan"))
                    .bearer_auth(&admin)
                    .json(&json!({"plan": "pro"}))
                    .send()
                    .await
            })
        })
        .collect();
    let mut db = setup.sql().await;
    write_usage_burst(&mut db, "org1", 60_000).await;
    server.kill();
    for command in commands {
        let _ = command.await;
    }
    assert!(!db.caught_up().await, "the projector was killed before it finished");

    let server = setup.serve().await;
    let started = Instant::now();
    while !db.caught_up().await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the projector resumes after the crash"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let resumed = db.views().await;
    assert_eq!(
        db.scalar("select count(*) from usage_calls").await,
        60_000,
        "every call projected exactly once"
    );
    server.stop();

    let rebuild = setup
        .command()
        .args(["projections", "rebuild"])
        .stdout(Stdio::piped())
        .output()
        .expect("rebuild");
    assert!(rebuild.status.success());
    assert!(String::from_utf8_lossy(&rebuild.stdout).contains("events/s"));
    assert_eq!(db.views().await, resumed, "rows after the crash equal a full rebuild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_survives_sigkill_mid_burst_on_sqlite() {
    projector_survives_sigkill_mid_burst_and_matches_a_rebuild(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_survives_sigkill_mid_burst_on_postgres() {
    projector_survives_sigkill_mid_burst_and_matches_a_rebuild(true).await;
}

/// Advisory locks held on the test database: (projection lock key, holding backend pid).
async fn projection_locks(db: &mut Db) -> Vec<(i64, i64)> {
    let Db::Postgres(c) = db else { unreachable!("postgres only") };
    sqlx::query_as(
        "select objid::bigint, pid::bigint from pg_locks where locktype = 'advisory' and granted \
         and database = (select oid from pg_database where datname = current_database()) order by objid",
    )
    .fetch_all(c)
    .await
    .expect("locks")
}

/// Puts acme on `plan` through `server`, then reads acme's plan back through it.
async fn change_plan_then_read_it(setup: &Setup, server: &Server, plan: &str) -> Value {
    let client = reqwest::Client::new();
    let changed = client
        .put(format!("{}/v1/orgs/acme/plan", server.base))
        .bearer_auth(setup.token("*", "platform_admin"))
        .json(&json!({"plan": plan}))
        .send()
        .await
        .expect("plan");
    assert!(changed.status().is_success());
    let status: Value = client
        .get(format!("{}/v1/orgs/acme", server.base))
        .bearer_auth(setup.token("acme", "owner"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    status["plan"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_the_projections_and_the_survivor_takes_over() {
    // One advisory lock per projection pipeline.
    let projections = keyledger_projections::views::all(None, None).len();
    let setup = Setup::new(true).await;
    let first = setup.serve().await;
    let mut db = setup.sql().await;
    let started = Instant::now();
    while projection_locks(&mut db).await.len() < projections {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the first replica takes the projections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first replica's lock connections (one per projection pipeline).
    let holders: std::collections::HashSet<i64> =
        projection_locks(&mut db).await.iter().map(|(_, pid)| *pid).collect();
    let second = setup.serve().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let locks = projection_locks(&mut db).await;
    assert_eq!(locks.len(), projections, "each projection runs in exactly one replica: {locks:?}");
    assert!(
        locks.iter().all(|(_, pid)| holders.contains(pid)),
        "the first replica keeps them all: {locks:?}"
    );

    // Writes through the replica that runs no projection are still read back at once.
    let plan = change_plan_then_read_it(&setup, &second, "pro").await;
    assert_eq!(plan, "pro");

    first.kill();
    let started = Instant::now();
    loop {
        let locks = projection_locks(&mut db).await;
        let now: std::collections::HashSet<i64> = locks.iter().map(|(_, pid)| *pid).collect();
        if locks.len() == projections && now.is_disjoint(&holders) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "the survivor takes over: {locks:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let plan = change_plan_then_read_it(&setup, &second, "business").await;
    assert_eq!(plan, "business", "the survivor projects new events");
    second.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_exits_zero_when_intact_and_one_when_tampered() {
    let setup = Setup::new(false).await;
    let server = setup.serve().await;
    let admin = setup.token("*", "platform_admin");
    let client = reqwest::Client::new();
    for plan in ["pro", "business", "pro"] {
        client
            .put(format!("{}/v1/orgs/acme/plan", server.base))
            .bearer_auth(&admin)
            .json(&json!({"plan": plan}))
            .send()
            .await
            .expect("plan");
    }
    server.stop();
    let verify = |setup: &Setup| {
        setup
            .command()
            .args(["audit", "verify", "--org", "acme"])
            .stdout(Stdio::piped())
            .output()
            .expect("verify")
    };
    let intact = verify(&setup);
    assert_eq!(intact.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&intact.stdout).expect("json report");
    assert_eq!(report["entries"], 3);
    setup.sql().await.execute("update audit_log set actor = 'mallory' where seq = 2").await;
    let tampered = verify(&setup);
    assert_eq!(tampered.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&tampered.stdout).expect("json report");
    assert_eq!(report["first_bad_seq"], 2);
}

/// An auditor saves a checkpoint; later an insider rewrites an old event in the log and has
/// keyledger itself recompute the trail, its chain and its tree (`projections rebuild audit`).
/// `audit verify` alone is satisfied; with the saved checkpoint it exits 1 naming the entry.
async fn audit_verify_with_a_saved_checkpoint_names_a_rewritten_entry(postgres: bool) {
    let setup = Setup::new(postgres).await;
    let server = setup.serve().await;
    let admin = setup.token("*", "platform_admin");
    let client = reqwest::Client::new();
    let change_plans = |plans: &'static [&'static str]| {
        let (client, admin, base) = (client.clone(), admin.clone(), server.base.clone());
        async move {
            for plan in plans {
                client
                    .put(format!("{base}/v1/orgs/acme/plan"))
                    .bearer_auth(&admin)
                    .json(&json!({"plan": plan}))
                    .send()
                    .await
                    .expect("plan");
            }
        }
    };
    change_plans(&["pro", "business", "pro", "business"]).await;
    let checkpoint = client
        .get(format!("{}/v1/orgs/acme/audit/checkpoint", server.base))
        .bearer_auth(setup.token("acme", "auditor"))
        .send()
        .await
        .expect("checkpoint")
        .text()
        .await
        .expect("body");
    let saved = setup.dir.join("saved-checkpoint.json");
    std::fs::write(&saved, &checkpoint).expect("saved");
    change_plans(&["pro", "business"]).await;
    server.stop();

    let verify = |setup: &Setup| {
        setup
            .command()
            .args(["audit", "verify", "--org", "acme", "--checkpoint"])
            .arg(&saved)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("verify")
    };
    let holds = verify(&setup);
    let said = String::from_utf8_lossy(&holds.stdout).to_string();
    assert_eq!(holds.status.code(), Some(0), "{said}{}", String::from_utf8_lossy(&holds.stderr));
    assert!(said.contains("first 4 of 6 entries"), "{said}");

    let rewrite = if postgres {
        "update events set payload = replace(payload::text, '\"business\"', '\"enterprise\"')::json \
         where aggregate_id = 'acme' and sequence = 2"
    } else {
        "update events set payload = replace(payload, '\"business\"', '\"enterprise\"') \
         where aggregate_id = 'acme' and sequence = 2"
    };
    setup.sql().await.execute(rewrite).await;
    let rebuilt = setup.command().args(["projections", "rebuild", "audit"]).status();
    assert!(rebuilt.expect("rebuild").success());
    let chain_only = setup.command().args(["audit", "verify", "--org", "acme"]).status();
    assert!(chain_only.expect("verify").success(), "the chain alone cannot tell");

    let caught = verify(&setup);
    let said = String::from_utf8_lossy(&caught.stderr).to_string();
    assert_eq!(caught.status.code(), Some(1), "{said}");
    assert!(said.contains("the first entry that differs is seq 2"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_with_a_saved_checkpoint_names_a_rewritten_entry_on_sqlite() {
    audit_verify_with_a_saved_checkpoint_names_a_rewritten_entry(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_with_a_saved_checkpoint_names_a_rewritten_entry_on_postgres() {
    audit_verify_with_a_saved_checkpoint_names_a_rewritten_entry(true).await;
}

// The fake providers of the end-to-end tests, shared by path as the harness is.
#[path = "../../tests/src/fake_provider/mod.rs"]
#[allow(dead_code, unreachable_pub, unused_imports)]
mod fake_provider;

/// The most model calls in flight or waiting to be recorded in the crash tests.
const BACKLOG: u64 = 100;

/// Model calls from 32 callers for a while, then `kill -9` with calls in flight. After a
/// restart, the calls whose answers were received whole and were not recorded are at most the
/// backlog's bound (`async`), or none (`sync`).
async fn a_crash_under_load_loses_no_more_usage_than_stated(postgres: bool, durability: &str) {
    let fake = fake_provider::FakeProvider::start().await;
    let key = format!("sk-ant-api03-CRASH{}", "k".repeat(40));
    fake.accept(&key);
    let setup = Setup::new(postgres).await;
    let backlog = BACKLOG.to_string();
    let anthropic = fake.url("anthropic");
    let env = [
        ("KEYLEDGER_PROVIDER_ANTHROPIC_BASE_URL", anthropic.as_str()),
        ("KEYLEDGER_USAGE_QUEUE", backlog.as_str()),
        ("KEYLEDGER_USAGE_DURABILITY", durability),
    ];
    let server = setup.serve_with(&env).await;
    let client = reqwest::Client::new();
    let admin = setup.token("*", "platform_admin");
    let owner = setup.token("acme", "owner");
    let service = setup.token("acme", "service");
    let plan = client.put(format!("{}/v1/orgs/acme/plan", server.base)).bearer_auth(&admin);
    assert!(plan.json(&json!({"plan": "pro"})).send().await.expect("plan").status().is_success());
    let stored = client.post(format!("{}/v1/orgs/acme/keys", server.base)).bearer_auth(&owner);
    let stored = stored.json(&json!({"provider": "anthropic", "key": key})).send().await;
    assert!(stored.expect("store").status().is_success());

    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..32)
        .map(|_| {
            let (client, base, service, answered) =
                (client.clone(), server.base.clone(), service.clone(), answered.clone());
            tokio::spawn(async move {
                let body = json!({"model": "claude-3-5-haiku-latest", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]});
                loop {
                    let sent = client
                        .post(format!("{base}/v1/orgs/acme/gateway/anthropic/v1/messages"))
                        .bearer_auth(&service)
                        .json(&body)
                        .send()
                        .await;
                    let Ok(response) = sent else { return };
                    let whole = response.status().is_success();
                    // Received whole: the body read to its end.
                    if response.bytes().await.is_err() {
                        return;
                    }
                    if whole {
                        answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    server.kill();
    for worker in workers {
        worker.await.expect("worker");
    }
    let answered = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(answered > 100, "the load ran: {answered} calls answered");

    let restarted = setup.serve_with(&env).await;
    let mut db = setup.sql().await;
    let recorded = db.scalar("select count(*) from usage_requests").await;
    let lost = u64::try_from(answered as i64 - recorded).unwrap_or(0);
    let stated = if durability == "sync" { 0 } else { BACKLOG };
    eprintln!("{durability}: {answered} calls answered, {recorded} recorded after the crash");
    assert!(
        lost <= stated,
        "{answered} calls answered, {recorded} recorded: {lost} lost, more than the stated {stated}"
    );
    restarted.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_under_load_loses_at_most_the_backlog_on_sqlite() {
    a_crash_under_load_loses_no_more_usage_than_stated(false, "async").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_under_load_loses_at_most_the_backlog_on_postgres() {
    a_crash_under_load_loses_no_more_usage_than_stated(true, "async").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_under_load_loses_nothing_answered_with_sync_durability_on_sqlite() {
    a_crash_under_load_loses_no_more_usage_than_stated(false, "sync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_under_load_loses_nothing_answered_with_sync_durability_on_postgres() {
    a_crash_under_load_loses_no_more_usage_than_stated(true, "sync").await;
}
