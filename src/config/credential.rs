//! Which credential the proxy uses, and the settings of each kind.
//!
//! `FOUNDRY_CREDENTIAL=auto` (the default) follows the order users know from
//! DefaultAzureCredential: a client secret or certificate from the environment, workload
//! identity, managed identity, then the Azure CLI. Unlike DefaultAzureCredential it never
//! probes the IMDS address blindly: managed identity is chosen in `auto` only when the
//! environment announces one (`IDENTITY_ENDPOINT`, `IMDS_ENDPOINT`), so a laptop without
//! credentials gets a configuration error at once instead of a stall. On an Azure VM set
//! `FOUNDRY_CREDENTIAL=managed-identity`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use url::Url;

use super::{ConfigError, Environment};
use crate::secret::Secret;

/// `FOUNDRY_CREDENTIAL`
pub const ENV_CREDENTIAL: &str = "FOUNDRY_CREDENTIAL";
/// A file holding the client secret (re-read at every refresh).
pub const ENV_CLIENT_SECRET_FILE: &str = "AZURE_CLIENT_SECRET_FILE";
/// PEM (certificate + key) or PKCS#12 file.
pub const ENV_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
/// Password of a PKCS#12 file.
pub const ENV_CERTIFICATE_PASSWORD: &str = "AZURE_CLIENT_CERTIFICATE_PASSWORD";
/// Send the certificate chain (`x5c`) in the assertion.
pub const ENV_SEND_CHAIN: &str = "AZURE_CLIENT_SEND_CERTIFICATE_CHAIN";
/// The projected service-account token (workload identity).
pub const ENV_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
/// App Service / Container Apps identity endpoint.
pub const ENV_IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
/// App Service / Container Apps identity header value.
pub const ENV_IDENTITY_HEADER: &str = "IDENTITY_HEADER";
/// The IMDS base URL (default `http://169.254.169.254`).
pub const ENV_IMDS_ENDPOINT: &str = "IMDS_ENDPOINT";
/// A user-assigned managed identity by object (principal) id.
pub const ENV_MI_OBJECT_ID: &str = "FOUNDRY_MANAGED_IDENTITY_OBJECT_ID";
/// A user-assigned managed identity by Azure resource id.
pub const ENV_MI_RESOURCE_ID: &str = "FOUNDRY_MANAGED_IDENTITY_RESOURCE_ID";
/// The IMDS address on every Azure VM.
pub const DEFAULT_IMDS_ENDPOINT: &str = "http://169.254.169.254";

/// The `[credential]` table of the config file (and its environment variables).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSettings {
    /// `FOUNDRY_CREDENTIAL`: auto, client-secret, client-certificate, workload-identity,
    /// managed-identity, azure-cli.
    pub kind: Option<String>,
    /// `AZURE_CLIENT_SECRET_FILE`
    pub client_secret_file: Option<PathBuf>,
    /// `AZURE_CLIENT_CERTIFICATE_PATH`
    pub certificate_path: Option<PathBuf>,
    /// `AZURE_CLIENT_CERTIFICATE_PASSWORD`
    pub certificate_password: Option<Secret>,
    /// `AZURE_CLIENT_SEND_CERTIFICATE_CHAIN`
    pub send_certificate_chain: Option<bool>,
    /// `AZURE_FEDERATED_TOKEN_FILE`
    pub federated_token_file: Option<PathBuf>,
    /// `IDENTITY_ENDPOINT`
    pub identity_endpoint: Option<String>,
    /// `IDENTITY_HEADER`
    pub identity_header: Option<Secret>,
    /// `IMDS_ENDPOINT`
    pub imds_endpoint: Option<String>,
    /// `FOUNDRY_MANAGED_IDENTITY_OBJECT_ID`
    pub managed_identity_object_id: Option<String>,
    /// `FOUNDRY_MANAGED_IDENTITY_RESOURCE_ID`
    pub managed_identity_resource_id: Option<String>,
}

