//! WebSocket upgrades: a realtime session (`/openai/v1/realtime?model=D`,
//! `/openai/realtime?api-version=V&deployment=D`) and the Responses WebSocket mode
//! (`/openai/v1/responses`), docs/azure-facts.md §7.
//!
//! The handshake runs the same checks as an HTTP request ([`handler::admit`], faults from
//! `x-emulator-fault` included) and refuses with the same HTTP answers. Once open, the session
//! answers client events with server events; mistakes are `error` events, the socket stays
//! open. After `websocket_limit_secs` (Azure: 60 minutes) the socket gets an `error` event with
//! `websocket_connection_limit_reached` and is closed with 1000 and that code as the reason
//! (the close code and reason are UNCONFIRMED, docs/azure-facts.md §7).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::body::Payload;
use super::error::FoundryError;
use super::fault::{self, Fault, Stage};
use super::handler::{self, GenCtx};
use super::realtime;
use super::route::{self, Op, Route};
use crate::emulator::config::DeploymentSpec;
use crate::emulator::state::Emulator;

/// The error code Azure sends when a socket reaches its time limit (docs/azure-facts.md §7).
pub(crate) const LIMIT_CODE: &str = "websocket_connection_limit_reached";

/// True for an HTTP/1.1 WebSocket upgrade request (`Upgrade: websocket`).
pub(crate) fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Which session an accepted handshake opens.
#[derive(Debug)]
enum Kind {
    /// A realtime session on a deployment.
    Realtime { model: String },
    /// The Responses WebSocket mode: `response.create` names its deployment each time.
    Responses,
}

/// Answers an upgrade: 101 and a session, or the refusal an HTTP request would get.
pub(crate) async fn handle(emu: Arc<Emulator>, mut request: Request) -> Response {
    let headers = request.headers().clone();
    let checked = check(&emu, &request);
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let mut response = match (checked, key) {
        (Ok((kind, fault)), Some(key)) => {
            let on_upgrade = hyper::upgrade::on(&mut request);
            let limit = Duration::from_secs(emu.config.websocket_limit_secs);
            let delay = Duration::from_millis(
                handler::header_num(&headers, "x-emulator-chunk-delay-ms")
                    .unwrap_or(emu.config.stream_chunk_delay_ms)
                    .min(60_000),
            );
            let session_emu = Arc::clone(&emu);
            tokio::spawn(async move {
                let Ok(upgraded) = on_upgrade.await else {
                    return;
                };
                // A small read buffer: tests hold a thousand sessions open at once.
                let config = WebSocketConfig::default()
                    .read_buffer_size(16 * 1024)
                    .write_buffer_size(16 * 1024);
                let socket = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                let session = Session {
                    emu: session_emu,
                    kind,
                    fault,
                    delay,
                    items: Vec::new(),
                };
                session.run(socket, limit).await;
            });
            switching(&key, &headers)
        }
        (Ok(_), None) => (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"error": {"code": "BadRequest", "message": "Missing Sec-WebSocket-Key."}}),
            ),
        )
            .into_response(),
        (Err(refusal), _) => refusal.into_response(),
    };
    handler::add_headers(&emu.config.region, &headers, &mut response);
    tracing::debug!(path = %request.uri().path(), status = response.status().as_u16(), "foundry websocket handshake");
    let (parts, _) = request.into_parts();
    handler::record(&emu, &parts, None, 0, response.status(), None);
    response
}

