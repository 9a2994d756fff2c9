//! `foundry-proxy healthcheck`: asks a running proxy whether it is ready (`GET /readyz`) or
//! alive (`GET /healthz`), for health checks in an image with no shell and no curl: the
//! Docker `HEALTHCHECK` and Kubernetes exec probes.
//!
//! The address comes from `--url`, else `FOUNDRY_PROXY_LISTEN`, else the default listen
//! address. A wildcard listen address (`0.0.0.0`, `[::]`) is probed on loopback. Plain HTTP
//! only: the proxy itself never serves TLS.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use url::Url;

use crate::config::{DEFAULT_LISTEN, ENV_LISTEN};

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
    fn path(self) -> &'static str {
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

/// Where a probe goes: the host and port to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    host: String,
    port: u16,
}

impl Target {
    /// From `--url` (scheme `http`; any path is ignored), else the listen address in
    /// `listen_env` (the value of `FOUNDRY_PROXY_LISTEN`), else the default listen address.
    pub fn resolve(url: Option<&str>, listen_env: Option<&str>) -> Result<Self, Failure> {
        if let Some(url) = url {
            return Self::from_url(url);
        }
        let (text, origin) = match listen_env.map(str::trim).filter(|v| !v.is_empty()) {
            Some(value) => (value, ENV_LISTEN),
            None => (DEFAULT_LISTEN, "the default listen address"),
        };
        let addr: SocketAddr = text.parse().map_err(|_| {
            Failure(format!(
                "{origin}: '{text}' is not an address with a port — pass --url http://HOST:PORT"
            ))
        })?;
        Ok(Self::from_addr(addr))
    }

    fn from_url(text: &str) -> Result<Self, Failure> {
        let url =
            Url::parse(text).map_err(|e| Failure(format!("--url: '{text}' is not a URL ({e})")))?;
        if url.scheme() != "http" {
            return Err(Failure(format!(
                "--url: '{text}' must be http:// (the proxy serves plain HTTP)"
            )));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        match url.host() {
            Some(url::Host::Ipv4(ip)) => Ok(Self::from_addr(SocketAddr::new(ip.into(), port))),
            Some(url::Host::Ipv6(ip)) => Ok(Self::from_addr(SocketAddr::new(ip.into(), port))),
            Some(url::Host::Domain(name)) => Ok(Self {
                host: name.to_owned(),
                port,
            }),
            None => Err(Failure(format!("--url: '{text}' has no host"))),
        }
    }

    /// A wildcard address means "every interface", so loopback reaches it.
    fn from_addr(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        let host = match ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        Self {
            host,
            port: addr.port(),
        }
    }

    /// The URL probed, for messages.
    pub fn url(&self, probe: Probe) -> String {
        format!("http://{}:{}{}", self.host, self.port, probe.path())
    }
}

/// Asks the proxy at `target`. `Ok` holds a one-line success message.
pub async fn run(target: &Target, probe: Probe, timeout: Duration) -> Result<String, Failure> {
    let url = target.url(probe);
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

/// One `GET` over a fresh connection: the status and the start of the body.
async fn ask(target: &Target, probe: Probe) -> Result<(u16, Bytes), String> {
    let connect_host = target.host.trim_start_matches('[').trim_end_matches(']');
    let stream = TcpStream::connect((connect_host, target.port))
        .await
        .map_err(|e| {
            format!(
                "cannot connect ({e}) — is the proxy running there? Set FOUNDRY_PROXY_LISTEN or pass --url"
            )
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed ({e})"))?;
    tokio::spawn(connection);
    let request = http::Request::get(probe.path())
        .header(
            http::header::HOST,
            format!("{}:{}", target.host, target.port),
        )
        .header(http::header::USER_AGENT, "foundry-proxy-healthcheck")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("cannot build the request ({e})"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed ({e})"))?;
    let status = response.status().as_u16();
    let limited = http_body_util::Limited::new(response.into_body(), MAX_BODY);
    let body = limited
        .collect()
        .await
        .map(|collected| collected.to_bytes())
        .unwrap_or_default();
    Ok((status, body))
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

    fn target(url: Option<&str>, listen: Option<&str>) -> String {
        Target::resolve(url, listen)
            .expect("target")
            .url(Probe::Ready)
    }

    /// The listen address decides where to probe; wildcard addresses become loopback.
    #[test]
    fn target_from_listen_address() {
        assert_eq!(target(None, None), "http://127.0.0.1:8080/readyz");
        assert_eq!(target(None, Some("")), "http://127.0.0.1:8080/readyz");
        assert_eq!(
            target(None, Some("0.0.0.0:9090")),
            "http://127.0.0.1:9090/readyz"
        );
        assert_eq!(target(None, Some("[::]:8080")), "http://[::1]:8080/readyz");
        assert_eq!(
            target(None, Some("10.0.0.7:8080")),
            "http://10.0.0.7:8080/readyz"
        );
        let bad = Target::resolve(None, Some("localhost")).expect_err("no port");
        assert!(bad.to_string().contains(ENV_LISTEN), "{bad}");
    }

    /// `--url` wins over the environment; its path is ignored; only http is accepted.
    #[test]
    fn target_from_url() {
        assert_eq!(
            target(Some("http://localhost:7000/v1"), Some("0.0.0.0:8080")),
            "http://localhost:7000/readyz"
        );
        assert_eq!(
            target(Some("http://0.0.0.0:7000"), None),
            "http://127.0.0.1:7000/readyz"
        );
        assert_eq!(
            target(Some("http://[::]:81"), None),
            "http://[::1]:81/readyz"
        );
        assert!(Target::resolve(Some("https://127.0.0.1:8080"), None).is_err());
        assert!(Target::resolve(Some("not a url"), None).is_err());
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
        let target =
            Target::resolve(Some(&format!("http://127.0.0.1:{port}")), None).expect("target");
        let failure = run(&target, Probe::Ready, DEFAULT_TIMEOUT)
            .await
            .expect_err("nothing listens");
        let text = failure.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}/readyz")), "{text}");
        assert!(text.contains("cannot connect"), "{text}");
    }
}
