//! WebSockets through the proxy to the emulator: realtime and the Responses WebSocket mode,
//! refusals at the handshake, the 426 for upgrades that cannot be served, access keys in the
//! subprotocol, usage, and the hostile cases (oversized message, a client that never reads,
//! an abrupt TCP close, 1,000 idle sockets, shutdown with open sockets).

use std::time::Duration;

use foundry_proxy::config::{Settings, SizeSetting};
use foundry_proxy::emulator::identities as world;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::common::{Harness, Setup};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Opens `path` on the proxy as a WebSocket with extra handshake headers.
async fn connect(
    harness: &Harness,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Socket, http::Response<Option<Vec<u8>>>), tungstenite::Error> {
    let mut request = format!("ws://{}{path}", harness.proxy)
        .into_client_request()
        .expect("request");
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            value.parse().expect("value"),
        );
    }
    tokio_tungstenite::connect_async(request).await
}

/// An upgrade the proxy refuses: its status, headers and JSON body.
async fn refused(
    harness: &Harness,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, Value) {
    let Err(tungstenite::Error::Http(response)) = connect(harness, path, headers).await else {
        panic!("{path}: upgraded");
    };
    let body = serde_json::from_slice(response.body().as_deref().unwrap_or_default())
        .expect("a JSON body");
    (response.status().as_u16(), response.headers().clone(), body)
}

/// The next JSON event (bounded wait).
async fn next_event(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an event within 10 s")
            .expect("socket open")
            .expect("a message");
        match message {
            Message::Text(text) => return serde_json::from_str(text.as_str()).expect("json"),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => {}
        }
    }
}

/// Events until (and with) one of type `last`.
async fn events_until(socket: &mut Socket, last: &str) -> Vec<Value> {
    let mut events = Vec::new();
    loop {
        let event = next_event(socket).await;
        let done = event["type"] == last;
        events.push(event);
        if done {
            return events;
        }
    }
}

