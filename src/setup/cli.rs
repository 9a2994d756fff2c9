//! `setup`'s command line: the flags (a contract, see docs/credentials.md), their checks with
//! one line of cause and fix each, and the run with its output and exit code.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::identity::AppChoice;
use super::{CredentialKind, Principal, SetupOptions, WAIT_LIMIT};
use crate::config::Environment;

/// The default env file, in the current directory.
pub const DEFAULT_ENV_FILE: &str = "foundry-proxy.env";
/// The App Registration's name when neither `--app-name` nor `--app-id` is given.
pub const DEFAULT_APP_NAME: &str = "foundry-proxy";

/// `--credential`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CredentialArg {
    /// A client secret, written to the env file.
    Secret,
    /// The certificate (and key) in the PEM file AZURE_CLIENT_CERTIFICATE_PATH names.
    Certificate,
    /// A federated credential for workload identity (--issuer, --subject).
    Federated,
}

/// The flags of `foundry-proxy setup`.
#[derive(Debug, Clone, Args)]
pub struct SetupArgs {
    /// The Foundry / Azure OpenAI resource: its name (searched in your subscriptions) or its
    /// full resource id.
    #[arg(long, value_name = "NAME_OR_RESOURCE_ID")]
    pub resource: String,
    /// The App Registration to find or create [default: foundry-proxy].
    #[arg(long, value_name = "NAME", conflicts_with_all = ["app_id", "assignee"])]
    pub app_name: Option<String>,
    /// An existing App Registration, by application (client) id.
    #[arg(long, value_name = "ID", conflicts_with = "assignee")]
    pub app_id: Option<String>,
    /// Only assign the role to this existing principal (object id of a managed identity,
    /// a workload identity's app, …): no app, no credential.
    #[arg(long, value_name = "OBJECT_ID", conflicts_with_all = ["credential", "issuer", "subject", "secret_days"])]
    pub assignee: Option<String>,
    /// The role to assign on the resource: "Azure AI User", "Azure AI Developer" or
    /// "Cognitive Services OpenAI User".
    #[arg(long, value_name = "ROLE", default_value = "Azure AI User")]
    pub role: String,
    /// The credential the app gets.
    #[arg(long, value_enum)]
    pub credential: Option<CredentialArg>,
    /// For --credential federated: the token issuer (e.g. the cluster's OIDC issuer URL).
    #[arg(long, value_name = "URL")]
    pub issuer: Option<String>,
    /// For --credential federated: the subject (e.g. system:serviceaccount:NAMESPACE:NAME).
    #[arg(long, value_name = "SUB")]
    pub subject: Option<String>,
    /// Days a new client secret is valid (1 to 730).
    #[arg(long, value_name = "N")]
    pub secret_days: Option<u32>,
    /// Where to write the settings `serve` needs (mode 0600).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_ENV_FILE)]
    pub env_file: PathBuf,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

impl SetupArgs {
    /// The validated options, or one line of cause and fix.
    pub fn options(&self, env: &dyn Environment) -> Result<SetupOptions, String> {
        let role = super::role::role_id(&self.role)?;
        let credential = match self.credential {
            None | Some(CredentialArg::Secret) => CredentialKind::Secret,
            Some(CredentialArg::Certificate) => CredentialKind::Certificate,
            Some(CredentialArg::Federated) => CredentialKind::Federated,
        };
        let federation = match (credential, &self.issuer, &self.subject) {
            (CredentialKind::Federated, Some(issuer), Some(subject))
                if !issuer.trim().is_empty() && !subject.trim().is_empty() =>
            {
                Some((issuer.trim().to_owned(), subject.trim().to_owned()))
            }
            (CredentialKind::Federated, _, _) => {
                return Err("--credential federated needs --issuer URL and --subject SUB (e.g. the cluster's OIDC issuer and system:serviceaccount:NAMESPACE:NAME)".to_owned());
            }
            (_, None, None) => None,
            _ => {
                return Err(
                    "--issuer and --subject go with --credential federated — add it, or drop them"
                        .to_owned(),
                );
            }
        };
        let certificate = match credential {
            CredentialKind::Certificate => Some(env.var("AZURE_CLIENT_CERTIFICATE_PATH").map(PathBuf::from).ok_or(
                "--credential certificate registers the certificate in AZURE_CLIENT_CERTIFICATE_PATH — set it to a PEM file with the certificate and its private key",
            )?),
            _ => None,
        };
        let secret_days = self.secret_days.unwrap_or(180);
        if !(1..=730).contains(&secret_days) {
            return Err(format!(
                "--secret-days: {secret_days} is out of range — use 1 to 730 (Microsoft recommends less than 12 months)"
            ));
        }
        if self.resource.trim().is_empty() {
            return Err("--resource is empty — pass the resource's name or resource id".to_owned());
        }
        let principal = match (&self.assignee, &self.app_id, &self.app_name) {
            (Some(oid), _, _) => Principal::Assignee(guid("--assignee", oid)?),
            (None, Some(id), _) => Principal::App(AppChoice::Id(guid("--app-id", id)?)),
            (None, None, name) => Principal::App(AppChoice::Name(
                name.clone()
                    .filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(|| DEFAULT_APP_NAME.to_owned()),
            )),
        };
        Ok(SetupOptions {
            resource: self.resource.trim().to_owned(),
            principal,
            role,
            credential,
            federation,
            certificate,
            secret_days,
            env_file: self.env_file.clone(),
            dry_run: self.dry_run,
            wait_limit: WAIT_LIMIT,
        })
    }
}

/// A GUID flag, trimmed; refused with the flag's name otherwise.
fn guid(flag: &str, value: &str) -> Result<String, String> {
    let value = value.trim();
    uuid::Uuid::parse_str(value)
        .map(|_| value.to_ascii_lowercase())
        .map_err(|_| format!("{flag}: '{value}' is not a GUID — pass the object or application id as shown in the portal"))
}

/// Runs `setup` and prints its output; returns the exit code (0 done, 1 stopped or not
/// working yet, 2 bad flags or settings).
pub async fn run(args: &SetupArgs, env: &dyn Environment, az: &Path) -> u8 {
    let options = match args.options(env) {
        Ok(options) => options,
        Err(line) => {
            eprintln!("foundry-proxy: {line}");
            return 2;
        }
    };
    let outcome = match super::run(&options, env, az).await {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("foundry-proxy: {e}");
            return 2;
        }
    };
    if args.json {
        println!("{}", super::report::json(&outcome));
    } else {
        print!("{}", super::report::text(&outcome));
    }
    outcome.exit_code()
}
