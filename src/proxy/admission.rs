//! Phase 1, admit (continued): a key's expiry, budgets and per-minute limits, counted in
//! Redis when replicas share it (`FOUNDRY_PROXY_REDIS_URL`), else in this process.

use std::sync::Arc;
use std::time::Duration;

use super::{ProxyState, key_rules};
use crate::config::redis::RedisFailure;
use crate::diagnose::{self, RefusalCode, catalog::Vars};
use crate::error::ApiError;
use crate::keys::KeyEntry;
use crate::limits::{Decision, Exceeded};
use crate::shared::{Shared, Verdict};

/// What a refused caller is told to wait while Redis is away (the reconnection tries every
/// 0.2–2 s).
const REDIS_RETRY_AFTER: u64 = 2;

/// Counts the request against its key's budgets and limits, or answers 401 `key_expired`,
/// 429 (`budget_exhausted`, `rate_limit_exceeded`, `token_limit_exceeded`) with
/// `retry-after`, or 503 `redis_unavailable` when Redis is away and the proxy fails closed.
/// Without keys there are no limits; keys with neither limits nor budgets never reach Redis.
pub(crate) async fn within_limits(
    state: &ProxyState,
    key: Option<&Arc<KeyEntry>>,
) -> Result<(), ApiError> {
    let Some(key) = key else {
        return Ok(());
    };
    let now = crate::clock::unix_now_signed();
    key_rules::unexpired(key, now)?;
    let counted = key.limits.requests_per_minute.is_some()
        || key.limits.tokens_per_minute.is_some()
        || key.rules.has_budget();
    if let Some(shared) = state.shared.as_ref().filter(|_| counted) {
        match shared.admit(key, now).await {
            Ok(verdict) => return shared_verdict(state, key, verdict, now),
            Err(_) if shared.failure() == RedisFailure::Closed => {
                return Err(redis_unavailable(shared, key));
            }
            // Fail open: this replica's own budgets and window decide.
            Err(_) => {}
        }
    }
    key_rules::admit(&state.budgets, key, now)?;
    match state
        .limiter
        .admit(&key.name, key.limits, tokio::time::Instant::now())
    {
        Decision::Allow => Ok(()),
        Decision::Deny {
            exceeded,
            limit,
            retry_after,
        } => Err(over_limit(key, exceeded, limit, retry_after)),
    }
}

/// The shared verdict as this request's answer; an admitted request is also counted in this
/// replica's own window, so it is warm if Redis goes away.
fn shared_verdict(
    state: &ProxyState,
    key: &KeyEntry,
    verdict: Verdict,
    now: i64,
) -> Result<(), ApiError> {
    match verdict {
        Verdict::Allow => {
            state
                .limiter
                .count(&key.name, key.limits, tokio::time::Instant::now());
            Ok(())
        }
        Verdict::Limited {
            exceeded,
            limit,
            retry_after,
        } => Err(over_limit(key, exceeded, limit, retry_after)),
        Verdict::Spent(budget) => Err(spent_refusal(key, budget, now)),
    }
}

/// 429 `budget_exhausted` for the budget of `key` that Redis says is spent.
fn spent_refusal(key: &KeyEntry, budget: crate::budget::Budget, now: i64) -> ApiError {
    key_rules::budget_exhausted(key, budget.exhausted(&key.rules, now), now)
}

/// 429 `rate_limit_exceeded` or `token_limit_exceeded` with `retry-after`.
fn over_limit(key: &KeyEntry, exceeded: Exceeded, limit: u64, retry_after: Duration) -> ApiError {
    let code = match exceeded {
        Exceeded::Requests => RefusalCode::RateLimitExceeded,
        Exceeded::Tokens => RefusalCode::TokenLimitExceeded,
    };
    let vars = Vars::new()
        .set("detail", key.name.clone())
        .set("limit", limit.to_string());
    let mut error = diagnose::proxy_refusal(code, &vars);
    error.retry_after = Some(retry_after.as_secs().max(1));
    error
}

/// 503 `redis_unavailable` with `retry-after`.
fn redis_unavailable(shared: &Shared, key: &KeyEntry) -> ApiError {
    let vars = Vars::new()
        .set("detail", key.name.clone())
        .set("what", shared.shown().to_owned());
    let mut error = diagnose::proxy_refusal(RefusalCode::RedisUnavailable, &vars);
    error.retry_after = Some(REDIS_RETRY_AFTER);
    error
}

/// At a WebSocket's handshake: the key's expiry and budgets (its limits count each
/// `response.create` on the socket), from Redis when shared.
pub(crate) async fn handshake(state: &ProxyState, key: &KeyEntry) -> Result<(), ApiError> {
    let now = crate::clock::unix_now_signed();
    key_rules::unexpired(key, now)?;
    if !key.rules.has_budget() {
        return Ok(());
    }
    if let Some(shared) = &state.shared {
        match shared.spend(&key.name, now).await {
            Ok(spend) => {
                let spent = crate::budget::spent(
                    spend.day_tokens,
                    spend.month_tokens,
                    spend.month_usd,
                    &key.rules,
                );
                return spent.map_or(Ok(()), |budget| Err(spent_refusal(key, budget, now)));
            }
            Err(_) if shared.failure() == RedisFailure::Closed => {
                return Err(redis_unavailable(shared, key));
            }
            Err(_) => {}
        }
    }
    key_rules::admit(&state.budgets, key, now)
}
