//! `foundry-proxy healthcheck`: asks a running proxy whether it is ready (`GET /readyz`) or
//! alive (`GET /healthz`), for health checks in an image with no shell and no curl: the
//! Docker `HEALTHCHECK` and Kubernetes exec probes.
//!
//! The address comes from `--url`, else `FOUNDRY_PROXY_LISTEN`, else the default listen
//! address. A wildcard listen address (`0.0.0.0`, `[::]`) is probed on loopback. Plain HTTP
//! only: the proxy itself never serves TLS.

use std::fmt;
use std::time::Duration;

use crate::proxy_client::{self, Address, GetError};

/// Default time allowed for the whole probe: shorter than a typical probe timeout, so the
/// reason is printed before the orchestrator gives up on the command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Most of the answer's body read for the failure reason.
const MAX_BODY: usize = 64 * 1024;

/// Which endpoint to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/readyz`: 200 only while the proxy holds a valid token.
    Ready,
    /// `/healthz`: 200 while the process serves HTTP at all.
    Alive,
}

impl Probe {
    /// The endpoint's path.
    pub fn path(self) -> &'static str {
        match self {
            Probe::Ready => "/readyz",
            Probe::Alive => "/healthz",
        }
    }
}

/// A probe that did not answer 200, or could not be made: one line saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failure {}

/// The address to probe: `--url` (any path is ignored), else the listen address in
/// `listen_env`, else the default listen address (see [`Address::resolve`]).
pub fn target(url: Option<&str>, listen_env: Option<&str>) -> Result<Address, Failure> {
    Address::resolve(url, listen_env).map_err(Failure)
}

/// The URL probed, for messages.
pub fn probe_url(target: &Address, probe: Probe) -> String {
    format!("{}{}", target.origin(), probe.path())
}

/// Asks the proxy at `target`. `Ok` holds a one-line success message.
pub async fn run(target: &Address, probe: Probe, timeout: Duration) -> Result<String, Failure> {
    let url = probe_url(target, probe);
    match tokio::time::timeout(timeout, ask(target, probe)).await {
        Ok(Ok((200, _))) => Ok(format!("ok: {url} answered 200")),
        Ok(Ok((status, body))) => Err(Failure(format!(
            "{}: {url} answered {status}{}",
            match probe {
                Probe::Ready => "not ready",
                Probe::Alive => "not alive",
            },
            reason(&body)
        ))),
        Ok(Err(e)) => Err(Failure(format!("{url}: {e}"))),
        Err(_) => Err(Failure(format!(
            "{url}: no answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// One `GET` of the probe's endpoint: the status and the start of the body (an unreadable
/// body reads as empty: the status is the answer).
async fn ask(target: &Address, probe: Probe) -> Result<(u16, Vec<u8>), String> {
    let headers = [(http::header::USER_AGENT, "foundry-proxy-healthcheck")];
    match proxy_client::get(target, probe.path(), &headers, MAX_BODY).await {
        Ok(answer) => Ok((
            answer.status,
            answer.body.map(Vec::from).unwrap_or_default(),
        )),
        Err(GetError::Connect(e)) => Err(format!(
            "cannot connect ({e}) — is the proxy running there? Set FOUNDRY_PROXY_LISTEN or pass --url"
        )),
        Err(GetError::Http(e)) => Err(e),
    }
}

/// The `code` and `reason` of a `/readyz` answer, when it has them: ` (code: reason)`.
fn reason(body: &[u8]) -> String {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let field = |name: &str| json.get(name).and_then(serde_json::Value::as_str);
    match (field("code"), field("reason")) {
        (Some(code), Some(reason)) => format!(" ({code}: {reason})"),
        (Some(code), None) => format!(" ({code})"),
        (None, Some(reason)) => format!(" ({reason})"),
        (None, None) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probed(url: Option<&str>, listen: Option<&str>) -> String {
        probe_url(&target(url, listen).expect("target"), Probe::Ready)
    }

    /// The listen address decides where to probe; wildcard addresses become loopback.
    #[test]
    fn target_from_listen_address() {
        assert_eq!(probed(None, None), "http://127.0.0.1:8080/readyz");
        assert_eq!(
            probed(None, Some("0.0.0.0:9090")),
            "http://127.0.0.1:9090/readyz"
        );
        let bad = target(None, Some("localhost")).expect_err("no port");
        assert!(bad.to_string().contains(crate::config::ENV_LISTEN), "{bad}");
    }

    /// `--url` wins over the environment; its path is ignored; only http is accepted.
    #[test]
    fn target_from_url() {
        assert_eq!(
            probed(Some("http://localhost:7000/v1"), Some("0.0.0.0:8080")),
            "http://localhost:7000/readyz"
        );
        assert_eq!(
            probed(Some("http://[::]:81"), None),
            "http://[::1]:81/readyz"
        );
        assert!(target(Some("https://127.0.0.1:8080"), None).is_err());
    }

    /// A not-ready answer's code and reason make the one line of explanation.
    #[test]
    fn reason_from_readyz_body() {
        let body = br#"{"status":"not_ready","code":"entra_unreachable","reason":"Entra ID did not answer."}"#;
        assert_eq!(
            reason(body),
            " (entra_unreachable: Entra ID did not answer.)"
        );
        assert_eq!(reason(b"not json"), "");
        assert_eq!(reason(b"{}"), "");
    }

    /// Nothing listening: exit with a reason naming the URL, within the timeout.
    #[tokio::test]
    async fn refused_connection_is_explained() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let target = target(Some(&format!("http://127.0.0.1:{port}")), None).expect("target");
        let failure = run(&target, Probe::Ready, DEFAULT_TIMEOUT)
            .await
            .expect_err("nothing listens");
        let text = failure.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}/readyz")), "{text}");
        assert!(text.contains("cannot connect"), "{text}");
    }
}
