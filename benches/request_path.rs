//! What the proxy adds, in process, to one request: `cargo bench --bench request_path`.
//!
//! A regression guard for the proxy's own request path, with no external peers and no
//! pass/fail threshold: it prints numbers to compare between commits (run it before and
//! after a change, on the same machine). The whole run takes 10-15 s after the build.
//!
//! Set-up, all on 127.0.0.1 and all on ONE current-thread tokio runtime (so every number is
//! the CPU of one thread plus loopback syscalls, and runs are steady):
//! - the built-in emulator, used only to issue the proxy's Entra token;
//! - an upstream stub: a bare hyper HTTP/1.1 server answering any request with a canned
//!   `chat.completion` JSON (~0.6 KB, `content-length`), or, when the body says
//!   `"stream":true`, a canned SSE stream (`text/event-stream`, chunked: 16 chunk events, a
//!   usage chunk and `[DONE]`; 100 content events more when the body says `"max_tokens":512`),
//!   so the upstream costs next to nothing;
//! - the real proxy (`foundry_proxy::server::serve`), `api: openai-v1`, endpoint = the stub:
//!   one without access keys, one with a keys file of 20 keys (the last one presented);
//! - a client: hyper HTTP/1.1 on one keep-alive connection, sending the same request either
//!   straight to the stub (`/openai/v1/chat/completions`, "direct") or to the proxy
//!   (`/v1/chat/completions`, "proxy"), reading each answer to its end.
//!
//! How to read the table (one row per case):
//! - `direct µs` / `proxy µs`: wall time per request, median over 11 batches of 1000 (direct
//!   and proxy batches alternate). `+proxy µs` = proxy − direct = the proxy's overhead: its
//!   own CPU (inbound HTTP parse, routing, request id, key check, body read and JSON look,
//!   token, outbound hyper client, usage scan of the answer, metrics, logs) plus the extra
//!   loopback hop's syscalls and task wake-ups. `+proxy best µs` = fastest proxy batch −
//!   fastest direct batch: less disturbed by other processes on a busy machine. `proxy
//!   spread` = (slowest − fastest batch) / median: above ~10% the machine was busy, and
//!   time differences smaller than the spread are noise.
//! - `allocs` / `KB`: heap allocations (alloc + realloc calls) and bytes requested per request,
//!   counted over a separate batch by a `#[global_allocator]` wrapper around the binary's
//!   allocator (mimalloc). They count the whole process (client and stub included, the same
//!   in both columns), so `+proxy` is what the proxy allocates per request. Nearly
//!   deterministic, whatever the load: a change of one allocation per request is real.
//! - Cases: `chat json` (no keys, no log subscriber); `chat sse` (the proxy also adds
//!   `stream_options.include_usage` and strips the usage chunk again); `sse +100 events` (the
//!   same stream, 100 content events longer) and `sse per event` (the difference / 100: what
//!   one more streamed event costs, the per-event guard; the stub writes the events back to
//!   back, so this is the burst shape, where several events may share a read); `json + 20 keys`
//!   (Bearer key checked against a keys file of 20); `json + limited key` (a key with
//!   per-minute limits, counted in the process) and `json + limited key, redis` (the same key
//!   counted in a local `redis-server` shared by replicas: one admission script, one round
//!   trip, per request); `json + budget + ledger` (a key with a
//!   daily token and a monthly dollar budget, checked before and charged after each answer,
//!   priced, on a proxy with `FOUNDRY_PROXY_USAGE_DB`: two events per request to the ledger's
//!   writer thread, which commits every second); `json + log text` / `json + log json`:
//!   an `info` subscriber like the binary's with piped output (`EnvFilter`, no ANSI,
//!   `telemetry::TextFields` or flattened JSON) writing to `io::sink`, so the cost of
//!   formatting the per-request log line shows, but no I/O. The first three rows run with NO
//!   tracing subscriber installed (every event is disabled at its call site): the floor. The
//!   log rows are what a deployment pays. `json, 2 upstreams`: the proxy with two
//!   `[[upstream]]` tables (both the stub) and targets for the model: the pool's path, with
//!   target selection and health look-ups on every request. `ws echo`: a realtime WebSocket
//!   (`/v1/realtime`), one ~200-byte text event sent and echoed back by the stub, per round
//!   trip (the proxy relays two frames: its meter looks at both); `ws per frame` is half of it,
//!   the WebSocket counterpart of `sse per event`.
//! - Below the table, micro-measurements of single steps (formerly
//!   `examples/request_path_cost.rs`): the key check among 20 keys, one metrics record
//!   (request + usage), and one `record_request` alone over four models and the latency
//!   buckets (formerly a unit test that printed it).
//!
//! Profiling mode (for `valgrind --tool=callgrind`, built with `--profile profiling` for
//! symbols): `request_path --only proxy:json --requests 3000` runs the set-up, then only
//! that loop (`direct|proxy` : `json|sse|sse-long|keys|pool|ws`; add `--log text|json` for a log subscriber),
//! and prints nothing else. Compare the instruction totals of `direct:…` and `proxy:…` runs;
//! `--requests 0` gives the set-up cost.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use foundry_proxy::config::Settings;
use foundry_proxy::emulator::{self, EmulatorConfig, identities as world};
use foundry_proxy::keys::{KeyRing, Limits, file::add_key};
use foundry_proxy::metrics::{Metrics, RequestRecord};
use foundry_proxy::secret::Secret;
use foundry_proxy::server::{self, ServeOptions};
use futures_util::{SinkExt, StreamExt};
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, USER_AGENT};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use mimalloc::MiMalloc;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------
// Allocation counting.

