//! Budgets and key rules (issue 18): tokens per day and dollars per month refused with
//! `budget_exhausted` until the period resets, expired keys, the model allow-list with
//! aliases, and the token cap written into the request — in the OpenAI and Anthropic error
//! shapes, over real sockets against the emulator.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{Harness, Setup};
use foundry_proxy::config::{ModelSetting, Price, Settings};
use foundry_proxy::emulator::identities as world;
use foundry_proxy::keys::{Expiry, KeyEntry, Limits, Rules, add_entry};
use serde_json::{Value, json};

fn keys_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fp-budgets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn add(path: &Path, name: &str, rules: Rules) -> String {
    let mut entry = KeyEntry::new(name, Limits::default());
    entry.rules = rules;
    add_entry(path, &entry).expect("key added")
}

fn setup(path: &Path) -> Setup {
    let aliases: BTreeMap<String, ModelSetting> =
        [("fast".to_owned(), world::CHAT_DEPLOYMENT.to_owned().into())]
            .into_iter()
            .collect();
    let prices: BTreeMap<String, Price> = [(
        world::CHAT_DEPLOYMENT.to_owned(),
        Price {
            input_per_million: 10_000.0,
            output_per_million: 20_000.0,
            cached_input_per_million: None,
        },
    )]
    .into_iter()
    .collect();
    Setup {
        settings: Settings {
            keys_file: Some(path.to_path_buf()),
            models: Some(aliases),
            prices: Some(prices),
            ..Settings::default()
        },
        ..Setup::default()
    }
}

async fn post(harness: &Harness, path: &str, key: &str, body: &Value) -> reqwest::Response {
    harness
        .client
        .post(harness.url(path))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .expect("answer")
}

async fn chat(harness: &Harness, key: &str, model: &str) -> reqwest::Response {
    post(
        harness,
        "/v1/chat/completions",
        key,
        &Harness::chat(model, "hello there"),
    )
    .await
}

