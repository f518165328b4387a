//! An event store that loads an aggregate from its latest snapshot plus the events after it,
//! and snapshots every [`SNAPSHOT_EVERY`] events.
//!
//! cqrs-es 0.5.0's own snapshot mode re-applies the new events to an aggregate the event sink
//! has already applied them to, so its snapshots count every event twice. Here the
//! post-command aggregate is snapshotted as it is.

use std::collections::HashMap;
use std::marker::PhantomData;

use cqrs_es::persist::{
    EventStoreAggregateContext, PersistedEventRepository, PersistenceError, SerializedEvent,
};
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventEnvelope, EventStore};

use super::append::{append_in, AppendError, SnapshotUpdate};
use super::global_order::Cursor;
use super::group_commit::GroupCommitter;
use super::one_statement::CommandCommit;
use super::repository::EventRepository;
use crate::database::Database;
use crate::material::MaterialChanges;

/// How many events may follow a snapshot before the next one is taken.
pub const SNAPSHOT_EVERY: usize = 50;

/// A cqrs-es [`EventStore`] with correct snapshots over keyledger's [`EventRepository`].
#[derive(Debug)]
pub struct SnapshottingStore<R, A> {
    repo: R,
    snapshot_every: usize,
    /// Commands' commits on PostgreSQL, grouped, on the repository's pool (started by the
    /// first).
    grouped: std::sync::OnceLock<GroupCommitter>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> SnapshottingStore<EventRepository, A>
where
    A: Aggregate,
{
    /// A store over `repo` that snapshots every [`SNAPSHOT_EVERY`] events.
    pub fn new(repo: EventRepository) -> Self {
        Self::with_snapshot_every(repo, SNAPSHOT_EVERY)
    }

    /// A store that snapshots every `snapshot_every` events (at least 1).
    pub fn with_snapshot_every(repo: EventRepository, snapshot_every: usize) -> Self {
        Self {
            repo,
            snapshot_every: snapshot_every.max(1),
            grouped: std::sync::OnceLock::new(),
            _aggregate: PhantomData,
        }
    }

    /// The number of the snapshot a commit that takes an aggregate from sequence `from` to
    /// `to` writes, its last snapshot being `current`; `None` when it writes none.
    #[must_use]
    pub fn next_snapshot(&self, from: usize, to: usize, current: Option<usize>) -> Option<usize> {
        (from / self.snapshot_every != to / self.snapshot_every)
            .then(|| current.map_or(1, |n| n + 1))
    }

    /// The repository underneath.
    pub fn repository(&self) -> &EventRepository {
        &self.repo
    }

    /// Loads the aggregate by replaying every event from the start, ignoring snapshots: the
    /// reference that snapshot loading must agree with.
    ///
    /// # Errors
    /// [`AggregateError`] when the events cannot be read or deserialized.
    pub async fn replay_from_events(
        &self,
        aggregate_id: &str,
    ) -> Result<A, AggregateError<A::Error>> {
        let mut aggregate = A::default();
        for envelope in self.load_events(aggregate_id).await? {
            aggregate.apply(envelope.payload);
        }
        Ok(aggregate)
    }
}

impl<A> EventStore<A> for SnapshottingStore<EventRepository, A>
where
    A: Aggregate,
{
    type AC = EventStoreAggregateContext<A>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let events = self.repo.get_events::<A>(aggregate_id).await?;
        events.into_iter().map(deserialize).collect()
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<A::Error>> {
        let (snapshot, mut tail) = self.repo.snapshot_and_tail::<A>(aggregate_id).await?;
        let fresh = |current_snapshot| EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: A::default(),
            current_sequence: 0,
            current_snapshot,
        };
        let mut context = match snapshot {
            Some(snapshot) => match serde_json::from_value::<A>(snapshot.aggregate) {
                Ok(aggregate) => EventStoreAggregateContext {
                    aggregate_id: aggregate_id.to_owned(),
                    aggregate,
                    current_sequence: snapshot.current_sequence,
                    current_snapshot: Some(snapshot.current_snapshot),
                },
                // A snapshot of an older shape of the aggregate: replay everything instead,
                // and keep counting snapshots so the next one replaces it.
                Err(_) => {
                    tail = self.repo.get_last_events::<A>(aggregate_id, 0).await?;
                    fresh(Some(snapshot.current_snapshot))
                }
            },
            None => fresh(None),
        };
        for event in tail {
            let envelope = deserialize::<A>(event)?;
            context.current_sequence = envelope.sequence;
            context.aggregate.apply(envelope.payload);
        }
        Ok(context)
    }

