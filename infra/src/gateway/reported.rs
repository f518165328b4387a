//! Calls made elsewhere and reported (`POST …/usage`): recorded by the same rules as the calls
//! the gateway makes itself.

use chrono::{DateTime, Utc};

use super::{Gateway, GatewayError};
use crate::usage::Recorded;
use keyledger_domain::resolution::{resolve, Resolution};
use keyledger_domain::usage::{KeySource, ModelCallRecorded, RecordModelCall};
use keyledger_domain::{OrgId, ProviderId};
use keyledger_store::metadata::Actor;

/// A model call made elsewhere, its figures already checked against their bounds.
#[derive(Debug, Clone)]
pub struct ReportedCall {
    pub provider: ProviderId,
    /// The caller's id of the call: a second report of it records nothing new.
    pub request_id: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub at: DateTime<Utc>,
}

impl Gateway {
    /// Records a call made elsewhere: paid by the organization's own key if it has an active
    /// one for the provider, else by the platform's under the plan's monthly quota and cost
    /// cap; priced from the price table. Idempotent on the request id.
    ///
    /// # Errors
    /// [`GatewayError::Limit`] when a platform call is over the quota or cost cap; the
    /// Keyring's or the ledger's storage failure.
    pub async fn record_reported(
        &self,
        org: &OrgId,
        reported: ReportedCall,
        actor: &Actor,
    ) -> Result<Recorded, GatewayError> {
        let keyring = self.keyrings.load(org).await?;
        let (key_source, key_version, limits) =
            match resolve(&keyring, self.plans(), reported.provider, true) {
                Resolution::Byok(key) => (KeySource::Byok, Some(key.version), None),
                Resolution::Platform(limits) => (KeySource::Platform, None, Some(limits)),
                // A call made elsewhere without the organization's key was made with the
                // platform's.
                Resolution::NoKey | Resolution::Erased => (KeySource::Platform, None, None),
            };
        let cost_usd = self.prices.cost(
            reported.provider,
            &reported.model,
            reported.input_tokens,
            reported.output_tokens,
        );
        let call = ModelCallRecorded {
            org: org.to_string(),
            request_id: reported.request_id,
            provider: reported.provider,
            cost_usd,
            model: reported.model,
            input_tokens: reported.input_tokens,
            output_tokens: reported.output_tokens,
            key_source,
            key_version,
            at: reported.at,
            capped: false,
        };
        Ok(self.usage.record(org, RecordModelCall { call, limits }, actor).await?)
    }
}
