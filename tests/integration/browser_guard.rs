//! Web pages cannot borrow the identity: the Host allow-list and the Origin check, over raw
//! HTTP/1.1 and HTTP/2, against the real proxy and emulator. A refused request must never reach
//! the emulator's inference side.

use std::net::SocketAddr;

use bytes::Bytes;
use foundry_proxy::config::Settings;
use serde_json::Value;

use crate::common::raw::{h2_connect, h2_send, json_of, raw, status_of};
use crate::common::{Harness, Setup};

/// One HTTP/1.1 request (`Connection: close` is added) and the whole answer: status, head
/// (lowercased) and JSON body.
async fn http1(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, Value) {
    let mut request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let answer = raw(addr, request).await;
    let answer_head = answer.split("\r\n\r\n").next().unwrap_or_default();
    (
        status_of(&answer),
        answer_head.to_ascii_lowercase(),
        json_of(&answer),
    )
}

/// The refusal code of an OpenAI-shaped error body.
fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// Inference requests the emulator has seen.
fn forwarded(harness: &Harness) -> usize {
    harness.emulator.emulator.inference_requests().len()
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

/// A Host that does not name the proxy (DNS rebinding) is refused with 403 `host_not_allowed`
/// on every route, and nothing reaches Azure; the proxy's own names pass.
#[tokio::test]
async fn foreign_host_is_refused_over_http1() {
    let harness = Harness::start().await;
    harness.wait_ready().await;
    let port = harness.proxy.port();
    for (method, path) in [
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
        ("GET", "/status"),
        ("GET", "/metrics"),
        ("GET", "/healthz"),
        ("POST", "/openai/v1/chat/completions"),
    ] {
        for host in [
            "evil.example.com".to_owned(),
            format!("evil.example.com:{port}"),
            format!("localhost.evil.example.com:{port}"),
            format!("foundry-proxy:{port}"),
        ] {
            let head = format!(
                "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
            );
            let (status, _, body) = http1(harness.proxy, &head, CHAT.as_bytes()).await;
            assert_eq!(status, 403, "{method} {path} Host {host}: {body}");
            assert_eq!(code(&body), "host_not_allowed", "{body}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(
                message.contains(&host),
                "the message names the host: {message}"
            );
            let fix = body["error"]["fix"].to_string();
            assert!(fix.contains("FOUNDRY_PROXY_ALLOWED_HOSTS"), "{fix}");
        }
    }
    assert_eq!(forwarded(&harness), 0, "nothing was forwarded");
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_owned(),
        format!("[::1]:{port}"),
    ] {
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"
        );
        let (status, _, body) = http1(harness.proxy, &head, CHAT.as_bytes()).await;
        assert_eq!(status, 200, "Host {host}: {body}");
    }
    assert_eq!(forwarded(&harness), 4);
    harness.stop().await;
}

