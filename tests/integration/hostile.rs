//! Hostile or broken input, over real sockets (issue 8, points 6, 7 and 9).
//!
//! Point 6: `model` reaches the URL only as a valid deployment name, and no request line,
//! header or body makes the proxy contact any host but its endpoint. The endpoint is a [`Tee`]
//! (a TCP relay to the emulator that keeps every byte the proxy sends upstream, so request
//! lines and headers are checked as written), and a [`Canary`] listener named in the attacks
//! counts connections: it must see none.
//!
//! Point 7: slow or malformed clients (slowloris, huge or numerous headers, bad methods and
//! request lines, stalled bodies, HTTP/2 rapid reset, floods and stream limits) are answered or
//! cut off within bounds, and another client is served normally meanwhile.
//!
//! Point 9: every scenario runs with trace logs captured: no client secret, access token or
//! access key is written, and no hostile value (CR, LF, ESC, C1 controls, bidi overrides) is
//! written raw.

use crate::common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::logs::CapturedLogs;
use common::raw::{
    assert_refusal, frames, h2_connect, h2_send, header_of, json_of, raw, receive, status_of,
};
use common::{Harness, Setup};
use foundry_proxy::config::Settings;
use foundry_proxy::emulator::{self, EmulatorConfig, identities as world};
use foundry_proxy::server::ConnectionLimits;
use foundry_proxy::upstream::is_valid_deployment_name;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The longest any single wait in this file may take.
const BOUND: Duration = Duration::from_secs(10);
/// Text a hostile value tries to put at the start of a log line of its own.
const INJECTED: &str = "INJECTED-LOG-LINE";

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---- The world: emulator behind a recording relay, a canary, the proxy, captured logs ----

/// A listener no request may ever reach: the attacks name it in request targets, `Host`
/// headers, paths, queries and bodies.
struct Canary {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Canary {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind canary");
        let addr = listener.local_addr().expect("canary address");
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(socket);
            }
        });
        Self { addr, connections }
    }

    fn assert_untouched(&self) {
        assert_eq!(
            self.connections.load(Ordering::SeqCst),
            0,
            "the canary at {} was contacted",
            self.addr
        );
    }
}

/// The bytes the proxy sent on one upstream connection.
type Kept = Arc<Mutex<Vec<u8>>>;

/// The proxy's endpoint: a TCP relay to the emulator that keeps every byte the proxy sends.
struct Tee {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<Kept>>>,
    /// Milliseconds each answer's bytes are held before they are passed on (0: none).
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
}

impl Tee {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tee");
        let addr = listener.local_addr().expect("tee address");
        let connections: Arc<Mutex<Vec<Kept>>> = Arc::default();
        let delay_ms: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let all = Arc::clone(&connections);
        let delay = Arc::clone(&delay_ms);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let kept = Arc::new(Mutex::new(Vec::new()));
                lock(&all).push(Arc::clone(&kept));
                tokio::spawn(relay(client, server, kept, Arc::clone(&delay)));
            }
        });
        Self {
            addr,
            connections,
            delay_ms,
        }
    }

    /// Holds every answer's bytes for `ms` before passing them on: an upstream this slow
    /// has not answered a request the client resets a moment after sending it.
    fn slow_down(&self, ms: u64) {
        self.delay_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request head the proxy sent upstream, in order per connection.
    fn heads(&self) -> Vec<Head> {
        let mut heads = Vec::new();
        for kept in lock(&self.connections).iter() {
            parse_heads(&lock(kept), &mut heads);
        }
        heads
    }

    /// The upstream request that carried `x-request-id: id`, if one went upstream.
    fn head_with_id(&self, id: &str) -> Option<Head> {
        self.heads()
            .into_iter()
            .find(|head| head.header("x-request-id") == Some(id))
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    kept: Kept,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // Kept before it is passed on: once an answer comes back, its request is here.
                    lock(&kept).extend_from_slice(&buffer[..n]);
                    if server_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async move {
        let mut buffer = vec![0u8; 16 * 1024];
        loop {
            match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let delay = delay_ms.load(std::sync::atomic::Ordering::Relaxed);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    if client_write.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

/// One request head as the proxy wrote it upstream.
#[derive(Debug, Clone)]
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }

    fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, query)| query)
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Splits an HTTP/1.1 byte stream into request heads, skipping bodies by their framing.
fn parse_heads(mut bytes: &[u8], out: &mut Vec<Head>) {
    while let Some(end) = find(bytes, b"\r\n\r\n") {
        let text = String::from_utf8_lossy(&bytes[..end]);
        let mut lines = text.split("\r\n");
        let mut request_line = lines.next().unwrap_or_default().split(' ');
        let method = request_line.next().unwrap_or_default().to_owned();
        let target = request_line.next().unwrap_or_default().to_owned();
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let head = Head {
            method,
            target,
            headers,
        };
        bytes = &bytes[end + 4..];
        if head
            .header("transfer-encoding")
            .is_some_and(|te| te.contains("chunked"))
        {
            bytes = skip_chunked(bytes);
        } else if let Some(length) = head
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            bytes = &bytes[length.min(bytes.len())..];
        }
        out.push(head);
    }
}

