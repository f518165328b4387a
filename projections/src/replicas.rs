//! How replicas share the projections: advisory locks decide which replica runs each one, and
//! PostgreSQL notifications wake every replica's projector when events are committed.

use std::sync::Arc;

use futures::FutureExt as _;
use sqlx::{Connection, PgConnection};

use crate::projection::Projection;

/// Reads and drops every notification the server has sent so far, without waiting: the step
/// about to run reads what they announced.
///
/// They must be read off the socket, not only out of sqlx's buffer (which holds none unless
/// the listener ran queries). A busy log commits hundreds of times a second and the pipeline
/// used to read one notification a wake-up: the rest filled the socket, and the server's
/// backend, blocked writing the next one, held a snapshot all the while, so no dead row in
/// the whole database could be removed. The views' checkpoint row, rewritten every step, grew
/// to 166,000 dead versions (19 MB, 26 ms a read) in ten minutes of the soak.
///
/// At most [`DRAIN_AT_ONCE`] a call: the loop never yields, and a server sending faster than it
/// reads would otherwise hold the worker thread. What is left is read before the next step,
/// which follows at once (a notification is waiting).
pub(crate) fn drain_notifications(listener: &mut Option<sqlx::postgres::PgListener>) {
    if let Some(listener) = listener {
        // `try_recv` is cancel-safe: a message is taken off the buffer only once it is whole.
        // A lost connection answers `Ok(None)` and ends the loop; the next wait reconnects.
        for _ in 0..DRAIN_AT_ONCE {
            let Some(Ok(Some(_))) = listener.try_recv().now_or_never() else { return };
        }
    }
}

/// Notifications read per drain, at most: far more than a step's worth of commits (a few
/// hundred a second), about 100 KiB off the socket.
const DRAIN_AT_ONCE: usize = 2_000;

/// Listens for commits of events of the `consumed` aggregate types by any replica: each type
/// has a channel of its own, so a pipeline is not woken for commits it would not project.
pub(crate) async fn listen(
    pool: &sqlx::PgPool,
    consumed: &[&str],
) -> Option<sqlx::postgres::PgListener> {
    let mut listener = keyledger_store::database::listener(pool).await.ok()?;
    let mut channels: Vec<String> =
        consumed.iter().map(|t| format!("keyledger_events.{t}")).collect();
    // Projections of one pipeline consume the same types: a channel is listened to once.
    channels.sort_unstable();
    channels.dedup();
    listener.listen_all(channels.iter().map(String::as_str)).await.ok()?;
    Some(listener)
}

/// Waits for the next notification; false if the listener broke (polling carries on).
pub(crate) async fn next_notification(listener: &mut Option<sqlx::postgres::PgListener>) -> bool {
    match listener {
        Some(listener) => listener.recv().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The advisory locks this process holds, on a connection of its own: they last as long as the
/// connection, so a process that dies releases them.
#[derive(Default)]
pub(crate) struct Locks {
    connection: Option<PgConnection>,
    held: Vec<&'static str>,
}

impl Locks {
    pub(crate) async fn acquire(
        &mut self,
        pool: &sqlx::PgPool,
        projections: &[Arc<dyn Projection>],
    ) -> Vec<&'static str> {
        if self.held.len() == projections.len() {
            return self.held.clone();
        }
        if self.connection.is_none() {
            match pool.acquire().await {
                Ok(connection) => self.connection = Some(connection.detach()),
                Err(_) => return Vec::new(),
            }
        }
        let Some(connection) = self.connection.as_mut() else { return Vec::new() };
        for projection in projections {
            if self.held.contains(&projection.name()) {
                continue;
            }
            let got: Result<bool, _> = sqlx::query_scalar(
                "select pg_try_advisory_lock(hashtext('keyledger.projection'), hashtext($1))",
            )
            .bind(projection.name())
            .fetch_one(&mut *connection)
            .await;
            match got {
                Ok(true) => {
                    tracing::info!(projection = projection.name(), "running projection here");
                    self.held.push(projection.name());
                }
                Ok(false) => {}
                Err(_) => {
                    // The connection broke: its locks are gone with it.
                    if let Some(connection) = self.connection.take() {
                        let _ = connection.close().await;
                    }
                    self.held.clear();
                    break;
                }
            }
        }
        self.held.clone()
    }
}

impl std::fmt::Debug for Locks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locks").field("held", &self.held).finish()
    }
}
