//! The `/status` document (credential, token, last refresh error explained, upstream,
//! version, uptime, usage per key and model), and the client side of
//! `foundry-proxy usage`, which reads it from a running proxy.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::config::Config;
use crate::diagnose::{self, DiagnosisContext};
use crate::keys::KeyEntry;
use crate::metrics::{Metrics, UsageRow};
use crate::proxy_client::{self, Address, GetError};
use crate::token::TokenState;

/// Environment variable holding the access key `foundry-proxy usage` sends.
pub const ENV_KEY: &str = "FOUNDRY_PROXY_KEY";
/// Time allowed for the whole `/status` request.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest `/status` answer read.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// What `/status` says about the configuration; fixed at start-up.
#[derive(Debug, Clone)]
pub struct StatusInfo {
    /// The credential kind (`client_secret`, `managed_identity`, …).
    pub credential: &'static str,
    /// Why that credential was chosen.
    pub credential_reason: String,
    /// The upstream endpoint.
    pub endpoint: String,
    /// The API style's name.
    pub api: &'static str,
    /// The api-version sent upstream, if the style uses one.
    pub api_version: Option<String>,
    /// When the proxy started.
    pub started: Instant,
}

impl StatusInfo {
    /// From the configuration and the credential built from it; `started` is now.
    pub fn from_config(config: &Config, credential: &'static str) -> Self {
        Self {
            credential,
            credential_reason: config.credential_reason.clone(),
            endpoint: config.endpoint.as_str().trim_end_matches('/').to_owned(),
            api: config.api.as_str(),
            api_version: config
                .api_version
                .clone()
                .or_else(|| config.api.default_api_version().map(str::to_owned)),
            started: Instant::now(),
        }
    }
}

/// The `/status` document.
pub fn status_json(
    info: &StatusInfo,
    token: &TokenState,
    diagnosis: &DiagnosisContext,
    metrics: &Metrics,
) -> Value {
    let now = Instant::now();
    let valid = token.token.as_ref().filter(|t| t.is_valid(now));
    let last_refresh_error = token.failure.as_ref().map(|failure| {
        let explained = diagnose::credential_failure(diagnosis, failure);
        json!({
            "code": explained.code,
            "message": explained.message,
            "fix": explained.fix,
        })
    });
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": now.saturating_duration_since(info.started).as_secs(),
        "credential": {"kind": info.credential, "reason": info.credential_reason},
        "token": {
            "valid": valid.is_some(),
            "expires_in_secs": valid.map(|t| t.expires_at.saturating_duration_since(now).as_secs()),
            "next_refresh_in_secs": token.next_refresh.map(|at| at.saturating_duration_since(now).as_secs()),
            "identity": token.token.as_ref().and_then(|t| t.claims.as_ref()).map(crate::claims::TokenClaims::identity),
            "refresh_attempts": token.attempts,
            "consecutive_failures": token.failure.as_ref().map_or(0, |f| f.failures),
        },
        "last_refresh_error": last_refresh_error,
        "upstream": {"endpoint": info.endpoint, "api": info.api, "api_version": info.api_version},
        "usage": metrics.usage_snapshot(),
        "usage_scope": process_scope(info.started),
    })
}

/// The `/status` document a member key sees: its own name, role, limits (with what the last
/// minute used), budgets (with what is left and when each resets), expiry, allowed models,
/// token cap and usage, and whether the proxy is ready — never other keys, the identity or
/// the upstream configuration (a team sharing one credential should not see each other's
/// usage). `used` is (requests, tokens) in the last 60 seconds.
pub fn member_status_json(
    key: &KeyEntry,
    ready: bool,
    used: (u64, u64),
    budgets: &[crate::budget::Standing],
    usage: Vec<UsageRow>,
    usage_scope: Value,
) -> Value {
    let limit = |limit: Option<u64>, used: u64| {
        limit.map(|limit| json!({"limit": limit, "used": used, "left": limit.saturating_sub(used)}))
    };
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ready": ready,
        "key": key_json(key),
        "limits": {
            "window_secs": 60,
            "requests_per_minute": limit(key.limits.requests_per_minute.map(u64::from), used.0),
            "tokens_per_minute": limit(key.limits.tokens_per_minute, used.1),
        },
        "budgets": budgets,
        "expires": key.rules.expires.as_ref().map(|e| e.text.as_str()),
        "models": key.rules.models,
        "max_tokens_cap": key.rules.max_tokens_cap,
        "usage": usage,
        "usage_scope": usage_scope,
    })
}

