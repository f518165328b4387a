//! Subscription plans and what each allows.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A plan's id, such as `pro`. Whether it exists is the catalogue's call.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlanId(String);

impl PlanId {
    /// The plan every new organization starts on.
    #[must_use]
    pub fn starter() -> Self {
        Self("starter".to_owned())
    }

    /// Wraps a plan id; the catalogue decides whether it is known.
    #[must_use]
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PlanId {
    fn default() -> Self {
        Self::starter()
    }
}

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one plan allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRules {
    /// Whether the organization may bring its own keys at all.
    pub byok: bool,
    /// How many providers may hold an active key; `None` is unlimited.
    pub max_providers: Option<u32>,
    /// Whether the organization may set a provider order.
    pub provider_order: bool,
    /// Model calls per month on the platform's own keys.
    pub monthly_platform_queries: u64,
    /// Spending cap per month on the platform's own keys, in US dollars.
    pub monthly_platform_cost_cap_usd: f64,
}

impl PlanRules {
    /// Whether `count` active BYOK providers fit in this plan.
    #[must_use]
    pub fn allows_providers(&self, count: usize) -> bool {
        self.byok && self.max_providers.is_none_or(|max| count <= max as usize)
    }
}

/// The plans an operator offers, by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PlanCatalogue {
    plans: BTreeMap<PlanId, PlanRules>,
}

impl PlanCatalogue {
    /// A catalogue of the given plans.
    #[must_use]
    pub fn new(plans: BTreeMap<PlanId, PlanRules>) -> Self {
        Self { plans }
    }

    /// The rules of `plan`, if the catalogue has it.
    #[must_use]
    pub fn rules(&self, plan: &PlanId) -> Option<&PlanRules> {
        self.plans.get(plan)
    }

    /// The ids of all plans.
    pub fn ids(&self) -> impl Iterator<Item = &PlanId> {
        self.plans.keys()
    }
}

impl Default for PlanCatalogue {
    /// The catalogue of API.md.
    fn default() -> Self {
        let plan = |byok, max_providers, provider_order, queries, cap| PlanRules {
            byok,
            max_providers,
            provider_order,
            monthly_platform_queries: queries,
            monthly_platform_cost_cap_usd: cap,
        };
        let plans = [
            ("trial", plan(false, None, false, 100, 5.0)),
            ("starter", plan(false, None, false, 2_000, 50.0)),
            ("private", plan(true, Some(1), false, 2_000, 50.0)),
            ("pro", plan(true, None, true, 20_000, 500.0)),
            ("growth", plan(true, None, true, 20_000, 500.0)),
            ("business", plan(true, None, true, 100_000, 5_000.0)),
            ("business_api", plan(true, None, true, 100_000, 5_000.0)),
        ];
        Self::new(plans.into_iter().map(|(id, rules)| (PlanId::new(id), rules)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_catalogue_matches_the_contract() {
        let catalogue = PlanCatalogue::default();
        let rules = |id: &str| catalogue.rules(&PlanId::new(id)).cloned().expect("plan exists");
        assert!(!rules("starter").byok);
        assert!(!rules("trial").byok);
        assert_eq!(rules("private").max_providers, Some(1));
        assert!(rules("pro").provider_order && rules("business_api").provider_order);
        assert!(!rules("private").provider_order);
        assert_eq!(catalogue.ids().count(), 7);
    }

    #[test]
    fn provider_limits_count_active_keys() {
        let catalogue = PlanCatalogue::default();
        let private = catalogue.rules(&PlanId::new("private")).expect("exists");
        assert!(private.allows_providers(1));
        assert!(!private.allows_providers(2));
        let starter = catalogue.rules(&PlanId::starter()).expect("exists");
        assert!(!starter.allows_providers(0));
    }
}
