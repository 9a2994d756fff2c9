//! What the emulated world contains: tenants, registered apps, deployments and timing knobs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::identities;

/// The emulated world. `Default` is the demo world described in [`identities`].
///
/// Deserialized from TOML with unknown fields rejected; a field left out keeps its demo value.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorConfig {
    /// The tenant that owns the Foundry resource; tokens from any other tenant get the 400 tenant mismatch.
    pub resource_tenant: String,
    /// Known tenant ids (GUIDs).
    pub tenants: Vec<String>,
    /// Domain names (e.g. `contoso.onmicrosoft.com`) that address a tenant, mapped to its id.
    pub domains: BTreeMap<String, String>,
    /// Registered apps (service principals), each in one tenant.
    pub apps: Vec<AppSpec>,
    /// Model deployments on the Foundry resource.
    pub deployments: Vec<DeploymentSpec>,
    /// Foundry projects on the resource, served at `/api/projects/{name}/openai/v1/…` (only
    /// while the resource kind is `foundry`: classic Azure OpenAI resources have no projects).
    pub projects: Vec<String>,
    /// `expires_in` of issued tokens, in seconds.
    pub token_lifetime_secs: u64,
    /// Send `expires_in`/`ext_expires_in` as JSON strings (v1-style) instead of numbers.
    pub expires_in_as_string: bool,
    /// Value of the `x-ms-region` header and the region named in 429 messages.
    pub region: String,
    /// Delay between streamed chunks, in milliseconds.
    pub stream_chunk_delay_ms: u64,
    /// How long a WebSocket (realtime or Responses WebSocket mode) may stay open, in seconds,
    /// before it is closed with `websocket_connection_limit_reached`: Azure's 60 minutes by
    /// default (docs/azure-facts.md §7); tests set it short.
    pub websocket_limit_secs: u64,
    /// Which kind of resource Foundry plays: it decides the 401 text and whether projects are served.
    pub resource_kind: ResourceKind,
    /// Seconds added to the emulator's clock (negative: behind), to play a client machine whose
    /// clock is wrong relative to Azure's.
    pub clock_offset_secs: i64,
    /// `iss` of the tokens the emulator issues as an external OIDC provider (a cluster's
    /// service-account issuer) for workload identity federation.
    pub federation_issuer: String,
    /// The value App Service / Container Apps expect in `X-IDENTITY-HEADER` (`IDENTITY_HEADER`).
    pub identity_header: String,
    /// Managed identities of the emulated host, served by IMDS and the App Service endpoint.
    pub managed_identities: Vec<ManagedIdentitySpec>,
    /// A failure the next IMDS requests get at start, as [`Emulator::set_imds_fault`] sets.
    ///
    /// [`Emulator::set_imds_fault`]: super::Emulator::set_imds_fault
    pub imds_fault: Option<ImdsFault>,
    /// Further resources, each under `/resources/{name}` with its own deployments, quota and
    /// faults ([`super::resources`]).
    pub resources: Vec<super::resources::ResourceSpec>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        let app = |tenant: &str, id: &str, secret: &str, oid: &str, role: &str| AppSpec {
            tenant: tenant.to_owned(),
            client_id: id.to_owned(),
            client_secret: secret.to_owned(),
            secret_expired: false,
            object_id: oid.to_owned(),
            roles: vec![role.to_owned()],
            certificates: Vec::new(),
            federated_credentials: Vec::new(),
        };
        let mut main = app(
            identities::TENANT_ID,
            identities::CLIENT_ID,
            identities::CLIENT_SECRET,
            identities::OBJECT_ID,
            "Azure AI User",
        );
        main.certificates = vec![identities::CERTIFICATE_PEM.to_owned()];
        main.federated_credentials = vec![FederatedCredentialSpec {
            issuer: identities::FEDERATION_ISSUER.to_owned(),
            subject: identities::FEDERATED_SUBJECT.to_owned(),
            audience: identities::FEDERATED_AUDIENCE.to_owned(),
        }];
        let identity =
            |client_id: &str, object_id: &str, resource_id: &str, system| ManagedIdentitySpec {
                client_id: client_id.to_owned(),
                object_id: object_id.to_owned(),
                resource_id: resource_id.to_owned(),
                system_assigned: system,
                roles: vec!["Azure AI User".to_owned()],
            };
        let mut expired = app(
            identities::TENANT_ID,
            identities::EXPIRED_CLIENT_ID,
            identities::EXPIRED_CLIENT_SECRET,
            identities::EXPIRED_OBJECT_ID,
            "Azure AI User",
        );
        expired.secret_expired = true;
        let deployment = |name: &str, model: &str, kind| DeploymentSpec {
            name: name.to_owned(),
            model: model.to_owned(),
            kind,
        };
        Self {
            resource_tenant: identities::TENANT_ID.to_owned(),
            tenants: vec![
                identities::TENANT_ID.to_owned(),
                identities::OTHER_TENANT_ID.to_owned(),
            ],
            domains: BTreeMap::from([(
                identities::TENANT_DOMAIN.to_owned(),
                identities::TENANT_ID.to_owned(),
            )]),
            apps: vec![
                main,
                app(
                    identities::TENANT_ID,
                    identities::NO_ROLE_CLIENT_ID,
                    identities::NO_ROLE_CLIENT_SECRET,
                    identities::NO_ROLE_OBJECT_ID,
                    "Contributor",
                ),
                app(
                    identities::TENANT_ID,
                    identities::OPENAI_USER_CLIENT_ID,
                    identities::OPENAI_USER_CLIENT_SECRET,
                    identities::OPENAI_USER_OBJECT_ID,
                    "Cognitive Services OpenAI User",
                ),
                app(
                    identities::OTHER_TENANT_ID,
                    identities::OTHER_CLIENT_ID,
                    identities::OTHER_CLIENT_SECRET,
                    identities::OTHER_OBJECT_ID,
                    "Azure AI User",
                ),
                expired,
            ],
            deployments: vec![
                deployment(
                    identities::CHAT_DEPLOYMENT,
                    "gpt-4o-mini-2024-07-18",
                    DeploymentKind::Chat,
                ),
                deployment(
                    identities::EMBEDDING_DEPLOYMENT,
                    "text-embedding-3-small",
                    DeploymentKind::Embeddings,
                ),
                deployment(
                    identities::TRANSCRIPTION_DEPLOYMENT,
                    "whisper",
                    DeploymentKind::Audio,
                ),
                deployment(
                    identities::IMAGE_DEPLOYMENT,
                    "dall-e-3",
                    DeploymentKind::Image,
                ),
                deployment(
                    identities::CLAUDE_DEPLOYMENT,
                    "claude-sonnet-4-5",
                    DeploymentKind::Claude,
                ),
            ],
            projects: vec![identities::PROJECT.to_owned()],
            token_lifetime_secs: 3599,
            expires_in_as_string: false,
            region: "Sweden Central".to_owned(),
            stream_chunk_delay_ms: 20,
            websocket_limit_secs: 3600,
            resource_kind: ResourceKind::Foundry,
            clock_offset_secs: 0,
            federation_issuer: identities::FEDERATION_ISSUER.to_owned(),
            identity_header: identities::IDENTITY_HEADER.to_owned(),
            managed_identities: vec![
                identity(
                    identities::MI_CLIENT_ID,
                    identities::MI_OBJECT_ID,
                    identities::MI_RESOURCE_ID,
                    true,
                ),
                identity(
                    identities::USER_MI_CLIENT_ID,
                    identities::USER_MI_OBJECT_ID,
                    identities::USER_MI_RESOURCE_ID,
                    false,
                ),
            ],
            imds_fault: None,
            resources: Vec::new(),
        }
    }
}