/// The binary's allocator (mimalloc, see `src/main.rs`), counting allocations while
/// [`COUNTING`] is set.
struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

#[inline]
fn note_allocation(bytes: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to mimalloc unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        unsafe { MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A realloc is an allocator call; its bytes are the growth.
        note_allocation(new_size.saturating_sub(layout.size()));
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

// ---------------------------------------------------------------------------------------
// The upstream stub.

/// Answers, built once.
struct Canned {
    json: Bytes,
    sse: Vec<Bytes>,
    /// `sse` with [`EXTRA_EVENTS`] more content events: the difference is the cost per event.
    long_sse: Vec<Bytes>,
}

/// How many more content events the long stream has than the short one.
const EXTRA_EVENTS: usize = 100;

/// In a request body, asks the stub for the long stream.
const LONG_MARKER: &[u8] = b"\"max_tokens\":512";

const MODEL: &str = "gpt-4o-mini";

fn canned() -> &'static Canned {
    let json = format!(
        concat!(
            r#"{{"id":"chatcmpl-BENCH0123456789abcdefghij","object":"chat.completion","#,
            r#""created":1735689600,"model":"{model}-2024-07-18","choices":[{{"index":0,"#,
            r#""message":{{"role":"assistant","content":"Hello! The quick brown fox jumps "#,
            r#"over the lazy dog; how can I help you today?","refusal":null,"annotations":[]}},"#,
            r#""logprobs":null,"finish_reason":"stop"}}],"usage":{{"prompt_tokens":12,"#,
            r#""completion_tokens":18,"total_tokens":30,"prompt_tokens_details":{{"#,
            r#""cached_tokens":0,"audio_tokens":0}},"completion_tokens_details":{{"#,
            r#""reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"#,
            r#""rejected_prediction_tokens":0}}}},"system_fingerprint":"fp_0123456789","#,
            r#""prompt_filter_results":[{{"prompt_index":0,"content_filter_results":{{}}}}]}}"#
        ),
        model = MODEL
    );
    let chunk = |delta: &str, finish: &str| {
        format!(
            concat!(
                r#"data: {{"id":"chatcmpl-BENCH0123456789abcdefghij","#,
                r#""object":"chat.completion.chunk","created":1735689600,"#,
                r#""model":"{model}-2024-07-18","system_fingerprint":"fp_0123456789","#,
                r#""choices":[{{"index":0,"delta":{delta},"logprobs":null,"#,
                r#""finish_reason":{finish}}}],"usage":null}}"#,
                "\n\n"
            ),
            model = MODEL,
            delta = delta,
            finish = finish
        )
    };
    let mut sse = vec![chunk(r#"{"role":"assistant","content":""}"#, "null")];
    for word in [
        "Hello", "!", " The", " quick", " brown", " fox", " jumps", " over", " the", " lazy",
        " dog", ";", " how", " can",
    ] {
        sse.push(chunk(&format!(r#"{{"content":"{word}"}}"#), "null"));
    }
    let mut long_sse = sse.clone();
    for i in 0..EXTRA_EVENTS {
        long_sse.push(chunk(&format!(r#"{{"content":" word{i}"}}"#), "null"));
    }
    for events in [&mut sse, &mut long_sse] {
        events.push(chunk("{}", r#""stop""#));
    }
    let usage = format!(
        concat!(
            r#"data: {{"id":"chatcmpl-BENCH0123456789abcdefghij","#,
            r#""object":"chat.completion.chunk","created":1735689600,"#,
            r#""model":"{model}-2024-07-18","system_fingerprint":"fp_0123456789","#,
            r#""choices":[],"usage":{{"prompt_tokens":12,"completion_tokens":14,"#,
            r#""total_tokens":26}}}}"#,
            "\n\n"
        ),
        model = MODEL
    );
    for events in [&mut sse, &mut long_sse] {
        events.push(usage.clone());
        events.push("data: [DONE]\n\n".to_owned());
    }
    let leak = |s: String| Bytes::from_static(Box::leak(s.into_boxed_str()).as_bytes());
    Box::leak(Box::new(Canned {
        json: leak(json),
        sse: sse.into_iter().map(leak).collect(),
        long_sse: long_sse.into_iter().map(leak).collect(),
    }))
}

/// The stub's answer body: one JSON frame with an exact size (`content-length`), or SSE
/// events one frame each (chunked).
enum Reply {
    Json(Option<Bytes>),
    Sse(&'static [Bytes]),
}

impl http_body::Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let next = match self.get_mut() {
            Reply::Json(body) => body.take(),
            Reply::Sse(events) => events.split_first().map(|(first, rest)| {
                *events = rest;
                first.clone()
            }),
        };
        Poll::Ready(next.map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Reply::Json(body) => body.is_none(),
            Reply::Sse(events) => events.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Reply::Json(body) => SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64)),
            Reply::Sse(_) => SizeHint::default(),
        }
    }
}

async fn stub_answer(
    mut request: Request<Incoming>,
    canned: &'static Canned,
) -> Result<Response<Reply>, Infallible> {
    if let Some(accept) = request
        .headers()
        .get("sec-websocket-key")
        .map(|key| derive_accept_key(key.as_bytes()))
    {
        let upgrade = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                echo_socket(TokioIo::new(upgraded)).await;
            }
        });
        let response = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(http::header::CONNECTION, "upgrade")
            .header(http::header::UPGRADE, "websocket")
            .header(http::header::SEC_WEBSOCKET_ACCEPT, accept)
            .body(Reply::Json(None));
        return Ok(response.expect("valid response"));
    }
    let body = request
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    const STREAM: &[u8] = b"\"stream\":true";
    let stream = body.windows(STREAM.len()).any(|w| w == STREAM);
    let builder = Response::builder()
        .header("apim-request-id", "3b0c9a4e-7f1d-4e2a-9c6b-5d8e0f1a2b3c")
        .header("x-request-id", "8d2f6a1c-4b3e-4f5a-8c7d-9e0f1a2b3c4d")
        .header("x-ms-region", "Sweden Central")
        .header("x-ratelimit-remaining-requests", "9999")
        .header("x-ratelimit-remaining-tokens", "1999970")
        .header("x-content-type-options", "nosniff")
        .header(
            "strict-transport-security",
            "max-age=31536000; includeSubDomains",
        );
    let response = if stream {
        let long = body.windows(LONG_MARKER.len()).any(|w| w == LONG_MARKER);
        builder
            .header(CONTENT_TYPE, "text/event-stream; charset=utf-8")
            .body(Reply::Sse(if long {
                &canned.long_sse
            } else {
                &canned.sse
            }))
    } else {
        builder
            .header(CONTENT_TYPE, "application/json")
            .body(Reply::Json(Some(canned.json.clone())))
    };
    Ok(response.expect("valid response"))
}

/// The bench's own sockets (client and stub) with the proxy's buffer sizes: tungstenite zeroes
/// its whole read buffer (128 KiB by default) before every read, which would otherwise be most
/// of the direct path's cost.
fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024)
}

/// The stub's WebSocket side: every text or binary message is sent back as it came.
async fn echo_socket<S>(io: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut socket =
        WebSocketStream::from_raw_socket(io, Role::Server, Some(socket_config())).await;
    while let Some(Ok(message)) = socket.next().await {
        let echoed = match message {
            Message::Text(_) | Message::Binary(_) => socket.send(message).await.is_ok(),
            Message::Close(_) => false,
            _ => true,
        };
        if !echoed {
            return;
        }
    }
}

async fn run_stub(listener: TcpListener, canned: &'static Canned) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request| stub_answer(request, canned));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

// ---------------------------------------------------------------------------------------
// The client.

/// One keep-alive HTTP/1.1 connection and the request it repeats.
struct Client {
    addr: SocketAddr,
    sender: SendRequest<Full<Bytes>>,
    host: HeaderValue,
    path: &'static str,
    authorization: HeaderValue,
}

impl Client {
    async fn connect(addr: SocketAddr, path: &'static str, authorization: &str) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        Self {
            addr,
            sender,
            host: HeaderValue::from_str(&addr.to_string()).expect("host"),
            path,
            authorization: HeaderValue::from_str(authorization).expect("authorization"),
        }
    }

    /// Sends `body` as an SDK would, reads the whole answer.
    async fn send(&mut self, path: &str, body: &Bytes) -> (StatusCode, Bytes) {
        let request = Request::post(path)
            .header(HOST, self.host.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json")
            .header(USER_AGENT, "OpenAI/Python 1.99.9")
            .header(AUTHORIZATION, self.authorization.clone())
            .header("x-stainless-lang", "python")
            .header("x-stainless-retry-count", "0")
            .body(Full::new(body.clone()))
            .expect("request");
        if self.sender.is_closed() {
            // The proxy closes a keep-alive connection idle for its header read timeout (15 s:
            // hyper's timer for the next request's head starts when the previous answer ends);
            // on a busy machine the rows before a client's own can take that long.
            self.sender = Client::connect(self.addr, self.path, "").await.sender;
        }
        self.sender.ready().await.expect("connection open");
        let response = self.sender.send_request(request).await.expect("an answer");
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("whole body")
            .to_bytes();
        (status, bytes)
    }

    /// One measured request: the answer must be a 200.
    async fn call(&mut self, body: &Bytes) -> usize {
        let (status, bytes) = self.send(self.path, body).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        bytes.len()
    }
}

/// A WebSocket client (realtime), straight to the stub or through the proxy, sending one
/// text event at a time and reading its echo.
struct Socket {
    socket: WebSocketStream<TcpStream>,
    event: Message,
}

impl Socket {
    async fn connect(addr: SocketAddr, path: &str) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let url = format!("ws://{addr}{path}");
        let (socket, _) = tokio_tungstenite::client_async_with_config(
            url.as_str(),
            stream,
            Some(socket_config()),
        )
        .await
        .expect("WebSocket handshake");
        // A realtime text delta, as Azure sends them (~200 bytes).
        let event = Message::text(concat!(
            r#"{"type":"response.output_text.delta","event_id":"event_BENCH0123456789","#,
            r#""response_id":"resp_BENCH0123456789","item_id":"item_BENCH0123456789","#,
            r#""output_index":0,"content_index":0,"delta":" quick"}"#
        ));
        Self { socket, event }
    }

    /// One event out and its echo back: two frames relayed through the proxy.
    async fn echo(&mut self) -> usize {
        self.socket.send(self.event.clone()).await.expect("send");
        loop {
            match self.socket.next().await {
                Some(Ok(Message::Text(text))) => return text.len(),
                Some(Ok(_)) => {}
                other => panic!("no echo: {other:?}"),
            }
        }
    }
}

async fn timed_echoes(socket: &mut Socket, n: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(socket.echo().await);
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

async fn counted_echoes(socket: &mut Socket, n: usize) -> (f64, f64) {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    ALLOCATED_BYTES.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for _ in 0..n {
        std::hint::black_box(socket.echo().await);
    }
    COUNTING.store(false, Ordering::Relaxed);
    let count = ALLOCATIONS.load(Ordering::Relaxed) as f64;
    let bytes = ALLOCATED_BYTES.load(Ordering::Relaxed) as f64;
    (count / n as f64, bytes / n as f64)
}

/// [`measure`] for WebSocket echoes: per round trip (one frame each way).
async fn measure_echoes(direct: &mut Socket, proxy: &mut Socket) -> (Side, Side) {
    for _ in 0..PLAN.warmup {
        direct.echo().await;
        proxy.echo().await;
    }
    let (mut d, mut p) = (Side::default(), Side::default());
    for _ in 0..PLAN.batches {
        d.ns.push(timed_echoes(direct, PLAN.per_batch).await);
        p.ns.push(timed_echoes(proxy, PLAN.per_batch).await);
    }
    (d.allocs, d.bytes) = counted_echoes(direct, PLAN.counted).await;
    (p.allocs, p.bytes) = counted_echoes(proxy, PLAN.counted).await;
    (d, p)
}

/// Half of an echo's cost: one frame relayed one way.
fn per_frame(echo: &Side) -> Side {
    Side {
        ns: echo.ns.iter().map(|ns| ns / 2.0).collect(),
        allocs: echo.allocs / 2.0,
        bytes: echo.bytes / 2.0,
    }
}

// ---------------------------------------------------------------------------------------
// The proxy.

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("foundry-proxy-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Two `[[upstream]]` tables (both the stub), equal priority, and targets for [`MODEL`]: the
/// pool's path (target selection, health look-ups) on every request.
fn two_upstreams(stub: SocketAddr) -> Settings {
    toml::from_str(&format!(
        r#"
[[upstream]]
name = "one"
endpoint = "http://{stub}"
api = "openai-v1"
[[upstream]]
name = "two"
endpoint = "http://{stub}"
api = "openai-v1"
[models."{MODEL}"]
targets = [ {{ upstream = "one", deployment = "{MODEL}" }}, {{ upstream = "two", deployment = "{MODEL}" }} ]
"#
    ))
    .expect("upstreams")
}

/// Starts a proxy with the demo app's credential (token from `emulator`), forwarding to `stub`
/// (through two `[[upstream]]` tables when `pool`).
async fn start_proxy(
    emulator: &str,
    stub: SocketAddr,
    keys_file: Option<PathBuf>,
    usage_db: Option<PathBuf>,
    pool: bool,
    redis: Option<&str>,
    shutdown: &CancellationToken,
) -> SocketAddr {
    let prices = usage_db.as_ref().map(|_| {
        let price = foundry_proxy::config::Price {
            input_per_million: 2.5,
            output_per_million: 10.0,
            cached_input_per_million: None,
        };
        [("gpt-4o-mini".to_owned(), price)].into_iter().collect()
    });
    let upstreams = if pool {
        two_upstreams(stub)
    } else {
        Settings::default()
    };
    let settings = Settings {
        upstream: upstreams.upstream,
        models: upstreams.models,
        tenant_id: Some(world::TENANT_ID.into()),
        client_id: Some(world::CLIENT_ID.into()),
        client_secret: Some(Secret::new(world::CLIENT_SECRET)),
        authority_host: Some(emulator.into()),
        endpoint: Some(format!("http://{stub}")),
        api: Some("openai-v1".into()),
        keys_file,
        usage_db,
        prices,
        redis_url: redis.map(Secret::new),
        ..Settings::default()
    };
    let config = settings
        .validate(&BTreeMap::<String, String>::new())
        .expect("valid config");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server::serve(
        config,
        listener,
        shutdown.clone(),
        ServeOptions::default(),
    ));
    addr
}

/// Waits (bounded) until the proxy holds a token.
async fn wait_ready(proxy: SocketAddr) {
    let mut client = Client::connect(proxy, "/readyz", "Bearer none").await;
    for _ in 0..400 {
        let request = Request::get("/readyz")
            .header(HOST, client.host.clone())
            .body(Full::new(Bytes::new()))
            .expect("request");
        client.sender.ready().await.expect("open");
        let response = client.sender.send_request(request).await.expect("answer");
        let ok = response.status() == StatusCode::OK;
        let _ = response.into_body().collect().await;
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("proxy not ready within 10 s");
}

// ---------------------------------------------------------------------------------------
// Measuring.

/// How much to run per case.
struct Plan {
    warmup: usize,
    batches: usize,
    per_batch: usize,
    counted: usize,
}

const PLAN: Plan = Plan {
    warmup: 300,
    batches: 11,
    per_batch: 1000,
    counted: 500,
};

/// One side (direct or proxy) of a case.
#[derive(Default)]
struct Side {
    /// Per-batch ns per request.
    ns: Vec<f64>,
    allocs: f64,
    bytes: f64,
}

impl Side {
    fn median(&self) -> f64 {
        let mut sorted = self.ns.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    fn min(&self) -> f64 {
        self.ns.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// (max − min) / median.
    fn spread_percent(&self) -> f64 {
        let max = self.ns.iter().copied().fold(0.0, f64::max);
        (max - self.min()) / self.median() * 100.0
    }
}

/// What one more streamed event costs: (long stream − short stream) / [`EXTRA_EVENTS`], batch by
/// batch for the times.
fn per_event(short: &Side, long: &Side) -> Side {
    let n = EXTRA_EVENTS as f64;
    Side {
        ns: short
            .ns
            .iter()
            .zip(&long.ns)
            .map(|(s, l)| (l - s) / n)
            .collect(),
        allocs: (long.allocs - short.allocs) / n,
        bytes: (long.bytes - short.bytes) / n,
    }
}

async fn timed_batch(client: &mut Client, body: &Bytes, n: usize) -> f64 {
    let started = Instant::now();
    for _ in 0..n {
        std::hint::black_box(client.call(body).await);
    }
    started.elapsed().as_nanos() as f64 / n as f64
}

async fn counted_batch(client: &mut Client, body: &Bytes, n: usize) -> (f64, f64) {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    ALLOCATED_BYTES.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    for _ in 0..n {
        std::hint::black_box(client.call(body).await);
    }
    COUNTING.store(false, Ordering::Relaxed);
    let count = ALLOCATIONS.load(Ordering::Relaxed) as f64;
    let bytes = ALLOCATED_BYTES.load(Ordering::Relaxed) as f64;
    (count / n as f64, bytes / n as f64)
}

async fn measure(direct: &mut Client, proxy: &mut Client, body: &Bytes) -> (Side, Side) {
    for _ in 0..PLAN.warmup {
        direct.call(body).await;
        proxy.call(body).await;
    }
    let (mut d, mut p) = (Side::default(), Side::default());
    for _ in 0..PLAN.batches {
        d.ns.push(timed_batch(direct, body, PLAN.per_batch).await);
        p.ns.push(timed_batch(proxy, body, PLAN.per_batch).await);
    }
    (d.allocs, d.bytes) = counted_batch(direct, body, PLAN.counted).await;
    (p.allocs, p.bytes) = counted_batch(proxy, body, PLAN.counted).await;
    (d, p)
}

fn print_header() {
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>6} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6}",
        "",
        "direct",
        "proxy",
        "+proxy",
        "+proxy",
        "proxy",
        "allocs",
        "allocs",
        "allocs",
        "KB",
        "KB",
        "KB"
    );
    println!(
        "{:<16} {:>9} {:>9} {:>9} {:>9} {:>6} | {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6}",
        "case",
        "µs",
        "µs",
        "µs",
        "best µs",
        "spread",
        "direct",
        "proxy",
        "+proxy",
        "direct",
        "proxy",
        "+proxy"
    );
}

fn print_row(name: &str, d: &Side, p: &Side) {
    let (dm, pm) = (d.median() / 1000.0, p.median() / 1000.0);
    println!(
        "{:<16} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>5.0}% | {:>6.1} {:>6.1} {:>6.1} | {:>6.2} {:>6.2} {:>6.2}",
        name,
        dm,
        pm,
        pm - dm,
        (p.min() - d.min()) / 1000.0,
        p.spread_percent(),
        d.allocs,
        p.allocs,
        p.allocs - d.allocs,
        d.bytes / 1024.0,
        p.bytes / 1024.0,
        (p.bytes - d.bytes) / 1024.0,
    );
}

// ---------------------------------------------------------------------------------------
// Micro-measurements of single steps (formerly examples/request_path_cost.rs).

fn sha256_hex(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn micro() {
    let mut text = String::new();
    let mut last_key = String::new();
    for i in 0..20 {
        let key = format!("fpk-example-key-number-{i:02}-0123456789abcdefghijklmnop");
        let digest = sha256_hex(&key);
        text.push_str(&format!(
            "[[key]]\nname = \"user{i}\"\nsha256 = \"{digest}\"\n"
        ));
        last_key = key;
    }
    let ring = KeyRing::parse(&text).expect("keys");
    let rounds = 100_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        assert!(ring.authenticate(std::hint::black_box(&last_key)).is_some());
    }
    let per_key = started.elapsed() / rounds;

    let metrics = Metrics::new();
    let started = Instant::now();
    for i in 0..rounds {
        metrics.record_request(&RequestRecord {
            route: "chat/completions",
            status: 200,
            model: if i % 2 == 0 {
                "gpt-4o-mini"
            } else {
                "text-embedding-3-small"
            },
            key: "user19",
            upstream_latency: Some(Duration::from_millis(3)),
        });
        metrics.record_usage("user19", "gpt-4o-mini", 12, 30);
    }
    let per_record = started.elapsed() / rounds;

    // `record_request` alone once its label sets exist, over four models and latencies spread
    // across the histogram's buckets.
    let metrics = Metrics::new();
    let models = ["gpt-4o", "gpt-4o-mini", "o3", "text-embedding-3-large"];
    let calls = 200_000u32;
    let started = Instant::now();
    for i in 0..calls {
        metrics.record_request(&RequestRecord {
            route: "chat/completions",
            status: 200,
            model: models[(i % 4) as usize],
            key: "alice",
            upstream_latency: Some(Duration::from_millis(u64::from(i % 3000))),
        });
    }
    let per_request = started.elapsed() / calls;
    // Target selection with two upstreams: the plan (priority order, weighted shuffle) and
    // the health look-up of each candidate, as the pool's request path does them.
    let config = Settings {
        tenant_id: Some(world::TENANT_ID.into()),
        client_id: Some(world::CLIENT_ID.into()),
        client_secret: Some(Secret::new(world::CLIENT_SECRET)),
        ..two_upstreams("127.0.0.1:9".parse().expect("addr"))
    }
    .validate(&BTreeMap::<String, String>::new())
    .expect("config");
    let cell = foundry_proxy::token::TokenCell::new(Default::default(), "client-secret");
    let pool = foundry_proxy::pool::Pool::from_config(&config, |_| std::sync::Arc::clone(&cell))
        .expect("pool");
    let started = Instant::now();
    for _ in 0..rounds {
        let plan = pool.plan(std::hint::black_box(Some(MODEL)));
        let now = tokio::time::Instant::now();
        let first = plan
            .iter()
            .find(|c| pool.resting(c, Some(MODEL), now).is_none());
        std::hint::black_box(first);
    }
    let per_plan = started.elapsed() / rounds;
    println!("step: key check among 20 keys           {per_key:>10.2?} per request");
    println!("step: target selection, 2 upstreams     {per_plan:>10.2?} per request");
    println!("step: metrics (request + usage record)  {per_record:>10.2?} per request");
    println!("step: metrics record_request, 4 models  {per_request:>10.2?} per request");
}

// ---------------------------------------------------------------------------------------

/// `--only direct|proxy:json|sse|sse-long|keys|pool|ws`, `--requests N` and `--log text|json` (profiling
/// mode); other arguments (cargo passes `--bench`) are ignored.
struct Args {
    only: Option<(String, String)>,
    requests: usize,
    log: Option<String>,
}

fn args() -> Args {
    let mut args = Args {
        only: None,
        requests: 3000,
        log: None,
    };
    let mut given = std::env::args().skip(1);
    while let Some(arg) = given.next() {
        match arg.as_str() {
            "--only" => {
                let value = given.next().expect("--only side:case");
                let (side, case) = value.split_once(':').expect("--only side:case");
                args.only = Some((side.to_owned(), case.to_owned()));
            }
            "--log" => args.log = Some(given.next().expect("--log text|json")),
            "--requests" => {
                args.requests = given
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--requests N");
            }
            _ => {}
        }
    }
    args
}

/// An `info` subscriber like the binary's with piped output (`telemetry::init`: no ANSI, no
/// target), `text` or `json`, writing to `io::sink`.
fn log_subscriber(format: &str) -> tracing::Dispatch {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::sink);
    match format {
        "text" => tracing::Dispatch::new(
            builder
                .fmt_fields(foundry_proxy::telemetry::TextFields)
                .finish(),
        ),
        "json" => tracing::Dispatch::new(builder.json().flatten_event(true).finish()),
        other => panic!("--log {other:?}: use text|json"),
    }
}

/// A chat request; `max_tokens` 512 asks the stub for the long stream ([`LONG_MARKER`]).
fn chat_body(stream: bool, max_tokens: u32) -> Bytes {
    let stream = if stream { r#""stream":true,"# } else { "" };
    Bytes::from(format!(
        concat!(
            r#"{{"model":"{model}",{stream}"messages":[{{"role":"system","content":"You are "#,
            r#"a helpful assistant."}},{{"role":"user","content":"Say hello and finish the "#,
            r#"pangram about the fox."}}],"temperature":0.2,"max_tokens":{max_tokens}}}"#
        ),
        model = MODEL,
        stream = stream,
        max_tokens = max_tokens
    ))
}

fn main() {
    let args = args();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(run(args));
}

async fn run(args: Args) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let canned = canned();
    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    let stub_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let stub = stub_listener.local_addr().expect("addr");
    tokio::spawn(run_stub(stub_listener, canned));

    let dir = temp_dir();
    let keys_path = dir.join("keys.toml");
    let mut key = String::new();
    for i in 0..20 {
        key = add_key(&keys_path, &format!("user{i:02}"), Limits::default()).expect("key");
    }
    let shutdown = CancellationToken::new();
    let url = emulator.url();
    // A key with budgets (never reached) on a proxy with the usage ledger: the cost of checking
    // and charging the budgets and of sending each request's events to the ledger's writer.
    let budget_path = dir.join("budget-keys.toml");
    let mut budgeted = foundry_proxy::keys::KeyEntry::new("budgeted", Limits::default());
    budgeted.rules = foundry_proxy::keys::Rules {
        tokens_per_day: Some(u64::MAX / 4),
        usd_per_month: Some(1e12),
        ..foundry_proxy::keys::Rules::default()
    };
    let budget_key = foundry_proxy::keys::add_entry(&budget_path, &budgeted).expect("budgeted key");
    let plain = start_proxy(&url, stub, None, None, false, None, &shutdown).await;
    let keyed = start_proxy(&url, stub, Some(keys_path), None, false, None, &shutdown).await;
    let ledgered = start_proxy(
        &url,
        stub,
        Some(budget_path),
        Some(dir.join("usage.db")),
        false,
        None,
        &shutdown,
    )
    .await;
    wait_ready(plain).await;
    wait_ready(keyed).await;
    wait_ready(ledgered).await;
    let pooled = start_proxy(&url, stub, None, None, true, None, &shutdown).await;
    // A key with a per-minute limit (never reached), counted in this process or in Redis.
    let limited_path = dir.join("limited-keys.toml");
    let limited_key = add_key(
        &limited_path,
        "limited",
        Limits {
            requests_per_minute: Some(u32::MAX),
            tokens_per_minute: Some(u64::MAX / 4),
        },
    )
    .expect("limited key");
    let local_limited = start_proxy(
        &url,
        stub,
        Some(limited_path.clone()),
        None,
        false,
        None,
        &shutdown,
    )
    .await;
    wait_ready(local_limited).await;
    let redis = RedisServer::start(&dir);
    let redis_limited = match &redis {
        Some(redis) => {
            let proxy = start_proxy(
                &url,
                stub,
                Some(limited_path),
                None,
                false,
                Some(&redis.url()),
                &shutdown,
            )
            .await;
            wait_ready(proxy).await;
            Some(proxy)
        }
        None => None,
    };
    wait_ready(pooled).await;

    let anonymous = "Bearer sk-unused-by-the-proxy-0123456789";
    let keyed_auth = format!("Bearer {key}");
    const UPSTREAM: &str = "/openai/v1/chat/completions";
    const PROXY: &str = "/v1/chat/completions";
    let mut direct = Client::connect(stub, UPSTREAM, anonymous).await;
    let mut direct_keyed = Client::connect(stub, UPSTREAM, &keyed_auth).await;
    let mut via_plain = Client::connect(plain, PROXY, anonymous).await;
    let mut via_keyed = Client::connect(keyed, PROXY, &keyed_auth).await;
    let budget_auth = format!("Bearer {budget_key}");
    let mut direct_budget = Client::connect(stub, UPSTREAM, &budget_auth).await;
    let mut via_ledgered = Client::connect(ledgered, PROXY, &budget_auth).await;
    let mut via_pool = Client::connect(pooled, PROXY, anonymous).await;
    let limited_auth = format!("Bearer {limited_key}");
    let mut direct_limited = Client::connect(stub, UPSTREAM, &limited_auth).await;
    let mut via_local_limited = Client::connect(local_limited, PROXY, &limited_auth).await;
    let mut via_redis_limited = match redis_limited {
        Some(proxy) => Some(Client::connect(proxy, PROXY, &limited_auth).await),
        None => None,
    };
    let json = chat_body(false, 64);
    let sse = chat_body(true, 64);
    let long_sse = chat_body(true, 512);

    // The proxy must pass answers through unchanged (less the usage chunk it asked for).
    let (_, direct_json) = direct.send(UPSTREAM, &json).await;
    let (status, proxied_json) = via_plain.send(PROXY, &json).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(direct_json, proxied_json, "JSON answers pass unchanged");
    let (status, proxied_sse) = via_plain.send(PROXY, &sse).await;
    let proxied_sse = String::from_utf8_lossy(&proxied_sse);
    assert_eq!(status, StatusCode::OK, "{proxied_sse}");
    assert_eq!(
        proxied_sse.matches("data: ").count(),
        canned.sse.len() - 1,
        "{proxied_sse}"
    );
    assert!(proxied_sse.ends_with("data: [DONE]\n\n") && !proxied_sse.contains("\"total_tokens\""));
    let (status, proxied_long) = via_plain.send(PROXY, &long_sse).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&proxied_long)
            .matches("data: ")
            .count(),
        canned.long_sse.len() - 1
    );
    let (status, _) = via_keyed.send(PROXY, &json).await;
    assert_eq!(status, StatusCode::OK, "the key is accepted");
    let (status, _) = via_ledgered.send(PROXY, &json).await;
    assert_eq!(status, StatusCode::OK, "the budgeted key is accepted");
    let (status, pooled_json) = via_pool.send(PROXY, &json).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        direct_json, pooled_json,
        "the pool passes answers unchanged"
    );

    const REALTIME: &str = "/v1/realtime?model=gpt-4o-mini";
    const UPSTREAM_REALTIME: &str = "/openai/v1/realtime?model=gpt-4o-mini";
    if let Some((side, "ws")) = args.only.as_ref().map(|(s, c)| (s.as_str(), c.as_str())) {
        let mut socket = match side {
            "direct" => Socket::connect(stub, UPSTREAM_REALTIME).await,
            "proxy" => Socket::connect(plain, REALTIME).await,
            other => panic!("--only {other}:ws: use direct|proxy"),
        };
        for _ in 0..args.requests {
            std::hint::black_box(socket.echo().await);
        }
        return;
    }
    if let Some((side, case)) = args.only {
        let (client, body) = match (side.as_str(), case.as_str()) {
            ("direct", "json") => (&mut direct, &json),
            ("direct", "sse") => (&mut direct, &sse),
            ("direct", "keys") => (&mut direct_keyed, &json),
            ("proxy", "json") => (&mut via_plain, &json),
            ("proxy", "sse") => (&mut via_plain, &sse),
            ("direct", "sse-long") => (&mut direct, &long_sse),
            ("proxy", "sse-long") => (&mut via_plain, &long_sse),
            ("proxy", "keys") => (&mut via_keyed, &json),
            ("proxy", "pool") => (&mut via_pool, &json),
            other => panic!("--only {other:?}: use direct|proxy:json|sse|sse-long|keys|pool|ws"),
        };
        let _guard = args
            .log
            .as_deref()
            .map(|format| tracing::dispatcher::set_default(&log_subscriber(format)));
        for _ in 0..args.requests {
            std::hint::black_box(client.call(body).await);
        }
        return;
    }

    println!(
        "foundry-proxy request path, in process: one current-thread runtime (client, proxy, \
         upstream stub); per request, median of {} batches x {} (allocations: {} more)",
        PLAN.batches, PLAN.per_batch, PLAN.counted
    );
    print_header();
    let (d, p) = measure(&mut direct, &mut via_plain, &json).await;
    print_row("chat json", &d, &p);
    let (d, p) = measure(&mut direct, &mut via_plain, &sse).await;
    print_row("chat sse", &d, &p);
    let (long_d, long_p) = measure(&mut direct, &mut via_plain, &long_sse).await;
    print_row(&format!("sse +{EXTRA_EVENTS} events"), &long_d, &long_p);
    print_row(
        "sse per event",
        &per_event(&d, &long_d),
        &per_event(&p, &long_p),
    );
    let (d, p) = measure(&mut direct_keyed, &mut via_keyed, &json).await;
    print_row("json + 20 keys", &d, &p);
    let (d, p) = measure(&mut direct_budget, &mut via_ledgered, &json).await;
    print_row("json + budget + ledger", &d, &p);
    let (d, p) = measure(&mut direct, &mut via_pool, &json).await;
    print_row("json, 2 upstreams", &d, &p);
    let (d, p) = measure(&mut direct_limited, &mut via_local_limited, &json).await;
    print_row("json + limited key", &d, &p);
    match via_redis_limited.as_mut() {
        Some(via_redis) => {
            let (status, _) = via_redis.send(PROXY, &json).await;
            assert_eq!(status, StatusCode::OK, "the Redis-limited key is accepted");
            let (d, p) = measure(&mut direct_limited, via_redis, &json).await;
            print_row("json + limited key, redis", &d, &p);
        }
        None => println!(
            "json + limited key, redis: skipped (no redis-server: install Debian's redis-server or set FOUNDRY_PROXY_REDIS_SERVER)"
        ),
    }
    let mut direct_socket = Socket::connect(stub, UPSTREAM_REALTIME).await;
    let mut via_socket = Socket::connect(plain, REALTIME).await;
    let (d, p) = measure_echoes(&mut direct_socket, &mut via_socket).await;
    print_row("ws echo", &d, &p);
    print_row("ws per frame", &per_frame(&d), &per_frame(&p));
    // Log subscribers last: once one has been installed, call sites stay registered.
    for format in ["text", "json"] {
        let _guard = tracing::dispatcher::set_default(&log_subscriber(format));
        let (d, p) = measure(&mut direct, &mut via_plain, &json).await;
        print_row(&format!("json + log {format}"), &d, &p);
    }
    micro();

    shutdown.cancel();
    emulator.shutdown().await;
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `redis-server` on a free loopback port for the Redis row, stopped when dropped; `None`
/// (the row is skipped) when none is installed.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    fn start(dir: &std::path::Path) -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let binary =
            std::env::var("FOUNDRY_PROXY_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = std::process::Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let server = Self { child, port };
        for _ in 0..500 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
