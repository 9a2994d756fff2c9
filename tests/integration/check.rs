//! `foundry-proxy check` as users run it: against a healthy emulator it passes every step and
//! exits 0; for each broken setup it fails the right step, names the catalog code and the
//! fix, and exits non-zero.
//!
//! The emulator runs in the test's runtime while `check` runs as a child process that the test
//! waits for synchronously, hence the multi-threaded runtime.

use std::process::{Command, Output, Stdio};

use foundry_proxy::emulator::{
    self, EmulatorConfig, EntraFault, RunningEmulator, identities as world,
};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_foundry-proxy");

/// Runs `check` with the demo app's settings for `emulator`, then `extra` on top.
fn check(emulator: &RunningEmulator, extra: &[(&str, &str)], args: &[&str]) -> Output {
    let url = emulator.url();
    let vars = [
        ("AZURE_AUTHORITY_HOST", url.as_str()),
        ("FOUNDRY_ENDPOINT", url.as_str()),
        ("AZURE_TENANT_ID", world::TENANT_ID),
        ("AZURE_CLIENT_ID", world::CLIENT_ID),
        ("AZURE_CLIENT_SECRET", world::CLIENT_SECRET),
    ];
    Command::new(BIN)
        .arg("check")
        .args(args)
        .env_clear()
        .env("RUST_LOG", "off")
        .envs(vars)
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("check runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The line of a step in the text report.
fn line<'a>(text: &'a str, step: &str) -> &'a str {
    text.lines()
        .find(|l| {
            let mut words = l.split_whitespace();
            matches!(words.next(), Some("PASS" | "WARN" | "FAIL" | "SKIP"))
                && words.next() == Some(step)
        })
        .unwrap_or_else(|| panic!("no {step} line in\n{text}"))
}

/// A healthy setup passes all five steps, prints the principal's object id, exits 0, and
/// prints no colour codes when not on a terminal.
#[tokio::test(flavor = "multi_thread")]
async fn healthy_setup_passes() {
    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    for args in [&[][..], &["--model", world::CHAT_DEPLOYMENT][..]] {
        let output = check(&emulator, &[], args);
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(0), "{text}");
        for step in ["configuration", "entra", "token", "endpoint", "inference"] {
            assert!(
                line(&text, step).trim_start().starts_with("PASS"),
                "{step}: {text}"
            );
        }
        assert!(text.contains(world::OBJECT_ID), "{text}");
        assert!(text.contains("All checks passed"));
        assert!(!text.contains('\x1b'), "no colour off a terminal");
    }
    emulator.shutdown().await;
}

