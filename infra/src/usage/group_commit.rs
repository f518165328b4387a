//! The one writer of this process's usage ledgers: it takes every command queued while its
//! last commit was under way, decides them in order on the ledgers in memory, and commits all
//! their events in one transaction. When many more wait, it takes twice as many and commits
//! them in two transactions side by side, each ledger's commands in one of them.
//!
//! One commit per call would spend the database on round trips and log flushes; one per batch
//! keeps recording ahead of the gateway. Commands to one ledger are decided one after another,
//! so a quota holds however many callers record at once; callers hear their answer only after
//! the commit, so a refusal is never decided on events that did not land.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::SerializedEvent;
use cqrs_es::Aggregate;
use futures::FutureExt as _;
use tokio::sync::{mpsc, oneshot};

use super::backlog::Unsettled;
use super::ledgers::{Cached, Done, Freshness, Ledgers};
use super::outcome::{RecordError, Recorded};
use keyledger_domain::usage::{group_calls, UsageCommand, UsageEvent, UsageLedger};
use keyledger_store::event_store::{serialize_event, AppendError, Appender, SnapshotUpdate};
use keyledger_store::metadata::EventMetadata;
use keyledger_store::StorageFailure;

/// The most commands the writer takes for one transaction. When many more wait it takes twice
/// as many and splits them by ledger in two, so one ledger's commands may then fill one
/// transaction up to twice this.
pub(super) const MAX_BATCH: usize = 512;

/// A command waiting for the writer.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) ledger: String,
    pub(super) command: UsageCommand,
    pub(super) metadata: HashMap<String, String>,
    pub(super) reply: Reply,
}

/// Who hears a command's outcome.
#[derive(Debug)]
pub(super) enum Reply {
    /// A caller waiting for it.
    Waiting(oneshot::Sender<Result<Done, RecordError>>),
    /// Nobody (a call already answered): a failure is logged. The command counts as
    /// unsettled for as long as it exists, however it ends.
    Unwaited(#[allow(dead_code, reason = "held for what its drop does")] Unsettled),
}

impl Queued {
    /// Tells the command's outcome to whoever waits for it. A command nobody waits for that
    /// the database was unavailable to take is not given up: it comes back, to be tried again.
    fn answer(self, ledgers: &Ledgers, outcome: Result<Done, RecordError>) -> Option<Self> {
        if matches!(self.reply, Reply::Unwaited(_))
            && matches!(&outcome, Err(error) if error.unavailable())
        {
            return Some(self);
        }
        if let Ok(Done::Recorded(Recorded::New { .. })) = &outcome {
            ledgers.recorded.fetch_add(1, Ordering::Release);
        }
        match (self.reply, outcome) {
            (Reply::Waiting(reply), outcome) => {
                let _ = reply.send(outcome);
            }
            (Reply::Unwaited(_), Err(error)) => {
                tracing::error!(%error, ledger = %self.ledger, "could not write a usage command nobody waits for");
            }
            (Reply::Unwaited(_), Ok(_)) => {}
        }
        None
    }
}

/// How long the writer pauses before trying again commands the database was unavailable to
/// take, at first and at most.
const HELD_PAUSE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// Commits what `queue` brings until every sender is gone, calling `committed` after each
/// batch. A batch that panics is answered with errors (its callers' replies drop) and the
/// writer goes on.
///
/// While the database is unavailable, the calls already answered are held and tried again,
/// first in each batch, until it is back: billing data is not dropped for an outage. Their
/// slots stay taken meanwhile, so the backlog stays within `KEYLEDGER_USAGE_QUEUE` and new
/// calls are turned away once it is full; commands a caller waits for are answered at once
/// with the outage.
pub(super) async fn run(
    ledgers: Arc<Ledgers>,
    mut queue: mpsc::Receiver<Queued>,
    committed: Box<dyn Fn() + Send + Sync>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut held: Vec<Queued> = Vec::new();
    let mut pause = HELD_PAUSE.0;
    let mut appenders = (Appender::new(&ledgers.db), Appender::new(&ledgers.db));
    loop {
        if held.is_empty() {
            pause = HELD_PAUSE.0;
            if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
                break;
            }
            gather_unwaited(&mut queue, &mut batch).await;
        } else {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(HELD_PAUSE.1);
            batch.extend(held.drain(..held.len().min(MAX_BATCH)));
            take_waiting(&mut queue, &mut batch, MAX_BATCH);
        }
        // Many more waiting: twice as many taken, in two transactions side by side.
        let beside = if held.is_empty() && queue.len() >= BESIDE_FROM {
            take_waiting(&mut queue, &mut batch, 2 * MAX_BATCH);
            split_by_ledger(&mut batch)
        } else {
            Vec::new()
        };
        let first = std::mem::take(&mut batch);
        let batches = AssertUnwindSafe(async {
            let (first, beside) = futures::join!(
                commit_batch(&ledgers, &mut appenders.0, first),
                commit_batch(&ledgers, &mut appenders.1, beside),
            );
            first.into_iter().chain(beside).collect::<Vec<_>>()
        });
        match batches.catch_unwind().await {
            Ok(again) => {
                if again.is_empty() && !held.is_empty() {
                    pause = HELD_PAUSE.0; // the database is back: the rest at once
                }
                held.extend(again);
            }
            Err(_) => {
                tracing::error!("a usage batch panicked; its callers get an error");
                ledgers.forget_all();
            }
        }
        committed();
    }
    if !held.is_empty() {
        tracing::error!(commands = held.len(), "the usage writer stopped with calls unrecorded");
    }
}

