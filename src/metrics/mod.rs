//! Prometheus metrics: requests by route, status, model and key; upstream latency; time to
//! first byte of streams; streams in flight; token refreshes and expiry; usage per key and
//! model.
//!
//! One [`Metrics`] per process, shared as `Arc`. Recording is atomics plus read-locked map
//! look-ups (a write lock only the first time a label set is seen). Label values taken from
//! requests are bounded (see [`labels`]): at most [`MAX_MODELS`] distinct models,
//! [`MAX_KEYS`] keys and [`MAX_ROUTES`] routes; values past the limit, longer than
//! [`labels::MAX_LEN`] bytes or holding control characters are recorded as `other`.
//! Token gauges are computed from the [`TokenState`] at scrape time, in [`Metrics::render`].

pub mod labels;
mod usage;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::token::TokenState;
use labels::Bounded;
pub use labels::route_label;
pub use usage::UsageRow;
use usage::UsageTable;

/// `Content-Type` of [`Metrics::render`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;
/// Distinct model names recorded before new ones become `other`.
pub const MAX_MODELS: usize = 100;
/// Distinct key names recorded before new ones become `other`.
pub const MAX_KEYS: usize = 100;
/// Distinct routes recorded before new ones become `other`.
pub const MAX_ROUTES: usize = 32;

/// Histogram buckets in seconds, suited to LLM calls: from 5 ms (a cached refusal) to 120 s
/// (a long completion).
const LATENCY_BUCKETS: [f64; 15] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];

/// One finished request, as the forwarding handler saw it.
#[derive(Debug, Clone, Copy)]
pub struct RequestRecord<'a> {
    /// The inbound path after `/v1/`, ids collapsed (`chat/completions`, `models`, …).
    pub route: &'a str,
    /// The status answered to the caller.
    pub status: u16,
    /// The body's `model`; `""` when absent (recorded as `none`).
    pub model: &'a str,
    /// The access key's name; `""` without access keys (recorded as `anonymous`).
    pub key: &'a str,
    /// Time until the upstream's response headers; `None` when no upstream call was made.
    pub upstream_latency: Option<Duration>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    status: u16,
    model: Arc<str>,
    key: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteModel {
    route: Arc<str>,
    model: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: Arc<str>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    version: &'static str,
    credential: String,
    api: String,
}

/// Builds histograms with [`LATENCY_BUCKETS`].
#[derive(Debug, Clone, Copy)]
struct LatencyHistogram;

impl MetricConstructor<Histogram> for LatencyHistogram {
    fn new_metric(&self) -> Histogram {
        Histogram::new(LATENCY_BUCKETS)
    }
}

/// The process's metrics. Created once by the server and shared with the forwarding handler
/// (recording) and the `/metrics` and `/status` handlers (reading).
#[derive(Debug)]
pub struct Metrics {
    /// Everything `/metrics` exposes; fixed after [`Metrics::new`].
    registry: Registry,
    routes: Bounded,
    models: Bounded,
    keys: Bounded,
    requests: Family<RequestLabels, Counter>,
    upstream_latency: Family<RouteModel, Histogram, LatencyHistogram>,
    stream_ttfb: Family<RouteLabel, Histogram, LatencyHistogram>,
    streams_in_flight: Gauge,
    websockets_open: Gauge,
    token_refreshes: Family<Outcome, Counter>,
    /// Set from the token state at scrape time.
    token_expiry: Gauge<f64, AtomicU64>,
    /// Set from the token state at scrape time.
    token_failures: Gauge,
    /// Set from the token state at scrape time.
    up: Gauge,
    info: Family<InfoLabels, Gauge>,
    usage: Arc<UsageTable>,
}

impl Metrics {
    /// Empty metrics, every family registered.
    pub fn new() -> Arc<Self> {
        let metrics = Self {
            registry: Registry::default(),
            routes: Bounded::new(MAX_ROUTES, "none"),
            models: Bounded::new(MAX_MODELS, "none"),
            keys: Bounded::new(MAX_KEYS, "anonymous"),
            requests: Family::default(),
            upstream_latency: Family::new_with_constructor(LatencyHistogram),
            stream_ttfb: Family::new_with_constructor(LatencyHistogram),
            streams_in_flight: Gauge::default(),
            websockets_open: Gauge::default(),
            token_refreshes: Family::default(),
            token_expiry: Gauge::default(),
            token_failures: Gauge::default(),
            up: Gauge::default(),
            info: Family::default(),
            usage: Arc::default(),
        };
        Arc::new(metrics.registered())
    }

