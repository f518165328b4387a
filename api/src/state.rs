//! What every request handler shares, and the command path with read-your-writes.

use std::sync::Arc;
use std::time::Duration;

use crate::auth::{Caller, TokenKeys};
use crate::error::ApiError;
use keyledger_domain::{KeyringCommand, OrgId};
use keyledger_infra::providers::EndpointPolicy;
use keyledger_infra::{Committed, Keyrings, UsageRecorder};
use keyledger_projections::{EventLog, Projector};
use keyledger_store::Database;

/// How long a command or a read waits for the views to show a change before going on anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The aggregate type of the Keyrings: what commands write and the Keyring views show.
pub(crate) const KEYRING: &str = <keyledger_domain::Keyring as cqrs_es::Aggregate>::TYPE;

/// Shared state of the HTTP API: one allocation every request's handlers and layers share.
/// Axum clones the state for each layer and extractor that takes it, several times a request;
/// a clone of the services themselves touched a dozen reference counts each time, which two
/// cores running the same requests kept passing between them.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    #[must_use]
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What the API's handlers use.
#[derive(Debug)]
pub struct Services {
    pub db: Database,
    pub keyrings: Arc<Keyrings>,
    pub usage: Arc<UsageRecorder>,
    pub tokens: Arc<TokenKeys>,
    pub endpoints: EndpointPolicy,
    /// The views, read side.
    pub views: Database,
    pub log: EventLog,
    pub projector: Arc<Projector>,
    /// Keyring commands that answered before the views show them (bounded).
    pub views_ahead: Arc<crate::ViewsAhead>,
    /// What model calls cost.
    pub prices: Arc<keyledger_domain::pricing::PriceTable>,
    /// What this process has counted, for `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The model-call path.
    pub gateway: Arc<keyledger_infra::Gateway>,
    /// Which answered requests get an access-log line.
    pub access_log: keyledger_infra::AccessLog,
    /// How long the list of single calls keeps a call (`KEYLEDGER_USAGE_CALLS_DAYS`).
    pub call_retention: Option<keyledger_projections::CallRetention>,
    /// Signs audit checkpoints.
    pub audit_signer: Arc<keyledger_infra::crypto::AuditSigner>,
}

/// What a caller's token is checked with, for the extractor of [`Caller`].
impl axum::extract::FromRef<AppState> for Arc<TokenKeys> {
    fn from_ref(state: &AppState) -> Self {
        Arc::clone(&state.tokens)
    }
}

impl AppState {
    /// Runs `command` on `org` for `caller`. It answers once committed; the caller's next read
    /// still sees its own write, for reads wait until the views show the organization's latest
    /// event. Only when [`crate::ViewsAhead::BOUND`] commands are ahead of the views does it
    /// wait for them itself.
    ///
    /// # Errors
    /// The command's refusal or failure.
    pub async fn execute(
        &self,
        org: &OrgId,
        command: KeyringCommand,
        caller: &Caller,
    ) -> Result<Committed, ApiError> {
        let (state, org, actor) = (self.clone(), org.clone(), caller.actor());
        self.run_to_the_end(async move {
            // The views and the replicas are waited for at the same time: neither needs the
            // other, and the answer needs both.
            let views = |committed: &Committed| {
                let cursor = committed.cursor;
                let (state, org) = (state.clone(), org.clone());
                async move {
                    let cursor = match cursor {
                        Some(cursor) => Ok(Some(cursor)),
                        // Nothing committed, or a commit that could not say where (SQLite): the
                        // latest event the caller may have seen is the organization's latest.
                        None => state.log.order().latest_cursor(KEYRING, org.as_str()).await,
                    };
                    match cursor {
                        Ok(Some(cursor)) if state.views_ahead.answer_ahead(cursor) => {
                            state.projector.nudge_for(KEYRING);
                        }
                        cursor => state.wait_for_views(cursor, KEYRING).await,
                    }
                }
            };
            Ok(state.keyrings.execute_and(&org, command, &actor, views).await?)
        })
        .await
    }

    /// Checks `provider`'s key of `org` with its provider and records the outcome, running to
    /// its end as [`AppState::execute`] does.
    ///
    /// # Errors
    /// The command's refusal or failure.
    pub async fn verify_key(
        &self,
        org: &OrgId,
        provider: keyledger_domain::ProviderId,
        caller: &Caller,
    ) -> Result<keyledger_domain::Verification, ApiError> {
        let (state, org, actor) = (self.clone(), org.clone(), caller.actor());
        self.run_to_the_end(async move {
            let verification = state.keyrings.verify_key(&org, provider, &actor).await?;
            state.settle(&org).await;
            Ok(verification)
        })
        .await
    }

    /// Runs an accepted command as a task of its own: a caller that goes away (its connection
    /// closed, its request timed out) drops only the waiting, never the command half-way, so
    /// what it committed is always shredded, acknowledged and projected.
    pub(crate) async fn run_to_the_end<T: Send + 'static>(
        &self,
        command: impl std::future::Future<Output = Result<T, ApiError>> + Send + 'static,
    ) -> Result<T, ApiError> {
        use tracing::Instrument as _;
        tokio::spawn(command.in_current_span()).await.map_err(|e| ApiError::internal(&e))?
    }

    /// Waits until the views include `org`'s latest Keyring event: what every read of the
    /// Keyring views (keys, status, provider order, audit trail) does first.
    pub async fn settle(&self, org: &OrgId) {
        let cursor = self.log.order().latest_cursor(KEYRING, org.as_str()).await;
        self.wait_for_views(cursor, KEYRING).await;
    }

    /// Waits until the views include every organization's latest Keyring event: what a read
    /// across organizations does first.
    pub async fn settle_all(&self) {
        let cursor = self.log.order().latest_cursor_of_type(KEYRING).await;
        self.wait_for_views(cursor, KEYRING).await;
    }

    /// Waits until the usage views include every call recorded so far for `org` (`None`: for
    /// every organization), so a recorded call is in every usage read that follows it.
    ///
    /// Recording answers once its call is committed, without waiting for the views: the
    /// reads, far fewer than the calls a busy platform records, wait instead.
    pub async fn settle_usage_reads(&self, org: Option<&OrgId>) {
        use keyledger_domain::usage::{ledger_id, UsageLedger};
        let ledger = <UsageLedger as cqrs_es::Aggregate>::TYPE;
        let order = self.log.order();
        let cursor = match org {
            // Calls are recorded in the month they happen: this month's ledger, and last
            // month's for the calls of its final minutes.
            Some(org) => {
                let now = chrono::Utc::now();
                let last_month =
                    now - chrono::Duration::days(i64::from(chrono::Datelike::day(&now)));
                let this = order.latest_cursor(ledger, &ledger_id(org, now)).await;
                let last = order.latest_cursor(ledger, &ledger_id(org, last_month)).await;
                this.and_then(|this| Ok(this.max(last?)))
            }
            None => order.latest_cursor_of_type(ledger).await,
        };
        self.wait_for_views(cursor, ledger).await;
    }

    async fn wait_for_views(
        &self,
        cursor: Result<Option<keyledger_projections::Cursor>, sqlx::Error>,
        aggregate_type: &str,
    ) {
        match cursor {
            Ok(Some(cursor)) => {
                self.projector.nudge_for(aggregate_type);
                if !self.projector.wait_until(cursor, aggregate_type, SETTLE_TIMEOUT).await {
                    tracing::warn!("views did not catch up in time; answering anyway");
                }
            }
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "cannot tell where the views stand"),
        }
    }
}
