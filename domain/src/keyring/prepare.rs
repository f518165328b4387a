//! Phase one of deciding a command ([`Keyring::prepare`]), and the checks both phases make:
//! what the state and the command alone refuse, and what the world must do before the
//! command can be decided.

use super::commands::{KeyringCommand, RotateKey, StoreKey};
use super::errors::KeyringError;
use super::preparation::{KeyringContext, MaterialBinding, Preparation, ProviderCheck};
use super::state::{KeyState, Keyring};
use crate::provider::ProviderId;
use crate::verification::VerificationOutcome;

pub(super) const MAX_DESCRIPTION: usize = 500;
pub(super) const MAX_DEFAULT_MODEL: usize = 200;

impl Keyring {
    /// Phase one: refuses what the state and the command alone refuse, and says what the world
    /// must do before [`Keyring::decide`] (check the key with its provider, seal it).
    ///
    /// # Errors
    /// [`KeyringError`] when the command is refused.
    pub fn prepare(
        &self,
        command: &KeyringCommand,
        context: &dyn KeyringContext,
    ) -> Result<Preparation, KeyringError> {
        match command {
            KeyringCommand::StoreKey(store) => {
                self.check_store(store, context)?;
                Ok(Preparation {
                    check: store.verify.then(|| ProviderCheck {
                        provider: store.provider,
                        endpoint: store.endpoint.clone(),
                    }),
                    seal: store.key.as_ref().map(|_| MaterialBinding {
                        provider: store.provider,
                        key_id: self.keys_issued + 1,
                        version: 1,
                    }),
                    reseal: Vec::new(),
                })
            }
            KeyringCommand::RotateKey(rotate) => {
                let current = self.check_rotation(rotate, context)?;
                Ok(Preparation {
                    check: rotate.verify.then(|| ProviderCheck {
                        provider: rotate.provider,
                        endpoint: current.endpoint.clone(),
                    }),
                    seal: Some(MaterialBinding {
                        provider: rotate.provider,
                        key_id: current.key_id,
                        version: current.version + 1,
                    }),
                    reseal: Vec::new(),
                })
            }
            KeyringCommand::ResealMaterial => Ok(Preparation {
                reseal: self
                    .keys
                    .iter()
                    .filter_map(|(provider, key)| {
                        let binding = MaterialBinding {
                            provider: *provider,
                            key_id: key.key_id,
                            version: key.version,
                        };
                        key.material_id.map(|id| (binding, id))
                    })
                    .collect(),
                ..Preparation::default()
            }),
            _ => Ok(Preparation::default()),
        }
    }

    /// The refusals of a store; whether it replaces the active keys (a one-provider plan).
    pub(super) fn check_store(
        &self,
        cmd: &StoreKey,
        context: &dyn KeyringContext,
    ) -> Result<bool, KeyringError> {
        let rules = context.plans().rules(&self.plan).filter(|r| r.byok && self.byok_access);
        let rules = rules.ok_or(KeyringError::ByokNotAllowed)?;
        if self.keys.contains_key(&cmd.provider) {
            return Err(KeyringError::KeyExists(cmd.provider));
        }
        match &cmd.key {
            None if !cmd.provider.key_is_optional() => {
                return Err(KeyringError::KeyRequired(cmd.provider))
            }
            Some(key) if key.provider() != cmd.provider => {
                return Err(KeyringError::KeyOfAnotherProvider(cmd.provider))
            }
            _ => {}
        }
        check_endpoint(cmd.provider, cmd.endpoint.as_deref())?;
        check_detail("description", cmd.description.as_deref(), MAX_DESCRIPTION)?;
        check_detail("default_model", cmd.default_model.as_deref(), MAX_DEFAULT_MODEL)?;
        if rules.allows_providers(self.active_count() + 1) {
            return Ok(false);
        }
        let max = rules.max_providers.unwrap_or(0);
        if cmd.replace && max == 1 {
            Ok(true)
        } else {
            Err(KeyringError::ProviderLimitReached { max })
        }
    }

    /// The refusals of a rotation; the key it rotates.
    pub(super) fn check_rotation(
        &self,
        cmd: &RotateKey,
        context: &dyn KeyringContext,
    ) -> Result<&KeyState, KeyringError> {
        let current =
            self.active_key(cmd.provider).ok_or(KeyringError::KeyNotFound(cmd.provider))?;
        if cmd.key.provider() != cmd.provider {
            return Err(KeyringError::KeyOfAnotherProvider(cmd.provider));
        }
        if current.fingerprint.as_ref().is_some_and(|fp| context.is_same_key(&cmd.key, fp)) {
            return Err(KeyringError::SameKey);
        }
        Ok(current)
    }
}

/// A provider check's answer as the command takes it: only an accepted key goes on.
pub(super) fn judge(check: Option<VerificationOutcome>) -> Result<(), KeyringError> {
    match check.ok_or(KeyringError::Unprepared)? {
        VerificationOutcome::Valid => Ok(()),
        refused if refused.is_refusal() => Err(KeyringError::VerificationFailed(refused)),
        // Not answered, rate limited or broken: the key was not judged either way.
        _ => Err(KeyringError::ProviderUnreachable),
    }
}

fn check_endpoint(provider: ProviderId, endpoint: Option<&str>) -> Result<(), KeyringError> {
    match (provider.needs_endpoint(), endpoint) {
        (true, None) => Err(KeyringError::EndpointRequired(provider)),
        (false, Some(_)) => Err(KeyringError::EndpointNotAccepted(provider)),
        _ => Ok(()),
    }
}

pub(super) fn check_detail(
    field: &'static str,
    value: Option<&str>,
    max: usize,
) -> Result<(), KeyringError> {
    match value {
        Some(text) if text.chars().count() > max => Err(KeyringError::DetailTooLong { field, max }),
        // Control characters would rewrite what a log line or a terminal shows.
        Some(text) if text.chars().any(char::is_control) => {
            Err(KeyringError::ControlCharacters { field })
        }
        _ => Ok(()),
    }
}
