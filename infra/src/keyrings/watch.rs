//! Keeping a replica's cached Keyrings true to the log without asking the log on every model
//! call (PostgreSQL, where many replicas share one log).
//!
//! The promise is strict: once a rotation or removal has returned, no call on any replica uses
//! the old key. Asking the log once a call keeps it at the price of a round trip a call; this
//! keeps it with messages instead:
//!
//! - Every commit of Keyring events notifies `keyring:<org>` in its own transaction, so every
//!   listening replica hears of it, in commit order, and drops that organization's state.
//!   Commands' commits announce the last sequence committed just before, in the same
//!   transaction (`keyring@<sequence>:<org>`, which a replica of an older version ignores): a
//!   state a command here left at that sequence stays kept for the next command (see
//!   `contexts`).
//! - A replica holds a lease in `keyledger_replicas`, renewed by a beat: a notification of its
//!   own, committed with the renewal. Hearing its own beat proves its listener hears everything
//!   committed before; only then may it use cached states, and only until shortly before the
//!   lease it renewed runs out. No beat heard, no renewal: a replica that went deaf stops
//!   trusting its cache before its lease lapses.
//! - After committing a Keyring command, a replica notifies a barrier and waits until every
//!   replica with a live lease has acknowledged it (each does so after the invalidations that
//!   came before it), or until that replica's lease has lapsed. Commands that commit while a
//!   barrier is out share the next one: any barrier notified after a commit vouches for it, so
//!   a replica runs one barrier at a time, not one per command.
//!
//! A replica that does not trust its cache asks the log on every call, as before.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::cache::CallCache;

const CHANNEL: &str = "keyledger_watch";
/// How often a replica renews its lease.
const BEAT: Duration = Duration::from_millis(500);
/// How long a renewed lease lasts.
const LEASE: Duration = Duration::from_secs(3);
/// Cached states are trusted until this long before the lease runs out: room for clocks that
/// run at slightly different rates and for a call that decided just before.
const MARGIN: Duration = Duration::from_secs(1);
/// A listener that heard nothing (not even its own beats) for this long is replaced.
const SILENCE: Duration = Duration::from_secs(2);

/// This replica's watch over the Keyrings it caches.
#[derive(Debug)]
pub(super) struct Watch {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    replica: String,
    pool: PgPool,
    cache: Arc<Mutex<CallCache>>,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Until when cached states may be used without asking the log.
    trusted_until: Option<Instant>,
    /// Whether the listener is listening (beats sent before that would never be heard).
    listening: bool,
    /// The replica has left: no more beats, no more trust.
    left: bool,
    /// The beat sent and not heard yet, and when it was sent.
    awaited: Option<(u64, Instant)>,
    beats: u64,
    /// Barriers this replica waits on, by token: who acknowledged, and a wake-up.
    barriers: HashMap<String, (HashSet<String>, Arc<Notify>)>,
    /// The next barrier, not notified yet: commands committed since the last one was notified
    /// wait for it. Its outcome is whether every replica acknowledged.
    next_round: Option<watch::Sender<Option<bool>>>,
    /// Whether a task is running barriers (one at a time, while commands wait for them).
    rounds_running: bool,
    /// The organization and sequence the last notification announced (`keyring@<n>:<org>`),
    /// for the `keyring:<org>` that follows it in the same commit.
    announced: Option<(String, usize)>,
}

impl Watch {
    /// Starts watching for `cache`: a listener and a beat, as tasks that end once this is
    /// dropped.
    pub(super) fn start(pool: &PgPool, cache: Arc<Mutex<CallCache>>) -> Self {
        let shared = Arc::new(Shared {
            replica: uuid::Uuid::new_v4().to_string(),
            pool: pool.clone(),
            cache,
            state: Mutex::new(State::default()),
        });
        tokio::spawn(listen(Arc::downgrade(&shared)));
        tokio::spawn(beat(Arc::downgrade(&shared)));
        Self { shared }
    }

    /// Whether cached states are known to be current.
    pub(super) fn trusted(&self) -> bool {
        self.shared.state().trusted_until.is_some_and(|until| Instant::now() < until)
    }

