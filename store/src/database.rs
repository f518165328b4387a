//! The database keyledger runs on: PostgreSQL for many replicas, or an embedded SQLite file.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
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
    #[error("cannot back up: {0}")]
    Backup(String),
}

/// A storage operation that failed, told without secrets, and whether the database was
/// unavailable (unreachable, shutting down, out of connections, busy): a failure worth
/// answering 503 and trying again once the database is back, unlike a statement it refused.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StorageFailure {
    unavailable: bool,
    message: String,
}

impl StorageFailure {
    /// A failure that says nothing of the database's availability (a row that does not
    /// decode, a writer that stopped).
    #[must_use]
    pub fn other(message: impl Into<String>) -> Self {
        Self { unavailable: false, message: message.into() }
    }

    /// `error`, classified by the first database error in its chain of sources (cqrs-es and
    /// its repositories box the sqlx error they got).
    #[must_use]
    pub fn of(error: &(dyn std::error::Error + 'static)) -> Self {
        let mut cause = Some(error);
        let mut unavailable = false;
        while let Some(error) = cause {
            if let Some(sqlx) = error.downcast_ref::<sqlx::Error>() {
                unavailable = is_unavailable(sqlx);
                break;
            }
            cause = error.source();
        }
        Self { unavailable, message: error.to_string() }
    }

    /// Whether the database was unavailable rather than refusing what was asked.
    #[must_use]
    pub fn unavailable(&self) -> bool {
        self.unavailable
    }
}

impl From<sqlx::Error> for StorageFailure {
    fn from(error: sqlx::Error) -> Self {
        Self::of(&error)
    }
}

/// Whether `error` means the database could not serve the statement at all, as opposed to
/// refusing it: the connection failed or was cut, no connection came within the pool's wait,
/// or the server is starting, stopping or out of connections (SQLSTATE class 08, 57P01–57P03,
/// 53300); on SQLite, a database still locked after the busy timeout.
#[must_use]
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => {
            let code = database.code().unwrap_or_default();
            if database.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // BUSY and LOCKED; an extended code keeps its primary code in the low byte.
                matches!(code.parse::<u32>().map(|c| c & 0xff), Ok(5 | 6))
            } else {
                code.starts_with("08")
                    || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
            }
        }
        _ => false,
    }
}

