//! Forwarding: every API style, every kind of route, headers in and out, pass-through of
//! Azure's own answers.

use crate::common;

use common::{Harness, Setup, error_of};
use foundry_proxy::config::Settings;
use foundry_proxy::emulator::identities as world;
use serde_json::{Value, json};

fn style(api: &str, endpoint: Option<&str>) -> Setup {
    Setup {
        settings: Settings {
            api: Some(api.into()),
            endpoint: endpoint.map(str::to_owned),
            ..Settings::default()
        },
        ..Setup::default()
    }
}

/// A chat completion works through each of the four API styles and reaches the route
/// ARCHITECTURE.md "API styles" names for it, with the api-version each style needs.
#[tokio::test]
async fn every_api_style_routes_chat() {
    let cases = [
        ("openai-v1", None, "/openai/v1/chat/completions", None),
        (
            "deployments",
            None,
            "/openai/deployments/gpt-4o-mini/chat/completions",
            Some("api-version=2024-10-21"),
        ),
        (
            "models",
            Some("/models"),
            "/models/chat/completions",
            Some("api-version=2024-05-01-preview"),
        ),
        (
            "passthrough",
            Some("/inference"),
            "/inference/v1/chat/completions",
            None,
        ),
    ];
    for (api, endpoint, path, query) in cases {
        let harness = Harness::start_with(style(api, endpoint)).await;
        let response = harness
            .post_json(
                "/v1/chat/completions",
                Harness::chat(world::CHAT_DEPLOYMENT, "hello there"),
            )
            .await;
        assert_eq!(response.status(), 200, "{api}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["object"], "chat.completion", "{api}");
        assert!(
            body["choices"][0]["message"]["content"]
                .as_str()
                .is_some_and(|c| c.contains("hello there")),
            "{api}: {body}"
        );
        let records = harness.emulator.emulator.inference_requests();
        let last = records.last().expect("recorded");
        assert_eq!(last.path, path, "{api}");
        assert_eq!(last.query.as_deref(), query, "{api}");
        harness.stop().await;
    }
}

/// The caller's Authorization and api-key never reach Azure; the proxy's own token does,
/// along with ordinary headers. Hop-by-hop headers are dropped.
#[tokio::test]
async fn caller_credentials_are_replaced() {
    let harness = Harness::start().await;
    let response = harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .header("authorization", "Bearer sk-caller-secret")
        .header("api-key", "caller-api-key")
        .header("x-ms-client-request-id", "trace-me")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .json(&Harness::chat(world::CHAT_DEPLOYMENT, "hi"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-ms-client-request-id"], "trace-me");
    let record = harness
        .emulator
        .emulator
        .inference_requests()
        .pop()
        .expect("recorded");
    assert!(record.authorization_present);
    assert_eq!(record.token_appid.as_deref(), Some(world::CLIENT_ID));
    assert_eq!(record.token_oid.as_deref(), Some(world::OBJECT_ID));
    let names: Vec<&str> = record.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert!(!names.contains(&"api-key"), "{names:?}");
    assert!(!names.contains(&"x-drop-me"), "{names:?}");
    assert!(names.contains(&"x-ms-client-request-id"), "{names:?}");
    let values: Vec<&str> = record.headers.iter().map(|(_, v)| v.as_str()).collect();
    assert!(
        !values
            .iter()
            .any(|v| v.contains("sk-caller-secret") || v.contains("caller-api-key")),
        "{values:?}"
    );
    harness.stop().await;
}

/// Embeddings, completions, responses, models and generic routes (images, multipart
/// audio) all forward.
#[tokio::test]
async fn other_routes_forward() {
    let harness = Harness::start().await;
    let embeddings = harness
        .post_json("/v1/embeddings", json!({"model": world::EMBEDDING_DEPLOYMENT, "input": "hello", "encoding_format": "float"}))
        .await;
    assert_eq!(embeddings.status(), 200);
    let body: Value = embeddings.json().await.expect("json");
    assert_eq!(
        body["data"][0]["embedding"].as_array().map(Vec::len),
        Some(1536)
    );

    let completions = harness
        .post_json(
            "/v1/completions",
            json!({"model": world::CHAT_DEPLOYMENT, "prompt": "Say hi"}),
        )
        .await;
    assert_eq!(completions.status(), 200);

    let responses = harness
        .post_json(
            "/v1/responses",
            json!({"model": world::CHAT_DEPLOYMENT, "input": "Tell me"}),
        )
        .await;
    assert_eq!(responses.status(), 200);
    let body: Value = responses.json().await.expect("json");
    assert_eq!(body["object"], "response");

    let models = harness
        .client
        .get(harness.url("/v1/models"))
        .send()
        .await
        .expect("models");
    assert_eq!(models.status(), 200);
    let body: Value = models.json().await.expect("json");
    assert_eq!(body["object"], "list");

    let images = harness
        .post_json(
            "/v1/images/generations",
            json!({"model": world::IMAGE_DEPLOYMENT, "prompt": "a cat"}),
        )
        .await;
    assert_eq!(images.status(), 200);
    harness.stop().await;
}

/// A multipart audio upload keeps its bytes, and in the `deployments` style its `model`
/// form field chooses the deployment.
#[tokio::test]
async fn multipart_audio_in_deployments_style() {
    let harness = Harness::start_with(style("deployments", None)).await;
    let boundary = "foundryproxyboundary";
    let mut body = Vec::new();
    body.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n").as_bytes());
    body.extend_from_slice(&[0u8, 1, 2, 3, 255, 254, 13, 10]);
    body.extend_from_slice(format!("\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{}\r\n--{boundary}--\r\n", world::TRANSCRIPTION_DEPLOYMENT).as_bytes());
    let length = body.len();
    let response = harness
        .client
        .post(harness.url("/v1/audio/transcriptions"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let record = harness
        .emulator
        .emulator
        .inference_requests()
        .pop()
        .expect("recorded");
    assert_eq!(
        record.path,
        "/openai/deployments/whisper/audio/transcriptions"
    );
    assert_eq!(record.body_len, length);
    harness.stop().await;
}

/// Azure's own answers that are not refusals the catalog knows pass through unchanged:
/// content-filter 400, 500; and Azure's
/// response headers (apim-request-id, x-ms-region, x-ratelimit-*) reach the caller.
#[tokio::test]
async fn azure_answers_pass_through() {
    let harness = Harness::start().await;
    let ok = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "hi"),
        )
        .await;
    for name in [
        "apim-request-id",
        "x-ms-region",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
    ] {
        assert!(ok.headers().contains_key(name), "{name} missing");
    }
    for (fault, status, code) in [
        ("content-filter", 400, "content_filter"),
        ("server-error", 500, "InternalServerError"),
    ] {
        let response = harness
            .client
            .post(harness.url("/v1/chat/completions"))
            .header("x-emulator-fault", fault)
            .json(&Harness::chat(world::CHAT_DEPLOYMENT, "hi"))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), status, "{fault}");
        assert!(
            response.headers().contains_key("apim-request-id"),
            "{fault}"
        );
        let error = error_of(response).await;
        assert_eq!(error["code"], code, "{fault}: Azure's body unchanged");
        assert!(error.get("fix").is_none(), "{fault}: not rewritten");
    }
    harness.stop().await;
}

/// A 429 for the deployment's quota keeps its status, Azure's body (under `upstream`) and its
/// retry headers, and says which kind of 429 it is and what to do — in `message`, which is all
/// an SDK prints.
#[tokio::test]
async fn quota_429_is_explained_with_azure_body_and_retry_headers() {
    let harness = Harness::start().await;
    harness.wait_ready().await;
    let response = harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .header("x-emulator-fault", "rate-limit")
        .json(&Harness::chat(world::CHAT_DEPLOYMENT, "hi"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "45");
    assert!(response.headers().contains_key("apim-request-id"));
    let error = error_of(response).await;
    assert_eq!(error["code"], "deployment_quota_exceeded", "{error}");
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(error["upstream"]["status"], 429);
    assert_eq!(
        error["upstream"]["body"]["error"]["code"], "429",
        "Azure's body kept"
    );
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(world::CHAT_DEPLOYMENT), "{message}");
    assert!(
        message.contains("Fix: "),
        "the first step is in the message: {message}"
    );
    harness.stop().await;
}