    fn registered(mut self) -> Self {
        // The registry ends each help text with a period.
        let r = &mut self.registry;
        r.register(
            "foundry_proxy_requests",
            "Requests answered, by route, status, model and access key",
            self.requests.clone(),
        );
        r.register(
            "foundry_proxy_upstream_latency_seconds",
            "Time from sending a request upstream to the upstream's response headers",
            self.upstream_latency.clone(),
        );
        r.register(
            "foundry_proxy_stream_ttfb_seconds",
            "Streams: time from the request to the first body byte sent to the caller",
            self.stream_ttfb.clone(),
        );
        r.register(
            "foundry_proxy_streams_in_flight",
            "Streaming responses being sent now",
            self.streams_in_flight.clone(),
        );
        r.register(
            "foundry_proxy_websockets_open",
            "WebSocket connections (realtime, Responses WebSocket mode) being relayed now",
            self.websockets_open.clone(),
        );
        r.register(
            "foundry_proxy_token_refreshes",
            "Entra ID token refresh attempts, by outcome (ok or error)",
            self.token_refreshes.clone(),
        );
        r.register(
            "foundry_proxy_token_expiry_seconds",
            "Seconds until the held token expires (0 when no valid token is held)",
            self.token_expiry.clone(),
        );
        r.register(
            "foundry_proxy_token_refresh_failures",
            "Consecutive failed token refreshes (0 after a success)",
            self.token_failures.clone(),
        );
        r.register(
            "foundry_proxy_up",
            "1 while the proxy holds a valid token and can forward requests (as /readyz), else 0",
            self.up.clone(),
        );
        r.register(
            "foundry_proxy_info",
            "Version, credential kind and API style; always 1",
            self.info.clone(),
        );
        r.register_collector(Box::new(Arc::clone(&self.usage)));
        for outcome in ["ok", "error"] {
            drop(self.token_refreshes.get_or_create(&Outcome { outcome }));
        }
        self.set_info("unknown", "unknown");
        self
    }

    /// Sets the credential kind and API style shown in `foundry_proxy_info`.
    pub fn set_info(&self, credential: &str, api: &str) {
        self.info.clear();
        self.info
            .get_or_create(&InfoLabels {
                version: env!("CARGO_PKG_VERSION"),
                credential: credential.to_owned(),
                api: api.to_owned(),
            })
            .set(1);
    }

    /// Records one finished request.
    pub fn record_request(&self, r: &RequestRecord<'_>) {
        let route = self.routes.get(r.route);
        let model = self.models.get(r.model);
        let key = self.keys.get(r.key);
        let cells = self.usage.cells(&key, &model);
        cells.requests.fetch_add(1, Ordering::Relaxed);
        if r.status >= 400 {
            cells.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(latency) = r.upstream_latency {
            self.upstream_latency
                .get_or_create(&RouteModel {
                    route: Arc::clone(&route),
                    model: Arc::clone(&model),
                })
                .observe(latency.as_secs_f64());
        }
        self.requests
            .get_or_create(&RequestLabels {
                route,
                status: r.status,
                model,
                key,
            })
            .inc();
    }

    /// Adds the token counts the upstream reported for a request of `key` with `model`.
    pub fn record_usage(&self, key: &str, model: &str, usage_prompt: u64, usage_completion: u64) {
        let cells = self
            .usage
            .cells(&self.keys.get(key), &self.models.get(model));
        cells.prompt.fetch_add(usage_prompt, Ordering::Relaxed);
        cells
            .completion
            .fetch_add(usage_completion, Ordering::Relaxed);
    }

    /// Streams: where the time from the request to the first body byte sent to the caller is
    /// observed, for `route`. Taken when the stream starts (the look-up is done then) and
    /// observed at its first byte; the handle shares the series, it does not copy it.
    pub fn stream_ttfb(&self, route: &str) -> Histogram {
        self.stream_ttfb
            .get_or_create(&RouteLabel {
                route: self.routes.get(route),
            })
            .clone()
    }

    /// Counts a stream in flight until the returned guard is dropped.
    pub fn stream_started(self: &Arc<Self>) -> StreamGuard {
        self.streams_in_flight.inc();
        StreamGuard {
            gauge: self.streams_in_flight.clone(),
        }
    }

    /// Counts a relayed WebSocket as open until the returned guard is dropped.
    pub fn websocket_opened(self: &Arc<Self>) -> StreamGuard {
        self.websockets_open.inc();
        StreamGuard {
            gauge: self.websockets_open.clone(),
        }
    }

    /// Counts one token refresh attempt.
    pub fn token_refresh(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.token_refreshes
            .get_or_create(&Outcome { outcome })
            .inc();
    }

    /// The Prometheus text exposition, with the token gauges taken from `token` now.
    pub fn render(&self, token: &TokenState) -> String {
        let now = Instant::now();
        let valid = token.token.as_ref().filter(|t| t.is_valid(now));
        self.token_expiry.set(valid.map_or(0.0, |t| {
            t.expires_at.saturating_duration_since(now).as_secs_f64()
        }));
        self.up.set(i64::from(valid.is_some()));
        self.token_failures
            .set(token.failure.as_ref().map_or(0, |f| i64::from(f.failures)));
        let mut text = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail, and no metric here returns an error of its own.
        let _ = prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// Usage per key and model, sorted by key then model.
    pub fn usage_snapshot(&self) -> Vec<UsageRow> {
        self.usage.snapshot()
    }
}

/// A stream in flight (`foundry_proxy_streams_in_flight`) or an open WebSocket
/// (`foundry_proxy_websockets_open`): its gauge counts it until this is dropped.
#[derive(Debug)]
#[must_use = "the stream counts as in flight only while the guard lives"]
pub struct StreamGuard {
    gauge: Gauge,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[cfg(test)]
mod tests;
