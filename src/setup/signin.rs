//! Signing in as the operator: the Azure CLI login by default, or, when `FOUNDRY_CREDENTIAL`
//! names another kind (a pipeline's service principal, workload or managed identity), that
//! credential exactly as `serve` would build it, asked for ARM and Graph scopes instead.

use std::path::Path;

use super::cloud::Cloud;
use super::refusal::Refusal;
use crate::config::{self, Environment, Settings};
use crate::credential::Credential;
use crate::credential::azure_cli::AzureCliCredential;
use crate::secret::Secret;

/// How the operator signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `az account get-access-token` (the default).
    AzureCli,
    /// The credential `FOUNDRY_CREDENTIAL` names, with its usual settings.
    Configured,
}

impl Operator {
    /// The operator's sign-in for this environment.
    pub fn from_env(env: &dyn Environment) -> Self {
        match env.var(config::credential::ENV_CREDENTIAL).as_deref() {
            None | Some("auto" | "azure-cli") => Self::AzureCli,
            Some(_) => Self::Configured,
        }
    }

    /// For the summary line.
    pub fn describe(self) -> &'static str {
        match self {
            Self::AzureCli => "Azure CLI login",
            Self::Configured => "the FOUNDRY_CREDENTIAL credential",
        }
    }

    /// A token for `scope`, never logged.
    pub async fn token(
        self,
        env: &dyn Environment,
        cloud: &Cloud,
        az: &Path,
        scope: &str,
    ) -> Result<Secret, Refusal> {
        match self {
            Self::AzureCli => AzureCliCredential::new(scope, env.var("AZURE_TENANT_ID"))
                .with_program(az)
                .get_token()
                .await
                .map(|t| t.token)
                .map_err(|e| Refusal::not_signed_in(&e.to_string())),
            Self::Configured => {
                // The endpoint is not used for a token; ARM's stands in so the settings validate.
                let settings = Settings {
                    endpoint: Some(cloud.arm.clone()),
                    scope: Some(scope.to_owned()),
                    ..Settings::default()
                };
                let refused = |detail: String| {
                    Refusal::new(
                        "operator_sign_in_failed",
                        format!("Cannot sign in as the operator with FOUNDRY_CREDENTIAL: {detail}"),
                        &[
                            "Fix the credential's settings (docs/credentials.md), or unset FOUNDRY_CREDENTIAL to use your `az login`.",
                            "The identity needs the rights setup uses: Application Developer (or owner of the app) in Entra, and Owner, User Access Administrator or Role Based Access Control Administrator on the resource.",
                        ],
                    )
                };
                let config =
                    config::load(None, env, settings).map_err(|e| refused(e.to_string()))?;
                let tls = crate::tls::client_config(config.extra_ca_file.as_deref())
                    .map_err(|e| refused(e.to_string()))?;
                let credential =
                    crate::credential::build(&config, tls).map_err(|e| refused(e.to_string()))?;
                credential
                    .get_token()
                    .await
                    .map(|t| t.token)
                    .map_err(|e| refused(e.to_string()))
            }
        }
    }
}