/// The bytes after a chunked body (no trailers).
fn skip_chunked(mut bytes: &[u8]) -> &[u8] {
    while let Some(line_end) = find(bytes, b"\r\n") {
        let size_text = String::from_utf8_lossy(&bytes[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).unwrap_or(0);
        bytes = &bytes[line_end + 2..];
        if size == 0 {
            return bytes.get(2..).unwrap_or_default();
        }
        bytes = bytes.get(size + 2..).unwrap_or_default();
    }
    bytes
}

/// The emulator behind a [`Tee`] as the proxy's endpoint, a [`Canary`], the proxy, and the
/// process's trace logs.
struct World {
    harness: Harness,
    tee: Tee,
    canary: Canary,
    logs: CapturedLogs,
    api: &'static str,
    key: Option<String>,
}

async fn start_world(api: &'static str, keys: bool, limits: Option<ConnectionLimits>) -> World {
    let logs = common::logs::capture();
    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator starts");
    let tee = Tee::start(emulator.addr).await;
    let canary = Canary::start().await;
    let mut setup = Setup {
        settings: Settings {
            api: Some(api.into()),
            endpoint: Some(tee.url()),
            ..Settings::default()
        },
        connection_limits: limits,
        ..Setup::default()
    };
    let key = keys.then(|| common::add_access_key(&mut setup, "hostile"));
    let harness = Harness::start_on(emulator, setup).await;
    harness.wait_ready().await;
    World {
        harness,
        tee,
        canary,
        logs,
        api,
        key,
    }
}

impl World {
    fn proxy(&self) -> SocketAddr {
        self.harness.proxy
    }

    /// The `Authorization` line of a raw request (empty without access keys).
    fn auth_line(&self) -> String {
        self.key
            .as_ref()
            .map(|key| format!("Authorization: Bearer {key}\r\n"))
            .unwrap_or_default()
    }

    /// A raw JSON POST with `Connection: close`, tagged with `x-request-id: id`.
    fn post(&self, target: &str, host: &str, extra: &str, id: &str) -> Vec<u8> {
        let body =
            serde_json::to_vec(&Harness::chat(world::CHAT_DEPLOYMENT, "hostile")).expect("json");
        let mut request = format!(
            "POST {target} HTTP/1.1\r\nHost: {host}\r\n{}X-Request-Id: {id}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.auth_line(),
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        request
    }

    /// Another client, served normally: a chat completion answered 200 in time, on a new
    /// connection (a pooled one may be closing: short header timeouts close idle ones).
    async fn assert_served(&self) {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(BOUND)
            .build()
            .expect("client");
        let mut request = client
            .post(self.harness.url("/v1/chat/completions"))
            .json(&Harness::chat(world::CHAT_DEPLOYMENT, "still serving?"));
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        let response = tokio::time::timeout(BOUND, request.send())
            .await
            .expect("a normal request is answered in time")
            .expect("a normal request is answered");
        let status = response.status();
        let body: Value = response.json().await.expect("json answer");
        assert_eq!(status, 200, "a normal request is served: {body}");
        assert!(
            body["choices"][0]["message"]["content"].is_string(),
            "{body}"
        );
    }

    /// The access token the proxy sent upstream, read off the wire.
    fn access_token(&self) -> String {
        self.tee
            .heads()
            .iter()
            .find_map(|head| {
                head.header("authorization")?
                    .strip_prefix("Bearer ")
                    .map(str::to_owned)
            })
            .expect("the proxy sent its token upstream")
    }

    /// Nothing reached the canary, and every request that went upstream stayed on the
    /// endpoint: origin-form, the endpoint's `Host`, a path under the style's prefix with no
    /// traversal, encoded separators or other ambiguity, unambiguous framing.
    fn assert_confined(&self) {
        self.canary.assert_untouched();
        let prefix = match self.api {
            "deployments" => "/openai/",
            _ => "/openai/v1/",
        };
        // What the emulator saw agrees with what crossed the wire.
        for record in self.harness.emulator.emulator.inference_requests() {
            assert!(record.path.starts_with(prefix), "{record:?}");
        }
        let host = self.tee.addr.to_string();
        for head in self.tee.heads() {
            assert!(
                head.target.starts_with('/'),
                "origin-form only upstream: {head:?}"
            );
            assert_eq!(head.header("host"), Some(host.as_str()), "{head:?}");
            let path = head.path();
            assert!(path.starts_with(prefix), "outside {prefix}: {head:?}");
            assert!(
                path.split('/')
                    .skip(1)
                    .all(|segment| !segment.is_empty() && !segment.starts_with('.')),
                "empty or dot segment upstream: {head:?}"
            );
            let lower = path.to_ascii_lowercase();
            for bad in [
                "%2f", "%5c", "%2e", "%25", "%00", "%0d", "%0a", "\\", "@", ";",
            ] {
                assert!(!lower.contains(bad), "{bad} upstream: {head:?}");
            }
            assert!(path.is_ascii(), "{head:?}");
            if let Some(rest) = path.strip_prefix("/openai/deployments/") {
                let deployment = rest.split('/').next().unwrap_or_default();
                assert!(is_valid_deployment_name(deployment), "{head:?}");
            }
            assert!(
                head.header("content-length").is_none()
                    || head.header("transfer-encoding").is_none(),
                "ambiguous framing upstream: {head:?}"
            );
            for name in [
                "x-original-url",
                "x-rewrite-url",
                "x-http-method-override",
                "x-http-method",
                "x-method-override",
                "proxy-authorization",
                "upgrade",
                "te",
            ] {
                assert!(head.header(name).is_none(), "{name} upstream: {head:?}");
            }
            assert!(
                matches!(
                    head.method.as_str(),
                    "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
                ),
                "{head:?}"
            );
        }
    }

    /// Point 9, then stop: confined, and the logs hold no secret and no raw hostile value.
    async fn finish(self) {
        self.assert_confined();
        let token = self.access_token();
        let mut secrets = vec![world::CLIENT_SECRET, token.as_str()];
        if let Some(key) = &self.key {
            secrets.push(key);
        }
        assert_logs_clean(&self.logs, &secrets);
        self.harness.stop().await;
    }
}

/// No secret in the logs, and no character that could forge a line or drive a terminal.
fn assert_logs_clean(logs: &CapturedLogs, secrets: &[&str]) {
    logs.assert_free_of(secrets);
    let text = logs.text();
    let raw: Vec<char> = text
        .chars()
        .filter(|&c| {
            c != '\n'
                && (c.is_control()
                    || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        })
        .collect();
    assert!(
        raw.is_empty(),
        "raw control or bidi characters in the logs: {raw:?}"
    );
    assert!(
        !text.lines().any(|line| line.starts_with(INJECTED)),
        "a hostile value started a log line of its own"
    );
}

// ---- Point 6: where requests go ----

/// In the `deployments` style `model` becomes a URL segment: only deployment names (letters,
/// digits, `-`, `_`, `.`, at most 64, not starting with a dot) pass, from a JSON body or a
/// multipart form; anything else (traversal, encoded or raw separators, CR/LF, spaces, ESC,
/// NUL, `?`, `#`, `@`, URLs, non-ASCII look-alikes, 65 characters, nothing) is a 400
/// `invalid_model` naming it escaped, and never goes upstream. Duplicated or non-string
/// `model`s are 400 `invalid_json`. Client api-versions (any case) replace the proxy's, never
/// join it, and query text stays query text.
#[tokio::test]
async fn only_valid_deployment_names_reach_the_url() {
    let world = start_world("deployments", false, None).await;
    let canary = world.canary.addr.to_string();
    let client = &world.harness.client;
    let chat = world.harness.url("/v1/chat/completions");
    let transcriptions = world.harness.url("/v1/audio/transcriptions");

    let mut refused: Vec<String> = [
        "../../admin",
        "..",
        ".",
        "...",
        ".hidden",
        "a/b",
        "a%2fb",
        "a%2Fb",
        "a%5cb",
        "a\\b",
        "a b",
        "gpt-4o-mini\u{1b}[31m",
        "gpt-4o-mini\u{0}",
        "gpt-4o-mini?api-version=2024-10-21",
        "gpt-4o-mini#fragment",
        "gpt-4\u{f6}-mini",
        "gpt\u{ff0d}4o-mini",
        "gpt\u{202e}4o-mini",
        "gpt\u{2028}4o-mini",
        "gpt\u{85}4o-mini",
    ]
    .map(str::to_owned)
    .to_vec();
    refused.extend([
        format!("gpt-4o-mini\r\n{INJECTED}: 1"),
        format!("gpt-4o-mini HTTP/1.1\r\nHost: {canary}\r\n\r\nGET /x"),
        format!("x@{canary}"),
        format!("http://{canary}/x"),
        "a".repeat(65),
    ]);
    // Only in JSON: a multipart field is trimmed, so surrounding white space is not hostile there.
    let json_only = [
        " gpt-4o-mini",
        "gpt-4o-mini ",
        "gpt-4o-mini\t",
        "gpt-4o-mini\n",
        "",
    ];

    let heads_before = world.tee.heads().len();
    for model in refused.iter().map(String::as_str).chain(json_only) {
        let response = client
            .post(&chat)
            .json(&Harness::chat(model, "hi"))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 400, "JSON model {model:?}");
        let error = common::error_of(response).await;
        assert_eq!(
            error["code"], "invalid_model",
            "JSON model {model:?}: {error}"
        );
        let message = error["message"].as_str().expect("message");
        assert!(
            !message.chars().any(char::is_control),
            "{model:?}: raw control characters in {message:?}"
        );
    }
    for model in &refused {
        let response = client
            .post(&transcriptions)
            .header("content-type", "multipart/form-data; boundary=XyZ")
            .body(multipart(model))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 400, "multipart model {model:?}");
        let error = common::error_of(response).await;
        assert_eq!(
            error["code"], "invalid_model",
            "multipart model {model:?}: {error}"
        );
    }
    for body in [
        r#"{"model": "..\u002f..\u002fadmin", "messages": []}"#,
        r#"{"model": "gpt-4o-mini\u0000", "messages": []}"#,
    ] {
        let response = client
            .post(&chat)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(
            common::error_of(response).await["code"],
            "invalid_model",
            "{body}"
        );
    }
    for body in [
        r#"{"model": "gpt-4o-mini", "model": "../../admin", "messages": []}"#,
        r#"{"model": ["gpt-4o-mini"], "messages": []}"#,
        r#"{"model": {"$ref": "../../admin"}, "messages": []}"#,
        r#"{"model": "gpt-4o-mini\ud800", "messages": []}"#,
    ] {
        let response = client
            .post(&chat)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(
            common::error_of(response).await["code"],
            "invalid_json",
            "{body}"
        );
    }
    assert_eq!(
        world.tee.heads().len(),
        heads_before,
        "a refused model went upstream"
    );

    // Valid names go upstream as the URL's deployment segment, the longest allowed included.
    let longest = "a".repeat(64);
    for (model, status) in [
        (world::CHAT_DEPLOYMENT, 200),
        ("gpt-4o-mini_v2.1-test", 404),
        (longest.as_str(), 404),
    ] {
        let response = client
            .post(&chat)
            .header("x-request-id", format!("valid-{model}"))
            .json(&Harness::chat(model, "hi"))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), status, "{model}");
        let head = world
            .tee
            .head_with_id(&format!("valid-{model}"))
            .expect("went upstream");
        assert_eq!(
            head.target,
            format!("/openai/deployments/{model}/chat/completions?api-version=2024-10-21")
        );
    }
    let response = client
        .post(&transcriptions)
        .header("x-request-id", "valid-multipart")
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(multipart(world::TRANSCRIPTION_DEPLOYMENT))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let head = world.tee.head_with_id("valid-multipart").expect("upstream");
    assert_eq!(
        head.path(),
        "/openai/deployments/whisper/audio/transcriptions"
    );

    // Queries: the client's api-version replaces the proxy's (whatever its case); encoded text
    // stays encoded, in the query.
    let queries: Vec<(String, String)> = [
        (
            "api-version=2025-04-01-preview",
            "api-version=2025-04-01-preview",
        ),
        (
            "API-Version=2025-04-01-preview",
            "API-Version=2025-04-01-preview",
        ),
        (
            "api-version=2024-10-21%26api-version%3D1",
            "api-version=2024-10-21%26api-version%3D1",
        ),
        (
            "x=%0d%0aHost:%20evil",
            "x=%0d%0aHost:%20evil&api-version=2024-10-21",
        ),
        (
            "next=http://CANARY/x&at=@CANARY",
            "next=http://CANARY/x&at=@CANARY&api-version=2024-10-21",
        ),
    ]
    .map(|(query, upstream)| {
        (
            query.replace("CANARY", &canary),
            upstream.replace("CANARY", &canary),
        )
    })
    .to_vec();
    for (index, (query, upstream)) in queries.into_iter().enumerate() {
        let id = format!("query-{index}");
        let _ = client
            .post(format!("{chat}?{query}"))
            .header("x-request-id", &id)
            .json(&Harness::chat(world::CHAT_DEPLOYMENT, "hi"))
            .send()
            .await
            .expect("answer");
        let head = world.tee.head_with_id(&id).expect("went upstream");
        assert_eq!(
            head.path(),
            "/openai/deployments/gpt-4o-mini/chat/completions"
        );
        assert_eq!(head.query(), Some(upstream.as_str()), "{query}");
        let versions = head
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|pair| pair.to_ascii_lowercase().starts_with("api-version="))
            .count();
        assert_eq!(versions, 1, "one api-version upstream: {head:?}");
    }

    world.assert_served().await;
    world.finish().await;
}

