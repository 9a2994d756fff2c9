//! Several upstreams (`[[upstream]]`, issue 17): spillover from PTU to pay-as-you-go that
//! honours Azure's wait, failover of streams before their first byte and never after it,
//! 429 with the smallest wait when every target rests, a dead region ejected and restored,
//! and steady load with one of two upstreams down — against the emulator's named resources
//! (`/resources/{name}`), over real sockets.

use crate::common;

use std::time::Duration;

use common::{Harness, Setup, error_of, header_number};
use foundry_proxy::config::Settings;
use foundry_proxy::emulator::{
    self, DeploymentKind, DeploymentSpec, EmulatorConfig, ResourceFault, ResourceFaultKind,
    ResourceSpec,
};
use serde_json::{Value, json};

/// A named resource with one chat deployment.
fn resource(name: &str, deployment: &str) -> ResourceSpec {
    ResourceSpec {
        name: name.to_owned(),
        region: Some(format!("Region {name}")),
        deployments: vec![DeploymentSpec {
            name: deployment.to_owned(),
            model: "gpt-4o-2024-11-20".to_owned(),
            kind: DeploymentKind::Chat,
        }],
        requests_per_minute: None,
        tokens_per_minute: None,
        fault: None,
    }
}

/// The issue's PTU-spillover setup: `gpt-4o` goes to `eastus-ptu` first, then to
/// `sweden-paygo`; `extra` is more config text (with `{emulator}` for the emulator's URL).
const SPILLOVER: &str = r#"
[[upstream]]
name = "eastus-ptu"
endpoint = "{emulator}/resources/eastus"
api = "deployments"
api_version = "2024-10-21"
priority = 0

[[upstream]]
name = "sweden-paygo"
endpoint = "{emulator}/resources/sweden"
api = "openai-v1"
priority = 1

[models."gpt-4o"]
targets = [ { upstream = "eastus-ptu", deployment = "gpt-4o-ptu" },
            { upstream = "sweden-paygo", deployment = "gpt-4o" } ]
"#;

