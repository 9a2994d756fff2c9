//! Sharing one credential across a team: model aliases, CORS for browser tools, access keys,
//! per-key limits, usage and metrics — over real sockets against the emulator.

use crate::common;

use std::collections::BTreeMap;

use common::{Harness, Setup};
use foundry_proxy::config::{ModelSetting, Settings};
use foundry_proxy::emulator::identities as world;
use serde_json::{Value, json};

fn aliases(api: &str) -> Setup {
    let models: BTreeMap<String, ModelSetting> = [(
        "fast".to_owned(),
        ModelSetting::from(world::CHAT_DEPLOYMENT.to_owned()),
    )]
    .into_iter()
    .collect();
    Setup {
        settings: Settings {
            api: Some(api.into()),
            models: Some(models),
            ..Settings::default()
        },
        ..Setup::default()
    }
}

/// With a `[models]` table, `/v1/models` lists the friendly names in the OpenAI shape, and a
/// friendly name reaches the right deployment in the v1 style (body rewritten) and in the
/// deployments style (URL).
#[tokio::test]
async fn model_aliases() {
    for (api, path) in [
        ("openai-v1", "/openai/v1/chat/completions"),
        (
            "deployments",
            "/openai/deployments/gpt-4o-mini/chat/completions",
        ),
    ] {
        let harness = Harness::start_with(aliases(api)).await;
        let list: Value = harness.get_json("/v1/models").await;
        assert_eq!(list["object"], "list");
        assert_eq!(list["data"][0]["id"], "fast", "{api}");
        assert_eq!(list["data"][0]["object"], "model");
        let response = harness
            .post_json("/v1/chat/completions", Harness::chat("fast", "via alias"))
            .await;
        let status = response.status();
        let body: Value = response.json().await.expect("json");
        assert_eq!(status, 200, "{api}: {body}");
        assert_eq!(
            body["model"], "gpt-4o-mini-2024-07-18",
            "{api}: answered by the aliased deployment"
        );
        let record = harness
            .emulator
            .emulator
            .inference_requests()
            .pop()
            .expect("recorded");
        assert_eq!(record.path, path, "{api}");
        assert_eq!(
            record.deployment.as_deref(),
            Some(world::CHAT_DEPLOYMENT),
            "{api}"
        );
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
    assert!(
        !response
            .headers()
            .contains_key("access-control-allow-origin"),
        "off by default"
    );
    harness.stop().await;

    let setup = Setup {
        settings: Settings {
            cors_origins: Some(vec!["http://localhost:3000".into()]),
            ..Settings::default()
        },
        ..Setup::default()
    };
    let harness = Harness::start_with(setup).await;
    let preflight = harness
        .client
        .request(
            reqwest::Method::OPTIONS,
            harness.url("/v1/chat/completions"),
        )
        .header("origin", "http://localhost:3000")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success());
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let allowed = preflight.headers()["access-control-allow-headers"]
        .to_str()
        .expect("ascii")
        .to_ascii_lowercase();
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
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    let other = harness
        .client
        .request(
            reqwest::Method::OPTIONS,
            harness.url("/v1/chat/completions"),
        )
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("preflight");
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    assert_eq!(
        harness.emulator.emulator.inference_requests().len(),
        1,
        "preflights never reach Azure"
    );
    harness.stop().await;
}