impl CredentialSettings {
    /// Reads the environment layer.
    pub fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let send_chain = env
            .var(ENV_SEND_CHAIN)
            .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => Ok(true),
                "0" | "false" | "no" => Ok(false),
                _ => Err(ConfigError::new(
                    ENV_SEND_CHAIN,
                    format!("'{v}' is not true or false"),
                    "use true or false",
                )),
            })
            .transpose()?;
        Ok(Self {
            kind: env.var(ENV_CREDENTIAL),
            client_secret_file: env.var(ENV_CLIENT_SECRET_FILE).map(PathBuf::from),
            certificate_path: env.var(ENV_CERTIFICATE_PATH).map(PathBuf::from),
            certificate_password: env.var(ENV_CERTIFICATE_PASSWORD).map(Secret::new),
            send_certificate_chain: send_chain,
            federated_token_file: env.var(ENV_FEDERATED_TOKEN_FILE).map(PathBuf::from),
            identity_endpoint: env.var(ENV_IDENTITY_ENDPOINT),
            identity_header: env.var(ENV_IDENTITY_HEADER).map(Secret::new),
            imds_endpoint: env.var(ENV_IMDS_ENDPOINT),
            managed_identity_object_id: env.var(ENV_MI_OBJECT_ID),
            managed_identity_resource_id: env.var(ENV_MI_RESOURCE_ID),
        })
    }

    /// Overlays `higher` on `self`.
    pub fn overlay(self, higher: Self) -> Self {
        Self {
            kind: higher.kind.or(self.kind),
            client_secret_file: higher.client_secret_file.or(self.client_secret_file),
            certificate_path: higher.certificate_path.or(self.certificate_path),
            certificate_password: higher.certificate_password.or(self.certificate_password),
            send_certificate_chain: higher
                .send_certificate_chain
                .or(self.send_certificate_chain),
            federated_token_file: higher.federated_token_file.or(self.federated_token_file),
            identity_endpoint: higher.identity_endpoint.or(self.identity_endpoint),
            identity_header: higher.identity_header.or(self.identity_header),
            imds_endpoint: higher.imds_endpoint.or(self.imds_endpoint),
            managed_identity_object_id: higher
                .managed_identity_object_id
                .or(self.managed_identity_object_id),
            managed_identity_resource_id: higher
                .managed_identity_resource_id
                .or(self.managed_identity_resource_id),
        }
    }
}

/// Where the client secret comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// Given directly.
    Value(Secret),
    /// Read from a file at every refresh, so a rotated secret is picked up without restart.
    File(PathBuf),
}

/// Which managed identity endpoint answers.
#[derive(Debug, Clone)]
pub enum ManagedIdentityEndpoint {
    /// App Service / Container Apps: `IDENTITY_ENDPOINT` + `IDENTITY_HEADER`.
    AppService {
        /// The endpoint URL.
        endpoint: Url,
        /// The header value proving the caller runs in the app.
        header: Secret,
    },
    /// Azure VMs and scale sets: IMDS.
    Imds {
        /// Base URL, normally `http://169.254.169.254`.
        endpoint: Url,
    },
}

/// Which identity of the machine to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentitySelector {
    /// The system-assigned identity.
    SystemAssigned,
    /// A user-assigned identity by client id (`AZURE_CLIENT_ID`).
    ClientId(String),
    /// A user-assigned identity by object id.
    ObjectId(String),
    /// A user-assigned identity by Azure resource id.
    ResourceId(String),
}

/// The credential to run with.
#[derive(Debug, Clone)]
pub enum CredentialConfig {
    /// App Registration + client secret.
    ClientSecret(SecretSource),
    /// App Registration + certificate (signed client assertion).
    ClientCertificate {
        /// PEM (certificate + private key) or PKCS#12.
        path: PathBuf,
        /// PKCS#12 password.
        password: Option<Secret>,
        /// Send the chain as `x5c`.
        send_chain: bool,
    },
    /// A federated token from a file (AKS workload identity, GitHub OIDC, …).
    WorkloadIdentity {
        /// The token file, re-read at every refresh.
        token_file: PathBuf,
    },
    /// The machine's managed identity.
    ManagedIdentity {
        /// Which endpoint.
        endpoint: ManagedIdentityEndpoint,
        /// Which identity.
        selector: IdentitySelector,
    },
    /// The Azure CLI's signed-in account.
    AzureCli,
}