/// Adds to `batch` what `queue` holds now, until `batch` holds `most`.
fn take_waiting(queue: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>, most: usize) {
    while batch.len() < most {
        match queue.try_recv() {
            Ok(queued) => batch.push(queued),
            Err(_) => break,
        }
    }
}

/// How many commands must still be waiting, once a batch is taken, for the writer to take as
/// many again and commit the two halves side by side. A commit takes the database a few
/// milliseconds in which the writer had nothing to do: with batches of usage queued
/// (`POST …/usage/batch` from several callers) a quarter of the machine stood idle. Fewer
/// waiting, they are better taken by one commit: each commit costs the database and the
/// views' projector a step of their own.
const BESIDE_FROM: usize = MAX_BATCH / 2;

/// Takes out of `batch` the commands of about half its ledgers, whole: each ledger's commands
/// stay in one batch, in the order they came, so the two batches can be decided and committed
/// side by side. Ledgers are given, in the order they first appear, to whichever batch holds
/// fewer commands so far.
fn split_by_ledger(batch: &mut Vec<Queued>) -> Vec<Queued> {
    let mut sizes: hashlink::LinkedHashMap<&str, usize> = hashlink::LinkedHashMap::new();
    for queued in batch.iter() {
        *sizes.entry(queued.ledger.as_str()).or_insert(0) += 1;
    }
    let (mut kept, mut moved, mut moved_size) = (0, HashSet::new(), 0);
    for (ledger, size) in sizes {
        if moved_size < kept {
            moved.insert(ledger.to_owned());
            moved_size += size;
        } else {
            kept += size;
        }
    }
    let (beside, first): (Vec<Queued>, Vec<Queued>) =
        std::mem::take(batch).into_iter().partition(|queued| moved.contains(&queued.ledger));
    *batch = first;
    beside
}

/// How long the writer waits for more when nobody waits for what it holds (the usage of model
/// calls already answered): every commit is a statement, its trigger and a log flush, and at one
/// connection the gateway's calls came a few to a commit, the database taking a third of the
/// machine beside the calls. A caller waiting for its record (`POST …/usage`) is never held.
const GATHER_UNWAITED: Duration = Duration::from_millis(2);

/// Adds to `batch` what `queue` brings within [`GATHER_UNWAITED`], while nobody waits for any
/// of it and it is not full.
async fn gather_unwaited(queue: &mut mpsc::Receiver<Queued>, batch: &mut Vec<Queued>) {
    let unwaited = |batch: &[Queued]| batch.iter().all(|q| matches!(q.reply, Reply::Unwaited(_)));
    let until = tokio::time::Instant::now() + GATHER_UNWAITED;
    while batch.len() < MAX_BATCH && unwaited(batch) {
        let more = queue.recv_many(batch, MAX_BATCH - batch.len());
        match tokio::time::timeout_at(until, more).await {
            Ok(0) | Err(_) => break, // every sender gone, or time is up
            Ok(_) => {}
        }
    }
}

/// Times a batch is decided and appended as a group before its commands go one by one: a
/// conflict (another replica took a sequence) is decided again on fresh ledgers; a storage
/// failure (a connection the server dropped) is tried again after a pause.
const GROUP_ATTEMPTS: usize = 3;

