//! The model-call path as a service: for each call, the key (the organization's own, else the
//! platform's within quota), the provider (named, or routed by model along the organization's
//! order), the call sent within its time limits, the answer judged and streamed back, and its
//! usage recorded. The routing and fallback rules are the domain's (`keyledger_domain::routing`);
//! this module carries them out.

mod attempt;
mod counts;
mod error;
mod key_choice;
mod listings;
mod pass_through;
mod relay;
mod reported;
mod unified;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

pub use counts::CallCounts;
pub use error::{GatewayError, NoKey, Unanswered};
pub use pass_through::PassThrough;
pub use relay::{AnswerBody, Durability};
pub use reported::ReportedCall;
pub use unified::{ModelEntry, UnifiedCall};

use crate::keyrings::{CallKeys, Keyrings};
use crate::providers::ProviderClient;
use crate::services::ServiceDeps;
use crate::usage::UsageRecorder;
use keyledger_domain::pricing::PriceTable;
use keyledger_domain::routing::ModelFamilies;
use keyledger_domain::usage::KeySource;
use keyledger_domain::{ApiKey, PlanCatalogue, ProviderId};

/// How long model calls may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelCallTimeouts {
    /// The whole call, streamed answer included (`KEYLEDGER_MODEL_CALL_TIMEOUT`).
    pub call: Duration,
    /// Between two chunks of an answer (`KEYLEDGER_STREAM_IDLE_TIMEOUT`).
    pub stream_idle: Duration,
}

impl Default for ModelCallTimeouts {
    fn default() -> Self {
        Self { call: Duration::from_secs(600), stream_idle: Duration::from_secs(120) }
    }
}

/// What the gateway is configured with.
#[derive(Debug)]
pub struct GatewaySettings {
    pub prices: Arc<PriceTable>,
    /// The platform's own keys, by provider.
    pub platform_keys: BTreeMap<ProviderId, SecretString>,
    pub families: ModelFamilies,
    pub timeouts: ModelCallTimeouts,
    /// When an answered call's record is committed (`KEYLEDGER_USAGE_DURABILITY`).
    pub durability: Durability,
}

/// A provider's answer to a model call, on its way back to the caller.
pub struct Answer {
    pub status: StatusCode,
    /// The provider's headers, less those about its connection.
    pub headers: HeaderMap,
    pub key_source: KeySource,
    /// The provider that answered.
    pub provider: ProviderId,
    pub body: AnswerBody,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("status", &self.status)
            .field("provider", &self.provider)
            .field("key_source", &self.key_source)
            .finish_non_exhaustive()
    }
}

/// The model-call path.
#[derive(Debug)]
pub struct Gateway {
    /// Commands (a refusal recorded against a key) and loads.
    keyrings: Arc<Keyrings>,
    /// The Keyrings as calls use them: cached states, keys opened per call.
    calls: Arc<CallKeys>,
    /// Plans and the provider client, shared with the Keyrings' commands.
    deps: Arc<ServiceDeps>,
    usage: Arc<UsageRecorder>,
    prices: Arc<PriceTable>,
    platform_keys: BTreeMap<ProviderId, SecretString>,
    families: ModelFamilies,
    timeouts: ModelCallTimeouts,
    durability: Durability,
    listings: listings::ModelListings,
    counts: CallCounts,
}

impl Gateway {
    /// The gateway over `keyrings` (keys), `deps` (plans, the provider client) and `usage`
    /// (quota, records).
    #[must_use]
    pub fn new(
        keyrings: Arc<Keyrings>,
        deps: Arc<ServiceDeps>,
        usage: Arc<UsageRecorder>,
        settings: GatewaySettings,
    ) -> Self {
        Self {
            calls: Arc::clone(keyrings.calls()),
            keyrings,
            deps,
            usage,
            prices: settings.prices,
            platform_keys: settings.platform_keys,
            families: settings.families,
            timeouts: settings.timeouts,
            durability: settings.durability,
            listings: listings::ModelListings::default(),
            counts: CallCounts::default(),
        }
    }

    /// Model calls providers answered so far.
    #[must_use]
    pub fn counts(&self) -> &CallCounts {
        &self.counts
    }

    /// The platform's key for `provider`, as a call carries it.
    fn platform_key(&self, provider: ProviderId) -> Option<ApiKey> {
        let secret = self.platform_keys.get(&provider)?;
        Some(ApiKey::from_storage(provider, SecretString::from(secret.expose_secret().to_owned())))
    }

    fn plans(&self) -> &PlanCatalogue {
        &self.deps.plans
    }

    fn providers(&self) -> &ProviderClient {
        &self.deps.providers
    }
}