/// The close frame the socket gets next (messages before it are skipped).
async fn close_frame(socket: &mut Socket) -> (u16, String) {
    loop {
        match tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("closed within 15 s")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// A gauge's value on `/metrics`.
async fn gauge(harness: &Harness, name: &str) -> f64 {
    let text = harness
        .client
        .get(harness.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

/// Waits (bounded) until the open-sockets gauge reads `want`.
async fn wait_open(harness: &Harness, want: f64) {
    for _ in 0..300 {
        if gauge(harness, "foundry_proxy_websockets_open").await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "foundry_proxy_websockets_open stayed at {} (want {want})",
        gauge(harness, "foundry_proxy_websockets_open").await
    );
}

fn realtime_path() -> String {
    format!("/v1/realtime?model={}", world::CHAT_DEPLOYMENT)
}

/// A realtime text session works end to end: session.created, a user item, a response whose
/// deltas make the answer, response.done with usage; the upstream handshake carried the
/// proxy's Bearer token, and the open socket shows on the gauge.
#[tokio::test]
async fn realtime_text_session() {
    let harness = Harness::start().await;
    let (mut socket, answer) = connect(&harness, &realtime_path(), &[]).await.expect("101");
    assert!(
        answer.headers().contains_key("apim-request-id"),
        "Azure's correlation header reaches the client"
    );
    assert_eq!(next_event(&mut socket).await["type"], "session.created");
    assert_eq!(gauge(&harness, "foundry_proxy_websockets_open").await, 1.0);
    let item = json!({"type": "conversation.item.create", "item": {"type": "message", "role": "user",
        "content": [{"type": "input_text", "text": "hello there"}]}});
    socket
        .send(Message::text(item.to_string()))
        .await
        .expect("send");
    assert_eq!(
        next_event(&mut socket).await["type"],
        "conversation.item.created"
    );
    socket
        .send(Message::text(
            json!({"type": "response.create"}).to_string(),
        ))
        .await
        .expect("send");
    let events = events_until(&mut socket, "response.done").await;
    let text: String = events
        .iter()
        .filter(|e| e["type"] == "response.output_text.delta")
        .map(|e| e["delta"].as_str().unwrap_or_default())
        .collect();
    assert!(text.ends_with("You said: hello there"), "{text}");
    let done = events.last().expect("done");
    assert!(done["response"]["usage"]["total_tokens"].as_u64() > Some(0));
    let records = harness.emulator.emulator.inference_requests();
    let handshake = records.last().expect("recorded");
    assert_eq!(handshake.path, "/openai/v1/realtime");
    assert_eq!(handshake.status, 101);
    assert!(handshake.token_appid.as_deref() == Some(world::CLIENT_ID));
    socket.close(None).await.expect("close");
    wait_open(&harness, 0.0).await;
    harness.stop().await;
}

/// The Responses WebSocket mode sends the same events as the SSE stream of the same request,
/// and a second `response.create` on the same socket works too.
#[tokio::test]
async fn responses_websocket_mode_matches_sse() {
    let harness = Harness::start().await;
    let body = json!({"model": world::CHAT_DEPLOYMENT, "input": "tell me something"});
    let sse = harness
        .post_json("/v1/responses", {
            let mut b = body.clone();
            b["stream"] = json!(true);
            b
        })
        .await
        .text()
        .await
        .expect("sse");
    let sse_types: Vec<&str> = sse
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    let (mut socket, _) = connect(&harness, "/v1/responses", &[]).await.expect("101");
    for _ in 0..2 {
        let mut create = body.clone();
        create["type"] = json!("response.create");
        socket
            .send(Message::text(create.to_string()))
            .await
            .expect("send");
        let events = events_until(&mut socket, "response.completed").await;
        let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(types, sse_types);
    }
    socket.close(None).await.expect("close");
    harness.stop().await;
}

/// Model aliases apply on WebSockets: a realtime `model` in the URL, and a Responses-mode
/// `response.create`'s `model`, are sent to Azure as their deployment.
#[tokio::test]
async fn aliases_apply_on_websockets() {
    let harness = Harness::start_with(Setup {
        settings: Settings {
            models: Some([("fast".to_owned(), world::CHAT_DEPLOYMENT.to_owned().into())].into()),
            ..Settings::default()
        },
        ..Setup::default()
    })
    .await;
    let (mut realtime, _) = connect(&harness, "/v1/realtime?model=fast", &[])
        .await
        .expect("101");
    assert_eq!(next_event(&mut realtime).await["type"], "session.created");
    let (mut responses, _) = connect(&harness, "/v1/responses", &[]).await.expect("101");
    let create = json!({"type": "response.create", "model": "fast", "input": "aliased"});
    responses
        .send(Message::text(create.to_string()))
        .await
        .expect("send");
    let events = events_until(&mut responses, "response.completed").await;
    assert!(events.iter().all(|e| e["type"] != "error"), "{events:?}");
    harness.stop().await;
}

/// An upgrade the proxy cannot serve is 426 `websocket_not_supported` in the OpenAI shape
/// (so Codex falls back to HTTP): a route without a WebSocket mode, and a style without any.
#[tokio::test]
async fn unservable_upgrades_are_426() {
    let harness = Harness::start().await;
    for path in ["/v1/chat/completions", "/v1/embeddings", "/v2/realtime"] {
        let (status, _, body) = refused(&harness, path, &[]).await;
        assert_eq!(status, 426, "{path}");
        assert_eq!(body["error"]["code"], "websocket_not_supported", "{path}");
    }
    harness.stop().await;
    let models = Harness::start_with(Setup {
        settings: Settings {
            endpoint: Some("/models".into()),
            api: Some("models".into()),
            ..Settings::default()
        },
        ..Setup::default()
    })
    .await;
    let (status, _, body) = refused(&models, "/v1/responses", &[]).await;
    assert_eq!(status, 426);
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("FOUNDRY_API=models"), "{message}");
    models.stop().await;
}

/// A principal without a data-plane role is refused at the handshake with the HTTP path's
/// explanation (`missing_role_assignment`), not an opaque failed upgrade.
#[tokio::test]
async fn missing_role_is_explained_at_the_handshake() {
    let harness = Harness::start_with(Setup {
        settings: Settings {
            client_id: Some(world::NO_ROLE_CLIENT_ID.into()),
            client_secret: Some(foundry_proxy::secret::Secret::new(
                world::NO_ROLE_CLIENT_SECRET,
            )),
            ..Settings::default()
        },
        ..Setup::default()
    })
    .await;
    let (status, _, body) = refused(&harness, &realtime_path(), &[]).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "missing_role_assignment");
    assert!(
        body["error"]["fix"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    );
    harness.stop().await;
}

/// A fault Azure plays at the handshake (a deployment that does not exist) is explained too.
#[tokio::test]
async fn handshake_fault_is_explained() {
    let harness = Harness::start().await;
    let (status, _, body) = refused(
        &harness,
        &realtime_path(),
        &[("x-emulator-fault", "deployment-not-found")],
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "deployment_not_found", "{body}");
    harness.stop().await;
}

/// A web page cannot open a WebSocket that borrows the proxy's identity: an upgrade with a
/// foreign Origin is refused before anything reaches Azure.
#[tokio::test]
async fn foreign_origin_upgrade_is_refused() {
    let harness = Harness::start().await;
    let before = harness.emulator.emulator.inference_requests().len();
    let (status, _, body) = refused(
        &harness,
        &realtime_path(),
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "origin_not_allowed");
    assert_eq!(harness.emulator.emulator.inference_requests().len(), before);
    harness.stop().await;
}

fn keys_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fp-ws-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// With access keys: the key is accepted from the `openai-insecure-api-key.KEY` subprotocol
/// (never sent to Azure, never selected), `realtime` is selected; no key is 401; each
/// `response.create` counts against the request limit (the refusal is an `error` event) and
/// `response.done` usage reaches `/status`.
#[tokio::test]
async fn access_key_in_subprotocol_limits_and_usage() {
    use foundry_proxy::keys::{Limits, file::add_key};
    let path = keys_file("keys.toml");
    let limits = Limits {
        requests_per_minute: Some(1),
        tokens_per_minute: None,
    };
    let key = add_key(&path, "alice", limits).expect("key");
    let harness = Harness::start_with(Setup {
        settings: Settings {
            keys_file: Some(path.clone()),
            ..Settings::default()
        },
        ..Setup::default()
    })
    .await;
    let (status, _, body) = refused(&harness, &realtime_path(), &[]).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let protocols = format!("realtime, openai-insecure-api-key.{key}");
    let (mut socket, answer) = connect(
        &harness,
        &realtime_path(),
        &[("sec-websocket-protocol", &protocols)],
    )
    .await
    .expect("101");
    assert_eq!(
        answer
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"realtime"[..])
    );
    let handshake = harness.emulator.emulator.inference_requests();
    let sent = &handshake.last().expect("recorded").headers;
    assert!(
        sent.iter().all(|(_, value)| !value.contains(key.as_str())),
        "the key reached Azure: {sent:?}"
    );
    assert_eq!(next_event(&mut socket).await["type"], "session.created");
    let create = json!({"type": "response.create", "event_id": "evt_1"}).to_string();
    socket
        .send(Message::text(create.clone()))
        .await
        .expect("send");
    let done = events_until(&mut socket, "response.done").await;
    let total = done.last().expect("done")["response"]["usage"]["total_tokens"]
        .as_u64()
        .expect("usage");
    socket.send(Message::text(create)).await.expect("send");
    let refused = next_event(&mut socket).await;
    assert_eq!(refused["type"], "error");
    assert_eq!(refused["error"]["code"], "rate_limit_exceeded");
    assert_eq!(refused["error"]["event_id"], "evt_1");
    let row = harness.usage_row(&key, "alice").await;
    let counted = row["prompt_tokens"].as_u64().unwrap_or_default()
        + row["completion_tokens"].as_u64().unwrap_or_default();
    assert_eq!(counted, total, "{row}");
    socket.close(None).await.expect("close");
    harness.stop().await;
}

fn limited(max_message: &str, idle_secs: u64) -> Setup {
    Setup {
        settings: Settings {
            ws_max_message: Some(SizeSetting::Text(max_message.into())),
            ws_idle_timeout_secs: Some(idle_secs),
            ..Settings::default()
        },
        ..Setup::default()
    }
}

/// A message over `FOUNDRY_PROXY_WS_MAX_MESSAGE` closes the socket with 1009 and a reason that
/// names the setting; the upstream side is closed too.
#[tokio::test]
async fn oversized_message_closes_with_1009() {
    let harness = Harness::start_with(limited("4KiB", 60)).await;
    let (mut socket, _) = connect(&harness, &realtime_path(), &[]).await.expect("101");
    assert_eq!(next_event(&mut socket).await["type"], "session.created");
    let big = json!({"type": "conversation.item.create", "pad": "x".repeat(8 * 1024)});
    socket
        .send(Message::text(big.to_string()))
        .await
        .expect("send");
    let (code, reason) = close_frame(&mut socket).await;
    assert_eq!(code, u16::from(CloseCode::Size));
    assert!(reason.contains("FOUNDRY_PROXY_WS_MAX_MESSAGE"), "{reason}");
    wait_open(&harness, 0.0).await;
    harness.stop().await;
}

/// A socket with no message either way for `FOUNDRY_PROXY_WS_IDLE_TIMEOUT` is closed with a
/// reason naming the setting.
#[tokio::test]
async fn idle_socket_is_closed_with_a_reason() {
    let harness = Harness::start_with(limited("16MiB", 1)).await;
    let (mut socket, _) = connect(&harness, &realtime_path(), &[]).await.expect("101");
    assert_eq!(next_event(&mut socket).await["type"], "session.created");
    let (code, reason) = close_frame(&mut socket).await;
    assert_eq!(code, 1000);
    assert!(reason.contains("FOUNDRY_PROXY_WS_IDLE_TIMEOUT"), "{reason}");
    harness.stop().await;
}

/// The raw bytes of a client handshake on `path`.
fn handshake_bytes(harness: &Harness, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n",
        harness.proxy
    )
}

/// A client that sends without ever reading: the proxy stops taking its output when the
/// socket's buffers are full, gives up after the idle timeout, closes Azure's side, and keeps
/// serving other clients meanwhile.
#[tokio::test]
async fn client_that_never_reads_is_dropped() {
    let harness = Harness::start_with(limited("16MiB", 2)).await;
    let mut stalled = TcpStream::connect(harness.proxy).await.expect("connect");
    let request = handshake_bytes(
        &harness,
        "/v1/responses",
        "x-emulator-chunk-delay-ms: 0\r\n",
    );
    stalled.write_all(request.as_bytes()).await.expect("write");
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).await.expect("head");
    assert_eq!(&head, b"HTTP/1.1 101");
    // Masked text frames written by hand: a large input makes thousands of delta events.
    let input = "word ".repeat(4000);
    let create =
        json!({"type": "response.create", "model": world::CHAT_DEPLOYMENT, "input": input});
    let frame = masked_text_frame(create.to_string().as_bytes());
    for _ in 0..20 {
        if stalled.write_all(&frame).await.is_err() {
            break;
        }
    }
    wait_open(&harness, 1.0).await;
    let (mut other, _) = connect(&harness, &realtime_path(), &[]).await.expect("101");
    assert_eq!(next_event(&mut other).await["type"], "session.created");
    other.close(None).await.expect("close");
    wait_open(&harness, 0.0).await;
    drop(stalled);
    harness.stop().await;
}