/// The most calls stored in one event. A ledger loads by replaying up to a snapshot interval
/// of events; bounding their calls bounds that replay.
const MAX_CALLS_PER_EVENT: usize = 100;

/// An event decided on a ledger, with the metadata of the command that caused it.
type PendingEvent = (UsageEvent, HashMap<String, String>);

/// What deciding a batch came to, before it is committed.
#[derive(Debug, Default)]
struct Decided {
    /// Each touched ledger's new events in the order decided, with their metadata; stored
    /// once the whole batch is decided, its calls in a row grouped (see [`group_calls`]). The
    /// ledgers are written in the order the batch first touched them.
    pending: hashlink::LinkedHashMap<String, Vec<PendingEvent>>,
    /// Each touched ledger: the sequence it stood at before the batch, and its state after.
    ledgers: HashMap<String, (usize, Cached)>,
    /// Each command with its outcome, to be answered once the batch is committed.
    answers: Vec<(Queued, Result<Done, RecordError>)>,
    /// Commands left for a commit of their own: a request id repeated within the batch, or a
    /// refusal decided on a ledger kept in memory (to be decided again on a fresh one).
    alone: Vec<Queued>,
}

/// Commits `batch`, answering its commands; returns those nobody waits for that the database
/// was unavailable to take.
async fn commit_batch(
    ledgers: &Ledgers,
    appender: &mut Appender,
    mut batch: Vec<Queued>,
) -> Vec<Queued> {
    if batch.is_empty() {
        return Vec::new(); // no second batch beside this commit
    }
    let mut held = Vec::new();
    let mut alone = Vec::new();
    let mut outage = None;
    for attempt in 1..=GROUP_ATTEMPTS {
        let mut decided = decide(ledgers, batch).await;
        alone.append(&mut decided.alone);
        let (events, grouped) = decided.store();
        let snapshots = snapshots(ledgers, &mut decided.ledgers, &grouped);
        let appended = appender.append(&events, &snapshots).await;
        if appended.is_ok() {
            for (id, (_, state)) in decided.ledgers {
                ledgers.remember(id, state);
            }
            for (queued, outcome) in decided.answers {
                held.extend(queued.answer(ledgers, outcome));
            }
            batch = Vec::new();
            break;
        }
        for id in decided.ledgers.keys() {
            ledgers.forget(id);
        }
        batch = decided.answers.into_iter().map(|(queued, _)| queued).collect();
        match appended {
            // A request id recorded before fails every try: each goes on its own.
            Err(AppendError::Conflict) if attempt > 1 => break,
            Err(AppendError::Conflict) => {}
            // A database still unavailable on a fresh connection is waited for by the writer's
            // held commands, with their pause, not by trying this batch again at once.
            Err(AppendError::Storage(error))
                if attempt == GROUP_ATTEMPTS
                    || (attempt > 1 && keyledger_store::is_unavailable(&error)) =>
            {
                let failure = StorageFailure::from(error);
                if !failure.unavailable() {
                    tracing::error!(error = %failure, commands = batch.len(), "usage batch not written");
                }
                for queued in batch.drain(..) {
                    let outcome = Err(RecordError::Storage(failure.clone()));
                    held.extend(queued.answer(ledgers, outcome));
                }
                outage = failure.unavailable().then_some(failure);
                break;
            }
            Err(AppendError::Storage(error)) => {
                tracing::warn!(%error, attempt, "usage batch not written; trying again");
                tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
            }
            Ok(()) => {}
        }
    }
    for queued in batch.into_iter().chain(alone) {
        let done = match &outage {
            Some(failure) => Err(RecordError::Storage(failure.clone())),
            None => ledgers.commit_alone(&queued.ledger, &queued.command, &queued.metadata).await,
        };
        held.extend(queued.answer(ledgers, done));
    }
    if !held.is_empty() {
        tracing::warn!(
            commands = held.len(),
            "the database is unavailable; usage records held until it is back"
        );
    }
    held
}

