//! The binary as users run it: configuration errors, logs free of secrets, and graceful
//! shutdown on SIGTERM.

use crate::common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::serve_binary::{listening_url, serve};
use common::{eventually, http_client};
use foundry_proxy::emulator::{self, EmulatorConfig, identities as world};

const BIN: &str = env!("CARGO_BIN_EXE_foundry-proxy");

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// SIGTERM, a clean exit (code 0) within 10 s, and everything the process logged to stderr.
fn stop_cleanly(child: &mut Child) -> String {
    sigterm(child);
    assert!(
        wait_exit(child, Duration::from_secs(10)).success(),
        "clean exit after SIGTERM"
    );
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("read logs");
    logs
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Invalid configuration stops the program before it binds: exit code 2 and one line on
/// stderr naming the setting and the fix.
#[test]
fn config_errors_exit_2_with_one_line() {
    let dir = std::env::temp_dir().join(format!("fp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "endpiont = \"https://x.openai.azure.com\"\n").expect("write");
    let typo_arg = typo.to_string_lossy().into_owned();
    type Case<'a> = (Vec<&'a str>, &'a [(&'a str, &'a str)], &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            vec![],
            &[("AZURE_CLIENT_SECRET", "")],
            "AZURE_CLIENT_SECRET",
        ),
        (vec![], &[("FOUNDRY_API", "graphql")], "FOUNDRY_API"),
        (
            vec![],
            &[("FOUNDRY_ENDPOINT", "http://contoso.openai.azure.com")],
            "FOUNDRY_ENDPOINT",
        ),
        (
            vec![],
            &[("FOUNDRY_PROXY_LISTEN", "localhost")],
            "FOUNDRY_PROXY_LISTEN",
        ),
        (
            vec![],
            &[("FOUNDRY_PROXY_MAX_BODY", "huge")],
            "FOUNDRY_PROXY_MAX_BODY",
        ),
        (vec!["--config", &typo_arg], &[], "endpiont"),
    ];
    for (args, env, needle) in cases {
        let output = serve("http://127.0.0.1:9", env)
            .args(&args)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{needle}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].contains(needle) && lines[0].contains(" — "),
            "{stderr}"
        );
    }
}

/// With RUST_LOG=trace, through successful requests and an explained refusal, the logs
/// never contain the client secret or any access token; they do contain one line per request.
#[tokio::test]
async fn logs_never_contain_secrets() {
    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    let url = emulator.url();
    let mut child = serve(&url, &[("RUST_LOG", "trace")])
        .spawn()
        .expect("spawn");
    let proxy = listening_url(&mut child);
    let client = http_client();
    let chat = serde_json::json!({"model": world::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]});
    for fault in ["", "permission-denied"] {
        let mut request = client
            .post(format!("{proxy}/v1/chat/completions"))
            .header("authorization", "Bearer sk-caller-key")
            .json(&chat);
        if !fault.is_empty() {
            request = request.header("x-emulator-fault", fault);
        }
        let response = request.send().await.expect("answer");
        assert!(response.status() == 200 || response.status() == 401);
    }
    let logs = stop_cleanly(&mut child);
    assert!(logs.contains("token acquired"), "{logs}");
    assert!(
        logs.contains("\"request\"") || logs.contains(" request "),
        "one line per request: {logs}"
    );
    assert!(
        !logs.contains(world::CLIENT_SECRET),
        "client secret in logs"
    );
    assert!(!logs.contains("eyJ"), "a JWT in logs");
    assert!(!logs.contains("sk-caller-key"), "caller key in logs");
    emulator.shutdown().await;
}

/// SIGTERM while a stream is in flight: the stream finishes, new connections are refused,
/// and the process exits 0.
#[tokio::test]
async fn sigterm_drains_in_flight_streams() {
    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    let url = emulator.url();
    let mut child = serve(&url, &[("FOUNDRY_PROXY_SHUTDOWN_GRACE", "20")])
        .spawn()
        .expect("spawn");
    let proxy = listening_url(&mut child);
    let client = http_client();
    let mut response = client
        .post(format!("{proxy}/v1/chat/completions"))
        .header("x-emulator-chunks", "10")
        .header("x-emulator-chunk-delay-ms", "150")
        .json(&serde_json::json!({"model": world::CHAT_DEPLOYMENT, "stream": true, "messages": [{"role": "user", "content": "drain"}]}))
        .send()
        .await
        .expect("stream");
    let mut text =
        String::from_utf8_lossy(&response.chunk().await.expect("read").expect("first chunk"))
            .into_owned();
    sigterm(&child);
    let refused = eventually(Duration::from_secs(3), || {
        std::net::TcpStream::connect(proxy.trim_start_matches("http://")).is_err()
    })
    .await;
    assert!(refused, "new connections refused during drain");
    while let Some(chunk) = response.chunk().await.expect("stream continues") {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        text.trim_end().ends_with("data: [DONE]"),
        "stream completed: {text}"
    );
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    emulator.shutdown().await;
}

