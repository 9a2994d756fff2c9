//! Faults: Entra down, the upstream unreachable, refusing, untrusted, unresolvable or slow,
//! streams cut by the upstream or abandoned by the client, and SIGTERM with streams open.
//! Every scenario also checks that the logs (trace level) hold no secret: the client secret,
//! an access token the emulator issued, or an access key.
//!
//! Everything runs on loopback against the real emulator and the real proxy (in-process, or
//! the binary for SIGTERM); every wait is bounded.

use crate::common;

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::logs::CapturedLogs;
use common::{Harness, Setup, error_of};
use foundry_proxy::config::Settings;
use foundry_proxy::emulator::{
    self, EmulatorConfig, EntraFault, RunningEmulator, identities as world,
};
use foundry_proxy::keys::Role;
use foundry_proxy::token::TokenPolicy;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_foundry-proxy");

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A proxy (with one access key, which its client sends) in front of `emulator`; the logs are
/// captured before it starts.
async fn keyed_harness(
    emulator: RunningEmulator,
    mut setup: Setup,
) -> (Harness, String, CapturedLogs) {
    let logs = common::logs::capture();
    // Admin: these tests read the token's state on the operator's `/status`.
    let key = common::add_access_key_with_role(&mut setup, "faults", Role::Admin);
    let mut harness = Harness::start_on(emulator, setup).await;
    harness.client = common::client_with_key(&key);
    (harness, key, logs)
}

/// The demo emulator with `config`.
async fn emulator_with(config: EmulatorConfig) -> RunningEmulator {
    emulator::spawn(config).await.expect("emulator starts")
}

/// The proxy pointed at `endpoint` (the emulator still plays Entra).
async fn harness_for_endpoint(
    endpoint: String,
    upstream_timeout_secs: Option<u64>,
) -> (Harness, String, CapturedLogs) {
    let setup = Setup {
        settings: Settings {
            endpoint: Some(endpoint),
            upstream_timeout_secs,
            ..Settings::default()
        },
        ..Setup::default()
    };
    keyed_harness(emulator_with(EmulatorConfig::default()).await, setup).await
}

/// Fails the test if the logs hold the client secret, an access token the emulator issued,
/// the access key, or anything shaped like a JWT.
fn assert_logs_clean(logs: &CapturedLogs, harness: &Harness, key: &str) {
    let tokens = harness.emulator.emulator.issued_tokens();
    assert!(!tokens.is_empty(), "the emulator issued no token");
    let mut secrets = vec![world::CLIENT_SECRET, key];
    secrets.extend(tokens.iter().map(String::as_str));
    logs.assert_free_of(&secrets);
    assert!(!logs.text().contains("eyJ"), "a JWT in the logs");
}

/// Polls `check` every 20 ms until it holds; panics naming `what` after `limit`.
async fn wait_for<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "waited {limit:?} in vain for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The status of every token request the emulator saw.
fn statuses(emu: &emulator::Emulator) -> Vec<u16> {
    emu.token_requests().iter().map(|r| r.status).collect()
}

/// Status and JSON body of a GET on the proxy.
async fn get(harness: &Harness, path: &str) -> (u16, Value) {
    let response = harness
        .client
        .get(harness.url(path))
        .send()
        .await
        .expect("proxy answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The numeric value of `name=` in a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    let start = line.find(&format!(" {name}="))? + name.len() + 2;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn stream_body(text: &str) -> Value {
    json!({"model": world::CHAT_DEPLOYMENT, "stream": true, "messages": [{"role": "user", "content": text}]})
}

/// A streamed chat request through the proxy: `chunks` content events, `delay_ms` apart.
fn stream_request(harness: &Harness, chunks: u32, delay_ms: u32) -> reqwest::RequestBuilder {
    harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .header("x-emulator-chunks", chunks.to_string())
        .header("x-emulator-chunk-delay-ms", delay_ms.to_string())
        .json(&stream_body("fault"))
}

/// Reads a stream to its end: the text, and whether it ended with an error (not cleanly).
async fn read_stream(mut response: reqwest::Response) -> (String, bool) {
    let mut text = String::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => return (text, false),
            Err(_) => return (text, true),
        }
    }
}

/// A steady client: one chat completion every `every` until stopped; any answer other than
/// a complete 200 is a failure.
struct Load {
    stop: CancellationToken,
    task: JoinHandle<(usize, Vec<String>)>,
}

impl Load {
    fn start(harness: &Harness, every: Duration) -> Self {
        let stop = CancellationToken::new();
        let client = harness.client.clone();
        let url = harness.url("/v1/chat/completions");
        let body = Harness::chat(world::CHAT_DEPLOYMENT, "steady");
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let (mut sent, mut failures) = (0, Vec::new());
            let started = Instant::now();
            while !stopped.is_cancelled() {
                sent += 1;
                let at = started.elapsed().as_millis();
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 200 => {
                        if let Err(e) = r.json::<Value>().await {
                            failures.push(format!("at {at} ms: unreadable answer {e}"));
                        }
                    }
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        failures.push(format!("at {at} ms: {status} {text}"));
                    }
                    Err(e) => failures.push(format!("at {at} ms: {e:?}")),
                }
                tokio::time::sleep(every).await;
            }
            (sent, failures)
        });
        Self { stop, task }
    }

    /// Stops and returns (requests sent, failures).
    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.cancel();
        self.task.await.expect("load task")
    }
}

