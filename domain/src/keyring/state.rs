//! The Keyring's state and how each event changes it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::events::KeyringEvent;
use super::preparation::{Fingerprint, MaterialId};
use crate::mask::Mask;
use crate::plan::PlanId;
use crate::provider::ProviderId;
use crate::verification::Verification;

/// One organization's keys, plan and provider order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyring {
    pub(crate) plan: PlanId,
    pub(crate) byok_access: bool,
    /// Boxed, because a `BTreeMap` node keeps room for eleven entries: with the state inline, an
    /// organization with one key took 2.4 KB (11 × 216 bytes), about 24 MB of a process that
    /// caches 10,000 organizations.
    pub(crate) keys: BTreeMap<ProviderId, Box<KeyState>>,
    pub(crate) provider_order: Vec<ProviderId>,
    /// Key ids handed out so far; ids are never reused within an organization, not even
    /// after an erasure.
    pub(crate) keys_issued: u32,
    /// When the organization was erased, until its next change starts it afresh.
    #[serde(default)]
    pub(crate) erased_at: Option<DateTime<Utc>>,
}

impl Default for Keyring {
    fn default() -> Self {
        Self {
            plan: PlanId::starter(),
            byok_access: true,
            keys: BTreeMap::new(),
            provider_order: Vec::new(),
            keys_issued: 0,
            erased_at: None,
        }
    }
}

/// Whether a key is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    /// Kept sealed, not used, because the plan or BYOK access no longer allows it.
    Suspended,
}

impl KeyStatus {
    /// The contract's name of the status.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
        }
    }
}

/// The current version of one provider's key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyState {
    pub key_id: u32,
    pub version: u32,
    pub material_id: Option<MaterialId>,
    pub fingerprint: Option<Fingerprint>,
    pub mask: Mask,
    pub status: KeyStatus,
    pub description: Option<String>,
    pub default_model: Option<String>,
    pub endpoint: Option<String>,
    pub created_at: DateTime<Utc>,
    pub rotated_at: Option<DateTime<Utc>>,
    pub last_verification: Option<Verification>,
}

impl Keyring {
    /// The organization's plan.
    #[must_use]
    pub fn plan(&self) -> &PlanId {
        &self.plan
    }

    /// Whether the platform lets the organization bring its own keys at all.
    #[must_use]
    pub fn byok_access(&self) -> bool {
        self.byok_access
    }

    /// Every provider's current key, active or suspended, by provider id.
    #[must_use]
    pub fn keys(&self) -> &BTreeMap<ProviderId, Box<KeyState>> {
        &self.keys
    }

    /// The current key of `provider`, active or suspended.
    #[must_use]
    pub fn key(&self, provider: ProviderId) -> Option<&KeyState> {
        self.keys.get(&provider).map(Box::as_ref)
    }

    /// The order the organization's calls try providers in (pro plans and up).
    #[must_use]
    pub fn provider_order(&self) -> &[ProviderId] {
        &self.provider_order
    }

    /// The key of `provider` if it is active.
    #[must_use]
    pub fn active_key(&self, provider: ProviderId) -> Option<&KeyState> {
        self.keys.get(&provider).map(Box::as_ref).filter(|k| k.status == KeyStatus::Active)
    }

    /// When the organization was erased, if it is erased now.
    #[must_use]
    pub fn erased_at(&self) -> Option<DateTime<Utc>> {
        self.erased_at
    }

    /// Whether any key of the organization is in use.
    #[must_use]
    pub fn byok_active(&self) -> bool {
        self.keys.values().any(|k| k.status == KeyStatus::Active)
    }

    pub(crate) fn active_count(&self) -> usize {
        self.keys.values().filter(|k| k.status == KeyStatus::Active).count()
    }

    /// Applies one event.
    pub(crate) fn apply_event(&mut self, event: KeyringEvent) {
        use KeyringEvent as E;
        match event {
            E::KeyStored(e) => {
                self.keys_issued = self.keys_issued.max(e.key_id);
                let key = Box::new(KeyState {
                    key_id: e.key_id,
                    version: e.version,
                    material_id: e.material_id,
                    fingerprint: e.fingerprint,
                    mask: Mask { masked: e.masked, hint: e.hint },
                    status: KeyStatus::Active,
                    description: e.description,
                    default_model: e.default_model,
                    endpoint: e.endpoint,
                    created_at: e.at,
                    rotated_at: None,
                    last_verification: None,
                });
                self.keys.insert(e.provider, key);
            }
            E::KeyRotated(e) => {
                if let Some(key) = self.keys.get_mut(&e.provider) {
                    key.version = e.version;
                    key.material_id = Some(e.material_id);
                    key.fingerprint = Some(e.fingerprint);
                    key.mask = Mask { masked: e.masked, hint: e.hint };
                    key.rotated_at = Some(e.at);
                    key.last_verification = None;
                }
            }
            E::KeyDetailsChanged(e) => {
                if let Some(key) = self.keys.get_mut(&e.provider) {
                    key.description = e.description;
                    key.default_model = e.default_model;
                }
            }
            E::KeyRemoved(e) => {
                self.keys.remove(&e.provider);
            }
            E::KeyVerified(e) | E::KeyVerificationFailed(e) => {
                if let Some(key) = self.keys.get_mut(&e.provider) {
                    key.last_verification =
                        Some(Verification { outcome: e.outcome, checked_at: e.at });
                }
            }
            E::ProviderOrderSet(e) => self.provider_order = e.providers,
            E::PlanChanged(e) => self.plan = e.to,
            E::KeySuspended(e) => self.set_status(e.provider, KeyStatus::Suspended),
            E::KeyReinstated(e) => self.set_status(e.provider, KeyStatus::Active),
            E::ByokAccessChanged(e) => self.byok_access = e.enabled,
            E::OrganizationErased(e) => {
                *self = Self {
                    keys_issued: self.keys_issued,
                    erased_at: Some(e.at),
                    ..Self::default()
                };
            }
            E::OrganizationRestarted(_) => self.erased_at = None,
            E::KeyMaterialResealed(e) => {
                if let Some(key) = self.keys.get_mut(&e.provider) {
                    key.material_id = Some(e.material_id);
                }
            }
        }
    }

    fn set_status(&mut self, provider: ProviderId, status: KeyStatus) {
        if let Some(key) = self.keys.get_mut(&provider) {
            key.status = status;
        }
    }
}

impl KeyStatus {
    /// Whether the key is in use.
    #[must_use]
    pub const fn is_active(self) -> bool {
        matches!(self, Self::Active)
    }
}