/// A client-to-server text frame (masked, as RFC 6455 requires of clients).
fn masked_text_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut frame = vec![0x81u8];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xffff => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// A client whose TCP connection ends without a close frame: the proxy closes Azure's side
/// and the socket is no longer counted open.
#[tokio::test]
async fn abrupt_tcp_close_closes_upstream() {
    let harness = Harness::start().await;
    let mut raw = TcpStream::connect(harness.proxy).await.expect("connect");
    let request = handshake_bytes(&harness, &realtime_path(), "");
    raw.write_all(request.as_bytes()).await.expect("write");
    let mut head = [0u8; 12];
    raw.read_exact(&mut head).await.expect("head");
    assert_eq!(&head, b"HTTP/1.1 101");
    wait_open(&harness, 1.0).await;
    drop(raw);
    wait_open(&harness, 0.0).await;
    harness.stop().await;
}

/// Shutdown (SIGTERM in `serve`) with open sockets: each gets 1001 and a reason, within the
/// drain grace, and the proxy stops cleanly.
#[tokio::test]
async fn shutdown_closes_open_sockets_with_1001() {
    let harness = Harness::start().await;
    let mut sockets = Vec::new();
    for path in [
        realtime_path().as_str(),
        "/v1/responses",
        "/openai/v1/responses",
    ] {
        let (socket, _) = connect(&harness, path, &[]).await.expect("101");
        sockets.push(socket);
    }
    assert_eq!(next_event(&mut sockets[0]).await["type"], "session.created");
    wait_open(&harness, 3.0).await;
    harness.begin_shutdown();
    for socket in &mut sockets {
        let (code, reason) = close_frame(socket).await;
        assert_eq!(code, 1001);
        assert!(reason.contains("shutting down"), "{reason}");
    }
    harness.stop().await;
}