async fn anthropic(harness: &Harness, key: &str, body: &Value) -> reqwest::Response {
    harness
        .client
        .post(harness.url("/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .expect("answer")
}

fn claude(max_tokens: Option<u64>) -> Value {
    let mut body = json!({
        "model": world::CLAUDE_DEPLOYMENT,
        "messages": [{"role": "user", "content": "tell me a long story about budgets"}],
    });
    if let Some(n) = max_tokens {
        body["max_tokens"] = json!(n);
    }
    body
}

fn seconds(response: &reqwest::Response, header: &str) -> u64 {
    response.headers()[header]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("a number")
}

/// A daily token budget admits requests until Azure's reported usage reaches it, then 429
/// `budget_exhausted` with `retry-after` (and `retry-after-ms`) until the next UTC midnight,
/// in the OpenAI shape and, on the Anthropic route, in Anthropic's; the refused requests never
/// reach Azure, another key is unaffected, and the member's `/status` shows the budget spent
/// with its reset time.
#[tokio::test]
async fn tokens_per_day_exhausted() {
    let path = keys_file("daily.toml");
    let daily = add(
        &path,
        "daily",
        Rules {
            tokens_per_day: Some(40),
            ..Rules::default()
        },
    );
    let free = add(&path, "free", Rules::default());
    let harness = Harness::start_with(setup(&path)).await;
    let mut admitted = 0;
    let refused = loop {
        let response = chat(&harness, &daily, world::CHAT_DEPLOYMENT).await;
        if response.status() == 429 {
            break response;
        }
        assert_eq!(response.status(), 200);
        admitted += 1;
        assert!(admitted < 40, "the budget never ran out");
    };
    assert!(admitted >= 1);
    let forwarded = harness.emulator.emulator.inference_requests().len();
    assert_eq!(
        forwarded, admitted,
        "the refused request never reached Azure"
    );
    let retry_after = seconds(&refused, "retry-after");
    let now = foundry_proxy::clock::unix_now_signed();
    let midnight = foundry_proxy::budget::day_end(now);
    let expected = u64::try_from(midnight - now).expect("ahead");
    assert!(
        retry_after.abs_diff(expected) <= 2,
        "{retry_after} s, until midnight {expected} s"
    );
    assert_eq!(seconds(&refused, "retry-after-ms"), retry_after * 1000);
    let error = common::error_of(refused).await;
    assert_eq!(error["code"], "budget_exhausted");
    assert_eq!(error["type"], "rate_limit_error");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("'daily'") && message.contains("40 tokens per UTC day"),
        "{message}"
    );

    let claude_refused = anthropic(&harness, &daily, &claude(Some(64))).await;
    assert_eq!(claude_refused.status(), 429);
    assert!(claude_refused.headers().contains_key("retry-after-ms"));
    let body: Value = claude_refused.json().await.expect("json");
    assert_eq!(body["type"], "error", "Anthropic's shape: {body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(body["error"]["code"], "budget_exhausted", "{body}");

    assert_eq!(
        chat(&harness, &free, world::CHAT_DEPLOYMENT).await.status(),
        200
    );
    let standing = harness.status_with(&daily).await;
    let budget = &standing["budgets"][0];
    assert_eq!(budget["budget"], "tokens_per_day", "{standing}");
    assert_eq!(budget["limit"], 40.0);
    assert!(budget["used"].as_f64() >= Some(40.0), "{standing}");
    assert_eq!(budget["left"], 0.0);
    assert_eq!(
        budget["resets_at"],
        foundry_proxy::budget::rfc3339(midnight),
        "{standing}"
    );
    harness.stop().await;
}

/// A dollar budget is priced from `[prices."MODEL"]` (an alias priced as its deployment): once
/// the month's cost reaches it, the key is refused until the first of the next month.
#[tokio::test]
async fn usd_per_month_from_prices() {
    let path = keys_file("dollars.toml");
    let key = add(
        &path,
        "spender",
        Rules {
            usd_per_month: Some(0.05),
            ..Rules::default()
        },
    );
    let harness = Harness::start_with(setup(&path)).await;
    // At $10,000 per million input tokens, a handful of tokens costs more than $0.05.
    assert_eq!(chat(&harness, &key, "fast").await.status(), 200);
    let refused = chat(&harness, &key, "fast").await;
    assert_eq!(refused.status(), 429);
    let now = foundry_proxy::clock::unix_now_signed();
    let expected = u64::try_from(foundry_proxy::budget::month_end(now) - now).expect("ahead");
    assert!(seconds(&refused, "retry-after").abs_diff(expected) <= 2);
    let error = common::error_of(refused).await;
    assert_eq!(error["code"], "budget_exhausted");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("$0.05 per UTC month")),
        "{error}"
    );
    let standing = harness.status_with(&key).await;
    assert_eq!(
        standing["budgets"][0]["budget"], "usd_per_month",
        "{standing}"
    );
    assert!(
        standing["budgets"][0]["used"].as_f64() > Some(0.05),
        "{standing}"
    );
    harness.stop().await;
}

/// A key past its `expires` is refused 401 `key_expired` (Anthropic's shape on its route) and
/// nothing is forwarded; a key expiring later works, and its `/status` shows the expiry.
#[tokio::test]
async fn expired_key() {
    let path = keys_file("expiry.toml");
    let rules = |at: &str| Rules {
        expires: Some(Expiry::parse(at).expect("rfc 3339")),
        ..Rules::default()
    };
    let old = add(&path, "old", rules("2020-01-01T00:00:00Z"));
    let later = add(&path, "later", rules("2999-01-01T00:00:00+01:00"));
    let harness = Harness::start_with(setup(&path)).await;
    let refused = chat(&harness, &old, world::CHAT_DEPLOYMENT).await;
    assert_eq!(refused.status(), 401);
    let error = common::error_of(refused).await;
    assert_eq!(error["code"], "key_expired");
    assert!(
        error["message"]
            .as_str()
            .is_some_and(|m| m.contains("'old'") && m.contains("2020-01-01T00:00:00Z")),
        "{error}"
    );
    let claude_refused = anthropic(&harness, &old, &claude(Some(16))).await;
    assert_eq!(claude_refused.status(), 401);
    let body: Value = claude_refused.json().await.expect("json");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    assert_eq!(body["error"]["code"], "key_expired", "{body}");
    assert!(harness.emulator.emulator.inference_requests().is_empty());
    assert_eq!(
        chat(&harness, &later, world::CHAT_DEPLOYMENT)
            .await
            .status(),
        200
    );
    assert_eq!(
        harness.status_with(&later).await["expires"],
        "2999-01-01T00:00:00+01:00"
    );
    harness.stop().await;
}

