//! SQL written once for both backends: `$N` placeholders, `on conflict … do update`, and
//! column types both understand, run in one transaction type; where the dialects differ (bulk
//! inserts, placeholders SQLite binds faster), it is decided here.

use chrono::{DateTime, Utc};
use sqlx::{Postgres, Sqlite};

use crate::database::Database;

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
    Bytes(Vec<u8>),
    /// A UUID: PostgreSQL's own type, text on SQLite.
    Uuid(uuid::Uuid),
}

macro_rules! bind_args {
    ($query:expr, $args:expr, $backend:ident) => {{
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
                Arg::Bytes(v) => query.bind(v.clone()),
                Arg::Uuid(v) => bind_args!(@uuid $backend, query, v),
            };
        }
        query
    }};
    (@uuid postgres, $query:expr, $v:expr) => {
        $query.bind(*$v)
    };
    (@uuid sqlite, $query:expr, $v:expr) => {
        $query.bind($v.to_string())
    };
}

impl Database {
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

    /// Starts a transaction for projected rows. On PostgreSQL its commit does not wait for the
    /// write-ahead log to reach disk: the rows are a fold of the log, and a checkpoint commits
    /// with its rows, so a server crash can only lose the latest batches whole, which the
    /// projector then applies again. Commands keep their durable commits.
    ///
    /// It reads the log in its global order too, so it never sorts for that order (see
    /// [`Database::begin_reading_in_order`]); nothing a projection runs in it needs a sort
    /// that an index does not give either.
    ///
    /// # Errors
    /// When no connection can be had.
    pub async fn begin_projecting(&self) -> Result<Tx, sqlx::Error> {
        self.begin_with("begin; set local synchronous_commit = off; set local enable_sort = off")
            .await
    }

    /// Starts a transaction for reading the log in its global order. On PostgreSQL the planner
    /// is told not to sort for an order an index gives. Over a month's partition without
    /// statistics (just loaded or restored, not yet analyzed) it guessed that the next 10,000
    /// events after a cursor were a third of the partition, and for every batch read all of
    /// that and sorted it on disk instead of walking the index to the batch's end: 390 ms a
    /// batch instead of 27 over 300,000 events, a rebuild taking three times as long as over
    /// a million analyzed ones. Where nothing else gives an order, it still sorts.
    ///
    /// # Errors
    /// When no connection can be had.
    pub async fn begin_reading_in_order(&self) -> Result<Tx, sqlx::Error> {
        self.begin_with("begin; set local enable_sort = off").await
    }

    /// [`Database::begin_reading_in_order`] in one snapshot for all of its statements: a reader
    /// that first learns which aggregates to read and then reads them sees the same log in both.
    /// Without JIT compilation: a sort that is needed all the same is costed past the JIT's
    /// threshold by `enable_sort = off`, and compiling a page's read took 450 ms.
    ///
    /// # Errors
    /// When no connection can be had.
    pub async fn begin_reading_one_snapshot(&self) -> Result<Tx, sqlx::Error> {
        self.begin_with(
            "begin isolation level repeatable read, read only; \
             set local enable_sort = off; set local jit = off",
        )
        .await
    }

    async fn begin_with(&self, postgres_begin: &'static str) -> Result<Tx, sqlx::Error> {
        Ok(match self {
            Self::Postgres(pool) => Tx::Postgres(pool.begin_with(postgres_begin).await?),
            Self::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
        })
    }

    /// Whether this is PostgreSQL.
    #[must_use]
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// `sum(column)` as a bigint that stops at the largest one rather than fail: a read never
    /// errs on what the log holds (PostgreSQL sums bigints as numeric; SQLite's total() is a
    /// float that cannot overflow, exact below 2^53). No rows sum to 0.
    #[must_use]
    pub fn capped_sum(&self, column: &str) -> String {
        if self.is_postgres() {
            format!("cast(least(coalesce(sum({column}), 0), {}) as bigint)", i64::MAX)
        } else {
            format!("cast(min(total({column}), {}) as integer)", i64::MAX)
        }
    }

    /// Whether `text` contains `needle`, both SQL expressions, as plain characters: a `%` or
    /// `_` someone searches for is not a pattern.
    #[must_use]
    pub fn contains(&self, text: &str, needle: &str) -> String {
        if self.is_postgres() {
            format!("strpos({text}, {needle}) > 0")
        } else {
            format!("instr({text}, {needle}) > 0")
        }
    }
}