/// What `usage` counts without Redis: this process since `started`.
pub fn process_scope(started: Instant) -> Value {
    let since =
        crate::clock::unix_now_signed().saturating_sub_unsigned(started.elapsed().as_secs());
    json!({"replicas": "this", "since": crate::budget::rfc3339(since)})
}

/// What `usage` counts with Redis: every replica since the first of `days`.
pub fn team_scope(days: &[String]) -> Value {
    json!({"replicas": "all", "since": days.first().map(|d| format!("{d}T00:00:00Z"))})
}

/// `name`'s usage rows in this process since it started.
pub fn own_usage(metrics: &Metrics, name: &str) -> Vec<UsageRow> {
    metrics
        .usage_snapshot()
        .into_iter()
        .filter(|row| row.key == name)
        .collect()
}

/// What the admin `/status` adds with Redis: the connection's state, and `usage` replaced by
/// the team's usage across replicas this UTC month (`team` is `None` while Redis does not
/// answer, and `usage` then stays this replica's own since it started).
pub fn redis_json(
    shared: &crate::shared::Shared,
    team: Option<Vec<UsageRow>>,
    days: &[String],
) -> Value {
    let redis = json!({
        "url": shared.shown(),
        "up": shared.is_up(),
        "failure": shared.failure().as_str(),
    });
    match team {
        Some(rows) => json!({
            "redis": redis,
            "usage": rows,
            "usage_scope": team_scope(days),
        }),
        None => json!({"redis": redis}),
    }
}

/// Who is asking: the key's name and role.
pub fn key_json(key: &KeyEntry) -> Value {
    json!({"name": key.name, "role": key.role.as_str()})
}

/// `GET /status` from the running proxy at `address` (under its `--url` path), with `key` as a
/// bearer token when given. Errors are one line saying what went wrong and what to do.
pub async fn fetch_status(address: &Address, key: Option<&str>) -> Result<Value, String> {
    let base = format!("{}{}", address.origin(), address.base_path());
    let path = format!("{}/status", address.base_path());
    let status_url = format!("{base}/status");
    let bearer = key.map(|key| format!("Bearer {key}"));
    let mut headers = vec![(http::header::ACCEPT, "application/json")];
    if let Some(bearer) = &bearer {
        headers.push((http::header::AUTHORIZATION, bearer.as_str()));
    }
    let answer = tokio::time::timeout(
        FETCH_TIMEOUT,
        proxy_client::get(address, &path, &headers, MAX_BODY),
    )
    .await
    .map_err(|_| {
        format!(
            "no answer from the proxy at {base} within {} s — is foundry-proxy running? pass --url",
            FETCH_TIMEOUT.as_secs()
        )
    })?
    .map_err(|e| match e {
        GetError::Connect(e) => {
            format!("cannot reach the proxy at {base}: {e} — is foundry-proxy running? pass --url")
        }
        GetError::Http(e) => format!("{status_url}: {e}"),
    })?;
    let body = answer.body.map_err(|e| format!("{status_url}: {e}"))?;
    match answer.status {
        200 => serde_json::from_slice(&body)
            .map_err(|e| format!("{status_url} answered something that is not JSON ({e})")),
        status @ (401 | 403) => Err(format!(
            "{status_url} answered {status}: pass an access key with --key or {ENV_KEY}"
        )),
        404 => Err(format!(
            "{status_url} answered 404 — is this a foundry-proxy with /status? check --url"
        )),
        status => Err(format!("{status_url} answered {status}")),
    }
}

/// The usage rows of a `/status` document.
pub fn usage_rows(status: &Value) -> Result<Vec<UsageRow>, String> {
    let usage = status
        .get("usage")
        .ok_or("the /status answer has no usage (an older foundry-proxy?)")?;
    serde_json::from_value(usage.clone())
        .map_err(|e| format!("the /status usage is malformed: {e}"))
}

/// What the usage counts, as the line above the table: `usage of all replicas since …`.
pub fn usage_scope_line(status: &Value) -> Option<String> {
    let scope = status.get("usage_scope")?;
    let since = scope.get("since").and_then(Value::as_str)?;
    Some(match scope.get("replicas").and_then(Value::as_str) {
        Some("all") => format!("usage of all replicas (shared through Redis) since {since}"),
        _ => format!("usage of this proxy since it started at {since}"),
    })
}