// ---------------------------------------------------------------------------------------------
// A relay in front of the emulator's Entra side that a test can switch off
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateMode {
    /// Relay connections to the emulator.
    Pass,
    /// The port is closed: connections are refused.
    Refuse,
    /// Accept connections and never answer (a stalled network path).
    Hold,
}

/// A TCP relay on a fixed loopback port, switched between passing traffic to `backend`,
/// refusing connections (its listener closed) and holding them unanswered. Every switch
/// drops the connections of the mode before, as a network change would.
struct Gate {
    addr: SocketAddr,
    mode: watch::Sender<GateMode>,
    held: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Gate {
    fn start(backend: SocketAddr) -> Self {
        let listener = listen_reusable("127.0.0.1:0".parse().expect("addr"));
        let addr = listener.local_addr().expect("addr");
        let (mode, watched) = watch::channel(GateMode::Pass);
        let held = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        tokio::spawn(run_gate(
            listener,
            backend,
            watched,
            Arc::clone(&held),
            stop.clone(),
        ));
        Self {
            addr,
            mode,
            held,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn set(&self, mode: GateMode) {
        self.mode.send_replace(mode);
    }

    /// Connections held unanswered so far.
    fn held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A listener with SO_REUSEADDR, so the gate can listen on its port again after closing it.
fn listen_reusable(addr: SocketAddr) -> TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    socket
        .bind(addr)
        .unwrap_or_else(|e| panic!("cannot listen on {addr} again: {e}"));
    socket.listen(128).expect("listen")
}

async fn accept_on(listener: Option<&TcpListener>) -> std::io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

async fn run_gate(
    first: TcpListener,
    backend: SocketAddr,
    mut mode: watch::Receiver<GateMode>,
    held: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let addr = first.local_addr().expect("addr");
    let mut listener = Some(first);
    let mut generation = stop.child_token();
    loop {
        let current = *mode.borrow_and_update();
        match current {
            GateMode::Refuse => listener = None,
            _ if listener.is_none() => listener = Some(listen_reusable(addr)),
            _ => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                generation.cancel();
                generation = stop.child_token();
            }
            accepted = accept_on(listener.as_ref()) => {
                let Ok(mut client) = accepted else { continue };
                let cancel = generation.clone();
                let held = Arc::clone(&held);
                tokio::spawn(async move {
                    let relay = async {
                        if current == GateMode::Hold {
                            held.fetch_add(1, Ordering::SeqCst);
                            let mut sink = [0u8; 4096];
                            while client.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                            std::future::pending::<()>().await;
                        } else if let Ok(mut upstream) = TcpStream::connect(backend).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                    };
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        () = relay => {}
                    }
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Entra down
// ---------------------------------------------------------------------------------------------

/// Backoff of the Entra outage tests: 200 ms doubling to 800 ms, jittered to [half, full].
fn outage_policy() -> TokenPolicy {
    TokenPolicy {
        backoff_base: Duration::from_millis(200),
        backoff_cap: Duration::from_millis(800),
        ..TokenPolicy::default()
    }
}

/// The un-jittered backoff after the `failures`-th consecutive failure, in ms.
fn full_backoff_ms(failures: u64) -> u64 {
    (200u64 << (failures.saturating_sub(1)).min(8)).min(800)
}

/// 22-second tokens, renewed at 11 s. From the refresh point Entra is down for 8 s, in turn:
/// 503s, 200s with an HTML page instead of JSON, refused connections (the authority's port
/// closed), then connections accepted and never answered until the path drops them. The
/// rest of the half lifetime (3 s) leaves room for the capped backoff (0.8 s) on a loaded
/// machine. A client sending a request every 150 ms sees no failure; the emulator sees the
/// retries spaced as the jittered backoff the log lines announce; `/readyz` stays 200 and
/// shows each failure, `/status` explains it; the first success restores the half-lifetime
/// schedule and clears the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_outage_within_half_a_lifetime_costs_no_request() {
    let running = emulator_with(EmulatorConfig {
        token_lifetime_secs: 22,
        ..EmulatorConfig::default()
    })
    .await;
    let gate = Gate::start(running.addr);
    let setup = Setup {
        settings: Settings {
            authority_host: Some(gate.url()),
            ..Settings::default()
        },
        policy: Some(outage_policy()),
        ..Setup::default()
    };
    let (harness, key, logs) = keyed_harness(running, setup).await;
    harness.wait_ready().await;
    let emu = Arc::clone(&harness.emulator.emulator);
    let load = Load::start(&harness, Duration::from_millis(150));

    // Entra is down from now on; the proxy notices at its refresh point, 11 s in.
    emu.set_entra_fault(Some(EntraFault::Status(503)));
    let e = &emu;
    wait_for(
        Duration::from_secs(15),
        "the first failed refresh",
        || async move { statuses(e).contains(&503) },
    )
    .await;
    let outage_start = e
        .token_requests()
        .iter()
        .find(|r| r.status == 503)
        .map(|r| r.received_ms)
        .expect("a 503");
    let first_token_at = e.token_requests()[0].received_ms;
    let h = &harness;
    let ready_with_error = |needle: &'static str| async move {
        let (status, body) = get(h, "/readyz").await;
        assert_eq!(status, 200, "ready while the token is valid: {body}");
        assert_eq!(body["status"], "ready", "{body}");
        body["last_refresh_error"]
            .as_str()
            .is_some_and(|e| e.contains(needle))
    };

    // 503s: four attempts.
    wait_for(Duration::from_secs(5), "four 503s", || async move {
        statuses(e).iter().filter(|s| **s == 503).count() >= 4
    })
    .await;
    wait_for(Duration::from_secs(2), "/readyz naming the 503", || {
        ready_with_error("503")
    })
    .await;
    let (status, body) = get(h, "/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["token"]["valid"], true, "{body}");
    assert!(
        body["token"]["consecutive_failures"].as_u64() >= Some(4),
        "{body}"
    );
    assert_eq!(
        body["last_refresh_error"]["code"], "entra_unavailable",
        "{body}"
    );
    assert!(
        body["last_refresh_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("503")),
        "{body}"
    );

    // Garbage: a 200 whose body is an HTML page.
    let before = e.token_requests().len();
    emu.set_entra_fault(Some(EntraFault::Garbage));
    wait_for(
        Duration::from_secs(5),
        "two garbage answers",
        || async move { e.token_requests().len() >= before + 2 },
    )
    .await;
    wait_for(Duration::from_secs(2), "/readyz naming the garbage", || {
        ready_with_error("not a token")
    })
    .await;

    // Refused: the authority's port is closed (Entra behind it would answer again).
    let failures_now = || async move {
        get(h, "/status").await.1["token"]["consecutive_failures"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = failures_now().await;
    gate.set(GateMode::Refuse);
    emu.set_entra_fault(None);
    wait_for(
        Duration::from_secs(5),
        "two refused attempts",
        || async move { failures_now().await >= before + 2 },
    )
    .await;
    wait_for(Duration::from_secs(2), "/readyz naming the refusal", || {
        ready_with_error("refused")
    })
    .await;

    // Stalled: connections accepted, never answered, until 8 s into the outage.
    gate.set(GateMode::Hold);
    let g = &gate;
    wait_for(
        Duration::from_secs(5),
        "a held token request",
        || async move { g.held() >= 1 },
    )
    .await;
    let (status, _) = get(h, "/readyz").await;
    assert_eq!(status, 200, "ready while a refresh hangs");
    let outage_end = outage_start + 8_000;
    tokio::time::sleep(Duration::from_millis(outage_end.saturating_sub(now_ms()))).await;
    assert_eq!(e.tokens_issued(), 1, "no token during the outage");
    let reached_emulator = e.token_requests().len();

    // Entra is back: the held request is dropped, the next attempt succeeds.
    gate.set(GateMode::Pass);
    wait_for(
        Duration::from_secs(5),
        "a token after the outage",
        || async move { e.tokens_issued() == 2 },
    )
    .await;
    let recovered_at = e.token_requests().last().expect("request").received_ms;
    assert!(
        recovered_at < first_token_at + 22_000,
        "renewed before the first token expired"
    );
    // The emulator counts the token before the proxy has read it.
    wait_for(
        Duration::from_secs(2),
        "the new token in use",
        || async move { get(h, "/readyz").await.1["last_refresh_error"].is_null() },
    )
    .await;
    let (status, body) = get(h, "/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(body["last_refresh_error"], Value::Null, "{body}");
    let next = body["next_refresh_in_secs"].as_u64().expect("next refresh");
    assert!((9..=11).contains(&next), "back to half a lifetime: {body}");
    let (_, body) = get(h, "/status").await;
    assert_eq!(body["token"]["consecutive_failures"], 0, "{body}");
    assert_eq!(body["last_refresh_error"], Value::Null, "{body}");
    let requests_after = e.token_requests().len();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        e.token_requests().len(),
        requests_after,
        "no retries once a token is held"
    );

    let (sent, failures) = load.finish().await;
    assert!(failures.is_empty(), "failed client requests: {failures:#?}");
    assert!(sent >= 60, "the client kept sending ({sent} requests)");

    // The logs: one warning per failure, the announced delays jittered within the backoff.
    let text = logs.text();
    let failed: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("token refresh failed"))
        .collect();
    let mut delays = Vec::new();
    for (i, line) in failed.iter().enumerate() {
        let n = field(line, "failures").expect("failures field");
        let delay = field(line, "retry_in_ms").expect("retry_in_ms field");
        assert_eq!(n, i as u64 + 1, "consecutive failures counted: {line}");
        let full = full_backoff_ms(n);
        assert!(
            (full / 2..=full).contains(&delay),
            "delay {delay} ms after failure {n} outside [{}, {full}]",
            full / 2
        );
        assert!(line.contains("serving_previous_token=true"), "{line}");
        delays.push(delay);
    }
    assert!(failed.len() >= 9, "{} failures logged", failed.len());
    for cause in ["503", "not a token", "refused"] {
        assert!(
            failed.iter().any(|l| l.contains(cause)),
            "no failure logged for {cause}"
        );
    }
    let capped: std::collections::BTreeSet<u64> = delays.iter().skip(2).copied().collect();
    assert!(capped.len() >= 2, "backoff without jitter: {delays:?}");
    // At the emulator: the attempts it saw (503 and garbage phases) came no sooner than the
    // delay announced after the one before, and not much later.
    let seen = e.token_requests();
    let at_emulator: Vec<u64> = seen[1..reached_emulator]
        .iter()
        .map(|r| r.received_ms)
        .collect();
    assert!(at_emulator.len() >= 6, "{at_emulator:?}");
    for (k, pair) in at_emulator.windows(2).enumerate() {
        let gap = pair[1] - pair[0];
        let announced = delays[k];
        assert!(
            gap + 2 >= announced && gap <= announced + 1_500,
            "attempt {} came {gap} ms after the one before; {announced} ms announced",
            k + 2
        );
    }
    for line in &failed {
        let start = line.find("error=").unwrap_or(0);
        eprintln!("{}", &line[start..line.len().min(start + 260)]);
    }
    eprintln!(
        "outage {} ms, delays {delays:?}, arrivals at the emulator {:?}",
        recovered_at - outage_start,
        at_emulator
            .windows(2)
            .map(|p| p[1] - p[0])
            .collect::<Vec<_>>()
    );
    let acquired: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("token acquired"))
        .collect();
    assert_eq!(acquired.len(), 2, "one line per token");
    assert_eq!(
        field(acquired[1], "refresh_in_secs"),
        Some(11),
        "the usual schedule: {}",
        acquired[1]
    );
    assert_logs_clean(&logs, &harness, &key);
    harness.stop().await;
}

/// 26-second tokens, renewed at 13 s; Entra takes 10 s to answer that renewal. Requests keep
/// flowing on the held token meanwhile, `/readyz` stays 200 (the renewal overdue, no error),
/// and the token that finally arrives is used and scheduled as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entra_stall_of_ten_seconds_costs_no_request() {
    let running = emulator_with(EmulatorConfig {
        token_lifetime_secs: 26,
        ..EmulatorConfig::default()
    })
    .await;
    let (harness, key, logs) = keyed_harness(running, Setup::default()).await;
    harness.wait_ready().await;
    let emu = Arc::clone(&harness.emulator.emulator);
    let load = Load::start(&harness, Duration::from_millis(200));
    emu.set_entra_fault(Some(EntraFault::Stall(Duration::from_secs(10))));
    let e = &emu;
    wait_for(
        Duration::from_secs(18),
        "the renewal request",
        || async move { e.token_requests().len() == 2 },
    )
    .await;
    let stalled_from = emu.token_requests()[1].received_ms;
    // Only this request stalls.
    emu.set_entra_fault(None);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, body) = get(&harness, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["last_refresh_error"], Value::Null, "{body}");
    assert!(body["token_expires_in_secs"].as_u64() <= Some(9), "{body}");
    assert_eq!(
        body["next_refresh_in_secs"], 0,
        "the renewal is overdue: {body}"
    );
    assert_eq!(emu.token_requests()[1].status, 0, "still pending");
    wait_for(
        Duration::from_secs(10),
        "the stalled token",
        || async move { e.tokens_issued() == 2 },
    )
    .await;
    assert!(
        now_ms() >= stalled_from + 9_900,
        "the token came only after the stall"
    );
    let h = &harness;
    wait_for(
        Duration::from_secs(2),
        "the new token in use",
        || async move { get(h, "/readyz").await.1["token_expires_in_secs"].as_u64() >= Some(20) },
    )
    .await;
    let (status, body) = get(&harness, "/readyz").await;
    assert_eq!(status, 200);
    let next = body["next_refresh_in_secs"].as_u64().expect("next refresh");
    assert!((11..=13).contains(&next), "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sent, failures) = load.finish().await;
    assert!(failures.is_empty(), "failed client requests: {failures:#?}");
    assert!(sent >= 50, "the client kept sending ({sent} requests)");
    assert_eq!(
        emu.token_requests().len(),
        2,
        "a slow answer is not retried"
    );
    let text = logs.text();
    assert!(
        !text.contains("token refresh failed"),
        "a slow answer is no failure"
    );
    assert_eq!(text.matches("token acquired").count(), 2);
    assert_logs_clean(&logs, &harness, &key);
    harness.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Upstream unreachable, refusing, untrusted, unresolvable, slow
// ---------------------------------------------------------------------------------------------

/// Sends one chat completion, checks the answer is `status` in the OpenAI error shape with
/// `code`, that its message names one of `causes`, and that it came within 10 s.
async fn assert_explained(harness: &Harness, status: u16, code: &str, causes: &[&str]) -> Value {
    let started = Instant::now();
    let response = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "anyone there?"),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered in {:?}",
        started.elapsed()
    );
    assert_eq!(response.status(), status);
    assert!(response.headers().contains_key("x-request-id"));
    let error = error_of(response).await;
    assert_eq!(error["code"], code, "{error}");
    assert!(error["type"].is_string(), "{error}");
    assert!(
        error["fix"].as_array().is_some_and(|f| !f.is_empty()),
        "{error}"
    );
    let message = error["message"].as_str().expect("message").to_lowercase();
    eprintln!("{status} {code}: {message}");
    assert!(
        causes.iter().any(|c| message.contains(c)),
        "{code}: the message names none of {causes:?}: {message}"
    );
    let (health, _) = get(harness, "/healthz").await;
    assert_eq!(health, 200);
    error
}

/// A closed port: 502 upstream_unreachable naming the refusal.
#[tokio::test]
async fn upstream_closed_port_is_502() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let (harness, key, logs) = harness_for_endpoint(format!("http://127.0.0.1:{port}"), None).await;
    harness.wait_ready().await;
    let error = assert_explained(&harness, 502, "upstream_unreachable", &["refused"]).await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("127.0.0.1")),
        "names the endpoint: {error}"
    );
    assert_logs_clean(&logs, &harness, &key);
    harness.stop().await;
}

/// A server that accepts every connection and at once resets it (`reset`) or closes it.
async fn slamming_server(reset: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if reset {
                let _ = stream.set_zero_linger();
            } else {
                // Read the request first, so the close is a clean FIN and not a reset.
                let mut stream = stream;
                let mut buf = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
                let _ = stream.shutdown().await;
            }
        }
    });
    addr
}

