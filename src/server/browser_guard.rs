//! Web pages cannot borrow the proxy's identity: the Host allow-list and the Origin check.
//!
//! A proxy on `127.0.0.1` is reachable from every web page the developer opens. Two attacks
//! follow, and both are stopped here, before any other layer, for every route (API dialects,
//! `/status`, `/metrics`, health, WebSocket upgrades):
//! - **DNS rebinding**: a hostile name resolves to 127.0.0.1, so the page is same-origin with
//!   the proxy and reads every answer. The browser still sends the hostile name as `Host`:
//!   only the names that denote the proxy are accepted (loopback names, IP literals, and
//!   `FOUNDRY_PROXY_ALLOWED_HOSTS`).
//! - **Cross-site requests**: a page may send "simple" requests (`text/plain` or multipart
//!   POSTs, GETs) without a CORS preflight, and open WebSockets, to which CORS does not apply
//!   at all. The browser marks them with `Origin` (or, for navigations and subresources,
//!   `Sec-Fetch-Site`): a request from an origin not in `FOUNDRY_PROXY_CORS_ORIGINS` is
//!   refused. SDKs, curl and servers send neither header and are unaffected.
//!
//! Why IP literals pass: a browser sends an IP literal as `Host` only when it connected to
//! that address, so a literal cannot be a rebinding; container and Kubernetes probes use the
//! pod's address. Why the port is checked only on a loopback listener: there the listening
//! port is what a browser on the same machine uses; a container's port is usually published
//! under another number (`-p 18080:8080`), and the port adds nothing against rebinding.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::response::{IntoResponse, Response};
use futures_util::future::{Either, Ready, ready};
use http::header::{HOST, ORIGIN};
use http::{HeaderMap, HeaderName, Request, Uri};
use tower::{Layer, Service};
use tracing::warn;

use crate::diagnose::{self, RefusalCode, catalog::Vars};
use crate::error::ApiError;

/// The header browsers add to say where a request comes from, when no `Origin` is sent.
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// The names that always denote the local machine.
const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// One entry of `FOUNDRY_PROXY_ALLOWED_HOSTS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRule {
    /// `*`: every host (the check is off; a warning is logged at start).
    Any,
    /// `NAME` or `NAME:PORT` (lowercase, no trailing dot); no port matches every port.
    Exact {
        /// The host name or IP literal (`[v6]` in brackets).
        host: String,
        /// The only port allowed, when given.
        port: Option<u16>,
    },
    /// `*.SUFFIX`: every name that ends in `.SUFFIX`, on every port.
    Subdomains(String),
}

impl HostRule {
    /// Reads one entry; the error says what is wrong with it.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let entry = entry.trim();
        if entry == "*" {
            return Ok(Self::Any);
        }
        if let Some(suffix) = entry.strip_prefix("*.") {
            let suffix = normalize(suffix);
            return if is_dns_name(&suffix) && !suffix.is_empty() {
                Ok(Self::Subdomains(suffix))
            } else {
                Err(format!("'{entry}' is not a host pattern"))
            };
        }
        let (host, port) =
            split_authority(entry).ok_or_else(|| format!("'{entry}' is not a host name"))?;
        Ok(Self::Exact { host, port })
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        match self {
            Self::Any => true,
            Self::Exact {
                host: name,
                port: only,
            } => name == host && only.is_none_or(|only| port == Some(only)),
            Self::Subdomains(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
        }
    }
}

/// Reads `FOUNDRY_PROXY_ALLOWED_HOSTS`'s entries; the error names the first bad one and the fix.
pub fn parse_allowed_hosts(
    entries: &[String],
) -> Result<Vec<HostRule>, crate::config::ConfigError> {
    entries
        .iter()
        .map(|entry| HostRule::parse(entry))
        .collect::<Result<_, _>>()
        .map_err(|problem| {
            crate::config::ConfigError::new(
                crate::config::ENV_ALLOWED_HOSTS,
                problem,
                "list host names as NAME, NAME:PORT or *.DOMAIN, comma-separated, e.g. foundry-proxy,foundry-proxy.team.svc",
            )
        })
}

