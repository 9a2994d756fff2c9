//! Where a finished answer's usage goes, whichever way it arrived (a JSON answer, an SSE
//! stream, a WebSocket's `response.done`): the key's token window, its budgets, the usage
//! ledger, the replicas' shared Redis and the metrics.

use std::sync::Arc;

use super::{ProxyState, key_rules};
use crate::budget::Budgets;
use crate::config::Prices;
use crate::keys::KeyEntry;
use crate::ledger::Ledger;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::shared::{Event, Shared};
use crate::usage::Usage;

/// The shared state usage is counted into; cheap to clone, so an answer's body can own one.
#[derive(Debug, Clone)]
pub(super) struct UsageSink {
    limiter: Arc<Limiter>,
    metrics: Arc<Metrics>,
    budgets: Arc<Budgets>,
    prices: Arc<Prices>,
    ledger: Option<Arc<Ledger>>,
    shared: Option<Arc<Shared>>,
}

impl UsageSink {
    pub(super) fn of(state: &ProxyState) -> Self {
        Self {
            limiter: Arc::clone(&state.limiter),
            metrics: Arc::clone(&state.metrics),
            budgets: Arc::clone(&state.budgets),
            prices: Arc::clone(&state.prices),
            ledger: state.ledger.clone(),
            shared: state.shared.clone(),
        }
    }

    /// Counts `seen` for `key` (none without keys) and `model` (the name the caller used;
    /// `deployment` is what an alias stands for, so either may carry the price).
    pub(super) fn record(
        &self,
        key: Option<&KeyEntry>,
        model: &str,
        deployment: Option<&str>,
        seen: &Usage,
    ) {
        let key_name = key.map_or("", |k| k.name.as_str());
        if !key_name.is_empty() {
            self.limiter
                .add_tokens(key_name, seen.total(), tokio::time::Instant::now());
        }
        let now = crate::clock::unix_now_signed();
        let cost = key_rules::charge(
            &self.budgets,
            &self.prices,
            key,
            model,
            deployment,
            seen,
            now,
        );
        if let Some(ledger) = &self.ledger {
            ledger.usage(key_name, model, seen, cost);
        }
        if let Some(shared) = &self.shared {
            shared.send(Event::Usage {
                key: key_name.to_owned(),
                model: model.to_owned(),
                usage: *seen,
                cost: cost.unwrap_or(0.0),
                now,
            });
        }
        self.metrics
            .record_usage(key_name, model, seen.prompt_tokens, seen.completion_tokens);
    }
}
