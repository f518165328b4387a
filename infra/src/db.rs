//! The database keyledger runs on: PostgreSQL for many replicas, or an embedded SQLite file.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};

/// A connection pool to one of the two supported backends.
#[derive(Debug, Clone)]
pub enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// Why the database could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("DATABASE_URL must start with postgres:// or sqlite:// (got a URL starting {0:?})")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

impl Database {
    /// Connects to `url` (`postgres://…` or `sqlite://PATH`, the file is created if missing).
    ///
    /// # Errors
    /// [`DatabaseError`] when the URL is of another kind or the server cannot be reached.
    pub async fn connect(url: &str) -> Result<Self, DatabaseError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(DatabaseError::Connect)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                // sqlx pings a connection before every use by default: a second round trip for
                // each query of a model call. A connection the server dropped fails its next
                // query instead, and the pool discards it.
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(DatabaseError::Connect)?;
            Ok(Self::Postgres(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(DatabaseError::Connect)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                // Deleted rows are overwritten with zeros, not just unlinked: destroyed key
                // material must not stay readable in the file.
                .pragma("secure_delete", "on")
                // Writers queue on the database lock instead of failing at once.
                .busy_timeout(Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
                .connect_with(options)
                .await
                .map_err(DatabaseError::Connect)?;
            Ok(Self::Sqlite(pool))
        } else {
            Err(DatabaseError::UnsupportedUrl(url.chars().take(12).collect()))
        }
    }

    /// Applies the migrations of this backend that have not run yet.
    ///
    /// # Errors
    /// [`DatabaseError::Migrate`] when a migration fails or was changed after it ran.
    pub async fn migrate(&self) -> Result<(), DatabaseError> {
        match self {
            Self::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
            Self::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
        }
        .map_err(DatabaseError::Migrate)
    }

    /// Whether the database answers.
    pub async fn is_reachable(&self) -> bool {
        let result = match self {
            Self::Postgres(pool) => sqlx::query("select 1").execute(pool).await.map(|_| ()),
            Self::Sqlite(pool) => sqlx::query("select 1").execute(pool).await.map(|_| ()),
        };
        result.is_ok()
    }

    /// The name of the backend, for logs.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Postgres(_) => "postgres",
            Self::Sqlite(_) => "sqlite",
        }
    }
}