/// Starts the emulator with `resources`, then a proxy with the config `text`.
async fn start(resources: Vec<ResourceSpec>, text: &str) -> Harness {
    let running = emulator::spawn(EmulatorConfig {
        resources,
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let text = text.replace("{emulator}", &running.url());
    let settings: Settings = toml::from_str(&text).expect("config text");
    let harness = Harness::start_on(
        running,
        Setup {
            settings,
            ..Setup::default()
        },
    )
    .await;
    harness.wait_ready().await;
    harness
}

/// The two resources of [`SPILLOVER`].
fn ptu_and_paygo() -> Vec<ResourceSpec> {
    vec![
        resource("eastus", "gpt-4o-ptu"),
        resource("sweden", "gpt-4o"),
    ]
}

/// (resource, status) of every Foundry request the emulator saw, in order.
fn seen(harness: &Harness) -> Vec<(String, u16)> {
    harness
        .emulator
        .emulator
        .inference_requests()
        .into_iter()
        .map(|r| (r.resource.unwrap_or_default(), r.status))
        .collect()
}

/// The `/status` entry of the upstream `name`.
async fn upstream_status(harness: &Harness, name: &str) -> Value {
    let status = harness.get_json("/status").await;
    status["upstreams"]["list"]
        .as_array()
        .and_then(|list| list.iter().find(|u| u["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("no upstream {name} in {status}"))
}

fn set_fault(harness: &Harness, resource: &str, fault: Option<(ResourceFaultKind, Option<u64>)>) {
    harness.emulator.emulator.set_resource_fault(
        resource,
        fault.map(|(kind, retry_after_ms)| ResourceFault {
            kind,
            retry_after_ms,
        }),
    );
}

/// A `gpt-4o` chat request that asks the emulator for `fault` (the header reaches whichever
/// target the proxy picks).
async fn chat_with_fault(harness: &Harness, fault: &str) -> reqwest::Response {
    harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .header("x-emulator-fault", fault)
        .json(&Harness::chat("gpt-4o", "hi"))
        .send()
        .await
        .expect("answer")
}

async fn chat(harness: &Harness, model: &str) -> reqwest::Response {
    harness
        .post_json("/v1/chat/completions", Harness::chat(model, "hello"))
        .await
}

/// PTU to pay-as-you-go: the PTU deployment's quota (1 request a minute) is spent by the
/// first request; the second gets Azure's quota 429 there and is answered by pay-as-you-go;
/// the PTU target then rests for exactly the wait Azure asked for (shown in `/status`), and
/// requests meanwhile go straight to pay-as-you-go without touching it.
#[tokio::test]
async fn upstreams_ptu_spillover_honours_retry_after() {
    let mut resources = ptu_and_paygo();
    resources[0].requests_per_minute = Some(1);
    let harness = start(resources, SPILLOVER).await;
    for _ in 0..3 {
        let response = chat(&harness, "gpt-4o").await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(
        seen(&harness),
        [
            ("eastus".to_owned(), 200),
            ("eastus".to_owned(), 429),
            ("sweden".to_owned(), 200),
            ("sweden".to_owned(), 200),
        ]
    );
    let ptu = upstream_status(&harness, "eastus-ptu").await;
    assert_eq!(ptu["health"], "resting", "{ptu}");
    let rest = &ptu["resting"][0];
    assert_eq!(rest["deployment"], "gpt-4o-ptu");
    let why = rest["why"].as_str().expect("why");
    let asked: u64 = why
        .strip_prefix("429, asked to wait ")
        .and_then(|w| w.strip_suffix(" ms"))
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{why}"));
    assert!((1..=60_000).contains(&asked), "{why}");
    assert!(rest["resting_ms"].as_u64().expect("ms") <= asked, "{rest}");
    assert_eq!(
        upstream_status(&harness, "sweden-paygo").await["health"],
        "ok"
    );
    harness.stop().await;
}

/// The rest is exactly the wait Azure's 429 asks for in `retry-after-ms` (capped at a
/// minute): 43 210 ms here.
#[tokio::test]
async fn upstreams_rest_is_the_exact_retry_after() {
    let harness = start(ptu_and_paygo(), SPILLOVER).await;
    set_fault(
        &harness,
        "eastus",
        Some((ResourceFaultKind::RateLimit, Some(43_210))),
    );
    assert_eq!(chat(&harness, "gpt-4o").await.status(), 200);
    let ptu = upstream_status(&harness, "eastus-ptu").await;
    assert_eq!(ptu["resting"][0]["why"], "429, asked to wait 43210 ms");
    let left = ptu["resting"][0]["resting_ms"].as_u64().expect("ms");
    assert!(left <= 43_210, "{ptu}");
    harness.stop().await;
}

/// A stream whose first target answers 429 is sent to the next one before anything went
/// back: the client gets one whole stream.
#[tokio::test]
async fn upstreams_stream_fails_over_before_first_byte() {
    let harness = start(ptu_and_paygo(), SPILLOVER).await;
    set_fault(
        &harness,
        "eastus",
        Some((ResourceFaultKind::HighDemand, None)),
    );
    let response = harness
        .post_json(
            "/v1/chat/completions",
            json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("stream");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(
        seen(&harness),
        [("eastus".to_owned(), 429), ("sweden".to_owned(), 200)]
    );
    harness.stop().await;
}

/// Once the first byte of an answer has gone back, a failure is the client's to see: a
/// stream cut after two events ends with an error, and no other target is asked.
#[tokio::test]
async fn upstreams_no_retry_after_first_byte() {
    let harness = start(ptu_and_paygo(), SPILLOVER).await;
    let response = harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .header("x-emulator-reset-after", "2")
        .header("x-emulator-chunks", "20")
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("stream starts");
    assert_eq!(response.status(), 200);
    let mut response = response;
    let mut text = String::new();
    let errored = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(errored, "the cut stream ended cleanly: {text}");
    assert!(!text.contains("[DONE]"), "{text}");
    assert_eq!(seen(&harness), [("eastus".to_owned(), 200)]);
    harness.stop().await;
}

/// When every target rests, the client gets 429 `upstreams_resting` with the smallest wait
/// in `retry-after-ms` and `retry-after`, and a message naming each target and why; the
/// next request is answered the same way without asking Azure.
#[tokio::test]
async fn upstreams_all_resting_is_429_with_the_smallest_wait() {
    let harness = start(ptu_and_paygo(), SPILLOVER).await;
    set_fault(
        &harness,
        "eastus",
        Some((ResourceFaultKind::RateLimit, Some(4_321))),
    );
    set_fault(
        &harness,
        "sweden",
        Some((ResourceFaultKind::RateLimit, Some(9_000))),
    );
    let response = chat(&harness, "gpt-4o").await;
    assert_eq!(response.status(), 429);
    let millis = header_number(&response, "retry-after-ms");
    let secs = header_number(&response, "retry-after");
    assert!((1..=4_321).contains(&millis), "{millis}");
    assert_eq!(secs, millis.div_ceil(1000));
    let error = error_of(response).await;
    assert_eq!(error["code"], "upstreams_resting");
    let message = error["message"].as_str().expect("message");
    assert!(message.contains("eastus-ptu/gpt-4o-ptu"), "{message}");
    assert!(message.contains("sweden-paygo/gpt-4o"), "{message}");
    assert!(message.contains("asked to wait 9000 ms"), "{message}");
    let before = seen(&harness).len();
    assert_eq!(chat(&harness, "gpt-4o").await.status(), 429);
    assert_eq!(seen(&harness).len(), before, "resting targets were asked");
    harness.stop().await;
}

/// With `max_wait`, a rest shorter than it is waited out by the proxy: the client gets the
/// answer, not the 429.
#[tokio::test]
async fn upstreams_max_wait_waits_out_a_short_rest() {
    let text = SPILLOVER.replace(
        "[[upstream]]\nname = \"eastus-ptu\"",
        "max_wait = 5\n\n[[upstream]]\nname = \"eastus-ptu\"",
    );
    let harness = start(ptu_and_paygo(), &text).await;
    set_fault(
        &harness,
        "eastus",
        Some((ResourceFaultKind::RateLimit, Some(1_000))),
    );
    set_fault(
        &harness,
        "sweden",
        Some((ResourceFaultKind::RateLimit, Some(1_000))),
    );
    let emulator = std::sync::Arc::clone(&harness.emulator.emulator);
    let clear = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        emulator.set_resource_fault("eastus", None);
    });
    let response = chat(&harness, "gpt-4o").await;
    clear.await.expect("cleared");
    assert_eq!(response.status(), 200);
    assert_eq!(seen(&harness).last(), Some(&("eastus".to_owned(), 200)));
    harness.stop().await;
}

/// A region that answers 503 is ejected after repeated failures (requests meanwhile are all
/// answered by the other one), shows as resting in `/status`, and once it is back, it is
/// tried again by itself and restored.
#[tokio::test]
async fn upstreams_dead_region_is_ejected_and_restored() {
    let harness = start(ptu_and_paygo(), SPILLOVER).await;
    set_fault(
        &harness,
        "eastus",
        Some((ResourceFaultKind::Unavailable, None)),
    );
    for _ in 0..2 {
        assert_eq!(chat(&harness, "gpt-4o").await.status(), 200);
    }
    // Two failures in a row: ejected (for a second, the first time).
    let ptu = upstream_status(&harness, "eastus-ptu").await;
    assert_eq!(ptu["health"], "resting", "{ptu}");
    assert!(
        ptu["resting"][0]["why"]
            .as_str()
            .is_some_and(|w| w.starts_with("ejected after 2 failures")),
        "{ptu}"
    );
    for _ in 0..2 {
        assert_eq!(chat(&harness, "gpt-4o").await.status(), 200);
    }
    let east_attempts = seen(&harness).iter().filter(|(r, _)| r == "eastus").count();
    // Skipped at least once while ejected (a very slow machine may see the second end).
    assert!(
        (2..4).contains(&east_attempts),
        "ejected after two failures: {:?}",
        seen(&harness)
    );
    set_fault(&harness, "eastus", None);
    let mut restored = false;
    for _ in 0..100 {
        assert_eq!(chat(&harness, "gpt-4o").await.status(), 200);
        if seen(&harness).last() == Some(&("eastus".to_owned(), 200)) {
            restored = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(restored, "never tried again: {:?}", seen(&harness));
    assert_eq!(
        upstream_status(&harness, "eastus-ptu").await["health"],
        "ok"
    );
    let metrics = harness.get_text("/metrics").await;
    assert!(
        metrics.contains("foundry_proxy_upstream_rests_total{upstream=\"eastus-ptu\"} 1"),
        "{metrics}"
    );
    harness.stop().await;
}

/// Two upstreams sharing the load by weight; one is down (refusing connections, then
/// answering 503): under steady concurrent load not one request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_steady_load_with_one_upstream_down() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let text = format!(
        r#"
[[upstream]]
name = "a"
endpoint = "{{emulator}}/resources/a"
api = "openai-v1"
[[upstream]]
name = "b"
endpoint = "{{emulator}}/resources/b"
api = "openai-v1"
[[upstream]]
name = "gone"
endpoint = "http://127.0.0.1:{closed}"
api = "openai-v1"
priority = 0
"#
    );
    let harness = start(
        vec![resource("a", "gpt-4o"), resource("b", "gpt-4o")],
        &text,
    )
    .await;
    set_fault(&harness, "b", Some((ResourceFaultKind::Unavailable, None)));
    let mut failed = Vec::new();
    for round in 0..25 {
        let batch = (0..8).map(|_| chat(&harness, "gpt-4o"));
        for response in futures_util::future::join_all(batch).await {
            if response.status() != 200 {
                failed.push((round, response.status()));
            }
        }
    }
    assert!(failed.is_empty(), "failed: {failed:?}");
    let served = seen(&harness)
        .iter()
        .filter(|(r, s)| r == "a" && *s == 200)
        .count();
    assert_eq!(served, 200);
    harness.stop().await;
}

/// 400s and 404s are the request's own: passed on (or explained) from the first target,
/// never retried elsewhere; a 401 is explained naming the upstream and deployment.
#[tokio::test]
async fn upstreams_client_errors_are_not_retried() {
    let harness = start(ptu_and_paygo(), SPILLOVER).await;
    let filtered = chat_with_fault(&harness, "content-filter").await;
    assert_eq!(filtered.status(), 400);
    assert_eq!(seen(&harness), [("eastus".to_owned(), 400)]);
    // No `gpt-4o-mini` on either resource, and no targets for it: the first upstream's 404.
    let missing = chat(&harness, "gpt-4o-mini").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(error_of(missing).await["code"], "deployment_not_found");
    assert_eq!(seen(&harness).len(), 2);
    let refused = chat_with_fault(&harness, "permission-denied").await;
    assert_eq!(refused.status(), 401);
    assert_eq!(
        refused.headers()["x-foundry-proxy-upstream"],
        "eastus-ptu/gpt-4o-ptu"
    );
    let error = error_of(refused).await;
    assert_eq!(error["code"], "missing_role_assignment");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.starts_with("Upstream 'eastus-ptu' (deployment 'gpt-4o-ptu'"),
        "{message}"
    );
    assert!(
        seen(&harness).iter().all(|(r, _)| r == "eastus"),
        "{:?}",
        seen(&harness)
    );
    harness.stop().await;
}

/// An upstream with a scope of its own gets its own token: the emulator sees token requests
/// for both scopes, and each upstream's requests succeed.
#[tokio::test]
async fn upstreams_one_token_per_scope() {
    let text = SPILLOVER.replace(
        "api = \"openai-v1\"\npriority = 1",
        "api = \"openai-v1\"\npriority = 1\nscope = \"https://ai.azure.com/.default\"",
    );
    let harness = start(ptu_and_paygo(), &text).await;
    set_fault(
        &harness,
        "eastus",
        Some((ResourceFaultKind::ServerError, None)),
    );
    assert_eq!(chat(&harness, "gpt-4o").await.status(), 200);
    let scopes: std::collections::BTreeSet<String> = harness
        .emulator
        .emulator
        .token_requests()
        .into_iter()
        .filter_map(|r| r.form.get("scope").cloned())
        .collect();
    assert!(
        scopes.contains("https://ai.azure.com/.default"),
        "{scopes:?}"
    );
    assert!(
        scopes.contains("https://cognitiveservices.azure.com/.default"),
        "{scopes:?}"
    );
    assert_eq!(
        upstream_status(&harness, "sweden-paygo").await["scope"],
        "https://ai.azure.com/.default"
    );
    harness.stop().await;
}

/// `check` walks every upstream and every deployment the targets name: the PTU one passes,
/// a target deployment that does not exist on its resource fails naming upstream and
/// deployment, and the exit code is 1.
#[tokio::test(flavor = "multi_thread")]
async fn upstreams_check_walks_every_target() {
    let running = emulator::spawn(EmulatorConfig {
        resources: ptu_and_paygo(),
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let url = running.url();
    let text = SPILLOVER.replace("{emulator}", &url).replace(
        "deployment = \"gpt-4o\" }",
        "deployment = \"gpt-4o-typo\" }",
    );
    let dir = std::env::temp_dir().join(format!("fp-upstreams-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("upstreams.toml");
    std::fs::write(&file, text).expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_foundry-proxy"))
        .arg("check")
        .arg("--config")
        .arg(&file)
        .env_clear()
        .env("RUST_LOG", "off")
        .envs([
            ("AZURE_AUTHORITY_HOST", url.as_str()),
            (
                "AZURE_TENANT_ID",
                foundry_proxy::emulator::identities::TENANT_ID,
            ),
            (
                "AZURE_CLIENT_ID",
                foundry_proxy::emulator::identities::CLIENT_ID,
            ),
            (
                "AZURE_CLIENT_SECRET",
                foundry_proxy::emulator::identities::CLIENT_SECRET,
            ),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("check runs");
    let report = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let lines: Vec<&str> = report
        .lines()
        .filter(|l| l.contains(" upstream "))
        .collect();
    assert!(
        lines.iter().any(|l| l.trim_start().starts_with("PASS")
            && l.contains("eastus-ptu/gpt-4o-ptu (inference)")),
        "{report}"
    );
    assert!(
        lines.iter().any(|l| l.trim_start().starts_with("FAIL")
            && l.contains("sweden-paygo/gpt-4o-typo (inference)")),
        "{report}"
    );
    assert!(report.contains("deployment_not_found"), "{report}");
    running.shutdown().await;
}
