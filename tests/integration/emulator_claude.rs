//! The emulator plays Claude on Foundry: the Anthropic Messages API at `/anthropic/v1/messages`
//! (JSON, the SSE event sequence, tool_use round trips), count_tokens, the refusals of these
//! routes, and Azure's `api_not_supported` 404 for a Claude deployment on the OpenAI routes.

use crate::common::emulator_client::*;
use foundry_proxy::emulator::{RunningEmulator, identities};
use serde_json::{Value, json};

fn messages_url(emu: &RunningEmulator) -> String {
    format!("{}/anthropic/v1/messages", emu.url())
}

/// A one-turn Messages body for the Claude deployment, with `extra` members merged in.
fn ask(extra: Value) -> Value {
    let mut body = json!({
        "model": identities::CLAUDE_DEPLOYMENT,
        "max_tokens": 256,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "say hello"}],
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

const ANTHROPIC_HEADERS: &[(&str, &str)] = &[("anthropic-version", "2023-06-01")];

/// The `(event, data)` pairs of an SSE body, checking each `data` names its own event.
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let name = frame
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .expect("event line");
            let data: Value = serde_json::from_str(
                frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .expect("data line"),
            )
            .expect("data json");
            assert_eq!(data["type"], name, "{frame}");
            (name.to_owned(), data)
        })
        .collect()
}

/// A message in Anthropic's shape, with usage that count_tokens agrees with.
#[tokio::test]
async fn messages_answer_in_anthropics_shape() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let resp = post(
        &messages_url(&emu),
        Some(&token),
        &ask(json!({})),
        ANTHROPIC_HEADERS,
    )
    .await;
    assert!(resp.headers().contains_key("request-id"));
    let (status, body) = status_and_json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].as_str().expect("id").starts_with("msg_"));
    assert_eq!(
        (&body["type"], &body["role"], &body["model"]),
        (
            &json!("message"),
            &json!("assistant"),
            &json!("claude-sonnet-4-5")
        )
    );
    assert_eq!(body["content"][0]["type"], "text");
    assert_eq!(
        body["content"][0]["text"],
        "Hello from the foundry-proxy emulator. You said: say hello"
    );
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["stop_sequence"], Value::Null);
    let usage = &body["usage"];
    assert_eq!(usage["output_tokens"], 9, "{usage}");
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(usage["cache_read_input_tokens"], 0);
    let input = usage["input_tokens"].as_u64().expect("input_tokens");
    assert_eq!(input, 5, "system and message words");

    let mut counted = ask(json!({}));
    counted.as_object_mut().map(|b| b.remove("max_tokens"));
    let (status, body) = status_and_json(
        post(
            &format!("{}/count_tokens", messages_url(&emu)),
            Some(&token),
            &counted,
            ANTHROPIC_HEADERS,
        )
        .await,
    )
    .await;
    assert_eq!((status, body), (200, json!({"input_tokens": input})));

    // An answer longer than max_tokens is cut there.
    let (status, body) = status_and_json(
        post(
            &messages_url(&emu),
            Some(&token),
            &ask(json!({"max_tokens": 3})),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stop_reason"], "max_tokens");
    assert_eq!(body["content"][0]["text"], "Hello from the ");
    assert_eq!(body["usage"]["output_tokens"], 3);
}

/// A stream is Anthropic's exact event sequence, with the same text and usage as the JSON answer.
#[tokio::test]
async fn stream_is_the_anthropic_event_sequence() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let resp = post(
        &messages_url(&emu),
        Some(&token),
        &ask(json!({"stream": true})),
        &[
            ("x-emulator-chunks", "3"),
            ("x-emulator-chunk-delay-ms", "0"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let events = events(&resp.text().await.expect("body"));
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    let start = &events[0].1["message"];
    assert_eq!(start["content"], json!([]));
    assert_eq!(start["stop_reason"], Value::Null);
    assert_eq!(start["usage"]["input_tokens"], 5);
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().expect("text").to_owned()
        })
        .collect();
    assert_eq!(
        text,
        "Hello from the foundry-proxy emulator. You said: say hello"
    );
    let delta = &events[7].1;
    assert_eq!(
        delta["delta"],
        json!({"stop_reason": "end_turn", "stop_sequence": null})
    );
    assert_eq!(delta["usage"]["output_tokens"], 3);
}

/// Tools offered: a tool_use block whose input fits the schema, streamed as input_json_delta;
/// the tool_result that answers it gets the final text with `end_turn`.
#[tokio::test]
async fn tool_use_round_trip() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let tools = json!([{
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    }]);
    let first =
        ask(json!({"tools": tools, "messages": [{"role": "user", "content": "weather in Oslo?"}]}));
    let (status, body) =
        status_and_json(post(&messages_url(&emu), Some(&token), &first, &[]).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stop_reason"], "tool_use");
    let call = &body["content"][0];
    assert_eq!(call["type"], "tool_use");
    assert_eq!(call["name"], "get_weather");
    assert!(call["id"].as_str().expect("id").starts_with("toolu_"));
    assert!(call["input"]["city"].is_string(), "{call}");
    assert!(call["input"]["days"].is_i64(), "{call}");

    // The same request streamed: the call's input arrives as input_json_delta fragments.
    let mut streamed = first.clone();
    streamed["stream"] = json!(true);
    let resp = post(
        &messages_url(&emu),
        Some(&token),
        &streamed,
        &[("x-emulator-chunk-delay-ms", "0")],
    )
    .await;
    let events = events(&resp.text().await.expect("body"));
    assert_eq!(events[1].1["content_block"]["type"], "tool_use");
    assert_eq!(events[1].1["content_block"]["input"], json!({}));
    let partial: String = events
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| {
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"]
                .as_str()
                .expect("partial")
                .to_owned()
        })
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&partial).expect("input json"),
        call["input"]
    );
    let delta = events
        .iter()
        .find(|(n, _)| n == "message_delta")
        .expect("delta");
    assert_eq!(delta.1["delta"]["stop_reason"], "tool_use");

    let second = ask(json!({"tools": tools, "messages": [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": [call.clone()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}]},
    ]}));
    let (status, body) =
        status_and_json(post(&messages_url(&emu), Some(&token), &second, &[]).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(
        body["content"][0]["text"],
        "Hello from the foundry-proxy emulator. Tool results: get_weather returned sunny"
    );
}