impl EmulatorConfig {
    /// Resolves a token-endpoint tenant segment (GUID or known domain, any case) to a tenant id.
    pub fn resolve_tenant(&self, segment: &str) -> Option<&str> {
        if let Some(t) = self
            .tenants
            .iter()
            .find(|t| t.eq_ignore_ascii_case(segment))
        {
            return Some(t);
        }
        self.domains
            .iter()
            .find(|(domain, _)| domain.eq_ignore_ascii_case(segment))
            .map(|(_, tenant)| tenant.as_str())
    }

    /// The deployment with this exact name.
    pub fn deployment(&self, name: &str) -> Option<&DeploymentSpec> {
        self.deployments.iter().find(|d| d.name == name)
    }

    /// Whether a project with this exact name exists on the resource.
    pub fn has_project(&self, name: &str) -> bool {
        self.projects.iter().any(|p| p == name)
    }

    /// Checks cross references, so a typo fails at load time rather than as a puzzling 400 later.
    pub fn validate(&self) -> Result<(), String> {
        if !self.tenants.contains(&self.resource_tenant) {
            return Err(format!(
                "resource_tenant '{}' is not listed in tenants",
                self.resource_tenant
            ));
        }
        for (domain, tenant) in &self.domains {
            if !self.tenants.contains(tenant) {
                return Err(format!(
                    "domains.{domain}: tenant '{tenant}' is not listed in tenants"
                ));
            }
        }
        for app in &self.apps {
            if !self.tenants.contains(&app.tenant) {
                return Err(format!(
                    "apps: app '{}' names tenant '{}', which is not listed in tenants",
                    app.client_id, app.tenant
                ));
            }
            for (i, pem) in app.certificates.iter().enumerate() {
                if let Err(e) = super::entra::certificate::Certificate::from_pem(pem) {
                    return Err(format!(
                        "apps: app '{}' certificates[{i}]: {e}",
                        app.client_id
                    ));
                }
            }
        }
        if self
            .managed_identities
            .iter()
            .filter(|m| m.system_assigned)
            .count()
            > 1
        {
            return Err("managed_identities: at most one can be system_assigned".to_owned());
        }
        Ok(())
    }
}

