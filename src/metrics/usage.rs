//! Usage per access key and model: requests, errors, prompt and completion tokens.
//!
//! One table serves both readers: `/metrics` encodes it at scrape time (a
//! [`Collector`]), and `/status` and `foundry-proxy usage` read [`UsageRow`]s from it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use serde::{Deserialize, Serialize};

/// Usage of one access key with one model since the proxy started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRow {
    /// The access key's name (`anonymous` without access keys).
    pub key: String,
    /// The model (deployment) named in the requests (`none` when absent, `other` past the
    /// label limit).
    pub model: String,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered with a status of 400 or more.
    pub errors: u64,
    /// Prompt (input) tokens the upstream reported.
    pub prompt_tokens: u64,
    /// Completion (output) tokens the upstream reported.
    pub completion_tokens: u64,
}

/// The counters of one key and model.
#[derive(Debug, Default)]
pub(super) struct Cells {
    pub(super) requests: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) prompt: AtomicU64,
    pub(super) completion: AtomicU64,
}

/// Label set of the usage counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyModel {
    key: Arc<str>,
    model: Arc<str>,
}

/// Every key and model seen. Rows are bounded by the key and model label limits.
#[derive(Debug, Default)]
pub(super) struct UsageTable {
    rows: RwLock<foldhash::HashMap<KeyModel, Arc<Cells>>>,
}

impl UsageTable {
    /// The counters of `key` and `model`, created at first use.
    pub(super) fn cells(&self, key: &Arc<str>, model: &Arc<str>) -> Arc<Cells> {
        let id = KeyModel {
            key: Arc::clone(key),
            model: Arc::clone(model),
        };
        if let Some(cells) = self
            .rows
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Arc::clone(cells);
        }
        let mut rows = self.rows.write().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(rows.entry(id).or_default())
    }

    /// Every row, sorted by key then model.
    pub(super) fn snapshot(&self) -> Vec<UsageRow> {
        let mut rows: Vec<UsageRow> = self
            .rows
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, cells)| UsageRow {
                key: id.key.to_string(),
                model: id.model.to_string(),
                requests: cells.requests.load(Ordering::Relaxed),
                errors: cells.errors.load(Ordering::Relaxed),
                prompt_tokens: cells.prompt.load(Ordering::Relaxed),
                completion_tokens: cells.completion.load(Ordering::Relaxed),
            })
            .collect();
        rows.sort_by(|a, b| (&a.key, &a.model).cmp(&(&b.key, &b.model)));
        rows
    }

    fn labelled(&self) -> Vec<(KeyModel, Arc<Cells>)> {
        let mut rows: Vec<_> = self
            .rows
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, cells)| (id.clone(), Arc::clone(cells)))
            .collect();
        rows.sort_by(|(a, _), (b, _)| (&a.key, &a.model).cmp(&(&b.key, &b.model)));
        rows
    }
}

/// The usage counters as exposed on `/metrics` (the encoder appends `_total`).
const FAMILIES: [(&str, &str); 3] = [
    (
        "foundry_proxy_usage_prompt_tokens",
        "Prompt tokens reported by the upstream, by access key and model.",
    ),
    (
        "foundry_proxy_usage_completion_tokens",
        "Completion tokens reported by the upstream, by access key and model.",
    ),
    (
        "foundry_proxy_errors",
        "Requests answered with a status of 400 or more, by access key and model.",
    ),
];

impl Collector for UsageTable {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows = self.labelled();
        for (index, (name, help)) in FAMILIES.iter().enumerate() {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (labels, cells) in &rows {
                let cell = match index {
                    0 => &cells.prompt,
                    1 => &cells.completion,
                    _ => &cells.errors,
                };
                ConstCounter::new(cell.load(Ordering::Relaxed))
                    .encode(metric.encode_family(labels)?)?;
            }
        }
        Ok(())
    }
}
