//! Real `keyledger` processes for the process tests: a data directory and database per test,
//! servers on free ports, tokens from the CLI, and plain SQL on the same database.

#![allow(dead_code, unreachable_pub)]

// The harness's fresh-database helper, shared by path: the harness crate depends on this one.
#[path = "../../../tests/src/postgres.rs"]
#[allow(dead_code, unreachable_pub)]
mod postgres;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, Row};

/// A fresh PostgreSQL database of its own (one counter for every caller in the test binary).
pub async fn fresh_postgres() -> String {
    postgres::fresh_database().await
}

pub const JWT_SECRET: &str = "process-test-secret-long-enough-for-production";
pub const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

pub struct Setup {
    pub dir: PathBuf,
    pub database_url: String,
}

impl Setup {
    pub async fn new(postgres: bool) -> Self {
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

    pub fn command(&self) -> Command {
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

    pub async fn serve(&self) -> Server {
        self.serve_with(&[]).await
    }

    /// A server with `extra` environment settings.
    pub async fn serve_with(&self, extra: &[(&str, &str)]) -> Server {
        self.serve_with_stderr(extra, Stdio::null()).await
    }

    /// A server with `extra` environment settings whose log (stderr) goes to `log`.
    pub async fn serve_logging(&self, extra: &[(&str, &str)], log: &std::path::Path) -> Server {
        let file = std::fs::File::create(log).expect("log file");
        self.serve_with_stderr(extra, Stdio::from(file)).await
    }

    async fn serve_with_stderr(&self, extra: &[(&str, &str)], stderr: Stdio) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let mut command = self.command();
        command.arg("serve").env("KEYLEDGER_LISTEN", format!("127.0.0.1:{port}"));
        for (name, value) in extra {
            command.env(name, value);
        }
        let child = command.stderr(stderr).spawn().expect("serve");
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

    pub fn token(&self, org: &str, role: &str) -> String {
        let out = self
            .command()
            .args(["token", "--org", org, "--role", role, "--sub", "tester"])
            .stdout(Stdio::piped())
            .output()
            .expect("token");
        String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
    }

    pub async fn sql(&self) -> Db {
        if self.database_url.starts_with("postgres") {
            Db::Postgres(sqlx::PgConnection::connect(&self.database_url).await.expect("connect"))
        } else {
            Db::Sqlite(sqlx::SqliteConnection::connect(&self.database_url).await.expect("connect"))
        }
    }
}

pub enum Db {
    Postgres(sqlx::PgConnection),
    Sqlite(sqlx::SqliteConnection),
}

impl Db {
    pub async fn execute(&mut self, sql: &str) {
        match self {
            Self::Postgres(c) => sqlx::query(sql).execute(c).await.map(|_| ()),
            Self::Sqlite(c) => sqlx::query(sql).execute(c).await.map(|_| ()),
        }
        .expect("sql");
    }

    pub async fn scalar(&mut self, sql: &str) -> i64 {
        match self {
            Self::Postgres(c) => sqlx::query_scalar(sql).fetch_one(c).await,
            Self::Sqlite(c) => sqlx::query_scalar(sql).fetch_one(c).await,
        }
        .expect("scalar")
    }

    /// Every view row as text, sorted: what a rebuild must reproduce.
    pub async fn views(&mut self) -> Vec<String> {
        let mut all = Vec::new();
        for table in [
            "view_keys",
            "view_org_status",
            "view_provider_order",
            "audit_log",
            "usage_daily",
            "usage_calls",
            "usage_orgs",
            "view_orgs",
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

    /// Whether every projection has shown every event of the aggregate types it shows (the
    /// Keyring views stand at the last Keyring event, however many model calls follow it).
    pub async fn caught_up(&mut self) -> bool {
        for projection in keyledger_projections::views::all(None, None) {
            let name = projection.name();
            let types: Vec<String> =
                projection.consumes().iter().map(|t| format!("'{t}'")).collect();
            let after = match self {
                Self::Postgres(_) => "(e.transaction_id::text::bigint, e.global_position) > (c.transaction_id, c.position)",
                Self::Sqlite(_) => "e.global_position > c.position",
            };
            let checkpoints = self
                .scalar(&format!(
                    "select count(*) from projection_checkpoints where name = '{name}'"
                ))
                .await;
            let behind = self
                .scalar(&format!(
                    "select count(*) from events e, projection_checkpoints c \
                     where c.name = '{name}' and e.aggregate_type in ({}) and {after}",
                    types.join(", ")
                ))
                .await;
            if checkpoints == 0 || behind > 0 {
                return false;
            }
        }
        true
    }
}

pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    pub fn stop(mut self) {
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
