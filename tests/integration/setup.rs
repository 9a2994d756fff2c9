//! `foundry-proxy setup` as users run it, against the emulator's Graph, ARM and Entra: from
//! nothing to a working `serve`, idempotent re-runs, `--assignee`, `--dry-run`, each refusal
//! explained, the replication retry and the propagation wait, and the certificate and
//! federated credentials. The operator signs in through a fake `az` (a shell script) that
//! prints tokens the emulator signed for ARM and Graph.
//!
//! `setup` runs as a child process the test waits for synchronously while the emulator serves
//! on the runtime's other threads, hence the multi-threaded runtime.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::LazyLock;
use std::time::Duration;

use foundry_proxy::config::{self, Settings};
use foundry_proxy::emulator::{self, EmulatorConfig, RunningEmulator, identities as world};
use foundry_proxy::server::{self, ServeOptions};
use foundry_proxy::setup::envfile;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_foundry-proxy");

/// The fake `az`, written once before any test spawns a process (a script being written while
/// another thread forks can fail to exec with "Text file busy"). It prints the token file of
/// the scope asked for, from the directory in `FAKE_AZ_TOKENS`, or fails like a logged-out CLI.
static FAKE_AZ: LazyLock<PathBuf> = LazyLock::new(|| {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "setup-fake-az-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let script = dir.join("az");
    std::fs::write(
        &script,
        r#"#!/bin/sh
scope=""
while [ $# -gt 0 ]; do [ "$1" = "--scope" ] && scope="$2"; shift; done
case "$scope" in
  https://management.azure.com/.default) file="$FAKE_AZ_TOKENS/arm.json" ;;
  https://graph.microsoft.com/.default) file="$FAKE_AZ_TOKENS/graph.json" ;;
  *) echo "ERROR: unexpected scope $scope" >&2; exit 1 ;;
esac
if [ ! -f "$file" ]; then echo "ERROR: Please run 'az login' to setup account." >&2; exit 1; fi
cat "$file"
"#,
    )
    .expect("script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
});

/// One test's world: an emulator, a directory for the tokens and the env file.
struct World {
    emulator: RunningEmulator,
    dir: PathBuf,
}

impl World {
    /// An emulator with the demo world, and the operator (the demo app) signed in.
    async fn start() -> Self {
        let emulator = emulator::spawn(EmulatorConfig::default())
            .await
            .expect("emulator");
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("setup-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let world = Self { emulator, dir };
        world.sign_in();
        world
    }

    /// A token of the operator (the demo app) for `audience`, signed by the emulator.
    fn operator_token(&self, audience: &str) -> String {
        let emu = &self.emulator.emulator;
        let claims = emu
            .token_claims(world::CLIENT_ID, audience, 3600)
            .expect("operator");
        emu.sign_token(&claims).expect("signed")
    }

    /// Writes the operator's ARM and Graph tokens where the fake `az` reads them.
    fn sign_in(&self) {
        for (file, audience) in [
            ("arm.json", "https://management.azure.com"),
            ("graph.json", "https://graph.microsoft.com"),
        ] {
            let token = self.operator_token(audience);
            let exp = self.emulator.emulator.now_secs() + 3600;
            let body = json!({"accessToken": token, "expires_on": exp, "tokenType": "Bearer"});
            std::fs::write(self.dir.join(file), body.to_string()).expect("token file");
        }
    }

    fn sign_out(&self) {
        for file in ["arm.json", "graph.json"] {
            let _ = std::fs::remove_file(self.dir.join(file));
        }
    }

    fn env_file(&self) -> PathBuf {
        self.dir.join("foundry-proxy.env")
    }

    /// Runs `setup ARGS --env-file …` with the emulator as ARM, Graph and Entra.
    fn run(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let url = self.emulator.url();
        Command::new(BIN)
            .arg("setup")
            .args(args)
            .arg("--env-file")
            .arg(self.env_file())
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", FAKE_AZ.display()))
            .env("FAKE_AZ_TOKENS", &self.dir)
            .env("FOUNDRY_PROXY_ARM_ENDPOINT", &url)
            .env("FOUNDRY_PROXY_GRAPH_ENDPOINT", &url)
            .env("AZURE_AUTHORITY_HOST", &url)
            .env("RUST_LOG", "debug")
            .envs(extra.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("setup runs")
    }

    /// `setup --credential certificate` for app `name` with the demo certificate (and key) in
    /// AZURE_CLIENT_CERTIFICATE_PATH; returns the file's path too.
    fn setup_with_certificate(&self, name: &str) -> (Output, Value, String) {
        let pem = self.dir.join("client.pem");
        std::fs::write(&pem, world::CERTIFICATE_PEM).expect("pem");
        let path = pem.display().to_string();
        let args = [
            "--resource",
            world::ACCOUNT_NAME,
            "--app-name",
            name,
            "--credential",
            "certificate",
        ];
        let (output, document) = self.setup(&args, &[("AZURE_CLIENT_CERTIFICATE_PATH", &path)]);
        (output, document, path)
    }

    /// [`World::run`] with `--json`, and the document it printed.
    fn setup(&self, args: &[&str], extra: &[(&str, &str)]) -> (Output, Value) {
        let args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
        let output = self.run(&args, extra);
        let document = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!(
                "setup's stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output, document)
    }
}

/// The status of a step in setup's JSON.
fn step<'a>(document: &'a Value, name: &str) -> &'a str {
    document["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["name"] == name))
        .and_then(|s| s["status"].as_str())
        .unwrap_or_else(|| panic!("no step {name} in {document:#}"))
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Serves with exactly the env file's variables (as `set -a; . FILE; foundry-proxy serve`
/// would) and asks for one chat completion.
async fn chat_through_serve(env_file: &Path) -> reqwest::StatusCode {
    let vars = envfile::read(env_file);
    let config = config::load(
        None,
        &vars,
        Settings {
            listen: Some("127.0.0.1:0".into()),
            ..Settings::default()
        },
    )
    .expect("the env file is a valid configuration");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::serve(
        config,
        listener,
        shutdown.clone(),
        ServeOptions::default(),
    ));
    let status = super::common::http_client()
        .post(format!("http://{addr}/v1/chat/completions"))
        .json(&json!({"model": world::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .expect("proxy answers")
        .status();
    shutdown.cancel();
    let _ = task.await;
    status
}

/// From nothing: the app, its service principal, a secret and the role are made, the env file
/// (mode 0600) holds every variable `serve` needs, `check` passes, and `serve` with that file
/// answers a chat completion. The secret is shown once on stdout and never reaches the logs.
#[tokio::test(flavor = "multi_thread")]
async fn setup_from_nothing_then_serve_answers() {
    let world = World::start().await;
    let (output, document) = world.setup(&["--resource", world::ACCOUNT_NAME], &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{document:#}\n{}",
        stderr(&output)
    );
    for name in [
        "application",
        "service principal",
        "credential",
        "role",
        "env file",
    ] {
        assert_eq!(step(&document, name), "done", "{name}: {document:#}");
    }
    assert_eq!(step(&document, "propagation"), "ok");
    assert_eq!(document["check"]["ok"], true);
    let app_id = document["app"]["app_id"].as_str().expect("app id");
    let principal = document["principal_id"].as_str().expect("principal");
    let secret = document["client_secret"]
        .as_str()
        .expect("secret shown once");

    let mode = std::fs::metadata(world.env_file())
        .expect("env file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let vars = envfile::read(&world.env_file());
    assert_eq!(vars["AZURE_TENANT_ID"], world::TENANT_ID);
    assert_eq!(vars["AZURE_CLIENT_ID"], app_id);
    assert_eq!(vars["AZURE_CLIENT_SECRET"], secret);
    assert_eq!(vars["FOUNDRY_ENDPOINT"], world.emulator.url());
    assert!(
        !stderr(&output).contains(secret),
        "the secret reached the logs"
    );

    let emu = &world.emulator.emulator;
    assert_eq!(
        emu.role_assignments(),
        vec![emulator::RoleAssignmentView {
            principal_id: principal.to_owned(),
            role: "Azure AI User".to_owned(),
            scope: format!(
                "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/{}",
                world::SUBSCRIPTION_ID,
                world::RESOURCE_GROUP,
                world::ACCOUNT_NAME
            ),
        }]
    );
    assert_eq!(chat_through_serve(&world.env_file()).await, 200);
    world.emulator.shutdown().await;
}

/// A second run finds everything in place and changes nothing: no new app, secret or
/// assignment, the same env file bytes, and no secret shown.
#[tokio::test(flavor = "multi_thread")]
async fn second_setup_changes_nothing() {
    let world = World::start().await;
    let (first, _) = world.setup(
        &["--resource", world::ACCOUNT_NAME, "--app-name", "twice"],
        &[],
    );
    assert_eq!(first.status.code(), Some(0));
    let counts = world.emulator.emulator.directory_counts();
    let bytes = std::fs::read(world.env_file()).expect("env file");

    let (second, document) = world.setup(
        &["--resource", world::ACCOUNT_NAME, "--app-name", "twice"],
        &[],
    );
    assert_eq!(second.status.code(), Some(0), "{document:#}");
    assert_eq!(document["changed"], false, "{document:#}");
    for name in [
        "application",
        "service principal",
        "credential",
        "role",
        "env file",
    ] {
        assert_eq!(step(&document, name), "kept", "{name}: {document:#}");
    }
    assert!(document["client_secret"].is_null());
    assert_eq!(world.emulator.emulator.directory_counts(), counts);
    assert_eq!(std::fs::read(world.env_file()).expect("env file"), bytes);
    world.emulator.shutdown().await;
}

/// `--app-id` of an App Registration made beforehand (an administrator's; here the emulator's
/// app that holds only Contributor): setup keeps the app and its service principal, adds a
/// secret and the role, and the app can then call inference.
#[tokio::test(flavor = "multi_thread")]
async fn existing_app_by_id_gets_a_secret_and_the_role() {
    let world = World::start().await;
    let (output, document) = world.setup(
        &[
            "--resource",
            world::ACCOUNT_NAME,
            "--app-id",
            world::NO_ROLE_CLIENT_ID,
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{document:#}");
    assert_eq!(step(&document, "application"), "kept");
    assert_eq!(step(&document, "service principal"), "kept");
    assert_eq!(step(&document, "credential"), "done");
    assert_eq!(step(&document, "role"), "done");
    assert_eq!(document["principal_id"], world::NO_ROLE_OBJECT_ID);
    assert_eq!(document["check"]["ok"], true);
    let counts = world.emulator.emulator.directory_counts();
    assert_eq!(
        (counts.applications, counts.secrets, counts.role_assignments),
        (0, 1, 1)
    );
    assert_eq!(chat_through_serve(&world.env_file()).await, 200);
    world.emulator.shutdown().await;
}

/// With `FOUNDRY_CREDENTIAL` set (a pipeline's service principal), the operator signs in with
/// that credential at the emulated Entra, for ARM and Graph, and needs no `az login`.
#[tokio::test(flavor = "multi_thread")]
async fn operator_signs_in_with_a_configured_credential() {
    let world = World::start().await;
    world.sign_out();
    let (output, document) = world.setup(
        &["--resource", world::ACCOUNT_NAME, "--app-name", "from-ci"],
        &[
            ("FOUNDRY_CREDENTIAL", "client-secret"),
            ("AZURE_TENANT_ID", world::TENANT_ID),
            ("AZURE_CLIENT_ID", world::CLIENT_ID),
            ("AZURE_CLIENT_SECRET", world::CLIENT_SECRET),
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{document:#}\n{}",
        stderr(&output)
    );
    assert_eq!(step(&document, "sign-in"), "ok");
    let scopes: Vec<String> = world
        .emulator
        .emulator
        .token_requests()
        .iter()
        .filter(|r| r.form.get("client_id").map(String::as_str) == Some(world::CLIENT_ID))
        .filter_map(|r| r.form.get("scope").cloned())
        .collect();
    for scope in [
        "https://management.azure.com/.default",
        "https://graph.microsoft.com/.default",
    ] {
        assert!(scopes.iter().any(|s| s == scope), "{scope}: {scopes:?}");
    }
    let vars = envfile::read(&world.env_file());
    assert_ne!(
        vars["AZURE_CLIENT_ID"],
        world::CLIENT_ID,
        "the new app, not the operator"
    );
    world.emulator.shutdown().await;
}

/// `--assignee` assigns the role to an existing principal (here the emulated host's managed
/// identity) and creates no app or credential.
#[tokio::test(flavor = "multi_thread")]
async fn assignee_only_assigns() {
    let world = World::start().await;
    let resource_id = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/{}",
        world::SUBSCRIPTION_ID,
        world::RESOURCE_GROUP,
        world::ACCOUNT_NAME
    );
    let (output, document) = world.setup(
        &[
            "--resource",
            &resource_id,
            "--assignee",
            world::MI_OBJECT_ID,
            "--role",
            "Cognitive Services OpenAI User",
        ],
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{document:#}");
    assert_eq!(step(&document, "application"), "skipped");
    assert_eq!(step(&document, "role"), "done");
    assert_eq!(step(&document, "propagation"), "skipped");
    let emu = &world.emulator.emulator;
    let counts = emu.directory_counts();
    assert_eq!(
        (counts.applications, counts.secrets, counts.role_assignments),
        (0, 0, 1)
    );
    let assignments = emu.role_assignments();
    assert_eq!(assignments[0].principal_id, world::MI_OBJECT_ID);
    assert_eq!(assignments[0].role, "Cognitive Services OpenAI User");
    world.emulator.shutdown().await;
}

/// `--dry-run` reads everything, plans the writes and changes nothing in Azure or on disk.
#[tokio::test(flavor = "multi_thread")]
async fn dry_run_changes_nothing() {
    let world = World::start().await;
    let (output, document) = world.setup(&["--resource", world::ACCOUNT_NAME, "--dry-run"], &[]);
    assert_eq!(output.status.code(), Some(0), "{document:#}");
    assert_eq!(document["dry_run"], true);
    for name in [
        "application",
        "service principal",
        "credential",
        "role",
        "env file",
    ] {
        assert_eq!(step(&document, name), "planned", "{name}: {document:#}");
    }
    assert_eq!(
        world.emulator.emulator.directory_counts(),
        emulator::DirectoryCounts::default()
    );
    assert!(!world.env_file().exists());
    world.emulator.shutdown().await;
}

/// Each refusal stops setup at its step with a code, Azure's answer and what to ask for from
/// whom; later steps are listed as remaining, earlier changes as done.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_explained() {
    let world = World::start().await;
    let emu = &world.emulator.emulator;
    let refusal = |args: &[&str], failed: &str| {
        let (output, document) = world.setup(args, &[]);
        assert_eq!(output.status.code(), Some(1), "{document:#}");
        assert_eq!(step(&document, failed), "failed", "{document:#}");
        document["refusal"].clone()
    };
    let fixes = |refusal: &Value| refusal["fix"].to_string();

    emu.set_app_registration_allowed(false);
    let r = refusal(&["--resource", world::ACCOUNT_NAME], "application");
    assert_eq!(r["code"], "app_registration_denied");
    assert_eq!(r["azure"]["status"], 403);
    assert_eq!(r["azure"]["code"], "Authorization_RequestDenied");
    assert!(fixes(&r).contains("Application Developer") && fixes(&r).contains("--app-id"));
    emu.set_app_registration_allowed(true);

    emu.set_role_assignment_allowed(false);
    let (output, document) = world.setup(&["--resource", world::ACCOUNT_NAME], &[]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(step(&document, "application"), "done");
    assert_eq!(step(&document, "role"), "failed");
    // The secret added before the refusal is written down, so a re-run keeps it.
    assert_eq!(step(&document, "env file"), "done");
    assert_eq!(step(&document, "propagation"), "remaining");
    assert!(document["next"].is_null());
    let r = &document["refusal"];
    assert_eq!(r["code"], "role_assignment_denied");
    assert_eq!(r["azure"]["code"], "AuthorizationFailed");
    for role in [
        "Owner",
        "User Access Administrator",
        "Role Based Access Control Administrator",
    ] {
        assert!(fixes(r).contains(role), "{role}: {r:#}");
    }
    emu.set_role_assignment_allowed(true);
    let (output, document) = world.setup(&["--resource", world::ACCOUNT_NAME], &[]);
    assert_eq!(output.status.code(), Some(0), "{document:#}");
    assert_eq!(step(&document, "credential"), "kept", "{document:#}");
    assert_eq!(step(&document, "role"), "done");

    let r = refusal(&["--resource", "no-such-resource"], "resource");
    assert_eq!(r["code"], "resource_not_found");
    assert!(
        r["cause"]
            .as_str()
            .unwrap_or_default()
            .contains(world::ACCOUNT_NAME)
    );
    let r = refusal(&["--resource", world::TWIN_ACCOUNT_NAME], "resource");
    assert_eq!(r["code"], "resource_ambiguous");
    assert!(
        r["cause"]
            .as_str()
            .unwrap_or_default()
            .contains(world::OTHER_SUBSCRIPTION_ID)
    );
    let r = refusal(&["--resource", world::REGIONAL_ACCOUNT_NAME], "resource");
    assert_eq!(r["code"], "custom_subdomain_required");
    let r = refusal(&["--resource", world::SPEECH_ACCOUNT_NAME], "resource");
    assert_eq!(r["code"], "resource_kind_unsupported");
    let r = refusal(
        &[
            "--resource",
            world::ACCOUNT_NAME,
            "--app-id",
            "11111111-2222-3333-4444-555555555555",
        ],
        "application",
    );
    assert_eq!(r["code"], "app_not_found");
    let r = refusal(
        &[
            "--resource",
            world::ACCOUNT_NAME,
            "--assignee",
            "11111111-2222-3333-4444-555555555555",
        ],
        "role",
    );
    assert_eq!(r["code"], "principal_not_found");
    assert_eq!(r["azure"]["code"], "PrincipalNotFound");

    // Two App Registrations with one name (made outside setup): setup asks which one.
    let graph = world.operator_token("https://graph.microsoft.com");
    for _ in 0..2 {
        let made = super::common::http_client()
            .post(format!("{}/v1.0/applications", world.emulator.url()))
            .bearer_auth(&graph)
            .json(&json!({"displayName": "twin-app"}))
            .send()
            .await
            .expect("graph");
        assert_eq!(made.status(), 201);
    }
    let r = refusal(
        &["--resource", world::ACCOUNT_NAME, "--app-name", "twin-app"],
        "application",
    );
    assert_eq!(r["code"], "app_ambiguous");
    assert!(fixes(&r).contains("--app-id"));

    world.sign_out();
    let r = refusal(&["--resource", world::ACCOUNT_NAME], "sign-in");
    assert_eq!(r["code"], "not_signed_in");
    assert!(fixes(&r).contains("az login"));
    world.emulator.shutdown().await;
}

/// The text summary: one line per step with its tag, the refusal's cause, Azure's answer and
/// numbered fixes, and the remaining steps; a dry run says nothing changed.
#[tokio::test(flavor = "multi_thread")]
async fn text_summary_lists_steps_and_fixes() {
    let world = World::start().await;
    let output = world.run(&["--resource", world::ACCOUNT_NAME, "--dry-run"], &[]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(text.starts_with("Dry run: nothing was changed."), "{text}");
    for line in [
        "OK   resource",
        "PLAN application",
        "PLAN role",
        "PLAN env file",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }

    world.emulator.emulator.set_role_assignment_allowed(false);
    let output = world.run(&["--resource", world::ACCOUNT_NAME], &[]);
    assert_eq!(output.status.code(), Some(1));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    for line in [
        "DONE application",
        "FAIL role",
        "DONE env file",
        "TODO propagation",
        "(role_assignment_denied)",
        "Azure answered 403 AuthorizationFailed",
        "  1. Ask an Owner of the resource",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    assert!(!text.contains("Next:"), "{text}");
    world.emulator.shutdown().await;
}

/// Bad flags are refused before anything runs, with exit code 2 and one line naming the flag.
#[test]
fn bad_flags_name_the_fix() {
    for (args, needle) in [
        (&["--resource", "r", "--role", "Owner"][..], "--role"),
        (
            &["--resource", "r", "--credential", "federated"][..],
            "--issuer",
        ),
        (
            &["--resource", "r", "--assignee", "not-a-guid"][..],
            "--assignee",
        ),
        (
            &["--resource", "r", "--secret-days", "0"][..],
            "--secret-days",
        ),
        (
            &["--resource", "r", "--credential", "certificate"][..],
            "AZURE_CLIENT_CERTIFICATE_PATH",
        ),
    ] {
        let output = Command::new(BIN)
            .arg("setup")
            .args(args)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let err = stderr(&output);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

/// A new service principal unknown to ARM for a while gets 400 PrincipalNotFound, which setup
/// retries; the new role takes a while to apply, which setup waits for with a progress line.
#[tokio::test(flavor = "multi_thread")]
async fn replication_retry_and_propagation_wait_observed() {
    let world = World::start().await;
    let emu = &world.emulator.emulator;
    emu.set_replication_delay(Duration::from_secs(2));
    emu.set_propagation_delay(Duration::from_secs(3));
    let (output, document) = world.setup(&["--resource", world::ACCOUNT_NAME], &[]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{document:#}\n{}",
        stderr(&output)
    );
    let err = stderr(&output);
    assert!(err.contains("has not replicated yet"), "{err}");
    assert!(
        err.contains("waiting for Azure to apply the changes"),
        "{err}"
    );
    assert!(err.contains("missing_role_assignment"), "{err}");
    let role = document["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "role"))
        .map(|s| s["detail"].to_string())
        .unwrap_or_default();
    assert!(role.contains("retries"), "{role}");
    assert_eq!(document["check"]["ok"], true);
    // The principal's calls were refused before the role applied, then allowed.
    let refused = emu
        .inference_requests()
        .iter()
        .filter(|r| r.status == 401 || r.status == 403)
        .count();
    assert!(refused >= 1, "the wait never saw the role missing");
    world.emulator.shutdown().await;
}

/// `--credential certificate` registers the certificate of AZURE_CLIENT_CERTIFICATE_PATH, and
/// the wait signs in with it; `--credential federated` adds a federated credential that the
/// emulated Entra then accepts in a token exchange (and a re-run keeps it).
#[tokio::test(flavor = "multi_thread")]
async fn certificate_and_federated_credentials() {
    let world = World::start().await;
    let (output, document, pem_path) = world.setup_with_certificate("cert");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{document:#}\n{}",
        stderr(&output)
    );
    assert_eq!(step(&document, "credential"), "done");
    assert_eq!(document["check"]["ok"], true);
    let vars = envfile::read(&world.env_file());
    assert_eq!(vars["AZURE_CLIENT_CERTIFICATE_PATH"], pem_path);
    assert!(!vars.contains_key("AZURE_CLIENT_SECRET"));

    let subject = "system:serviceaccount:apps:chat";
    let args = [
        "--resource",
        world::ACCOUNT_NAME,
        "--app-name",
        "workload",
        "--credential",
        "federated",
        "--issuer",
        world::FEDERATION_ISSUER,
        "--subject",
        subject,
    ];
    let (output, document) = world.setup(&args, &[]);
    assert_eq!(output.status.code(), Some(0), "{document:#}");
    assert_eq!(step(&document, "credential"), "done");
    assert_eq!(step(&document, "propagation"), "skipped");
    let app_id = document["app"]["app_id"].as_str().expect("app").to_owned();
    let (_, again) = world.setup(&args, &[]);
    assert_eq!(step(&again, "credential"), "kept");

    let emu = &world.emulator.emulator;
    let assertion = emu.federated_token(subject, world::FEDERATED_AUDIENCE, 600);
    let answer = super::common::http_client()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            world.emulator.url(),
            world::TENANT_ID
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", app_id.as_str()),
            ("scope", "https://cognitiveservices.azure.com/.default"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion.as_str()),
        ])
        .send()
        .await
        .expect("entra answers");
    assert_eq!(answer.status(), 200);
    let token: Value = answer.json().await.expect("json");
    let models = super::common::http_client()
        .get(format!("{}/openai/v1/models", world.emulator.url()))
        .bearer_auth(token["access_token"].as_str().unwrap_or_default())
        .send()
        .await
        .expect("foundry answers");
    assert_eq!(models.status(), 200, "the workload's role applies");
    world.emulator.shutdown().await;
}

/// One PEM block's body (`-----BEGIN {label}-----` … `-----END {label}-----`), decoded.
fn pem_block(pem: &str, label: &str) -> String {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).expect("block");
    let stop = pem[start..].find(&end).expect("end") + start + end.len();
    pem[start..stop].to_owned()
}

/// Graph's `addKey`: after setup registered the first certificate, a second one is added only
/// with a proof signed by the first one's private key, naming the app and Graph.
#[tokio::test(flavor = "multi_thread")]
async fn add_key_needs_a_proof_from_an_existing_certificate() {
    let world = World::start().await;
    let (output, document, _) = world.setup_with_certificate("keys");
    assert_eq!(output.status.code(), Some(0), "{document:#}");
    let app_id = document["app"]["object_id"]
        .as_str()
        .expect("object id")
        .to_owned();

    let graph = world.operator_token("https://graph.microsoft.com");
    let new_cert = pem_block(world::UNREGISTERED_CERTIFICATE_PEM, "CERTIFICATE");
    let new_der: String = new_cert
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(
        pem_block(world::CERTIFICATE_PEM, "PRIVATE KEY").as_bytes(),
    )
    .expect("demo key");
    let now = world.emulator.emulator.now_secs();
    let proof = |iss: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
            &json!({"aud": "00000002-0000-0000-c000-000000000000", "iss": iss,
                    "nbf": now - 10, "exp": now + 300}),
            &key,
        )
        .expect("signed")
    };
    let add = |proof: String| {
        let url = format!("{}/v1.0/applications/{app_id}/addKey", world.emulator.url());
        let graph = graph.clone();
        let body = json!({"keyCredential": {"type": "AsymmetricX509Cert", "usage": "Verify",
                          "key": new_der.clone()}, "passwordCredential": null, "proof": proof});
        async move {
            super::common::http_client()
                .post(url)
                .bearer_auth(graph)
                .json(&body)
                .send()
                .await
                .expect("graph")
                .status()
        }
    };
    assert_eq!(
        add(proof("another-app")).await,
        400,
        "a proof for another app"
    );
    assert_eq!(add(proof(&app_id)).await, 200);
    assert_eq!(world.emulator.emulator.directory_counts().certificates, 2);
    world.emulator.shutdown().await;
}

/// The emulated management plane's shapes: tokens for the right audience and `api-version`
/// required; a duplicate assignment is 409 RoleAssignmentExists; the tenant's app registration
/// setting is steered over `/_emulator/config` and the directory is counted in
/// `/_emulator/state`.
#[tokio::test(flavor = "multi_thread")]
async fn emulator_management_shapes() {
    let world = World::start().await;
    let url = world.emulator.url();
    let client = super::common::http_client();

    let arm = world.operator_token("https://management.azure.com");
    let graph = world.operator_token("https://graph.microsoft.com");

    let unauthenticated = client
        .get(format!("{url}/subscriptions?api-version=2022-12-01"))
        .send()
        .await
        .expect("arm");
    assert_eq!(unauthenticated.status(), 401);
    let wrong_audience = client
        .get(format!("{url}/v1.0/applications"))
        .bearer_auth(&arm)
        .send()
        .await
        .expect("graph");
    assert_eq!(wrong_audience.status(), 401);
    let body: Value = wrong_audience.json().await.expect("json");
    assert_eq!(body["error"]["code"], "InvalidAuthenticationToken");
    let no_version = client
        .get(format!("{url}/subscriptions"))
        .bearer_auth(&arm)
        .send()
        .await
        .expect("arm");
    assert_eq!(no_version.status(), 400);
    let body: Value = no_version.json().await.expect("json");
    assert_eq!(body["error"]["code"], "MissingApiVersionParameter");

    let filtered: Value = client
        .get(format!(
            "{url}/v1.0/applications?$filter=displayName%20eq%20%27nothing%27"
        ))
        .bearer_auth(&graph)
        .send()
        .await
        .expect("graph")
        .json()
        .await
        .expect("json");
    assert_eq!(filtered["value"], json!([]));

    let scope = format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.CognitiveServices/accounts/{}",
        world::SUBSCRIPTION_ID,
        world::RESOURCE_GROUP,
        world::ACCOUNT_NAME
    );
    let body = json!({"properties": {
        "roleDefinitionId": format!("/subscriptions/{}/providers/Microsoft.Authorization/roleDefinitions/53ca6127-db72-4b80-b1b0-d745d6d5456d", world::SUBSCRIPTION_ID),
        "principalId": world::NO_ROLE_OBJECT_ID,
        "principalType": "ServicePrincipal",
    }});
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let answer = client
            .put(format!(
                "{url}{scope}/providers/Microsoft.Authorization/roleAssignments/{}?api-version=2022-04-01",
                uuid::Uuid::new_v4()
            ))
            .bearer_auth(&arm)
            .json(&body)
            .send()
            .await
            .expect("arm");
        let status = answer.status().as_u16();
        let body: Value = answer.json().await.expect("json");
        statuses.push((
            status,
            body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        ));
    }
    assert_eq!(
        statuses,
        vec![
            (201, String::new()),
            (409, "RoleAssignmentExists".to_owned())
        ]
    );
    world.emulator.shutdown().await;
}
