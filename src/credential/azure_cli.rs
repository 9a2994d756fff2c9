//! The Azure CLI credential: the token of the account signed in with `az login`.
//!
//! Runs `az account get-access-token -o json --scope SCOPE [--tenant T]` (docs/docs/azure-facts.md §2)
//! and reads `accessToken` and `expires_on`. The CLI's stdout holds the token: it is parsed
//! and dropped, never logged or put in an error.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;

use super::NumberOrString;
use crate::clock::unix_now;

use super::{AccessToken, Credential, CredentialError, TokenFuture};
use crate::diagnose::RefusalCode;
use crate::secret::Secret;

/// How long `az` may take (it may refresh its own token over the network first).
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// The lifetime assumed when the CLI is too old to say it in a usable form (see
/// [`parse_output`]).
const ASSUMED_LIFETIME: Duration = Duration::from_secs(300);

/// A token from the Azure CLI's signed-in account.
#[derive(Debug, Clone)]
pub struct AzureCliCredential {
    /// `az`, found on `PATH` when run; tests point it at a fake.
    program: PathBuf,
    scope: String,
    tenant: Option<String>,
    timeout: Duration,
}

impl AzureCliCredential {
    /// A credential asking `az` on `PATH` for `scope`, in `tenant` when given (otherwise
    /// the CLI's default tenant).
    pub fn new(scope: &str, tenant: Option<String>) -> Self {
        Self {
            program: PathBuf::from("az"),
            scope: scope.to_owned(),
            tenant,
            timeout: CLI_TIMEOUT,
        }
    }

    /// The same credential running `program` instead of `az` from `PATH` (a path, or a name
    /// looked up on `PATH`). `PATH` is process-wide, so tests use this to run a fake CLI.
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// The same credential with a different time limit for one run (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The arguments after the program name.
    fn args(&self) -> Vec<&str> {
        let mut args = vec![
            "account",
            "get-access-token",
            "-o",
            "json",
            "--scope",
            &self.scope,
        ];
        if let Some(tenant) = &self.tenant {
            args.extend(["--tenant", tenant.as_str()]);
        }
        args
    }

    async fn fetch(&self) -> Result<AccessToken, CredentialError> {
        let child = tokio::process::Command::new(&self.program)
            .args(self.args())
            .env("AZURE_CORE_NO_COLOR", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => CredentialError::Source {
                    code: RefusalCode::AzureCliMissing,
                    detail: "the Azure CLI (az) is not installed or not on PATH".into(),
                    transient: false,
                },
                _ => failed(format!("cannot run {}: {e}", self.program.display()), false),
            })?;
        // On timeout the future holding the child is dropped, and kill_on_drop kills it.
        let output = tokio::time::timeout(self.timeout, child.wait_with_output())
            .await
            .map_err(|_| {
                failed(
                    format!(
                        "az account get-access-token did not finish within {:?}",
                        self.timeout
                    ),
                    true,
                )
            })?
            .map_err(|e| failed(format!("az account get-access-token failed: {e}"), true))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(exit_error(&output.status.to_string(), &stderr));
        }
        parse_output(&output.stdout, unix_now())
            .map_err(|e| failed(format!("az account get-access-token printed {e}"), true))
    }
}

impl Credential for AzureCliCredential {
    fn get_token(&self) -> TokenFuture<'_> {
        Box::pin(self.fetch())
    }

    fn kind(&self) -> &'static str {
        "azure-cli"
    }
}

fn failed(detail: String, transient: bool) -> CredentialError {
    CredentialError::Source {
        code: RefusalCode::AzureCliFailed,
        detail,
        transient,
    }
}

/// A non-zero exit: signed out, or something else (its first stderr line).
fn exit_error(status: &str, stderr: &str) -> CredentialError {
    let first = stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("(nothing on stderr)");
    let first = first.trim_end_matches('.');
    if stderr.contains("az login") {
        return CredentialError::Source {
            code: RefusalCode::AzureCliLoggedOut,
            detail: format!("the Azure CLI is not signed in: {first}"),
            transient: false,
        };
    }
    failed(
        format!("az account get-access-token failed ({status}): {first}"),
        true,
    )
}

