//! Which key pays for a model call: the organization's own if it has an active one, else the
//! platform's under the plan's monthly limits, else none.

use crate::keyring::{KeyState, Keyring};
use crate::plan::PlanCatalogue;
use crate::provider::ProviderId;
use crate::usage::UsageLimits;

/// The key a call to one provider will use.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// The organization's own key (active, so the plan and BYOK access allow it).
    Byok(KeyState),
    /// The platform's key, within these monthly limits.
    Platform(UsageLimits),
    /// Neither: the call cannot be made.
    NoKey,
}

/// Resolves the key for a call by the organization whose Keyring is `keyring` to `provider`;
/// `platform_key` says whether the operator configured a shared key for that provider.
#[must_use]
pub fn resolve(
    keyring: &Keyring,
    plans: &PlanCatalogue,
    provider: ProviderId,
    platform_key: bool,
) -> Resolution {
    // Suspended keys are not active: a plan that no longer allows BYOK falls back here.
    if let Some(key) = keyring.active_key(provider) {
        return Resolution::Byok(key.clone());
    }
    if !platform_key {
        return Resolution::NoKey;
    }
    let limits = plans.rules(&keyring.plan).map_or(
        UsageLimits { max_calls: 0, cost_cap_usd: 0.0 },
        |rules| UsageLimits {
            max_calls: rules.monthly_platform_queries,
            cost_cap_usd: rules.monthly_platform_cost_cap_usd,
        },
    );
    Resolution::Platform(limits)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::keyring::{KeyStatus, Keyring};
    use crate::mask::Mask;
    use crate::plan::PlanId;

    fn with_key(status: KeyStatus) -> Keyring {
        let mut keyring = Keyring { plan: PlanId::new("pro"), ..Keyring::default() };
        keyring.keys.insert(
            ProviderId::Anthropic,
            KeyState {
                key_id: 1,
                version: 3,
                material_id: None,
                fingerprint: None,
                mask: Mask::keyless(),
                status,
                description: None,
                default_model: None,
                endpoint: None,
                created_at: DateTime::<Utc>::default(),
                rotated_at: None,
                last_verification: None,
            },
        );
        keyring
    }

    #[test]
    fn an_active_byok_key_is_used_first() {
        let resolution = resolve(
            &with_key(KeyStatus::Active),
            &PlanCatalogue::default(),
            ProviderId::Anthropic,
            true,
        );
        assert!(matches!(resolution, Resolution::Byok(key) if key.version == 3));
    }

    #[test]
    fn a_suspended_key_falls_back_to_the_platform_key_under_the_plans_limits() {
        let resolution = resolve(
            &with_key(KeyStatus::Suspended),
            &PlanCatalogue::default(),
            ProviderId::Anthropic,
            true,
        );
        assert_eq!(
            resolution,
            Resolution::Platform(UsageLimits { max_calls: 20_000, cost_cap_usd: 500.0 })
        );
    }

    #[test]
    fn without_either_key_there_is_none() {
        assert_eq!(
            resolve(&Keyring::default(), &PlanCatalogue::default(), ProviderId::Openai, false),
            Resolution::NoKey
        );
    }
}
