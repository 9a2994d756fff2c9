//! `foundry-proxy usage` as users run it, against a stand-in proxy that serves a canned
//! `/status` over a real socket: the table, `--json`, the access key, and the one-line
//! errors when the proxy cannot be asked.

use std::net::SocketAddr;
use std::process::Output;

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use foundry_proxy::metrics::UsageRow;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_foundry-proxy");
/// The access key the stand-in proxy accepts.
const KEY: &str = "fp-test-key";

fn rows() -> Vec<UsageRow> {
    let row = |key: &str, model: &str, n: [u64; 4]| UsageRow {
        key: key.into(),
        model: model.into(),
        requests: n[0],
        errors: n[1],
        prompt_tokens: n[2],
        completion_tokens: n[3],
    };
    vec![
        row("alice", "gpt-4o", [12, 1, 3400, 820]),
        row("alice", "o3-mini", [2, 0, 150, 90]),
        row("ci-bot", "gpt-4o", [5, 2, 700, 10]),
    ]
}

/// A stand-in for a running proxy: `/status` answers the canned document to the right
/// bearer key and 401 otherwise. Returns its address.
async fn stand_in() -> SocketAddr {
    async fn status(headers: HeaderMap) -> Response {
        let expected = format!("Bearer {KEY}");
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(&expected)
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        Json(json!({
            "version": "0.1.0",
            "uptime_secs": 42,
            "credential": {"kind": "client_secret", "reason": "AZURE_CLIENT_SECRET is set"},
            "token": {"valid": true, "expires_in_secs": 3000, "next_refresh_in_secs": 1200, "identity": null},
            "last_refresh_error": null,
            "upstream": {"endpoint": "https://x.openai.azure.com", "api": "openai-v1", "api_version": null},
            "usage": rows(),
        }))
        .into_response()
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/status", get(status));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Runs `foundry-proxy usage ARGS` with only `env` set.
async fn usage(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .arg("usage")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .await
        .expect("run foundry-proxy")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The table lists each key and model with its numbers, and a totals line that adds up.
#[tokio::test]
async fn table_per_key_and_model_with_totals() {
    let addr = stand_in().await;
    let url = format!("http://{addr}");
    let out = usage(&["--url", &url, "--key", KEY], &[]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "KEY",
            "MODEL",
            "REQUESTS",
            "ERRORS",
            "PROMPT",
            "COMPLETION",
            "TOTAL"
        ]
    );
    assert_eq!(
        lines[1],
        ["alice", "gpt-4o", "12", "1", "3400", "820", "4220"]
    );
    assert_eq!(lines[3], ["ci-bot", "gpt-4o", "5", "2", "700", "10", "710"]);
    assert_eq!(lines[4], ["total", "19", "3", "4250", "920", "5170"]);
    assert_eq!(lines.len(), 5);
}

/// `--json` prints exactly the rows; the address comes from a wildcard
/// `FOUNDRY_PROXY_LISTEN` (asked on loopback) and the key from `FOUNDRY_PROXY_KEY`.
#[tokio::test]
async fn json_rows_with_address_and_key_from_environment() {
    let addr = stand_in().await;
    let listen = format!("0.0.0.0:{}", addr.port());
    let out = usage(
        &["--json"],
        &[
            ("FOUNDRY_PROXY_LISTEN", &listen),
            ("FOUNDRY_PROXY_KEY", KEY),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed: Vec<UsageRow> = serde_json::from_slice(&out.stdout).expect("JSON rows");
    assert_eq!(printed, rows());
}

/// Without the access key the refusal is one line that says how to pass one.
#[tokio::test]
async fn refused_without_key() {
    let addr = stand_in().await;
    let out = usage(&["--url", &format!("http://{addr}")], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("401") && stderr.contains("--key"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// Nothing listening: exit code 1 and one line naming the address and what to check.
#[tokio::test]
async fn unreachable_proxy_is_one_line() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let out = usage(&["--url", &url], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the proxy at {url}"))
            && stderr.contains("is foundry-proxy running? pass --url"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
