//! The key a model call goes out with: the organization's own, opened for this call only, or
//! the platform's once the call holds a place (and its estimated cost) in the month's quota,
//! which it gives back if the call is not made.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};

use super::error::NoKey;
use super::{Gateway, GatewayError};
use crate::usage::{RecordError, UsageRecorder};
use crate::CommandError;
use keyledger_domain::resolution::{resolve, Resolution};
use keyledger_domain::usage::{KeySource, ReleasePlatformCall, ReservePlatformCall};
use keyledger_domain::{ApiKey, KeyState, Keyring, OrgId, ProviderId};
use keyledger_store::metadata::Actor;

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

/// What a call is, for choosing its key.
pub(crate) struct KeyUse<'a, E> {
    /// The attempt's id: its reservation and its usage record pair up by it.
    pub(crate) attempt_id: &'a str,
    /// A model call (metered, counted in the quota), as opposed to reading or managing
    /// something at the provider, which the shared platform key is not lent out for.
    pub(crate) model_call: bool,
    /// What the call may cost, asked only when it goes out on the platform's key.
    pub(crate) estimate_usd: E,
}

impl Gateway {
    /// Resolves the key for a call to `provider`: BYOK opened for this call only, else the
    /// platform's key once the call has a place in the month's quota, else none.
    pub(crate) async fn choose_key<E: FnOnce() -> f64>(
        &self,
        org: &OrgId,
        keyring: &Keyring,
        provider: ProviderId,
        actor: &Actor,
        usage: KeyUse<'_, E>,
    ) -> Result<Chosen, GatewayError> {
        let has_platform_key = self.platform_keys.contains_key(&provider);
        match resolve(keyring, self.plans(), provider, has_platform_key) {
            Resolution::Byok(key) => {
                let (key, opened) = self.open_current(org, provider, key).await?;
                Ok(Chosen {
                    key: opened,
                    source: KeySource::Byok,
                    byok: Some((key.key_id, key.version)),
                    endpoint: key.endpoint,
                    reservation: None,
                })
            }
            Resolution::Platform(_) if !usage.model_call => {
                Err(GatewayError::NoKey { provider, why: NoKey::PlatformKeyForModelCallsOnly })
            }
            Resolution::Platform(limits) => {
                let at = Utc::now().trunc_subsecs(6);
                let reserve = ReservePlatformCall {
                    org: org.to_string(),
                    request_id: usage.attempt_id.to_owned(),
                    at,
                    limits,
                    estimated_cost_usd: (usage.estimate_usd)(),
                };
                // Armed before the place is asked for: a caller that goes away while it is
                // being committed still gives it back (giving back a place never held changes
                // nothing).
                let reservation = Reservation(Some(Release {
                    usage: Arc::clone(&self.usage),
                    org: org.clone(),
                    actor: actor.clone(),
                    request_id: usage.attempt_id.to_owned(),
                    at,
                }));
                match self.usage.reserve(org, reserve, actor).await {
                    Ok(()) => {}
                    Err(refused @ RecordError::Refused(_)) => {
                        reservation.disarm();
                        return Err(refused.into());
                    }
                    Err(error) => return Err(error.into()),
                }
                Ok(Chosen {
                    key: self.platform_key(provider),
                    source: KeySource::Platform,
                    byok: None,
                    endpoint: None,
                    reservation: Some(reservation),
                })
            }
            Resolution::NoKey => Err(GatewayError::NoKey { provider, why: NoKey::PlatformHasNone }),
            Resolution::Erased => {
                Err(GatewayError::NoKey { provider, why: NoKey::OrganizationErased })
            }
        }
    }
}

impl Gateway {
    /// Opens `key` for a call. If a rotation or re-seal shredded its material since the
    /// Keyring was read, reads the Keyring again and opens the version it holds now: a call
    /// racing a rotation goes out with the new key rather than failing.
    async fn open_current(
        &self,
        org: &OrgId,
        provider: ProviderId,
        mut key: KeyState,
    ) -> Result<(KeyState, Option<ApiKey>), GatewayError> {
        for _ in 0..REREADS {
            match self.calls.open_for_call(org, provider, &key).await {
                Ok(opened) => return Ok((key, opened)),
                Err(CommandError::Conflict) => {
                    let now = self.calls.reread(org).await?;
                    // Removed or suspended meanwhile: the call stops as it would have.
                    let Some(current) = now.active_key(provider) else {
                        return Err(CommandError::Conflict.into());
                    };
                    key = current.clone();
                }
                Err(other) => return Err(other.into()),
            }
        }
        Err(CommandError::Conflict.into())
    }
}

/// How often a call reads the Keyring again when its key's material was shredded under it.
const REREADS: usize = 3;

/// A platform-key call's place in the quota. Kept once the call is made (its record takes
/// the place over); given back otherwise: explicitly when the provider fails or refuses, and
/// when dropped, so a call abandoned on the way (its caller went away) frees its place too.
pub(crate) struct Reservation(Option<Release>);

impl Reservation {
    /// When the place was reserved: the call belongs to that month.
    pub(crate) fn at(&self) -> Option<DateTime<Utc>> {
        self.0.as_ref().map(|r| r.at)
    }

    /// The call was made: its record takes the place over.
    pub(crate) fn keep(self) {
        self.disarm();
    }

    /// Nothing to give back (the place was never held, or is taken over).
    fn disarm(mut self) {
        self.0 = None;
    }

    /// The call was not made: the place goes back before the caller moves on. Should the
    /// caller go away meanwhile, the guard is still armed and its drop gives the place back.
    pub(crate) async fn give_back(mut self) {
        if let Some(release) = &self.0 {
            let command = release.command();
            match release.usage.release(&release.org, command, &release.actor).await {
                Ok(()) => self.0 = None,
                Err(error) => {
                    tracing::warn!(%error, "could not give back a reserved quota place; trying again")
                }
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // Nobody can wait here; a stopping process still writes it before it goes.
        if let Some(release) = self.0.take() {
            release.usage.release_unwaited(&release.org, release.command(), &release.actor);
        }
    }
}

/// Giving a reserved place back.
struct Release {
    usage: Arc<UsageRecorder>,
    org: OrgId,
    actor: Actor,
    request_id: String,
    /// When the place was reserved: it is held in that month's ledger.
    at: DateTime<Utc>,
}

impl Release {
    fn command(&self) -> ReleasePlatformCall {
        let (org, request_id) = (self.org.to_string(), self.request_id.clone());
        ReleasePlatformCall { org, request_id, at: self.at }
    }
}