/// A multipart transcription request whose `model` field is `model`.
fn multipart(model: &str) -> Vec<u8> {
    let mut body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n".to_vec();
    body.extend_from_slice(model.as_bytes());
    body.extend_from_slice(b"\r\n--XyZ--\r\n");
    body
}

/// What one raw request must lead to.
enum Expect {
    /// Forwarded to the endpoint with this upstream target (path and query), and answered 200.
    Forwarded(String),
    /// Forwarded to the endpoint with this upstream target; answered as the endpoint decides.
    Relayed(String),
    /// Refused by the proxy with this status and code; nothing went upstream.
    Refused(u16, &'static str),
    /// Refused by the HTTP layer with a 400; nothing went upstream.
    Malformed,
}

/// No request target, `Host` header, path, query or header trick makes the proxy contact any
/// host but its endpoint (over HTTP/1.1 written by hand, and HTTP/2): absolute-form targets,
/// `Host` headers and HTTP/2 `:authority` naming the canary are refused (403
/// `host_not_allowed`: they do not name the proxy); `X-Forwarded-Host`, `Forwarded` and
/// path-override headers change nothing (and the overrides are not passed on); `..` and `.`
/// segments, encoded or double-encoded slashes, backslashes and dots, `//`, `@`, `;`, invalid or
/// encoded-control escapes and raw non-ASCII are 400 `invalid_path`; paths outside `/v1/` are
/// 404 whatever they would normalise to; `?` and `#` tricks stay in the query or are dropped;
/// header injection (obs-fold, bare CR, spaces in names) is a 400 from the HTTP layer; a request
/// framed by both Content-Length and Transfer-Encoding is read chunked and its smuggled
/// follower never runs.
#[tokio::test]
async fn no_request_leaves_the_endpoint() {
    let world = start_world("openai-v1", true, None).await;
    let canary = world.canary.addr.to_string();
    let canary_name = format!("localhost:{}", world.canary.addr.port());
    let proxy = world.proxy().to_string();
    let chat = "/openai/v1/chat/completions".to_owned();

    let mut cases: Vec<(String, Vec<u8>, Expect)> = Vec::new();
    let mut post = |label: &str, target: &str, host: &str, extra: &str, expect: Expect| {
        let id = format!("case-{}", cases.len());
        let request = world.post(target, host, extra, &id);
        cases.push((format!("{label}: {target}"), request, expect));
    };
    // Absolute-form targets and Host headers naming the canary: not the proxy's name.
    post(
        "absolute-form",
        &format!("http://{canary}/v1/chat/completions"),
        &canary,
        "",
        Expect::Refused(403, "host_not_allowed"),
    );
    post(
        "absolute-form by name",
        &format!("http://{canary_name}/v1/chat/completions"),
        &canary_name,
        "",
        Expect::Refused(403, "host_not_allowed"),
    );
    post(
        "absolute-form https",
        &format!("https://{canary}/v1/chat/completions"),
        &canary,
        "",
        Expect::Refused(403, "host_not_allowed"),
    );
    post(
        "Host",
        "/v1/chat/completions",
        &canary,
        "",
        Expect::Refused(403, "host_not_allowed"),
    );
    post(
        "two Hosts",
        "/v1/chat/completions",
        &proxy,
        &format!("Host: {canary}\r\n"),
        Expect::Refused(403, "host_not_allowed"),
    );
    post(
        "forwarding and override headers",
        "/v1/chat/completions",
        &proxy,
        &format!(
            "X-Forwarded-Host: {canary}\r\nForwarded: host={canary}\r\nX-Original-URL: http://{canary}/admin\r\nX-Rewrite-URL: /admin\r\nX-HTTP-Method-Override: TRACE\r\nX-HTTP-Method: TRACE\r\nX-Method-Override: TRACE\r\n"
        ),
        Expect::Forwarded(chat.clone()),
    );
    post(
        "Connection naming Authorization and Host",
        "/v1/chat/completions",
        &proxy,
        "Connection: authorization, host\r\n",
        Expect::Forwarded(chat.clone()),
    );
    // Query and fragment tricks.
    post(
        "query",
        &format!("/v1/chat/completions?x=../../admin&next=http://{canary}/"),
        &proxy,
        "",
        Expect::Forwarded(format!("{chat}?x=../../admin&next=http://{canary}/")),
    );
    post(
        "@ in the query",
        &format!("/v1/chat/completions?@{canary}"),
        &proxy,
        "",
        Expect::Forwarded(format!("{chat}?@{canary}")),
    );
    post(
        "fragment",
        &format!("/v1/chat/completions#/../../{canary}"),
        &proxy,
        "",
        Expect::Forwarded(chat.clone()),
    );
    post(
        "api-version injection",
        "/v1/chat/completions?api-version=2099-01-01%26evil%3D1",
        &proxy,
        "",
        Expect::Relayed(format!("{chat}?api-version=2099-01-01%26evil%3D1")),
    );
    // Paths that could escape the route.
    for target in [
        "/v1/../admin".to_owned(),
        "/v1/./chat/completions".to_owned(),
        "/v1/chat/../../admin".to_owned(),
        "/v1/chat/completions/..".to_owned(),
        "/v1/%2e%2e/admin".to_owned(),
        "/v1/%2E%2E/admin".to_owned(),
        "/v1/.%2e/admin".to_owned(),
        "/v1/chat%2fcompletions".to_owned(),
        "/v1/chat%2Fcompletions".to_owned(),
        "/v1/chat%5ccompletions".to_owned(),
        "/v1/..%5Cadmin".to_owned(),
        "/v1/chat\\completions".to_owned(),
        "/v1//chat/completions".to_owned(),
        "/v1/chat//completions".to_owned(),
        "/v1/chat/completions/".to_owned(),
        format!("/v1/@{canary}/chat/completions"),
        format!("/v1/chat/completions@{canary}"),
        format!("/v1/http://{canary}/chat/completions"),
        format!("/v1/http:%2f%2f{canary}/chat/completions"),
        "/v1/..;/admin".to_owned(),
        "/v1/chat;x=1/completions".to_owned(),
        "/v1/.../admin".to_owned(),
        "/v1/..%20/admin".to_owned(),
        "/v1/%252e%252e/admin".to_owned(),
        "/v1/chat%252fcompletions".to_owned(),
        "/v1/%u002e%u002e/admin".to_owned(),
        "/v1/chat/completions%".to_owned(),
        "/v1/chat/completions%0".to_owned(),
        "/v1/chat/completions%zz".to_owned(),
        "/v1/chat/completions%00".to_owned(),
        format!("/v1/chat%0d%0a{INJECTED}:%20x/completions"),
        "/v1/chat%1b[31m/completions".to_owned(),
        "/v1/chat/c\u{f6}mpletions".to_owned(),
        "/v1/\u{9b}31mred".to_owned(),
        "/v1/\u{202e}evil".to_owned(),
        format!("/v1/\u{85}{INJECTED}"),
    ] {
        post(
            "path",
            &target,
            &proxy,
            "",
            Expect::Refused(400, "invalid_path"),
        );
    }
    // Paths outside /v1/ stay outside, whatever they would normalise to.
    for target in [
        "//v1/chat/completions".to_owned(),
        "/V1/chat/completions".to_owned(),
        "/v1".to_owned(),
        "/v1%2fchat/completions".to_owned(),
        "/%2e%2e/v1/chat/completions".to_owned(),
        "/admin/../v1/chat/completions".to_owned(),
        "/./v1/chat/completions".to_owned(),
    ] {
        post(
            "outside /v1/",
            &target,
            &proxy,
            "",
            Expect::Refused(404, "unknown_path"),
        );
    }
    post(
        "outside /v1/, absolute-form",
        &format!("http://{canary}/admin"),
        &proxy,
        "",
        Expect::Refused(403, "host_not_allowed"),
    );
    // Header injection: continuation lines, bare CR, white space in names.
    let auth = world.auth_line();
    for (label, header) in [
        ("obs-fold", format!("X-Note: a\r\n Host: {canary}\r\n")),
        ("bare CR", format!("X-Note: a\rHost: {canary}\r\n")),
        ("space before colon", format!("Host : {canary}\r\n")),
        ("NUL in a value", "X-Note: a\0b\r\n".to_owned()),
        ("ESC in a value", format!("X-Note: \u{1b}[2J{INJECTED}\r\n")),
        ("bad name", "X(Note): a\r\n".to_owned()),
    ] {
        let request = format!(
            "GET /v1/models HTTP/1.1\r\nHost: {proxy}\r\n{auth}{header}Connection: close\r\n\r\n"
        );
        cases.push((label.to_owned(), request.into_bytes(), Expect::Malformed));
    }
    // Content-Length and Transfer-Encoding together: read chunked, connection closed after,
    // so the request smuggled behind the first never runs.
    let body = serde_json::to_vec(&Harness::chat(world::CHAT_DEPLOYMENT, "smuggle")).expect("json");
    for (order, framing) in [
        (
            "CL first",
            "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE first",
            "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
        ),
    ] {
        let id = format!("case-{}", cases.len());
        let mut request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {proxy}\r\n{auth}X-Request-Id: {id}\r\nContent-Type: application/json\r\n{framing}\r\n{:x}\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        request.extend_from_slice(
            format!("\r\n0\r\n\r\nPOST http://{canary}/v1/chat/completions HTTP/1.1\r\nHost: {canary}\r\n{auth}X-Request-Id: {id}-smuggled\r\nContent-Length: 0\r\n\r\n").as_bytes(),
        );
        cases.push((
            format!("smuggling, {order}"),
            request,
            Expect::Forwarded(chat.clone()),
        ));
    }

    for (index, (label, request, expect)) in cases.into_iter().enumerate() {
        let id = format!("case-{index}");
        let answer = raw(world.proxy(), request).await;
        let upstream = world.tee.head_with_id(&id);
        match expect {
            Expect::Forwarded(target) => {
                assert_eq!(status_of(&answer), 200, "{label}: {answer}");
                let head = upstream.unwrap_or_else(|| panic!("{label}: not forwarded"));
                assert_eq!(head.target, target, "{label}");
                assert!(
                    world.tee.head_with_id(&format!("{id}-smuggled")).is_none(),
                    "{label}: a smuggled request ran"
                );
            }
            Expect::Relayed(target) => {
                assert_ne!(status_of(&answer), 0, "{label}: {answer}");
                let head = upstream.unwrap_or_else(|| panic!("{label}: not forwarded"));
                assert_eq!(head.target, target, "{label}");
            }
            Expect::Refused(status, code) => {
                assert_refusal(&answer, status, code, &label);
                assert!(upstream.is_none(), "{label}: went upstream");
            }
            Expect::Malformed => {
                assert_eq!(status_of(&answer), 400, "{label}: {answer}");
                assert!(upstream.is_none(), "{label}: went upstream");
            }
        }
    }

    // HTTP/2: an :authority or a Host header naming the canary is refused the same way.
    let client = h2_connect(world.proxy()).await;
    let key = world.key.clone().expect("key");
    for (index, (uri, host)) in [
        (format!("http://{canary}/v1/chat/completions"), None),
        (
            format!("https://{canary_name}/v1/chat/completions"),
            Some(canary.clone()),
        ),
        (format!("http://{canary}/v1/%2e%2e/admin"), None),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("h2-{index}");
        let mut request = http::Request::post(&uri)
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .header("x-request-id", &id);
        if let Some(host) = host {
            request = request.header("host", host);
        }
        let body = serde_json::to_vec(&Harness::chat(world::CHAT_DEPLOYMENT, "h2")).expect("json");
        let (status, answer) = h2_send(
            &client,
            request.body(()).expect("request"),
            Some(body.into()),
        )
        .await;
        let upstream = world.tee.head_with_id(&id);
        assert_eq!(status, 403, "{uri}");
        let answer: Value = serde_json::from_slice(&answer).expect("json");
        assert_eq!(answer["error"]["code"], "host_not_allowed", "{uri}");
        assert!(upstream.is_none(), "{uri}");
    }
    drop(client);

    world.assert_served().await;
    world.finish().await;
}

// ---- Point 7: slow or malformed clients ----

fn short_limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        http2_max_streams: 4,
        ..ConnectionLimits::default()
    }
}