/// The Host and Origin rules of one listener.
#[derive(Debug)]
pub struct BrowserGuard {
    /// The listening port, enforced for loopback names when the listener is on loopback.
    loopback_port: Option<u16>,
    /// The listener's own address, when it is one address (not `0.0.0.0` / `::`).
    listen_ip: Option<IpAddr>,
    hosts: Vec<HostRule>,
    /// The `Host` values clients send most (`127.0.0.1:PORT`, `localhost:PORT`, …), accepted
    /// as they are before any parsing, so the usual request costs no allocation here.
    usual: Vec<String>,
    /// `FOUNDRY_PROXY_CORS_ORIGINS`, lowercased.
    origins: Vec<String>,
    any_origin: bool,
}

impl BrowserGuard {
    /// The rules for a listener on `listen`, with `FOUNDRY_PROXY_ALLOWED_HOSTS` and
    /// `FOUNDRY_PROXY_CORS_ORIGINS` (both already validated).
    pub fn new(listen: SocketAddr, hosts: Vec<HostRule>, cors_origins: &[String]) -> Self {
        let ip = listen.ip();
        let usual = LOOPBACK_NAMES
            .iter()
            .flat_map(|name| [(*name).to_owned(), format!("{name}:{}", listen.port())])
            .collect();
        Self {
            usual,
            loopback_port: ip.is_loopback().then_some(listen.port()),
            listen_ip: (!ip.is_unspecified()).then_some(ip),
            hosts,
            origins: cors_origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.to_ascii_lowercase())
                .collect(),
            any_origin: cors_origins.iter().any(|o| o == "*"),
        }
    }

    /// True when `FOUNDRY_PROXY_ALLOWED_HOSTS` holds `*`: the Host check is off.
    pub fn any_host(&self) -> bool {
        self.hosts.contains(&HostRule::Any)
    }

    /// Checks one request's `Host` / `:authority` and `Origin` / `Sec-Fetch-Site`.
    pub fn check(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
        self.check_host(uri, headers)?;
        self.check_origin(headers)
    }

    fn check_host(&self, uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
        // HTTP/2's `:authority` (and an absolute-form HTTP/1.1 target) is in the URI; a
        // `Host` header may come as well, and then both must name the proxy.
        if let Some(authority) = uri.authority() {
            self.check_one_host(authority.as_str())?;
        }
        let mut values = headers.get_all(HOST).iter();
        match (values.next(), values.next()) {
            // No browser omits Host: a request without one (HTTP/1.0 tools) is no page's.
            (None, _) => Ok(()),
            (Some(value), None) => match value.to_str() {
                Ok(text) => self.check_one_host(text),
                Err(_) => Err(refuse_host(&String::from_utf8_lossy(value.as_bytes()))),
            },
            (Some(_), Some(_)) => Err(refuse_host("(several Host headers)")),
        }
    }

    fn check_one_host(&self, text: &str) -> Result<(), ApiError> {
        if self.any_host() || self.usual.iter().any(|usual| usual == text) {
            return Ok(());
        }
        let allowed =
            split_authority(text).is_some_and(|(host, port)| self.host_allowed(&host, port));
        if allowed {
            Ok(())
        } else {
            Err(refuse_host(text))
        }
    }

    fn host_allowed(&self, host: &str, port: Option<u16>) -> bool {
        if self.hosts.iter().any(|rule| rule.matches(host, port)) {
            return true;
        }
        let literal = parse_ip(host);
        match self.loopback_port {
            Some(listening) => {
                let names_us = LOOPBACK_NAMES.contains(&host)
                    || literal.is_some_and(|ip| Some(ip) == self.listen_ip);
                names_us && port.is_none_or(|port| port == listening)
            }
            None => LOOPBACK_NAMES.contains(&host) || literal.is_some(),
        }
    }

    fn check_origin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let mut values = headers.get_all(ORIGIN).iter();
        match (values.next(), values.next()) {
            (Some(origin), None) => {
                let text = String::from_utf8_lossy(origin.as_bytes());
                let allowed = text != "null"
                    && (self.any_origin
                        || self.origins.iter().any(|o| o.eq_ignore_ascii_case(&text)));
                if allowed {
                    Ok(())
                } else {
                    Err(refuse_origin(&text))
                }
            }
            (Some(_), Some(_)) => Err(refuse_origin("(several Origin headers)")),
            (None, _) => match headers.get(SEC_FETCH_SITE).map(http::HeaderValue::as_bytes) {
                // A navigation or subresource request from another site's page: browsers
                // send no Origin with these GETs, but always this.
                Some(b"cross-site" | b"same-site") => Err(refuse_origin(
                    "(none; Sec-Fetch-Site says the request comes from another site's page)",
                )),
                _ => Ok(()),
            },
        }
    }
}

