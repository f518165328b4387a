//! The Keyring's rules: given its state, a command and what the world did for it, which
//! events follow.

use super::commands::{KeyringCommand, RotateKey, StoreKey, UpdateKeyDetails};
use super::entitlement::reconcile;
use super::errors::KeyringError;
use super::events::{
    ByokAccessChanged, KeyDetailsChanged, KeyMaterialResealed, KeyRemoved, KeyRotated, KeyStored,
    KeyVerificationRecorded, KeyringEvent, OrganizationErased, OrganizationRestarted, PlanChanged,
    ProviderOrderSet, RemovalReason,
};
use super::preparation::{KeyringContext, Prepared};
use super::prepare::{check_detail, judge, MAX_DEFAULT_MODEL, MAX_DESCRIPTION};
use super::state::{KeyState, Keyring};
use crate::mask::Mask;
use crate::plan::PlanId;
use crate::provider::ProviderId;
use crate::verification::VerificationOutcome;

type Decision = Result<Vec<KeyringEvent>, KeyringError>;

impl Keyring {
    /// Phase two: decides `command` with what the world did for its preparation, without
    /// changing the state. Everything phase one refused is refused again: the state may have
    /// moved on in between.
    ///
    /// # Errors
    /// [`KeyringError`] when the command is refused.
    pub fn decide(
        &self,
        command: KeyringCommand,
        prepared: Prepared,
        context: &dyn KeyringContext,
    ) -> Decision {
        let mut events = self.decide_command(command, prepared, context)?;
        // The first change after an erasure says, in the history, that the organization
        // starts afresh under the same id.
        // (Erasing again decides nothing, so it never restarts.)
        if let (Some(erased_at), false) = (self.erased_at, events.is_empty()) {
            let restarted = OrganizationRestarted { erased_at, at: context.now() };
            events.insert(0, KeyringEvent::OrganizationRestarted(restarted));
        }
        Ok(events)
    }

    fn decide_command(
        &self,
        command: KeyringCommand,
        prepared: Prepared,
        context: &dyn KeyringContext,
    ) -> Decision {
        match command {
            KeyringCommand::StoreKey(store) => self.store_key(store, prepared, context),
            KeyringCommand::RotateKey(rotate) => self.rotate_key(rotate, prepared, context),
            KeyringCommand::UpdateKeyDetails(update) => self.update_details(update, context),
            KeyringCommand::RemoveKey { provider } => self.remove_key(provider, context),
            KeyringCommand::RecordVerification { provider, key_id, version, outcome } => {
                self.record_verification(provider, (key_id, version), outcome, context)
            }
            KeyringCommand::SetProviderOrder { providers } => {
                self.set_provider_order(providers, context)
            }
            KeyringCommand::ChangePlan { plan } => self.change_plan(plan, context),
            KeyringCommand::SetByokAccess { enabled } => self.set_byok_access(enabled, context),
            KeyringCommand::EraseOrganization => Ok(self.erase(context)),
            KeyringCommand::ResealMaterial => self.reseal(&prepared, context),
        }
    }

    /// One event per key version whose material was re-sealed; none if all of it already was
    /// under the active master key. Material this state no longer names is refused: the state
    /// it was prepared on has moved.
    fn reseal(&self, prepared: &Prepared, context: &dyn KeyringContext) -> Decision {
        let now = context.now();
        prepared
            .resealed
            .iter()
            .map(|resealed| {
                let (provider, key) = self
                    .keys
                    .iter()
                    .find(|(_, key)| key.material_id == Some(resealed.previous))
                    .ok_or(KeyringError::StaleMaterial)?;
                Ok(KeyringEvent::KeyMaterialResealed(KeyMaterialResealed {
                    provider: *provider,
                    key_id: key.key_id,
                    version: key.version,
                    material_id: resealed.material_id,
                    previous_material_id: resealed.previous,
                    master_key_id: resealed.master_key_id.clone(),
                    at: now,
                }))
            })
            .collect()
    }

    /// Erasing an erased organization that has not changed since changes nothing.
    fn erase(&self, context: &dyn KeyringContext) -> Vec<KeyringEvent> {
        if self.erased_at.is_some() {
            return Vec::new();
        }
        vec![KeyringEvent::OrganizationErased(OrganizationErased {
            providers: self.keys.keys().copied().collect(),
            material_ids: self.keys.values().filter_map(|k| k.material_id).collect(),
            at: context.now(),
        })]
    }

    fn store_key(
        &self,
        cmd: StoreKey,
        prepared: Prepared,
        context: &dyn KeyringContext,
    ) -> Decision {
        let replaces = self.check_store(&cmd, context)?;
        if cmd.verify {
            judge(prepared.check)?;
        }
        let now = context.now();
        let mut events = Vec::new();
        if replaces {
            events.extend(
                self.keys
                    .iter()
                    .filter(|(_, k)| k.status.is_active())
                    .map(|(provider, key)| removal(*provider, key, RemovalReason::Replaced, now)),
            );
        }
        let key_id = self.keys_issued + 1;
        let (material_id, fingerprint, mask) = match &cmd.key {
            Some(key) => (
                Some(prepared.sealed.ok_or(KeyringError::Unprepared)?),
                Some(context.fingerprint(key)),
                key.mask(),
            ),
            None => (None, None, Mask::keyless()),
        };
        events.push(KeyringEvent::KeyStored(KeyStored {
            provider: cmd.provider,
            key_id,
            version: 1,
            material_id,
            fingerprint,
            masked: mask.masked,
            hint: mask.hint,
            description: cmd.description,
            default_model: cmd.default_model,
            endpoint: cmd.endpoint,
            at: now,
        }));
        if cmd.verify {
            events.push(verified(cmd.provider, key_id, 1, VerificationOutcome::Valid, now));
        }
        Ok(events)
    }

