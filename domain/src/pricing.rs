//! What model calls cost: a price table per provider and model, in US dollars per million
//! tokens.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::provider::ProviderId;

/// The price of one model's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_million_usd: f64,
    pub output_per_million_usd: f64,
}

/// Prices by `provider/model`; a `provider/*` entry prices that provider's other models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable {
    prices: BTreeMap<String, Price>,
}

impl PriceTable {
    /// A table of the given prices, keyed `provider/model` or `provider/*`.
    #[must_use]
    pub fn new(prices: BTreeMap<String, Price>) -> Self {
        Self { prices }
    }

    /// The most a million tokens may be priced at: no model costs near it, and with the token
    /// bound no single call's cost comes near what the views can sum.
    pub const MAX_PRICE_PER_MILLION_USD: f64 = 1_000_000.0;

    /// Checks that every price is a number from 0 to [`Self::MAX_PRICE_PER_MILLION_USD`].
    ///
    /// # Errors
    /// The first entry that is not, by name.
    pub fn check(&self) -> Result<(), String> {
        for (entry, price) in &self.prices {
            for value in [price.input_per_million_usd, price.output_per_million_usd] {
                if !(0.0..=Self::MAX_PRICE_PER_MILLION_USD).contains(&value) {
                    return Err(format!(
                        "{entry}: a price is a number from 0 to {} USD per million tokens",
                        Self::MAX_PRICE_PER_MILLION_USD
                    ));
                }
            }
        }
        Ok(())
    }

    /// This table with `other`'s entries added over it: an operator's prices file adds to the
    /// built-in list prices and replaces the entries it names, so every provider keeps a `*`
    /// entry unless the file sets it.
    #[must_use]
    pub fn extended(mut self, other: Self) -> Self {
        self.prices.extend(other.prices);
        self
    }

    /// The price of `model` at `provider`: its own entry, else the provider's `*` entry, else
    /// free (an unknown model must not block a call; it shows up at zero cost in the cockpit).
    #[must_use]
    pub fn price(&self, provider: ProviderId, model: &str) -> Price {
        self.prices
            .get(&format!("{provider}/{model}"))
            .or_else(|| self.prices.get(&format!("{provider}/*")))
            .copied()
            .unwrap_or(Price { input_per_million_usd: 0.0, output_per_million_usd: 0.0 })
    }

    /// The cost of a call in US dollars.
    #[must_use]
    pub fn cost(
        &self,
        provider: ProviderId,
        model: &str,
        input_tokens: u64,
        output_tokens: u64,
    ) -> f64 {
        let price = self.price(provider, model);
        (input_tokens as f64 * price.input_per_million_usd
            + output_tokens as f64 * price.output_per_million_usd)
            / 1_000_000.0
    }
}

impl Default for PriceTable {
    /// List prices of common models (USD per million tokens) at the time of writing; local
    /// servers are free. Operators replace them with `KEYLEDGER_PRICES_FILE`.
    fn default() -> Self {
        let p =
            |input, output| Price { input_per_million_usd: input, output_per_million_usd: output };
        let prices = [
            ("anthropic/claude-3-5-haiku-latest", p(0.80, 4.00)),
            ("anthropic/claude-3-5-sonnet-latest", p(3.00, 15.00)),
            ("anthropic/*", p(3.00, 15.00)),
            ("openai/gpt-4o", p(2.50, 10.00)),
            ("openai/gpt-4o-mini", p(0.15, 0.60)),
            ("openai/*", p(2.50, 10.00)),
            ("google/gemini-1.5-flash", p(0.075, 0.30)),
            ("google/*", p(1.25, 5.00)),
            ("mistral/mistral-small-latest", p(0.20, 0.60)),
            ("mistral/*", p(2.00, 6.00)),
            ("groq/*", p(0.59, 0.79)),
            ("azure_openai/*", p(2.50, 10.00)),
            ("aleph_alpha/*", p(5.00, 5.00)),
            ("ollama/*", p(0.0, 0.0)),
            ("lmstudio/*", p(0.0, 0.0)),
            ("vllm/*", p(0.0, 0.0)),
        ];
        Self::new(prices.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_costs_its_own_price_else_its_providers() {
        let table = PriceTable::default();
        let mini = table.cost(ProviderId::Openai, "gpt-4o-mini", 1_000_000, 1_000_000);
        assert!((mini - 0.75).abs() < 1e-9);
        let other = table.cost(ProviderId::Openai, "gpt-5-something", 1_000_000, 0);
        assert!((other - 2.50).abs() < 1e-9);
        assert!(table.cost(ProviderId::Ollama, "llama3", 5_000, 5_000).abs() < 1e-12);
    }

    #[test]
    fn prices_out_of_range_are_refused() {
        let price = |input| {
            PriceTable::new(BTreeMap::from([(
                "openai/x".to_owned(),
                Price { input_per_million_usd: input, output_per_million_usd: 1.0 },
            )]))
        };
        assert!(price(2.5).check().is_ok());
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e9] {
            assert!(price(bad).check().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_operators_prices_add_to_the_list_prices() {
        let own = PriceTable::new(BTreeMap::from([(
            "openai/gpt-4o".to_owned(),
            Price { input_per_million_usd: 1.0, output_per_million_usd: 1.0 },
        )]));
        let table = PriceTable::default().extended(own);
        assert!((table.cost(ProviderId::Openai, "gpt-4o", 1_000_000, 0) - 1.0).abs() < 1e-9);
        let unpriced = table.cost(ProviderId::Openai, "gpt-9", 1_000_000, 0);
        assert!((unpriced - 2.5).abs() < 1e-9, "priced at openai/*, not free");
    }
}
