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
        // The state model calls resolve against: cached, and as current as theirs.
        let keyring = self.calls.current(org).await?;
        let command = self.reported_record(&keyring, org, reported);
        Ok(self.usage.record(org, command, actor).await?)
    }

    /// Records a batch of calls made elsewhere, each as [`Self::record_reported`] would, in
    /// the batch's order: each is decided on its own (recorded, a duplicate of a request id
    /// recorded before, or refused over the quota or cost cap), and they share commits.
    ///
    /// # Errors
    /// The Keyring's storage failure, before anything is recorded. A record's own failure is
    /// its entry's.
    pub async fn record_reported_batch(
        &self,
        org: &OrgId,
        batch: Vec<ReportedCall>,
        actor: &Actor,
    ) -> Result<Vec<Result<Recorded, GatewayError>>, GatewayError> {
        // One look at the organization's keys for the whole batch.
        let keyring = self.calls.current(org).await?;
        let records: Vec<RecordModelCall> = batch
            .into_iter()
            .map(|reported| self.reported_record(&keyring, org, reported))
            .collect();
        let recorded = self.usage.record_all(org, records, actor).await;
        Ok(recorded.into_iter().map(|r| r.map_err(GatewayError::from)).collect())
    }

    /// The record of a reported call: whose key paid, and the limits a platform call is under.
    fn reported_record(
        &self,
        keyring: &keyledger_domain::Keyring,
        org: &OrgId,
        reported: ReportedCall,
    ) -> RecordModelCall {
        let (key_source, key_version, limits) =
            match resolve(keyring, self.plans(), reported.provider, true) {
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
        RecordModelCall { call, limits }
    }
}