impl CredentialConfig {
    /// The kind's name, as in `FOUNDRY_CREDENTIAL`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ClientSecret(_) => "client-secret",
            Self::ClientCertificate { .. } => "client-certificate",
            Self::WorkloadIdentity { .. } => "workload-identity",
            Self::ManagedIdentity { .. } => "managed-identity",
            Self::AzureCli => "azure-cli",
        }
    }

    /// True for kinds that act as an App Registration and need tenant and client id.
    pub fn needs_app(&self) -> bool {
        matches!(
            self,
            Self::ClientSecret(_) | Self::ClientCertificate { .. } | Self::WorkloadIdentity { .. }
        )
    }
}

/// The chosen credential and, for logs, why it was chosen and why others were skipped.
#[derive(Debug, Clone)]
pub struct Choice {
    /// The credential.
    pub credential: CredentialConfig,
    /// One sentence: why this one.
    pub reason: String,
}

/// What the choice needs besides the `[credential]` settings.
#[derive(Debug)]
pub struct AppIdentity<'a> {
    /// `AZURE_TENANT_ID`
    pub tenant_id: Option<&'a str>,
    /// `AZURE_CLIENT_ID`
    pub client_id: Option<&'a str>,
    /// `AZURE_CLIENT_SECRET`
    pub client_secret: Option<&'a Secret>,
}