/// A registered app (its service principal in `tenant`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// Tenant the app is registered in.
    pub tenant: String,
    /// Application (client) id.
    pub client_id: String,
    /// The client secret value (never printed by `Debug`).
    pub client_secret: String,
    /// The secret exists but has expired (AADSTS7000222).
    #[serde(default)]
    pub secret_expired: bool,
    /// Object id of the service principal: the `oid` claim and the principal in PermissionDenied.
    pub object_id: String,
    /// Role display names assigned on the Foundry resource, e.g. "Azure AI User".
    #[serde(default)]
    pub roles: Vec<String>,
    /// PEM certificates registered on the app, for certificate assertions (RS256 or PS256,
    /// looked up by `x5t` or `x5t#S256`). Any non-certificate PEM blocks are ignored.
    #[serde(default)]
    pub certificates: Vec<String>,
    /// Federated identity credentials: which external tokens may stand in for a secret.
    #[serde(default)]
    pub federated_credentials: Vec<FederatedCredentialSpec>,
}

/// A federated identity credential on an app: an assertion is accepted when its `iss`, `sub`
/// and `aud` equal these exactly (Entra compares case- and slash-sensitively).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedCredentialSpec {
    /// The external issuer, e.g. a cluster's OIDC issuer URL.
    pub issuer: String,
    /// The external subject, e.g. `system:serviceaccount:NAMESPACE:NAME`.
    pub subject: String,
    /// The audience the external token carries; `api://AzureADTokenExchange` by default.
    #[serde(default = "token_exchange_audience")]
    pub audience: String,
}

fn token_exchange_audience() -> String {
    identities::FEDERATED_AUDIENCE.to_owned()
}

/// A managed identity of the emulated host (VM, App Service, Container App).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagedIdentitySpec {
    /// Client (application) id: the `appid` claim and the `client_id` selector.
    pub client_id: String,
    /// Object (principal) id: the `oid` claim and the `object_id`/`principal_id` selector.
    pub object_id: String,
    /// ARM resource id: the `msi_res_id`/`mi_res_id` selector.
    pub resource_id: String,
    /// The host's system-assigned identity (used when a request names none); at most one.
    #[serde(default)]
    pub system_assigned: bool,
    /// Role display names assigned on the Foundry resource.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// A failure the next `times` IMDS requests get, for retry tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImdsFault {
    /// HTTP status to answer with (404, 410, 429, 500, 503 …), with an IMDS-style body.
    pub status: u16,
    /// How many IMDS requests get it before IMDS answers normally again.
    pub times: u32,
}

impl fmt::Debug for AppSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppSpec")
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("secret_expired", &self.secret_expired)
            .field("object_id", &self.object_id)
            .field("roles", &self.roles)
            .field("certificates", &self.certificates.len())
            .field("federated_credentials", &self.federated_credentials)
            .finish()
    }
}

/// A model deployment on the Foundry resource.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Deployment name, as sent in the URL or the body's `model`.
    pub name: String,
    /// Underlying model name, reported in responses' `model`.
    pub model: String,
    /// Which operations the deployment serves.
    #[serde(default)]
    pub kind: DeploymentKind,
}

