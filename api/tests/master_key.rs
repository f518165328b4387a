//! Master-key rotation with real `keyledger` processes: keys sealed under `k1`; the service
//! moves to the ring `k2,k1` and keeps taking model calls and rotations while
//! `keyledger master-key rewrap` runs, is killed with SIGKILL half way, and runs again; then a
//! service with `k2` alone opens every key and serves every call.

mod harness;

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use harness::Setup;
use keyledger_api::{Role, TokenKeys};

// The fake providers of the end-to-end tests, shared by path as the harness is.
#[path = "../../tests/src/fake_provider/mod.rs"]
#[allow(dead_code, unreachable_pub, unused_imports)]
mod fake_provider;

const K1: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
const K2: &str = "k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";
const ORGS: usize = 300;

fn org(i: usize) -> String {
    format!("org-{i:03}")
}

fn claude() -> Value {
    json!({"model": "claude-3-5-haiku-latest", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]})
}

/// A token as `keyledger token` signs it, minted here: hundreds of them are needed.
fn token(org: &str, role: Role) -> String {
    let secret = secrecy::SecretString::from(harness::JWT_SECRET.to_owned());
    TokenKeys::with_claims(&secret, None, None)
        .issue(org, role, "tester", Duration::from_secs(3600))
        .expect("token")
}