/// A table: one line per key and model, then a totals line.
pub fn usage_table(rows: &[UsageRow]) -> String {
    const HEADER: [&str; 7] = [
        "KEY",
        "MODEL",
        "REQUESTS",
        "ERRORS",
        "PROMPT",
        "COMPLETION",
        "TOTAL",
    ];
    let line = |key: &str, model: &str, n: [u64; 4]| {
        let [requests, errors, prompt, completion] = n;
        [
            key.to_owned(),
            model.to_owned(),
            requests.to_string(),
            errors.to_string(),
            prompt.to_string(),
            completion.to_string(),
            prompt.saturating_add(completion).to_string(),
        ]
    };
    let mut total = [0u64; 4];
    let mut lines: Vec<[String; 7]> = vec![HEADER.map(str::to_owned)];
    for row in rows {
        let n = [
            row.requests,
            row.errors,
            row.prompt_tokens,
            row.completion_tokens,
        ];
        for (sum, value) in total.iter_mut().zip(n) {
            *sum = sum.saturating_add(value);
        }
        lines.push(line(&row.key, &row.model, n));
    }
    lines.push(line("total", "", total));
    crate::table::aligned(&lines, &[0, 1])
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::credential::CredentialError;
    use crate::metrics::RequestRecord;
    use crate::token::RefreshFailure;

    fn diagnosis() -> DiagnosisContext {
        DiagnosisContext {
            tenant_id: "t".into(),
            client_id: "c".into(),
            scope: "https://cognitiveservices.azure.com/.default".into(),
            endpoint_host: "x.openai.azure.com".into(),
            authority: "https://login.microsoftonline.com".into(),
            api: "openai-v1",
            api_version: None,
            started: None,
        }
    }

    /// A failing refresher shows up explained (catalog code, message, fix steps) next to
    /// the configuration, the token's state and the usage rows.
    #[test]
    fn document_explains_last_refresh_error() {
        let info = StatusInfo {
            credential: "client_secret",
            credential_reason: "AZURE_CLIENT_SECRET is set".into(),
            endpoint: "https://x.openai.azure.com".into(),
            api: "openai-v1",
            api_version: None,
            started: Instant::now(),
        };
        let token = TokenState {
            failure: Some(Arc::new(RefreshFailure {
                error: CredentialError::Unreachable("connection refused".into()),
                failures: 3,
                next_attempt: Instant::now(),
            })),
            attempts: 3,
            ..TokenState::default()
        };
        let metrics = Metrics::new();
        metrics.record_request(&RequestRecord {
            route: "chat/completions",
            status: 503,
            model: "gpt-4o",
            key: "",
            upstream_latency: None,
        });
        let doc = status_json(&info, &token, &diagnosis(), &metrics);
        assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(doc["credential"]["kind"], "client_secret");
        assert_eq!(doc["token"]["valid"], false);
        assert_eq!(doc["token"]["expires_in_secs"], Value::Null);
        assert_eq!(doc["token"]["consecutive_failures"], 3);
        assert_eq!(doc["last_refresh_error"]["code"], "entra_unavailable");
        assert!(
            doc["last_refresh_error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(
            doc["last_refresh_error"]["fix"]
                .as_array()
                .is_some_and(|f| !f.is_empty())
        );
        assert_eq!(doc["upstream"]["api"], "openai-v1");
        let rows = usage_rows(&doc).expect("rows");
        assert_eq!((rows[0].key.as_str(), rows[0].errors), ("anonymous", 1));
    }

    /// The table has a header, one aligned line per row, and totals that add up.
    #[test]
    fn table_totals() {
        let rows = [
            UsageRow {
                key: "alice".into(),
                model: "gpt-4o".into(),
                requests: 3,
                errors: 1,
                prompt_tokens: 100,
                completion_tokens: 20,
            },
            UsageRow {
                key: "bob".into(),
                model: "o3".into(),
                requests: 2,
                errors: 0,
                prompt_tokens: 5,
                completion_tokens: 1000,
            },
        ];
        let table = usage_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("KEY"));
        let total: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(total, ["total", "5", "1", "105", "1020", "1125"]);
        let ends: Vec<usize> = lines.iter().map(|l| l.len()).collect();
        assert!(
            ends.iter().all(|&e| e == ends[0]),
            "right-aligned:\n{table}"
        );
    }
}