impl Tx {
    /// Whether this is a PostgreSQL transaction.
    #[must_use]
    pub fn is_postgres(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// Runs a statement and returns the number of rows it changed.
    ///
    /// # Errors
    /// The database's error.
    pub async fn execute(&mut self, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
        self.run(sql, args, true).await
    }

    /// Runs a statement whose text was built for one batch (a row of placeholders per row) and
    /// returns the number of rows it changed. It is not kept prepared on the connection: a
    /// connection keeps up to 100 prepared statements for its life, and one per batch size seen,
    /// each with the types of its thousands of parameters, held about 12 MiB of a long run's
    /// memory until the pool recycled its connections.
    ///
    /// # Errors
    /// The database's error.
    pub async fn execute_built(&mut self, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
        self.run(sql, args, false).await
    }

    async fn run(
        &mut self,
        sql: &str,
        args: &[Arg],
        keep_prepared: bool,
    ) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Self::Postgres(tx) => {
                bind_args!(sqlx::query(sql).persistent(keep_prepared), args, postgres)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
            Self::Sqlite(tx) => {
                let sql = anonymous_placeholders(sql, args.len());
                bind_args!(sqlx::query(&sql).persistent(keep_prepared), args, sqlite)
                    .execute(&mut **tx)
                    .await?
                    .rows_affected()
            }
        })
    }

    /// Appends `rows` to `table` (plain inserts, no conflict handling), as fast as the backend
    /// allows: a binary `COPY` on PostgreSQL (each value in its type's wire form, so an
    /// [`Arg::Int`] goes into a `bigint` column and an [`Arg::Time`] into a `timestamptz`),
    /// multi-row inserts on SQLite.
    ///
    /// # Errors
    /// The database's error; a row of another length than `columns`.
    pub async fn insert_rows(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: &[Vec<Arg>],
    ) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        match self {
            Self::Postgres(tx) => {
                let stream = crate::copy_binary::encode(columns.len(), rows)
                    .map_err(sqlx::Error::Protocol)?;
                let mut copy = tx
                    .copy_in_raw(&format!(
                        "copy {table} ({}) from stdin (format binary)",
                        columns.join(", ")
                    ))
                    .await?;
                copy.send(stream).await?;
                copy.finish().await?;
            }
            Self::Sqlite(_) => self.insert_values(table, columns, rows, "").await?,
        }
        Ok(())
    }

    /// `rows` as multi-row inserts into `table`, each followed by `tail` (a conflict clause,
    /// or nothing): how SQLite takes many rows, which has neither `COPY` nor arrays.
    pub(crate) async fn insert_values(
        &mut self,
        table: &str,
        columns: &[&str],
        rows: &[Vec<Arg>],
        tail: &str,
    ) -> Result<(), sqlx::Error> {
        // Within SQLite's 32,766 placeholders for tables of up to 65 columns.
        const ROWS_PER_STATEMENT: usize = 500;
        let row = format!("({})", vec!["?"; columns.len()].join(", "));
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "insert into {table} ({}) values {} {tail}",
                columns.join(", "),
                vec![row.as_str(); chunk.len()].join(", ")
            );
            self.execute_built(&sql, &chunk.concat()).await?;
        }
        Ok(())
    }

    /// Locks the rows of `table` whose `column` is one of `values` until this transaction
    /// ends: on PostgreSQL those rows; on SQLite the database's write lock, taken now by a
    /// write that changes nothing (a transaction that read first could not write any more
    /// once another connection had committed: SQLITE_BUSY_SNAPSHOT).
    ///
    /// # Errors
    /// The database's error.
    pub async fn lock_rows(
        &mut self,
        table: &str,
        column: &str,
        values: &[&str],
    ) -> Result<(), sqlx::Error> {
        if self.is_postgres() {
            self.fetch_locked::<(String,)>(table, column, values, column).await.map(|_| ())
        } else {
            self.take_write_lock(table, column, values).await
        }
    }

    /// Reads `columns` of the rows of `table` whose `column` is one of `values`, and locks
    /// them as [`Tx::lock_rows`] does, in one round trip on PostgreSQL.
    ///
    /// # Errors
    /// The database's error.
    pub async fn fetch_locked<T>(
        &mut self,
        table: &str,
        column: &str,
        values: &[&str],
        columns: &str,
    ) -> Result<Vec<T>, sqlx::Error>
    where
        T: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        let (in_list, args) = in_list(1, values);
        let lock = if self.is_postgres() {
            " for update"
        } else {
            self.take_write_lock(table, column, values).await?;
            ""
        };
        let sql = format!("select {columns} from {table} where {column} in ({in_list}){lock}");
        self.fetch_all(&sql, &args).await
    }

    /// SQLite: takes the database's write lock now, by a write that changes nothing.
    async fn take_write_lock(
        &mut self,
        table: &str,
        column: &str,
        values: &[&str],
    ) -> Result<(), sqlx::Error> {
        let (in_list, args) = in_list(1, values);
        let sql = format!("update {table} set {column} = {column} where {column} in ({in_list})");
        self.execute(&sql, &args).await.map(|_| ())
    }

    /// Empties `table` within the transaction: TRUNCATE on PostgreSQL (no dead rows left for
    /// what is written next to wade through), DELETE on SQLite.
    ///
    /// # Errors
    /// The database's error.
    pub async fn empty(&mut self, table: &str) -> Result<(), sqlx::Error> {
        let sql = if self.is_postgres() {
            format!("truncate table {table}")
        } else {
            format!("delete from {table}")
        };
        self.execute(&sql, &[]).await.map(|_| ())
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
        futures::TryStreamExt::try_collect(self.fetch(sql, args)).await
    }

    /// The rows of a statement as they arrive, for a reader that may stop early: the rows it
    /// leaves are never decoded (PostgreSQL still sends them, and they are read off the
    /// connection and dropped before its next statement).
    pub fn fetch<'t, T>(
        &'t mut self,
        sql: &'t str,
        args: &'t [Arg],
    ) -> futures::stream::BoxStream<'t, Result<T, sqlx::Error>>
    where
        T: Send
            + Unpin
            + 't
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>,
    {
        match self {
            Self::Postgres(tx) => {
                bind_args!(sqlx::query_as::<_, T>(sql), args, postgres).fetch(&mut **tx)
            }
            Self::Sqlite(tx) => {
                bind_args!(sqlx::query_as::<_, T>(sql), args, sqlite).fetch(&mut **tx)
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

/// `$first, $first+1, …` for `values` (for `where … in (…)` after `first - 1` other
/// placeholders), and the values bound to them.
#[must_use]
pub fn in_list(first: usize, values: &[&str]) -> (String, Vec<Arg>) {
    let list =
        (first..first + values.len()).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ");
    (list, values.iter().map(|v| Arg::Text((*v).to_owned())).collect())
}

/// SQLite finds a named parameter (`$7`) by walking every name of the statement, so binding a
/// multi-row insert by name is quadratic. A statement that uses `$1..$n` exactly once each, in
/// order, means the same with anonymous `?` placeholders, which bind by position.
fn anonymous_placeholders(sql: &str, count: usize) -> std::borrow::Cow<'_, str> {
    const WORTH_IT: usize = 16;
    if count < WORTH_IT {
        return std::borrow::Cow::Borrowed(sql);
    }
    let mut out = String::with_capacity(sql.len());
    let mut expected = 1;
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let digits: String = rest[at + 1..].chars().take_while(char::is_ascii_digit).collect();
        if digits.parse::<usize>().ok() != Some(expected) {
            return std::borrow::Cow::Borrowed(sql);
        }
        out.push('?');
        expected += 1;
        rest = &rest[at + 1 + digits.len()..];
    }
    out.push_str(rest);
    if expected - 1 == count {
        std::borrow::Cow::Owned(out)
    } else {
        std::borrow::Cow::Borrowed(sql)
    }
}

impl Database {
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
                bind_args!(sqlx::query_as::<_, T>(sql), args, postgres).fetch_all(pool).await
            }
            Self::Sqlite(pool) => {
                bind_args!(sqlx::query_as::<_, T>(sql), args, sqlite).fetch_all(pool).await
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
                bind_args!(sqlx::query(sql), args, postgres).execute(pool).await?.rows_affected()
            }
            Self::Sqlite(pool) => {
                bind_args!(sqlx::query(sql), args, sqlite).execute(pool).await?.rows_affected()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::anonymous_placeholders;

    #[test]
    fn sequential_placeholders_become_anonymous() {
        let sql = format!(
            "insert into t values {}",
            (1..=20).map(|i| format!("(${i})")).collect::<Vec<_>>().join(", ")
        );
        assert_eq!(
            anonymous_placeholders(&sql, 20),
            format!("insert into t values {}", vec!["(?)"; 20].join(", "))
        );
    }

    #[test]
    fn reused_or_reordered_placeholders_stay_named() {
        let reused = format!(
            "select {} where a = $1",
            (1..=20).map(|i| format!("${i}")).collect::<Vec<_>>().join(", ")
        );
        assert_eq!(anonymous_placeholders(&reused, 20), reused);
        let short = "select $1, $2";
        assert_eq!(anonymous_placeholders(short, 2), short);
    }
}