/// Each broken setup fails the step where it breaks, with the catalog code and its fix.
#[tokio::test(flavor = "multi_thread")]
async fn broken_setups_name_the_fix() {
    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    let no_role = [
        ("AZURE_CLIENT_ID", world::NO_ROLE_CLIENT_ID),
        ("AZURE_CLIENT_SECRET", world::NO_ROLE_CLIENT_SECRET),
    ];
    let other_tenant = [
        ("AZURE_TENANT_ID", world::OTHER_TENANT_ID),
        ("AZURE_CLIENT_ID", world::OTHER_CLIENT_ID),
        ("AZURE_CLIENT_SECRET", world::OTHER_CLIENT_SECRET),
    ];
    let expired = [
        ("AZURE_CLIENT_ID", world::EXPIRED_CLIENT_ID),
        ("AZURE_CLIENT_SECRET", world::EXPIRED_CLIENT_SECRET),
    ];
    let object_id_fix = format!("--assignee-object-id {}", world::NO_ROLE_OBJECT_ID);
    /// Extra environment, extra arguments, failing step, code, a phrase of the fix.
    type Case<'a> = (
        &'a [(&'a str, &'a str)],
        &'a [&'a str],
        &'a str,
        &'a str,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        (
            &no_role,
            &["--model", world::CHAT_DEPLOYMENT],
            "inference",
            "missing_role_assignment",
            &object_id_fix,
        ),
        (
            &no_role,
            &[],
            "inference",
            "missing_role_assignment",
            "Access control (IAM)",
        ),
        (
            &other_tenant,
            &[],
            "inference",
            "token_wrong_tenant",
            "AZURE_TENANT_ID",
        ),
        (
            &[("AZURE_CLIENT_SECRET", "wrong")],
            &[],
            "entra",
            "invalid_client_secret",
            "Value",
        ),
        (
            &expired,
            &[],
            "entra",
            "client_secret_expired",
            "New client secret",
        ),
        (
            &[("AZURE_CLIENT_ID", "00000000-0000-0000-0000-00000000abcd")],
            &[],
            "entra",
            "unknown_client_id",
            "Application (client) ID",
        ),
        (
            &[("AZURE_TENANT_ID", "00000000-0000-0000-0000-0000000000ff")],
            &[],
            "entra",
            "unknown_tenant",
            "Directory (tenant) ID",
        ),
        (
            &[("FOUNDRY_SCOPE", "https://ml.azure.com/.default")],
            &[],
            "token",
            "token_wrong_audience",
            "FOUNDRY_SCOPE",
        ),
        (
            &[("FOUNDRY_SCOPE", "https://unknown.example.com/.default")],
            &[],
            "entra",
            "unknown_resource",
            "scope",
        ),
        (
            &[(
                "FOUNDRY_ENDPOINT",
                "https://eastus.api.cognitive.microsoft.com",
            )],
            &[],
            "endpoint",
            "custom_subdomain_required",
            "Keys and Endpoint",
        ),
        (
            &[("FOUNDRY_ENDPOINT", "http://127.0.0.1:1")],
            &[],
            "endpoint",
            "upstream_unreachable",
            "FOUNDRY_ENDPOINT",
        ),
        (
            &[],
            &["--model", "no-such-deployment"],
            "inference",
            "deployment_not_found",
            "Deployment name",
        ),
        (
            &[
                ("FOUNDRY_API", "deployments"),
                ("FOUNDRY_API_VERSION", "2001-01-01"),
            ],
            &[],
            "inference",
            "api_version_not_supported",
            "FOUNDRY_API_VERSION",
        ),
    ];
    for (env, args, step, code, fix) in cases {
        let output = check(&emulator, env, args);
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(1), "{code}: {text}");
        let failing = line(&text, step);
        assert!(
            failing.trim_start().starts_with("FAIL") && failing.contains(&format!("[{code}]")),
            "{code}: {text}"
        );
        let fix_section = text
            .split("To fix:")
            .nth(1)
            .unwrap_or_else(|| panic!("{code}: no fix in {text}"));
        assert!(
            fix_section.contains(fix),
            "{code}: fix lacks {fix:?}: {fix_section}"
        );
    }
    emulator.shutdown().await;
}

/// Every AADSTS refusal of the fact sheet is named by the entra step.
#[tokio::test(flavor = "multi_thread")]
async fn entra_codes_are_named() {
    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    for (aadsts, code) in [
        (700_027, "certificate_not_registered"),
        (700_024, "assertion_time_invalid"),
        (70_021, "federated_credential_mismatch"),
        (70_011, "invalid_scope"),
        (700_022, "scope_multiple_resources"),
        (7_000_218, "missing_client_credential"),
        (900_144, "missing_parameter"),
        (9_001_023, "tenant_specific_endpoint_required"),
        (90_033, "entra_unavailable"),
    ] {
        emulator
            .emulator
            .set_entra_fault(Some(EntraFault::Aadsts(aadsts)));
        let output = check(&emulator, &[], &[]);
        let text = stdout(&output);
        assert_eq!(output.status.code(), Some(1), "{aadsts}: {text}");
        assert!(
            line(&text, "entra").contains(&format!("[{code}]")),
            "{aadsts}: {text}"
        );
    }
    emulator.emulator.set_entra_fault(None);
    emulator.shutdown().await;
}

