//! What callers ask a Keyring to do.

use crate::api_key::ApiKey;
use crate::plan::PlanId;
use crate::provider::ProviderId;
use crate::verification::VerificationOutcome;

/// A command to one organization's Keyring.
#[derive(Debug)]
pub enum KeyringCommand {
    StoreKey(StoreKey),
    RotateKey(RotateKey),
    UpdateKeyDetails(UpdateKeyDetails),
    RemoveKey {
        provider: ProviderId,
    },
    /// Remember the outcome of a provider check of version `version` of key `key_id`.
    RecordVerification {
        provider: ProviderId,
        key_id: u32,
        version: u32,
        outcome: VerificationOutcome,
    },
    SetProviderOrder {
        providers: Vec<ProviderId>,
    },
    ChangePlan {
        plan: PlanId,
    },
    SetByokAccess {
        enabled: bool,
    },
    /// The right to erasure: destroy every key and forget the provider order and plan.
    EraseOrganization,
    /// Re-seal every key version sealed under a master key that is no longer the active one
    /// (master-key rotation); versions already under the active key are left as they are.
    ResealMaterial,
}

impl KeyringCommand {
    /// The key the command brings, if any: what its preparation's check and seal are about.
    #[must_use]
    pub fn key(&self) -> Option<&ApiKey> {
        match self {
            Self::StoreKey(store) => store.key.as_ref(),
            Self::RotateKey(rotate) => Some(&rotate.key),
            _ => None,
        }
    }
}

/// Store a key for a provider that has none.
#[derive(Debug)]
pub struct StoreKey {
    pub provider: ProviderId,
    /// `None` only for providers whose key is optional (local servers).
    pub key: Option<ApiKey>,
    pub description: Option<String>,
    pub default_model: Option<String>,
    /// Base URL, for providers that live where the organization says.
    pub endpoint: Option<String>,
    /// Ask the provider first and store only a key it accepts.
    pub verify: bool,
    /// On a one-provider plan, replace the active key of another provider.
    pub replace: bool,
}

/// Replace the active key of a provider with a new one (version + 1).
#[derive(Debug)]
pub struct RotateKey {
    pub provider: ProviderId,
    pub key: ApiKey,
    pub verify: bool,
}

/// Change what is said about a key. `None` leaves a field as it is; `Some(None)` clears it.
#[derive(Debug)]
pub struct UpdateKeyDetails {
    pub provider: ProviderId,
    pub description: Option<Option<String>>,
    pub default_model: Option<Option<String>>,
}