#[derive(Deserialize)]
struct CliToken {
    #[serde(rename = "accessToken")]
    access_token: Option<String>,
    /// Epoch seconds (CLI ≥ 2.54).
    expires_on: Option<NumberOrString>,
    /// Local time without a zone, e.g. `2030-01-02 03:04:05.000000` (every CLI version).
    #[serde(rename = "expiresOn")]
    expires_on_local: Option<String>,
}

/// Reads the CLI's JSON; `now` is seconds since the epoch. The error describes what is
/// wrong with the output, never its content (it holds the token).
fn parse_output(stdout: &[u8], now: u64) -> Result<AccessToken, String> {
    let raw: CliToken =
        serde_json::from_slice(stdout).map_err(|_| "output that is not JSON".to_owned())?;
    let token = raw
        .access_token
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| "no accessToken".to_owned())?;
    let lifetime = match (&raw.expires_on, &raw.expires_on_local) {
        (Some(epoch), _) => {
            let epoch = epoch
                .value()
                .ok_or_else(|| "an expires_on that is not a number".to_owned())?;
            // Epoch seconds of real dates are exact in f64.
            #[allow(clippy::cast_precision_loss)]
            let left = epoch - now as f64;
            if left < 1.0 {
                return Err(format!(
                    "a token that is already expired (expires_on is {:.0} s ago)",
                    -left
                ));
            }
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Duration::from_secs(left as u64)
        }
        // CLIs before 2.54 give only `expiresOn`, a local time without a zone. Turning it
        // into an instant needs the machine's UTC offset at that moment, which cannot be had
        // soundly in a multi-threaded program without a time-zone database. The CLI renews its
        // own token when less than 5 minutes remain, so any token it hands out lives at least
        // that long: assume 5 minutes, and the refresher asks again (cheaply) in half of that.
        (None, Some(_)) => ASSUMED_LIFETIME,
        (None, None) => return Err("neither expires_on nor expiresOn".to_owned()),
    };
    Ok(AccessToken {
        token: Secret::new(token),
        expires_in: lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    /// CLI ≥ 2.54: `expires_on` (epoch seconds) gives the lifetime.
    #[test]
    fn expires_on_epoch() {
        let out = format!(
            r#"{{"accessToken":"a.b.c","expiresOn":"2030-01-02 03:04:05.000000","expires_on":{},"subscription":"s","tenant":"t","tokenType":"Bearer"}}"#,
            NOW + 3000
        );
        let token = parse_output(out.as_bytes(), NOW).expect("token");
        assert_eq!(token.token.expose(), "a.b.c");
        assert_eq!(token.expires_in, Duration::from_secs(3000));
    }

    /// Old CLIs give only `expiresOn`: five minutes are assumed.
    #[test]
    fn expires_on_local_only() {
        let out = br#"{"accessToken":"a.b.c","expiresOn":"2030-01-02 03:04:05.000000","tokenType":"Bearer"}"#;
        let token = parse_output(out, NOW).expect("token");
        assert_eq!(token.expires_in, ASSUMED_LIFETIME);
    }

    /// Output that is not a usable token is refused without echoing it.
    #[test]
    fn bad_output() {
        for out in [
            &b"secret-token"[..],
            br#"{"expires_on":1}"#,
            br#"{"accessToken":"secret-token"}"#,
            br#"{"accessToken":"secret-token","expires_on":1}"#,
            br#"{"accessToken":"secret-token","expires_on":"later"}"#,
        ] {
            let error = parse_output(out, NOW).expect_err("not a token");
            assert!(!error.contains("secret-token"), "{error}");
        }
    }

    /// A signed-out CLI is told apart from other failures.
    #[test]
    fn exit_errors() {
        let out = exit_error(
            "exit status: 1",
            "ERROR: Please run 'az login' to setup account.\n",
        );
        assert!(
            matches!(
                out,
                CredentialError::Source {
                    code: crate::diagnose::RefusalCode::AzureCliLoggedOut,
                    transient: false,
                    ..
                }
            ),
            "{out:?}"
        );
        let other = exit_error(
            "exit status: 2",
            "\nERROR: Tenant 'x' not found\nTraceback\n",
        );
        match other {
            CredentialError::Source {
                code,
                detail,
                transient,
            } => {
                assert_eq!(code, "azure_cli_failed");
                assert!(transient);
                assert!(detail.ends_with("ERROR: Tenant 'x' not found"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }
}
