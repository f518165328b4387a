//! One transaction type over PostgreSQL or SQLite. Projections write the same SQL to both:
//! `$N` placeholders, `on conflict … do update`, and column types both understand.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Sqlite, SqlitePool};

/// A connection pool of either backend.
#[derive(Debug, Clone)]
pub enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// An open transaction of either backend.
#[derive(Debug)]
pub enum Tx {
    Postgres(sqlx::Transaction<'static, Postgres>),
    Sqlite(sqlx::Transaction<'static, Sqlite>),
}

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
    Time(DateTime<Utc>),
    OptTime(Option<DateTime<Utc>>),
}

macro_rules! bind_args {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Text(v) => query.bind(v.clone()),
                Arg::OptText(v) => query.bind(v.clone()),
                Arg::Int(v) => query.bind(*v),
                Arg::OptInt(v) => query.bind(*v),
                Arg::Bool(v) => query.bind(*v),
                Arg::Time(v) => query.bind(*v),
                Arg::OptTime(v) => query.bind(*v),
            };
        }
        query
    }};
}

impl Pool {
    /// Starts a transaction.
    ///
    /// # Errors
    /// When no connection can be had.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Self::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            Self::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
        })
    }

    /// Whether this is PostgreSQL.
    #[must_use]
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

impl Tx {
    /// Runs a statement and returns the number of rows it changed.
    ///
    /// # Errors
    /// The database's error.
    pub async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Self::Postgres(tx) => {
                bind_args!(sqlx::query(sql), args).execute(&mut **tx).await?.rows_affected()
            }
            Self::Sqlite(tx) => {
                bind_args!(sqlx::query(sql), args).execute(&mut **tx).await?.rows_affected()
            }
        })
    }

    /// Runs a query returning rows of type `T`.
    ///
    /// # Errors
    /// The database's error.
    pub async fn fetch_all<T>(&mut self, sql: &str, args: &[Arg]) -> Result<Vec<T>, sqlx::Error>
    where
        T: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        match self {
            Self::Postgres(tx) => {
                bind_args!(sqlx::query_as::<_, T>(sql), args).fetch_all(&mut **tx).await
            }
            Self::Sqlite(tx) => {
                bind_args!(sqlx::query_as::<_, T>(sql), args).fetch_all(&mut **tx).await
            }
        }
    }

    /// Commits.
    ///
    /// # Errors
    /// The database's error; nothing was written then.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(tx) => tx.commit().await,
            Self::Sqlite(tx) => tx.commit().await,
        }
    }
}

impl Pool {
    /// Runs a query returning rows of type `T` outside any transaction.
    ///
    /// # Errors
    /// The database's error.
    pub async fn fetch_all<T>(&self, sql: &str, args: &[Arg]) -> Result<Vec<T>, sqlx::Error>
    where
        T: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        match self {
            Self::Postgres(pool) => {
                bind_args!(sqlx::query_as::<_, T>(sql), args).fetch_all(pool).await
            }
            Self::Sqlite(pool) => {
                bind_args!(sqlx::query_as::<_, T>(sql), args).fetch_all(pool).await
            }
        }
    }

    /// Runs a statement outside any transaction.
    ///
    /// # Errors
    /// The database's error.
    pub async fn execute(&self, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Self::Postgres(pool) => {
                bind_args!(sqlx::query(sql), args).execute(pool).await?.rows_affected()
            }
            Self::Sqlite(pool) => {
                bind_args!(sqlx::query(sql), args).execute(pool).await?.rows_affected()
            }
        })
    }
}