/// An upstream that resets connections, and one that closes them before answering: 502
/// upstream_unreachable naming what happened.
#[tokio::test]
async fn upstream_resetting_connections_is_502() {
    for (reset, causes) in [
        (true, &["reset", "broken pipe", "closed"][..]),
        (false, &["closed", "incomplete"][..]),
    ] {
        let addr = slamming_server(reset).await;
        let (harness, key, logs) = harness_for_endpoint(format!("http://{addr}"), None).await;
        harness.wait_ready().await;
        assert_explained(&harness, 502, "upstream_unreachable", causes).await;
        assert_logs_clean(&logs, &harness, &key);
        harness.stop().await;
    }
}

/// A private CA and a server certificate for 127.0.0.1 signed by it.
fn test_pki() -> (String, tokio_rustls::rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("leaf params")
        .signed_by(&leaf_key, &issuer)
        .expect("leaf cert");
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
    let server = tokio_rustls::rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .expect("server config");
    (ca_cert.pem(), server)
}

/// Terminates TLS on 127.0.0.1:0 and relays to `backend`.
async fn tls_front(server: tokio_rustls::rustls::ServerConfig, backend: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut plain) = TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                }
            });
        }
    });
    addr
}

/// An https endpoint whose certificate this machine does not trust: 502 naming the
/// certificate; with its CA in SSL_CERT_FILE the same endpoint answers (so the failure is
/// the trust, nothing else).
#[tokio::test]
async fn upstream_untrusted_certificate_is_502() {
    let (ca_pem, server) = test_pki();
    for trusted in [false, true] {
        let running = emulator_with(EmulatorConfig::default()).await;
        let front = tls_front(server.clone(), running.addr).await;
        let mut env = std::collections::BTreeMap::new();
        if trusted {
            let path = std::env::temp_dir().join(format!(
                "fp-faults-ca-{}-{}.pem",
                std::process::id(),
                front.port()
            ));
            std::fs::write(&path, &ca_pem).expect("write ca");
            env.insert("SSL_CERT_FILE".to_owned(), path.display().to_string());
        }
        let setup = Setup {
            settings: Settings {
                endpoint: Some(format!("https://127.0.0.1:{}", front.port())),
                ..Settings::default()
            },
            env,
            ..Setup::default()
        };
        let (harness, key, logs) = keyed_harness(running, setup).await;
        harness.wait_ready().await;
        if trusted {
            let response = harness
                .post_json(
                    "/v1/chat/completions",
                    Harness::chat(world::CHAT_DEPLOYMENT, "trusted"),
                )
                .await;
            assert_eq!(response.status(), 200);
        } else {
            assert_explained(
                &harness,
                502,
                "upstream_unreachable",
                &["certificate", "unknownissuer"],
            )
            .await;
            assert!(harness.emulator.emulator.inference_requests().is_empty());
        }
        assert_logs_clean(&logs, &harness, &key);
        harness.stop().await;
    }
}