/// Lowercase, without the trailing dot of a fully qualified name.
fn normalize(host: &str) -> String {
    let lower = host.to_ascii_lowercase();
    match lower.strip_suffix('.') {
        Some(stripped) if !stripped.is_empty() => stripped.to_owned(),
        _ => lower,
    }
}

/// `host[:port]` or `[v6][:port]` → the normalized host and the port; `None` for anything
/// else (user info, paths, empty or malformed names, bad ports).
fn split_authority(text: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (format!("[{}]", inner.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        let host = normalize(host);
        if !is_dns_name(&host) {
            return None;
        }
        (host, port)
    };
    let port = match port {
        Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            Some(digits.parse::<u16>().ok()?)
        }
        Some(_) => return None,
        None => None,
    };
    Some((host, port))
}

/// Letters, digits, '-' and '.' in non-empty labels (an IPv4 literal is one too).
fn is_dns_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The address an IP-literal host names (`[v6]` in brackets, as in a Host header).
fn parse_ip(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse().ok(),
        None => host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4),
    }
}

fn refuse_host(host: &str) -> ApiError {
    warn!(host = ?host, "request refused: Host does not name this proxy");
    diagnose::proxy_refusal(
        RefusalCode::HostNotAllowed,
        &Vars::new().set("detail", host),
    )
}

fn refuse_origin(origin: &str) -> ApiError {
    warn!(origin = ?origin, "request refused: origin not allowed");
    diagnose::proxy_refusal(
        RefusalCode::OriginNotAllowed,
        &Vars::new().set("detail", origin),
    )
}

/// The guard of the emulator's listener (`emulate`, and the emulator inside `demo`): the same
/// rules as the proxy's, with `FOUNDRY_PROXY_ALLOWED_HOSTS` and `FOUNDRY_PROXY_CORS_ORIGINS` as
/// read from `env` (the emulator serves tokens and answers too, if only fake ones).
pub fn emulator_guard(
    listen: SocketAddr,
    env: &dyn crate::config::Environment,
) -> Result<BrowserGuardLayer, crate::config::ConfigError> {
    use crate::config::{ENV_ALLOWED_HOSTS, ENV_CORS_ORIGINS, comma_list};
    let list = |name: &str| env.var(name).map(|v| comma_list(&v)).unwrap_or_default();
    let hosts = parse_allowed_hosts(&list(ENV_ALLOWED_HOSTS))?;
    Ok(BrowserGuardLayer::new(BrowserGuard::new(
        listen,
        hosts,
        &list(ENV_CORS_ORIGINS),
    )))
}

/// The tower layer that puts a [`BrowserGuard`] in front of a listener's whole router.
#[derive(Debug, Clone)]
pub struct BrowserGuardLayer(Arc<BrowserGuard>);

impl BrowserGuardLayer {
    /// The layer for `guard`.
    pub fn new(guard: BrowserGuard) -> Self {
        Self(Arc::new(guard))
    }
}

impl<S> Layer<S> for BrowserGuardLayer {
    type Service = Guarded<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            guard: Arc::clone(&self.0),
            inner,
        }
    }
}

/// A service behind a [`BrowserGuard`]: refused requests are answered here and never reach it.
#[derive(Debug, Clone)]
pub struct Guarded<S> {
    guard: Arc<BrowserGuard>,
    inner: S,
}

