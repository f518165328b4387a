//! What organizations' Keyrings are decided and carried out with: plans, the clock and
//! fingerprints for the rules ([`OrgContext`]), and the crypto, material store and provider
//! client that do what a command's preparation asks.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};

use crate::crypto::Envelope;
use crate::providers::ProviderClient;
use keyledger_domain::keyring::Fingerprint;
use keyledger_domain::{ApiKey, KeyringContext, OrgId, PlanCatalogue};
use keyledger_store::material::MaterialStore;

/// The shared parts every organization's commands and calls are carried out with.
#[derive(Debug)]
pub struct ServiceDeps {
    pub envelope: Envelope,
    pub material: MaterialStore,
    pub providers: ProviderClient,
    pub plans: PlanCatalogue,
}

/// What the rules read while deciding a command of one organization.
#[derive(Debug)]
pub struct OrgContext {
    org: OrgId,
    deps: Arc<ServiceDeps>,
    /// One instant for the whole command, so its events and metadata agree.
    now: DateTime<Utc>,
}

impl OrgContext {
    /// The context of a command of `org` decided now.
    #[must_use]
    pub fn new(org: OrgId, deps: Arc<ServiceDeps>) -> Self {
        // Microseconds: what PostgreSQL keeps, so views and replays show the same instant.
        Self { org, deps, now: Utc::now().trunc_subsecs(6) }
    }
}

impl KeyringContext for OrgContext {
    fn plans(&self) -> &PlanCatalogue {
        &self.deps.plans
    }

    fn now(&self) -> DateTime<Utc> {
        self.now
    }

    fn fingerprint(&self, key: &ApiKey) -> Fingerprint {
        self.deps.envelope.fingerprint(&self.org, key)
    }

    fn is_same_key(&self, key: &ApiKey, fingerprint: &Fingerprint) -> bool {
        self.deps.envelope.is_same_key(&self.org, key, fingerprint)
    }
}
