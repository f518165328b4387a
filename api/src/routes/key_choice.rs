//! The key a model call goes out with: the organization's own, opened for this call only, or
//! the platform's once the call holds a place in the month's quota, a place it gives back if
//! the call is not made.

use axum::http::StatusCode;
use chrono::{DateTime, SubsecRound, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use keyledger_domain::resolution::{resolve, Resolution};
use keyledger_domain::usage::{KeySource, ReleasePlatformCall, ReservePlatformCall, UsageError};
use keyledger_domain::{ApiKey, Keyring, OrgId, ProviderId};
use keyledger_infra::RecordError;

/// The key a call goes out with.
pub(crate) struct Chosen {
    pub(crate) key: Option<ApiKey>,
    pub(crate) source: KeySource,
    /// BYOK: (key id, version), to attribute usage and to record a refusal.
    pub(crate) byok: Option<(u32, u32)>,
    pub(crate) endpoint: Option<String>,
    /// Platform key: the call's place in the month's quota.
    pub(crate) reservation: Option<Reservation>,
}

/// Resolves the key for a call: BYOK decrypted for this call only, else the platform's key
/// once the call has a place in the month's quota (`attempt_id` reserves it), else none.
pub(crate) async fn choose_key(
    state: &AppState,
    org: &OrgId,
    keyring: &Keyring,
    provider: ProviderId,
    attempt_id: &str,
    caller: &Caller,
) -> Result<Chosen, ApiError> {
    let platform_key = state.platform_keys.get(&provider);
    match resolve(keyring, &state.keyrings.deps().plans, provider, platform_key.is_some()) {
        Resolution::Byok(key) => Ok(Chosen {
            key: state.keyrings.open_for_call(org, provider, &key).await?,
            source: KeySource::Byok,
            byok: Some((key.key_id, key.version)),
            endpoint: key.endpoint,
            reservation: None,
        }),
        Resolution::Platform(limits) => {
            let at = Utc::now().trunc_subsecs(6);
            let reserve = ReservePlatformCall {
                org: org.to_string(),
                request_id: attempt_id.to_owned(),
                at,
                limits,
            };
            let actor = caller.actor();
            let reservation = match state.usage.reserve(org, reserve, &actor).await {
                Ok(()) => Reservation::held(Release {
                    state: state.clone(),
                    org: org.clone(),
                    actor,
                    request_id: attempt_id.to_owned(),
                    at,
                }),
                Err(RecordError::Refused(refusal)) => {
                    let code = match refusal {
                        UsageError::QuotaExceeded { .. } => "quota_exceeded",
                        UsageError::CostCapReached { .. } => "cost_cap_reached",
                    };
                    return Err(ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        code,
                        refusal.to_string(),
                    ));
                }
                Err(error @ RecordError::Storage(_)) => return Err(ApiError::internal(&error)),
            };
            let secret: &SecretString =
                platform_key.ok_or_else(|| ApiError::internal(&"platform key vanished"))?;
            let key = ApiKey::from_storage(
                provider,
                SecretString::from(secret.expose_secret().to_owned()),
            );
            Ok(Chosen {
                key: Some(key),
                source: KeySource::Platform,
                byok: None,
                endpoint: None,
                reservation: Some(reservation),
            })
        }
        Resolution::NoKey => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_key_available",
            format!("the organization has no active {provider} key and the platform has none"),
        )),
    }
}

/// A platform-key call's place in the quota. Kept once the call is made (its record takes
/// the place over); given back otherwise: explicitly when the provider fails or refuses, and
/// when dropped, so a call abandoned on the way (its caller went away) frees its place too.
pub(crate) struct Reservation(Option<Release>);

impl Reservation {
    fn held(release: Release) -> Self {
        Self(Some(release))
    }

    /// When the place was reserved: the call belongs to that month.
    pub(crate) fn at(&self) -> Option<DateTime<Utc>> {
        self.0.as_ref().map(|r| r.at)
    }

    /// The call was made: its record takes the place over.
    pub(crate) fn keep(mut self) {
        self.0 = None;
    }

    /// The call was not made: the place goes back before the caller moves on.
    pub(crate) async fn give_back(mut self) {
        if let Some(release) = self.0.take() {
            release.run().await;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Nobody can wait here; a stopping process still writes it before it goes.
        if let Some(release) = self.0.take() {
            release.state.usage.release_unwaited(&release.org, release.command(), &release.actor);
        }
    }
}

/// Giving a reserved place back.
struct Release {
    state: AppState,
    org: OrgId,
    actor: keyledger_infra::Actor,
    request_id: String,
    /// When the place was reserved: it is held in that month's ledger.
    at: DateTime<Utc>,
}

impl Release {
    fn command(&self) -> ReleasePlatformCall {
        let (org, request_id) = (self.org.to_string(), self.request_id.clone());
        ReleasePlatformCall { org, request_id, at: self.at }
    }

    async fn run(self) {
        if let Err(error) = self.state.usage.release(&self.org, self.command(), &self.actor).await {
            tracing::warn!(%error, "could not give back a reserved quota place");
        }
    }
}