/// While the server cannot be reached, a request waits this long for a connection before it is
/// answered 503: long enough for a server restart's first seconds, short enough that a caller
/// hears the outage rather than hangs. A listener waits as long before it tries again.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

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
                .acquire_timeout(ACQUIRE_TIMEOUT)
                // A connection's buffers grow to the largest message it has sent or received
                // (a usage batch binds hundreds of records) and keep that size. Over a long run
                // each pooled connection comes to hold its largest, and the process's memory
                // creeps up until the pool recycles them; shrunk on release, the pool holds
                // what its connections are doing now.
                .after_release(|connection, _| {
                    Box::pin(async move {
                        sqlx::Connection::shrink_buffers(connection);
                        Ok(true)
                    })
                })
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

    /// Applies the migrations of this backend that have not run yet, and on PostgreSQL makes
    /// the log partitions of this month and the next two.
    ///
    /// # Errors
    /// [`DatabaseError::Migrate`] when a migration fails or was changed after it ran, or the
    /// partitions cannot be made.
    pub async fn migrate(&self) -> Result<(), DatabaseError> {
        match self {
            Self::Postgres(pool) => POSTGRES_MIGRATIONS.run(pool).await,
            Self::Sqlite(pool) => SQLITE_MIGRATIONS.run(pool).await,
        }
        .map_err(DatabaseError::Migrate)?;
        crate::log_months::prepare(self)
            .await
            .map_err(|error| DatabaseError::Migrate(sqlx::migrate::MigrateError::Execute(error)))
    }

    /// Copies a SQLite database, online and consistent, into a new file at `path` (`VACUUM
    /// INTO`: one read transaction, so writers carry on and the copy is one instant of the
    /// database). PostgreSQL is backed up with its own tools (`pg_dump`), which this refuses
    /// to stand in for.
    ///
    /// # Errors
    /// [`DatabaseError::Backup`] on PostgreSQL, when `path` exists, or when SQLite fails.
    pub async fn backup_into(&self, path: &std::path::Path) -> Result<(), DatabaseError> {
        let Self::Sqlite(pool) = self else {
            return Err(DatabaseError::Backup(
                "keyledger backs up SQLite only; back up PostgreSQL with pg_dump \
                 (see docs/operations.md)"
                    .to_owned(),
            ));
        };
        if path.exists() {
            return Err(DatabaseError::Backup(format!("{} exists already", path.display())));
        }
        let target = path.to_str().ok_or_else(|| {
            DatabaseError::Backup(format!("{} is not a UTF-8 path", path.display()))
        })?;
        sqlx::query("vacuum into $1")
            .bind(target)
            .execute(pool)
            .await
            .map_err(|e| DatabaseError::Backup(e.to_string()))?;
        Ok(())
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

/// A listener for PostgreSQL's notifications on the server `pool` connects to, holding a
/// connection of its own rather than one of `pool`'s.
///
/// `PgListener::connect_with(pool)` borrows its connection from the pool it is given, and
/// reconnects from it too. A reconnect cut short after its `LISTEN` was sent (the projector
/// drains with `now_or_never`, waits in a `select!`; the Keyring watch waits under a timeout)
/// hands the new connection back to that pool still subscribed, from the second reconnect on
/// without the buffer its notifications would go to. The next query drawn on it fails on the
/// first notification it meets ("unexpected message: NotificationResponse"): after the
/// database came back, a key rotation now and then answered 500. A pool of one of its own
/// keeps whatever a reconnect leaves behind away from everyone else's queries.
///
/// # Errors
/// The connection error when the server cannot be reached.
pub async fn listener(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let own = PgPoolOptions::new()
        .max_connections(1)
        // As `PgListener::connect` makes its own: no idle or age limit (and so no reaper task),
        // a connection tested before it is taken, so a reconnect skips a dead one.
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_lazy_with(PgConnectOptions::clone(&pool.connect_options()));
    PgListener::connect_with(&own).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_or_an_empty_pool_is_unavailability_a_bad_row_is_not() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(is_unavailable(&sqlx::Error::Io(reset)));
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::PoolClosed));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::ColumnNotFound("x".into())));
    }

    #[test]
    fn a_failure_is_classified_by_the_database_error_in_its_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapped")]
        struct Wrapped(#[source] sqlx::Error);

        assert!(StorageFailure::of(&Wrapped(sqlx::Error::PoolTimedOut)).unavailable());
        assert!(!StorageFailure::of(&Wrapped(sqlx::Error::RowNotFound)).unavailable());
        let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(sqlx::Error::PoolTimedOut);
        assert!(StorageFailure::of(boxed.as_ref()).unavailable());
        assert!(!StorageFailure::other("a writer stopped").unavailable());
    }

    #[tokio::test]
    async fn a_sqlite_database_locked_past_its_busy_timeout_is_unavailability() {
        let dir = std::env::temp_dir().join(format!("keyledger-busy-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = SqliteConnectOptions::new()
            .filename(dir.join("busy.db"))
            .create_if_missing(true)
            .busy_timeout(Duration::ZERO);
        let holder = SqlitePoolOptions::new().max_connections(1).connect_with(file.clone()).await;
        let other = SqlitePoolOptions::new().max_connections(1).connect_with(file).await;
        let (holder, other) = (holder.expect("holder"), other.expect("other"));
        sqlx::query("create table t (x integer)").execute(&holder).await.expect("create");
        let mut locked = holder.begin().await.expect("begin");
        sqlx::query("insert into t values (1)").execute(&mut *locked).await.expect("insert");
        let busy = sqlx::query("insert into t values (2)").execute(&other).await;
        let error = busy.expect_err("the other writer waits no time and fails");
        assert!(is_unavailable(&error), "{error:?}");
        drop(locked);
        let _ = std::fs::remove_dir_all(dir);
    }
}
