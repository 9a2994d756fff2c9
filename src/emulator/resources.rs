//! Several Foundry resources on one emulator: each with its own deployments, region, quota
//! (requests and tokens per minute, refused with Azure's quota 429) and outage, so spillover
//! and failover are tested end to end.
//!
//! A resource is served under `/resources/{name}`: the endpoint
//! `http://127.0.0.1:PORT/resources/eastus` stands for `https://contoso-eastus.openai.azure.com`
//! (Azure tells resources apart by host name; on loopback the path prefix does it). Everything
//! below the prefix is the ordinary Foundry surface. The Entra side is shared, as it is in
//! Azure: one tenant, one token for every resource of the same audience.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::config::DeploymentSpec;
use super::foundry::error::FoundryError;

/// The path prefix of a named resource.
pub const PREFIX: &str = "/resources/";
/// The quota window (docs/azure-facts.md §7: RPM and TPM are per minute, enforced over
/// shorter windows; the emulator keeps the minute).
const WINDOW: Duration = Duration::from_secs(60);

/// One resource, as the emulator's config describes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSpec {
    /// The name in `/resources/{name}`.
    pub name: String,
    /// `x-ms-region` and the region in 429 messages; the world's region when absent.
    #[serde(default)]
    pub region: Option<String>,
    /// Its deployments; the world's when empty.
    #[serde(default)]
    pub deployments: Vec<DeploymentSpec>,
    /// Requests per minute per deployment; unlimited when absent.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute per deployment (prompt estimate plus `max_tokens`, charged on
    /// admission as Azure does); unlimited when absent.
    #[serde(default)]
    pub tokens_per_minute: Option<u64>,
    /// An outage or refusal every request gets, from the start.
    #[serde(default)]
    pub fault: Option<ResourceFault>,
}

/// What every request to a resource gets while it is set.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceFault {
    /// `rate-limit` (the quota 429), `high-demand` (the capacity 429), `server-error` (500)
    /// or `unavailable` (503).
    pub kind: ResourceFaultKind,
    /// The wait the 429s ask for, in milliseconds (`retry-after-ms`; `retry-after` is it in
    /// whole seconds, rounded up); 45 s when absent.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

/// The kinds of [`ResourceFault`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceFaultKind {
    /// The quota 429.
    RateLimit,
    /// The capacity 429.
    HighDemand,
    /// 500.
    ServerError,
    /// 503: the region is down.
    Unavailable,
}

/// The quota used in the current window of one deployment.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    requests: u32,
    tokens: u64,
}

/// The resources' runtime state: faults set after start, and quota windows.
#[derive(Debug, Default)]
pub(crate) struct ResourceState {
    /// Resource name → fault (overrides the config's while present; `None` clears).
    faults: HashMap<String, Option<ResourceFault>>,
    /// (resource, deployment) → its window.
    windows: HashMap<(String, String), Window>,
}

impl ResourceState {
    /// Sets or clears a resource's fault.
    pub(crate) fn set_fault(&mut self, resource: &str, fault: Option<ResourceFault>) {
        self.faults.insert(resource.to_owned(), fault);
    }

    /// The fault in force for `spec`.
    pub(crate) fn fault(&self, spec: &ResourceSpec) -> Option<ResourceFault> {
        match self.faults.get(&spec.name) {
            Some(set) => set.clone(),
            None => spec.fault.clone(),
        }
    }

    /// Charges one request of `tokens` (estimated) to a deployment's window; the wait until
    /// the window frees when the quota is spent.
    pub(crate) fn charge(
        &mut self,
        spec: &ResourceSpec,
        deployment: &str,
        tokens: u64,
        now: Instant,
    ) -> Result<(), Spent> {
        if spec.requests_per_minute.is_none() && spec.tokens_per_minute.is_none() {
            return Ok(());
        }
        let window = self
            .windows
            .entry((spec.name.clone(), deployment.to_owned()))
            .or_insert(Window {
                started: now,
                requests: 0,
                tokens: 0,
            });
        if now.duration_since(window.started) >= WINDOW {
            *window = Window {
                started: now,
                requests: 0,
                tokens: 0,
            };
        }
        let wait = (window.started + WINDOW).saturating_duration_since(now);
        if spec
            .requests_per_minute
            .is_some_and(|limit| window.requests >= limit)
        {
            return Err(Spent {
                wait,
                kind: "request",
            });
        }
        if spec
            .tokens_per_minute
            .is_some_and(|limit| window.tokens.saturating_add(tokens) > limit)
        {
            return Err(Spent {
                wait,
                kind: "token",
            });
        }
        window.requests += 1;
        window.tokens = window.tokens.saturating_add(tokens);
        Ok(())
    }