/// How a slow client's connection ended.
#[derive(Debug)]
struct Ended {
    after: Duration,
    /// What the server sent before closing.
    answer: String,
    /// Bytes the client got to send.
    sent: usize,
}

/// Connects, sends `first` at once, then `trickle` a byte every 100 ms, reading all the while;
/// returns when the server closes the connection (or after `limit`, as not ended).
async fn slow_client(
    addr: SocketAddr,
    first: &'static [u8],
    trickle: &'static [u8],
    limit: Duration,
) -> Option<Ended> {
    let started = Instant::now();
    let socket = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = socket.into_split();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    let writing = tokio::spawn(async move {
        if writer.write_all(first).await.is_err() {
            return writer;
        }
        counter.fetch_add(first.len(), Ordering::SeqCst);
        for byte in trickle {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            counter.fetch_add(1, Ordering::SeqCst);
        }
        // Stays open (no FIN): a slow client never finishes.
        std::future::pending::<()>().await;
        writer
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + limit;
    let ended = loop {
        match tokio::time::timeout_at(deadline, reader.read(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => break false,
        }
    };
    writing.abort();
    ended.then(|| Ended {
        after: started.elapsed(),
        answer: String::from_utf8_lossy(&answer).into_owned(),
        sent: sent.load(Ordering::SeqCst),
    })
}

/// Slowloris: with a 1 s header read timeout, a client that trickles its headers a byte at a
/// time, one that connects and sends nothing, one that stops inside the HTTP/2 preface and one
/// that sends the preface and nothing more are all disconnected (a 408 at most) within a few
/// seconds, while another client is served normally meanwhile and after.
#[tokio::test]
async fn slow_clients_are_cut_off() {
    let world = start_world("openai-v1", false, Some(short_limits())).await;
    let proxy = world.proxy();
    const TRICKLED: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let limit = Duration::from_secs(8);
    let slow: [(&str, &'static [u8], &'static [u8]); 4] = [
        ("trickled headers", b"", TRICKLED),
        ("silent", b"", b""),
        ("inside the HTTP/2 preface", b"PRI * HTTP/2.0\r\n", b""),
        ("HTTP/2 preface only", frames::PREFACE, b""),
    ];
    let clients: Vec<_> = slow
        .iter()
        .map(|(label, first, trickle)| {
            let label = *label;
            let (first, trickle) = (*first, *trickle);
            tokio::spawn(async move { (label, slow_client(proxy, first, trickle, limit).await) })
        })
        .collect();
    world.assert_served().await;
    for client in clients {
        let (label, ended) = client.await.expect("slow client task");
        let ended = ended.unwrap_or_else(|| panic!("{label}: still connected after {limit:?}"));
        // Over HTTP/1.1 nothing or a 408; over HTTP/2 the server's own preface (SETTINGS).
        assert!(
            ended.answer.is_empty()
                || status_of(&ended.answer) == 408
                || (label.contains("HTTP/2") && ended.answer.starts_with('\0')),
            "{label}: {ended:?}"
        );
        if label == "trickled headers" {
            assert!(
                ended.sent < TRICKLED.len(),
                "{label}: the whole head went through: {ended:?}"
            );
        }
        assert!(ended.after < limit, "{label}: {ended:?}");
    }
    world.assert_served().await;
    world.finish().await;
}

/// Heads over the limits: a 100 KB header gets 431 over HTTP/1.1 and over HTTP/2; 150 headers
/// get 431 over HTTP/1.1; 60 headers are fine. Nothing over a limit goes upstream.
#[tokio::test]
async fn oversized_heads_get_431() {
    let world = start_world("openai-v1", false, None).await;
    let proxy = world.proxy();
    let big = "a".repeat(100 * 1024);
    let answer = raw(
        proxy,
        format!("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: big\r\nX-Big: {big}\r\nConnection: close\r\n\r\n").into_bytes(),
    )
    .await;
    assert_eq!(status_of(&answer), 431, "100 KB header: {answer}");
    let many = |n: usize| {
        (0..n)
            .map(|i| format!("X-H{i}: {i}\r\n"))
            .collect::<String>()
    };
    let answer = raw(
        proxy,
        format!("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: many\r\n{}Connection: close\r\n\r\n", many(150)).into_bytes(),
    )
    .await;
    assert_eq!(status_of(&answer), 431, "150 headers: {answer}");
    let answer = raw(
        proxy,
        format!("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: some\r\n{}Connection: close\r\n\r\n", many(60)).into_bytes(),
    )
    .await;
    assert_eq!(status_of(&answer), 200, "60 headers: {answer}");

    let client = h2_connect(proxy).await;
    let request = http::Request::get(format!("http://{proxy}/v1/models"))
        .header("x-request-id", "big-h2")
        .header("x-big", big)
        .body(())
        .expect("request");
    let (status, _) = h2_send(&client, request, None).await;
    assert_eq!(status, 431, "100 KB header over HTTP/2");
    drop(client);
    for id in ["big", "many", "big-h2"] {
        assert!(world.tee.head_with_id(id).is_none(), "{id} went upstream");
    }
    assert!(world.tee.head_with_id("some").is_some());
    world.assert_served().await;
    world.finish().await;
}

/// Methods: a token the proxy does not forward (`FOO`, `TRACE`, `CONNECT`, `get`, …) on a `/v1/`
/// path is a 405 `method_not_allowed` in the OpenAI shape with an `Allow` header, never sent
/// upstream (a TRACE would echo the proxy's token back). Garbage bytes in the method, a TLS
/// handshake and malformed request lines (extra or missing parts, double spaces, unknown
/// versions, relative or broken targets, NUL, chunked HTTP/1.0) are a 400, a 70 KB request
/// target a 431; none is forwarded, and the server serves others meanwhile.
#[tokio::test]
async fn bad_methods_and_request_lines() {
    let world = start_world("openai-v1", false, None).await;
    let proxy = world.proxy();
    for method in [
        "FOO", "TRACE", "CONNECT", "get", "PROPFIND", "M-SEARCH", "BREW",
    ] {
        let answer = raw(
            proxy,
            format!("{method} /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: m-{method}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes(),
        )
        .await;
        assert_refusal(&answer, 405, "method_not_allowed", method);
        let body = json_of(&answer);
        assert_eq!(body["error"]["type"], "invalid_request_error", "{method}");
        let allow =
            header_of(&answer, "allow").unwrap_or_else(|| panic!("{method}: no Allow: {answer}"));
        assert!(
            allow.contains("POST") && allow.contains("GET"),
            "{method}: {allow}"
        );
        assert!(
            world.tee.head_with_id(&format!("m-{method}")).is_none(),
            "{method} went upstream"
        );
    }
    let lines: [&[u8]; 14] = [
        b"G\x01T /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GE(T) /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"{\"json\":1} /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        b"GET /v1/models HTTP/1.1 extra\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /v1/models\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET  /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /v1/models HTTP/1.2\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /v1/models HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /v1/mo dels HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /v1/models\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET http://[::1/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"POST /v1/chat/completions HTTP/1.0\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ];
    let heads_before = world.tee.heads().len();
    for line in lines {
        let answer = raw(proxy, line.to_vec()).await;
        let status = status_of(&answer);
        assert_eq!(status, 400, "{:?}: {answer}", String::from_utf8_lossy(line));
    }
    let long_target = format!(
        "GET /v1/{} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let status = status_of(&raw(proxy, long_target.into_bytes()).await);
    assert_eq!(status, 431, "70 KB target");
    assert_eq!(
        world.tee.heads().len(),
        heads_before,
        "a malformed request went upstream"
    );
    world.assert_served().await;
    world.finish().await;
}

/// A body that stops arriving (fewer bytes than its Content-Length, an unfinished chunk, an
/// HTTP/2 stream left open) is answered 408 `request_body_timeout` once the body read timeout
/// (1 s here) passes, never forwarded; so is a body too large to hold (over 16 MiB), which
/// streams upstream as it arrives and stalls on the way. Others are served meanwhile.
#[tokio::test]
async fn stalled_bodies_get_408() {
    let world = start_world("openai-v1", false, Some(short_limits())).await;
    let proxy = world.proxy();
    let stalled: [(&str, &[u8]); 2] = [
        (
            "short body",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: short\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"model\": \"gpt-4o-mini\"",
        ),
        (
            "unfinished chunk",
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: chunk\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{\"model\": \"gpt",
        ),
    ];
    let started = Instant::now();
    let pending: Vec<_> = stalled
        .into_iter()
        .map(|(label, bytes)| {
            tokio::spawn(async move { (label, raw(proxy, bytes.to_vec()).await) })
        })
        .collect();
    world.assert_served().await;
    for task in pending {
        let (label, answer) = task.await.expect("client task");
        assert_refusal(&answer, 408, "request_body_timeout", label);
    }
    assert!(started.elapsed() < BOUND, "answered within the bound");

    let client = h2_connect(proxy).await;
    let request = http::Request::post(format!("http://{proxy}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-request-id", "h2-stalled")
        .body(())
        .expect("request");
    let mut ready = tokio::time::timeout(BOUND, client.clone().ready())
        .await
        .expect("ready in time")
        .expect("ready");
    let (response, mut stream) = ready.send_request(request, false).expect("sent");
    stream
        .send_data(Bytes::from_static(b"{\"model\": \"gpt"), false)
        .expect("part of the body");
    let response = tokio::time::timeout(BOUND, response)
        .await
        .expect("answered in time")
        .expect("answered");
    assert_eq!(response.status(), 408, "stalled HTTP/2 body");
    drop(stream);
    drop(client);
    for id in ["short", "chunk", "h2-stalled"] {
        assert!(world.tee.head_with_id(id).is_none(), "{id} went upstream");
    }

    // Streamed: 1 MiB of a declared 17 MB, then nothing.
    let mut streamed = b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: streamed\r\nContent-Type: application/json\r\nContent-Length: 17000000\r\n\r\n{\"model\": \"gpt-4o-mini\", \"x\": \"".to_vec();
    streamed.resize(streamed.len() + (1 << 20), b'a');
    let answer = raw(proxy, streamed).await;
    assert_refusal(&answer, 408, "request_body_timeout", "streamed body");
    assert!(
        world.tee.head_with_id("streamed").is_some(),
        "streamed upstream as it came"
    );
    world.assert_served().await;
    world.finish().await;
}

/// HTTP/2 rapid reset (CVE-2023-44487): a connection that opens streams and resets them at once,
/// thousands of times, is stopped (GOAWAY or closed) before its resets turn into as many
/// upstream requests; so is one that paces its resets so that each stream is accepted (and its
/// upstream request begun) before it is reset. Other clients are served meanwhile and after.
#[tokio::test]
async fn h2_rapid_reset_is_bounded() {
    let world = start_world("openai-v1", false, None).await;
    let proxy = world.proxy();
    const STREAMS: u32 = 2000;
    let mut burst = frames::PREFACE.to_vec();
    burst.extend(frames::frame(frames::SETTINGS, 0, 0, &[]));
    let block = frames::request("GET", "/v1/models");
    for i in 0..STREAMS {
        let id = 1 + 2 * i;
        burst.extend(frames::frame(
            frames::HEADERS,
            frames::END_STREAM | frames::END_HEADERS,
            id,
            &block,
        ));
        burst.extend(frames::rst(id, frames::CANCEL));
    }
    let socket = TcpStream::connect(proxy).await.expect("connect");
    let (mut reader, mut writer) = socket.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&burst).await;
        writer
    });
    let served = world.assert_served();
    let received = receive(&mut reader, BOUND, |r| r.goaway.is_some());
    let ((), received) = tokio::join!(served, received);
    writing.abort();
    drop(reader);
    let upstream = world.tee.heads().len();
    eprintln!("rapid reset: {received:?}; upstream requests: {upstream}");
    assert!(
        received.goaway.is_some() || received.closed,
        "the connection was not stopped: {received:?}"
    );
    assert!(
        upstream < (STREAMS / 10) as usize,
        "{upstream} upstream requests for {STREAMS} reset streams"
    );
    world.assert_served().await;

    // Paced: each stream is reset 2 ms after it opens, once the proxy has started on it and
    // before the (slowed) upstream has answered it: however fast the machine, each reset
    // abandons a request in flight.
    world.tee.slow_down(200);
    let heads_before = world.tee.heads().len();
    let socket = TcpStream::connect(proxy).await.expect("connect");
    let (mut reader, mut writer) = socket.into_split();
    let mut opening = frames::PREFACE.to_vec();
    opening.extend(frames::frame(frames::SETTINGS, 0, 0, &[]));
    writer.write_all(&opening).await.expect("preface");
    let reading =
        tokio::spawn(async move { receive(&mut reader, BOUND, |r| r.goaway.is_some()).await });
    let mut reset = 0;
    for i in 0..STREAMS {
        let id = 1 + 2 * i;
        let headers = frames::frame(
            frames::HEADERS,
            frames::END_STREAM | frames::END_HEADERS,
            id,
            &block,
        );
        if reading.is_finished() || writer.write_all(&headers).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        if writer
            .write_all(&frames::rst(id, frames::CANCEL))
            .await
            .is_err()
        {
            break;
        }
        reset += 1;
    }
    let received = tokio::time::timeout(BOUND, reading)
        .await
        .expect("ended in time")
        .expect("reader");
    drop(writer);
    let upstream = world.tee.heads().len() - heads_before;
    eprintln!("paced rapid reset: {reset} reset; {received:?}; upstream requests: {upstream}");
    assert!(
        received.closed || received.goaway.is_some(),
        "the paced connection was not stopped: {received:?}"
    );
    assert!(
        reset < STREAMS / 4,
        "{reset} streams reset before the connection was stopped"
    );
    assert!(
        upstream < 300,
        "{upstream} upstream requests for {reset} reset streams"
    );
    world.tee.slow_down(0);
    world.assert_served().await;
    world.finish().await;
}

/// HTTP/2 floods: 5000 SETTINGS frames, 5000 PING frames, and a header block continued forever
/// (CONTINUATION flood) are handled within bounds — answered and still usable, or stopped
/// (GOAWAY or closed) — and other clients are served meanwhile and after.
#[tokio::test]
async fn h2_floods_are_bounded() {
    let world = start_world("openai-v1", false, None).await;
    let proxy = world.proxy();

    for kind in ["SETTINGS", "PING"] {
        let mut flood = frames::PREFACE.to_vec();
        flood.extend(frames::frame(frames::SETTINGS, 0, 0, &[]));
        for i in 0u64..5_000 {
            match kind {
                "SETTINGS" => {
                    flood.extend(frames::frame(frames::SETTINGS, 0, 0, &[0, 4, 0, 1, 0, 0]))
                }
                _ => flood.extend(frames::frame(frames::PING, 0, 0, &i.to_be_bytes())),
            }
        }
        // Then a request on the same connection: a server that kept up answers it.
        flood.extend(frames::frame(
            frames::HEADERS,
            frames::END_STREAM | frames::END_HEADERS,
            1,
            &frames::request("GET", "/healthz"),
        ));
        let socket = TcpStream::connect(proxy).await.expect("connect");
        let (mut reader, mut writer) = socket.into_split();
        let writing = tokio::spawn(async move {
            let _ = writer.write_all(&flood).await;
            writer
        });
        let served = world.assert_served();
        let received = receive(&mut reader, BOUND, |r| {
            r.answered.contains(&1) || r.goaway.is_some()
        });
        let ((), received) = tokio::join!(served, received);
        writing.abort();
        eprintln!("{kind} flood: {received:?}");
        assert!(
            received.answered.contains(&1) || received.goaway.is_some() || received.closed,
            "{kind} flood: neither answered nor stopped within the bound: {received:?}"
        );
        if received.answered.contains(&1) {
            let acks = match kind {
                "SETTINGS" => received.settings_acks,
                _ => received.ping_acks,
            };
            assert!(
                acks > 0,
                "{kind} flood answered without acknowledgements: {received:?}"
            );
        }
    }

    // CONTINUATION flood: one header block that never ends, 16 KB at a time.
    let mut flood = frames::PREFACE.to_vec();
    flood.extend(frames::frame(frames::SETTINGS, 0, 0, &[]));
    flood.extend(frames::frame(
        frames::HEADERS,
        frames::END_STREAM,
        1,
        &frames::request("GET", "/v1/models"),
    ));
    let mut piece = Vec::new();
    while piece.len() < 16_000 {
        frames::field(&mut piece, "x-flood", &[b'a'; 100]);
    }
    for _ in 0..200 {
        flood.extend(frames::frame(frames::CONTINUATION, 0, 1, &piece));
    }
    let socket = TcpStream::connect(proxy).await.expect("connect");
    let (mut reader, mut writer) = socket.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&flood).await;
        writer
    });
    let served = world.assert_served();
    let received = receive(&mut reader, BOUND, |r| {
        r.goaway.is_some() || !r.resets.is_empty() || r.answered.contains(&1)
    });
    let ((), received) = tokio::join!(served, received);
    writing.abort();
    eprintln!("CONTINUATION flood: {received:?}");
    assert!(
        received.goaway.is_some()
            || received.closed
            || !received.resets.is_empty()
            || received.answered.contains(&1),
        "CONTINUATION flood not stopped: {received:?}"
    );
    assert!(
        world
            .tee
            .heads()
            .iter()
            .all(|h| h.header("x-flood").is_none()),
        "the flood went upstream"
    );

    world.assert_served().await;
    world.finish().await;
}

/// More streams than `http2_max_streams` (4 here): the server announces the limit, and refuses
/// the streams over it with RST_STREAM(REFUSED_STREAM) while the first ones stay open; other
/// clients are served meanwhile.
#[tokio::test]
async fn h2_streams_over_the_limit_are_refused() {
    let world = start_world("openai-v1", false, Some(short_limits())).await;
    let proxy = world.proxy();
    const OPENED: u32 = 12;
    let mut opening = frames::PREFACE.to_vec();
    opening.extend(frames::frame(frames::SETTINGS, 0, 0, &[]));
    let block = frames::request("POST", "/v1/chat/completions");
    for i in 0..OPENED {
        // No END_STREAM: each stream waits for a body that never comes.
        opening.extend(frames::frame(
            frames::HEADERS,
            frames::END_HEADERS,
            1 + 2 * i,
            &block,
        ));
    }
    let socket = TcpStream::connect(proxy).await.expect("connect");
    let (mut reader, mut writer) = socket.into_split();
    writer.write_all(&opening).await.expect("streams opened");
    let served = world.assert_served();
    let received = receive(&mut reader, BOUND, |r| {
        r.resets
            .iter()
            .filter(|(_, code)| *code == frames::REFUSED_STREAM)
            .count()
            >= (OPENED - 4) as usize
    });
    let ((), received) = tokio::join!(served, received);
    eprintln!("streams: {received:?}");
    assert_eq!(received.max_streams, Some(4), "{received:?}");
    let refused: Vec<u32> = received
        .resets
        .iter()
        .filter(|(_, code)| *code == frames::REFUSED_STREAM)
        .map(|(stream, _)| *stream)
        .collect();
    assert_eq!(refused.len(), (OPENED - 4) as usize, "{received:?}");
    assert!(
        refused.iter().all(|stream| *stream > 7),
        "a stream within the limit was refused: {received:?}"
    );
    drop(writer);
    drop(reader);
    world.assert_served().await;
    world.finish().await;
}
