//! Bad input: oversized bodies get 413, unreadable or unroutable requests get 400, unknown
//! paths get 404 — all in the OpenAI error shape.

mod common;

use common::{Harness, Setup, error_of};
use foundry_proxy::config::{Settings, SizeSetting};
use foundry_proxy::emulator::demo as world;
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
