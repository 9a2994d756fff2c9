//! Waiting for the new identity to work: `check` run again and again with the env file's
//! settings until inference answers, with a progress line, up to a limit (role assignments
//! take up to ten minutes to apply: docs/azure-facts.md §6, §8).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use super::steps::Steps;
use crate::check::{self, CheckOptions, Report};
use crate::config::{self, Environment, Settings};

/// Codes that time explains: the role, the secret, the certificate or the app not yet
/// replicated everywhere. Anything else stops the wait at once.
const PROPAGATING: &[&str] = &[
    "missing_role_assignment",
    "missing_project_permission",
    "invalid_client_secret",
    "unknown_client_id",
    "certificate_not_registered",
];

/// How the wait ended.
#[derive(Debug)]
pub struct Waited {
    /// The last `check` report (all steps passed when `ok`).
    pub report: Report,
    /// How long it took.
    pub elapsed: Duration,
}

/// The code of the first failing step of a report.
fn failing_code(report: &Report) -> Option<String> {
    report
        .steps
        .iter()
        .find(|s| s.status == check::Status::Fail)
        .and_then(|s| s.code.clone())
}

/// Runs `check` with `vars` until it passes, a failure time does not explain, or `limit`.
pub async fn until_working(vars: &BTreeMap<String, String>, limit: Duration) -> Waited {
    let started = Instant::now();
    let mut delay = Duration::from_secs(1);
    let mut shown = false;
    loop {
        let loaded = config::load(None, vars, Settings::default());
        let report = check::run(loaded, &CheckOptions::default()).await;
        let code = failing_code(&report);
        let waiting = code.as_deref().is_some_and(|c| PROPAGATING.contains(&c));
        if report.ok || !waiting || started.elapsed() >= limit {
            if shown {
                eprintln!();
            }
            return Waited {
                report,
                elapsed: started.elapsed(),
            };
        }
        // One line rewritten in place: how long so far and what Azure still says.
        eprint!(
            "\rfoundry-proxy setup: waiting for Azure to apply the changes: {}s of at most {}s ({})   ",
            started.elapsed().as_secs(),
            limit.as_secs(),
            code.unwrap_or_default()
        );
        let _ = std::io::stderr().flush();
        shown = true;
        tokio::time::sleep(delay).await;
        delay = (delay + Duration::from_secs(1)).min(Duration::from_secs(5));
    }
}

/// The propagation step: when setup can sign in as the identity, `check` with the env file's
/// `vars` until it works; returns the last report.
pub async fn propagation(
    can_sign_in: bool,
    vars: &[(&str, String)],
    env: &dyn Environment,
    limit: Duration,
    steps: &mut Steps,
) -> Option<Report> {
    if !can_sign_in {
        steps.skipped(
            "propagation",
            "setup cannot sign in as this identity: the role may take up to 10 minutes to apply; run `foundry-proxy check` where it runs",
        );
        return None;
    }
    let mut serve_env: BTreeMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    if let Some(ca) = env.var("SSL_CERT_FILE") {
        serve_env.insert("SSL_CERT_FILE".to_owned(), ca);
    }
    let waited = until_working(&serve_env, limit).await;
    let secs = waited.elapsed.as_secs();
    if waited.report.ok {
        steps.ok(
            "propagation",
            format!("the identity can call inference ({secs}s)"),
        );
    } else {
        let first = waited
            .report
            .steps
            .iter()
            .find(|s| s.status == check::Status::Fail)
            .map(|s| format!("{}: {}", s.name, s.summary))
            .unwrap_or_default();
        steps.failed(
            "propagation",
            format!("not working after {secs}s — {first}"),
            &[],
        );
    }
    Some(waited.report)
}
