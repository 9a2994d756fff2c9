//! Web pages cannot borrow the identity: the Host allow-list and the Origin check, over raw
//! HTTP/1.1 and HTTP/2, against the real proxy and emulator. A refused request must never reach
//! the emulator's inference side.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{Harness, Setup};
use foundry_proxy::config::Settings;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bound on any one exchange.
const BOUND: Duration = Duration::from_secs(10);

/// One HTTP/1.1 request (`Connection: close` is added) and the whole answer: status, head
/// (lowercased names) and body.
async fn http1(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, Value) {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    socket.write_all(&request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(BOUND, socket.read_to_end(&mut answer))
        .await
        .expect("answered in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .get(9..12)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
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
    let tcp = TcpStream::connect(harness.proxy).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let port = harness.proxy.port();
    for (authority, expected) in [
        (format!("evil.example.com:{port}"), 403),
        (format!("127.0.0.1:{port}"), 200),
    ] {
        let request = http::Request::post(format!("http://{authority}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(())
            .expect("request");
        let mut sender = client.clone().ready().await.expect("ready");
        let (response, mut stream) = sender.send_request(request, false).expect("sent");
        stream
            .send_data(Bytes::from_static(CHAT.as_bytes()), true)
            .expect("body");
        let response = tokio::time::timeout(BOUND, response)
            .await
            .expect("in time")
            .expect("answer");
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.expect("chunk");
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
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
