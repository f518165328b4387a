//! Which keys a plan and BYOK access allow to be active, and the suspensions and
//! reinstatements that follow from a change.

use chrono::{DateTime, Utc};

use super::events::{KeyReinstated, KeySuspended, KeyringEvent, SuspensionReason};
use super::state::{KeyStatus, Keyring};
use crate::plan::PlanRules;
use crate::provider::ProviderId;

/// The events that bring the keys in line with `rules` and `byok_access`.
///
/// Keys already active keep priority over suspended ones, then the provider order decides,
/// then age: a downgrade keeps what the organization is using now.
pub(crate) fn reconcile(
    keyring: &Keyring,
    rules: Option<&PlanRules>,
    byok_access: bool,
    at: DateTime<Utc>,
) -> Vec<KeyringEvent> {
    let (allowed, reason) = match rules {
        _ if !byok_access => (0, SuspensionReason::ByokAccessWithdrawn),
        Some(rules) if rules.byok => (
            rules.max_providers.map_or(usize::MAX, |max| max as usize),
            SuspensionReason::PlanProviderLimit,
        ),
        _ => (0, SuspensionReason::PlanWithoutByok),
    };
    let order_position = |provider: ProviderId| {
        keyring.provider_order.iter().position(|p| *p == provider).unwrap_or(usize::MAX)
    };
    let mut candidates: Vec<_> = keyring.keys.iter().collect();
    candidates.sort_by_key(|(provider, key)| {
        (key.status != KeyStatus::Active, order_position(**provider), key.key_id)
    });
    let mut events = Vec::new();
    for (rank, (provider, key)) in candidates.into_iter().enumerate() {
        let entitled = rank < allowed;
        match (key.status, entitled) {
            (KeyStatus::Active, false) => events.push(KeyringEvent::KeySuspended(KeySuspended {
                provider: *provider,
                key_id: key.key_id,
                reason,
                at,
            })),
            (KeyStatus::Suspended, true) => {
                events.push(KeyringEvent::KeyReinstated(KeyReinstated {
                    provider: *provider,
                    key_id: key.key_id,
                    at,
                }));
            }
            _ => {}
        }
    }
    events
}