/// A host name that cannot resolve (`.invalid`, RFC 6761): 502 naming DNS.
#[tokio::test]
async fn upstream_dns_failure_is_502() {
    let (harness, key, logs) =
        harness_for_endpoint("https://foundry-proxy-faults.invalid".to_owned(), None).await;
    harness.wait_ready().await;
    let error = assert_explained(&harness, 502, "upstream_unreachable", &["dns"]).await;
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("foundry-proxy-faults.invalid")),
        "{error}"
    );
    assert_logs_clean(&logs, &harness, &key);
    harness.stop().await;
}

/// A server that reads requests and never answers; counts connections.
async fn silent_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
            });
        }
    });
    (addr, connections)
}

/// An upstream that sends no headers within FOUNDRY_PROXY_UPSTREAM_TIMEOUT (1 s here): 504
/// upstream_timeout naming the limit, for plain and streamed requests, after about the
/// timeout; the client is never left hanging.
#[tokio::test]
async fn upstream_slow_headers_is_504() {
    let (addr, connections) = silent_server().await;
    let (harness, key, logs) = harness_for_endpoint(format!("http://{addr}"), Some(1)).await;
    harness.wait_ready().await;
    let started = Instant::now();
    let error = assert_explained(&harness, 504, "upstream_timeout", &["within 1 s"]).await;
    assert!(started.elapsed() >= Duration::from_millis(950));
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("FOUNDRY_PROXY_UPSTREAM_TIMEOUT")),
        "{error}"
    );
    let started = Instant::now();
    let response = stream_request(&harness, 5, 10)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(error_of(response).await["code"], "upstream_timeout");
    assert!(
        connections.load(Ordering::SeqCst) >= 1,
        "the upstream was reached"
    );
    assert_logs_clean(&logs, &harness, &key);
    harness.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. The upstream cuts a stream
