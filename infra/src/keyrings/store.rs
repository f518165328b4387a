//! Running commands against organizations' Keyrings: load (snapshot + tail, or the state this
//! replica's previous command on the organization left: see `contexts`), prepare, check and
//! seal, decide, and commit the events with the material they keep and destroy.
//!
//! This is cqrs-es's `CqrsFramework::execute` with what keyledger needs and it lacks: the
//! world's work between the two pure phases of the rules, the committed events and new state
//! back to the caller, and key material written and destroyed in the events' transaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::{Aggregate, EventEnvelope, EventStore};

use super::calls::{CallKeys, KeyringStore};
use super::contexts::KeptKeyring;
use super::error::CommandError;
use uuid::Uuid;

use crate::crypto::Binding;
use crate::services::{OrgContext, ServiceDeps};
use keyledger_domain::keyring::{MaterialId, Preparation, Prepared};
use keyledger_domain::{
    Keyring, KeyringCommand, KeyringContext, KeyringError, OrgId, ProviderId, Verification,
    VerificationOutcome,
};
use keyledger_store::event_store::{Commit, Cursor, EventRepository, SnapshottingStore};
use keyledger_store::material::{MaterialChanges, MaterialRow};
use keyledger_store::metadata::{Actor, EventMetadata};
use keyledger_store::Database;

/// A command that was committed: the events it produced and the state after them.
#[derive(Debug)]
pub struct Committed {
    pub state: Keyring,
    pub events: Vec<EventEnvelope<Keyring>>,
    /// Where its last event stands in the global order, when the commit said so.
    pub cursor: Option<Cursor>,
}

/// The command side of organizations' Keyrings; the call-key side is [`CallKeys`].
#[derive(Debug)]
pub struct Keyrings {
    store: Arc<KeyringStore>,
    deps: Arc<ServiceDeps>,
    calls: Arc<CallKeys>,
    db: Database,
    /// Commands decided on a Keyring kept from this replica's last command on it, unloaded.
    decided_on_kept: AtomicU64,
}

impl Keyrings {
    /// Keyrings kept in `db`.
    #[must_use]
    pub fn new(db: &Database, deps: Arc<ServiceDeps>) -> Self {
        let store = Arc::new(SnapshottingStore::new(EventRepository::new(db)));
        let calls = Arc::new(CallKeys::new(db, Arc::clone(&store), Arc::clone(&deps)));
        Self { store, deps, calls, db: db.clone(), decided_on_kept: AtomicU64::new(0) }
    }

    /// The shared services.
    #[must_use]
    pub fn deps(&self) -> &Arc<ServiceDeps> {
        &self.deps
    }

    /// The plans this deployment offers, as commands decide under them.
    #[must_use]
    pub fn plans(&self) -> &keyledger_domain::PlanCatalogue {
        &self.deps.plans
    }

    /// What model calls use of the Keyrings, kept true to what commands here commit.
    #[must_use]
    pub fn calls(&self) -> &Arc<CallKeys> {
        &self.calls
    }

    /// Commands decided on the Keyring as this replica's previous command on it left it,
    /// without loading it from the log.
    #[must_use]
    pub fn decided_on_kept(&self) -> u64 {
        self.decided_on_kept.load(Ordering::Relaxed)
    }

