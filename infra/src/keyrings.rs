//! Running commands against organizations' Keyrings: load (snapshot + tail), decide, commit,
//! then shred the material the committed events made obsolete.
//!
//! This is cqrs-es's `CqrsFramework::execute` with what keyledger needs and it lacks: the
//! committed events and new state come back to the caller, every command gets services scoped
//! to its organization, and sealed material never outlives a command that did not commit.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};

use crate::crypto::{Binding, SealedKey};
use crate::db::Database;
use crate::event_store::{EventRepository, SnapshottingStore};
use crate::services::{OrgServices, ServiceDeps};
use keyledger_domain::keyring::{KeyState, MaterialId};
use keyledger_domain::{
    ApiKey, Keyring, KeyringCommand, KeyringError, KeyringServices, OrgId, ProviderId,
    Verification, VerificationOutcome,
};

/// Who asked for a command, recorded as event metadata.
#[derive(Debug, Clone)]
pub struct Actor {
    pub sub: String,
    pub role: String,
    pub request_id: String,
}

/// A command that was committed: the events it produced and the state after them.
#[derive(Debug)]
pub struct Committed {
    pub state: Keyring,
    pub events: Vec<EventEnvelope<Keyring>>,
}

/// Why a command did not commit.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rejected(KeyringError),
    #[error("the organization changed concurrently; retry")]
    Conflict,
    #[error("event store: {0}")]
    Storage(String),
}

impl From<AggregateError<KeyringError>> for CommandError {
    fn from(error: AggregateError<KeyringError>) -> Self {
        match error {
            AggregateError::UserError(e) => Self::Rejected(e),
            AggregateError::AggregateConflict => Self::Conflict,
            other => Self::Storage(other.to_string()),
        }
    }
}

/// All organizations' Keyrings.
#[derive(Debug)]
pub struct Keyrings {
    store: SnapshottingStore<EventRepository, Keyring>,
    deps: Arc<ServiceDeps>,
    db: Database,
    /// Keyring states by org with the sequence they are at; used only after the log confirms
    /// nothing happened since (see [`Keyrings::current`]).
    states: std::sync::Mutex<HashMap<String, (Keyring, usize)>>,
    /// Sealed material of the key versions in use, by id (ciphertext only; opening stays per
    /// call). Dropped when a version is released or its organization's state moves on.
    sealed: std::sync::Mutex<HashMap<MaterialId, SealedKey>>,
}