/// Chooses and validates the credential. `az_on_path` says whether the Azure CLI exists.
pub fn choose(
    settings: CredentialSettings,
    app: &AppIdentity<'_>,
    az_on_path: bool,
) -> Result<Choice, ConfigError> {
    let kind = settings
        .kind
        .clone()
        .unwrap_or_else(|| "auto".to_owned())
        .trim()
        .to_ascii_lowercase();
    let secret = app.client_secret.filter(|s| !s.is_blank());
    let has_secret = secret.is_some() || settings.client_secret_file.is_some();
    let wanted = match kind.as_str() {
        "auto" => {
            // DefaultAzureCredential's order; each candidate says why it applies or not.
            let candidates = [
                (
                    "client-secret",
                    has_secret,
                    "a client secret is configured",
                    "no AZURE_CLIENT_SECRET or AZURE_CLIENT_SECRET_FILE",
                ),
                (
                    "client-certificate",
                    settings.certificate_path.is_some(),
                    "AZURE_CLIENT_CERTIFICATE_PATH is set",
                    "no AZURE_CLIENT_CERTIFICATE_PATH",
                ),
                (
                    "workload-identity",
                    settings.federated_token_file.is_some(),
                    "AZURE_FEDERATED_TOKEN_FILE is set",
                    "no AZURE_FEDERATED_TOKEN_FILE",
                ),
                (
                    "managed-identity",
                    settings.identity_endpoint.is_some() || settings.imds_endpoint.is_some(),
                    "a managed identity endpoint is announced (IDENTITY_ENDPOINT or IMDS_ENDPOINT)",
                    "no IDENTITY_ENDPOINT or IMDS_ENDPOINT (auto never probes IMDS)",
                ),
                (
                    "azure-cli",
                    az_on_path && app.client_id.is_none(),
                    "the Azure CLI is installed and no AZURE_CLIENT_ID names an app",
                    if az_on_path {
                        "AZURE_CLIENT_ID is set, so an app credential was expected"
                    } else {
                        "az is not on PATH"
                    },
                ),
            ];
            let Some(chosen) = candidates.iter().position(|(_, applies, _, _)| *applies) else {
                return Err(no_credential(app));
            };
            let (kind, _, why, _) = candidates[chosen];
            let skipped: Vec<String> = candidates[..chosen]
                .iter()
                .map(|(name, _, _, why_not)| format!("{name}: {why_not}"))
                .collect();
            let reason = if skipped.is_empty() {
                format!("auto: {why}")
            } else {
                format!("auto: {why} (skipped {})", skipped.join("; "))
            };
            (kind, reason)
        }
        "client-secret" | "client-certificate" | "workload-identity" | "managed-identity"
        | "azure-cli" => (kind.as_str(), format!("{ENV_CREDENTIAL}={kind}")),
        other => {
            return Err(ConfigError::new(
                ENV_CREDENTIAL,
                format!("unknown credential '{other}'"),
                "use auto, client-secret, client-certificate, workload-identity, managed-identity or azure-cli",
            ));
        }
    };
    let (kind, reason) = wanted;
    let credential = match kind {
        "client-secret" => {
            app_ids(app)?;
            match (secret, settings.client_secret_file) {
                (Some(secret), _) => {
                    CredentialConfig::ClientSecret(SecretSource::Value(secret.clone()))
                }
                (None, Some(file)) => CredentialConfig::ClientSecret(SecretSource::File(readable(
                    &file,
                    ENV_CLIENT_SECRET_FILE,
                )?)),
                (None, None) => {
                    return Err(ConfigError::new(
                        super::ENV_CLIENT_SECRET,
                        "missing",
                        "set it to a client secret *value* from App Registration → Certificates & secrets (the Value column, not the Secret ID), or set AZURE_CLIENT_SECRET_FILE",
                    ));
                }
            }
        }
        "client-certificate" => {
            app_ids(app)?;
            let path = settings.certificate_path.ok_or_else(|| {
                ConfigError::new(ENV_CERTIFICATE_PATH, "missing", "set it to a PEM file (certificate and private key) or a PKCS#12 (.pfx/.p12) file")
            })?;
            CredentialConfig::ClientCertificate {
                path: readable(&path, ENV_CERTIFICATE_PATH)?,
                password: settings.certificate_password,
                send_chain: settings.send_certificate_chain.unwrap_or(false),
            }
        }
        "workload-identity" => {
            app_ids(app)?;
            let file = settings.federated_token_file.ok_or_else(|| {
                ConfigError::new(ENV_FEDERATED_TOKEN_FILE, "missing", "set it to the projected service-account token (the AKS webhook sets it to /var/run/secrets/azure/tokens/azure-identity-token)")
            })?;
            // The kubelet may not have written the file yet when the proxy starts: it is read
            // at every refresh, and a missing file is explained then.
            CredentialConfig::WorkloadIdentity { token_file: file }
        }
        "managed-identity" => managed_identity(&settings, app)?,
        _ => CredentialConfig::AzureCli,
    };
    Ok(Choice { credential, reason })
}

