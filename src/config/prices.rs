//! `[prices."MODEL"]`: what a model's tokens cost, for the keys' `usd_per_month` budgets and the
//! usage ledger's cost column.
//!
//! ```toml
//! [prices."gpt-4o"]
//! input_per_million = 2.50
//! output_per_million = 10.00
//! cached_input_per_million = 1.25   # optional; the input price when left out
//! ```
//!
//! Prices are the operator's to state: Azure's price depends on the region, the deployment
//! type and the agreement, and no API the proxy can call returns it.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;

/// One model's prices in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Input (prompt) tokens.
    pub input_per_million: f64,
    /// Output (completion) tokens.
    pub output_per_million: f64,
    /// Input tokens read from the prompt cache; the input price when absent.
    pub cached_input_per_million: Option<f64>,
}

/// Prices by model name (the name clients send, or a deployment).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices {
    by_model: BTreeMap<String, Price>,
}

/// Tokens of one answer, as priced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// Input tokens, cached ones included.
    pub prompt: u64,
    /// Of which read from the prompt cache.
    pub cached: u64,
    /// Output tokens.
    pub completion: u64,
}

impl Prices {
    /// Checks every price (finite, not negative) and builds the table.
    pub fn new(table: Option<BTreeMap<String, Price>>) -> Result<Prices, ConfigError> {
        let by_model = table.unwrap_or_default();
        for (model, price) in &by_model {
            let fields = [
                ("input_per_million", Some(price.input_per_million)),
                ("output_per_million", Some(price.output_per_million)),
                ("cached_input_per_million", price.cached_input_per_million),
            ];
            for (field, value) in fields {
                if let Some(value) = value.filter(|v| !v.is_finite() || *v < 0.0) {
                    return Err(ConfigError::new(
                        &format!("[prices.\"{model}\"] {field}"),
                        format!("{value} is not a price"),
                        "write US dollars per million tokens, e.g. 2.50 (0 for free)",
                    ));
                }
            }
        }
        Ok(Prices { by_model })
    }

    /// True when no price is configured.
    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }

    /// The price of `model`, or of `deployment` (what an alias stands for) when `model` has none.
    pub fn of(&self, model: &str, deployment: Option<&str>) -> Option<&Price> {
        self.by_model
            .get(model)
            .or_else(|| deployment.and_then(|d| self.by_model.get(d)))
    }

    /// What `tokens` of `model` cost in US dollars; `None` when the model has no price.
    pub fn cost(&self, model: &str, deployment: Option<&str>, tokens: Tokens) -> Option<f64> {
        let price = self.of(model, deployment)?;
        let cached = tokens.cached.min(tokens.prompt);
        let fresh = tokens.prompt - cached;
        let per = |n: u64, usd: f64| n as f64 * usd / 1_000_000.0;
        Some(
            per(fresh, price.input_per_million)
                + per(
                    cached,
                    price
                        .cached_input_per_million
                        .unwrap_or(price.input_per_million),
                )
                + per(tokens.completion, price.output_per_million),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cached input is priced apart (at the input price when no cached price is given), and an
    /// alias falls back to its deployment's price.
    #[test]
    fn cost_per_million() {
        let table: BTreeMap<String, Price> = toml::from_str(
            "[gpt-4o]\ninput_per_million = 2.5\noutput_per_million = 10\ncached_input_per_million = 1.25\n[o3]\ninput_per_million = 2\noutput_per_million = 8\n",
        )
        .expect("valid");
        let prices = Prices::new(Some(table)).expect("valid");
        let tokens = Tokens {
            prompt: 1_000_000,
            cached: 400_000,
            completion: 100_000,
        };
        let cost = prices.cost("gpt-4o", None, tokens).expect("priced");
        assert!((cost - (1.5 + 0.5 + 1.0)).abs() < 1e-9, "{cost}");
        let cost = prices
            .cost("fast", Some("o3"), tokens)
            .expect("via deployment");
        assert!((cost - (2.0 + 0.8)).abs() < 1e-9, "{cost}");
        assert!(prices.cost("unknown", None, tokens).is_none());
    }

    /// The config file's `[prices."MODEL"]` tables (quoted names with dots) read into
    /// the settings; an unknown field is refused.
    #[test]
    fn read_from_the_config_file() {
        let settings: super::super::Settings = toml::from_str(
            "[prices.\"gpt-4.1\"]\ninput_per_million = 2\noutput_per_million = 8.0\n",
        )
        .expect("valid");
        let prices = Prices::new(settings.prices).expect("valid");
        assert_eq!(
            prices.of("gpt-4.1", None).map(|p| p.output_per_million),
            Some(8.0)
        );
        assert!(
            toml::from_str::<super::super::Settings>(
                "[prices.m]\ninput_per_million = 1\noutput_per_million = 1\ncache = 1\n"
            )
            .is_err()
        );
    }

    /// A negative or infinite price is a configuration error naming the model and field.
    #[test]
    fn bad_prices_are_refused() {
        let table: BTreeMap<String, Price> =
            toml::from_str("[m]\ninput_per_million = -1.0\noutput_per_million = 1.0\n")
                .expect("parses");
        let error = Prices::new(Some(table)).expect_err("negative");
        assert!(
            error
                .to_string()
                .contains("[prices.\"m\"] input_per_million"),
            "{error}"
        );
    }
}
