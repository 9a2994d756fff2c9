//! Claude through the proxy: the Anthropic dialect's routes, the headers that cross, access
//! keys from `x-api-key`, errors in Anthropic's shape, and Claude's usage in the limits, the
//! metrics and `/status` — against the emulator's Claude deployment and stand-in upstreams.

use crate::common;

use common::{Harness, Setup};
use foundry_proxy::config::{Settings, SizeSetting};
use foundry_proxy::emulator::identities as world;
use serde_json::{Value, json};

/// A one-turn Messages body for the Claude deployment.
fn ask(text: &str) -> Value {
    json!({
        "model": world::CLAUDE_DEPLOYMENT,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": text}],
    })
}

/// POSTs `body` to `path` as the Anthropic SDK does: `x-api-key` and `anthropic-version`.
async fn post_anthropic(
    harness: &Harness,
    path: &str,
    key: &str,
    body: &Value,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut request = harness
        .client
        .post(harness.url(path))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body);
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.expect("answer")
}

/// The body of an error in Anthropic's shape (checked), and its `error` member.
async fn anthropic_error(response: reqwest::Response) -> Value {
    let body: Value = response.json().await.expect("json error");
    assert_eq!(body["type"], "error", "{body}");
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    body["error"].clone()
}

/// Both inbound forms — `/v1/messages` (`ANTHROPIC_BASE_URL`) and `/anthropic/v1/…` (a
/// Foundry base URL) — reach `{resource}/anthropic/v1/…` with no api-version, whatever the
/// style; count_tokens too. The caller's `x-api-key`, `api-key` and `Authorization` never
/// reach Azure; `anthropic-version` and `anthropic-beta` do, with the proxy's Bearer token.
#[tokio::test]
async fn routes_and_headers() {
    for api in ["openai-v1", "deployments"] {
        let harness = Harness::start_with(Setup {
            settings: Settings {
                api: Some(api.into()),
                ..Settings::default()
            },
            ..Setup::default()
        })
        .await;
        for (path, upstream) in [
            ("/v1/messages", "/anthropic/v1/messages"),
            ("/anthropic/v1/messages", "/anthropic/v1/messages"),
            (
                "/v1/messages/count_tokens",
                "/anthropic/v1/messages/count_tokens",
            ),
            (
                "/anthropic/v1/messages/count_tokens",
                "/anthropic/v1/messages/count_tokens",
            ),
        ] {
            let response = harness
                .client
                .post(harness.url(path))
                .header("x-api-key", "sk-ant-caller")
                .header("api-key", "caller-azure-key")
                .header("authorization", "Bearer sk-caller")
                .header("anthropic-version", "2023-06-01")
                .header("anthropic-beta", "token-counting-2024-11-01")
                .json(&ask("hello there"))
                .send()
                .await
                .expect("answer");
            let status = response.status();
            let body: Value = response.json().await.expect("json");
            assert_eq!(status, 200, "{api} {path}: {body}");
            if upstream.ends_with("count_tokens") {
                assert!(body["input_tokens"].as_u64().is_some(), "{body}");
            } else {
                assert_eq!(body["type"], "message", "{body}");
            }
            let record = harness
                .emulator
                .emulator
                .inference_requests()
                .pop()
                .expect("recorded");
            assert_eq!(record.path, upstream, "{api} {path}");
            assert_eq!(record.query, None, "no api-version on the Messages API");
            assert_eq!(
                record.token_appid.as_deref(),
                Some(world::CLIENT_ID),
                "the proxy's own token"
            );
            let header = |name: &str| {
                record
                    .headers
                    .iter()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.as_str())
                    .collect::<Vec<_>>()
            };
            assert!(header("x-api-key").is_empty(), "{:?}", record.headers);
            assert!(header("api-key").is_empty(), "{:?}", record.headers);
            assert_eq!(header("authorization").len(), 1);
            assert_eq!(header("anthropic-version"), ["2023-06-01"]);
            assert_eq!(header("anthropic-beta"), ["token-counting-2024-11-01"]);
        }
        harness.stop().await;
    }
}