/// Decides each command in order on its ledger's state in memory, collecting the events.
async fn decide(ledgers: &Ledgers, batch: Vec<Queued>) -> Decided {
    let mut decided = Decided::default();
    let mut request_ids = HashSet::new();
    let mut loaded = HashSet::new();
    let mut prefetched = prefetch(ledgers, &batch).await;
    let mut outage: Option<StorageFailure> = None;
    for queued in batch {
        if let UsageCommand::Record(record) = &queued.command {
            if !request_ids.insert((record.call.org.clone(), record.call.request_id.clone())) {
                decided.alone.push(queued);
                continue;
            }
        }
        // Once the database turned out unavailable, the rest of the batch is not decided:
        // each ledger to load would wait out the pool again, and the commit would fail anyway.
        if let Some(failure) = &outage {
            decided.answers.push((queued, Err(RecordError::Storage(failure.clone()))));
            continue;
        }
        match decide_one(ledgers, &queued, &mut decided, &mut loaded, &mut prefetched).await {
            Err(RecordError::Refused(_)) if !loaded.contains(&queued.ledger) => {
                decided.alone.push(queued);
            }
            outcome => {
                if let Err(RecordError::Storage(failure)) = &outcome {
                    outage = failure.unavailable().then(|| failure.clone());
                }
                decided.answers.push((queued, outcome));
            }
        }
    }
    decided
}

/// Ledgers loaded at once for a batch, at most.
const PARALLEL_LOADS: usize = 16;

/// A ledger loaded ahead of deciding, or why it could not be.
type Prefetched = HashMap<String, Result<(Cached, Freshness), RecordError>>;

/// Loads the batch's ledgers this process does not hold, several at once: a batch that
/// names thousands of organizations for the first time (a replica just started, the first
/// calls of a month) would otherwise wait for their loads one after another while its
/// backlog fills.
async fn prefetch(ledgers: &Ledgers, batch: &[Queued]) -> Prefetched {
    use futures::StreamExt as _;
    let missing: HashSet<String> = batch
        .iter()
        .filter(|queued| !ledgers.holds(&queued.ledger))
        .map(|queued| queued.ledger.clone())
        .collect();
    if missing.len() < 2 {
        return Prefetched::new();
    }
    futures::stream::iter(missing)
        .map(|id: String| async move {
            let state = ledgers.state(&id).await;
            (id, state)
        })
        .buffer_unordered(PARALLEL_LOADS)
        .collect()
        .await
}

/// Decides `queued` on its ledger as the batch has it so far; `loaded` holds the ledgers
/// loaded from the store for this batch (their refusals stand).
async fn decide_one(
    ledgers: &Ledgers,
    queued: &Queued,
    decided: &mut Decided,
    loaded: &mut HashSet<String>,
    prefetched: &mut Prefetched,
) -> Result<Done, RecordError> {
    let (from, state) = match decided.ledgers.get(&queued.ledger) {
        Some((from, state)) => (*from, state.clone()),
        None => {
            let (state, freshness) = match prefetched.remove(&queued.ledger) {
                Some(prefetched) => prefetched?,
                None => ledgers.state(&queued.ledger).await?,
            };
            if freshness == Freshness::Loaded {
                loaded.insert(queued.ledger.clone());
            }
            (state.sequence, state)
        }
    };
    let Cached { mut ledger, sequence, snapshot } = state;
    let sink = EventSink::default();
    ledger.handle(queued.command.clone(), &(), &sink).await.map_err(RecordError::Refused)?;
    let pending = decided.pending.entry(queued.ledger.clone()).or_insert_with(Vec::new);
    pending.extend(sink.collect().await.into_iter().map(|e| (e, queued.metadata.clone())));
    decided.ledgers.insert(queued.ledger.clone(), (from, Cached { ledger, sequence, snapshot }));
    // The sequence is the ledger's last in the batch, known once it is stored.
    Ok(Done::of(&queued.command, &queued.ledger, sequence))
}

impl Decided {
    /// The batch's events as stored, each ledger's in the order decided with its calls in a
    /// row grouped, and the ledgers that got calls grouped; the touched ledgers' sequences
    /// and the answers' move to where they end. A ledger whose events cannot be serialized is
    /// dropped from the batch and its commands answered with the failure.
    fn store(&mut self) -> (Vec<SerializedEvent>, HashSet<String>) {
        let mut stored = Vec::new();
        let mut grouped = HashSet::new();
        let mut failed = HashMap::new();
        for (id, pending) in std::mem::take(&mut self.pending) {
            let Some((from, state)) = self.ledgers.get_mut(&id) else { continue };
            match serialize_ledger(&id, *from, pending) {
                Ok((events, calls_grouped)) => {
                    state.sequence = *from + events.len();
                    stored.extend(events);
                    if calls_grouped {
                        grouped.insert(id);
                    }
                }
                Err(error) => {
                    failed.insert(id, error);
                }
            }
        }
        for id in failed.keys() {
            self.ledgers.remove(id);
        }
        for (queued, outcome) in &mut self.answers {
            if let Some(error) = failed.get(&queued.ledger) {
                if outcome.is_ok() {
                    *outcome = Err(RecordError::Storage(StorageFailure::other(error.clone())));
                }
            } else if let Ok(Done::Recorded(Recorded::New { ledger_id, sequence, .. })) = outcome {
                if let Some((_, state)) = self.ledgers.get(ledger_id.as_str()) {
                    *sequence = state.sequence;
                }
            }
        }
        (stored, grouped)
    }
}