// ---------------------------------------------------------------------------------------------

/// The emulator drops the connection after two events of each of five concurrent streams
/// (`x-emulator-reset-after`): each client sees its stream end with an error, not a clean
/// end. The proxy stays healthy and the next requests, streamed and not, succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_mid_stream_ends_the_stream_with_an_error() {
    let running = emulator_with(EmulatorConfig::default()).await;
    let (harness, key, logs) = keyed_harness(running, Setup::default()).await;
    harness.wait_ready().await;
    let cut = (0..5).map(|_| async {
        let response = stream_request(&harness, 10, 50)
            .header("x-emulator-reset-after", "2")
            .send()
            .await
            .expect("stream starts");
        assert_eq!(response.status(), 200);
        read_stream(response).await
    });
    for (text, errored) in futures_util::future::join_all(cut).await {
        assert!(errored, "the cut stream ended cleanly: {text}");
        assert!(text.starts_with("data: "), "events before the cut: {text}");
        assert!(!text.contains("[DONE]"), "{text}");
    }
    assert_eq!(harness.emulator.emulator.streams_reset(), 5);
    let (health, _) = get(&harness, "/healthz").await;
    assert_eq!(health, 200);
    for i in 0..5 {
        let response = stream_request(&harness, 4, 10)
            .send()
            .await
            .expect("stream");
        assert_eq!(response.status(), 200);
        let (text, errored) = read_stream(response).await;
        assert!(
            !errored && text.trim_end().ends_with("data: [DONE]"),
            "stream {i} after the cuts: {text}"
        );
        let response = harness
            .post_json(
                "/v1/chat/completions",
                Harness::chat(world::CHAT_DEPLOYMENT, "after"),
            )
            .await;
        assert_eq!(response.status(), 200);
    }
    assert_logs_clean(&logs, &harness, &key);
    harness.stop().await;
}