/// `foundry-proxy demo` prints the base URL and a curl line, serves a chat completion through
/// its own emulator, and stops cleanly on SIGTERM.
#[tokio::test]
async fn demo_runs_end_to_end() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env_remove("FOUNDRY_PROXY_LISTEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn demo");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut printed = String::new();
    while !printed.contains("Ctrl-C") {
        let mut line = String::new();
        if stdout.read_line(&mut line).expect("read") == 0 {
            break;
        }
        printed.push_str(&line);
    }
    let base = printed
        .lines()
        .find_map(|l| l.trim().strip_prefix("export OPENAI_BASE_URL="))
        .unwrap_or_else(|| panic!("no OPENAI_BASE_URL in {printed}"))
        .to_owned();
    assert!(printed.contains("curl "), "{printed}");
    let response = http_client()
        .post(format!("{base}/chat/completions"))
        .json(&serde_json::json!({"model": world::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "demo"}]}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}

/// With a certificate and with workload identity, at RUST_LOG=trace: the log says which
/// credential was chosen and why, and never shows the private key, the client assertion,
/// the federated token or an access token.
#[tokio::test]
async fn credential_choice_logged_without_secrets() {
    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    let url = emulator.url();
    let dir = std::env::temp_dir().join(format!("fp-cli-cred-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cert = dir.join("client.pem");
    std::fs::write(&cert, world::CERTIFICATE_PEM).expect("cert");
    let token_file = dir.join("azure-identity-token");
    let federated = emulator.emulator.federated_token(
        world::FEDERATED_SUBJECT,
        world::FEDERATED_AUDIENCE,
        3600,
    );
    std::fs::write(&token_file, &federated).expect("token");
    let cert_path = cert.to_string_lossy().into_owned();
    let token_path = token_file.to_string_lossy().into_owned();
    let key_line = world::CERTIFICATE_PEM
        .lines()
        .skip_while(|l| !l.contains("PRIVATE KEY"))
        .nth(1)
        .expect("a key line")
        .to_owned();
    let cases: [(&str, Vec<(&str, &str)>); 2] = [
        (
            "client-certificate",
            vec![
                ("AZURE_CLIENT_SECRET", ""),
                ("AZURE_CLIENT_CERTIFICATE_PATH", &cert_path),
            ],
        ),
        (
            "workload-identity",
            vec![
                ("AZURE_CLIENT_SECRET", ""),
                ("AZURE_FEDERATED_TOKEN_FILE", &token_path),
            ],
        ),
    ];
    for (kind, mut extra) in cases {
        extra.push(("RUST_LOG", "trace"));
        let mut child = serve(&url, &extra).spawn().expect("spawn");
        let proxy = listening_url(&mut child);
        let response = http_client()
            .post(format!("{proxy}/v1/chat/completions"))
            .json(&serde_json::json!({"model": world::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), 200, "{kind}");
        let logs = stop_cleanly(&mut child);
        assert!(
            logs.contains("credential chosen") && logs.contains(kind) && logs.contains("auto:"),
            "{kind}: {logs}"
        );
        assert!(
            !logs.contains("eyJ"),
            "{kind}: a JWT (assertion or token) in the logs"
        );
        assert!(
            !logs.contains(&key_line) && !logs.contains("PRIVATE KEY"),
            "{kind}: key material in the logs"
        );
        assert!(
            !logs.contains(&federated[..40]),
            "{kind}: the federated token in the logs"
        );
    }
    emulator.shutdown().await;
}

/// On a laptop with nothing but `az login`: `auto` picks the Azure CLI (no AZURE_CLIENT_ID
/// is set), asks it for exactly the scope, and the CLI's token reaches Azure.
#[tokio::test]
async fn azure_cli_credential_through_the_proxy() {
    use std::os::unix::fs::PermissionsExt;
    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    let url = emulator.url();
    let token: serde_json::Value = http_client()
        .post(format!("{url}/{}/oauth2/v2.0/token", world::TENANT_ID))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", world::CLIENT_ID),
            ("client_secret", world::CLIENT_SECRET),
            ("scope", world::SCOPE),
        ])
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("json");
    let access_token = token["access_token"].as_str().expect("access token");
    let dir = std::env::temp_dir().join(format!("fp-cli-az-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let args_file = dir.join("args");
    let expires_on = time::OffsetDateTime::now_utc().unix_timestamp() + 3000;
    let script = format!(
        "#!/bin/sh\necho \"$@\" >> '{}'\necho '{{\"accessToken\": \"{access_token}\", \"expires_on\": {expires_on}, \"tokenType\": \"Bearer\"}}'\n",
        args_file.display()
    );
    let az = dir.join("az");
    std::fs::write(&az, script).expect("script");
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.to_string_lossy().into_owned();
    let extra = [
        ("AZURE_TENANT_ID", ""),
        ("AZURE_CLIENT_ID", ""),
        ("AZURE_CLIENT_SECRET", ""),
        ("PATH", path.as_str()),
    ];
    let mut child = serve(&url, &extra).spawn().expect("spawn");
    let proxy = listening_url(&mut child);
    let response = http_client()
        .post(format!("{proxy}/v1/chat/completions"))
        .json(&serde_json::json!({"model": world::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
    let args = std::fs::read_to_string(&args_file).expect("az was run");
    assert_eq!(
        args.lines().next(),
        Some(
            "account get-access-token -o json --scope https://cognitiveservices.azure.com/.default"
        )
    );
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut logs)
        .expect("logs");
    assert!(logs.contains("azure-cli"), "{logs}");
    emulator.shutdown().await;
}

/// With access keys at RUST_LOG=trace, log lines name the key (its name), never the key.
#[tokio::test]
async fn access_keys_never_logged() {
    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    let url = emulator.url();
    let dir = std::env::temp_dir().join(format!("fp-cli-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let keys = dir.join("keys.toml");
    let _ = std::fs::remove_file(&keys);
    let key =
        foundry_proxy::keys::file::add_key(&keys, "erin", foundry_proxy::keys::Limits::default())
            .expect("key");
    let keys_path = keys.to_string_lossy().into_owned();
    let mut child = serve(
        &url,
        &[
            ("RUST_LOG", "trace"),
            ("FOUNDRY_PROXY_KEYS_FILE", &keys_path),
        ],
    )
    .spawn()
    .expect("spawn");
    let proxy = listening_url(&mut child);
    let client = http_client();
    let chat = serde_json::json!({"model": world::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]});
    let ok = client
        .post(format!("{proxy}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&chat)
        .send()
        .await
        .expect("answer");
    assert_eq!(ok.status(), 200);
    let refused = client
        .post(format!("{proxy}/v1/chat/completions"))
        .bearer_auth(format!("{key}x"))
        .json(&chat)
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 401);
    let logs = stop_cleanly(&mut child);
    assert!(
        logs.contains("erin"),
        "the key's name identifies requests: {logs}"
    );
    assert!(!logs.contains(&key[4..20]), "an access key in the logs");
    emulator.shutdown().await;
}

/// `emulate --print-env` prints the demo app's identity and chat deployment as `KEY=VALUE`
/// lines — what the bench scripts (`benches/lib.sh`) read — and nothing else: no log line
/// (even with JSON logs, which a service writes to stdout), no listener.
#[test]
fn emulate_print_env_prints_the_demo_identity() {
    let output = Command::new(BIN)
        .args(["emulate", "--print-env"])
        .env_clear()
        .env("FOUNDRY_PROXY_LOG_FORMAT", "json")
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .expect("foundry-proxy runs");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        format!(
            "AZURE_TENANT_ID={}\nAZURE_CLIENT_ID={}\nAZURE_CLIENT_SECRET={}\nMODEL={}\n",
            world::TENANT_ID,
            world::CLIENT_ID,
            world::CLIENT_SECRET,
            world::CHAT_DEPLOYMENT
        )
    );

    // It only prints: an address to listen on makes no sense with it.
    let output = Command::new(BIN)
        .args(["emulate", "--print-env", "--listen", "127.0.0.1:0"])
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .expect("foundry-proxy runs");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(output.stdout.is_empty(), "{output:?}");
}