/// `pending`, the events decided on ledger `id` after its sequence `from`, as stored: each run
/// by one author (the same actor, role and request) with its calls in a row grouped into
/// events of at most [`MAX_CALLS_PER_EVENT`], under the run's first metadata; and whether any
/// calls were grouped. Calls of different authors are not grouped, so each event still says
/// who caused it.
fn serialize_ledger(
    id: &str,
    from: usize,
    pending: Vec<PendingEvent>,
) -> Result<(Vec<SerializedEvent>, bool), String> {
    let author = |metadata: &HashMap<String, String>| {
        let EventMetadata { actor, role, request_id, .. } = EventMetadata::from_map(metadata);
        (actor, role, request_id)
    };
    let mut runs: Vec<(_, HashMap<String, String>, Vec<UsageEvent>)> = Vec::new();
    for (event, metadata) in pending {
        let by = author(&metadata);
        match runs.last_mut() {
            Some((first, _, run)) if *first == by => run.push(event),
            _ => runs.push((by, metadata, vec![event])),
        }
    }
    let (mut events, mut grouped) = (Vec::new(), false);
    for (_, metadata, run) in runs {
        for event in group_calls(run, MAX_CALLS_PER_EVENT) {
            grouped |= matches!(event, UsageEvent::ModelCallsRecorded(_));
            let sequence = from + events.len() + 1;
            let event = serialize_event::<UsageLedger>(id, sequence, &event, &metadata)
                .map_err(|e| e.to_string())?;
            events.push(event);
        }
    }
    Ok((events, grouped))
}