/// Every organization on `pro` with an Anthropic key the fake provider accepts.
async fn seed(base: &str, fake: &fake_provider::FakeProvider) {
    let client = reqwest::Client::new();
    let admin = token("*", Role::PlatformAdmin);
    let tasks: Vec<_> = (0..8)
        .map(|worker| {
            let (client, base, admin) = (client.clone(), base.to_owned(), admin.clone());
            let keys: Vec<(String, String)> = (worker..ORGS)
                .step_by(8)
                .map(|i| (org(i), format!("sk-ant-api03-ROTATE{i:03}{}", "k".repeat(40))))
                .collect();
            for (_, key) in &keys {
                fake.accept(key);
            }
            tokio::spawn(async move {
                for (org, key) in keys {
                    let plan = client.put(format!("{base}/v1/orgs/{org}/plan")).bearer_auth(&admin);
                    let plan = plan.json(&json!({"plan": "pro"})).send().await.expect("plan");
                    assert!(plan.status().is_success(), "plan of {org}");
                    let stored = client
                        .post(format!("{base}/v1/orgs/{org}/keys"))
                        .bearer_auth(token(&org, Role::Owner))
                        .json(&json!({"provider": "anthropic", "key": key}))
                        .send()
                        .await
                        .expect("store");
                    assert_eq!(stored.status(), 201, "store for {org}");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("seeding");
    }
}

async fn count(setup: &Setup, sql: &str) -> i64 {
    setup.sql().await.scalar(sql).await
}

async fn master_key_rotation_survives_sigkill_under_load(postgres: bool) {
    let fake = fake_provider::FakeProvider::start().await;
    let setup = Setup::new(postgres).await;
    let anthropic = fake.url("anthropic");
    let provider = ("KEYLEDGER_PROVIDER_ANTHROPIC_BASE_URL", anthropic.as_str());
    let first = setup.serve_with(&[provider, ("KEYLEDGER_MASTER_KEY", K1)]).await;
    seed(&first.base, &fake).await;
    first.stop();
    assert_eq!(
        count(&setup, "select count(*) from key_material where master_key_id = 'k1'").await,
        ORGS as i64
    );

    // A ring without k1 refuses to start, naming it.
    let refused = setup
        .command()
        .arg("serve")
        .env("KEYLEDGER_MASTER_KEY", K2)
        .env("KEYLEDGER_LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .output()
        .expect("serve");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("k1") && said.contains("rewrap"), "{said}");

    // The service moves to k2 (new material sealed under it) and takes calls and rotations.
    let ring = format!("{K2},{K1}");
    let server = setup.serve_with(&[provider, ("KEYLEDGER_MASTER_KEY", ring.as_str())]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (answered, failed, rotated) =
        (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let service = token("*", Role::Service);
    let client = reqwest::Client::new();
    let mut load = Vec::new();
    for worker in 0..4 {
        let (client, base, service, stop, answered, failed) = (
            client.clone(),
            server.base.clone(),
            service.clone(),
            stop.clone(),
            answered.clone(),
            failed.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                let url = format!("{base}/v1/orgs/{}/gateway/anthropic/v1/messages", org(i % ORGS));
                let sent = client.post(url).bearer_auth(&service).json(&claude()).send().await;
                match sent {
                    Ok(r) if r.status().is_success() => {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => {
                        eprintln!(
                            "a call failed: {} {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        );
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        eprintln!("a call failed: {error}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 7;
            }
        }));
    }
    for worker in 0..2 {
        let (client, base, stop, rotated) =
            (client.clone(), server.base.clone(), stop.clone(), rotated.clone());
        let tokens: Vec<String> =
            (0..ORGS).step_by(10).map(|i| token(&org(i), Role::Owner)).collect();
        let keys: Vec<String> = (0..tokens.len())
            .map(|n| format!("sk-ant-api03-NEWKEY{worker}{n:03}{}", "n".repeat(40)))
            .collect();
        for key in &keys {
            fake.accept(key);
        }
        load.push(tokio::spawn(async move {
            for (n, (token, key)) in tokens.iter().zip(&keys).enumerate().skip(worker).step_by(2) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let url = format!("{base}/v1/orgs/{}/keys/anthropic", org(n * 10));
                let sent =
                    client.put(url).bearer_auth(token).json(&json!({"key": key})).send().await;
                if sent.is_ok_and(|r| r.status().is_success()) {
                    rotated.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    // The rewrap, killed with SIGKILL once it has moved some organizations and not all.
    let mut rewrap = setup
        .command()
        .args(["master-key", "rewrap"])
        .env("KEYLEDGER_MASTER_KEY", &ring)
        .spawn()
        .expect("rewrap");
    let started = Instant::now();
    let mut db = setup.sql().await;
    loop {
        let left = db.scalar("select count(*) from key_material where master_key_id = 'k1'").await;
        if left < ORGS as i64 - 20 {
            rewrap.kill().expect("SIGKILL");
            rewrap.wait().expect("reaped");
            assert!(left > 0, "the rewrap was killed half way ({left} versions still under k1)");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the rewrap made no progress");
        assert!(
            rewrap.try_wait().expect("status").is_none(),
            "the rewrap ended before it was killed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Run again: it finishes the job.
    let finished = setup
        .command()
        .args(["master-key", "rewrap"])
        .env("KEYLEDGER_MASTER_KEY", &ring)
        .stdout(Stdio::piped())
        .output()
        .expect("rewrap again");
    let summary = String::from_utf8_lossy(&finished.stdout);
    assert!(finished.status.success(), "{summary}");
    assert!(
        summary.contains("re-sealed") && summary.contains("already under the active"),
        "{summary}"
    );
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.expect("load");
    }
    let (answered, failed) = (answered.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(answered > 50, "model calls ran during the rewrap: {answered}");
    assert_eq!(failed, 0, "no model call failed during the rewrap ({answered} answered)");
    assert!(rotated.load(Ordering::Relaxed) > 0, "rotations ran during the rewrap");

    assert_eq!(db.scalar("select count(*) from key_material where master_key_id = 'k1'").await, 0);
    assert_eq!(
        db.scalar("select count(*) from key_material").await,
        ORGS as i64,
        "one row per key version: nothing resealed twice, nothing left behind"
    );
    let resealed =
        db.scalar("select count(*) from events where event_type = 'KeyMaterialResealed'").await;
    assert!(resealed > 0 && resealed <= ORGS as i64, "{resealed} re-seal events");
    let metrics = reqwest::get(format!("{}/metrics", server.base)).await.expect("metrics");
    let metrics = metrics.text().await.expect("text");
    assert!(
        metrics.contains(&format!(
            r#"keyledger_key_material_versions{{master_key_id="k2",active="true"}} {ORGS}"#
        )),
        "{metrics}"
    );
    server.stop();

    // k1 dropped: every key opens, every call works.
    let last = setup.serve_with(&[provider, ("KEYLEDGER_MASTER_KEY", K2)]).await;
    for i in 0..ORGS {
        let url = format!("{}/v1/orgs/{}/gateway/anthropic/v1/messages", last.base, org(i));
        let answer =
            client.post(url).bearer_auth(&service).json(&claude()).send().await.expect("call");
        assert!(answer.status().is_success(), "{}: {}", org(i), answer.status());
    }
    let status = setup
        .command()
        .args(["master-key", "status"])
        .env("KEYLEDGER_MASTER_KEY", K2)
        .stdout(Stdio::piped())
        .output()
        .expect("status");
    assert_eq!(
        String::from_utf8_lossy(&status.stdout).trim(),
        format!("k2 (active): {ORGS} key version(s)")
    );
    last.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_key_rotation_survives_sigkill_under_load_on_sqlite() {
    master_key_rotation_survives_sigkill_under_load(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn master_key_rotation_survives_sigkill_under_load_on_postgres() {
    master_key_rotation_survives_sigkill_under_load(true).await;
}
