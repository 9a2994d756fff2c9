//! WebSocket upgrades: realtime (`/v1/realtime?model=D`) and the Responses WebSocket mode
//! (`/v1/responses`, what Codex dials first), and their Azure paths, relayed to Azure with the
//! proxy's token on the upstream handshake (docs/azure-facts.md §7).
//!
//! An upgrade goes: the route and style ([`handshake::socket_route`], 426 when there is no
//! WebSocket surface, so clients fall back to HTTP) → the handshake's offer (version 13, the
//! `openai-insecure-api-key.KEY` subprotocol) → the access key → a token → the upstream
//! handshake ([`dial`]), with one forced refresh and retry after a 401/403 as on the HTTP
//! path → 101 to the client → [`relay`] until either side closes. Every refusal before the 101
//! is the HTTP path's own explanation (no token, Entra down, Azure's 401/403/404 explained).
//!
//! [`meter`] counts `response.create` against per-key request limits and `response.done` usage
//! against token limits, metrics and `/status`.

mod dial;
mod handshake;
mod meter;
mod relay;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderValue, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use handshake::is_upgrade;

use super::account::UsageSink;
use super::{ProxyState, Tag, explain_refusal, headers, is_refusal, key_rules};
use crate::diagnose::{self, RefusalCode};
use crate::error::ApiError;
use crate::keys;
use crate::metrics::RequestRecord;
use crate::telemetry;
use dial::{DialError, Dialer};
use relay::RelayLimits;

/// Read and write buffer of each side of a relayed socket.
const SOCKET_BUFFER: usize = 16 * 1024;

/// What every WebSocket shares: limits, the shutdown signal and the open sockets' tasks.
#[derive(Debug)]
pub struct Sockets {
    dialer: Dialer,
    limits: RelayLimits,
    /// Cancelled at shutdown: every relay closes both sides with 1001.
    stop: CancellationToken,
    /// The relays, so shutdown can wait for their closes.
    tasks: TaskTracker,
}

impl Sockets {
    /// Sockets that close when `stop` is cancelled, with the message size limit and idle
    /// timeout of the configuration, dialing with `tls` within `dial_timeout`.
    pub fn new(
        tls: Arc<rustls::ClientConfig>,
        max_message: usize,
        idle: Duration,
        dial_timeout: Duration,
        stop: CancellationToken,
    ) -> Self {
        // Small buffers: tungstenite allocates its read buffer whole for each socket (128 KiB
        // by default, twice per relayed socket); messages larger than it are still read whole,
        // up to `max_message`. `send` flushes each message, so the write buffer stays small too.
        let config = WebSocketConfig::default()
            .read_buffer_size(SOCKET_BUFFER)
            .write_buffer_size(SOCKET_BUFFER)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        Self {
            dialer: Dialer {
                tls,
                config,
                timeout: dial_timeout,
            },
            limits: RelayLimits { idle },
            stop,
            tasks: TaskTracker::new(),
        }
    }

    /// After `stop`: waits at most `grace` for the open sockets' closes to be sent.
    pub async fn drained(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                open = self.tasks.len(),
                "grace period over; dropping the remaining WebSockets"
            );
        }
    }
}

/// Answers an upgrade request: 101 and a relay, or the refusal explained as on the HTTP path.
pub(super) async fn accept(
    state: &Arc<ProxyState>,
    request: Request,
    request_id: &str,
) -> Response {
    let started = Instant::now();
    let path = request.uri().path().to_owned();
    let mut seen = Seen {
        key: String::new(),
        label: "websocket",
        model: String::new(),
    };
    let response = open(state, request, request_id, &mut seen)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    let status = response.status().as_u16();
    let key_name = seen.key;
    state.metrics.record_request(&RequestRecord {
        route: seen.label,
        status,
        model: &seen.model,
        key: &key_name,
        upstream_latency: None,
    });
    info!(
        method = "GET",
        path = %telemetry::loggable(&path),
        status,
        total_ms = started.elapsed().as_millis() as u64,
        request_id = %request_id,
        key = %key_name,
        "websocket upgrade"
    );
    response
}

/// What the handshake learned, for its log line and metrics record, whatever its outcome.
struct Seen {
    /// The access key's name (empty without keys, or before the key is checked).
    key: String,
    /// `realtime`, `responses`, or `websocket` before the route is known.
    label: &'static str,
    /// The realtime deployment.
    model: String,
}

