//! Backups with real `keyledger` processes: taken while the service runs (`keyledger backup` on
//! SQLite, `pg_dump` on PostgreSQL), restored into a fresh database, and then every
//! organization's audit trail verifies and every key opens and serves a call.

mod harness;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use harness::Setup;
use keyledger_api::{Role, TokenKeys};

// The fake providers of the end-to-end tests, shared by path as the harness is.
#[path = "../../tests/src/fake_provider/mod.rs"]
#[allow(dead_code, unreachable_pub, unused_imports)]
mod fake_provider;

const ORGS: [&str; 3] = ["acme", "globex", "initech"];

fn token(org: &str, role: Role) -> String {
    let secret = secrecy::SecretString::from(harness::JWT_SECRET.to_owned());
    TokenKeys::with_claims(&secret, None, None)
        .issue(org, role, "tester", Duration::from_secs(3600))
        .expect("token")
}

fn claude() -> serde_json::Value {
    json!({"model": "claude-3-5-haiku-latest", "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]})
}

/// Each organization on pro with an Anthropic key, rotated once, and one call made with it.
async fn history(base: &str, fake: &fake_provider::FakeProvider) {
    let client = reqwest::Client::new();
    for org in ORGS {
        let plan = client.put(format!("{base}/v1/orgs/{org}/plan"));
        let plan = plan.bearer_auth(token("*", Role::PlatformAdmin)).json(&json!({"plan": "pro"}));
        assert!(plan.send().await.expect("plan").status().is_success());
        for (n, method) in [reqwest::Method::POST, reqwest::Method::PUT].into_iter().enumerate() {
            let key = format!("sk-ant-api03-BACKUP{org}{n}{}", "b".repeat(40));
            fake.accept(&key);
            let url = match n {
                0 => format!("{base}/v1/orgs/{org}/keys"),
                _ => format!("{base}/v1/orgs/{org}/keys/anthropic"),
            };
            let body = json!({"provider": "anthropic", "key": key});
            let body = if n == 0 { body } else { json!({"key": body["key"]}) };
            let sent = client.request(method, url).bearer_auth(token(org, Role::Owner)).json(&body);
            let answer = sent.send().await.expect("key");
            let status = answer.status();
            let said = answer.text().await.unwrap_or_default();
            assert!(status.is_success(), "{org} key {n}: {status} {said}");
        }
    }
}

/// On the restored database: every trail verifies, every key opens and serves a call.
async fn everything_holds(setup: &Setup, database_url: &str, anthropic: &str) {
    let restored = Setup { dir: setup.dir.clone(), database_url: database_url.to_owned() };
    let server = restored.serve_with(&[("KEYLEDGER_PROVIDER_ANTHROPIC_BASE_URL", anthropic)]).await;
    let client = reqwest::Client::new();
    for org in ORGS {
        let verified = restored.command().args(["audit", "verify", "--org", org]).status();
        assert!(verified.expect("audit verify").success(), "the trail of {org} verifies");
        let check = client
            .post(format!("{}/v1/orgs/{org}/keys/anthropic/verify", server.base))
            .bearer_auth(token(org, Role::Owner))
            .send()
            .await
            .expect("verify");
        let check: serde_json::Value = check.json().await.expect("json");
        assert_eq!(check["ok"], true, "the key of {org} opens: {check}");
        let call = client
            .post(format!("{}/v1/orgs/{org}/gateway/anthropic/v1/messages", server.base))
            .bearer_auth(token(org, Role::Service))
            .json(&claude())
            .send()
            .await
            .expect("call");
        assert!(call.status().is_success(), "{org}: {}", call.status());
    }
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_backup_taken_while_serving_restores_whole() {
    let fake = fake_provider::FakeProvider::start().await;
    let anthropic = fake.url("anthropic");
    let setup = Setup::new(false).await;
    let server = setup.serve_with(&[("KEYLEDGER_PROVIDER_ANTHROPIC_BASE_URL", &anthropic)]).await;
    history(&server.base, &fake).await;

    let copy = setup.dir.join("backup.db");
    let mut backup = setup.command();
    backup.arg("backup").arg(&copy).stdout(Stdio::piped());
    let backed_up = backup.output().expect("backup");
    assert!(backed_up.status.success(), "{}", String::from_utf8_lossy(&backed_up.stdout));
    let again = backup.stderr(Stdio::piped()).output().expect("backup again");
    assert!(!again.status.success(), "a backup never overwrites a file");
    assert!(String::from_utf8_lossy(&again.stderr).contains("exists already"));
    server.stop();

    let restored = setup.dir.join("restored.db");
    std::fs::copy(&copy, &restored).expect("restore the copy");
    everything_holds(&setup, &format!("sqlite://{}", restored.display()), &anthropic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_dump_taken_while_serving_restores_whole() {
    let fake = fake_provider::FakeProvider::start().await;
    let anthropic = fake.url("anthropic");
    let setup = Setup::new(true).await;
    let server = setup.serve_with(&[("KEYLEDGER_PROVIDER_ANTHROPIC_BASE_URL", &anthropic)]).await;
    history(&server.base, &fake).await;

    let mut refused = setup.command();
    refused.arg("backup").arg(setup.dir.join("x.db")).stderr(Stdio::piped());
    let refused = refused.output().expect("backup");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("pg_dump"), "it points to pg_dump");

    let dump = setup.dir.join("keyledger.dump");
    let dumped = Command::new("pg_dump")
        .args(["--format=custom", "--no-owner", "--file"])
        .arg(&dump)
        .arg(&setup.database_url)
        .status()
        .expect("pg_dump (PostgreSQL's client tools)");
    assert!(dumped.success());
    server.stop();

    let fresh = harness::fresh_postgres().await;
    let restored = Command::new("pg_restore")
        .args(["--no-owner", "--exit-on-error", "--dbname"])
        .arg(&fresh)
        .arg(&dump)
        .status()
        .expect("pg_restore");
    assert!(restored.success());
    everything_holds(&setup, &fresh, &anthropic).await;
}