fn managed_identity(
    settings: &CredentialSettings,
    app: &AppIdentity<'_>,
) -> Result<CredentialConfig, ConfigError> {
    let endpoint = match (&settings.identity_endpoint, &settings.identity_header) {
        (Some(endpoint), Some(header)) => ManagedIdentityEndpoint::AppService {
            endpoint: local_http_url(
                endpoint,
                ENV_IDENTITY_ENDPOINT,
                "use the IDENTITY_ENDPOINT the platform sets",
            )?,
            header: header.clone(),
        },
        (Some(_), None) => {
            return Err(ConfigError::new(
                ENV_IDENTITY_HEADER,
                "missing while IDENTITY_ENDPOINT is set",
                "App Service and Container Apps set both: pass IDENTITY_HEADER through to the proxy (Azure Arc, which sets no header, is not supported)",
            ));
        }
        (None, _) => {
            let text = settings
                .imds_endpoint
                .clone()
                .unwrap_or_else(|| DEFAULT_IMDS_ENDPOINT.to_owned());
            ManagedIdentityEndpoint::Imds {
                endpoint: local_http_url(&text, ENV_IMDS_ENDPOINT, "use http://169.254.169.254")?,
            }
        }
    };
    let selector = match (
        app.client_id,
        &settings.managed_identity_object_id,
        &settings.managed_identity_resource_id,
    ) {
        (Some(client), None, None) => IdentitySelector::ClientId(client.to_owned()),
        (None, Some(object), None) => IdentitySelector::ObjectId(object.clone()),
        (None, None, Some(resource)) => IdentitySelector::ResourceId(resource.clone()),
        (None, None, None) => IdentitySelector::SystemAssigned,
        _ => {
            return Err(ConfigError::new(
                ENV_MI_OBJECT_ID,
                "more than one user-assigned identity selector is set",
                "set only one of AZURE_CLIENT_ID, FOUNDRY_MANAGED_IDENTITY_OBJECT_ID, FOUNDRY_MANAGED_IDENTITY_RESOURCE_ID",
            ));
        }
    };
    Ok(CredentialConfig::ManagedIdentity { endpoint, selector })
}

/// Identity endpoints are plain http by design (IMDS at a link-local address, App Service on
/// Linux at 169.254.x.x, Container Apps on localhost): they never leave the host, so http is
/// accepted for any host here, unlike the endpoint and the authority.
fn local_http_url(text: &str, setting: &str, fix: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text.trim().trim_end_matches('/'))
        .map_err(|e| ConfigError::new(setting, format!("'{text}' is not a URL ({e})"), fix))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ConfigError::new(setting, "must be an http URL", fix));
    }
    Ok(url)
}

fn app_ids(app: &AppIdentity<'_>) -> Result<(), ConfigError> {
    if app.tenant_id.is_none() {
        return Err(ConfigError::new(
            super::ENV_TENANT_ID,
            "missing",
            "set it to the Directory (tenant) ID shown on your App Registration's Overview page in the Azure portal",
        ));
    }
    if app.client_id.is_none() {
        return Err(ConfigError::new(
            super::ENV_CLIENT_ID,
            "missing",
            "set it to the Application (client) ID shown on your App Registration's Overview page",
        ));
    }
    Ok(())
}

fn no_credential(app: &AppIdentity<'_>) -> ConfigError {
    let setting = match (app.tenant_id, app.client_id) {
        (Some(_), Some(_)) => super::ENV_CLIENT_SECRET,
        (None, Some(_)) => super::ENV_TENANT_ID,
        (_, None) => super::ENV_CLIENT_ID,
    };
    let problem = match setting {
        super::ENV_CLIENT_SECRET => "missing, and no other credential is configured",
        _ => "missing: no credential is configured",
    };
    ConfigError::new(
        setting,
        problem,
        "set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (the secret's Value), or AZURE_CLIENT_CERTIFICATE_PATH, or AZURE_FEDERATED_TOKEN_FILE; on Azure set FOUNDRY_CREDENTIAL=managed-identity; on a laptop run az login",
    )
}

fn readable(path: &Path, setting: &str) -> Result<PathBuf, ConfigError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(path.to_path_buf()),
        Ok(_) => Err(ConfigError::new(
            setting,
            format!("{} is not a file", path.display()),
            "point it at the file",
        )),
        Err(e) => Err(ConfigError::new(
            setting,
            format!("cannot read {}: {e}", path.display()),
            "check the path and its permissions",
        )),
    }
}

