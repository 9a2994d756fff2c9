//! What the pool shows: its part of `/status` and of `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Member, Pool};

/// One metric: name, type, help and how to read it from an upstream.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Member, Instant) -> f64,
);

impl Pool {
    /// `/status`'s `upstreams`: each upstream with its endpoint, order, counters and the
    /// targets that rest now (until when, and why).
    pub fn status_json(&self) -> Value {
        let now = Instant::now();
        let upstreams: Vec<Value> = self
            .members
            .iter()
            .map(|member| {
                let resting: Vec<Value> = member
                    .health
                    .resting_now(now)
                    .into_iter()
                    .map(|r| {
                        let left_ms = u64::try_from(r.left.as_millis()).unwrap_or(u64::MAX);
                        json!({
                            "deployment": r.deployment,
                            "resting_ms": left_ms,
                            // Rounded up to the second: not tried before then.
                            "until_unix": crate::clock::unix_now()
                                .saturating_add(left_ms.div_ceil(1000)),
                            "why": r.why.to_string(),
                        })
                    })
                    .collect();
                let c = &member.counters;
                json!({
                    "name": member.name,
                    "endpoint": member.target.base(),
                    "api": member.target.style().as_str(),
                    "priority": member.priority,
                    "weight": member.weight,
                    "scope": member.scope,
                    "health": if resting.is_empty() { "ok" } else { "resting" },
                    "resting": resting,
                    "requests": c.requests.load(Ordering::Relaxed),
                    "failovers": c.failovers.load(Ordering::Relaxed),
                    "rests": c.rests.load(Ordering::Relaxed),
                })
            })
            .collect();
        json!({
            "max_wait_ms": self.max_wait.map(|w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX)),
            "list": upstreams,
        })
    }

    /// The per-upstream metrics in the Prometheus text format, appended to `/metrics`.
    /// Upstream names are checked at load (letters, digits, `-`, `_`, `.`), so they are safe
    /// label values as they are.
    pub fn render_metrics(&self, out: &mut String) {
        let now = Instant::now();
        let counters: [Series; 6] = [
            (
                "foundry_proxy_upstream_requests_total",
                "counter",
                "Attempts sent to each upstream.",
                |m, _| m.counters.requests.load(Ordering::Relaxed) as f64,
            ),
            (
                "foundry_proxy_upstream_failovers_total",
                "counter",
                "Attempts that went on to another target after this upstream's 429, 5xx or connection failure.",
                |m, _| m.counters.failovers.load(Ordering::Relaxed) as f64,
            ),
            (
                "foundry_proxy_upstream_rests_total",
                "counter",
                "Times a target of this upstream was put to rest (429) or ejected (failures).",
                |m, _| m.counters.rests.load(Ordering::Relaxed) as f64,
            ),
            (
                "foundry_proxy_upstream_resting",
                "gauge",
                "Targets of this upstream resting now.",
                |m, now| m.health.resting_now(now).len() as f64,
            ),
            (
                "foundry_proxy_upstream_latency_seconds_sum",
                "counter",
                "Time to response headers of this upstream's answered attempts, summed.",
                |m, _| m.counters.latency_micros.load(Ordering::Relaxed) as f64 / 1e6,
            ),
            (
                "foundry_proxy_upstream_latency_seconds_count",
                "counter",
                "Answered attempts of this upstream.",
                |m, _| m.counters.answered.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, kind, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for member in &self.members {
                let _ = writeln!(
                    out,
                    "{name}{{upstream=\"{}\"}} {}",
                    member.name,
                    value(member, now)
                );
            }
        }
    }
}
