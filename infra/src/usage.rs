//! Recording model calls on organizations' monthly usage ledgers.

use std::collections::HashMap;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};

use crate::db::Database;
use crate::event_store::{EventRepository, SnapshottingStore};
use crate::keyrings::Actor;
use keyledger_domain::usage::{ledger_id, RecordModelCall, UsageError, UsageLedger};
use keyledger_domain::OrgId;

/// Why a call was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Refused(UsageError),
    #[error("usage store: {0}")]
    Storage(String),
}

/// All organizations' usage ledgers.
#[derive(Debug)]
pub struct UsageRecorder {
    store: SnapshottingStore<EventRepository, UsageLedger>,
}

/// Attempts before concurrent recorders on one ledger give up.
const ATTEMPTS: usize = 20;

impl UsageRecorder {
    /// Ledgers kept in `db`.
    #[must_use]
    pub fn new(db: &Database) -> Self {
        Self { store: SnapshottingStore::new(EventRepository::new(db)) }
    }

    /// Records `call` on `org`'s ledger for the call's month; concurrent recordings are retried,
    /// so limits hold however many record at once.
    ///
    /// # Errors
    /// [`RecordError::Refused`] over quota or cost cap.
    pub async fn record(
        &self,
        org: &OrgId,
        call: RecordModelCall,
        actor: &Actor,
    ) -> Result<Vec<EventEnvelope<UsageLedger>>, RecordError> {
        let id = ledger_id(org, call.call.at);
        let metadata = HashMap::from([
            ("actor".to_owned(), actor.sub.clone()),
            ("role".to_owned(), actor.role.clone()),
            ("request_id".to_owned(), actor.request_id.clone()),
            ("occurred_at".to_owned(), call.call.at.to_rfc3339()),
        ]);
        let mut last_error = String::new();
        for _ in 0..ATTEMPTS {
            let mut context = self.store.load_aggregate(&id).await.map_err(storage)?;
            let sink = EventSink::default();
            context
                .aggregate()
                .handle(call.clone(), &(), &sink)
                .await
                .map_err(RecordError::Refused)?;
            match self.store.commit(sink.collect().await, context, metadata.clone()).await {
                Ok(events) => return Ok(events),
                Err(AggregateError::AggregateConflict) => last_error = "conflict".to_owned(),
                Err(other) => return Err(storage(other)),
            }
        }
        Err(RecordError::Storage(format!("gave up after {ATTEMPTS} attempts ({last_error})")))
    }
}

fn storage(error: AggregateError<UsageError>) -> RecordError {
    match error {
        AggregateError::UserError(refusal) => RecordError::Refused(refusal),
        other => RecordError::Storage(other.to_string()),
    }
}
