//! The usage recorder: what the API asks of the ledgers, answered by the group-commit writer.

use std::sync::Arc;

use cqrs_es::EventStore;
use tokio::sync::{mpsc, oneshot};

use super::backlog::Unsettled;
use super::group_commit::{self, Queued, Reply, MAX_BATCH};
use super::ledgers::{storage, Done, Ledgers};
use super::outcome::{RecordError, Recorded};
use keyledger_domain::usage::{
    ledger_id, ModelCallRecorded, RecordModelCall, ReleasePlatformCall, ReservePlatformCall,
    UsageCommand, UsageLedger,
};
use keyledger_domain::OrgId;
use keyledger_store::metadata::Actor;
use keyledger_store::{Database, StorageFailure};

/// All organizations' usage ledgers. Commands from every caller of this process go to one
/// writer, which commits them in batches (see `group_commit`).
#[derive(Debug)]
pub struct UsageRecorder {
    ledgers: Arc<Ledgers>,
    queue: mpsc::Sender<Queued>,
    /// The most model calls in flight or waiting to be recorded (`KEYLEDGER_USAGE_QUEUE`).
    bound: u64,
}

/// A model call's place among those in flight or waiting to be recorded: taken before the
/// call goes out, held until its record is committed (or the call is not made).
#[derive(Debug)]
pub struct Slot(Unsettled);

/// The usage backlog is full: the call is not made, so no record can be lost.
#[derive(Debug, thiserror::Error)]
#[error("too many model calls are in flight or waiting to be recorded ({0}); retry shortly")]
pub struct Overloaded(pub u64);

impl UsageRecorder {
    /// Ledgers kept in `db`, with their writer started on the current tokio runtime; it stops
    /// when the recorder is dropped. `committed` is called after each commit (to wake readers
    /// of the log that no database notification wakes).
    ///
    /// # Panics
    /// Outside a tokio runtime.
    #[must_use]
    pub fn new(db: &Database, bound: u64, committed: impl Fn() + Send + Sync + 'static) -> Self {
        let ledgers = Arc::new(Ledgers::new(db));
        // Room for a few batches: past that, waiting callers wait for the writer (back-pressure),
        // and commands nobody waits for (each holding a slot, so at most `bound` of them) queue
        // in tasks of their own.
        let (queue, queued) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(group_commit::run(Arc::clone(&ledgers), queued, Box::new(committed)));
        Self { ledgers, queue, bound: bound.max(1) }
    }

    /// Keeps at most `ledgers` usage ledgers in memory (`KEYLEDGER_CACHE_ORGS`).
    pub fn bound_cache(&self, ledgers: usize) {
        self.ledgers.bound(ledgers);
    }

    /// Usage ledgers this process holds in memory.
    #[must_use]
    pub fn cached_ledgers(&self) -> usize {
        self.ledgers.held()
    }

    /// A slot for a model call about to go out.
    ///
    /// # Errors
    /// [`Overloaded`] when `bound` calls are in flight or waiting to be recorded.
    pub fn admit(&self) -> Result<Slot, Overloaded> {
        Unsettled::within(&self.ledgers.unsettled, self.bound)
            .map(Slot)
            .ok_or(Overloaded(self.bound))
    }

    /// Model calls in flight or waiting to be recorded, and releases waiting to be written.
    #[must_use]
    pub fn backlog(&self) -> u64 {
        self.ledgers.unsettled.load(std::sync::atomic::Ordering::Acquire)
    }