fn keys_file(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fp-team-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn with_keys(path: &std::path::Path) -> Setup {
    Setup {
        settings: Settings {
            keys_file: Some(path.to_path_buf()),
            ..Settings::default()
        },
        ..Setup::default()
    }
}

async fn chat_with(harness: &Harness, key: Option<&str>, header: &str) -> reqwest::Response {
    let mut request = harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .json(&Harness::chat(world::CHAT_DEPLOYMENT, "hi"));
    if let Some(key) = key {
        request = match header {
            "api-key" => request.header("api-key", key),
            _ => request.bearer_auth(key),
        };
    }
    request.send().await.expect("answer")
}

/// With a keys file, a request needs a valid key (Bearer or api-key, as the SDKs send it);
/// a missing or wrong one is 401 invalid_api_key and never reaches Azure; /status and
/// /metrics need a key too.
#[tokio::test]
async fn access_keys_required() {
    use foundry_proxy::keys::{Limits, file::add_key};
    let path = keys_file("required.toml");
    let key = add_key(&path, "alice", Limits::default()).expect("key");
    let harness = Harness::start_with(with_keys(&path)).await;
    for (presented, header) in [
        (None, "authorization"),
        (Some("fpk-wrong"), "authorization"),
        (Some("fpk-wrong"), "api-key"),
    ] {
        let response = chat_with(&harness, presented, header).await;
        assert_eq!(response.status(), 401, "{presented:?} {header}");
        assert_eq!(common::error_of(response).await["code"], "invalid_api_key");
    }
    assert!(harness.emulator.emulator.inference_requests().is_empty());
    assert_eq!(
        chat_with(&harness, Some(&key), "authorization")
            .await
            .status(),
        200
    );
    assert_eq!(
        chat_with(&harness, Some(&key), "api-key").await.status(),
        200
    );
    assert_eq!(
        harness
            .client
            .get(harness.url("/status"))
            .send()
            .await
            .expect("status")
            .status(),
        401
    );
    assert_eq!(
        harness
            .client
            .get(harness.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .status(),
        401
    );
    let status = harness
        .client
        .get(harness.url("/status"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("status");
    assert_eq!(status.status(), 200);
    harness.stop().await;
}

/// A key with 3 requests per minute gets exactly 3, then 429 rate_limit_exceeded with a
/// retry-after; another key is unaffected.
#[tokio::test]
async fn requests_per_minute_exactly_at_the_boundary() {
    use foundry_proxy::keys::{Limits, file::add_key};
    let path = keys_file("rpm.toml");
    let limited = add_key(
        &path,
        "limited",
        Limits {
            requests_per_minute: Some(3),
            tokens_per_minute: None,
        },
    )
    .expect("key");
    let free = add_key(&path, "free", Limits::default()).expect("key");
    let harness = Harness::start_with(with_keys(&path)).await;
    for i in 0..3 {
        assert_eq!(
            chat_with(&harness, Some(&limited), "authorization")
                .await
                .status(),
            200,
            "request {i}"
        );
    }
    let refused = chat_with(&harness, Some(&limited), "authorization").await;
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let error = common::error_of(refused).await;
    assert_eq!(error["code"], "rate_limit_exceeded");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("'limited'")
    );
    assert_eq!(
        chat_with(&harness, Some(&free), "authorization")
            .await
            .status(),
        200
    );
    assert_eq!(
        harness.emulator.emulator.inference_requests().len(),
        4,
        "the refused request never reached Azure"
    );
    harness.stop().await;
}

/// Tokens per minute count what Azure reported, streams included (the proxy asks for usage
/// and hides the extra chunk from a client that did not ask): once the budget is spent the key
/// gets 429 token_limit_exceeded; /status and /metrics show usage matching the emulator's.
#[tokio::test]
async fn tokens_per_minute_and_usage() {
    use foundry_proxy::keys::{Limits, file::add_key};
    let path = keys_file("tpm.toml");
    let key = add_key(
        &path,
        "bob",
        Limits {
            requests_per_minute: None,
            tokens_per_minute: Some(30),
        },
    )
    .expect("key");
    let mut ops = foundry_proxy::keys::KeyEntry::new("ops", Limits::default());
    ops.role = foundry_proxy::keys::Role::Admin;
    let admin = foundry_proxy::keys::add_entry(&path, &ops).expect("admin key");
    let harness = Harness::start_with(with_keys(&path)).await;
    let first: Value = harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&Harness::chat(
            world::CHAT_DEPLOYMENT,
            "count my tokens please",
        ))
        .send()
        .await
        .expect("answer")
        .json()
        .await
        .expect("json");
    let json_tokens = first["usage"]["total_tokens"].as_u64().expect("usage");
    let stream = harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("x-emulator-chunks", "5")
        .header("x-emulator-chunk-delay-ms", "5")
        .json(&json!({"model": world::CHAT_DEPLOYMENT, "stream": true, "messages": [{"role": "user", "content": "stream"}]}))
        .send()
        .await
        .expect("stream")
        .text()
        .await
        .expect("text");
    assert!(
        !stream.contains("\"usage\""),
        "the client did not ask for usage and must not see it: {stream}"
    );
    assert!(stream.trim_end().ends_with("data: [DONE]"));
    let upstream_asked = harness.emulator.emulator.inference_requests().len();
    assert_eq!(upstream_asked, 2);
    let status: Value = harness
        .client
        .get(harness.url("/status"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    let rows = status["usage"].as_array().expect("usage rows");
    let row = rows
        .iter()
        .find(|r| r["key"] == "bob")
        .unwrap_or_else(|| panic!("no row for bob: {status}"));
    assert_eq!(row["model"], world::CHAT_DEPLOYMENT);
    assert_eq!(row["requests"], 2);
    let counted =
        row["prompt_tokens"].as_u64().unwrap_or(0) + row["completion_tokens"].as_u64().unwrap_or(0);
    assert!(
        counted > json_tokens,
        "the stream's tokens were counted too: {counted} vs {json_tokens}"
    );
    let metrics = harness
        .client
        .get(harness.url("/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("foundry_proxy_requests_total") && metrics.contains("key=\"bob\""),
        "{metrics}"
    );
    // Past 30 tokens the budget is spent.
    let mut refused = None;
    for _ in 0..10 {
        let response = chat_with(&harness, Some(&key), "authorization").await;
        if response.status() == 429 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("the token budget runs out");
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        common::error_of(refused).await["code"],
        "token_limit_exceeded"
    );
    harness.stop().await;
}

/// The keys file is reloaded without restart under concurrent load: a key added is accepted
/// within seconds, a revoked one refused, a broken edit keeps the previous keys — and no
/// request with a key valid throughout ever fails.
#[tokio::test]
async fn keys_reload_under_load() {
    use foundry_proxy::keys::{Limits, file::add_key, file::revoke_key};
    let path = keys_file("reload.toml");
    let steady = add_key(&path, "steady", Limits::default()).expect("key");
    let harness = std::sync::Arc::new(Harness::start_with(with_keys(&path)).await);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let harness = std::sync::Arc::clone(&harness);
            let stop = std::sync::Arc::clone(&stop);
            let steady = steady.clone();
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if chat_with(&harness, Some(&steady), "authorization")
                        .await
                        .status()
                        == 200
                    {
                        ok += 1
                    } else {
                        failed += 1
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let newcomer = add_key(&path, "newcomer", Limits::default()).expect("key");
    let mut accepted = false;
    for _ in 0..50 {
        if chat_with(&harness, Some(&newcomer), "authorization")
            .await
            .status()
            == 200
        {
            accepted = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(accepted, "a new key works without restart");
    let good = std::fs::read_to_string(&path).expect("file");
    std::fs::write(&path, format!("{good}\n[[key]]\nname = broken\n")).expect("broken edit");
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        chat_with(&harness, Some(&newcomer), "authorization")
            .await
            .status(),
        200,
        "a broken edit keeps the previous keys"
    );
    std::fs::write(&path, &good).expect("fixed");
    revoke_key(&path, "newcomer").expect("revoke");
    let mut refused = false;
    for _ in 0..50 {
        if chat_with(&harness, Some(&newcomer), "authorization")
            .await
            .status()
            == 401
        {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(refused, "a revoked key is refused without restart");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total_ok = 0;
    for task in load {
        let (ok, failed) = task.await.expect("join");
        assert_eq!(failed, 0, "no failed request while the file changed");
        total_ok += ok;
    }
    assert!(total_ok > 20, "the load ran: {total_ok}");
    if let Ok(harness) = std::sync::Arc::try_unwrap(harness) {
        harness.stop().await;
    }
}

/// Usage totals on /status equal what the emulator reported: a JSON answer, a stream whose
/// client asked for usage (and sees it), and the same stream without asking (usage counted,
/// chunk hidden; the emulator is deterministic, so its usage equals the asked one's).
#[tokio::test]
async fn usage_totals_match_the_emulator() {
    use foundry_proxy::keys::{Limits, file::add_key};
    let path = keys_file("usage.toml");
    let key = add_key(&path, "carol", Limits::default()).expect("key");
    let harness = Harness::start_with(with_keys(&path)).await;
    let post = |body: Value| {
        harness
            .client
            .post(harness.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&body)
            .send()
    };
    let first: Value = post(Harness::chat(
        world::CHAT_DEPLOYMENT,
        "tokens in a JSON answer",
    ))
    .await
    .expect("answer")
    .json()
    .await
    .expect("json");
    let (p1, c1) = (
        first["usage"]["prompt_tokens"].as_u64().expect("prompt"),
        first["usage"]["completion_tokens"]
            .as_u64()
            .expect("completion"),
    );
    let stream_body = |include: bool| {
        let mut body = json!({"model": world::CHAT_DEPLOYMENT, "stream": true, "messages": [{"role": "user", "content": "tokens in a stream"}]});
        if include {
            body["stream_options"] = json!({"include_usage": true});
        }
        body
    };
    let asked = post(stream_body(true))
        .await
        .expect("stream")
        .text()
        .await
        .expect("text");
    let usage_chunk: Value = asked
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .find(|chunk| chunk["usage"].is_object())
        .expect("the client that asked sees the usage chunk");
    let (p2, c2) = (
        usage_chunk["usage"]["prompt_tokens"]
            .as_u64()
            .expect("prompt"),
        usage_chunk["usage"]["completion_tokens"]
            .as_u64()
            .expect("completion"),
    );
    let hidden = post(stream_body(false))
        .await
        .expect("stream")
        .text()
        .await
        .expect("text");
    assert!(!hidden.contains("\"usage\""), "{hidden}");
    let row = harness.usage_row(&key, "carol").await;
    assert_eq!(row["requests"], 3);
    assert_eq!(row["prompt_tokens"], p1 + 2 * p2, "{row}");
    assert_eq!(row["completion_tokens"], c1 + 2 * c2, "{row}");
    harness.stop().await;
}

/// /metrics can live on its own address, where it needs no key.
#[tokio::test]
async fn metrics_on_a_separate_address() {
    use foundry_proxy::keys::{Limits, file::add_key};
    let path = keys_file("metrics.toml");
    let key = add_key(&path, "dave", Limits::default()).expect("key");
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
    let address = probe.local_addr().expect("addr");
    drop(probe);
    let mut setup = with_keys(&path);
    setup.settings.metrics_listen = Some(address.to_string());
    let harness = Harness::start_with(setup).await;
    assert_eq!(
        chat_with(&harness, Some(&key), "authorization")
            .await
            .status(),
        200
    );
    let mut text = String::new();
    for _ in 0..50 {
        if let Ok(response) = harness
            .client
            .get(format!("http://{address}/metrics"))
            .send()
            .await
        {
            text = response.text().await.expect("text");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        text.contains("foundry_proxy_requests_total") && text.contains("key=\"dave\""),
        "{text}"
    );
    harness.stop().await;
}
