//! What the Keyring's rules need from the world, as traits `infra` implements.

use async_trait::async_trait;
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

/// A failure of a service (storage, crypto), described without secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// The service failed at what was asked.
    #[error("{0}")]
    Failed(String),
    /// The service could not be reached: the same command may succeed once it is back.
    #[error("{0}")]
    Unavailable(String),
}

/// The world as one organization's Keyring sees it while deciding a command.
#[async_trait]
pub trait KeyringServices: Send + Sync {
    /// The operator's plan catalogue.
    fn plans(&self) -> &PlanCatalogue;

    /// The time the decision is made.
    fn now(&self) -> DateTime<Utc>;

    /// A fingerprint of `key` for this organization.
    fn fingerprint(&self, key: &ApiKey) -> Fingerprint;

    /// Whether `key` is the key `fingerprint` was taken of (constant time).
    fn is_same_key(&self, key: &ApiKey, fingerprint: &Fingerprint) -> bool;

    /// Asks the provider whether it accepts `key` (a cheap authenticated call).
    async fn verify(
        &self,
        provider: ProviderId,
        endpoint: Option<&str>,
        key: Option<&ApiKey>,
    ) -> VerificationOutcome;

    /// Seals `key` under this organization's keys, bound to `binding`, and keeps it.
    ///
    /// # Errors
    /// [`ServiceError`] when it cannot be sealed or kept.
    async fn seal(
        &self,
        binding: MaterialBinding,
        key: &ApiKey,
    ) -> Result<MaterialId, ServiceError>;
}