/// Warnings do not fail the check: a secret shaped like a Secret ID fails at Entra, but a
/// clock off by an hour only warns.
#[tokio::test(flavor = "multi_thread")]
async fn warnings_and_their_exit_codes() {
    let skewed = emulator::spawn(EmulatorConfig {
        clock_offset_secs: 3600,
        ..EmulatorConfig::default()
    })
    .await
    .expect("emulator");
    let output = check(&skewed, &[], &[]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(
        line(&text, "token").trim_start().starts_with("WARN") && text.contains("clock"),
        "{text}"
    );
    skewed.shutdown().await;

    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    let output = check(
        &emulator,
        &[(
            "AZURE_CLIENT_SECRET",
            "6f1c0b4e-27c4-4c8e-9a51-1d2f3a4b5c6d",
        )],
        &[],
    );
    let text = stdout(&output);
    assert!(
        line(&text, "configuration")
            .trim_start()
            .starts_with("WARN")
            && text.contains("Secret ID"),
        "{text}"
    );
    assert_eq!(output.status.code(), Some(1), "Entra refuses it: {text}");
    emulator.shutdown().await;
}

/// A missing setting fails the configuration step with exit code 2 and skips the rest; the
/// JSON form carries the same verdicts for scripts.
#[tokio::test(flavor = "multi_thread")]
async fn configuration_errors_and_json() {
    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    let output = check(&emulator, &[("AZURE_CLIENT_SECRET", "")], &["--json"]);
    assert_eq!(output.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["ok"], false);
    assert_eq!(report["steps"][0]["name"], "configuration");
    assert_eq!(report["steps"][0]["status"], "fail");
    assert_eq!(report["steps"][0]["code"], "AZURE_CLIENT_SECRET");
    for step in report["steps"].as_array().expect("steps").iter().skip(1) {
        assert_eq!(step["status"], "skip");
    }

    let output = check(&emulator, &[], &["--json"]);
    assert_eq!(output.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&output.stdout).expect("one JSON document");
    assert_eq!(report["ok"], true);
    assert_eq!(report["identity"]["object_id"], world::OBJECT_ID);
    assert_eq!(report["steps"].as_array().map(Vec::len), Some(5));
    emulator.shutdown().await;
}

/// `check` walks a Foundry project endpoint from `FOUNDRY_ENDPOINT` alone: the project's scope,
/// one inference call on the project's v1 surface; and an app whose role does not reach the
/// project fails the inference step with the project's fix (Azure AI User on the project).
#[tokio::test(flavor = "multi_thread")]
async fn project_endpoint_is_walked() {
    let emulator = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator");
    let endpoint = format!("{}/api/projects/{}", emulator.url(), world::PROJECT);
    let output = check(
        &emulator,
        &[("FOUNDRY_ENDPOINT", &endpoint)],
        &["--model", world::CHAT_DEPLOYMENT],
    );
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains(world::PROJECT_SCOPE), "{text}");
    assert!(
        line(&text, "inference").contains("/api/projects/demo-project/openai/v1/"),
        "{text}"
    );
    let output = check(
        &emulator,
        &[
            ("FOUNDRY_ENDPOINT", &endpoint),
            ("AZURE_CLIENT_ID", world::OPENAI_USER_CLIENT_ID),
            ("AZURE_CLIENT_SECRET", world::OPENAI_USER_CLIENT_SECRET),
        ],
        &["--model", world::CHAT_DEPLOYMENT],
    );
    let text = stdout(&output);
    assert_ne!(output.status.code(), Some(0), "{text}");
    assert!(
        line(&text, "inference").trim_start().starts_with("FAIL"),
        "{text}"
    );
    assert!(text.contains("Azure AI User"), "{text}");
    emulator.shutdown().await;
}
