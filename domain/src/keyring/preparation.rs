//! A command is decided in two pure steps with the world's work between them: [`prepare`]
//! checks what the state and the command tell and says what the world must do ([`Preparation`]:
//! ask the provider, seal the key); `infra` does it; [`decide`] turns what it did
//! ([`Prepared`]) into events. Nothing here waits or writes, so a refused command has changed
//! nothing anywhere.
//!
//! [`prepare`]: crate::Keyring::prepare
//! [`decide`]: crate::Keyring::decide

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api_key::ApiKey;
use crate::plan::PlanCatalogue;
use crate::provider::ProviderId;
use crate::verification::VerificationOutcome;

/// Reference to a sealed key version in the key-material store. The material itself never
/// enters the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MaterialId(pub Uuid);

/// A keyed fingerprint (HMAC) of a key, to tell keys apart without keeping them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fingerprint(pub String);

/// What sealed material is bound to: opening it anywhere else fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaterialBinding {
    pub provider: ProviderId,
    pub key_id: u32,
    pub version: u32,
}

/// What the rules read of the world while deciding: all of it at hand, none of it I/O.
pub trait KeyringContext: Send + Sync {
    /// The operator's plan catalogue.
    fn plans(&self) -> &PlanCatalogue;

    /// The time the decision is made.
    fn now(&self) -> DateTime<Utc>;

    /// A fingerprint of `key` for this organization.
    fn fingerprint(&self, key: &ApiKey) -> Fingerprint;

    /// Whether `key` is the key `fingerprint` was taken of (constant time).
    fn is_same_key(&self, key: &ApiKey, fingerprint: &Fingerprint) -> bool;
}

/// What the world must do before a command can be decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preparation {
    /// Ask the provider whether it accepts the command's key.
    pub check: Option<ProviderCheck>,
    /// Seal the command's key under the organization's keys, bound to this.
    pub seal: Option<MaterialBinding>,
    /// Re-seal this sealed material under the active master key if it is under another.
    pub reseal: Vec<(MaterialBinding, MaterialId)>,
}

/// A provider check of the command's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCheck {
    pub provider: ProviderId,
    /// Where the provider lives, for providers that live where the organization says.
    pub endpoint: Option<String>,
}

/// What the world did for a [`Preparation`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// The provider's answer to the check.
    pub check: Option<VerificationOutcome>,
    /// The id the sealed key will be kept under (it is written with the events, or never).
    pub sealed: Option<MaterialId>,
    /// Material re-sealed under the active master key: what it replaces, and its new id
    /// (written with the events, or never).
    pub resealed: Vec<Resealed>,
}

/// One key version's material, re-sealed under another master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resealed {
    pub previous: MaterialId,
    pub material_id: MaterialId,
    /// The id of the master key it is now sealed under.
    pub master_key_id: String,
}

/// A command with what its preparation asked for: what the cqrs-es binding decides.
#[derive(Debug)]
pub struct PreparedCommand {
    pub command: super::KeyringCommand,
    pub prepared: Prepared,
}
