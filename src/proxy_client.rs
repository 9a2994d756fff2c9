//! The client side of a running proxy, for the commands that ask one: `healthcheck`
//! (`/readyz`, `/healthz`) and `usage` (`/status`). One `GET` over a fresh plain HTTP/1.1
//! connection (the proxy itself never serves TLS), with a bounded body; each command words
//! its own messages.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderName;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use url::Url;

use crate::config::{DEFAULT_LISTEN, ENV_LISTEN};

/// Where a running proxy is asked: its host and port, and the path it is served under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// A name or an IP address; IPv6 in brackets.
    host: String,
    port: u16,
    /// The path of `--url` without its trailing `/` (empty for the listen address).
    base_path: String,
}

impl Address {
    /// From `url` (`--url`) if given, else the listen address in `listen_env` (the value of
    /// `FOUNDRY_PROXY_LISTEN`), else the default listen address. A wildcard address
    /// (`0.0.0.0`, `[::]`) means "every interface", so it is asked on loopback. Errors are one
    /// line naming the setting.
    pub fn resolve(url: Option<&str>, listen_env: Option<&str>) -> Result<Self, String> {
        if let Some(url) = url {
            return Self::from_url(url);
        }
        let (text, origin) = match listen_env.map(str::trim).filter(|v| !v.is_empty()) {
            Some(value) => (value, ENV_LISTEN),
            None => (DEFAULT_LISTEN, "the default listen address"),
        };
        let addr: SocketAddr = text.parse().map_err(|_| {
            format!(
                "{origin}: '{text}' is not an address with a port — pass --url http://HOST:PORT"
            )
        })?;
        Ok(Self::from_addr(addr))
    }

    fn from_url(text: &str) -> Result<Self, String> {
        let url = Url::parse(text).map_err(|e| format!("--url: '{text}' is not a URL ({e})"))?;
        if url.scheme() != "http" {
            return Err(format!(
                "--url: '{text}' must be http:// (the proxy serves plain HTTP)"
            ));
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let mut address = match url.host() {
            Some(url::Host::Ipv4(ip)) => Self::from_addr(SocketAddr::new(ip.into(), port)),
            Some(url::Host::Ipv6(ip)) => Self::from_addr(SocketAddr::new(ip.into(), port)),
            Some(url::Host::Domain(name)) => Self {
                host: name.to_owned(),
                port,
                base_path: String::new(),
            },
            None => return Err(format!("--url: '{text}' has no host")),
        };
        url.path()
            .trim_end_matches('/')
            .clone_into(&mut address.base_path);
        Ok(address)
    }

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
            base_path: String::new(),
        }
    }

    /// `http://HOST:PORT`, without any path.
    pub fn origin(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The path of `--url` (no trailing `/`), under which the proxy's endpoints are asked by
    /// commands that honour it; empty for a listen address.
    pub fn base_path(&self) -> &str {
        &self.base_path
    }
}

/// What the proxy answered.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body, or why it could not be read (cut at the limit, connection lost).
    pub body: Result<Bytes, String>,
}

/// Why no answer came.
#[derive(Debug)]
pub enum GetError {
    /// Nothing accepted the connection.
    Connect(io::Error),
    /// Connected, but the HTTP exchange failed; the text says where.
    Http(String),
}

/// One `GET path` to the proxy at `address` over a fresh HTTP/1.1 connection, with `headers`
/// added; at most `max_body` bytes of the body are read.
pub async fn get(
    address: &Address,
    path: &str,
    headers: &[(HeaderName, &str)],
    max_body: usize,
) -> Result<Answer, GetError> {
    let connect_host = address.host.trim_start_matches('[').trim_end_matches(']');
    let stream = TcpStream::connect((connect_host, address.port))
        .await
        .map_err(GetError::Connect)?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| GetError::Http(format!("HTTP handshake failed ({e})")))?;
    let connection = tokio::spawn(connection);
    let mut request = http::Request::get(path).header(
        http::header::HOST,
        format!("{}:{}", address.host, address.port),
    );
    for (name, value) in headers {
        request = request.header(name, *value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| GetError::Http(format!("cannot build the request ({e})")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| GetError::Http(format!("request failed ({e})")))?;
    let status = response.status().as_u16();
    let body = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .map_err(|e| format!("reading the answer: {e}"));
    connection.abort();
    Ok(Answer { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(url: Option<&str>, listen: Option<&str>) -> String {
        Address::resolve(url, listen).expect("address").origin()
    }

    /// The listen address decides where to ask; wildcard addresses become loopback.
    #[test]
    fn from_listen_address() {
        assert_eq!(origin(None, None), "http://127.0.0.1:8080");
        assert_eq!(origin(None, Some("")), "http://127.0.0.1:8080");
        assert_eq!(origin(None, Some("0.0.0.0:9090")), "http://127.0.0.1:9090");
        assert_eq!(origin(None, Some("[::]:8080")), "http://[::1]:8080");
        assert_eq!(origin(None, Some("10.0.0.7:8080")), "http://10.0.0.7:8080");
        let bad = Address::resolve(None, Some("localhost")).expect_err("no port");
        assert!(bad.contains(ENV_LISTEN), "{bad}");
    }

    /// `--url` wins over the environment; its path is kept apart; only http is accepted.
    #[test]
    fn from_url() {
        let address =
            Address::resolve(Some("http://localhost:7000/v1/"), Some("0.0.0.0:8080")).expect("url");
        assert_eq!(address.origin(), "http://localhost:7000");
        assert_eq!(address.base_path(), "/v1");
        assert_eq!(
            origin(Some("http://0.0.0.0:7000"), None),
            "http://127.0.0.1:7000"
        );
        assert_eq!(origin(Some("http://[::]:81"), None), "http://[::1]:81");
        assert!(Address::resolve(Some("https://127.0.0.1:8080"), None).is_err());
        assert!(Address::resolve(Some("not a url"), None).is_err());
    }
}