/// `FOUNDRY_ANTHROPIC_ENDPOINT` sends Claude elsewhere (here a stand-in upstream), while
/// OpenAI traffic still goes to `FOUNDRY_ENDPOINT`.
#[tokio::test]
async fn anthropic_endpoint_setting() {
    let app = axum::Router::new().fallback(|uri: http::Uri| async move {
        axum::Json(json!({"type": "message", "seen": uri.to_string(), "usage": {"input_tokens": 1, "output_tokens": 1}}))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = format!("http://{}/anthropic", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let harness = Harness::start_with(Setup {
        settings: Settings {
            anthropic_endpoint: Some(upstream),
            ..Settings::default()
        },
        ..Setup::default()
    })
    .await;
    let body: Value = post_anthropic(&harness, "/v1/messages", "x", &ask("hi"), &[])
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(body["seen"], "/anthropic/v1/messages", "{body}");
    let chat = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "hi"),
        )
        .await;
    assert_eq!(chat.status(), 200);
    harness.stop().await;
}

/// With access keys, the key is taken from `x-api-key` (what `ANTHROPIC_API_KEY` sets); a
/// wrong one is refused in Anthropic's shape (so the SDK raises `AuthenticationError`), and
/// the same refusal on an OpenAI route keeps OpenAI's shape.
#[tokio::test]
async fn access_key_from_x_api_key() {
    let mut setup = Setup::default();
    let key = common::add_access_key(&mut setup, "carol");
    let harness = Harness::start_with(setup).await;
    let ok = post_anthropic(&harness, "/v1/messages", &key, &ask("hi"), &[]).await;
    assert_eq!(ok.status(), 200);
    let wrong = post_anthropic(
        &harness,
        "/anthropic/v1/messages",
        "fpk-wrong",
        &ask("hi"),
        &[],
    )
    .await;
    assert_eq!(wrong.status(), 401);
    let error = anthropic_error(wrong).await;
    assert_eq!(error["type"], "authentication_error");
    assert_eq!(error["code"], "invalid_api_key");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Fix:"),
        "{error}"
    );
    let openai = harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .header("x-api-key", "fpk-wrong")
        .json(&Harness::chat(world::CHAT_DEPLOYMENT, "hi"))
        .send()
        .await
        .expect("answer");
    assert_eq!(openai.status(), 401);
    let body: Value = openai.json().await.expect("json");
    assert_eq!(body["error"]["code"], "invalid_api_key");
    assert!(body.get("type").is_none(), "OpenAI shape: {body}");
    assert_eq!(
        harness.emulator.emulator.inference_requests().len(),
        1,
        "refusals never reach Azure"
    );
    harness.stop().await;
}

/// The proxy's own refusals (a body over the limit, the browser guard's origin check, an
/// unknown Anthropic path) and Azure's refusals it explains (a missing role) come out in
/// Anthropic's shape, with the explanation's members.
#[tokio::test]
async fn errors_in_anthropic_shape() {
    let harness = Harness::start_with(Setup {
        settings: Settings {
            max_body: Some(SizeSetting::Bytes(4096)),
            ..Settings::default()
        },
        ..Setup::default()
    })
    .await;
    let big = ask(&"word ".repeat(2000));
    let too_large = post_anthropic(&harness, "/v1/messages", "x", &big, &[]).await;
    assert_eq!(too_large.status(), 413);
    let error = anthropic_error(too_large).await;
    assert_eq!(error["type"], "request_too_large");
    assert_eq!(error["code"], "request_too_large");

    let page = post_anthropic(
        &harness,
        "/anthropic/v1/messages",
        "x",
        &ask("hi"),
        &[("origin", "https://evil.example")],
    )
    .await;
    assert_eq!(page.status(), 403);
    let error = anthropic_error(page).await;
    assert_eq!(error["type"], "permission_error");
    assert_eq!(error["code"], "origin_not_allowed");

    let unknown = post_anthropic(&harness, "/anthropic/v2/messages", "x", &ask("hi"), &[]).await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(anthropic_error(unknown).await["type"], "not_found_error");

    let denied = post_anthropic(
        &harness,
        "/v1/messages",
        "x",
        &ask("hi"),
        &[("x-emulator-fault", "permission-denied")],
    )
    .await;
    let status = denied.status();
    let error = anthropic_error(denied).await;
    assert_eq!(
        error["code"], "missing_role_assignment",
        "{status}: {error}"
    );
    assert!(
        error["fix"].as_array().is_some_and(|f| !f.is_empty()),
        "{error}"
    );
    assert!(error["upstream"]["body"].is_object(), "{error}");
    harness.stop().await;
}

