//! Sharing one credential across a team: model aliases, CORS for browser tools, access keys,
//! per-key limits, usage and metrics — over real sockets against the emulator.

mod common;

use std::collections::BTreeMap;

use common::{Harness, Setup};
use foundry_proxy::config::Settings;
use foundry_proxy::emulator::demo as world;
use serde_json::{Value, json};

fn aliases(api: &str) -> Setup {
    let models: BTreeMap<String, String> = [("fast".to_owned(), world::CHAT_DEPLOYMENT.to_owned())].into_iter().collect();
    Setup { settings: Settings { api: Some(api.into()), models: Some(models), ..Settings::default() }, ..Setup::default() }
}

/// With a `[models]` table, `/v1/models` lists the friendly names in the OpenAI shape, and a
/// friendly name reaches the right deployment in the v1 style (body rewritten) and in the
/// deployments style (URL).
#[tokio::test]
async fn model_aliases() {
    for (api, path) in [("openai-v1", "/openai/v1/chat/completions"), ("deployments", "/openai/deployments/gpt-4o-mini/chat/completions")] {
        let harness = Harness::start_with(aliases(api)).await;
        let list: Value = harness.client.get(harness.url("/v1/models")).send().await.expect("models").json().await.expect("json");
        assert_eq!(list["object"], "list");
        assert_eq!(list["data"][0]["id"], "fast", "{api}");
        assert_eq!(list["data"][0]["object"], "model");
        let response = harness.post_json("/v1/chat/completions", Harness::chat("fast", "via alias")).await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, 200, "{api}: {body}");
        assert_eq!(body["model"], "gpt-4o-mini-2024-07-18", "{api}: answered by the aliased deployment");
        let record = harness.emulator.emulator.inference_requests().pop().expect("recorded");
        assert_eq!(record.path, path, "{api}");
        assert_eq!(record.deployment.as_deref(), Some(world::CHAT_DEPLOYMENT), "{api}");
        harness.stop().await;
    }
}

/// CORS is off unless origins are listed; then a listed origin gets its preflight answered
/// (no key, never forwarded) and the response headers a browser needs; others get nothing.
#[tokio::test]
async fn cors_allow_list() {
    let harness = Harness::start().await;
    let response = harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .header("origin", "http://localhost:3000")
        .json(&Harness::chat(world::CHAT_DEPLOYMENT, "hi"))
        .send()
        .await
        .expect("answer");
    assert!(!response.headers().contains_key("access-control-allow-origin"), "off by default");
    harness.stop().await;

    let setup = Setup { settings: Settings { cors_origins: Some(vec!["http://localhost:3000".into()]), ..Settings::default() }, ..Setup::default() };
    let harness = Harness::start_with(setup).await;
    let preflight = harness
        .client
        .request(reqwest::Method::OPTIONS, harness.url("/v1/chat/completions"))
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "http://localhost:3000");
    let allowed = preflight.headers()["access-control-allow-headers"].to_str().expect("ascii").to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let response = harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .header("origin", "http://localhost:3000")
        .json(&json!({"model": world::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["access-control-allow-origin"], "http://localhost:3000");
    let other = harness
        .client
        .request(reqwest::Method::OPTIONS, harness.url("/v1/chat/completions"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    assert_eq!(harness.emulator.emulator.inference_requests().len(), 1, "preflights never reach Azure");
    harness.stop().await;
}
