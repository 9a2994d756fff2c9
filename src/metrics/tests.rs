use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use super::*;
use crate::credential::CredentialError;
use crate::token::{HeldToken, RefreshFailure};

/// Every family `/metrics` promises, as the sample names appear (counters with `_total`).
const NAMES: [&str; 13] = [
    "foundry_proxy_requests_total",
    "foundry_proxy_upstream_latency_seconds",
    "foundry_proxy_stream_ttfb_seconds",
    "foundry_proxy_streams_in_flight",
    "foundry_proxy_token_refreshes_total",
    "foundry_proxy_token_expiry_seconds",
    "foundry_proxy_token_refresh_failures",
    "foundry_proxy_up",
    "foundry_proxy_info",
    "foundry_proxy_usage_prompt_tokens_total",
    "foundry_proxy_usage_completion_tokens_total",
    "foundry_proxy_errors_total",
    "foundry_proxy_requests_total",
];

fn held(expires_in: Duration) -> Arc<HeldToken> {
    Arc::new(HeldToken {
        header: HeaderValue::from_static("Bearer x"),
        expires_at: Instant::now() + expires_in,
        expires_at_unix: 0,
        lifetime: expires_in,
        claims: None,
        serial: 1,
    })
}

fn record(metrics: &Metrics, key: &str, model: &str, status: u16) {
    metrics.record_request(&RequestRecord {
        route: "chat/completions",
        status,
        model,
        key,
        upstream_latency: Some(Duration::from_millis(120)),
    });
}

/// One parsed sample line: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses Prometheus text format 0.0.4 strictly enough to catch malformed output: comment
/// lines are `# HELP name text` or `# TYPE name kind`; samples are
/// `name{label="value",…} number` with escaped values. Returns the types and the samples.
fn parse(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
    let mut types = HashMap::new();
    let mut helps = Vec::new();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(valid_name(name), "HELP name: {line}");
            assert!(
                !help.is_empty() && !help.ends_with(".."),
                "HELP text: {line}"
            );
            helps.push(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(valid_name(name), "TYPE name: {line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "TYPE kind: {line}"
            );
            assert_eq!(
                helps.last().map(String::as_str),
                Some(name),
                "HELP precedes TYPE"
            );
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "one TYPE per family: {line}"
            );
        } else {
            assert!(
                !line.starts_with('#') && !line.is_empty(),
                "stray line: {line:?}"
            );
            samples.push(parse_sample(line));
        }
    }
    for (name, _, _) in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| types.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(types.contains_key(family), "sample {name} has no TYPE");
    }
    (types, samples)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Sample {
    let name_end = line
        .find(['{', ' '])
        .unwrap_or_else(|| panic!("no value: {line}"));
    let name = &line[..name_end];
    assert!(valid_name(name), "sample name: {line}");
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest
                .split_once("=\"")
                .unwrap_or_else(|| panic!("label: {line}"));
            assert!(
                valid_name(label) && !label.contains(':'),
                "label name: {line}"
            );
            let mut value = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next() {
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => panic!("bad escape {other:?}: {line}"),
                    },
                    Some((_, c)) => value.push(c),
                    None => panic!("unterminated label value: {line}"),
                }
            };
            labels.push((label.to_owned(), value));
            rest = &after[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let value = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| panic!("space before value: {line}"));
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other
            .parse()
            .unwrap_or_else(|_| panic!("value {other:?}: {line}")),
    };
    (name.to_owned(), labels, value)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| *v)
}

