//! keyledger's real router over a fresh database, driven in-process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

use crate::fake_provider::FakeProvider;
use keyledger_api::{AppState, Role};
use keyledger_infra::crypto::MasterKeyRing;
use keyledger_infra::Config;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A keyledger instance under test.
#[derive(Debug)]
pub struct TestApp {
    pub backend: Backend,
    pub database_url: String,
    pub state: AppState,
    pub router: Router,
    /// The fake providers every registry provider's base URL points at.
    pub provider: FakeProvider,
    sqlite_dir: Option<PathBuf>,
    stop_projector: tokio::sync::watch::Sender<bool>,
    env: HashMap<String, String>,
}

/// What the API answered.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl TestResponse {
    /// The body as JSON (`null` if it is not JSON).
    #[must_use]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A header's value as text ("" when absent).
    #[must_use]
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    /// The problem `code` of an error answer.
    #[must_use]
    pub fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }

    /// [`TestResponse::everything`], and for an internal error what the server logged while
    /// answering it (found by its request id): the cause a 500's body rightly leaves out, for
    /// a failing assertion to say.
    #[must_use]
    pub fn described(&self) -> String {
        let mut text = self.everything();
        let id = self.header("x-request-id");
        if self.status == StatusCode::INTERNAL_SERVER_ERROR && !id.is_empty() {
            let logs = crate::logs::captured();
            let logged: Vec<&str> = logs.lines().filter(|line| line.contains(id)).collect();
            text.push_str("\n\nlogged while answering it:\n");
            text.push_str(&logged.join("\n"));
        }
        text
    }

    /// Headers and body as text, to search for what must not be there.
    #[must_use]
    pub fn everything(&self) -> String {
        let headers: String = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect();
        format!("{headers}\n{}", String::from_utf8_lossy(&self.body))
    }
}

impl TestApp {
    /// A fresh instance on `backend`, with every provider pointed at one fake provider.
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// A fresh instance with extra environment settings.
    pub async fn start_with(backend: Backend, extra: &[(&str, &str)]) -> Self {
        Self::launch(backend, extra, None).await
    }

    /// A fresh PostgreSQL instance that reaches its database only through `proxy`, so a test
    /// can take the database away.
    pub async fn start_behind(proxy: &crate::StoreProxy, extra: &[(&str, &str)]) -> Self {
        Self::launch(Backend::Postgres, extra, Some(proxy)).await
    }

    async fn launch(
        backend: Backend,
        extra: &[(&str, &str)],
        proxy: Option<&crate::StoreProxy>,
    ) -> Self {
        crate::logs::capture();
        let provider = FakeProvider::start().await;
        let (database_url, sqlite_dir) = match backend {
            Backend::Postgres => (crate::postgres::fresh_database().await, None),
            Backend::Sqlite => {
                let dir =
                    std::env::temp_dir().join(format!("keyledger-test-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&dir).expect("temp dir");
                (format!("sqlite://{}", dir.join("keyledger.db").display()), Some(dir))
            }
        };
        let mut env: HashMap<String, String> = HashMap::from([
            (
                "DATABASE_URL".to_owned(),
                proxy.map_or(database_url.clone(), |p| p.url(&database_url)),
            ),
            ("KEYLEDGER_MASTER_KEY".to_owned(), MasterKeyRing::generate_encoded().to_string()),
            ("KEYLEDGER_JWT_SECRET".to_owned(), format!("test-secret-{}", uuid::Uuid::new_v4())),
            ("KEYLEDGER_LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
        ]);
        for p in keyledger_domain::ProviderId::ALL {
            env.insert(
                format!("KEYLEDGER_PROVIDER_{}_BASE_URL", p.as_str().to_uppercase()),
                provider.url(p.as_str()),
            );
        }
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let (state, router, stop_projector) = Self::instance(&env).await;
        Self { backend, database_url, state, router, provider, sqlite_dir, stop_projector, env }
    }

    async fn instance(
        env: &HashMap<String, String>,
    ) -> (AppState, Router, tokio::sync::watch::Sender<bool>) {
        let config =
            Config::from_lookup(|name| env.get(name).cloned()).expect("test configuration");
        let state = keyledger_api::build_state(config).await.expect("application state");
        let router = keyledger_api::router(state.clone());
        let stop_projector = keyledger_api::start_serving(&state);
        (state, router, stop_projector)
    }

    /// The value of `name` in this instance's configuration.
    #[must_use]
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }

    /// Another replica on the same database, with the same secrets and fake provider.
    pub async fn replica(&self) -> Self {
        self.replica_with(&[]).await
    }

    /// Another replica on the same database, configured as this one but for `extra`.
    pub async fn replica_with(&self, extra: &[(&str, &str)]) -> Self {
        let mut env = self.env.clone();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let (state, router, stop_projector) = Self::instance(&env).await;
        Self {
            backend: self.backend,
            database_url: self.database_url.clone(),
            state,
            router,
            provider: self.provider.clone(),
            // The first instance cleans up.
            sqlite_dir: None,
            stop_projector,
            env,
        }
    }

    /// Serves the router on a loopback port, for clients that speak HTTP (SDKs); its base URL.
    pub async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let router = self.router.clone();
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}")
    }