impl<S, B> Service<Request<B>> for Guarded<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match self.guard.check(request.uri(), request.headers()) {
            Ok(()) => Either::Right(self.inner.call(request)),
            Err(refusal) => Either::Left(ready(Ok(refusal.into_response()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn guard(listen: &str, hosts: &[&str], origins: &[&str]) -> BrowserGuard {
        let hosts: Vec<String> = hosts.iter().map(|h| (*h).to_owned()).collect();
        let origins: Vec<String> = origins.iter().map(|o| (*o).to_owned()).collect();
        BrowserGuard::new(
            listen.parse().expect("address"),
            parse_allowed_hosts(&hosts).expect("valid hosts"),
            &origins,
        )
    }

    fn host_ok(guard: &BrowserGuard, host: &str) -> bool {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_str(host).expect("header"));
        guard
            .check(&Uri::from_static("/v1/models"), &headers)
            .is_ok()
    }

    fn origin_ok(guard: &BrowserGuard, pairs: &[(&'static str, &str)]) -> bool {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).expect("header"));
        }
        guard
            .check(&Uri::from_static("/v1/models"), &headers)
            .is_ok()
    }

    /// On a loopback listener only the loopback names pass, with the listening port or none.
    #[test]
    fn loopback_listener_accepts_loopback_names_on_its_port() {
        let g = guard("127.0.0.1:8080", &[], &[]);
        for host in [
            "localhost",
            "localhost:8080",
            "LOCALHOST.:8080",
            "127.0.0.1:8080",
            "[::1]:8080",
            "[::1]",
        ] {
            assert!(host_ok(&g, host), "{host}");
        }
        for host in [
            "evil.example.com",
            "evil.example.com:8080",
            "localhost:9999",
            "127.0.0.2:8080",
            "localhost.evil.com",
            "",
            "localhost:",
            "localhost:8080x",
            "user@localhost",
            "[::1",
            "[::2]:8080",
            "10.0.0.1:8080",
            "localhost:99999",
        ] {
            assert!(!host_ok(&g, host), "{host}");
        }
    }

    /// On a wildcard listener (containers) IP literals and loopback names pass on any port;
    /// other names only when listed.
    #[test]
    fn wildcard_listener_accepts_literals_and_listed_names() {
        let g = guard(
            "0.0.0.0:8080",
            &["foundry-proxy", "proxy.team.svc:80", "*.svc.cluster.local"],
            &[],
        );
        for host in [
            "10.1.2.3:8080",
            "127.0.0.1:18080",
            "localhost:18080",
            "[fd00::1]:8080",
            "foundry-proxy",
            "foundry-proxy:8080",
            "proxy.team.svc:80",
            "a.b.svc.cluster.local:8080",
        ] {
            assert!(host_ok(&g, host), "{host}");
        }
        for host in [
            "evil.example.com",
            "proxy.team.svc:8080",
            "svc.cluster.local",
            "x.svc.cluster.local.evil",
            "foundry-proxy.evil",
        ] {
            assert!(!host_ok(&g, host), "{host}");
        }
    }

    /// `*` turns the Host check off; bad entries are refused with their text.
    #[test]
    fn allowed_host_entries() {
        assert!(host_ok(
            &guard("127.0.0.1:8080", &["*"], &[]),
            "anything.example"
        ));
        for bad in ["a/b", "http://x", "x:y", "*.", "a b", "[zz]", ""] {
            let error = HostRule::parse(bad).expect_err(bad);
            assert!(error.contains(bad.trim()), "{error}");
        }
    }

    /// A request with a foreign `:authority` is refused even when its Host header is fine.
    #[test]
    fn authority_is_checked_too() {
        let g = guard("127.0.0.1:8080", &[], &[]);
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let foreign: Uri = "http://evil.example.com/v1/models".parse().expect("uri");
        assert!(g.check(&foreign, &headers).is_err());
        let own: Uri = "http://127.0.0.1:8080/v1/models".parse().expect("uri");
        assert!(g.check(&own, &headers).is_ok());
        headers.append(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(g.check(&own, &headers).is_err(), "two Host headers");
    }

    /// Origins pass only when listed; `null` never; `*` passes all but `null`;
    /// Sec-Fetch-Site alone refuses cross-site and same-site requests.
    #[test]
    fn origins() {
        let none = guard("127.0.0.1:8080", &[], &[]);
        let listed = guard("127.0.0.1:8080", &[], &["http://localhost:3000"]);
        let any = guard("127.0.0.1:8080", &[], &["*"]);
        assert!(origin_ok(&none, &[]));
        assert!(!origin_ok(&none, &[("origin", "http://localhost:3000")]));
        assert!(origin_ok(
            &listed,
            &[
                ("origin", "http://LOCALHOST:3000"),
                ("sec-fetch-site", "cross-site")
            ]
        ));
        assert!(!origin_ok(&listed, &[("origin", "http://localhost:3001")]));
        assert!(!origin_ok(
            &listed,
            &[
                ("origin", "http://localhost:3000"),
                ("origin", "http://localhost:3000")
            ]
        ));
        assert!(origin_ok(&any, &[("origin", "https://anything.example")]));
        for g in [&none, &listed, &any] {
            assert!(!origin_ok(g, &[("origin", "null")]));
            assert!(!origin_ok(g, &[("sec-fetch-site", "cross-site")]));
            assert!(!origin_ok(g, &[("sec-fetch-site", "same-site")]));
            assert!(origin_ok(g, &[("sec-fetch-site", "none")]));
            assert!(origin_ok(g, &[("sec-fetch-site", "same-origin")]));
        }
    }
}