/// Over HTTP/2 the `:authority` is checked as `Host` is.
#[tokio::test]
async fn foreign_authority_is_refused_over_http2() {
    let harness = Harness::start().await;
    harness.wait_ready().await;
    let client = h2_connect(harness.proxy).await;
    let port = harness.proxy.port();
    for (authority, expected) in [
        (format!("evil.example.com:{port}"), 403),
        (format!("127.0.0.1:{port}"), 200),
    ] {
        let request = http::Request::post(format!("http://{authority}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(())
            .expect("request");
        let (status, bytes) =
            h2_send(&client, request, Some(Bytes::from_static(CHAT.as_bytes()))).await;
        assert_eq!(
            status,
            expected,
            "{authority}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if expected == 403 {
            let body: Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(code(&body), "host_not_allowed");
        }
    }
    assert_eq!(
        forwarded(&harness),
        1,
        "only the proxy's own name was forwarded"
    );
    harness.stop().await;
}

/// What a page on another origin can send without a preflight (text/plain, multipart), what
/// it sends after one (JSON), WebSocket upgrades (no CORS at all), `Origin: null` and
/// cross-site navigations: all refused with 403 `origin_not_allowed`, nothing forwarded.
#[tokio::test]
async fn foreign_origins_are_refused() {
    let harness = Harness::start().await;
    harness.wait_ready().await;
    let host = format!("127.0.0.1:{}", harness.proxy.port());
    let multipart =
        "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--b--\r\n";
    let cases: [(&str, String, &str); 8] = [
        (
            "json",
            "POST /v1/chat/completions HTTP/1.1\r\nOrigin: http://evil.example.com\r\nContent-Type: application/json".into(),
            CHAT,
        ),
        (
            "text/plain",
            "POST /v1/chat/completions HTTP/1.1\r\nOrigin: http://evil.example.com\r\nContent-Type: text/plain;charset=UTF-8".into(),
            CHAT,
        ),
        (
            "multipart",
            "POST /v1/audio/transcriptions HTTP/1.1\r\nOrigin: http://evil.example.com\r\nContent-Type: multipart/form-data; boundary=b".into(),
            multipart,
        ),
        (
            "websocket",
            "GET /v1/realtime?model=gpt-4o-mini HTTP/1.1\r\nOrigin: http://evil.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==".into(),
            "",
        ),
        (
            "null origin",
            "POST /v1/chat/completions HTTP/1.1\r\nOrigin: null\r\nContent-Type: text/plain".into(),
            CHAT,
        ),
        (
            "another local port",
            "POST /v1/chat/completions HTTP/1.1\r\nOrigin: http://localhost:3000\r\nContent-Type: application/json".into(),
            CHAT,
        ),
        (
            "cross-site navigation",
            "GET /v1/models HTTP/1.1\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate".into(),
            "",
        ),
        (
            "preflight",
            "OPTIONS /v1/chat/completions HTTP/1.1\r\nOrigin: http://evil.example.com\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type".into(),
            "",
        ),
    ];
    for (label, head, body) in cases {
        let head = head.replacen("\r\n", &format!("\r\nHost: {host}\r\n"), 1);
        let (status, answer_head, answer) = http1(harness.proxy, &head, body.as_bytes()).await;
        assert_eq!(status, 403, "{label}: {answer}");
        assert_eq!(code(&answer), "origin_not_allowed", "{label}: {answer}");
        assert!(
            !answer_head.contains("access-control-allow-origin"),
            "{label}: no CORS grant: {answer_head}"
        );
        let fix = answer["error"]["fix"].to_string();
        assert!(fix.contains("FOUNDRY_PROXY_CORS_ORIGINS"), "{label}: {fix}");
    }
    assert_eq!(forwarded(&harness), 0, "nothing was forwarded");
    harness.stop().await;
}

/// An origin listed in `FOUNDRY_PROXY_CORS_ORIGINS` is served with its CORS headers, and its
/// preflight is granted, with `Access-Control-Allow-Private-Network` when the browser asks;
/// other origins are still refused; SDK-style requests (no Origin) are unaffected.
#[tokio::test]
async fn allowed_origins_are_served() {
    let setup = Setup {
        settings: Settings {
            cors_origins: Some(vec!["http://localhost:3000".into()]),
            ..Settings::default()
        },
        ..Setup::default()
    };
    let harness = Harness::start_with(setup).await;
    harness.wait_ready().await;
    let host = format!("127.0.0.1:{}", harness.proxy.port());

    let preflight = format!(
        "OPTIONS /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nOrigin: http://localhost:3000\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: content-type\r\nAccess-Control-Request-Private-Network: true"
    );
    let (status, head, _) = http1(harness.proxy, &preflight, b"").await;
    assert!(status == 200 || status == 204, "preflight: {head}");
    assert!(
        head.contains("access-control-allow-origin: http://localhost:3000"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-private-network: true"),
        "{head}"
    );

    let post = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nOrigin: http://localhost:3000\r\nContent-Type: application/json"
    );
    let (status, head, body) = http1(harness.proxy, &post, CHAT.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("access-control-allow-origin: http://localhost:3000"),
        "{head}"
    );
    assert_eq!(body["object"], "chat.completion");

    let other = post.replace("localhost:3000", "localhost:3001");
    let (status, _, body) = http1(harness.proxy, &other, CHAT.as_bytes()).await;
    assert_eq!((status, code(&body)), (403, "origin_not_allowed"));

    let sdk = harness
        .post_json(
            "/v1/chat/completions",
            serde_json::from_str(CHAT).expect("json"),
        )
        .await;
    assert_eq!(sdk.status(), 200, "a request without Origin is unaffected");
    assert_eq!(forwarded(&harness), 2);
    harness.stop().await;
}

/// `FOUNDRY_PROXY_ALLOWED_HOSTS` admits the names listed (any port, or the one given, or a
/// domain's subdomains), and nothing more.
#[tokio::test]
async fn allowed_hosts_admit_listed_names() {
    let setup = Setup {
        settings: Settings {
            allowed_hosts: Some(vec![
                "foundry-proxy".into(),
                "proxy.example.test:443".into(),
                "*.svc.cluster.local".into(),
            ]),
            ..Settings::default()
        },
        ..Setup::default()
    };
    let harness = Harness::start_with(setup).await;
    harness.wait_ready().await;
    for (host, expected) in [
        ("foundry-proxy", 200),
        ("foundry-proxy:8080", 200),
        ("proxy.example.test:443", 200),
        ("proxy.example.test:8443", 403),
        ("foundry-proxy.team.svc.cluster.local:8080", 200),
        ("svc.cluster.local", 403),
        ("evil.example.com", 403),
    ] {
        let head = format!("GET /healthz HTTP/1.1\r\nHost: {host}");
        let (status, _, body) = http1(harness.proxy, &head, b"").await;
        assert_eq!(status, expected, "Host {host}: {body}");
    }
    harness.stop().await;
}

/// The first `http://ADDR` after `prefix` in the lines a command prints, as a socket address.
fn printed_address(lines: &mut impl std::io::BufRead, prefix: &str) -> SocketAddr {
    let mut line = String::new();
    while lines.read_line(&mut line).expect("read stdout") > 0 {
        if let Some(rest) = line.trim().strip_prefix(prefix) {
            let url = rest.split_whitespace().next().unwrap_or_default();
            return url
                .trim_start_matches("http://")
                .parse()
                .unwrap_or_else(|_| panic!("no address in {line:?}"));
        }
        line.clear();
    }
    panic!("the command never printed {prefix:?}");
}

/// `foundry-proxy emulate` and `foundry-proxy demo` (its proxy and its emulator) follow the
/// same rules: a foreign Host or Origin is refused; `FOUNDRY_PROXY_ALLOWED_HOSTS` admits a
/// service name for `emulate`.
#[tokio::test]
async fn demo_and_emulate_follow_the_same_rules() {
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_foundry-proxy");
    let mut emulate = Command::new(bin)
        .args(["emulate", "--listen", "127.0.0.1:0"])
        .env_clear()
        .env("FOUNDRY_PROXY_ALLOWED_HOSTS", "emulator")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn emulate");
    let mut demo = Command::new(bin)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let mut emulate_out = std::io::BufReader::new(emulate.stdout.take().expect("stdout"));
    let mut demo_out = std::io::BufReader::new(demo.stdout.take().expect("stdout"));
    let emulator = printed_address(&mut emulate_out, "emulator listening on ");
    let demo_emulator = printed_address(&mut demo_out, "emulator listening on ");
    let demo_proxy = printed_address(&mut demo_out, "foundry-proxy listening on ");

    for (label, addr) in [
        ("emulate", emulator),
        ("demo's emulator", demo_emulator),
        ("demo's proxy", demo_proxy),
    ] {
        let port = addr.port();
        let head = format!("GET /healthz HTTP/1.1\r\nHost: evil.example.com:{port}");
        let (status, _, body) = http1(addr, &head, b"").await;
        assert_eq!(
            (status, code(&body)),
            (403, "host_not_allowed"),
            "{label}: {body}"
        );
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example.com\r\nContent-Type: text/plain"
        );
        let (status, _, body) = http1(addr, &head, CHAT.as_bytes()).await;
        assert_eq!(
            (status, code(&body)),
            (403, "origin_not_allowed"),
            "{label}: {body}"
        );
    }
    let head = format!(
        "GET /_emulator/state HTTP/1.1\r\nHost: emulator:{}",
        emulator.port()
    );
    let (status, _, body) = http1(emulator, &head, b"").await;
    assert_eq!(status, 200, "a listed name reaches the emulator: {body}");

    for mut child in [emulate, demo] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// An answer to HEAD has no body over HTTP/2 either, whoever writes it: the browser guard's
/// refusal, the proxy's own 404 and 401, an answer forwarded from upstream, and the proxy's own
/// endpoints. (hyper drops such a body over HTTP/1.1 but sends it over HTTP/2, where a client
/// resets the stream.)
#[tokio::test]
async fn head_answers_have_no_body_over_http2() {
    let harness = Harness::start().await;
    harness.wait_ready().await;
    let client = h2_connect(harness.proxy).await;
    let port = harness.proxy.port();
    // None: whatever the upstream answers (forwarded as it is).
    for (authority, path, expected) in [
        (format!("evil.example.com:{port}"), "/v1/models", Some(403)),
        (format!("127.0.0.1:{port}"), "/not-an-api", Some(404)),
        (format!("127.0.0.1:{port}"), "/v1/models", None),
        (format!("127.0.0.1:{port}"), "/healthz", Some(200)),
    ] {
        let request = http::Request::head(format!("http://{authority}{path}"))
            .body(())
            .expect("request");
        let (status, bytes) = h2_send(&client, request, None).await;
        if let Some(expected) = expected {
            assert_eq!(status, expected, "HEAD {authority}{path}");
        }
        assert!(bytes.is_empty(), "HEAD {authority}{path}: {bytes:?}");
    }
    assert_eq!(
        forwarded(&harness),
        1,
        "only the /v1/models HEAD was forwarded"
    );
    harness.stop().await;
}
