//! Group commit of commands on PostgreSQL: commands that commit while another group's
//! statement is out are committed together, in one statement and one transaction.
//!
//! Every command's commit notifies (the projector, and each replica's Keyring watch), and
//! PostgreSQL serializes notifying transactions: one holds a database-wide lock from its
//! notifications until its commit is flushed. One commit a command therefore made commands
//! wait in line for each other's flushes, whatever the number of callers. A group takes that
//! lock, and that flush, once for all of its commands.
//!
//! Nothing waits to fill a group: a lone command is committed at once, and a group is what
//! arrived while the previous one was being written. A group never holds two commands of one
//! aggregate (the second waits for the next group), so a command's conflict is its own: when
//! a group's statement is refused, each of its commands is committed alone, and the one that
//! lost its sequences to another writer is told so, as it would have been alone.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::global_order::Cursor;
use super::one_statement::{self, CommandCommit};

/// Commands waiting for a group at most: past this, committing ones wait to be queued.
const QUEUE: usize = 1_024;
/// Commands in one statement at most.
const GROUP: usize = 64;

type Outcome = Result<Option<Cursor>, sqlx::Error>;

/// The queue of one database's group commits; its task ends once this is dropped and the
/// commands queued before have been committed.
#[derive(Debug)]
pub(super) struct GroupCommitter {
    queue: mpsc::Sender<Queued>,
}

#[derive(Debug)]
struct Queued {
    commit: CommandCommit,
    answer: oneshot::Sender<Outcome>,
}

impl GroupCommitter {
    /// Starts committing for `pool`, on the current tokio runtime.
    pub(super) fn start(pool: PgPool) -> Self {
        let (queue, queued) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, queued));
        Self { queue }
    }

    /// Commits `commit` with whatever commands commit beside it; where its last event stands.
    ///
    /// # Errors
    /// The database's error; a unique violation when another writer took its sequences.
    pub(super) async fn commit(&self, commit: CommandCommit) -> Outcome {
        let (answer, outcome) = oneshot::channel();
        self.queue.send(Queued { commit, answer }).await.map_err(|_| sqlx::Error::PoolClosed)?;
        outcome.await.map_err(|_| sqlx::Error::WorkerCrashed)?
    }
}

async fn run(pool: PgPool, mut queued: mpsc::Receiver<Queued>) {
    let mut next: Option<Queued> = None;
    loop {
        let first = match next.take() {
            Some(first) => first,
            None => match queued.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let mut group = vec![first];
        while group.len() < GROUP {
            let Ok(more) = queued.try_recv() else { break };
            if group.iter().any(|q| q.commit.aggregate_id() == more.commit.aggregate_id()) {
                next = Some(more);
                break;
            }
            group.push(more);
        }
        commit_group(&pool, group).await;
    }
}

/// Commits `group` in one statement, or each command alone when the statement is refused.
async fn commit_group(pool: &PgPool, group: Vec<Queued>) {
    let commits: Vec<&CommandCommit> = group.iter().map(|q| &q.commit).collect();
    let outcomes: Vec<Outcome> = match one_statement::commit(pool, &commits).await {
        Ok(cursors) => cursors.into_iter().map(Ok).collect(),
        // Refused (a conflict, a constraint): nothing was written; alone, each command gets
        // its own answer.
        Err(sqlx::Error::Database(_)) if group.len() > 1 => {
            let mut outcomes = Vec::with_capacity(group.len());
            for commit in &commits {
                outcomes
                    .push(one_statement::commit(pool, &[commit]).await.map(|mut c| c.remove(0)));
            }
            outcomes
        }
        // Not served (the connection, the pool): every command of the group fails alike.
        Err(error) => {
            let said = error.to_string();
            std::iter::once(Err(error))
                .chain((1..group.len()).map(|_| Err(unserved(&said))))
                .collect()
        }
    };
    for (queued, outcome) in group.into_iter().zip(outcomes) {
        // A command whose caller has gone is committed all the same.
        let _ = queued.answer.send(outcome);
    }
}

/// The failure of a group's statement, as the other commands of the group are told it.
fn unserved(said: &str) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        format!("the group commit was not served: {said}"),
    ))
}
