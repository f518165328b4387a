//! Real `keyledger` processes on a shared database: crash recovery of the projector, rebuilds,
//! two replicas sharing the projections, and the audit CLI.

// The harness's fresh-database helper, shared by path: the harness crate depends on this one.
#[path = "../../tests/src/postgres.rs"]
#[allow(dead_code, unreachable_pub)]
mod postgres;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, Row};

const JWT_SECRET: &str = "process-test-secret";
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Setup {
    dir: PathBuf,
    database_url: String,
}

impl Setup {
    async fn new(postgres: bool) -> Self {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("keyledger-proc-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let database_url = if postgres {
            postgres::fresh_database().await
        } else {
            format!("sqlite://{}", dir.join("keyledger.db").display())
        };
        Self { dir, database_url }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_keyledger"));
        command
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &self.database_url)
            .env("KEYLEDGER_MASTER_KEY", MASTER_KEY)
            .env("KEYLEDGER_JWT_SECRET", JWT_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        command
    }

    async fn serve(&self) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let child = self
            .command()
            .arg("serve")
            .env("KEYLEDGER_LISTEN", format!("127.0.0.1:{port}"))
            .spawn()
            .expect("serve");
        let server = Server { child, base: format!("http://127.0.0.1:{port}") };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if reqwest::get(format!("{}/healthz", server.base))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("keyledger serve did not come up");
    }

    fn token(&self, org: &str, role: &str) -> String {
        let out = self
            .command()
            .args(["token", "--org", org, "--role", role, "--sub", "tester"])
            .stdout(Stdio::piped())
            .output()
            .expect("token");
        String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
    }

    async fn sql(&self) -> Db {
        if self.database_url.starts_with("postgres") {
            Db::Postgres(sqlx::PgConnection::connect(&self.database_url).await.expect("connect"))
        } else {
            Db::Sqlite(sqlx::SqliteConnection::connect(&self.database_url).await.expect("connect"))
        }
    }
}

enum Db {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Db {
    async fn execute(&mut self, sql: &str) {
        match self {
            Self::Postgres(c) => sqlx::query(sql).execute(c).await.map(|_| ()),
            Self::Sqlite(c) => sqlx::query(sql).execute(c).await.map(|_| ()),
        }
        .expect("sql");
    }

    async fn scalar(&mut self, sql: &str) -> i64 {
        match self {
            Self::Postgres(c) => sqlx::query_scalar(sql).fetch_one(c).await,
            Self::Sqlite(c) => sqlx::query_scalar(sql).fetch_one(c).await,
        }
        .expect("scalar")
    }

    /// Every view row as text, sorted: what a rebuild must reproduce.
    async fn views(&mut self) -> Vec<String> {
        let mut all = Vec::new();
        for table in [
            "view_keys",
            "view_org_status",
            "view_provider_order",
            "audit_log",
            "usage_daily",
            "usage_calls",
        ] {
            let mut rows: Vec<String> = match self {
                Self::Postgres(c) => sqlx::query_scalar(&format!("select t::text from {table} t"))
                    .fetch_all(c)
                    .await
                    .expect("rows"),
                Self::Sqlite(c) => {
                    let rows = sqlx::query(&format!("select * from {table}"))
                        .fetch_all(c)
                        .await
                        .expect("rows");
                    rows.iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|i| {
                                    r.try_get::<i64, _>(i)
                                        .map(|v| v.to_string())
                                        .or_else(|_| r.try_get::<String, _>(i))
                                        .unwrap_or_else(|_| "null".to_owned())
                                })
                                .collect::<Vec<_>>()
                                .join("|")
                        })
                        .collect()
                }
            };
            rows.sort();
            all.extend(rows.into_iter().map(|r| format!("{table}: {r}")));
        }
        all
    }

    /// Whether every projection has applied every event.
    async fn caught_up(&mut self) -> bool {
        let end = self.scalar("select coalesce(max(global_position), 0) from events").await;
        let slowest =
            self.scalar("select coalesce(min(position), 0) from projection_checkpoints").await;
        let behind = match self {
            Self::Postgres(_) => self.scalar(
                "select count(*) from events e, (select min(transaction_id) t, min(position) p from projection_checkpoints) c \
                 where (e.transaction_id::text::bigint, e.global_position) > (c.t, c.p)").await,
            Self::Sqlite(_) => end - slowest,
        };
        behind == 0
    }
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
        assert!(self.child.wait().expect("wait").success());
    }
}

/// A test that fails half-way must not leave servers running.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let setup = Setup::new(true).await;
    let first = setup.serve().await;
    let mut db = setup.sql().await;
    let started = Instant::now();
    while projection_locks(&mut db).await.len() < 5 {
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
    assert_eq!(locks.len(), 5, "each projection runs in exactly one replica: {locks:?}");
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
        if locks.len() == 5 && now.is_disjoint(&holders) {
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
