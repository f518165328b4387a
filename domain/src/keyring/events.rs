//! What happened to a Keyring. Facts, past tense, never a secret: a mask, a fingerprint and a
//! reference to sealed material at most.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use super::preparation::{Fingerprint, MaterialId};
use crate::plan::PlanId;
use crate::provider::ProviderId;
use crate::verification::VerificationOutcome;

/// An event of the Keyring aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KeyringEvent {
    KeyStored(KeyStored),
    KeyRotated(KeyRotated),
    KeyDetailsChanged(KeyDetailsChanged),
    KeyRemoved(KeyRemoved),
    KeyVerified(KeyVerificationRecorded),
    KeyVerificationFailed(KeyVerificationRecorded),
    ProviderOrderSet(ProviderOrderSet),
    PlanChanged(PlanChanged),
    KeySuspended(KeySuspended),
    KeyReinstated(KeyReinstated),
    ByokAccessChanged(ByokAccessChanged),
    OrganizationErased(OrganizationErased),
    OrganizationRestarted(OrganizationRestarted),
    KeyMaterialResealed(KeyMaterialResealed),
}

/// A key version's material re-sealed under another master key (master-key rotation): the
/// same key, sealed anew; the previous material is destroyed when this is committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyMaterialResealed {
    pub provider: ProviderId,
    pub key_id: u32,
    pub version: u32,
    pub material_id: MaterialId,
    pub previous_material_id: MaterialId,
    /// The id of the master key it is sealed under now (an id, never the key).
    pub master_key_id: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyStored {
    pub provider: ProviderId,
    pub key_id: u32,
    pub version: u32,
    pub material_id: Option<MaterialId>,
    pub fingerprint: Option<Fingerprint>,
    pub masked: String,
    pub hint: String,
    pub description: Option<String>,
    pub default_model: Option<String>,
    pub endpoint: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRotated {
    pub provider: ProviderId,
    pub key_id: u32,
    pub version: u32,
    pub material_id: MaterialId,
    pub previous_material_id: Option<MaterialId>,
    pub fingerprint: Fingerprint,
    pub masked: String,
    pub hint: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyDetailsChanged {
    pub provider: ProviderId,
    pub key_id: u32,
    pub description: Option<String>,
    pub default_model: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemovalReason {
    Removed,
    /// Swapped for another provider's key on a one-provider plan.
    Replaced,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRemoved {
    pub provider: ProviderId,
    pub key_id: u32,
    pub version: u32,
    pub material_id: Option<MaterialId>,
    pub reason: RemovalReason,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyVerificationRecorded {
    pub provider: ProviderId,
    pub key_id: u32,
    pub version: u32,
    pub outcome: VerificationOutcome,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProviderOrderSet {
    pub providers: Vec<ProviderId>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanChanged {
    pub from: PlanId,
    pub to: PlanId,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspensionReason {
    /// The plan allows no BYOK at all.
    PlanWithoutByok,
    /// The plan allows fewer providers than have keys.
    PlanProviderLimit,
    /// A platform admin withdrew BYOK access.
    ByokAccessWithdrawn,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeySuspended {
    pub provider: ProviderId,
    pub key_id: u32,
    pub reason: SuspensionReason,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyReinstated {
    pub provider: ProviderId,
    pub key_id: u32,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ByokAccessChanged {
    pub enabled: bool,
    pub at: DateTime<Utc>,
}

/// The right to erasure: every key of the organization is destroyed with its material, its
/// provider order forgotten and its plan back to the default. The history stays: it holds no
/// key material.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationErased {
    /// The providers whose keys were destroyed.
    pub providers: Vec<ProviderId>,
    /// Their sealed material, destroyed when this event is committed.
    pub material_ids: Vec<MaterialId>,
    pub at: DateTime<Utc>,
}

/// The first change to an erased organization: it starts afresh under the same id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationRestarted {
    pub erased_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

impl KeyringEvent {
    /// Sealed material this event makes obsolete: it is destroyed once the event is committed.
    #[must_use]
    pub fn released_material(&self) -> Vec<MaterialId> {
        match self {
            Self::KeyRotated(e) => e.previous_material_id.into_iter().collect(),
            Self::KeyRemoved(e) => e.material_id.into_iter().collect(),
            Self::OrganizationErased(e) => e.material_ids.clone(),
            Self::KeyMaterialResealed(e) => vec![e.previous_material_id],
            _ => Vec::new(),
        }
    }

    /// Whether a model call could act differently after this event: all but a verification's
    /// record, which changes only what the key's last check said.
    #[must_use]
    pub fn changes_what_calls_use(&self) -> bool {
        !matches!(self, Self::KeyVerified(_) | Self::KeyVerificationFailed(_))
    }

    /// The provider the event is about, if any.
    #[must_use]
    pub fn provider(&self) -> Option<ProviderId> {
        match self {
            Self::KeyStored(e) => Some(e.provider),
            Self::KeyRotated(e) => Some(e.provider),
            Self::KeyDetailsChanged(e) => Some(e.provider),
            Self::KeyRemoved(e) => Some(e.provider),
            Self::KeyVerified(e) | Self::KeyVerificationFailed(e) => Some(e.provider),
            Self::KeySuspended(e) => Some(e.provider),
            Self::KeyReinstated(e) => Some(e.provider),
            Self::KeyMaterialResealed(e) => Some(e.provider),
            Self::ProviderOrderSet(_)
            | Self::PlanChanged(_)
            | Self::ByokAccessChanged(_)
            | Self::OrganizationErased(_)
            | Self::OrganizationRestarted(_) => None,
        }
    }
}

impl DomainEvent for KeyringEvent {
    fn event_type(&self) -> String {
        let name = match self {
            Self::KeyStored(_) => "KeyStored",
            Self::KeyRotated(_) => "KeyRotated",
            Self::KeyDetailsChanged(_) => "KeyDetailsChanged",
            Self::KeyRemoved(_) => "KeyRemoved",
            Self::KeyVerified(_) => "KeyVerified",
            Self::KeyVerificationFailed(_) => "KeyVerificationFailed",
            Self::ProviderOrderSet(_) => "ProviderOrderSet",
            Self::PlanChanged(_) => "PlanChanged",
            Self::KeySuspended(_) => "KeySuspended",
            Self::KeyReinstated(_) => "KeyReinstated",
            Self::ByokAccessChanged(_) => "ByokAccessChanged",
            Self::OrganizationErased(_) => "OrganizationErased",
            Self::OrganizationRestarted(_) => "OrganizationRestarted",
            Self::KeyMaterialResealed(_) => "KeyMaterialResealed",
        };
        name.to_owned()
    }

    fn event_version(&self) -> String {
        "1.0".to_owned()
    }
}