/// Claude's usage — from JSON answers and from streams (`message_start` and `message_delta`),
/// which pass through byte for byte — counts in `/status` under the body's model, and a key's
/// tokens-per-minute limit is enforced from it (429 `rate_limit_error`).
#[tokio::test]
async fn usage_and_token_limit() {
    use foundry_proxy::keys::{Limits, file::add_key};
    let dir = std::env::temp_dir().join(format!("fp-anthropic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("keys.toml");
    let _ = std::fs::remove_file(&path);
    let key = add_key(
        &path,
        "dana",
        Limits {
            requests_per_minute: None,
            tokens_per_minute: Some(60),
        },
    )
    .expect("key");
    let harness = Harness::start_with(Setup {
        settings: Settings {
            keys_file: Some(path),
            ..Settings::default()
        },
        ..Setup::default()
    })
    .await;
    let first: Value = post_anthropic(&harness, "/v1/messages", &key, &ask("count my tokens"), &[])
        .await
        .json()
        .await
        .expect("json");
    let usage = &first["usage"];
    let json_tokens = usage["input_tokens"].as_u64().expect("input")
        + usage["output_tokens"].as_u64().expect("output");
    let mut streamed = ask("stream these words please");
    streamed["stream"] = json!(true);
    let stream = post_anthropic(
        &harness,
        "/anthropic/v1/messages",
        &key,
        &streamed,
        &[("x-emulator-chunks", "4")],
    )
    .await;
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    );
    let text = stream.text().await.expect("text");
    assert!(text.contains("event: message_start") && text.contains("event: message_stop"));
    let delta_output = text
        .split("\n\n")
        .find(|e| e.starts_with("event: message_delta"))
        .and_then(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .and_then(|d| serde_json::from_str::<Value>(d).ok())
        .and_then(|d| d["usage"]["output_tokens"].as_u64())
        .expect("message_delta usage");
    let row = harness.usage_row(&key, "dana").await;
    assert_eq!(row["model"], world::CLAUDE_DEPLOYMENT);
    assert_eq!(row["requests"], 2);
    let completion = row["completion_tokens"].as_u64().unwrap_or(0);
    let prompt = row["prompt_tokens"].as_u64().unwrap_or(0);
    assert_eq!(
        completion,
        usage["output_tokens"].as_u64().unwrap_or(0) + delta_output,
        "the stream's output tokens (message_delta) counted: {row}"
    );
    assert!(
        prompt + completion > json_tokens,
        "the stream's tokens were counted too: {row}"
    );
    let mut refused = None;
    for _ in 0..20 {
        let response = post_anthropic(&harness, "/v1/messages", &key, &ask("more"), &[]).await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let refused = refused.expect("the token budget runs out");
    assert!(refused.headers().get("retry-after").is_some());
    let error = anthropic_error(refused).await;
    assert_eq!(error["type"], "rate_limit_error");
    assert_eq!(error["code"], "token_limit_exceeded");
    harness.stop().await;
}