/// Reads one HTTP/1.1 request (head and `content-length` body); false at end of stream.
async fn read_request(stream: &mut TcpStream) -> bool {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf).await {
            Ok(n) if n > 0 => data.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while data.len() < head_end + length {
        match stream.read(&mut buf).await {
            Ok(n) if n > 0 => data.extend_from_slice(&buf[..n]),
            _ => return false,
        }
    }
    true
}

/// A fake upstream speaking just enough HTTP/1.1 (keep-alive): every request gets an SSE
/// stream of two events; the first `resets` requests then get a TCP reset (RST), the later
/// ones `[DONE]` and a proper end.
async fn resetting_sse_server(resets: u64) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let served = Arc::clone(&served);
            tokio::spawn(async move {
                while read_request(&mut stream).await {
                    let n = served.fetch_add(1, Ordering::SeqCst);
                    let mut out = String::from(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
                    );
                    for word in ["one", "two"] {
                        let event = format!(
                            "data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{word}\"}}}}]}}\n\n"
                        );
                        out.push_str(&format!("{:x}\r\n{event}\r\n", event.len()));
                    }
                    if stream.write_all(out.as_bytes()).await.is_err() {
                        return;
                    }
                    if n < resets {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let _ = stream.set_zero_linger();
                        return;
                    }
                    let done = "data: [DONE]\n\n";
                    let end = format!("{:x}\r\n{done}\r\n0\r\n\r\n", done.len());
                    if stream.write_all(end.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An upstream that resets the TCP connection (RST) after two events, three times: each
/// client sees its stream end with an error. The proxy stays healthy, and the same upstream's
/// next streams (its connections pooled again) arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tcp_reset_mid_stream_ends_the_stream_with_an_error() {
    let addr = resetting_sse_server(3).await;
    let (harness, key, logs) = harness_for_endpoint(format!("http://{addr}"), None).await;
    harness.wait_ready().await;
    for i in 0..3 {
        let response = stream_request(&harness, 2, 0).send().await.expect("stream");
        assert_eq!(response.status(), 200);
        let (text, errored) = read_stream(response).await;
        assert!(errored, "reset stream {i} ended cleanly: {text}");
        assert!(text.contains("two") && !text.contains("[DONE]"), "{text}");
    }
    let (health, _) = get(&harness, "/healthz").await;
    assert_eq!(health, 200);
    for i in 0..5 {
        let response = stream_request(&harness, 2, 0).send().await.expect("stream");
        assert_eq!(response.status(), 200);
        let (text, errored) = read_stream(response).await;
        assert!(
            !errored && text.trim_end().ends_with("data: [DONE]"),
            "stream {i} after the resets: {text}"
        );
    }
    assert_logs_clean(&logs, &harness, &key);
    harness.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. The client goes away mid-stream
// ---------------------------------------------------------------------------------------------

/// Ten clients, one after the other, drop their stream after the first event: each time the
/// emulator sees the upstream stream cancelled within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_cancels_upstream_within_a_second() {
    let running = emulator_with(EmulatorConfig::default()).await;
    let (harness, key, logs) = keyed_harness(running, Setup::default()).await;
    harness.wait_ready().await;
    let emu = Arc::clone(&harness.emulator.emulator);
    for i in 0..10u64 {
        let mut response = stream_request(&harness, 50, 100)
            .send()
            .await
            .expect("stream starts");
        response.chunk().await.expect("read").expect("first event");
        let dropped = Instant::now();
        drop(response);
        let e = &emu;
        wait_for(Duration::from_secs(5), "the cancellation", || async move {
            e.streams_cancelled() == i + 1
        })
        .await;
        assert!(
            dropped.elapsed() < Duration::from_secs(1),
            "disconnect {i}: upstream cancelled after {:?}",
            dropped.elapsed()
        );
    }
    assert_eq!(emu.streams_completed(), 0);
    let response = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "still there?"),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_logs_clean(&logs, &harness, &key);
    harness.stop().await;
}

/// Open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// One client that starts a stream, reads its first event and goes away.
async fn disconnect_once(harness: &Harness) {
    let mut response = stream_request(harness, 50, 100)
        .send()
        .await
        .expect("stream starts");
    assert_eq!(response.status(), 200);
    response.chunk().await.expect("read").expect("first event");
}

/// `n` disconnects, 16 at a time; waits (bounded) until the emulator saw every cancellation.
async fn disconnects(harness: &Harness, n: usize) {
    let before = harness.emulator.emulator.streams_cancelled();
    futures_util::stream::iter(0..n)
        .map(|_| disconnect_once(harness))
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    let e = &harness.emulator.emulator;
    wait_for(
        Duration::from_secs(10),
        "every cancellation",
        || async move { e.streams_cancelled() == before + n as u64 },
    )
    .await;
}

/// 1 000 clients that drop their stream mid-way (16 at a time) leave nothing behind: the
/// tokio tasks, open file descriptors and resident memory of this process (proxy, emulator
/// and clients all run in it) return to what they were after a warm-up of 100.
///
/// Slack: tasks and descriptors may differ by two (a pooled connection's close racing the
/// count); memory by 4 MiB, for the allocator's own bookkeeping and the pages it keeps (the
/// emulator's request records are cleared between batches). Anything kept per disconnect
/// shows as 1 000 tasks or descriptors, and a connection's buffers alone (8 KiB or more each)
/// would add more than 4 MiB over 1 000 disconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_disconnects_leak_nothing() {
    let harness = Harness::start().await;
    harness.wait_ready().await;
    disconnects(&harness, 100).await;
    harness.emulator.emulator.clear_records();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let runtime = tokio::runtime::Handle::current();
    let tasks = || runtime.metrics().num_alive_tasks();
    let (tasks_before, fds_before, rss_before) = (tasks(), open_fds(), rss_kib());

    for _ in 0..10 {
        disconnects(&harness, 100).await;
        // The emulator records every request it serves; that is not the proxy's memory.
        harness.emulator.emulator.clear_records();
    }
    let settled = common::eventually(Duration::from_secs(5), || {
        tasks() <= tasks_before + 2 && open_fds() <= fds_before + 2
    })
    .await;
    let (tasks_after, fds_after, rss_after) = (tasks(), open_fds(), rss_kib());
    assert!(
        settled,
        "tasks {tasks_before} -> {tasks_after}, fds {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after <= rss_before + 4 * 1024,
        "RSS {rss_before} KiB -> {rss_after} KiB"
    );
    assert_eq!(harness.emulator.emulator.streams_completed(), 0);
    let response = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "after a thousand"),
        )
        .await;
    assert_eq!(response.status(), 200);
    eprintln!(
        "tasks {tasks_before} -> {tasks_after}, fds {fds_before} -> {fds_after}, RSS {rss_before} -> {rss_after} KiB"
    );
    harness.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. SIGTERM with 100 streams open (the binary)
