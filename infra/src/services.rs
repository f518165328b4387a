//! The Keyring's services for one organization: plans, clock, fingerprints, provider checks
//! and sealing, over the real crypto, material store and provider client.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};

use crate::crypto::{Binding, Envelope};
use crate::material::MaterialStore;
use crate::providers::ProviderClient;
use keyledger_domain::keyring::{Fingerprint, MaterialBinding, MaterialId, ServiceError};
use keyledger_domain::{
    ApiKey, KeyringServices, OrgId, PlanCatalogue, ProviderId, VerificationOutcome,
};
use keyledger_store::StorageFailure;

/// The shared parts every organization's services are made of.
#[derive(Debug)]
pub struct ServiceDeps {
    pub envelope: Envelope,
    pub material: MaterialStore,
    pub providers: ProviderClient,
    pub plans: PlanCatalogue,
}

/// Services for one command on one organization's Keyring. Remembers what it sealed, so that
/// material of a command that does not commit can be destroyed again.
#[derive(Debug)]
pub struct OrgServices {
    org: OrgId,
    deps: Arc<ServiceDeps>,
    sealed: Mutex<Vec<MaterialId>>,
}

impl OrgServices {
    /// Services for `org`.
    #[must_use]
    pub fn new(org: OrgId, deps: Arc<ServiceDeps>) -> Self {
        Self { org, deps, sealed: Mutex::new(Vec::new()) }
    }

    /// The material sealed through these services so far.
    #[must_use]
    pub fn sealed(&self) -> Vec<MaterialId> {
        self.sealed.lock().map(|ids| ids.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl KeyringServices for OrgServices {
    fn plans(&self) -> &PlanCatalogue {
        &self.deps.plans
    }

    fn now(&self) -> DateTime<Utc> {
        // Microseconds: what PostgreSQL keeps, so views and replays show the same instant.
        Utc::now().trunc_subsecs(6)
    }

    fn fingerprint(&self, key: &ApiKey) -> Fingerprint {
        self.deps.envelope.fingerprint(&self.org, key)
    }

    fn is_same_key(&self, key: &ApiKey, fingerprint: &Fingerprint) -> bool {
        self.deps.envelope.is_same_key(&self.org, key, fingerprint)
    }

    async fn verify(
        &self,
        provider: ProviderId,
        endpoint: Option<&str>,
        key: Option<&ApiKey>,
    ) -> VerificationOutcome {
        self.deps.providers.verify(provider, endpoint, key).await
    }

    async fn seal(
        &self,
        binding: MaterialBinding,
        key: &ApiKey,
    ) -> Result<MaterialId, ServiceError> {
        let binding = Binding {
            org: &self.org,
            provider: binding.provider,
            key_id: binding.key_id,
            version: binding.version,
        };
        let sealed = self
            .deps
            .envelope
            .seal(binding, key)
            .map_err(|e| ServiceError::Failed(e.to_string()))?;
        let id = self.deps.material.insert(binding, &sealed).await.map_err(|e| {
            if StorageFailure::of(&e).unavailable() {
                tracing::warn!(error = %e, "the key-material store is unavailable");
                ServiceError::Unavailable("the key-material store is unavailable".to_owned())
            } else {
                tracing::error!(error = %e, "sealing failed");
                ServiceError::Failed("the key could not be stored".to_owned())
            }
        })?;
        if let Ok(mut ids) = self.sealed.lock() {
            ids.push(id);
        }
        Ok(id)
    }
}