    /// A token for `sub` acting as `role` on `org`.
    #[must_use]
    pub fn token(&self, org: &str, role: Role, sub: &str) -> String {
        self.state.tokens.issue(org, role, sub, Duration::from_secs(3600)).expect("token")
    }

    /// `claims` signed as the platform's identity provider would, with the app's secret.
    #[must_use]
    pub fn sign(&self, claims: &keyledger_api::auth::Claims) -> String {
        self.state.tokens.sign(claims).expect("signed")
    }

    /// An owner's token for `org`.
    #[must_use]
    pub fn owner(&self, org: &str) -> String {
        self.token(org, Role::Owner, "alice")
    }

    /// A platform admin's token.
    #[must_use]
    pub fn platform_admin(&self) -> String {
        self.token("*", Role::PlatformAdmin, "billing")
    }

    /// Sends a request with an optional bearer token and JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> TestResponse {
        let body = body.map(|b| b.to_string());
        self.send_raw(method, path, token, body.as_deref()).await
    }

    /// Sends a request with a raw body, sent as JSON.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> TestResponse {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => {
                request.header("content-type", "application/json").body(Body::from(body.to_owned()))
            }
            None => request.body(Body::empty()),
        }
        .expect("request");
        let response = self.router.clone().oneshot(request).await.expect("infallible router");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes().to_vec();
        TestResponse { status, headers, body }
    }

    pub async fn get(&self, path: &str, token: &str) -> TestResponse {
        self.send(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> TestResponse {
        self.send(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> TestResponse {
        self.send(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> TestResponse {
        self.send(Method::DELETE, path, Some(token), None).await
    }

    /// The value of gauge or counter `name` in `/metrics` (NaN if it is not there).
    pub async fn metric(&self, name: &str) -> f64 {
        let metrics = self.send(Method::GET, "/metrics", None, None).await;
        String::from_utf8_lossy(&metrics.body)
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or(f64::NAN)
    }

    /// Waits, at most `patience`, until no model call is in flight or waiting to be recorded
    /// (`keyledger_usage_backlog` is 0); whether it came to that.
    pub async fn usage_settled(&self, patience: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        while self.metric("keyledger_usage_backlog").await != 0.0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Waits, at most 10 s, until the views show every Keyring event committed so far, and
    /// panics if they do not. Commands answer before the views show them (reads through the
    /// API wait for them): a test that reads the views' tables itself waits here first.
    pub async fn keyring_views_settled(&self) {
        let keyring = <keyledger_domain::Keyring as cqrs_es::Aggregate>::TYPE;
        let latest = self.state.log.order().latest_cursor_of_type(keyring).await.expect("latest");
        if let Some(latest) = latest {
            let shown = self.state.projector.wait_until(latest, keyring, Duration::from_secs(10));
            assert!(shown.await, "the views did not show the latest Keyring event in 10 s");
        }
    }

    /// Puts `org` on `plan` as the platform admin.
    pub async fn set_plan(&self, org: &str, plan: &str) {
        let response = self
            .put(
                &format!("/v1/orgs/{org}/plan"),
                &self.platform_admin(),
                serde_json::json!({"plan": plan}),
            )
            .await;
        assert_eq!(response.status, StatusCode::OK, "set plan: {}", response.everything());
    }

    /// Everything in every table of the database, as text, to search.
    pub async fn dump_database(&self) -> String {
        match &self.state.db {
            keyledger_store::Database::Postgres(pool) => {
                let tables: Vec<(String,)> = sqlx::query_as(
                    "select table_name::text from information_schema.tables where table_schema = 'public'",
                )
                .fetch_all(pool)
                .await
                .expect("tables");
                let mut dump = String::new();
                for (table,) in tables {
                    let rows: Vec<(String,)> =
                        sqlx::query_as(&format!("select t::text from {table} t"))
                            .fetch_all(pool)
                            .await
                            .expect("rows");
                    for (row,) in rows {
                        dump.push_str(&row);
                        dump.push('\n');
                    }
                }
                dump
            }
            keyledger_store::Database::Sqlite(pool) => {
                // Every byte of the database file and its write-ahead log.
                sqlx::query("pragma wal_checkpoint(passive)").execute(pool).await.ok();
                let dir = self.sqlite_dir.as_ref().expect("sqlite dir");
                let mut dump = String::new();
                for entry in std::fs::read_dir(dir).expect("dir") {
                    let bytes = std::fs::read(entry.expect("entry").path()).unwrap_or_default();
                    dump.push_str(&String::from_utf8_lossy(&bytes));
                }
                dump
            }
        }
    }

    /// The bytes of every file of the SQLite database (main file, write-ahead log, index), as
    /// they are on disk now.
    #[must_use]
    pub fn database_files(&self) -> Vec<u8> {
        let dir = self.sqlite_dir.as_ref().expect("a SQLite instance");
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir).expect("dir") {
            bytes.extend(std::fs::read(entry.expect("entry").path()).unwrap_or_default());
        }
        bytes
    }

    /// Every row of `table`, each as one text value.
    pub async fn rows_as_text(&self, table: &str) -> Vec<String> {
        match &self.state.db {
            keyledger_store::Database::Postgres(pool) => {
                let rows: Vec<(String,)> =
                    sqlx::query_as(&format!("select t::text from {table} t"))
                        .fetch_all(pool)
                        .await
                        .expect("rows");
                rows.into_iter().map(|(r,)| r).collect()
            }
            keyledger_store::Database::Sqlite(pool) => {
                use sqlx::{Column, Row, TypeInfo, ValueRef};
                let rows = sqlx::query(&format!("select * from {table}"))
                    .fetch_all(pool)
                    .await
                    .expect("rows");
                rows.iter()
                    .map(|row| {
                        let cells: Vec<String> = (0..row.columns().len())
                            .map(|i| {
                                let raw = row.try_get_raw(i).expect("cell");
                                let shown = if raw.is_null() {
                                    "null".to_owned()
                                } else {
                                    match raw.type_info().name() {
                                        "INTEGER" => row
                                            .try_get::<i64, _>(i)
                                            .map(|v| v.to_string())
                                            .unwrap_or_default(),
                                        "REAL" => row
                                            .try_get::<f64, _>(i)
                                            .map(|v| v.to_string())
                                            .unwrap_or_default(),
                                        _ => row.try_get::<String, _>(i).unwrap_or_default(),
                                    }
                                };
                                format!("{}={shown}", row.columns()[i].name())
                            })
                            .collect();
                        cells.join(",")
                    })
                    .collect()
            }
        }
    }

    /// Runs `sql` on the database (for tests that tamper with storage).
    pub async fn execute_sql(&self, sql: &str) -> u64 {
        match &self.state.db {
            keyledger_store::Database::Postgres(pool) => {
                sqlx::query(sql).execute(pool).await.expect("sql").rows_affected()
            }
            keyledger_store::Database::Sqlite(pool) => {
                sqlx::query(sql).execute(pool).await.expect("sql").rows_affected()
            }
        }
    }

    /// Writes one `ModelCallRecorded` event a call into the log of `ledger` by hand, bypassing
    /// the usage writer (its sequences from 1), a thousand to a statement: a backlog, quickly.
    /// `call(i)` is the i-th event's body.
    pub async fn write_calls_by_hand(
        &self,
        ledger: &str,
        count: usize,
        call: impl Fn(usize) -> Value,
    ) {
        let cast = if self.backend == Backend::Postgres { "::json" } else { "" };
        for start in (0..count).step_by(1_000) {
            let rows: Vec<String> = (start..count.min(start + 1_000))
                .map(|i| {
                    let payload = serde_json::json!({ "ModelCallRecorded": call(i) });
                    format!(
                        "('UsageLedger', '{ledger}', {}, 'ModelCallRecorded', '1.0', '{payload}'{cast}, '{{}}'{cast})",
                        i + 1
                    )
                })
                .collect();
            self.execute_sql(&format!(
                "insert into events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) values {}",
                rows.join(", ")
            ))
            .await;
        }
    }

    /// The text values of `sql`'s one column.
    pub async fn texts(&self, sql: &str) -> Vec<String> {
        match &self.state.db {
            keyledger_store::Database::Postgres(pool) => {
                sqlx::query_scalar(sql).fetch_all(pool).await.expect("texts")
            }
            keyledger_store::Database::Sqlite(pool) => {
                sqlx::query_scalar(sql).fetch_all(pool).await.expect("texts")
            }
        }
    }

    /// Counts rows of `sql` (a `select count(*) …`).
    pub async fn count(&self, sql: &str) -> i64 {
        match &self.state.db {
            keyledger_store::Database::Postgres(pool) => {
                sqlx::query_scalar(sql).fetch_one(pool).await.expect("count")
            }
            keyledger_store::Database::Sqlite(pool) => {
                sqlx::query_scalar(sql).fetch_one(pool).await.expect("count")
            }
        }
    }

    /// Stops this instance's projector (its views fall behind from now on).
    pub fn stop_projecting(&self) {
        let _ = self.stop_projector.send(true);
    }

    /// Drops the test's database.
    pub async fn finish(self) {
        let _ = self.stop_projector.send(true);
        match self.backend {
            Backend::Postgres => {
                if let keyledger_store::Database::Postgres(pool) = &self.state.db {
                    pool.close().await;
                }
                crate::postgres::drop_database(&self.database_url).await;
            }
            Backend::Sqlite => {
                if let Some(dir) = &self.sqlite_dir {
                    std::fs::remove_dir_all(dir).ok();
                }
            }
        }
    }
}
