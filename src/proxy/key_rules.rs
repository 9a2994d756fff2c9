//! A key's rules on the request path ([`crate::keys::Rules`]): expiry and budgets checked at
//! admission, the model allow-list once the body's `model` is known, the token cap written
//! into the body, and the budgets charged when the answer is complete.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::Value;

use crate::budget::{Budgets, Exhausted};
use crate::config::Prices;
use crate::config::prices::Tokens;
use crate::diagnose::{self, RefusalCode, catalog::Vars};
use crate::error::ApiError;
use crate::keys::KeyEntry;
use crate::upstream::{ApiStyle, Dialect, Route, Target};
use crate::usage::Usage;

/// 401 `key_expired` past the key's expiry.
pub(super) fn unexpired(key: &KeyEntry, now: i64) -> Result<(), ApiError> {
    match key.rules.expires.as_ref().filter(|e| e.has_passed(now)) {
        Some(expiry) => {
            let vars = Vars::new()
                .set("detail", key.name.clone())
                .set("what", expiry.text.clone());
            Err(diagnose::proxy_refusal(RefusalCode::KeyExpired, &vars))
        }
        None => Ok(()),
    }
}

/// Before anything else is done for the request: 401 `key_expired` past the key's expiry,
/// 429 `budget_exhausted` once a budget in this replica's own spend is spent.
pub(super) fn admit(budgets: &Budgets, key: &KeyEntry, now: i64) -> Result<(), ApiError> {
    unexpired(key, now)?;
    budgets
        .check(&key.name, &key.rules, now)
        .map_err(|spent| budget_exhausted(key, spent, now))
}

/// 429 `budget_exhausted`, with `retry-after` until the period resets.
pub(super) fn budget_exhausted(key: &KeyEntry, spent: Exhausted, now: i64) -> ApiError {
    let seconds = spent.retry_after.as_secs().max(1);
    let vars = Vars::new()
        .set("detail", key.name.clone())
        .set("limit", spent.limit)
        .set(
            "what",
            format!(
                "{} resets at {}",
                spent.budget.field(),
                crate::budget::rfc3339(now.saturating_add_unsigned(seconds))
            ),
        );
    let mut error = diagnose::proxy_refusal(RefusalCode::BudgetExhausted, &vars);
    error.retry_after = Some(seconds);
    error
}

/// 403 `model_not_allowed` when the key has a models list and `model` is not on it (an alias
/// and its deployment count as one model).
pub(super) fn allow_model(
    key: &KeyEntry,
    model: Option<&str>,
    aliases: &BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if key.rules.allows_model(model, aliases) {
        return Ok(());
    }
    let allowed = key.rules.models.as_deref().unwrap_or_default().join(", ");
    let vars = Vars::new()
        .set("detail", key.name.clone())
        .set("what", format!("'{}'", model.unwrap_or_default()))
        .set("limit", allowed);
    Err(diagnose::proxy_refusal(RefusalCode::ModelNotAllowed, &vars))
}

/// The body with its output-token fields held to `cap`: a request asking for more, or for no
/// limit (the field absent or `null`), gets `cap`. The field is the operation's own: Chat
/// Completions' `max_completion_tokens` and `max_tokens` (whichever are sent; when neither,
/// `max_completion_tokens`, or `max_tokens` for api-versions before 2024-09-01 that do not
/// know it), legacy Completions' `max_tokens`, the Responses API's `max_output_tokens`,
/// Anthropic Messages' `max_tokens` (docs/azure-facts.md §9). `None` when nothing changes or the body is not a JSON
/// object (Azure answers that itself).
pub(super) fn capped_body(
    body: &[u8],
    route: &Route<'_>,
    target: &Target,
    cap: u64,
) -> Option<Bytes> {
    let fields: &[&str] = match (route.dialect, route.rest) {
        (Dialect::Anthropic, "messages") => &["max_tokens"],
        (Dialect::Anthropic, _) => return None,
        (_, "chat/completions") => &["max_completion_tokens", "max_tokens"],
        (_, "completions") => &["max_tokens"],
        (_, "responses") => &["max_output_tokens"],
        _ => return None,
    };
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    let mut changed = false;
    let mut present = false;
    for field in fields {
        match object.get(*field) {
            None | Some(Value::Null) => {}
            Some(asked) => {
                present = true;
                if asked.as_u64().is_none_or(|n| n > cap) {
                    object.insert((*field).to_owned(), cap.into());
                    changed = true;
                }
            }
        }
    }
    if !present {
        let field = if fields.len() > 1 && knows_only_max_tokens(route, target) {
            "max_tokens"
        } else {
            fields[0]
        };
        object.insert(field.to_owned(), cap.into());
        changed = true;
    }
    if !changed {
        return None;
    }
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

/// Chat Completions on an api-version older than 2024-09-01 (the deployments style), which
/// has `max_tokens` but not `max_completion_tokens` (docs/azure-facts.md §9).
fn knows_only_max_tokens(route: &Route<'_>, target: &Target) -> bool {
    target.style() == ApiStyle::Deployments
        && route
            .api_version()
            .or(target.api_version())
            .is_some_and(|v| v < "2024-09-01")
}

/// Charges an answer's tokens, and its cost when the model has a price, to `key`'s budgets.
/// Returns the cost (for the ledger).
pub(super) fn charge(
    budgets: &Budgets,
    prices: &Prices,
    key: Option<&KeyEntry>,
    model: &str,
    deployment: Option<&str>,
    usage: &Usage,
    now: i64,
) -> Option<f64> {
    let cost = prices.cost(
        model,
        deployment,
        Tokens {
            prompt: usage.prompt_tokens,
            cached: usage.cached_tokens,
            completion: usage.completion_tokens,
        },
    );
    if let Some(key) = key.filter(|k| k.rules.has_budget()) {
        budgets.charge(&key.name, usage.total(), cost, now);
    }
    cost
}