// ---------------------------------------------------------------------------------------------

/// Collects a child's output on a thread, so a chatty process never blocks on a full pipe.
fn collect(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("log buffer")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

/// A child process killed and reaped when dropped, so a failing test leaves nothing running.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one stream saw.
#[derive(Debug)]
struct StreamEnd {
    long: bool,
    text: String,
    errored: bool,
    last_data: std::time::Instant,
    ended: std::time::Instant,
}

/// `foundry-proxy serve` at RUST_LOG=trace with a 6 s grace and 100 streams open: 50 that need
/// at most 3.5 s more and 50 that would need a minute. After SIGTERM new connections are refused
/// at once; the short streams finish whole; the long ones keep flowing until the grace is over
/// and are then cut; the process exits 0, and the emulator sees the cut streams cancelled.
/// Its stderr holds no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_hundred_open_streams() {
    const GRACE_SECS: u64 = 6;
    let running = emulator_with(EmulatorConfig::default()).await;
    let url = running.url();
    let mut setup = Setup::default();
    let key = common::add_access_key(&mut setup, "sigterm");
    let keys_file = setup.settings.keys_file.clone().expect("keys file");
    let mut child = Reaped(
        Command::new(BIN)
            .arg("serve")
            .env_clear()
            .env("FOUNDRY_PROXY_LISTEN", "127.0.0.1:0")
            .env("AZURE_AUTHORITY_HOST", &url)
            .env("FOUNDRY_ENDPOINT", &url)
            .env("AZURE_TENANT_ID", world::TENANT_ID)
            .env("AZURE_CLIENT_ID", world::CLIENT_ID)
            .env("AZURE_CLIENT_SECRET", world::CLIENT_SECRET)
            .env("FOUNDRY_PROXY_KEYS_FILE", &keys_file)
            .env("FOUNDRY_PROXY_SHUTDOWN_GRACE", GRACE_SECS.to_string())
            .env("RUST_LOG", "trace")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let child = &mut child.0;
    let logs = collect(child.stderr.take().expect("stderr"));
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read stdout");
    let _rest = collect(stdout);
    let proxy = line
        .trim()
        .strip_prefix("foundry-proxy listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let proxy_addr: SocketAddr = proxy
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    let client = common::client_with_key(&key);

    // All opened at once; the signal follows once each has delivered its first event.
    let (opened_tx, mut opened) = tokio::sync::mpsc::channel::<()>(100);
    let mut streams = Vec::new();
    for i in 0..100 {
        let long = i < 50;
        let (chunks, delay) = if long { ("600", "100") } else { ("35", "100") };
        let request = client
            .post(format!("{proxy}/v1/chat/completions"))
            .header("x-emulator-chunks", chunks)
            .header("x-emulator-chunk-delay-ms", delay)
            .json(&stream_body("drain me"));
        let opened_tx = opened_tx.clone();
        streams.push(tokio::spawn(async move {
            let mut response = request.send().await.expect("stream starts");
            assert_eq!(response.status(), 200);
            let mut text = String::new();
            let mut errored = false;
            let mut last_data = std::time::Instant::now();
            let mut first = true;
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        text.push_str(&String::from_utf8_lossy(&chunk));
                        last_data = std::time::Instant::now();
                        if std::mem::take(&mut first) {
                            let _ = opened_tx.send(()).await;
                        }
                    }
                    Ok(None) => break,
                    Err(_) => {
                        errored = true;
                        break;
                    }
                }
            }
            StreamEnd {
                long,
                text,
                errored,
                last_data,
                ended: std::time::Instant::now(),
            }
        }));
    }
    drop(opened_tx);
    for n in 0..100 {
        tokio::time::timeout(Duration::from_secs(20), opened.recv())
            .await
            .unwrap_or_else(|_| panic!("only {n} of 100 streams opened"))
            .expect("a stream task ended before its first event");
    }

    let signalled = std::time::Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let refused = common::eventually(Duration::from_secs(3), || {
        std::net::TcpStream::connect(proxy_addr).is_err()
    })
    .await;
    assert!(refused, "new connections refused after SIGTERM");
    let refused_after = signalled.elapsed();

    let mut ends = Vec::new();
    for stream in streams {
        ends.push(
            tokio::time::timeout(Duration::from_secs(GRACE_SECS + 10), stream)
                .await
                .expect("every stream ends")
                .expect("stream task"),
        );
    }
    let exit = wait_exit(child, Duration::from_secs(10));
    assert_eq!(exit.code(), Some(0), "exit code");
    let exited_after = signalled.elapsed();

    let grace = Duration::from_secs(GRACE_SECS);
    let (long, short): (Vec<&StreamEnd>, Vec<&StreamEnd>) = ends.iter().partition(|s| s.long);
    let first_short_end = short.iter().map(|s| s.ended).min().expect("short streams");
    assert!(
        first_short_end > signalled + refused_after,
        "the refusal came while streams were still open"
    );
    for s in &short {
        assert!(
            !s.errored && s.text.trim_end().ends_with("data: [DONE]"),
            "a short stream was not drained whole: {:?}",
            &s.text[s.text.len().saturating_sub(200)..]
        );
        assert!(s.ended > signalled, "drained after the signal");
    }
    for s in &long {
        assert!(
            s.errored && !s.text.contains("[DONE]"),
            "a long stream did not end with an error"
        );
        assert!(
            s.last_data >= signalled + grace - Duration::from_secs(1),
            "a long stream stopped {:?} after SIGTERM, before the grace ended",
            s.last_data.saturating_duration_since(signalled)
        );
        assert!(
            s.ended <= signalled + grace + Duration::from_secs(5),
            "a long stream outlived the grace by far"
        );
    }
    assert!(
        exited_after >= grace - Duration::from_millis(500),
        "exited after {exited_after:?}, before the grace"
    );
    let e = &running.emulator;
    wait_for(
        Duration::from_secs(5),
        "the cut streams cancelled upstream",
        || async move { e.streams_cancelled() == 50 },
    )
    .await;
    assert_eq!(e.streams_completed(), 50);

    std::thread::sleep(Duration::from_millis(100));
    let logs = logs.lock().expect("logs").clone();
    assert!(logs.contains("draining in-flight requests"), "drain logged");
    assert!(logs.contains("grace period over"), "cut logged");
    assert!(
        !logs.contains(world::CLIENT_SECRET),
        "client secret in the logs"
    );
    assert!(!logs.contains("eyJ"), "a JWT in the logs");
    for token in running.emulator.issued_tokens() {
        assert!(!logs.contains(&token), "an access token in the logs");
    }
    assert!(
        !logs.contains(&key) && !logs.contains(&key[..16]),
        "the access key in the logs"
    );
    eprintln!("refused after {refused_after:?}, exited after {exited_after:?}");
    running.shutdown().await;
}
