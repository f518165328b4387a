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
    /// The organization was erased and has not started afresh: no key, not even the
    /// platform's, until it does.
    Erased,
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
    if keyring.erased_at().is_some() {
        return Resolution::Erased;
    }
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

impl Resolution {
    /// Whether a call could go out with this resolution at all: an own key, or the platform's
    /// under a plan that grants platform calls.
    #[must_use]
    pub fn is_callable(&self) -> bool {
        match self {
            Self::Byok(_) => true,
            Self::Platform(limits) => limits.max_calls > 0 && limits.cost_cap_usd > 0.0,
            Self::NoKey | Self::Erased => false,
        }
    }
}

/// The providers the organization can call now, in the order calls try them: its provider
/// order first (where the plan allows one), then the others in registry order.
/// `platform_key` says for which providers the operator configured a shared key.
#[must_use]
pub fn callable_providers(
    keyring: &Keyring,
    plans: &PlanCatalogue,
    platform_key: impl Fn(ProviderId) -> bool,
) -> Vec<ProviderId> {
    let ordered = plans.rules(&keyring.plan).is_some_and(|rules| rules.provider_order);
    let preferred = if ordered { keyring.provider_order.as_slice() } else { &[] };
    let rest = ProviderId::ALL.into_iter().filter(|p| !preferred.contains(p));
    preferred
        .iter()
        .copied()
        .chain(rest)
        .filter(|p| resolve(keyring, plans, *p, platform_key(*p)).is_callable())
        .collect()
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
            Box::new(KeyState {
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
            }),
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
    fn calls_try_the_organizations_order_first_then_the_registrys() {
        let mut keyring = with_key(KeyStatus::Active);
        keyring.provider_order = vec![ProviderId::Groq, ProviderId::Anthropic];
        let platform = |p: ProviderId| matches!(p, ProviderId::Openai | ProviderId::Groq);
        assert_eq!(
            callable_providers(&keyring, &PlanCatalogue::default(), platform),
            [ProviderId::Groq, ProviderId::Anthropic, ProviderId::Openai]
        );
    }

    #[test]
    fn a_plan_without_ordering_keeps_the_registrys_order() {
        let mut keyring = with_key(KeyStatus::Active);
        keyring.plan = PlanId::new("private");
        keyring.provider_order = vec![ProviderId::Openai];
        let platform = |p: ProviderId| p == ProviderId::Openai;
        assert_eq!(
            callable_providers(&keyring, &PlanCatalogue::default(), platform),
            [ProviderId::Anthropic, ProviderId::Openai]
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