/// `models` allows the listed models only; an alias and its deployment are one model. Any
/// other model is 403 `model_not_allowed` naming what is allowed, and is never forwarded.
#[tokio::test]
async fn model_allow_list_with_aliases() {
    let path = keys_file("models.toml");
    let key = add(
        &path,
        "narrow",
        Rules {
            models: Some(vec!["fast".to_owned()]),
            ..Rules::default()
        },
    );
    let harness = Harness::start_with(setup(&path)).await;
    assert_eq!(chat(&harness, &key, "fast").await.status(), 200);
    assert_eq!(
        chat(&harness, &key, world::CHAT_DEPLOYMENT).await.status(),
        200,
        "the deployment behind the alias is the same model"
    );
    let before = harness.emulator.emulator.inference_requests().len();
    let refused = post(
        &harness,
        "/v1/embeddings",
        &key,
        &json!({"model": world::EMBEDDING_DEPLOYMENT, "input": "hi"}),
    )
    .await;
    assert_eq!(refused.status(), 403);
    let error = common::error_of(refused).await;
    assert_eq!(error["code"], "model_not_allowed");
    assert_eq!(error["type"], "permission_error");
    assert!(error["fix"].to_string().contains("fast"), "{error}");
    let claude_refused = anthropic(&harness, &key, &claude(Some(16))).await;
    assert_eq!(claude_refused.status(), 403);
    let body: Value = claude_refused.json().await.expect("json");
    assert_eq!(body["error"]["code"], "model_not_allowed", "{body}");
    assert_eq!(
        harness.emulator.emulator.inference_requests().len(),
        before,
        "refused models never reach Azure"
    );
    assert_eq!(harness.status_with(&key).await["models"], json!(["fast"]));
    harness.stop().await;
}

/// `max_tokens_cap` rewrites what a request asks for: Chat Completions without a limit or
/// over it, the Responses API's `max_output_tokens`, and Anthropic's `max_tokens`; a request
/// asking for less keeps its own limit.
#[tokio::test]
async fn max_tokens_cap() {
    let path = keys_file("cap.toml");
    let key = add(
        &path,
        "capped",
        Rules {
            max_tokens_cap: Some(3),
            ..Rules::default()
        },
    );
    let harness = Harness::start_with(setup(&path)).await;
    let long = "please write a long answer with many many words in it";
    for (asked, expected) in [(None, 3), (Some(1000), 3), (Some(2), 2)] {
        let mut body = Harness::chat(world::CHAT_DEPLOYMENT, long);
        if let Some(n) = asked {
            body["max_tokens"] = json!(n);
        }
        let answer: Value = post(&harness, "/v1/chat/completions", &key, &body)
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(
            answer["usage"]["completion_tokens"], expected,
            "{asked:?}: {answer}"
        );
        assert_eq!(answer["choices"][0]["finish_reason"], "length", "{answer}");
    }
    let answer: Value = post(
        &harness,
        "/v1/responses",
        &key,
        &json!({"model": world::CHAT_DEPLOYMENT, "input": long, "max_output_tokens": 500}),
    )
    .await
    .json()
    .await
    .expect("json");
    assert_eq!(answer["max_output_tokens"], 3, "{answer}");
    let answer: Value = anthropic(&harness, &key, &claude(Some(4096)))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(answer["usage"]["output_tokens"], 3, "{answer}");
    assert_eq!(answer["stop_reason"], "max_tokens", "{answer}");
    assert_eq!(harness.status_with(&key).await["max_tokens_cap"], 3);
    harness.stop().await;
}