    fn rotate_key(
        &self,
        cmd: RotateKey,
        prepared: Prepared,
        context: &dyn KeyringContext,
    ) -> Decision {
        let current = self.check_rotation(&cmd, context)?;
        if cmd.verify {
            judge(prepared.check)?;
        }
        let material_id = prepared.sealed.ok_or(KeyringError::Unprepared)?;
        let version = current.version + 1;
        let mask = cmd.key.mask();
        let now = context.now();
        let mut events = vec![KeyringEvent::KeyRotated(KeyRotated {
            provider: cmd.provider,
            key_id: current.key_id,
            version,
            material_id,
            previous_material_id: current.material_id,
            fingerprint: context.fingerprint(&cmd.key),
            masked: mask.masked,
            hint: mask.hint,
            at: now,
        })];
        if cmd.verify {
            events.push(verified(
                cmd.provider,
                current.key_id,
                version,
                VerificationOutcome::Valid,
                now,
            ));
        }
        Ok(events)
    }

    fn update_details(&self, cmd: UpdateKeyDetails, context: &dyn KeyringContext) -> Decision {
        let key = self.keys.get(&cmd.provider).ok_or(KeyringError::KeyNotFound(cmd.provider))?;
        let description = cmd.description.unwrap_or_else(|| key.description.clone());
        let default_model = cmd.default_model.unwrap_or_else(|| key.default_model.clone());
        check_detail("description", description.as_deref(), MAX_DESCRIPTION)?;
        check_detail("default_model", default_model.as_deref(), MAX_DEFAULT_MODEL)?;
        if description == key.description && default_model == key.default_model {
            return Ok(Vec::new());
        }
        Ok(vec![KeyringEvent::KeyDetailsChanged(KeyDetailsChanged {
            provider: cmd.provider,
            key_id: key.key_id,
            description,
            default_model,
            at: context.now(),
        })])
    }

    fn remove_key(&self, provider: ProviderId, context: &dyn KeyringContext) -> Decision {
        let key = self.keys.get(&provider).ok_or(KeyringError::KeyNotFound(provider))?;
        Ok(vec![removal(provider, key, RemovalReason::Removed, context.now())])
    }

    fn record_verification(
        &self,
        provider: ProviderId,
        (key_id, version): (u32, u32),
        outcome: VerificationOutcome,
        context: &dyn KeyringContext,
    ) -> Decision {
        let key = self.keys.get(&provider).ok_or(KeyringError::KeyNotFound(provider))?;
        // A new key starts at version 1 again, so the key id must match too.
        if (key.key_id, key.version) != (key_id, version) {
            return Err(KeyringError::StaleVerification);
        }
        Ok(vec![verified(provider, key_id, version, outcome, context.now())])
    }

    fn set_provider_order(
        &self,
        providers: Vec<ProviderId>,
        context: &dyn KeyringContext,
    ) -> Decision {
        let allowed = context.plans().rules(&self.plan).is_some_and(|r| r.provider_order);
        if !allowed {
            return Err(KeyringError::ProviderOrderNotAllowed);
        }
        if let Some(twice) =
            providers.iter().enumerate().find_map(|(i, p)| providers[..i].contains(p).then_some(*p))
        {
            return Err(KeyringError::DuplicateProvider(twice));
        }
        if providers == self.provider_order {
            return Ok(Vec::new());
        }
        Ok(vec![KeyringEvent::ProviderOrderSet(ProviderOrderSet { providers, at: context.now() })])
    }

    fn change_plan(&self, plan: PlanId, context: &dyn KeyringContext) -> Decision {
        let rules =
            context.plans().rules(&plan).ok_or_else(|| KeyringError::UnknownPlan(plan.clone()))?;
        if plan == self.plan {
            return Ok(Vec::new());
        }
        let now = context.now();
        let mut events = vec![KeyringEvent::PlanChanged(PlanChanged {
            from: self.plan.clone(),
            to: plan,
            at: now,
        })];
        events.extend(reconcile(self, Some(rules), self.byok_access, now));
        Ok(events)
    }

    fn set_byok_access(&self, enabled: bool, context: &dyn KeyringContext) -> Decision {
        if enabled == self.byok_access {
            return Ok(Vec::new());
        }
        let now = context.now();
        let mut events =
            vec![KeyringEvent::ByokAccessChanged(ByokAccessChanged { enabled, at: now })];
        events.extend(reconcile(self, context.plans().rules(&self.plan), enabled, now));
        Ok(events)
    }
}

fn removal(
    provider: ProviderId,
    key: &KeyState,
    reason: RemovalReason,
    at: chrono::DateTime<chrono::Utc>,
) -> KeyringEvent {
    KeyringEvent::KeyRemoved(KeyRemoved {
        provider,
        key_id: key.key_id,
        version: key.version,
        material_id: key.material_id,
        reason,
        at,
    })
}

fn verified(
    provider: ProviderId,
    key_id: u32,
    version: u32,
    outcome: VerificationOutcome,
    at: chrono::DateTime<chrono::Utc>,
) -> KeyringEvent {
    let recorded = KeyVerificationRecorded { provider, key_id, version, outcome, at };
    if outcome.is_ok() {
        KeyringEvent::KeyVerified(recorded)
    } else {
        KeyringEvent::KeyVerificationFailed(recorded)
    }
}