    /// Forgets faults set at run time and every window.
    pub(crate) fn reset(&mut self) {
        self.faults.clear();
        self.windows.clear();
    }
}

/// A spent quota: the wait until the window frees, and which limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spent {
    pub(crate) wait: Duration,
    pub(crate) kind: &'static str,
}

/// Splits `/resources/{name}/rest` into the name and `/rest`.
pub(crate) fn split(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix(PREFIX)?;
    let (name, rest) = after.split_at(after.find('/').unwrap_or(after.len()));
    (!name.is_empty()).then_some((name, rest))
}

/// The refusal of a resource fault (docs/azure-facts.md §5, §7 for the 429s; the 503's body
/// is UNCONFIRMED).
pub(crate) fn fault_refusal(
    fault: &ResourceFault,
    region: &str,
    deployment: &str,
    model: &str,
) -> FoundryError {
    let retry_ms = fault.retry_after_ms.unwrap_or(45_000);
    match fault.kind {
        ResourceFaultKind::RateLimit => quota_refusal(region, deployment, model, "token", retry_ms),
        ResourceFaultKind::HighDemand => FoundryError::HighDemand,
        ResourceFaultKind::ServerError => FoundryError::ServerError,
        ResourceFaultKind::Unavailable => FoundryError::Unavailable,
    }
}

/// The quota 429 with the exact wait (docs/azure-facts.md §5: "have exceeded the token rate
/// limit … Please retry after N seconds").
pub(crate) fn quota_refusal(
    region: &str,
    deployment: &str,
    model: &str,
    kind: &str,
    retry_ms: u64,
) -> FoundryError {
    let secs = retry_ms.div_ceil(1000).max(1);
    FoundryError::QuotaSpent {
        message: format!(
            "Your requests to {deployment} for {model} in {region} have exceeded the {kind} rate limit for your current AIServices S0 pricing tier. Please retry after {secs} seconds."
        ),
        retry_ms,
    }
}

/// The deployment named `name` among `deployments`.
pub(crate) fn find<'a>(
    deployments: &'a [DeploymentSpec],
    name: &str,
) -> Option<&'a DeploymentSpec> {
    deployments.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(rpm: Option<u32>, tpm: Option<u64>) -> ResourceSpec {
        ResourceSpec {
            name: "eastus".into(),
            region: None,
            deployments: Vec::new(),
            requests_per_minute: rpm,
            tokens_per_minute: tpm,
            fault: None,
        }
    }

    /// The path prefix names the resource and keeps the rest.
    #[test]
    fn upstreams_emulator_prefix() {
        assert_eq!(
            split("/resources/eastus/openai/v1/chat/completions"),
            Some(("eastus", "/openai/v1/chat/completions"))
        );
        assert_eq!(split("/resources/"), None);
        assert_eq!(split("/openai/v1/models"), None);
    }

    /// Requests past the minute's limit wait for the window's end; a new window starts fresh.
    #[test]
    fn upstreams_emulator_quota_windows() {
        let mut state = ResourceState::default();
        let rpm = spec(Some(2), None);
        let t0 = Instant::now();
        assert!(state.charge(&rpm, "d", 10, t0).is_ok());
        assert!(state.charge(&rpm, "d", 10, t0).is_ok());
        let spent = state
            .charge(&rpm, "d", 10, t0 + Duration::from_secs(20))
            .expect_err("third");
        assert_eq!(spent.wait, Duration::from_secs(40));
        assert_eq!(spent.kind, "request");
        assert!(state.charge(&rpm, "other", 10, t0).is_ok());
        assert!(state.charge(&rpm, "d", 10, t0 + WINDOW).is_ok());
        let tpm = spec(None, Some(100));
        assert!(state.charge(&tpm, "t", 60, t0).is_ok());
        assert_eq!(
            state.charge(&tpm, "t", 60, t0).expect_err("tokens").kind,
            "token"
        );
    }
}
