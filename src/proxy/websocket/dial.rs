//! Dialing the upstream WebSocket: TCP, TLS with the proxy's own trust roots (the same
//! `rustls` configuration as the HTTP client, `SSL_CERT_FILE` included), then the handshake
//! with the Bearer token in `Authorization` (never in the URL).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Error};
use tokio_util::either::Either;

use crate::token::HeldToken;

/// The upstream connection: plain for loopback `ws://` (the emulator), TLS for `wss://`.
pub(super) type UpstreamIo = Either<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;
/// The upstream WebSocket.
pub(super) type Upstream = WebSocketStream<UpstreamIo>;

/// Why the upstream WebSocket is not open.
#[derive(Debug)]
pub(super) enum DialError {
    /// The upstream answered the handshake with an HTTP status other than 101.
    Refused(http::response::Parts, Bytes),
    /// No connection, TLS or handshake failure: the cause, for the explanation.
    Failed(String),
    /// No answer within the upstream timeout.
    TimedOut,
}

/// What every dial needs besides the token.
#[derive(Debug, Clone)]
pub(super) struct Dialer {
    /// The proxy's TLS client configuration (no ALPN: WebSockets are HTTP/1.1).
    pub(super) tls: Arc<rustls::ClientConfig>,
    /// Frame and message limits of the upstream socket.
    pub(super) config: WebSocketConfig,
    /// Time allowed for connecting and the handshake.
    pub(super) timeout: Duration,
}

impl Dialer {
    /// Opens `url` with `headers` (already prepared for the hop) and the token.
    pub(super) async fn dial(
        &self,
        url: &str,
        headers: &HeaderMap,
        token: &HeldToken,
    ) -> Result<(Upstream, HeaderMap), DialError> {
        match tokio::time::timeout(self.timeout, self.dial_now(url, headers, token)).await {
            Ok(result) => result,
            Err(_) => Err(DialError::TimedOut),
        }
    }

    async fn dial_now(
        &self,
        url: &str,
        headers: &HeaderMap,
        token: &HeldToken,
    ) -> Result<(Upstream, HeaderMap), DialError> {
        let mut request = url
            .into_client_request()
            .map_err(|e| DialError::Failed(e.to_string()))?;
        let uri = request.uri().clone();
        let secure = uri.scheme_str() == Some("wss");
        let host = uri
            .host()
            .ok_or_else(|| DialError::Failed(format!("no host in {url}")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let out = request.headers_mut();
        for (name, value) in headers {
            if !is_handshake_header(name) {
                out.append(name.clone(), value.clone());
            }
        }
        out.insert(AUTHORIZATION, token.header.clone());
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| DialError::Failed(format!("connect to {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let io = if secure {
            let name = rustls_pki_types::ServerName::try_from(host.clone())
                .map_err(|e| DialError::Failed(format!("{host}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
                .connect(name, tcp)
                .await
                .map_err(|e| DialError::Failed(format!("TLS with {host}: {e}")))?;
            Either::Right(tls)
        } else {
            Either::Left(tcp)
        };
        match tokio_tungstenite::client_async_with_config(request, io, Some(self.config)).await {
            Ok((socket, response)) => Ok((socket, response.headers().clone())),
            Err(Error::Http(response)) => {
                let (parts, body) = response.into_parts();
                Err(DialError::Refused(
                    parts,
                    Bytes::from(body.unwrap_or_default()),
                ))
            }
            Err(error) => Err(DialError::Failed(describe(&error))),
        }
    }
}

/// Headers the WebSocket client writes itself.
fn is_handshake_header(name: &HeaderName) -> bool {
    name.as_str().starts_with("sec-websocket-") || name == http::header::HOST
}

fn describe(error: &tungstenite::Error) -> String {
    let mut cause = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause.push_str(": ");
        cause.push_str(&inner.to_string());
        source = inner.source();
    }
    cause
}
