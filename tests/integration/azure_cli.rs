//! The Azure CLI credential running a fake `az` (a shell script this test writes), as a real
//! child process: the exact command line, both output generations, and each failure's code.
#![cfg(unix)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foundry_proxy::credential::azure_cli::AzureCliCredential;
use foundry_proxy::credential::{AccessToken, Credential, CredentialError};

const SCOPE: &str = "https://cognitiveservices.azure.com/.default";
const TOKEN: &str = "eyJhbGciOiJub25lIn0.eyJvaWQiOiJ4In0.fake-cli-token";

/// One directory of fake CLIs, written before any test spawns a process: a file being
/// written while another thread forks can make its exec fail with "Text file busy", so all
/// scripts are created (and closed) once, behind this lock, before the first run.
static FAKES: LazyLock<PathBuf> = LazyLock::new(write_fakes);

fn write_fakes() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "fake-az-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let expires_on = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3000;
    // Each script records its arguments, one per line, next to itself.
    let record = r#"printf '%s\n' "$@" > "$0.args""#;
    let scripts = [
        (
            "az-current",
            format!(
                r#"{record}
printf '%s' '{{"accessToken":"{TOKEN}","expiresOn":"2030-01-02 03:04:05.000000","expires_on":{expires_on},"subscription":"s","tenant":"t","tokenType":"Bearer"}}'"#
            ),
        ),
        (
            "az-tenant",
            format!(
                r#"{record}
printf '%s' '{{"accessToken":"{TOKEN}","expires_on":{expires_on},"tokenType":"Bearer"}}'"#
            ),
        ),
        (
            "az-old",
            format!(
                r#"{record}
printf '%s' '{{"accessToken":"{TOKEN}","expiresOn":"2030-01-02 03:04:05.000000","subscription":"s","tenant":"t","tokenType":"Bearer"}}'"#
            ),
        ),
        (
            "az-logged-out",
            format!(
                r#"{record}
echo "ERROR: Please run 'az login' to setup account." >&2
exit 1"#
            ),
        ),
        (
            "az-broken",
            format!(
                r#"{record}
echo "ERROR: (pii). Status: Response_Status.Status_InteractionRequired" >&2
echo "Traceback (most recent call last):" >&2
exit 2"#
            ),
        ),
        (
            "az-garbage",
            format!(
                r#"{record}
echo 'WARNING: not json {TOKEN}'"#
            ),
        ),
        ("az-hangs", "exec sleep 30".to_owned()),
    ];
    for (name, body) in scripts {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write fake az");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

fn fake(name: &str) -> PathBuf {
    FAKES.join(name)
}

/// The arguments the fake `name` was last run with.
fn recorded_args(name: &str) -> Vec<String> {
    let path = Path::new(&*FAKES).join(format!("{name}.args"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The `Source` error's code, detail and transience (panics on any other outcome).
fn source_error(outcome: Result<AccessToken, CredentialError>) -> (&'static str, String, bool) {
    match outcome {
        Err(CredentialError::Source {
            code,
            detail,
            transient,
        }) => (code.as_str(), detail, transient),
        other => panic!("expected a Source error, got {other:?}"),
    }
}

/// A current CLI: the command line is exactly the documented one, the token is read, and
/// `expires_on` (epoch seconds) gives the lifetime.
#[tokio::test]
async fn current_cli_token_and_command_line() {
    let cred = AzureCliCredential::new(SCOPE, None).with_program(fake("az-current"));
    assert_eq!(cred.kind(), "azure-cli");
    let token = cred.get_token().await.expect("token");
    assert_eq!(token.token.expose(), TOKEN);
    let secs = token.expires_in.as_secs();
    assert!((2990..=3000).contains(&secs), "{secs}");
    assert_eq!(
        recorded_args("az-current").join(" "),
        "account get-access-token -o json --scope https://cognitiveservices.azure.com/.default"
    );
}

/// With a tenant, `--tenant T` is added at the end.
#[tokio::test]
async fn tenant_is_passed() {
    let cred = AzureCliCredential::new(SCOPE, Some("contoso.onmicrosoft.com".into()))
        .with_program(fake("az-tenant"));
    cred.get_token().await.expect("token");
    assert_eq!(
        recorded_args("az-tenant"),
        [
            "account",
            "get-access-token",
            "-o",
            "json",
            "--scope",
            SCOPE,
            "--tenant",
            "contoso.onmicrosoft.com"
        ]
    );
}

/// A CLI older than 2.54 gives only `expiresOn` (local time, no zone): the token is used
/// with an assumed five-minute life.
#[tokio::test]
async fn old_cli_assumes_five_minutes() {
    let cred = AzureCliCredential::new(SCOPE, None).with_program(fake("az-old"));
    let token = cred.get_token().await.expect("token");
    assert_eq!(token.token.expose(), TOKEN);
    assert_eq!(token.expires_in, Duration::from_secs(300));
}

/// A signed-out CLI is `azure_cli_logged_out`, final, quoting the CLI's advice.
#[tokio::test]
async fn logged_out() {
    let cred = AzureCliCredential::new(SCOPE, None).with_program(fake("az-logged-out"));
    let (code, detail, transient) = source_error(cred.get_token().await);
    assert_eq!(code, "azure_cli_logged_out");
    assert!(!transient);
    assert!(detail.contains("Please run 'az login'"), "{detail}");
}

/// No program at all is `azure_cli_missing`, final.
#[tokio::test]
async fn missing_program() {
    let cred = AzureCliCredential::new(SCOPE, None).with_program(fake("no-such-az"));
    let (code, detail, transient) = source_error(cred.get_token().await);
    assert_eq!(code, "azure_cli_missing");
    assert!(!transient);
    assert_eq!(detail, "the Azure CLI (az) is not installed or not on PATH");
}

/// Another non-zero exit is `azure_cli_failed` (transient) with stderr's first line.
#[tokio::test]
async fn other_failure() {
    let cred = AzureCliCredential::new(SCOPE, None).with_program(fake("az-broken"));
    let (code, detail, transient) = source_error(cred.get_token().await);
    assert_eq!(code, "azure_cli_failed");
    assert!(transient);
    assert!(detail.contains("exit status: 2"), "{detail}");
    assert!(detail.contains("Status_InteractionRequired"), "{detail}");
    assert!(!detail.contains("Traceback"), "{detail}");
}

/// Output that is not the token JSON is `azure_cli_failed`, and stdout never reaches the
/// error (it may hold a token).
#[tokio::test]
async fn unparseable_output() {
    let cred = AzureCliCredential::new(SCOPE, None).with_program(fake("az-garbage"));
    let (code, detail, transient) = source_error(cred.get_token().await);
    assert_eq!(code, "azure_cli_failed");
    assert!(transient);
    assert!(!detail.contains(TOKEN), "{detail}");
    assert!(!detail.contains("WARNING"), "{detail}");
}

/// A CLI that does not finish in time is killed and reported as `azure_cli_failed`.
#[tokio::test]
async fn hanging_cli_times_out() {
    let cred = AzureCliCredential::new(SCOPE, None)
        .with_program(fake("az-hangs"))
        .with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let (code, detail, transient) = source_error(cred.get_token().await);
    assert_eq!(code, "azure_cli_failed");
    assert!(transient);
    assert!(detail.contains("did not finish"), "{detail}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}