/// The resident set size of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// 1,000 idle realtime sockets stay open side by side (each a client, a relay and an
/// emulator session in this process); the memory they cost is printed per socket, and
/// closing them all brings the gauge back to zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_idle_sockets() {
    const SOCKETS: usize = 1000;
    let harness = Harness::start().await;
    let (mut warm, _) = connect(&harness, &realtime_path(), &[]).await.expect("101");
    assert_eq!(next_event(&mut warm).await["type"], "session.created");
    let before = rss_kib();
    let mut sockets = Vec::with_capacity(SOCKETS);
    let small = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024);
    for _ in 0..SOCKETS {
        let url = format!("ws://{}{}", harness.proxy, realtime_path());
        let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(small), false)
            .await
            .expect("101");
        assert_eq!(next_event(&mut socket).await["type"], "session.created");
        sockets.push(socket);
    }
    wait_open(&harness, (SOCKETS + 1) as f64).await;
    let after = rss_kib();
    let per_socket = after.saturating_sub(before) as f64 / SOCKETS as f64;
    println!(
        "websocket memory: {SOCKETS} idle sockets, RSS {before} KiB -> {after} KiB, {per_socket:.1} KiB per socket (test client + proxy relay + emulator session, 16 KiB read buffers each)"
    );
    for mut socket in sockets {
        socket.close(None).await.expect("close");
    }
    warm.close(None).await.expect("close");
    wait_open(&harness, 0.0).await;
    harness.stop().await;
}