    async fn commit(
        &self,
        events: Vec<A::Event>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<A>>, AggregateError<A::Error>> {
        let staged = self.stage(events, &context, &metadata)?;
        if !staged.envelopes.is_empty() {
            let snapshot = staged.snapshot.map(|s| (s.aggregate_id, s.payload, s.current_snapshot));
            self.repo.persist::<A>(&staged.serialized, snapshot).await?;
        }
        Ok(staged.envelopes)
    }
}

/// A command's commit as a transaction of statements: its events, its snapshot and its
/// material; it cannot say where its events stand without reading again.
async fn commit_in_transaction(
    db: &Database,
    events: &[SerializedEvent],
    snapshot: Option<&SnapshotUpdate>,
    material: &MaterialChanges,
) -> Result<Option<Cursor>, sqlx::Error> {
    let mut tx = db.begin().await?;
    append_in(&mut tx, events, snapshot).await?;
    material.write(&mut tx).await?;
    tx.commit().await?;
    Ok(None)
}

/// A command's committed events, and where the last of them stands in the global order when
/// the commit could say (PostgreSQL) without another read.
#[derive(Debug)]
pub struct Commit<A: Aggregate> {
    pub events: Vec<EventEnvelope<A>>,
    pub cursor: Option<Cursor>,
}

/// A commit ready to be written: its events as cqrs-es hands them on and as the table keeps
/// them, and the snapshot it writes, if any.
struct Staged<A: Aggregate> {
    envelopes: Vec<EventEnvelope<A>>,
    serialized: Vec<SerializedEvent>,
    snapshot: Option<SnapshotUpdate>,
}

impl<A> SnapshottingStore<EventRepository, A>
where
    A: Aggregate,
{
    /// Commits `events` after `context` with the key material that comes and goes with them,
    /// all in one transaction of `db`: a command that does not commit leaves no material
    /// behind, and material its events release is gone when they are there.
    /// `context.aggregate` must be the state after `events`.
    ///
    /// # Errors
    /// [`AggregateError::AggregateConflict`] when another command took these sequences first
    /// (nothing is written); the database's error otherwise.
    pub async fn commit_with_material(
        &self,
        db: &Database,
        events: Vec<A::Event>,
        context: &EventStoreAggregateContext<A>,
        metadata: &HashMap<String, String>,
        material: &MaterialChanges,
    ) -> Result<Commit<A>, AggregateError<A::Error>> {
        let staged = self.stage(events, context, metadata)?;
        if staged.envelopes.is_empty() && material.kept.is_empty() && material.destroyed.is_empty()
        {
            return Ok(Commit { events: staged.envelopes, cursor: None });
        }
        let Staged { envelopes, serialized, snapshot } = staged;
        // Commands' commits on PostgreSQL go through the repository's group committer;
        // usage ledgers are kept by month, through the partitioned parent.
        let grouped = match (db, self.repo.pg_pool()) {
            (Database::Postgres(_), Some(pool))
                if !serialized.is_empty() && !crate::log_months::is_monthly(A::TYPE) =>
            {
                Some(self.grouped.get_or_init(|| GroupCommitter::start(pool.clone())))
            }
            _ => None,
        };
        let written = match grouped {
            Some(committer) => {
                let material = material.clone();
                committer.commit(CommandCommit { events: serialized, snapshot, material }).await
            }
            None => commit_in_transaction(db, &serialized, snapshot.as_ref(), material).await,
        };
        match written.map_err(AppendError::from) {
            Ok(cursor) => Ok(Commit { events: envelopes, cursor }),
            Err(AppendError::Conflict) => Err(AggregateError::AggregateConflict),
            Err(AppendError::Storage(error)) => {
                Err(AggregateError::DatabaseConnectionError(Box::new(error)))
            }
        }
    }

    fn stage(
        &self,
        events: Vec<A::Event>,
        context: &EventStoreAggregateContext<A>,
        metadata: &HashMap<String, String>,
    ) -> Result<Staged<A>, AggregateError<A::Error>> {
        let first_sequence = context.current_sequence + 1;
        let last_sequence = context.current_sequence + events.len();
        let envelopes: Vec<EventEnvelope<A>> = events
            .into_iter()
            .zip(first_sequence..)
            .map(|(payload, sequence)| EventEnvelope {
                aggregate_id: context.aggregate_id.clone(),
                sequence,
                payload,
                metadata: metadata.clone(),
            })
            .collect();
        let serialized = envelopes.iter().map(serialize).collect::<Result<Vec<_>, _>>()?;
        let next = (!envelopes.is_empty())
            .then(|| {
                self.next_snapshot(
                    context.current_sequence,
                    last_sequence,
                    context.current_snapshot,
                )
            })
            .flatten();
        let snapshot = match next {
            Some(next) => Some(SnapshotUpdate {
                aggregate_type: A::TYPE.to_owned(),
                aggregate_id: context.aggregate_id.clone(),
                last_sequence,
                current_snapshot: next,
                // The aggregate after the events: the event sink applied them, or the caller.
                payload: serde_json::to_value(&context.aggregate)
                    .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?,
            }),
            None => None,
        };
        Ok(Staged { envelopes, serialized, snapshot })
    }
}

fn serialize<A: Aggregate>(
    envelope: &EventEnvelope<A>,
) -> Result<SerializedEvent, PersistenceError> {
    Ok(serialize_event::<A>(
        &envelope.aggregate_id,
        envelope.sequence,
        &envelope.payload,
        &envelope.metadata,
    )?)
}

/// Event `sequence` of aggregate `id` as the events table stores it.
pub fn serialize_event<A: Aggregate>(
    id: &str,
    sequence: usize,
    event: &A::Event,
    metadata: &HashMap<String, String>,
) -> Result<SerializedEvent, serde_json::Error> {
    Ok(SerializedEvent {
        aggregate_id: id.to_owned(),
        sequence,
        aggregate_type: A::TYPE.to_owned(),
        event_type: event.event_type(),
        event_version: event.event_version(),
        payload: serde_json::to_value(event)?,
        metadata: serde_json::to_value(metadata)?,
    })
}

fn deserialize<A: Aggregate>(
    event: SerializedEvent,
) -> Result<EventEnvelope<A>, AggregateError<A::Error>> {
    let to_error = |e: serde_json::Error| AggregateError::DeserializationError(Box::new(e));
    Ok(EventEnvelope {
        aggregate_id: event.aggregate_id,
        sequence: event.sequence,
        payload: serde_json::from_value(event.payload).map_err(to_error)?,
        metadata: serde_json::from_value(event.metadata).map_err(to_error)?,
    })
}
