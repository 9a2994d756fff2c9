//! The usage writer: answers' usage and budget charges, merged per key, model and day and
//! written to Redis in the background as one atomic script per batch.
//!
//! The request path only queues an [`Event`] (never waits). A batch Redis does not take is
//! kept (merged with what arrives meanwhile, so it stays as small as the distinct keys and
//! models) and written once Redis answers again; at shutdown the writer makes a last attempt.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{Shared, scripts};
use crate::usage::Usage;

/// Rows taken into one batch from the queue at a time (keeps one script's run short on the
/// server; a batch kept while Redis is away grows only with new keys, models and days).
const MAX_BATCH: usize = 256;
/// Longest the last write at shutdown may take.
const LAST_WRITE: Duration = Duration::from_secs(2);
/// Pause before writing a kept batch again when no reconnection was announced.
const RETRY: Duration = Duration::from_secs(1);

/// Usage for the writer.
#[derive(Debug, Clone)]
pub enum Event {
    /// An answered request (`error`: status 400 or more).
    Request {
        /// The access key's name (empty: no keys).
        key: String,
        /// The model named (empty: none).
        model: String,
        /// Answered with 400 or more.
        error: bool,
        /// When (Unix seconds).
        now: i64,
    },
    /// The tokens an answer used and their cost, charged to the key's window and budgets.
    Usage {
        /// The access key's name (empty: no keys).
        key: String,
        /// The model named.
        model: String,
        /// What the upstream reported.
        usage: Usage,
        /// Dollars, when the model has a price.
        cost: f64,
        /// When (Unix seconds).
        now: i64,
    },
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    requests: u64,
    errors: u64,
    prompt: u64,
    completion: u64,
    cached: u64,
    cost: f64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Charge {
    tokens: u64,
    usd: f64,
}

/// What has not been written yet.
#[derive(Debug, Default)]
struct Pending {
    /// (key, day) → the answer's tokens and dollars.
    charges: HashMap<(String, String), Charge>,
    /// (day, key, model) → usage.
    usage: HashMap<(String, String, String), Counts>,
}

impl Pending {
    fn len(&self) -> usize {
        self.charges.len() + self.usage.len()
    }

    fn add(&mut self, event: Event) {
        match event {
            Event::Request {
                key,
                model,
                error,
                now,
            } => {
                let counts = self.row(now, key, model);
                counts.requests += 1;
                counts.errors += u64::from(error);
            }
            Event::Usage {
                key,
                model,
                usage,
                cost,
                now,
            } => {
                // A price is finite, but a NaN or infinity here would make Redis refuse the
                // whole batch.
                let cost = if cost.is_finite() && cost > 0.0 {
                    cost
                } else {
                    0.0
                };
                if !key.is_empty() {
                    let charge = self
                        .charges
                        .entry((key.clone(), crate::ledger::day(now)))
                        .or_default();
                    charge.tokens = charge.tokens.saturating_add(usage.total());
                    charge.usd += cost;
                }
                let counts = self.row(now, key, model);
                counts.prompt += usage.prompt_tokens;
                counts.completion += usage.completion_tokens;
                counts.cached += usage.cached_tokens;
                counts.cost += cost;
            }
        }
    }

    fn row(&mut self, now: i64, key: String, model: String) -> &mut Counts {
        let key = if key.is_empty() {
            "anonymous".to_owned()
        } else {
            key
        };
        let model = crate::ledger::model_label(&model).to_owned();
        self.usage
            .entry((crate::ledger::day(now), key, model))
            .or_default()
    }
}

/// A batch on its way: its name (for the marker) and its rows. It is sent again, unchanged,
/// until Redis takes it; events arriving meanwhile wait in the next batch.
#[derive(Debug)]
struct InFlight {
    id: String,
    rows: Pending,
}

/// How a write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// Applied (now or by an earlier attempt).
    Yes,
    /// Redis is away: send it again later.
    Later,
    /// Redis refused it (out of memory, a malformed batch): dropped, and said so.
    Refused,
}

/// Writes batches until `shutdown`, then makes a last attempt with what is left.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut queue: mpsc::UnboundedReceiver<Event>,
    shutdown: CancellationToken,
) {
    let mut pending = Pending::default();
    let mut in_flight: Option<InFlight> = None;
    let mut batches: u64 = 0;
    loop {
        if in_flight.is_none() && pending.len() == 0 {
            tokio::select! {
                () = shutdown.cancelled() => break,
                event = queue.recv() => match event {
                    Some(event) => pending.add(event),
                    None => break,
                },
            }
        }
        while pending.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(event) => pending.add(event),
                Err(_) => break,
            }
        }
        let batch = in_flight.get_or_insert_with(|| {
            batches += 1;
            InFlight {
                id: format!("{}-{batches}", shared.replica),
                rows: std::mem::take(&mut pending),
            }
        });
        match write(&shared, batch).await {
            Written::Yes => in_flight = None,
            Written::Refused => {
                warn!(redis = %shared.shown, rows = batch.rows.len(), "Redis refused a usage batch; its rows are not in the team's totals (this replica's usage ledger, when set, still holds them)");
                in_flight = None;
            }
            Written::Later => {
                // Wait for a reconnection (or a while), taking events meanwhile.
                let wait = tokio::time::sleep(RETRY);
                tokio::pin!(wait);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = shared.reconnected.notified() => break,
                        () = &mut wait => break,
                        event = queue.recv() => match event {
                            Some(event) => pending.add(event),
                            None => break,
                        },
                    }
                }
                if shutdown.is_cancelled() {
                    break;
                }
            }
        }
    }
    while let Ok(event) = queue.try_recv() {
        pending.add(event);
    }
    let last = async {
        if let Some(batch) = &in_flight
            && write(&shared, batch).await != Written::Yes
        {
            return false;
        }
        if pending.len() > 0 {
            let batch = InFlight {
                id: format!("{}-{}", shared.replica, batches + 1),
                rows: std::mem::take(&mut pending),
            };
            return write(&shared, &batch).await == Written::Yes;
        }
        true
    };
    if !matches!(tokio::time::timeout(LAST_WRITE, last).await, Ok(true)) {
        warn!(redis = %shared.shown, "usage not written to Redis at shutdown (Redis unreachable); this replica's usage ledger, when set, still holds it");
    }
}

/// Writes `batch` as one script, applied at most once whatever the retries.
async fn write(shared: &Arc<Shared>, batch: &InFlight) -> Written {
    let rows = &batch.rows;
    let mut invocation = shared.flush.prepare_invoke();
    invocation
        .key(scripts::batch_marker(&batch.id))
        .arg(rows.charges.len());
    for ((key, day), charge) in &rows.charges {
        invocation
            .key(scripts::tokens_window(key))
            .key(scripts::day_spend(key, day))
            .key(scripts::month_spend(key, &day[..7]))
            .arg(charge.tokens)
            .arg(charge.usd);
    }
    for ((day, key, model), counts) in &rows.usage {
        invocation
            .key(scripts::usage_day(day))
            .arg(format!("{key}{}{model}", scripts::FIELD_SEPARATOR))
            .arg(counts.requests)
            .arg(counts.errors)
            .arg(counts.prompt)
            .arg(counts.completion)
            .arg(counts.cached)
            .arg(counts.cost);
    }
    let outcome = shared
        .run_as(super::Purpose::Request, |mut connection| async move {
            invocation.invoke_async::<i64>(&mut connection).await
        })
        .await;
    match outcome {
        Ok(_) => Written::Yes,
        Err(super::Failed::Refused) => Written::Refused,
        Err(super::Failed::Unreachable) => Written::Later,
    }
}