    /// The current state of `org`'s Keyring (its defaults if it has no events).
    ///
    /// # Errors
    /// [`CommandError::Storage`] when the store cannot be read.
    pub async fn load(&self, org: &OrgId) -> Result<Keyring, CommandError> {
        Ok(self.store.load_aggregate(org.as_str()).await?.aggregate)
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
            let occurred = EventMetadata::from_map(&envelope.metadata).occurred_at;
            // The log of one organization is in commit order: stop at the first later event
            // so the answer is always a state that really existed.
            if occurred.is_none_or(|t| t > at) {
                break;
            }
            keyring.apply(envelope.payload);
        }
        Ok(keyring)
    }

    /// Decides and commits `command` on `org`'s Keyring, in the two pure phases of the rules
    /// with the world's work between them: prepare (refusals, what is needed), check the key
    /// with its provider and seal it (in memory), decide, then commit the events with the
    /// material they keep and destroy, in one transaction. A command that does not commit
    /// leaves nothing behind.
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
        self.execute_and(org, command, actor, |_| async {}).await
    }

    /// [`Keyrings::execute`], with `beside` run once the command is committed, at the same
    /// time as the wait for the replicas rather than after it: what else its caller waits for
    /// before answering (the views showing the command). Returns once both are done.
    ///
    /// # Errors
    /// As [`Keyrings::execute`]; `beside` runs only for a committed command.
    pub async fn execute_and<F, Fut>(
        &self,
        org: &OrgId,
        command: KeyringCommand,
        actor: &Actor,
        beside: F,
    ) -> Result<Committed, CommandError>
    where
        F: FnOnce(&Committed) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (committed, released) = self.decide_and_commit(org, command, actor).await?;
        let committed_at = tokio::time::Instant::now();
        let outlast = async {
            // Not done until no replica can still call with what this replaced.
            if let Some(released) = released {
                self.calls.outlast(committed_at, &released).await;
            }
        };
        tokio::join!(outlast, beside(&committed));
        Ok(committed)
    }

    /// Runs `command` up to its commit; the committed command and, when it changed what model
    /// calls use, the material it released (what replicas must be waited for).
    async fn decide_and_commit(
        &self,
        org: &OrgId,
        command: KeyringCommand,
        actor: &Actor,
    ) -> Result<(Committed, Option<Vec<MaterialId>>), CommandError> {
        // A state kept from this replica's last command here saves the load (see `contexts`).
        let (kept_state, epoch) = self.calls.kept_for_command(org);
        let mut context = match kept_state {
            Some(KeptKeyring { keyring, sequence, snapshot }) => {
                self.decided_on_kept.fetch_add(1, Ordering::Relaxed);
                EventStoreAggregateContext {
                    aggregate_id: org.as_str().to_owned(),
                    aggregate: keyring,
                    current_sequence: sequence,
                    current_snapshot: snapshot,
                }
            }
            None => self.store.load_aggregate(org.as_str()).await?,
        };
        let before = (context.current_sequence, context.current_snapshot);
        let rules = OrgContext::new(org.clone(), Arc::clone(&self.deps));
        let preparation =
            context.aggregate.prepare(&command, &rules).map_err(CommandError::Rejected)?;
        let (prepared, kept) = self.carry_out(org, &command, &preparation).await?;
        let events =
            context.aggregate.decide(command, prepared, &rules).map_err(CommandError::Rejected)?;
        let material = MaterialChanges {
            kept,
            destroyed: events.iter().flat_map(|e| e.released_material()).map(|id| id.0).collect(),
        };
        for event in &events {
            context.aggregate.apply(event.clone());
        }
        let metadata = actor.metadata(rules.now()).into_map();
        let written =
            self.store.commit_with_material(&self.db, events, &context, &metadata, &material).await;
        let Commit { events, cursor } = match written {
            Ok(commit) => commit,
            Err(error) => {
                // A conflict says the state was behind the log; a failure leaves it unknown.
                self.calls.forget_for_commands(org);
                return Err(error.into());
            }
        };
        let sequence = before.0 + events.len();
        let snapshot = self.store.next_snapshot(before.0, sequence, before.1).or(before.1);
        let left = KeptKeyring { keyring: context.aggregate.clone(), sequence, snapshot };
        self.calls.keep_for_commands(org, left, epoch);
        if !material.destroyed.is_empty() {
            self.deps.material.destroyed();
        }
        let released = events
            .iter()
            .any(|e| e.payload.changes_what_calls_use())
            .then(|| material.destroyed.iter().copied().map(MaterialId).collect());
        Ok((Committed { state: context.aggregate, events, cursor }, released))
    }

    /// Does what `preparation` asks for `command`: asks the provider about its key, seals it.
    /// Sealing is only encryption here; the sealed key is written with the events or never.
    async fn carry_out(
        &self,
        org: &OrgId,
        command: &KeyringCommand,
        preparation: &Preparation,
    ) -> Result<(Prepared, Vec<MaterialRow>), CommandError> {
        let mut prepared = Prepared::default();
        if let Some(check) = &preparation.check {
            let outcome = self.deps.providers.verify(
                check.provider,
                check.endpoint.as_deref(),
                command.key(),
            );
            prepared.check = Some(outcome.await);
        }
        let mut kept = Vec::new();
        if let (Some(binding), Some(key)) = (preparation.seal, command.key()) {
            let bound = Binding {
                org,
                provider: binding.provider,
                key_id: binding.key_id,
                version: binding.version,
            };
            let sealed = self.deps.envelope.seal(bound, key).map_err(CommandError::Crypto)?;
            let id = Uuid::new_v4();
            prepared.sealed = Some(MaterialId(id));
            kept.push(MaterialRow {
                id,
                org: org.as_str().to_owned(),
                provider: binding.provider.as_str(),
                key_id: binding.key_id,
                version: binding.version,
                sealed,
            });
        }
        for (binding, previous) in &preparation.reseal {
            if let Some((row, resealed)) =
                super::reseal::reseal_one(&self.deps, org, *binding, *previous).await?
            {
                kept.push(row);
                prepared.resealed.push(resealed);
            }
        }
        Ok((prepared, kept))
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
            .key(provider)
            .ok_or(CommandError::Rejected(KeyringError::KeyNotFound(provider)))?;
        let plaintext = self.calls.open(org, provider, key).await?;
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
            .key(provider)
            .and_then(|k| k.last_verification.as_ref().map(|v| v.checked_at))
            .unwrap_or_else(Utc::now);
        Ok(Verification { outcome, checked_at })
    }
}
