//! Per-key rules beyond the per-minute limits: budgets per UTC day and month, an expiry, a
//! model allow-list and a cap on the tokens a request may ask for.
//!
//! ```toml
//! [[key]]
//! name = "alice"
//! sha256 = "…"
//! tokens_per_day = 200000              # prompt + completion tokens per UTC day
//! tokens_per_month = 3000000           # per UTC calendar month
//! usd_per_month = 50.0                 # cost per UTC month, from [prices."MODEL"] in the config
//! models = ["fast", "gpt-4o"]          # allow-list; aliases and their deployments are one model
//! expires = "2027-01-31T00:00:00Z"     # RFC 3339
//! max_tokens_cap = 4096                # a request asking for more, or for no limit, gets this
//! ```
//!
//! Budgets are checked before a request and charged after its answer (`crate::budget`), the
//! way tokens per minute are; the cap rewrites the request body (`crate::proxy::cap`).

use std::collections::BTreeMap;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The optional rules of one key; `None` (or an empty list) means no rule.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Tokens (prompt + completion) per UTC day.
    pub tokens_per_day: Option<u64>,
    /// Tokens per UTC calendar month.
    pub tokens_per_month: Option<u64>,
    /// US dollars per UTC calendar month, priced from the config's `[prices]`.
    pub usd_per_month: Option<f64>,
    /// The models the key may use; `None` allows every model.
    pub models: Option<Vec<String>>,
    /// When the key stops working.
    pub expires: Option<Expiry>,
    /// The most tokens a request may ask for.
    pub max_tokens_cap: Option<u64>,
}

/// A key's expiry: the instant, and its text as written (for `/status` and `keys list`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiry {
    /// Unix seconds.
    pub unix: i64,
    /// RFC 3339, as written in the file.
    pub text: String,
}

impl Expiry {
    /// Parses RFC 3339 (`2027-01-31T00:00:00Z`, `2027-01-31T09:00:00+09:00`).
    pub fn parse(text: &str) -> Result<Expiry, String> {
        let at = OffsetDateTime::parse(text.trim(), &Rfc3339)
            .map_err(|e| format!("expires {text:?} is not an RFC 3339 date and time ({e})"))?;
        Ok(Expiry {
            unix: at.unix_timestamp(),
            text: text.trim().to_owned(),
        })
    }

    /// True once `now` (Unix seconds) has reached the expiry.
    pub fn has_passed(&self, now: i64) -> bool {
        now >= self.unix
    }
}

impl Rules {
    /// True when any rule needs the request's body read (`model` for the allow-list, the
    /// token fields for the cap).
    pub fn reads_body(&self) -> bool {
        self.models.is_some() || self.max_tokens_cap.is_some()
    }

    /// True when the key has a budget to check and charge.
    pub fn has_budget(&self) -> bool {
        self.tokens_per_day.is_some()
            || self.tokens_per_month.is_some()
            || self.usd_per_month.is_some()
    }

    /// Whether `model` is allowed. An alias and the deployment it stands for are one model
    /// (`aliases` maps alias → deployment), so listing either allows both. A request that
    /// names no model (listing models, files) is allowed.
    pub fn allows_model(&self, model: Option<&str>, aliases: &BTreeMap<String, String>) -> bool {
        let (Some(allowed), Some(model)) = (&self.models, model) else {
            return true;
        };
        let resolve = |name: &str| -> String {
            aliases
                .get(name)
                .cloned()
                .unwrap_or_else(|| name.to_owned())
        };
        let asked = resolve(model);
        allowed
            .iter()
            .any(|name| name == model || resolve(name) == asked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3339 with an offset is read as the same instant in UTC; other shapes are refused.
    #[test]
    fn expiry_parses_rfc3339() {
        let utc = Expiry::parse("2027-01-31T00:00:00Z").expect("valid");
        let tokyo = Expiry::parse("2027-01-31T09:00:00+09:00").expect("valid");
        assert_eq!(utc.unix, tokyo.unix);
        assert!(utc.has_passed(utc.unix) && !utc.has_passed(utc.unix - 1));
        for bad in ["2027-01-31", "tomorrow", "2027-01-31 00:00:00"] {
            assert!(Expiry::parse(bad).is_err(), "{bad}");
        }
    }

    /// The allow-list treats an alias and its deployment as one model, and lets requests
    /// without a model through.
    #[test]
    fn allow_list_with_aliases() {
        let aliases: BTreeMap<String, String> = [("fast".to_owned(), "gpt-4o-mini".to_owned())]
            .into_iter()
            .collect();
        let only = |names: &[&str]| Rules {
            models: Some(names.iter().map(|n| (*n).to_owned()).collect()),
            ..Rules::default()
        };
        assert!(Rules::default().allows_model(Some("anything"), &aliases));
        assert!(only(&["fast"]).allows_model(Some("fast"), &aliases));
        assert!(only(&["fast"]).allows_model(Some("gpt-4o-mini"), &aliases));
        assert!(only(&["gpt-4o-mini"]).allows_model(Some("fast"), &aliases));
        assert!(!only(&["fast"]).allows_model(Some("gpt-4o"), &aliases));
        assert!(only(&["fast"]).allows_model(None, &aliases));
    }
}