    /// Returns once no replica can still call with what the Keyring events committed at
    /// `committed` (this process's clock) replaced: every recently leased replica has
    /// acknowledged, or [`LEASE`] has passed since the commit. By then a replica still trusting
    /// its cache has heard a beat sent after the commit, and so, in commit order, the change.
    /// The database's clock only picks whom to wait for; how long is this process's to say.
    pub(super) async fn barrier(&self, committed: Instant) {
        let deadline = committed + LEASE;
        let mut outcome = Shared::join_next_round(&self.shared);
        let acknowledged =
            match tokio::time::timeout_at(deadline, outcome.wait_for(Option::is_some)).await {
                Ok(Ok(outcome)) => *outcome == Some(true),
                _ => false,
            };
        if !acknowledged {
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Gives up this replica's lease, so that no command waits for it once it has gone.
    pub(super) async fn leave(&self) {
        {
            let mut state = self.shared.state();
            state.left = true;
            state.trusted_until = None;
        }
        let _ = sqlx::query("delete from keyledger_replicas where id = $1")
            .bind(&self.shared.replica)
            .execute(&self.shared.pool)
            .await;
    }
}

/// What a process that does not watch the log waits after committing a Keyring command at
/// `committed`: long enough for every trusting replica to have heard of it.
pub(super) async fn outlast_leases(committed: Instant) {
    tokio::time::sleep_until(committed + LEASE).await;
}

/// A barrier's acknowledgements as they arrive; unregistered when dropped, also when the
/// command waiting on it is abandoned.
struct Waiting<'a> {
    shared: &'a Shared,
    token: String,
    woken: Arc<Notify>,
}

impl<'a> Waiting<'a> {
    fn register(shared: &'a Shared) -> Self {
        let (token, woken) = (uuid::Uuid::new_v4().to_string(), Arc::new(Notify::new()));
        shared.state().barriers.insert(token.clone(), (HashSet::new(), Arc::clone(&woken)));
        Self { shared, token, woken }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.shared.state().barriers.remove(&self.token);
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, CallCache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The outcome of the next barrier, one notified after this call: the barrier that vouches
    /// for a command committed before it. Starts the task that runs barriers if none runs.
    fn join_next_round(shared: &Arc<Self>) -> watch::Receiver<Option<bool>> {
        let mut state = shared.state();
        let round = state.next_round.get_or_insert_with(|| watch::channel(None).0);
        let outcome = round.subscribe();
        if !state.rounds_running {
            state.rounds_running = true;
            tokio::spawn(run_rounds(Arc::clone(shared)));
        }
        outcome
    }

    /// Notifies the barrier and waits until `deadline` for the replicas leased lately to
    /// acknowledge it; whether they all did.
    async fn await_acknowledgements(
        &self,
        waiting: &Waiting<'_>,
        deadline: Instant,
    ) -> sqlx::Result<bool> {
        // Acknowledgements are heard through the listener: it must be listening first.
        while !self.state().listening {
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The barrier, and whom it waits for, in one round trip. Generous: a replica whose
        // lease lapsed only just may still be trusting its cache by its own clock; waiting for
        // it costs at most the deadline.
        let mut pending: Vec<String> = sqlx::query_scalar(
            "with notified as (select pg_notify($1, $2)) \
             select id from keyledger_replicas cross join notified \
             where expires_at > now() - $3 * interval '1 millisecond'",
        )
        .bind(CHANNEL)
        .bind(format!("barrier:{}", waiting.token))
        .bind(i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        loop {
            let acked = self.state().barriers.get(&waiting.token).map(|(acked, _)| acked.clone());
            pending.retain(|id| !acked.as_ref().is_some_and(|a| a.contains(id)));
            if pending.is_empty() {
                return Ok(true);
            }
            if tokio::time::timeout_at(deadline, waiting.woken.notified()).await.is_err() {
                tracing::warn!(replicas = ?pending, "replicas did not acknowledge a Keyring change");
                return Ok(false);
            }
        }
    }

    /// Acts on one notification of the watch channel.
    fn heard(&self, payload: &str) {
        let Some((kind, rest)) = payload.split_once(':') else { return };
        let announced = self.state().announced.take();
        if let Some(sequence) = kind.strip_prefix("keyring@") {
            // `keyring@<sequence>:<org>`, just before the `keyring:<org>` it qualifies.
            self.state().announced = sequence.parse().ok().map(|n| (rest.to_owned(), n));
            return;
        }
        match kind {
            // `keyring:<org>`: the log moved on for `org`; to the sequence announced just
            // before when it was announced (commands' commits), else to somewhere unknown.
            "keyring" => {
                let sequence = announced.filter(|(org, _)| org == rest).map(|(_, n)| n);
                self.cache().invalidate(rest, sequence);
            }
            "barrier" => {
                let (pool, ack) = (self.pool.clone(), format!("ack:{rest}:{}", self.replica));
                tokio::spawn(async move {
                    let notify = sqlx::query("select pg_notify($1, $2)").bind(CHANNEL).bind(ack);
                    if let Err(error) = notify.execute(&pool).await {
                        tracing::warn!(%error, "cannot acknowledge a Keyring change");
                    }
                });
            }
            "ack" => {
                let Some((token, replica)) = rest.split_once(':') else { return };
                if let Some((acked, woken)) = self.state().barriers.get_mut(token) {
                    acked.insert(replica.to_owned());
                    woken.notify_one();
                }
            }
            "beat" => {
                let Some((replica, beat)) = rest.split_once(':') else { return };
                let mut state = self.state();
                let Some((awaited, sent)) = state.awaited else { return };
                if replica != self.replica || beat != awaited.to_string() {
                    return;
                }
                if state.left {
                    return;
                }
                if state.trusted_until.is_none_or(|until| Instant::now() >= until) {
                    // Trust begins anew: what was cached before may have missed a change.
                    self.cache().clear();
                }
                state.trusted_until = Some(sent + LEASE - MARGIN);
                state.awaited = None;
            }
            _ => {}
        }
    }

    /// The listener broke or went silent: nothing cached can be vouched for any more.
    fn lost(&self) {
        let mut state = self.state();
        state.trusted_until = None;
        state.listening = false;
        state.awaited = None;
        self.cache().clear();
    }
}

/// Runs barriers one after another while commands wait for one, each for the commands that
/// joined before it was notified; ends when none waits.
async fn run_rounds(shared: Arc<Shared>) {
    loop {
        let round = {
            let mut state = shared.state();
            let Some(round) = state.next_round.take() else {
                state.rounds_running = false;
                return;
            };
            round
        };
        let waiting = Waiting::register(&shared);
        let acknowledged =
            match shared.await_acknowledgements(&waiting, Instant::now() + LEASE).await {
                Ok(all) => all,
                Err(error) => {
                    tracing::warn!(%error, "cannot ask the replicas; waiting out their leases");
                    false
                }
            };
        drop(waiting);
        round.send_replace(Some(acknowledged));
    }
}

/// Hears the watch channel until the watch is dropped, replacing a listener that breaks or
/// goes silent.
async fn listen(shared: Weak<Shared>) {
    loop {
        let Some(pool) = shared.upgrade().map(|s| s.pool.clone()) else { return };
        let mut listener = match keyledger_store::database::listener(&pool).await {
            Ok(mut listener) => match listener.listen(CHANNEL).await {
                Ok(()) => listener,
                Err(_) => {
                    tokio::time::sleep(BEAT).await;
                    continue;
                }
            },
            Err(_) => {
                tokio::time::sleep(BEAT).await;
                continue;
            }
        };
        drop(pool);
        match shared.upgrade() {
            Some(s) => s.state().listening = true,
            None => return,
        }
        loop {
            let heard = tokio::time::timeout(SILENCE, listener.try_recv()).await;
            let Some(s) = shared.upgrade() else { return };
            if s.state().left {
                return;
            }
            match heard {
                Ok(Ok(Some(notification))) => s.heard(notification.payload()),
                // Dropped, failed or silent: whatever was said meanwhile went unheard.
                _ => {
                    s.lost();
                    break;
                }
            }
        }
    }
}

/// Renews the lease every [`BEAT`], each time once the previous beat was heard.
async fn beat(shared: Weak<Shared>) {
    let mut swept = false;
    loop {
        let Some(s) = shared.upgrade() else { return };
        let beat = {
            let mut state = s.state();
            if state.left {
                return;
            }
            if !state.listening || state.awaited.is_some() {
                None
            } else {
                state.beats += 1;
                let beat = (state.beats, Instant::now());
                state.awaited = Some(beat);
                Some(beat)
            }
        };
        if let Some((beat, _)) = beat {
            if !swept {
                // Leases of replicas long gone.
                let _ = sqlx::query(
                    "delete from keyledger_replicas where expires_at < now() - interval '1 hour'",
                )
                .execute(&s.pool)
                .await;
                swept = true;
            }
            let renewed = sqlx::query(
                "with lease as (insert into keyledger_replicas (id, expires_at) \
                 values ($1, now() + $2 * interval '1 millisecond') \
                 on conflict (id) do update set expires_at = excluded.expires_at) \
                 select pg_notify($3, $4)",
            )
            .bind(&s.replica)
            .bind(i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX))
            .bind(CHANNEL)
            .bind(format!("beat:{}:{beat}", s.replica))
            .execute(&s.pool)
            .await;
            if let Err(error) = renewed {
                tracing::warn!(%error, "cannot renew this replica's lease");
                s.state().awaited = None;
            }
        }
        // Until trust is established, the next beat follows as soon as this one is heard.
        let pause = if s.state().trusted_until.is_some() { BEAT } else { BEAT / 10 };
        drop(s);
        tokio::time::sleep(pause).await;
    }
}
