//! Bad input: oversized bodies get 413, unreadable or unroutable requests get 400, unknown
//! paths get 404 — all in the OpenAI error shape.

use crate::common;

use common::{Harness, Setup, error_of};
use foundry_proxy::config::{Settings, SizeSetting};
use foundry_proxy::emulator::identities as world;
use serde_json::json;

fn setup(api: &str, max_body: u64) -> Setup {
    Setup {
        settings: Settings {
            api: Some(api.into()),
            max_body: Some(SizeSetting::Bytes(max_body)),
            ..Settings::default()
        },
        ..Setup::default()
    }
}

/// A body over FOUNDRY_PROXY_MAX_BODY is refused with 413, whether its length is declared
/// or it arrives chunked; the upstream never sees it.
#[tokio::test]
async fn oversized_bodies_get_413() {
    let harness = Harness::start_with(setup("openai-v1", 1024)).await;
    let big = json!({"model": world::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let response = harness.post_json("/v1/chat/completions", big.clone()).await;
    assert_eq!(response.status(), 413);
    let error = error_of(response).await;
    assert_eq!(error["code"], "request_too_large");
    assert_eq!(error["type"], "invalid_request_error");

    let bytes = serde_json::to_vec(&big).expect("json");
    let frames: Vec<Result<http_body::Frame<bytes::Bytes>, std::io::Error>> = bytes
        .chunks(512)
        .map(|c| Ok(http_body::Frame::data(bytes::Bytes::copy_from_slice(c))))
        .collect();
    let chunked = reqwest::Body::wrap(http_body_util::StreamBody::new(futures_util::stream::iter(
        frames,
    )));
    let response = harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(chunked)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 413);
    assert!(harness.emulator.emulator.inference_requests().is_empty());
    harness.stop().await;
}

/// In the deployments style the proxy must read `model`: invalid JSON, a missing model and
/// a model that is not a deployment name are 400s naming the problem.
#[tokio::test]
async fn unreadable_requests_get_400() {
    let harness = Harness::start_with(setup("deployments", 1 << 20)).await;
    let cases: [(&[u8], &str); 4] = [
        (b"{\"model\": \"gpt-4o-mini\", ", "invalid_json"),
        (b"{\"messages\": []}", "missing_model"),
        (b"{\"model\": \"../../admin\"}", "invalid_model"),
        (b"{\"model\": \"a%2fb\"}", "invalid_model"),
    ];
    for (body, code) in cases {
        let response = harness
            .client
            .post(harness.url("/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 400, "{code}");
        let error = error_of(response).await;
        assert_eq!(error["code"], code);
        assert!(!error["message"].as_str().unwrap_or_default().is_empty());
    }
    assert!(harness.emulator.emulator.inference_requests().is_empty());
    harness.stop().await;
}

/// Paths outside /v1 get a 404 that says where the API lives; encoded traversal is refused.
#[tokio::test]
async fn unknown_and_hostile_paths() {
    let harness = Harness::start().await;
    let response = harness
        .client
        .get(harness.url("/chat/completions"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 404);
    assert_eq!(error_of(response).await["code"], "unknown_path");
    let response = harness
        .client
        .get(harness.url("/v1/files%2F..%2Fadmin"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 400);
    assert_eq!(error_of(response).await["code"], "invalid_path");
    harness.stop().await;
}

/// A multipart body the proxy must read for `model` but cannot parse is a 400 naming it.
#[tokio::test]
async fn broken_multipart_gets_400() {
    let harness = Harness::start_with(setup("deployments", 1 << 20)).await;
    let response = harness
        .client
        .post(harness.url("/v1/audio/transcriptions"))
        .header("content-type", "multipart/form-data")
        .body("no boundary here")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 400);
    assert_eq!(error_of(response).await["code"], "invalid_multipart");
    harness.stop().await;
}

/// A request body that breaks off mid-way (malformed chunked encoding) is a 400, and the
/// upstream never sees a half request.
#[tokio::test]
async fn broken_body_gets_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let harness = Harness::start().await;
    let mut socket = tokio::net::TcpStream::connect(harness.proxy)
        .await
        .expect("connect");
    socket
        .write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n5\r\n{\"a\":\r\nzz\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        socket.read_to_end(&mut answer),
    )
    .await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let answer: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(answer["error"]["code"], "unreadable_body", "{text}");
    assert!(harness.emulator.emulator.inference_requests().is_empty());
    harness.stop().await;
}

/// An upstream that sends no response headers within FOUNDRY_PROXY_UPSTREAM_TIMEOUT gets a
/// 504 in the OpenAI shape; the client is never left hanging.
#[tokio::test]
async fn slow_upstream_gets_504() {
    let app = axum::Router::new().fallback(|| async {
        tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        "late"
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let slow = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let settings = Settings {
        endpoint: Some(slow),
        upstream_timeout_secs: Some(1),
        ..Settings::default()
    };
    let harness = Harness::start_with(Setup {
        settings,
        ..Setup::default()
    })
    .await;
    let response = harness
        .post_json(
            "/v1/chat/completions",
            json!({"model": world::CHAT_DEPLOYMENT}),
        )
        .await;
    assert_eq!(response.status(), 504);
    let error = error_of(response).await;
    assert_eq!(error["code"], "upstream_timeout");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("within 1 s"),
        "{error}"
    );
    harness.stop().await;
}