/// Entra down before the first token: the upgrade is answered 503 `entra_unavailable` with
/// `retry-after`, as an HTTP request would be.
#[tokio::test]
async fn entra_down_is_explained_at_the_handshake() {
    let harness = Harness::start_with(Setup {
        entra_fault: Some(foundry_proxy::emulator::EntraFault::Status(503)),
        ..Setup::default()
    })
    .await;
    let (status, headers, body) = refused(&harness, &realtime_path(), &[]).await;
    assert_eq!(status, 503);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(body["error"]["code"], "entra_unavailable", "{body}");
    harness.stop().await;
}

/// Azure's 401 at the handshake gets the forced refresh and one retry, then the HTTP path's
/// explanation (`token_rejected`): the token is fresh, so Azure refuses it for another reason.
#[tokio::test]
async fn azure_401_at_the_handshake_is_retried_then_explained() {
    let harness = Harness::start_with(Setup {
        policy: Some(foundry_proxy::token::TokenPolicy {
            forced_refresh_cooldown: Duration::ZERO,
            ..Default::default()
        }),
        ..Setup::default()
    })
    .await;
    harness.wait_ready().await;
    let before = harness.emulator.emulator.inference_requests().len();
    let (status, _, body) = refused(
        &harness,
        &realtime_path(),
        &[("x-emulator-fault", "unauthorized")],
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "token_rejected", "{body}");
    let attempts = harness.emulator.emulator.inference_requests().len() - before;
    assert_eq!(attempts, 2, "one retry with a refreshed token");
    harness.stop().await;
}

/// Azure's connection time limit reaches the client as Azure sends it: the `error` event with
/// `websocket_connection_limit_reached`, then its close code and reason, passed through.
#[tokio::test]
async fn connection_limit_close_passes_through() {
    let harness = Harness::start_with(Setup {
        emulator: foundry_proxy::emulator::EmulatorConfig {
            websocket_limit_secs: 1,
            ..Default::default()
        },
        ..Setup::default()
    })
    .await;
    let (mut socket, _) = connect(&harness, "/v1/responses", &[]).await.expect("101");
    let event = next_event(&mut socket).await;
    assert_eq!(event["error"]["code"], "websocket_connection_limit_reached");
    let (code, reason) = close_frame(&mut socket).await;
    assert_eq!(
        (code, reason.as_str()),
        (1000, "websocket_connection_limit_reached")
    );
    wait_open(&harness, 0.0).await;
    harness.stop().await;
}

/// A client's ping is answered with a pong carrying its payload.
#[tokio::test]
async fn ping_is_answered() {
    let harness = Harness::start().await;
    let (mut socket, _) = connect(&harness, "/v1/responses", &[]).await.expect("101");
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .expect("ping");
    let pong = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .expect("an answer within 10 s")
        .expect("open")
        .expect("message");
    assert_eq!(pong, Message::Pong(b"are you there".to_vec().into()));
    socket.close(None).await.expect("close");
    harness.stop().await;
}