/// The Claude deployment is served only on the Messages API; other models are not on it.
#[tokio::test]
async fn claude_is_only_on_the_messages_api() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let not_supported = json!({"error": {"code": "api_not_supported", "message": "Requested API is currently not supported"}});
    let v1 = |op: &str| format!("{}/openai/v1/{op}", emu.url());
    let chat = json!({"model": identities::CLAUDE_DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]});
    let responses = json!({"model": identities::CLAUDE_DEPLOYMENT, "input": "hi"});
    for (url, body) in [
        (v1("chat/completions"), &chat),
        (v1("responses"), &responses),
        (chat_url(&emu, identities::CLAUDE_DEPLOYMENT), &chat),
    ] {
        assert_eq!(
            status_and_json(post(&url, Some(&token), body, &[]).await).await,
            (404, not_supported.clone()),
            "{url}"
        );
    }

    let (status, body) = status_and_json(
        post(
            &messages_url(&emu),
            Some(&token),
            &ask(json!({"model": identities::CHAT_DEPLOYMENT})),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"type": "error", "error": {"type": "not_found_error", "message": "model: gpt-4o-mini"}})
        )
    );
    let mut no_max = ask(json!({}));
    no_max.as_object_mut().map(|b| b.remove("max_tokens"));
    assert_eq!(
        status_and_json(post(&messages_url(&emu), Some(&token), &no_max, &[]).await).await,
        (
            400,
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}})
        )
    );
}

/// The Entra checks of the inference side, with the resource's refusal bodies; injected faults.
#[tokio::test]
async fn refusals_on_the_anthropic_routes() {
    let emu = start().await;
    let url = messages_url(&emu);
    let (status, body) = status_and_json(post(&url, None, &ask(json!({})), &[]).await).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["statusCode"], 401);
    // A key in `x-api-key` (the emulator has none) is refused like one in `api-key`, and the
    // request records keep the header's name but never its value.
    let (status, body) = status_and_json(
        post(
            &url,
            None,
            &ask(json!({})),
            &[("x-api-key", "sk-secret-key")],
        )
        .await,
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "401");
    let state = control_state(&emu).await.to_string();
    assert!(state.contains("x-api-key"), "{state}");
    assert!(!state.contains("sk-secret-key"), "{state}");

    let no_role = token_for(
        &emu,
        identities::TENANT_ID,
        identities::NO_ROLE_CLIENT_ID,
        identities::NO_ROLE_CLIENT_SECRET,
    )
    .await;
    let (status, body) =
        status_and_json(post(&url, Some(&no_role), &ask(json!({})), &[]).await).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "PermissionDenied");
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.contains(identities::NO_ROLE_OBJECT_ID), "{message}");
    assert!(message.contains("POST /anthropic/v1/messages"), "{message}");

    let other = token_for(
        &emu,
        identities::OTHER_TENANT_ID,
        identities::OTHER_CLIENT_ID,
        identities::OTHER_CLIENT_SECRET,
    )
    .await;
    let (status, body) =
        status_and_json(post(&url, Some(&other), &ask(json!({})), &[]).await).await;
    assert_eq!(status, 400, "{body}");

    // Both audiences are accepted.
    let claims = emu
        .emulator
        .token_claims(identities::CLIENT_ID, "https://ai.azure.com", 600)
        .expect("claims");
    let ai = emu.emulator.sign_token(&claims).expect("sign");
    assert_eq!(
        post(&url, Some(&ai), &ask(json!({})), &[]).await.status(),
        200
    );

    let token = good_token(&emu).await;
    let fault = |name: &'static str| {
        let url = url.clone();
        let token = token.clone();
        async move {
            let resp = post(
                &url,
                Some(&token),
                &ask(json!({})),
                &[("x-emulator-fault", name)],
            )
            .await;
            let retry = resp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("v").to_owned());
            let (status, body) = status_and_json(resp).await;
            (status, body["error"]["type"].clone(), retry)
        }
    };
    assert_eq!(
        fault("rate-limit").await,
        (429, json!("rate_limit_error"), Some("45".to_owned()))
    );
    assert_eq!(
        fault("high-demand").await,
        (529, json!("overloaded_error"), None)
    );
    assert_eq!(fault("server-error").await, (500, json!("api_error"), None));
    let (status, body) = status_and_json(
        post(
            &url,
            Some(&token),
            &ask(json!({})),
            &[("x-emulator-fault", "permission-denied")],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("PermissionDenied"))
    );
}