/// Which family of operations a deployment serves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentKind {
    /// chat/completions, completions, responses.
    #[default]
    Chat,
    /// embeddings.
    Embeddings,
    /// audio/transcriptions.
    Audio,
    /// images/generations.
    Image,
    /// An Anthropic Claude model: the Messages API (`/anthropic/v1/messages` and
    /// `count_tokens`) only; the OpenAI routes refuse it with `api_not_supported`.
    Claude,
}

/// The kind of Azure resource that serves inference (docs/azure-facts.md §3, §5, §7).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// An AI Services resource (`*.services.ai.azure.com`): its 401 names both audiences, and
    /// it serves Foundry projects.
    #[default]
    Foundry,
    /// A classic Azure OpenAI resource (`*.openai.azure.com`): its 401 names only
    /// `https://cognitiveservices.azure.com`, and it has no projects.
    #[serde(rename = "openai")]
    OpenAi,
}

impl ResourceKind {
    /// Token audiences the resource's OpenAI routes accept, each with and without a trailing
    /// slash. The same for both kinds: the v1 API takes `https://ai.azure.com` on
    /// `*.openai.azure.com` too (docs/azure-facts.md §7), and the classic `/openai/deployments`
    /// routes are assumed to (**UNCONFIRMED** there). Project endpoints differ: see
    /// [`ResourceKind::PROJECT_AUDIENCES`].
    pub fn audiences(self) -> &'static [&'static str] {
        &[
            "https://cognitiveservices.azure.com",
            "https://cognitiveservices.azure.com/",
            "https://ai.azure.com",
            "https://ai.azure.com/",
        ]
    }

    /// The only audiences a project endpoint accepts (docs/azure-facts.md §7): a
    /// cognitiveservices token gets the resource's bad-token 401.
    pub const PROJECT_AUDIENCES: &'static [&'static str] =
        &["https://ai.azure.com", "https://ai.azure.com/"];

    /// The `message` of the resource's bad-token 401 (docs/docs/azure-facts.md §5, I9).
    pub fn unauthorized_message(self) -> &'static str {
        match self {
            ResourceKind::Foundry => {
                "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com/ or https://ai.azure.com/), or have expired."
            }
            ResourceKind::OpenAi => {
                "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired."
            }
        }
    }

    /// The control-endpoint and config spelling: `"foundry"` or `"openai"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Foundry => "foundry",
            ResourceKind::OpenAi => "openai",
        }
    }
}

/// Why an emulator config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorConfigError {
    /// The file could not be read.
    #[error("cannot read emulator config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or names an unknown or mistyped field.
    #[error("invalid emulator config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message names the field and the line.
        source: toml::de::Error,
    },
    /// The fields parse but contradict each other.
    #[error("invalid emulator config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is inconsistent.
        message: String,
    },
}

/// Loads an emulator world from a TOML file; fields left out keep their demo values.
pub fn load_config(path: &Path) -> Result<EmulatorConfig, EmulatorConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| EmulatorConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let config: EmulatorConfig =
        toml::from_str(&text).map_err(|source| EmulatorConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
    config
        .validate()
        .map_err(|message| EmulatorConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_fields_parse_from_toml_and_are_validated() {
        let text = r#"
            federation_issuer = "https://oidc.example/"
            identity_header = "h"
            imds_fault = { status = 410, times = 2 }
            [[managed_identities]]
            client_id = "c"
            object_id = "o"
            resource_id = "/subscriptions/s/r"
            system_assigned = true
        "#;
        let config: EmulatorConfig = toml::from_str(text).expect("parses");
        assert_eq!(
            config.imds_fault,
            Some(ImdsFault {
                status: 410,
                times: 2
            })
        );
        assert!(config.validate().is_ok());

        let mut twice = config.clone();
        twice
            .managed_identities
            .push(config.managed_identities[0].clone());
        assert!(twice.validate().is_err());

        let mut bad_cert = EmulatorConfig::default();
        bad_cert.apps[0]
            .certificates
            .push("not a certificate".to_owned());
        assert!(bad_cert.validate().is_err());

        let fc: FederatedCredentialSpec =
            toml::from_str("issuer = \"i\"\nsubject = \"s\"").expect("parses");
        assert_eq!(fc.audience, "api://AzureADTokenExchange");
    }
}