/// The emulator alone checks the handshake as Azure does: no token is 401, the preview route
/// without an api-version is 404, an unknown deployment is 404 `DeploymentNotFound`.
#[tokio::test]
async fn emulator_checks_the_handshake() {
    let emulator = foundry_proxy::emulator::spawn(Default::default())
        .await
        .expect("emulator");
    let base = format!("ws://{}", emulator.addr);
    for (path, status) in [
        (
            format!("/openai/v1/realtime?model={}", world::CHAT_DEPLOYMENT),
            401,
        ),
        (
            format!("/openai/realtime?deployment={}", world::CHAT_DEPLOYMENT),
            404,
        ),
        ("/openai/v1/chat/completions".to_owned(), 404),
    ] {
        let Err(tungstenite::Error::Http(response)) =
            tokio_tungstenite::connect_async(format!("{base}{path}")).await
        else {
            panic!("{path}: upgraded");
        };
        assert_eq!(response.status(), status, "{path}");
    }
    emulator.shutdown().await;
}

/// A key's rules hold on WebSockets as on HTTP: an expired key and a realtime model outside the
/// key's list are refused at the handshake; on an open socket a `response.create` for a model
/// outside the list, or once the day's token budget is spent by a `response.done`, is answered
/// with an `error` event and not sent on.
#[tokio::test]
async fn key_rules_apply_on_websockets() {
    use foundry_proxy::keys::{Expiry, KeyEntry, Limits, Rules, add_entry};
    let path = keys_file("rules.toml");
    let add = |name: &str, rules: Rules| {
        let mut entry = KeyEntry::new(name, Limits::default());
        entry.rules = rules;
        add_entry(&path, &entry).expect("key")
    };
    let expired = add(
        "expired",
        Rules {
            expires: Some(Expiry::parse("2020-01-01T00:00:00Z").expect("rfc 3339")),
            ..Rules::default()
        },
    );
    let narrow = add(
        "narrow",
        Rules {
            models: Some(vec!["some-other-model".to_owned()]),
            ..Rules::default()
        },
    );
    let thrifty = add(
        "thrifty",
        Rules {
            tokens_per_day: Some(1),
            ..Rules::default()
        },
    );
    let harness = Harness::start_with(Setup {
        settings: Settings {
            keys_file: Some(path.clone()),
            ..Settings::default()
        },
        ..Setup::default()
    })
    .await;
    let bearer = |key: &str| format!("Bearer {key}");

    let (status, _, body) = refused(
        &harness,
        &realtime_path(),
        &[("authorization", &bearer(&expired))],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("key_expired")),
        "{body}"
    );
    let (status, _, body) = refused(
        &harness,
        &realtime_path(),
        &[("authorization", &bearer(&narrow))],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("model_not_allowed")),
        "{body}"
    );

    // Responses mode: the model is known only from each `response.create`.
    let (mut socket, _) = connect(
        &harness,
        "/v1/responses",
        &[("authorization", &bearer(&narrow))],
    )
    .await
    .expect("101");
    let create = json!({"type": "response.create", "model": world::CHAT_DEPLOYMENT, "input": "hi"});
    socket
        .send(Message::text(create.to_string()))
        .await
        .expect("send");
    let event = next_event(&mut socket).await;
    assert_eq!(event["type"], "error", "{event}");
    assert_eq!(event["error"]["code"], "model_not_allowed", "{event}");
    socket.close(None).await.expect("close");

    // A budget is checked before a response and charged when its usage arrives.
    let (mut socket, _) = connect(
        &harness,
        "/v1/responses",
        &[("authorization", &bearer(&thrifty))],
    )
    .await
    .expect("101");
    socket
        .send(Message::text(create.to_string()))
        .await
        .expect("send");
    events_until(&mut socket, "response.completed").await;
    socket
        .send(Message::text(create.to_string()))
        .await
        .expect("send");
    let event = next_event(&mut socket).await;
    assert_eq!(event["type"], "error", "{event}");
    assert_eq!(event["error"]["code"], "budget_exhausted", "{event}");
    socket.close(None).await.expect("close");
    harness.stop().await;
}
