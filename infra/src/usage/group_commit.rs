//! The one writer of this process's usage ledgers: it takes every command queued while its
//! last commit was under way, decides them in order on the ledgers in memory, and commits all
//! their events in one transaction.
//!
//! One commit per call would spend the database on round trips and log flushes; one per batch
//! keeps recording ahead of the gateway. Commands to one ledger are decided one after another,
//! so a quota holds however many callers record at once; callers hear their answer only after
//! the commit, so a refusal is never decided on events that did not land.

use std::collections::{HashMap, HashSet};

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, DomainEvent};
use tokio::sync::{mpsc, oneshot};

use super::ledgers::{Cached, Done, Ledgers};
use super::recorder::RecordError;
use crate::event_store::{append, AppendError, SnapshotUpdate};
use keyledger_domain::usage::{UsageCommand, UsageLedger};

/// The most commands one transaction takes.
pub(super) const MAX_BATCH: usize = 512;

/// A command waiting for the writer.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) ledger: String,
    pub(super) command: UsageCommand,
    pub(super) metadata: HashMap<String, String>,
    pub(super) reply: oneshot::Sender<Result<Done, RecordError>>,
}

/// Commits what `queue` brings until every sender is gone.
pub(super) async fn run(ledgers: std::sync::Arc<Ledgers>, mut queue: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        commit_batch(&ledgers, std::mem::take(&mut batch)).await;
    }
}

/// What deciding a batch came to, before it is committed.
#[derive(Debug, Default)]
struct Decided {
    events: Vec<SerializedEvent>,
    /// Each touched ledger: the sequence it stood at before the batch, and its state after.
    ledgers: HashMap<String, (usize, Cached)>,
    /// Each command with its outcome, to be answered once the batch is committed.
    answers: Vec<(Queued, Result<Done, RecordError>)>,
    /// Commands left for a commit of their own: a request id repeated within the batch.
    alone: Vec<Queued>,
}

async fn commit_batch(ledgers: &Ledgers, batch: Vec<Queued>) {
    let mut decided = decide(ledgers, batch).await;
    let snapshots = snapshots(ledgers, &mut decided.ledgers);
    match append(&ledgers.db, &decided.events, &snapshots).await {
        Ok(()) => {
            for (id, (_, state)) in decided.ledgers {
                ledgers.remember(id, state);
            }
            for (queued, outcome) in decided.answers {
                let _ = queued.reply.send(outcome);
            }
        }
        // Another replica wrote one of these ledgers, or a request id was recorded before:
        // each command goes again on its own, on its ledger loaded afresh.
        Err(AppendError::Conflict) => {
            for id in decided.ledgers.keys() {
                ledgers.forget(id);
            }
            decided.alone.extend(decided.answers.into_iter().map(|(queued, _)| queued));
        }
        Err(AppendError::Storage(error)) => {
            for id in decided.ledgers.keys() {
                ledgers.forget(id);
            }
            for (queued, _) in decided.answers {
                let _ = queued.reply.send(Err(RecordError::Storage(error.to_string())));
            }
        }
    }
    for queued in decided.alone {
        let done = ledgers.commit_alone(&queued.ledger, queued.command, queued.metadata).await;
        let _ = queued.reply.send(done);
    }
}

/// Decides each command in order on its ledger's state in memory, collecting the events.
async fn decide(ledgers: &Ledgers, batch: Vec<Queued>) -> Decided {
    let mut decided = Decided::default();
    let mut request_ids = HashSet::new();
    for queued in batch {
        if let UsageCommand::Record(record) = &queued.command {
            if !request_ids.insert((record.call.org.clone(), record.call.request_id.clone())) {
                decided.alone.push(queued);
                continue;
            }
        }
        let outcome = decide_one(ledgers, &queued, &mut decided).await;
        decided.answers.push((queued, outcome));
    }
    decided
}

async fn decide_one(
    ledgers: &Ledgers,
    queued: &Queued,
    decided: &mut Decided,
) -> Result<Done, RecordError> {
    let (from, state) = match decided.ledgers.get(&queued.ledger) {
        Some((from, state)) => (*from, state.clone()),
        None => {
            let state = ledgers.state(&queued.ledger).await?;
            (state.sequence, state)
        }
    };
    let Cached { mut ledger, sequence, snapshot } = state;
    let sink = EventSink::default();
    ledger.handle(queued.command.clone(), &(), &sink).await.map_err(RecordError::Refused)?;
    let events = sink
        .collect()
        .await
        .iter()
        .zip(sequence + 1..)
        .map(|(event, at)| serialize(&queued.ledger, at, event, &queued.metadata))
        .collect::<Result<Vec<_>, _>>()?;
    let last = sequence + events.len();
    decided.events.extend(events);
    decided
        .ledgers
        .insert(queued.ledger.clone(), (from, Cached { ledger, sequence: last, snapshot }));
    Ok(Done::of(&queued.command, &queued.ledger, last))
}

fn serialize(
    ledger: &str,
    sequence: usize,
    event: &<UsageLedger as Aggregate>::Event,
    metadata: &HashMap<String, String>,
) -> Result<SerializedEvent, RecordError> {
    let storage = |e: serde_json::Error| RecordError::Storage(e.to_string());
    Ok(SerializedEvent::new(
        ledger.to_owned(),
        sequence,
        UsageLedger::TYPE.to_owned(),
        event.event_type(),
        event.event_version(),
        serde_json::to_value(event).map_err(storage)?,
        serde_json::to_value(metadata).map_err(storage)?,
    ))
}

/// Snapshots of the ledgers whose events in this batch cross a snapshot boundary, as the
/// store would take them one commit at a time; their snapshot counters move on with them.
fn snapshots(
    ledgers: &Ledgers,
    touched: &mut HashMap<String, (usize, Cached)>,
) -> Vec<SnapshotUpdate> {
    let mut snapshots = Vec::new();
    for (id, (from, state)) in touched.iter_mut() {
        if !ledgers.store.snapshot_after(*from, state.sequence) {
            continue;
        }
        let Ok(payload) = serde_json::to_value(&state.ledger) else {
            continue; // a snapshot is an optimisation: the events alone still load the ledger
        };
        let next = state.snapshot.map_or(1, |n| n + 1);
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
