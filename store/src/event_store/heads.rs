//! The latest sequence of aggregates, looked up for many concurrent callers in one query.
//!
//! Every model call asks whether its organization's Keyring moved on since this process last
//! loaded it, so that a rotation on any replica is seen by the very next call. Asked one query
//! a call, the database spends more on round trips than on answers; here the questions that
//! arrive while a query is under way wait for the next one and share it. A question is always
//! answered by a query that started after it was asked, so no answer predates its question.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::database::{Database, StorageFailure};

/// Queries under way at once: a second overlaps the first's round trip.
const IN_FLIGHT: usize = 2;

type Answer = Result<usize, StorageFailure>;
type Question = (String, oneshot::Sender<Answer>);

/// Latest sequences of one aggregate type.
#[derive(Debug)]
pub struct Heads {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Database,
    aggregate_type: &'static str,
    shared: Mutex<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Queries under way.
    leading: usize,
    /// Questions waiting for the next query.
    waiting: Vec<Question>,
}

impl Heads {
    /// Heads of `aggregate_type` in `db`.
    #[must_use]
    pub fn new(db: &Database, aggregate_type: &'static str) -> Self {
        let shared = Mutex::new(Shared::default());
        Self { inner: Arc::new(Inner { db: db.clone(), aggregate_type, shared }) }
    }

    /// The sequence of aggregate `id`'s latest event (0 if it has none), as committed when
    /// this was called or later.
    ///
    /// While fewer than `IN_FLIGHT` queries are under way the caller queries itself (no
    /// hand-over between tasks when the gateway is quiet); otherwise it waits for the next
    /// query, which asks for everyone waiting at once.
    ///
    /// # Errors
    /// The database's error.
    pub async fn latest(&self, id: &str) -> Result<usize, StorageFailure> {
        loop {
            let waiting = {
                let mut shared = self.inner.lock();
                if shared.leading < IN_FLIGHT {
                    shared.leading += 1;
                    None
                } else {
                    let (reply, answer) = oneshot::channel();
                    shared.waiting.push((id.to_owned(), reply));
                    Some(answer)
                }
            };
            match waiting {
                None => {
                    let leading = Leading(Arc::clone(&self.inner));
                    return leading.ask(Some(id)).await;
                }
                Some(answer) => match answer.await {
                    Ok(answer) => return answer,
                    // The query that took the question was abandoned with its caller: ask again.
                    Err(_) => continue,
                },
            }
        }
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One query under way; when it ends, whoever is still waiting gets a query of their own.
struct Leading(Arc<Inner>);

impl Leading {
    /// Asks for `own` (if any) and every question waiting now, answers the waiting ones, and
    /// returns `own`'s answer.
    async fn ask(self, own: Option<&str>) -> Answer {
        let questions = std::mem::take(&mut self.0.lock().waiting);
        let mut ids: Vec<String> = questions.iter().map(|(id, _)| id.clone()).collect();
        ids.extend(own.map(str::to_owned));
        ids.sort_unstable();
        ids.dedup();
        let heads =
            query(&self.0.db, self.0.aggregate_type, &ids).await.map_err(StorageFailure::from);
        let answer = |id: &str| match &heads {
            Ok(heads) => Ok(heads.get(id).copied().unwrap_or_default()),
            Err(error) => Err(error.clone()),
        };
        for (id, reply) in questions {
            let _ = reply.send(answer(&id));
        }
        own.map_or(Ok(0), answer)
    }
}

impl Drop for Leading {
    fn drop(&mut self) {
        let mut shared = self.0.lock();
        shared.leading -= 1;
        if !shared.waiting.is_empty() {
            shared.leading += 1;
            let next = Leading(Arc::clone(&self.0));
            drop(shared);
            tokio::spawn(async move { next.ask(None).await });
        }
    }
}

/// One backward index probe per id on the events' key. A lone id gets a query of its own: the
/// list form costs PostgreSQL a fresh plan each time, more than the probe itself.
async fn query(
    db: &Database,
    aggregate_type: &str,
    ids: &[String],
) -> Result<HashMap<String, usize>, sqlx::Error> {
    const ONE: &str = "select $2, coalesce(max(sequence), 0) from events \
                       where aggregate_type = $1 and aggregate_id = $2";
    let rows: Vec<(String, i64)> = match (db, ids) {
        (Database::Postgres(pool), [id]) => {
            let (table, month) = crate::log_months::pg_events_of(aggregate_type, "$2");
            let one = format!(
                "select $2, coalesce(max(sequence), 0) from {table} \
                 where {month} aggregate_type = $1 and aggregate_id = $2"
            );
            sqlx::query_as(&one).bind(aggregate_type).bind(id).fetch_all(pool).await?
        }
        (Database::Postgres(pool), _) => {
            let (table, month) = crate::log_months::pg_events_of(aggregate_type, "h.id");
            let each = format!(
                "select h.id, coalesce((select max(sequence) from {table} \
                 where {month} aggregate_type = $1 and aggregate_id = h.id), 0) \
                 from unnest($2::text[]) as h(id)"
            );
            sqlx::query_as(&each).bind(aggregate_type).bind(ids).fetch_all(pool).await?
        }
        (Database::Sqlite(pool), [id]) => {
            sqlx::query_as(ONE).bind(aggregate_type).bind(id).fetch_all(pool).await?
        }
        (Database::Sqlite(pool), _) => {
            let ids = serde_json::to_string(ids).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            sqlx::query_as(
                "select h.value, coalesce((select max(e.sequence) from events e \
                 where e.aggregate_type = $1 and e.aggregate_id = h.value), 0) \
                 from json_each($2) as h",
            )
            .bind(aggregate_type)
            .bind(ids)
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(id, sequence)| (id, usize::try_from(sequence).unwrap_or_default()))
        .collect())
}
