//! The global event log as the read side takes it: each stored event decoded into what it
//! says ([`Fact`]) and its metadata, over the store's reader of the global order
//! ([`keyledger_store::event_store::GlobalOrder`]).

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use serde_json::Value;

use cqrs_es::Aggregate;
use keyledger_domain::usage::{UsageEvent, UsageLedger};
use keyledger_domain::{Keyring, KeyringEvent};
use keyledger_store::event_store::{self, GlobalOrder, StoredEvent};
use keyledger_store::metadata::EventMetadata;
use keyledger_store::{Database, Tx};

pub use keyledger_store::event_store::{Cursor, ReadLimit, Selection};

/// An event as the log holds it, decoded.
#[derive(Debug, Clone)]
pub struct LoggedEvent {
    pub cursor: Cursor,
    /// The event as stored; [`LoggedEvent::fact`] is its payload's typed reading.
    pub stored: StoredEvent,
    pub fact: Fact,
    /// Its metadata, read when first asked (most views never ask).
    meta: OnceLock<EventMetadata>,
}

/// What an event says, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Fact {
    Keyring(KeyringEvent),
    Usage(UsageEvent),
    /// An event type this version does not know (from a newer writer): skipped by views.
    Unknown,
}

impl LoggedEvent {
    /// The payload as JSON.
    #[must_use]
    pub fn payload_json(&self) -> Value {
        serde_json::from_str(&self.stored.payload).unwrap_or(Value::Null)
    }

    /// The metadata as JSON.
    #[must_use]
    pub fn metadata_json(&self) -> Value {
        serde_json::from_str(&self.stored.metadata).unwrap_or(Value::Null)
    }

    /// Who caused the event (`sub` of the token), from its metadata.
    #[must_use]
    pub fn actor(&self) -> &str {
        self.meta().actor.as_deref().unwrap_or("system")
    }

    /// When the event happened, from its metadata.
    #[must_use]
    pub fn occurred_at(&self) -> Option<DateTime<Utc>> {
        self.meta().occurred_at
    }

    fn meta(&self) -> &EventMetadata {
        self.meta.get_or_init(|| EventMetadata::from_json(&self.stored.metadata))
    }

    fn decode(stored: StoredEvent) -> Self {
        let fact = match stored.aggregate_type.as_str() {
            _ if stored.payload == "null" => Fact::Unknown,
            t if t == <Keyring as Aggregate>::TYPE => {
                serde_json::from_str(&stored.payload).map(Fact::Keyring).unwrap_or(Fact::Unknown)
            }
            t if t == <UsageLedger as Aggregate>::TYPE => {
                serde_json::from_str(&stored.payload).map(Fact::Usage).unwrap_or(Fact::Unknown)
            }
            _ => Fact::Unknown,
        };
        Self { cursor: stored.cursor(), meta: OnceLock::new(), stored, fact }
    }
}

fn decoded(events: Vec<StoredEvent>) -> Vec<LoggedEvent> {
    events.into_iter().map(LoggedEvent::decode).collect()
}

/// Events read in global order under a [`ReadLimit`], decoded.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub events: Vec<LoggedEvent>,
    /// The read stopped at its limit rather than at the end of the log: more may wait.
    pub full: bool,
    /// Bytes of the events' JSON, as [`ReadLimit::json_bytes`] counts them.
    pub json_bytes: i64,
}

impl From<event_store::Batch> for Batch {
    fn from(read: event_store::Batch) -> Self {
        Self { events: decoded(read.events), full: read.full, json_bytes: read.json_bytes }
    }
}

/// The `selection`'s events after `cursor` that `limit` allows, read within `tx`, decoded.
///
/// # Errors
/// The database's error.
pub async fn read_after_in(
    tx: &mut Tx,
    cursor: Cursor,
    limit: ReadLimit,
    selection: Selection<'_>,
) -> Result<Batch, sqlx::Error> {
    Ok(event_store::read_after_in(tx, cursor, limit, selection).await?.into())
}

/// The global event log, decoded.
#[derive(Debug, Clone)]
pub struct EventLog {
    order: GlobalOrder,
}

impl EventLog {
    /// The log in `pool`'s database.
    #[must_use]
    pub fn new(pool: Database) -> Self {
        Self { order: GlobalOrder::new(pool) }
    }

    /// Up to `limit` of the `selection`'s events after `cursor`, in global order.
    ///
    /// # Errors
    /// The database's error.
    pub async fn read_after_of(
        &self,
        cursor: Cursor,
        limit: ReadLimit,
        selection: Selection<'_>,
    ) -> Result<Batch, sqlx::Error> {
        Ok(self.order.read_after_of(cursor, limit, selection).await?.into())
    }

    /// Up to `limit` events of `org` (its Keyring and usage ledgers) after the event at global
    /// position `after` (0: from the start), in global order.
    ///
    /// # Errors
    /// The database's error.
    pub async fn read_org_after(
        &self,
        org: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LoggedEvent>, sqlx::Error> {
        let own = [<Keyring as Aggregate>::TYPE];
        let ledgers = <UsageLedger as Aggregate>::TYPE;
        Ok(decoded(self.order.read_org_after(org, &own, ledgers, after, limit).await?))
    }

    /// [`GlobalOrder::read_aggregate_after`], decoded.
    ///
    /// # Errors
    /// The database's error.
    pub async fn read_aggregate_after(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after_sequence: i64,
        limit: i64,
    ) -> Result<Vec<LoggedEvent>, sqlx::Error> {
        let events =
            self.order.read_aggregate_after(aggregate_type, aggregate_id, after_sequence, limit);
        Ok(decoded(events.await?))
    }

    /// The store's reader underneath: positions and cursors, without decoding.
    #[must_use]
    pub fn order(&self) -> &GlobalOrder {
        &self.order
    }
}