async fn open(
    state: &Arc<ProxyState>,
    mut request: Request,
    request_id: &str,
    seen: &mut Seen,
) -> Result<Response, ApiError> {
    let uri = request.uri().clone();
    let route = super::dialect::route(uri.path(), uri.query())
        .map_err(|_| handshake::not_supported("the path is not one the proxy serves"))?;
    let target = handshake::socket_route(&state.target, &route)?;
    seen.label = target.label;
    seen.model = target.model.clone().unwrap_or_default();
    let offer = handshake::offer(request.headers())?;
    let presented = keys::presented_key(request.headers()).or(offer.api_key.as_deref());
    let key = keys::authenticate_presented(state.keys.as_deref(), presented)?;
    seen.key = key.as_ref().map_or("", |k| k.name.as_str()).to_owned();
    if let Some(key) = key.as_deref() {
        // The key's expiry and budgets, and for realtime its allowed models, before Azure is
        // dialed; each `response.create` is checked again on the socket.
        crate::proxy::admission::handshake(state, key).await?;
        if target.model.is_some() {
            key_rules::allow_model(key, target.model.as_deref(), state.target.aliases())?;
        }
    }
    let tag = Tag {
        request_id,
        key: &seen.key,
    };
    let mut outbound = request.headers().clone();
    headers::prepare_request_headers(&mut outbound);
    let sockets = &state.websockets;
    let mut token = state
        .tokens
        .usable_token()
        .await
        .map_err(|why| diagnose::no_token(&state.diagnosis, &why))?;
    let mut dialed = sockets.dialer.dial(&target.url, &outbound, &token).await;
    if let Err(DialError::Refused(parts, _)) = &dialed
        && is_refusal(parts.status)
        && let Some(fresh) = state.tokens.refreshed_after(token.serial).await
    {
        info!(status = parts.status.as_u16(), request_id = %request_id, key = %tag.key, "retrying the upgrade with a refreshed token");
        token = fresh;
        dialed = sockets.dialer.dial(&target.url, &outbound, &token).await;
    }
    let (upstream, upstream_headers) = match dialed {
        Ok(opened) => opened,
        Err(DialError::Refused(parts, body)) => {
            return Ok(explain_refusal(
                &state.diagnosis,
                tag,
                &route,
                parts,
                body,
                &token,
                target.model.as_deref(),
            ));
        }
        Err(DialError::Failed(cause)) => {
            warn!(error = %cause, request_id = %request_id, key = %tag.key, "upstream websocket failed");
            return Err(diagnose::proxy_refusal(
                RefusalCode::UpstreamUnreachable,
                &state.diagnosis.vars().set("detail", cause),
            ));
        }
        Err(DialError::TimedOut) => {
            let vars = state
                .diagnosis
                .vars()
                .set("detail", sockets.dialer.timeout.as_secs().to_string());
            return Err(diagnose::proxy_refusal(RefusalCode::UpstreamTimeout, &vars));
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let meter = meter::Meter {
        state: Arc::clone(state),
        key,
        model: target.model.clone().unwrap_or_default(),
        sink: UsageSink::of(state),
    };
    let (limits, stop, config) = (sockets.limits, sockets.stop.clone(), sockets.dialer.config);
    let (id, key_shown, route_label) = (request_id.to_owned(), seen.key.clone(), target.label);
    let gauge = state.metrics.websocket_opened();
    sockets.tasks.spawn(async move {
        let _open = gauge;
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let client =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        let started = Instant::now();
        let ending = relay::run(client, upstream, limits, stop, meter).await;
        info!(route = route_label, ending = ?ending, secs = started.elapsed().as_secs(), request_id = %id, key = %key_shown, "websocket closed");
    });
    let mut response = switching(&offer);
    super::copy_correlation_headers(&upstream_headers, response.headers_mut());
    Ok(response)
}

/// The 101 answer: the accept key and the selected subprotocol (never the key's).
fn switching(offer: &handshake::Offer) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let out = response.headers_mut();
    out.insert(UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(offer.key.as_bytes())) {
        out.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = &offer.protocol {
        out.insert(SEC_WEBSOCKET_PROTOCOL, protocol.clone());
    }
    response
}