impl Keyrings {
    /// Keyrings kept in `db`.
    #[must_use]
    pub fn new(db: &Database, deps: Arc<ServiceDeps>) -> Self {
        Self {
            store: SnapshottingStore::new(EventRepository::new(db)),
            deps,
            db: db.clone(),
            states: std::sync::Mutex::new(HashMap::new()),
            sealed: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The event store underneath.
    #[must_use]
    pub fn store(&self) -> &SnapshottingStore<EventRepository, Keyring> {
        &self.store
    }

    /// The shared services.
    #[must_use]
    pub fn deps(&self) -> &Arc<ServiceDeps> {
        &self.deps
    }

    /// The current state of `org`'s Keyring (its defaults if it has no events).
    ///
    /// # Errors
    /// [`CommandError::Storage`] when the store cannot be read.
    pub async fn load(&self, org: &OrgId) -> Result<Keyring, CommandError> {
        Ok(self.store.load_aggregate(org.as_str()).await?.aggregate)
    }

    /// The current state of `org`'s Keyring for a model call: the state this process last saw
    /// if one index-only query shows the log has nothing newer for `org`, else loaded afresh.
    /// A rotation or removal committed by any replica is therefore seen by the next call.
    ///
    /// # Errors
    /// [`CommandError::Storage`] when the store cannot be read.
    pub async fn current(&self, org: &OrgId) -> Result<Keyring, CommandError> {
        let latest = self.latest_sequence(org).await?;
        if let Some((state, _)) = self
            .states
            .lock()
            .ok()
            .and_then(|s| s.get(org.as_str()).cloned())
            .filter(|(_, at)| *at == latest)
        {
            return Ok(state);
        }
        let context = self.store.load_aggregate(org.as_str()).await?;
        let (state, at) = (context.aggregate, context.current_sequence);
        let in_use: Vec<MaterialId> = state.keys.values().filter_map(|k| k.material_id).collect();
        if let Ok(mut sealed) = self.sealed.lock() {
            // Versions this organization no longer uses leave the cache with its old state.
            if let Some((old, _)) =
                self.states.lock().ok().and_then(|s| s.get(org.as_str()).cloned())
            {
                for id in old
                    .keys
                    .values()
                    .filter_map(|k| k.material_id)
                    .filter(|id| !in_use.contains(id))
                {
                    sealed.remove(&id);
                }
            }
        }
        if let Ok(mut states) = self.states.lock() {
            states.insert(org.as_str().to_owned(), (state.clone(), at));
        }
        Ok(state)
    }

    async fn latest_sequence(&self, org: &OrgId) -> Result<usize, CommandError> {
        let sql = "select coalesce(max(sequence), 0) from events where aggregate_type = 'Keyring' and aggregate_id = $1";
        let latest: i64 = match &self.db {
            Database::Postgres(pool) => {
                sqlx::query_scalar(sql).bind(org.as_str()).fetch_one(pool).await
            }
            Database::Sqlite(pool) => {
                sqlx::query_scalar(sql).bind(org.as_str()).fetch_one(pool).await
            }
        }
        .map_err(|e| CommandError::Storage(e.to_string()))?;
        Ok(usize::try_from(latest).unwrap_or_default())
    }

    /// The state of `org`'s Keyring as it was at `at`, rebuilt from the log: every event that
    /// had happened by then, in order.
    ///
    /// # Errors
    /// [`CommandError::Storage`] when the log cannot be read.
    pub async fn load_as_of(
        &self,
        org: &OrgId,
        at: DateTime<Utc>,
    ) -> Result<Keyring, CommandError> {
        let mut keyring = Keyring::default();
        for envelope in self.store.load_events(org.as_str()).await? {
            let occurred = envelope
                .metadata
                .get("occurred_at")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            // The log of one organization is in commit order: stop at the first later event
            // so the answer is always a state that really existed.
            if occurred.is_none_or(|t| t > at) {
                break;
            }
            keyring.apply(envelope.payload);
        }
        Ok(keyring)
    }

    /// Decides and commits `command` on `org`'s Keyring.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] when the rules refuse it, [`CommandError::Conflict`] when
    /// another command on the same organization committed first.
    #[tracing::instrument(skip_all, fields(org = %org))]
    pub async fn execute(
        &self,
        org: &OrgId,
        command: KeyringCommand,
        actor: &Actor,
    ) -> Result<Committed, CommandError> {
        let mut context = self.store.load_aggregate(org.as_str()).await?;
        let org_services = Arc::new(OrgServices::new(org.clone(), Arc::clone(&self.deps)));
        let services: Arc<dyn KeyringServices> = org_services.clone();
        let sink = EventSink::default();
        let decided = context.aggregate().handle(command, &services, &sink).await;
        let outcome = match decided {
            Ok(()) => {
                let state = context.aggregate.clone();
                let events = sink.collect().await;
                self.store
                    .commit(events, context, metadata(actor, org_services.now()))
                    .await
                    .map(|events| Committed { state, events })
                    .map_err(CommandError::from)
            }
            Err(rejection) => Err(CommandError::Rejected(rejection)),
        };
        match &outcome {
            Ok(committed) => {
                let released: Vec<_> =
                    committed.events.iter().filter_map(|e| e.payload.released_material()).collect();
                self.shred(&released).await;
            }
            Err(_) => self.shred(&org_services.sealed()).await,
        }
        outcome
    }

    /// Checks the stored key of `provider` with its provider and records the outcome.
    ///
    /// # Errors
    /// [`CommandError::Rejected`] with `KeyNotFound` when there is no key.
    pub async fn verify_key(
        &self,
        org: &OrgId,
        provider: ProviderId,
        actor: &Actor,
    ) -> Result<Verification, CommandError> {
        let state = self.load(org).await?;
        let key = state
            .keys
            .get(&provider)
            .ok_or(CommandError::Rejected(KeyringError::KeyNotFound(provider)))?;
        let plaintext = self.open(org, provider, key).await?;
        let outcome: VerificationOutcome =
            self.deps.providers.verify(provider, key.endpoint.as_deref(), plaintext.as_ref()).await;
        drop(plaintext);
        let command = KeyringCommand::RecordVerification {
            provider,
            key_id: key.key_id,
            version: key.version,
            outcome,
        };
        let committed = self.execute(org, command, actor).await?;
        let checked_at: DateTime<Utc> = committed
            .state
            .keys
            .get(&provider)
            .and_then(|k| k.last_verification.as_ref().map(|v| v.checked_at))
            .unwrap_or_else(Utc::now);
        Ok(Verification { outcome, checked_at })
    }

    /// Opens the sealed material of `key` for one use. `None` for keyless providers.
    ///
    /// # Errors
    /// [`CommandError::Conflict`] when the material was shredded by a concurrent rotation;
    /// [`CommandError::Storage`] when it cannot be read or does not open.
    pub async fn open(
        &self,
        org: &OrgId,
        provider: ProviderId,
        key: &KeyState,
    ) -> Result<Option<ApiKey>, CommandError> {
        let Some(material_id) = key.material_id else {
            return Ok(None);
        };
        let sealed = self.fetch_sealed(material_id).await?;
        self.open_sealed(org, provider, key, &sealed).map(Some)
    }

    /// [`Keyrings::open`] for a model call: the sealed material of versions in use is kept in
    /// memory (ciphertext only), so a call reads no material from storage; opening it stays
    /// per call.
    ///
    /// # Errors
    /// As [`Keyrings::open`].
    pub async fn open_for_call(
        &self,
        org: &OrgId,
        provider: ProviderId,
        key: &KeyState,
    ) -> Result<Option<ApiKey>, CommandError> {
        let Some(material_id) = key.material_id else {
            return Ok(None);
        };
        let cached = self.sealed.lock().ok().and_then(|s| s.get(&material_id).cloned());
        let sealed = match cached {
            Some(sealed) => sealed,
            None => {
                let sealed = self.fetch_sealed(material_id).await?;
                if let Ok(mut cache) = self.sealed.lock() {
                    cache.insert(material_id, sealed.clone());
                }
                sealed
            }
        };
        self.open_sealed(org, provider, key, &sealed).map(Some)
    }

    /// The sealed material `id`; a conflict if a concurrent rotation or removal shredded it.
    async fn fetch_sealed(&self, id: MaterialId) -> Result<SealedKey, CommandError> {
        self.deps
            .material
            .get(id)
            .await
            .map_err(|e| CommandError::Storage(e.to_string()))?
            .ok_or(CommandError::Conflict)
    }

    /// Opens `sealed` as version `key.version` of `org`'s `provider` key.
    fn open_sealed(
        &self,
        org: &OrgId,
        provider: ProviderId,
        key: &KeyState,
        sealed: &SealedKey,
    ) -> Result<ApiKey, CommandError> {
        let binding = Binding { org, provider, key_id: key.key_id, version: key.version };
        self.deps.envelope.open(binding, sealed).map_err(|e| CommandError::Storage(e.to_string()))
    }

    async fn shred(&self, ids: &[MaterialId]) {
        if ids.is_empty() {
            return;
        }
        if let Ok(mut sealed) = self.sealed.lock() {
            for id in ids {
                sealed.remove(id);
            }
        }
        if let Err(error) = self.deps.material.destroy(ids).await {
            // The event is committed either way; what is left is swept at the next start.
            tracing::error!(%error, count = ids.len(), "could not destroy obsolete key material");
        }
    }
}

fn metadata(actor: &Actor, at: DateTime<Utc>) -> HashMap<String, String> {
    HashMap::from([
        ("actor".to_owned(), actor.sub.clone()),
        ("role".to_owned(), actor.role.clone()),
        ("request_id".to_owned(), actor.request_id.clone()),
        ("occurred_at".to_owned(), at.to_rfc3339()),
    ])
}
