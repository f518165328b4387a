//! What a projection is: a pure fold of events into tables it owns.

use async_trait::async_trait;

use crate::log::LoggedEvent;
use keyledger_store::Tx;

/// A read model: a pure fold of events into its tables.
#[async_trait]
pub trait Projection: Send + Sync + std::fmt::Debug {
    /// The name used for its checkpoint and in `keyledger projections rebuild NAME`.
    fn name(&self) -> &'static str;

    /// The tables it owns (emptied by a rebuild).
    fn tables(&self) -> &'static [&'static str];

    /// The aggregate types whose events it shows (`Keyring`, `UsageLedger`): what wakes it, and
    /// what its lag and read-your-writes count.
    fn consumes(&self) -> &'static [&'static str];

    /// The aggregate types whose payloads it reads; the reader leaves the JSON of others out
    /// (their events still come, with the aggregate and position). Decoding JSON is most of
    /// what a projector spends on a model call's event, so a view that needs only the aggregate
    /// says so.
    fn reads_payloads_of(&self) -> &'static [&'static str] {
        self.consumes()
    }

    /// Whether it asks an event who caused it or when ([`LoggedEvent::actor`],
    /// [`LoggedEvent::occurred_at`]); a pipeline none of whose projections do reads no
    /// metadata, and its events then say `system` and no time.
    fn reads_metadata(&self) -> bool {
        true
    }

    /// How long, once woken, the projector may wait for more events before applying them to
    /// this projection: views that commands wait on (read-your-writes) take none; analytics
    /// fed by every model call gather a few milliseconds' worth into one transaction.
    fn gather(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// Indexes (name, `create index if not exists …`) that a rebuild drops while it loads and
    /// builds once at the end: cheaper than maintaining them row by row.
    fn bulk_load_indexes(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }

    /// Folds `events` (in global order, all after its checkpoint) into its tables within `tx`.
    async fn apply(&self, tx: &mut Tx, events: &[&LoggedEvent]) -> Result<(), ProjectionError>;

    /// Starts a step: one transaction that may apply several batches, when a backlog waits.
    /// By default each batch is applied as it comes; a projection with writes worth making
    /// once a transaction (sums over many events) gathers them until [`StepFold::finish`].
    fn begin_step(&self) -> Box<dyn StepFold + '_> {
        Box::new(EachBatch(self))
    }
}

/// A projection's part of one step.
#[async_trait]
pub trait StepFold: Send {
    /// Folds the next batch of the step (in global order, all after its checkpoint).
    async fn add(&mut self, tx: &mut Tx, events: &[&LoggedEvent]) -> Result<(), ProjectionError>;

    /// Writes whatever was kept for the end of the step, before the step commits.
    async fn finish(self: Box<Self>, tx: &mut Tx) -> Result<(), ProjectionError>;
}

/// The default step: [`Projection::apply`] for each batch.
struct EachBatch<'a, P: ?Sized>(&'a P);

#[async_trait]
impl<P: Projection + ?Sized> StepFold for EachBatch<'_, P> {
    async fn add(&mut self, tx: &mut Tx, events: &[&LoggedEvent]) -> Result<(), ProjectionError> {
        self.0.apply(tx, events).await
    }

    async fn finish(self: Box<Self>, _tx: &mut Tx) -> Result<(), ProjectionError> {
        Ok(())
    }
}

/// A projector failure.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error("projection storage: {0}")]
    Database(#[from] sqlx::Error),
    #[error("no projection named {0:?}")]
    Unknown(String),
}