/// Snapshots of the ledgers whose events in this batch cross a snapshot boundary, as the
/// store would take them one commit at a time, and of those `grouped` calls were stored for:
/// the store counts events, and a few events of a hundred calls each would otherwise leave
/// thousands of calls to replay after a snapshot. Their snapshot counters move on with them.
fn snapshots(
    ledgers: &Ledgers,
    touched: &mut HashMap<String, (usize, Cached)>,
    grouped: &HashSet<String>,
) -> Vec<SnapshotUpdate> {
    let mut snapshots = Vec::new();
    for (id, (from, state)) in touched.iter_mut() {
        let next = ledgers
            .store
            .next_snapshot(*from, state.sequence, state.snapshot)
            .or_else(|| grouped.contains(id).then(|| state.snapshot.map_or(1, |n| n + 1)));
        let Some(next) = next else {
            continue;
        };
        let Ok(payload) = serde_json::to_value(&state.ledger) else {
            continue; // a snapshot is an optimisation: the events alone still load the ledger
        };
        state.snapshot = Some(next);
        snapshots.push(SnapshotUpdate {
            aggregate_type: UsageLedger::TYPE.to_owned(),
            aggregate_id: id.clone(),
            last_sequence: state.sequence,
            current_snapshot: next,
            payload,
        });
    }
    snapshots
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    use keyledger_domain::usage::ReleasePlatformCall;
    use tokio::time::{sleep, Instant};

    use super::*;

    fn command(reply: Reply) -> Queued {
        let release = ReleasePlatformCall {
            org: "acme".to_owned(),
            request_id: "r".to_owned(),
            at: chrono::Utc::now(),
        };
        Queued {
            ledger: "acme/2026-12".to_owned(),
            command: UsageCommand::Release(release),
            metadata: HashMap::new(),
            reply,
        }
    }

    fn unwaited(count: &Arc<AtomicU64>) -> Queued {
        command(Reply::Unwaited(Unsettled::new(count)))
    }

    fn for_ledger(ledger: &str, n: usize) -> Queued {
        let count = Arc::new(AtomicU64::new(0));
        let mut queued = unwaited(&count);
        queued.ledger = ledger.to_owned();
        queued.metadata.insert("n".to_owned(), n.to_string());
        queued
    }

    fn order(batch: &[Queued]) -> Vec<(String, String)> {
        batch.iter().map(|q| (q.ledger.clone(), q.metadata["n"].clone())).collect()
    }

    /// Split in two, each ledger's commands stay together and in their order, and the halves
    /// hold about as many commands each.
    #[test]
    fn a_batch_splits_by_whole_ledgers_in_order() {
        let ledgers = ["a", "b", "a", "c", "d", "b", "a", "e", "c", "d"];
        let mut batch: Vec<Queued> =
            ledgers.iter().enumerate().map(|(n, ledger)| for_ledger(ledger, n)).collect();
        let all = order(&batch);
        let beside = split_by_ledger(&mut batch);
        let (first, beside) = (order(&batch), order(&beside));
        for ledger in ledgers {
            let in_first: Vec<_> = first.iter().filter(|(l, _)| l == ledger).collect();
            let in_beside: Vec<_> = beside.iter().filter(|(l, _)| l == ledger).collect();
            let stayed: Vec<_> = all.iter().filter(|(l, _)| l == ledger).collect();
            assert!(in_first.is_empty() || in_beside.is_empty(), "{ledger} in both halves");
            assert!(in_first == stayed || in_beside == stayed, "{ledger} out of order");
        }
        assert_eq!(first.len() + beside.len(), all.len());
        assert!(first.len().abs_diff(beside.len()) <= 3, "{} and {}", first.len(), beside.len());
    }

    /// One ledger's batch is not split: its commands are decided one after another.
    #[test]
    fn one_ledger_stays_whole() {
        let mut batch: Vec<Queued> = (0..10).map(|n| for_ledger("a", n)).collect();
        let all = order(&batch);
        assert!(split_by_ledger(&mut batch).is_empty());
        assert_eq!(order(&batch), all);
    }

    /// The usage of calls already answered waits up to GATHER_UNWAITED for more, so they are
    /// committed many at a time; what comes later goes to the next commit.
    #[tokio::test(start_paused = true)]
    async fn commands_nobody_waits_for_are_gathered_for_a_moment() {
        let count = Arc::new(AtomicU64::new(0));
        let (send, mut queue) = mpsc::channel(16);
        let mut batch = vec![unwaited(&count)];
        let later = {
            let (send, count) = (send.clone(), Arc::clone(&count));
            tokio::spawn(async move {
                sleep(GATHER_UNWAITED / 2).await;
                for _ in 0..2 {
                    send.send(unwaited(&count)).await.expect("queued");
                }
                sleep(GATHER_UNWAITED * 2).await;
                send.send(unwaited(&count)).await.expect("queued");
            })
        };
        let began = Instant::now();
        gather_unwaited(&mut queue, &mut batch).await;
        assert_eq!(began.elapsed(), GATHER_UNWAITED, "it waited the moment out");
        assert_eq!(batch.len(), 3, "what came within the moment");
        later.await.expect("sent");
        assert_eq!(queue.try_recv().map(|_| ()), Ok(()), "the later one waits for the next");
        drop(send);
    }

    /// A caller waiting for its record is never held: a batch holding one is committed at once,
    /// and one arriving while others are gathered ends the gathering.
    #[tokio::test(start_paused = true)]
    async fn a_caller_waiting_for_its_record_is_never_held() {
        let count = Arc::new(AtomicU64::new(0));
        let (send, mut queue) = mpsc::channel(16);
        let (answer, _heard) = oneshot::channel();
        let mut batch = vec![command(Reply::Waiting(answer))];
        let began = Instant::now();
        gather_unwaited(&mut queue, &mut batch).await;
        assert_eq!(began.elapsed(), Duration::ZERO, "committed at once");
        assert_eq!(batch.len(), 1);

        let mut batch = vec![unwaited(&count)];
        let (answer, _heard) = oneshot::channel();
        let arriving = {
            let send = send.clone();
            tokio::spawn(async move {
                sleep(GATHER_UNWAITED / 2).await;
                send.send(command(Reply::Waiting(answer))).await.expect("queued");
            })
        };
        gather_unwaited(&mut queue, &mut batch).await;
        assert_eq!(began.elapsed(), GATHER_UNWAITED / 2, "no longer than until it came");
        assert_eq!(batch.len(), 2);
        arriving.await.expect("sent");
        drop(send);
    }
}