    /// `org`'s ledger for the month of `at`, as stored.
    ///
    /// # Errors
    /// [`RecordError::Storage`] when it cannot be loaded.
    pub async fn ledger(
        &self,
        org: &OrgId,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<UsageLedger, RecordError> {
        let id = ledger_id(org, at);
        Ok(self.ledgers.store.load_aggregate(&id).await.map_err(storage)?.aggregate)
    }

    /// The call `org` recorded under `request_id`, if any.
    ///
    /// # Errors
    /// [`RecordError::Storage`] when the log cannot be read.
    pub async fn find(
        &self,
        org: &OrgId,
        request_id: &str,
    ) -> Result<Option<ModelCallRecorded>, RecordError> {
        self.ledgers.find(org, request_id).await
    }

    /// Records `call` on `org`'s ledger for the call's month, unless its request id was
    /// recorded before; limits hold however many record at once.
    ///
    /// # Errors
    /// [`RecordError::Refused`] over quota or cost cap.
    pub async fn record(
        &self,
        org: &OrgId,
        call: RecordModelCall,
        actor: &Actor,
    ) -> Result<Recorded, RecordError> {
        let at = call.call.at;
        let request_id = call.call.request_id.clone();
        let done = self.submit(ledger_id(org, at), UsageCommand::Record(call), actor, at).await;
        self.recorded(org, &request_id, done).await
    }

    /// Records `calls` as [`Self::record`] does each, decided in the order given: they are
    /// queued for the writer one after another before any answer is awaited (awaited all at
    /// once, their queueing would interleave as the runtime schedules them, and a quota could
    /// go to a later call of the batch).
    pub async fn record_all(
        &self,
        org: &OrgId,
        calls: Vec<RecordModelCall>,
        actor: &Actor,
    ) -> Vec<Result<Recorded, RecordError>> {
        let mut answers = Vec::with_capacity(calls.len());
        for call in calls {
            let at = call.call.at;
            let request_id = call.call.request_id.clone();
            let (reply, answer) = oneshot::channel();
            let queued = Queued {
                ledger: ledger_id(org, at),
                command: UsageCommand::Record(call),
                metadata: actor.metadata(at).into_map(),
                reply: Reply::Waiting(reply),
            };
            let queued = self.queue.send(queued).await.map_err(|_| writer_gone());
            answers.push((request_id, queued.map(|()| answer)));
        }
        let mut recorded = Vec::with_capacity(answers.len());
        for (request_id, answer) in answers {
            let done = match answer {
                Ok(answer) => answer.await.unwrap_or_else(|_| Err(writer_gone())),
                Err(error) => Err(error),
            };
            recorded.push(self.recorded(org, &request_id, done).await);
        }
        recorded
    }

    /// What committing a record of `request_id` came to, as its caller hears it.
    async fn recorded(
        &self,
        org: &OrgId,
        request_id: &str,
        done: Result<Done, RecordError>,
    ) -> Result<Recorded, RecordError> {
        match done {
            Ok(Done::Recorded(recorded)) => Ok(recorded),
            Ok(Done::Quota) => Err(RecordError::Storage(StorageFailure::other(
                "a record was taken for a reservation",
            ))),
            // The ledger decides the limits before the log sees the request id: a call sent
            // again once the quota is full is still the call recorded before, not a refusal.
            Err(refused @ RecordError::Refused(_)) => match self.find(org, request_id).await? {
                Some(first) => Ok(Recorded::Duplicate(first)),
                None => Err(refused),
            },
            Err(error) => Err(error),
        }
    }

    /// Takes a place in `org`'s platform-key quota for a call about to be made; the call is
    /// then recorded under the same request id without counting twice.
    ///
    /// # Errors
    /// [`RecordError::Refused`] when the quota or cost cap leaves no place.
    pub async fn reserve(
        &self,
        org: &OrgId,
        reserve: ReservePlatformCall,
        actor: &Actor,
    ) -> Result<(), RecordError> {
        let at = reserve.at;
        self.submit(ledger_id(org, at), UsageCommand::Reserve(reserve), actor, at).await.map(drop)
    }

    /// Gives back the quota place `release.request_id` reserved, the call not having been
    /// made; nothing if the call was recorded or never reserved.
    ///
    /// # Errors
    /// [`RecordError::Storage`] when the ledger cannot be written.
    pub async fn release(
        &self,
        org: &OrgId,
        release: ReleasePlatformCall,
        actor: &Actor,
    ) -> Result<(), RecordError> {
        let at = release.at;
        self.submit(ledger_id(org, at), UsageCommand::Release(release), actor, at).await.map(drop)
    }

    async fn submit(
        &self,
        ledger: String,
        command: UsageCommand,
        actor: &Actor,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Done, RecordError> {
        let (reply, answer) = oneshot::channel();
        let reply = Reply::Waiting(reply);
        let queued = Queued { ledger, command, metadata: actor.metadata(at).into_map(), reply };
        self.queue.send(queued).await.map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Records `call`, a call already made and answered under `slot`, without waiting for it:
    /// it shares a commit with the calls recorded within the next few milliseconds, and frees
    /// the slot once committed. A failure is logged.
    pub fn record_answered(&self, slot: Slot, org: &OrgId, call: ModelCallRecorded, actor: &Actor) {
        let (ledger, at) = (ledger_id(org, call.at), call.at);
        let command = UsageCommand::Record(RecordModelCall { call, limits: None });
        self.enqueue(ledger, command, actor, at, slot.0);
    }

    /// [`Self::release`] without waiting for it: for a reservation abandoned where nobody can
    /// wait (its caller went away).
    pub fn release_unwaited(&self, org: &OrgId, release: ReleasePlatformCall, actor: &Actor) {
        let (ledger, at) = (ledger_id(org, release.at), release.at);
        self.unwaited(ledger, UsageCommand::Release(release), actor, at);
    }

    fn unwaited(
        &self,
        ledger: String,
        command: UsageCommand,
        actor: &Actor,
        at: chrono::DateTime<chrono::Utc>,
    ) {
        self.enqueue(ledger, command, actor, at, Unsettled::new(&self.ledgers.unsettled));
    }

    fn enqueue(
        &self,
        ledger: String,
        command: UsageCommand,
        actor: &Actor,
        at: chrono::DateTime<chrono::Utc>,
        unsettled: Unsettled,
    ) {
        let reply = Reply::Unwaited(unsettled);
        let queued = Queued { ledger, command, metadata: actor.metadata(at).into_map(), reply };
        match self.queue.try_send(queued) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(queued)) => {
                // The writer is behind: this command waits its turn without holding up ours.
                let queue = self.queue.clone();
                tokio::spawn(async move {
                    if queue.send(queued).await.is_err() {
                        writer_stopped();
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => writer_stopped(),
        }
    }

    /// Waits, at most `patience`, until every command nobody waits for
    /// ([`Self::record_answered`], [`Self::release_unwaited`]) is committed, or has failed and
    /// been logged: a process stopping calls this so the calls it answered last are not lost
    /// with it. False if some were still pending.
    pub async fn settle(&self, patience: std::time::Duration) -> bool {
        let deadline = tokio::time::Instant::now() + patience;
        while self.ledgers.unsettled.load(std::sync::atomic::Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        true
    }

    /// Model calls recorded since this process started (repeated request ids not counted).
    #[must_use]
    pub fn recorded_total(&self) -> u64 {
        self.ledgers.recorded.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The writer stopped before it answered.
fn writer_gone() -> RecordError {
    RecordError::Storage(StorageFailure::other("the usage writer has stopped"))
}

/// A command the writer will never take (it has stopped): said, and not waited for.
fn writer_stopped() {
    tracing::error!("the usage writer has stopped: a usage command went unwritten");
}