/// Every promised metric is present with HELP and TYPE lines, the text parses line by line,
/// and recorded values show up under the right labels — including label values that need
/// escaping.
#[test]
fn render_is_valid_prometheus_text() {
    let metrics = Metrics::new();
    metrics.set_info("client_secret", "openai-v1");
    record(&metrics, "alice", "gpt-4o", 200);
    record(&metrics, "", "", 429);
    record(&metrics, "bob", "we\"ird\\name", 200);
    metrics.record_usage("alice", "gpt-4o", 10, 5);
    metrics.stream_ttfb("chat/completions").observe(0.3);
    metrics.token_refresh(true);
    metrics.token_refresh(false);
    let _stream = metrics.stream_started();
    let state = TokenState {
        token: Some(held(Duration::from_secs(600))),
        failure: Some(Arc::new(RefreshFailure {
            error: CredentialError::Unreachable("down".into()),
            failures: 2,
            next_attempt: Instant::now(),
        })),
        attempts: 3,
        ..TokenState::default()
    };
    let text = metrics.render(&state);
    let (types, samples) = parse(&text);
    for name in NAMES {
        assert!(types.contains_key(name), "{name} missing TYPE in\n{text}");
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} missing HELP"
        );
    }
    assert_eq!(types["foundry_proxy_upstream_latency_seconds"], "histogram");
    assert_eq!(types["foundry_proxy_requests_total"], "counter");
    let labels = [
        ("route", "chat/completions"),
        ("status", "200"),
        ("model", "gpt-4o"),
        ("key", "alice"),
    ];
    assert_eq!(
        value(&samples, "foundry_proxy_requests_total", &labels),
        Some(1.0)
    );
    let anonymous = [("status", "429"), ("model", "none"), ("key", "anonymous")];
    assert_eq!(
        value(&samples, "foundry_proxy_requests_total", &anonymous),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "foundry_proxy_requests_total",
            &[("model", "we\"ird\\name")]
        ),
        Some(1.0),
        "escaped label values round-trip"
    );
    assert_eq!(
        value(
            &samples,
            "foundry_proxy_errors_total",
            &[("key", "anonymous")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "foundry_proxy_usage_prompt_tokens_total",
            &[("key", "alice")]
        ),
        Some(10.0)
    );
    assert_eq!(
        value(
            &samples,
            "foundry_proxy_upstream_latency_seconds_bucket",
            &[("le", "0.25"), ("model", "gpt-4o")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "foundry_proxy_token_refreshes_total",
            &[("outcome", "error")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&samples, "foundry_proxy_streams_in_flight", &[]),
        Some(1.0)
    );
    assert_eq!(value(&samples, "foundry_proxy_up", &[]), Some(1.0));
    assert_eq!(
        value(&samples, "foundry_proxy_token_refresh_failures", &[]),
        Some(2.0)
    );
    let expiry = value(&samples, "foundry_proxy_token_expiry_seconds", &[]).expect("expiry");
    assert!((590.0..=600.0).contains(&expiry), "{expiry}");
    assert_eq!(
        value(
            &samples,
            "foundry_proxy_info",
            &[("credential", "client_secret"), ("api", "openai-v1")]
        ),
        Some(1.0)
    );
}

/// Without a valid token the proxy reports itself down with zero seconds left.
#[test]
fn no_token_is_down() {
    let metrics = Metrics::new();
    let (_, samples) = parse(&metrics.render(&TokenState::default()));
    assert_eq!(value(&samples, "foundry_proxy_up", &[]), Some(0.0));
    assert_eq!(
        value(&samples, "foundry_proxy_token_expiry_seconds", &[]),
        Some(0.0)
    );
    let expired = TokenState {
        token: Some(held(Duration::ZERO)),
        ..TokenState::default()
    };
    let (_, samples) = parse(&metrics.render(&expired));
    assert_eq!(value(&samples, "foundry_proxy_up", &[]), Some(0.0));
}

/// A caller inventing model names cannot grow the series: past [`MAX_MODELS`] distinct
/// names the rest are recorded as `other`.
#[test]
fn model_labels_are_bounded() {
    let metrics = Metrics::new();
    for i in 0..(MAX_MODELS + 50) {
        record(&metrics, "alice", &format!("model-{i}"), 200);
    }
    record(&metrics, "alice", "model-0", 200);
    let rows = metrics.usage_snapshot();
    assert_eq!(rows.len(), MAX_MODELS + 1, "{MAX_MODELS} models plus other");
    let other = rows.iter().find(|r| r.model == "other").expect("other row");
    assert_eq!(other.requests, 50);
    let first = rows.iter().find(|r| r.model == "model-0").expect("model-0");
    assert_eq!(first.requests, 2, "admitted names keep counting");
    let (_, samples) = parse(&metrics.render(&TokenState::default()));
    let series = samples
        .iter()
        .filter(|(n, _, _)| n == "foundry_proxy_requests_total")
        .count();
    assert_eq!(series, MAX_MODELS + 1);
}

/// The in-flight gauge counts live guards only.
#[test]
fn stream_guard_decrements_on_drop() {
    let metrics = Metrics::new();
    let in_flight = |m: &Metrics| {
        let (_, samples) = parse(&m.render(&TokenState::default()));
        value(&samples, "foundry_proxy_streams_in_flight", &[])
    };
    let first = metrics.stream_started();
    let second = metrics.stream_started();
    assert_eq!(in_flight(&metrics), Some(2.0));
    drop(first);
    assert_eq!(in_flight(&metrics), Some(1.0));
    drop(second);
    assert_eq!(in_flight(&metrics), Some(0.0));
}

/// The snapshot sums requests, errors and tokens per key and model, sorted.
#[test]
fn usage_snapshot_sums() {
    let metrics = Metrics::new();
    record(&metrics, "bob", "gpt-4o", 200);
    record(&metrics, "alice", "gpt-4o", 200);
    record(&metrics, "alice", "gpt-4o", 500);
    record(&metrics, "alice", "mini", 404);
    metrics.record_usage("alice", "gpt-4o", 100, 20);
    metrics.record_usage("alice", "gpt-4o", 50, 5);
    let rows = metrics.usage_snapshot();
    let keys: Vec<_> = rows
        .iter()
        .map(|r| (r.key.as_str(), r.model.as_str()))
        .collect();
    assert_eq!(
        keys,
        [("alice", "gpt-4o"), ("alice", "mini"), ("bob", "gpt-4o")]
    );
    assert_eq!(
        rows[0],
        UsageRow {
            key: "alice".into(),
            model: "gpt-4o".into(),
            requests: 2,
            errors: 1,
            prompt_tokens: 150,
            completion_tokens: 25,
        }
    );
    assert_eq!((rows[1].requests, rows[1].errors), (1, 1));
}