/// The 101 answer, selecting the first subprotocol offered, if any.
fn switching(key: &HeaderValue, headers: &HeaderMap) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let out = response.headers_mut();
    out.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    out.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        out.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    let first = headers
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').map(str::trim).find(|p| !p.is_empty()))
        .and_then(|p| HeaderValue::from_str(p).ok());
    if let Some(protocol) = first {
        out.insert(header::SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// The handshake's checks, in Azure's order; a realtime session's deployment faults are played
/// here, the Responses mode's at each `response.create`.
fn check(emu: &Emulator, request: &Request) -> Result<(Kind, Option<Fault>), FoundryError> {
    let headers = request.headers();
    let fault = fault::from_headers(headers)?;
    handler::refuse_at(fault, Stage::Edge)?;
    let route = route::websocket_route(request.uri().path(), request.uri().query())?;
    handler::admit(emu, headers, &route, fault)?;
    if route.op == Op::Responses {
        return Ok((Kind::Responses, fault));
    }
    let name = route
        .path_deployment
        .clone()
        .ok_or(FoundryError::ModelRequired)?;
    let payload = Payload::Json(json!({ "model": name }));
    let deployment = handler::resolve_deployment(&emu.config.deployments, &route, &payload)?;
    if let Some(f) = fault.filter(|f| f.stage() == Stage::Deployment) {
        return Err(handler::deployment_fault(
            emu,
            f,
            &route,
            &payload,
            Some(deployment),
        ));
    }
    kind_check(&route, deployment)?;
    Ok((
        Kind::Realtime {
            model: deployment.model.clone(),
        },
        None,
    ))
}

/// The deployment's kind must serve the op (OperationNotSupported otherwise).
fn kind_check(route: &Route, deployment: &DeploymentSpec) -> Result<(), FoundryError> {
    if route.op.kind() == Some(deployment.kind) {
        Ok(())
    } else {
        Err(FoundryError::OperationNotSupported {
            op: route.op.short_name(),
            model: deployment.model.clone(),
        })
    }
}

/// An `error` event for a refusal: Azure's body under `error`, with its HTTP status.
pub(crate) fn error_event(refusal: &FoundryError) -> Value {
    let (status, body) = refusal.parts();
    let error = body.get("error").cloned().unwrap_or(body);
    json!({"type": "error", "status": status.as_u16(), "error": error})
}

/// An `error` event for a client mistake (bad JSON, unknown event type).
pub(crate) fn invalid_event(code: &str, message: &str, event_id: Option<&Value>) -> Value {
    json!({"type": "error", "event_id": realtime::event_id(), "error": {
        "type": "invalid_request_error", "code": code, "message": message, "param": null,
        "event_id": event_id.cloned().unwrap_or(Value::Null)}})
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// One open socket's state.
struct Session {
    emu: Arc<Emulator>,
    kind: Kind,
    /// `x-emulator-fault` of the handshake, played at each `response.create` (Responses mode).
    fault: Option<Fault>,
    /// Delay between the events of one response.
    delay: Duration,
    /// Realtime: the conversation's user texts.
    items: Vec<String>,
}

impl Session {
    async fn run(mut self, mut socket: Socket, limit: Duration) {
        if let Kind::Realtime { model, .. } = &self.kind {
            let created = realtime::session_created(model);
            if send(&mut socket, &created).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(limit);
        let mut deadline = std::pin::pin!(deadline);
        loop {
            let message = tokio::select! {
                () = deadline.as_mut() => {
                    let _ = send(&mut socket, &limit_event(limit)).await;
                    let frame = CloseFrame { code: CloseCode::Normal, reason: LIMIT_CODE.into() };
                    let _ = socket.close(Some(frame)).await;
                    return;
                }
                message = socket.next() => message,
            };
            let events = match message {
                Some(Ok(Message::Text(text))) => self.answer(text.as_str()),
                Some(Ok(Message::Binary(_))) => vec![invalid_event(
                    "invalid_value",
                    "Binary messages are not supported; send JSON events as text.",
                    None,
                )],
                Some(Ok(_)) => {
                    // Pings are answered by the socket itself; flush sends the pong.
                    let _ = socket.flush().await;
                    continue;
                }
                None | Some(Err(_)) => return,
            };
            for (i, event) in events.iter().enumerate() {
                if i > 0 && !self.delay.is_zero() {
                    tokio::time::sleep(self.delay).await;
                }
                if send(&mut socket, event).await.is_err() {
                    return;
                }
            }
        }
    }

    /// The server events that answer one client event.
    fn answer(&mut self, text: &str) -> Vec<Value> {
        let Ok(event) = serde_json::from_str::<Value>(text) else {
            return vec![invalid_event(
                "invalid_json",
                "The message is not valid JSON.",
                None,
            )];
        };
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        match &self.kind {
            Kind::Realtime { model, .. } => realtime::answer(model, &mut self.items, kind, &event),
            Kind::Responses if kind == "response.create" => self.responses(&event),
            Kind::Responses => vec![invalid_event(
                "invalid_value",
                &format!("Invalid value: '{kind}'. Supported values are: 'response.create'."),
                event.get("event_id"),
            )],
        }
    }

    /// The Responses WebSocket mode: `response.create` carries the body of `POST /responses`
    /// and is answered with the events of its SSE stream.
    fn responses(&self, event: &Value) -> Vec<Value> {
        let mut body = event.clone();
        if let Some(fields) = body.as_object_mut() {
            fields.remove("type");
            fields.remove("stream");
        }
        let config = &self.emu.config;
        let name = body.get("model").and_then(Value::as_str).unwrap_or("");
        let found = config
            .deployment(name)
            .ok_or(FoundryError::DeploymentNotFound);
        let route = Route {
            surface: route::Surface::OpenAiV1,
            op: Op::Responses,
            path_deployment: None,
            project: None,
            api_version: None,
        };
        let played = found.and_then(|deployment| {
            if let Some(f) = self.fault.filter(|f| f.stage() == Stage::Deployment) {
                let payload = Payload::Json(body.clone());
                return Err(handler::deployment_fault(
                    &self.emu,
                    f,
                    &route,
                    &payload,
                    Some(deployment),
                ));
            }
            kind_check(&route, deployment).map(|()| deployment)
        });
        let deployment = match played {
            Ok(deployment) => deployment,
            Err(refusal) => return vec![error_event(&refusal)],
        };
        let ctx = GenCtx {
            emu: &self.emu,
            model: &deployment.model,
            chunks: None,
            delay: self.delay,
            reset_after: None,
        };
        super::responses::response_events(&ctx, &body).1
    }
}

/// The `error` event sent when the socket's time is up.
fn limit_event(limit: Duration) -> Value {
    json!({"type": "error", "status": 400, "error": {
        "type": "invalid_request_error", "code": LIMIT_CODE,
        "message": format!("Responses websocket connection limit reached ({} minutes). Create a new websocket connection to continue.", limit.as_secs() / 60),
        "param": null}})
}

async fn send(socket: &mut Socket, event: &Value) -> Result<(), ()> {
    socket
        .send(Message::text(event.to_string()))
        .await
        .map_err(|_| ())
}
