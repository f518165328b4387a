//! Shared pieces of keyledger's benchmarks: databases to run on, seeding, and reporting.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

/// A database for one benchmark run, removed afterwards.
#[derive(Debug)]
pub struct BenchDb {
    pub url: String,
    admin_url: Option<String>,
    name: String,
}

impl BenchDb {
    /// A fresh PostgreSQL database on the server at `server_url`.
    ///
    /// # Panics
    /// When the server cannot be reached or the database created.
    pub async fn postgres(server_url: &str) -> Self {
        let name = format!("keyledger_bench_{}", std::process::id());
        let mut admin =
            PgConnection::connect(server_url).await.expect("PostgreSQL reachable at DATABASE_URL");
        sqlx::query(&format!("drop database if exists {name} with (force)"))
            .execute(&mut admin)
            .await
            .expect("drop");
        sqlx::query(&format!("create database {name}")).execute(&mut admin).await.expect("create");
        let (base, _) = server_url
            .split('?')
            .next()
            .unwrap_or(server_url)
            .rsplit_once('/')
            .expect("a database URL");
        // Loopback on the same host: no TLS, as a same-host deployment would connect.
        Self {
            url: format!("{base}/{name}?sslmode=disable"),
            admin_url: Some(server_url.to_owned()),
            name,
        }
    }

    /// A fresh SQLite file in the temp dir.
    #[must_use]
    pub fn sqlite() -> Self {
        let path = std::env::temp_dir().join(format!("keyledger-bench-{}.db", std::process::id()));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        Self {
            url: format!("sqlite://{}", path.display()),
            admin_url: None,
            name: path.display().to_string(),
        }
    }

    /// Removes the database.
    pub async fn drop(self) {
        match self.admin_url {
            Some(admin_url) => {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ =
                        sqlx::query(&format!("drop database if exists {} with (force)", self.name))
                            .execute(&mut admin)
                            .await;
                }
            }
            None => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", self.name));
                }
            }
        }
    }
}

/// Runs `bench` on a fresh database of each backend `choice` names (`postgres`, `sqlite` or
/// `both`), PostgreSQL at `DATABASE_URL`; the databases are removed afterwards unless
/// `KEYLEDGER_BENCH_KEEP` is set (for profiling).
pub async fn on_backends<T, F, Fut>(choice: &str, mut bench: F) -> Vec<T>
where
    F: FnMut(&'static str, String) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut outcomes = Vec::new();
    for backend in ["postgres", "sqlite"] {
        if choice != "both" && choice != backend {
            continue;
        }
        let db = if backend == "postgres" {
            BenchDb::postgres(&server).await
        } else {
            BenchDb::sqlite()
        };
        outcomes.push(bench(backend, db.url.clone()).await);
        if std::env::var_os("KEYLEDGER_BENCH_KEEP").is_some() {
            eprintln!("[{backend}] kept {}", db.url);
        } else {
            db.drop().await;
        }
    }
    outcomes
}

/// Percentile `p` (0–100) of sorted durations.
#[must_use]
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// A duration in milliseconds with two decimals.
#[must_use]
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// keyledger serving on a loopback port in this process: its state (to issue tokens, read
/// its recorder) and its base URL. The projector runs for as long as this is kept.
#[derive(Debug)]
pub struct Served {
    pub state: keyledger_api::AppState,
    pub base: String,
    _projector: tokio::sync::watch::Sender<bool>,
}

/// Starts keyledger on the database at `url` with a fresh master key and the JWT secret
/// `bench`, plus the variables in `extra`.
///
/// # Panics
/// When it does not start.
pub async fn serve(url: &str, extra: &[(&str, String)]) -> Served {
    let mut env: std::collections::HashMap<&str, String> = std::collections::HashMap::from([
        ("DATABASE_URL", url.to_owned()),
        (
            "KEYLEDGER_MASTER_KEY",
            keyledger_infra::crypto::MasterKeyRing::generate_encoded().to_string(),
        ),
        ("KEYLEDGER_JWT_SECRET", "bench".to_owned()),
        ("KEYLEDGER_LISTEN", "127.0.0.1:0".to_owned()),
    ]);
    env.extend(extra.iter().cloned());
    let config =
        keyledger_infra::Config::from_lookup(|name| env.get(name).cloned()).expect("config");
    let state = keyledger_api::build_state(config).await.expect("state");
    let projector = keyledger_api::start_serving(&state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = keyledger_api::router(state.clone());
    tokio::spawn(async move { axum::serve(keyledger_api::app::no_delay(listener), router).await });
    Served { state, base, _projector: projector }
}

/// A fake provider: `app` served on a loopback port in this process; its base URL.
///
/// # Panics
/// When no port can be bound.
pub async fn fake_provider(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(keyledger_api::app::no_delay(listener), app).await });
    format!("http://{addr}")
}

/// Runs `callers` loops of `request(caller, n)` for `seconds`: each request's latency, and
/// how long the phase took.
pub async fn drive<F, Fut>(callers: usize, seconds: u64, request: F) -> (Vec<Duration>, Duration)
where
    F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future + Send,
{
    let until = std::time::Instant::now() + Duration::from_secs(seconds);
    let started = std::time::Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let request = request.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0;
                while std::time::Instant::now() < until {
                    let sent = std::time::Instant::now();
                    request(caller, n).await;
                    latencies.push(sent.elapsed());
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("caller"));
    }
    (latencies, started.elapsed())
}

/// An event to seed: aggregate type, aggregate id, sequence, event type, payload, metadata.
pub type SeedEvent = (String, String, i64, String, serde_json::Value, serde_json::Value);

/// Writes `rows` into the log in one transaction, as keyledger's writer would: on PostgreSQL
/// each names its log month, so it goes straight to its partition.
///
/// # Panics
/// When the database refuses them.
pub async fn insert_events(db: &keyledger_store::Database, rows: &[SeedEvent]) {
    use keyledger_store::Database;
    use sqlx::QueryBuilder;

    const SQL: &str = "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) ";
    match db {
        Database::Postgres(pool) => {
            const PG_SQL: &str = "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata, log_month) ";
            let mut tx = pool.begin().await.expect("begin");
            for chunk in rows.chunks(2_000) {
                let mut query = QueryBuilder::new(PG_SQL);
                query.push_values(chunk, |mut b, r| {
                    b.push_bind(&r.0)
                        .push_bind(&r.1)
                        .push_bind(r.2)
                        .push_bind(&r.3)
                        .push_bind("1.0")
                        .push_bind(&r.4)
                        .push_bind(&r.5)
                        .push("keyledger_log_month_of(")
                        .push_bind_unseparated(&r.0)
                        .push_unseparated(", ")
                        .push_bind_unseparated(&r.1)
                        .push_unseparated(")");
                });
                query.build().execute(&mut *tx).await.expect("insert");
            }
            tx.commit().await.expect("commit");
        }
        Database::Sqlite(pool) => {
            let mut tx = pool.begin().await.expect("begin");
            for chunk in rows.chunks(2_000) {
                let mut query = QueryBuilder::new(SQL);
                query.push_values(chunk, |mut b, r| {
                    b.push_bind(&r.0)
                        .push_bind(&r.1)
                        .push_bind(r.2)
                        .push_bind(&r.3)
                        .push_bind("1.0")
                        .push_bind(r.4.to_string())
                        .push_bind(r.5.to_string());
                });
                query.build().execute(&mut *tx).await.expect("insert");
            }
            tx.commit().await.expect("commit");
        }
    }
}