/// True when an executable named `az` is on `PATH`.
pub fn az_on_path(env: &dyn Environment) -> bool {
    env.var("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join("az").is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app<'a>(secret: Option<&'a Secret>) -> AppIdentity<'a> {
        AppIdentity {
            tenant_id: Some("t"),
            client_id: Some("c"),
            client_secret: secret,
        }
    }

    /// auto picks in DefaultAzureCredential's order and says why.
    #[test]
    fn auto_order() {
        let secret = Secret::new("s");
        let this_file = PathBuf::from(file!());
        let all = CredentialSettings {
            certificate_path: Some(this_file.clone()),
            federated_token_file: Some(this_file.clone()),
            imds_endpoint: Some("http://127.0.0.1:1".into()),
            ..CredentialSettings::default()
        };
        let pick = |settings: CredentialSettings, secret: Option<&Secret>| {
            choose(settings, &app(secret), true).map(|c| c.credential.kind())
        };
        assert_eq!(pick(all.clone(), Some(&secret)), Ok("client-secret"));
        assert_eq!(pick(all.clone(), None), Ok("client-certificate"));
        let no_cert = CredentialSettings {
            certificate_path: None,
            ..all.clone()
        };
        assert_eq!(pick(no_cert.clone(), None), Ok("workload-identity"));
        let no_wi = CredentialSettings {
            federated_token_file: None,
            ..no_cert
        };
        assert_eq!(pick(no_wi, None), Ok("managed-identity"));
        let why = choose(
            CredentialSettings {
                certificate_path: None,
                ..all.clone()
            },
            &app(None),
            true,
        )
        .expect("wi")
        .reason;
        assert!(
            why.contains("AZURE_FEDERATED_TOKEN_FILE is set")
                && why.contains("skipped client-secret"),
            "{why}"
        );
        let cli = choose(
            CredentialSettings::default(),
            &AppIdentity {
                tenant_id: None,
                client_id: None,
                client_secret: None,
            },
            true,
        );
        assert_eq!(cli.map(|c| c.credential.kind()), Ok("azure-cli"));
    }

    /// Nothing configured is a configuration error naming what is missing.
    #[test]
    fn nothing_configured_is_an_error() {
        let err =
            choose(CredentialSettings::default(), &app(None), false).expect_err("no credential");
        assert_eq!(err.setting, super::super::ENV_CLIENT_SECRET);
        let err = choose(
            CredentialSettings::default(),
            &AppIdentity {
                tenant_id: None,
                client_id: None,
                client_secret: None,
            },
            false,
        )
        .expect_err("no credential");
        assert_eq!(err.setting, super::super::ENV_CLIENT_ID);
        let bad = CredentialSettings {
            kind: Some("magic".into()),
            ..CredentialSettings::default()
        };
        assert_eq!(
            choose(bad, &app(None), false).expect_err("unknown").setting,
            ENV_CREDENTIAL
        );
    }

    /// Managed identity selects system- or user-assigned identities.
    #[test]
    fn managed_identity_selectors() {
        let settings = CredentialSettings {
            kind: Some("managed-identity".into()),
            ..CredentialSettings::default()
        };
        let none = AppIdentity {
            tenant_id: None,
            client_id: None,
            client_secret: None,
        };
        match choose(settings.clone(), &none, false)
            .expect("mi")
            .credential
        {
            CredentialConfig::ManagedIdentity {
                selector,
                endpoint: ManagedIdentityEndpoint::Imds { endpoint },
            } => {
                assert_eq!(selector, IdentitySelector::SystemAssigned);
                assert_eq!(endpoint.as_str(), "http://169.254.169.254/");
            }
            other => panic!("{other:?}"),
        }
        let linux_app_service = CredentialSettings {
            identity_endpoint: Some("http://169.254.129.2:8081/msi/token".into()),
            identity_header: Some(Secret::new("h")),
            ..settings.clone()
        };
        assert!(
            choose(linux_app_service, &none, false).is_ok(),
            "App Service on Linux announces a link-local http endpoint"
        );
        let by_client = AppIdentity {
            tenant_id: None,
            client_id: Some("uami"),
            client_secret: None,
        };
        match choose(settings, &by_client, false).expect("mi").credential {
            CredentialConfig::ManagedIdentity { selector, .. } => {
                assert_eq!(selector, IdentitySelector::ClientId("uami".into()))
            }
            other => panic!("{other:?}"),
        }
    }
}
