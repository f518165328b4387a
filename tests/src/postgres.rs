//! A fresh PostgreSQL database per test, on the server `DATABASE_URL` points at.

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, PgConnection};

const HOW_TO_START: &str = "start one with `docker compose up -d postgres` (see README), or set \
    DATABASE_URL to a server where this role may create databases";

/// The server's URL: `DATABASE_URL`, else this machine's 127.0.0.1:5432.
#[must_use]
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres"))
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn with_database(url: &str, name: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap_or((url, ""));
    format!("{base}/{name}")
}

async fn admin_connection() -> PgConnection {
    let url = server_url();
    match PgConnection::connect(&url).await {
        Ok(conn) => conn,
        Err(error) => panic!(
            "PostgreSQL is not reachable at {url}: {error}. These tests need it: {HOW_TO_START}."
        ),
    }
}

/// Creates an empty database for one test and returns its URL. Databases of earlier test
/// processes that are gone are dropped first.
pub async fn fresh_database() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    static CLEANED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let mut conn = admin_connection().await;
    CLEANED.get_or_init(drop_leftovers).await;
    let pid = std::process::id();
    let name = format!("keyledger_test_{pid}_{}", COUNTER.fetch_add(1, Ordering::Relaxed));
    sqlx::query(&format!("create database {name}"))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}. {HOW_TO_START}."));
    with_database(&server_url(), &name)
}

/// Drops the database of a finished test.
pub async fn drop_database(url: &str) {
    let Some((_, name)) = url.rsplit_once('/') else { return };
    let mut conn = admin_connection().await;
    let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
        .execute(&mut conn)
        .await;
}

async fn drop_leftovers() {
    let mut conn = admin_connection().await;
    let names: Vec<(String,)> =
        sqlx::query_as("select datname from pg_database where datname like 'keyledger_test_%'")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default();
    for (name,) in names {
        let pid = name.split('_').nth(2).and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists());
        if !alive {
            let _ = sqlx::query(&format!("drop database if exists {name} with (force)"))
                .execute(&mut conn)
                .await;
        }
    }
}

/// The plan PostgreSQL runs `sql` with as a prepared statement, its parameters typed by
/// `parameter_types` (`(json)`, say, or empty to infer them), for `arguments` written as SQL
/// literals: what `explain execute` shows, a line per row.
pub async fn prepared_plan(
    connection: &mut PgConnection,
    parameter_types: &str,
    sql: &str,
    arguments: &str,
) -> String {
    sqlx::query(&format!("prepare planned {parameter_types} as {sql}"))
        .execute(&mut *connection)
        .await
        .expect("prepared");
    let plan: Vec<String> = sqlx::query_scalar(&format!("explain execute planned({arguments})"))
        .fetch_all(&mut *connection)
        .await
        .expect("a plan");
    sqlx::query("deallocate planned").execute(&mut *connection).await.expect("deallocated");
    plan.join("\n")
}
