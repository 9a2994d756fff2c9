//! Credentials: where the proxy's access token comes from.
//!
//! Every kind of credential implements [`Credential`]; the token refresher only sees the
//! trait. [`entra`] is the Entra ID token-endpoint client and its error types; [`build`]
//! turns the configured [`CredentialConfig`] into the credential.

pub mod azure_cli;
pub mod certificate;
pub mod client_certificate;
pub mod client_secret;
pub mod entra;
pub mod managed_identity;
pub mod workload_identity;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::config::{Config, CredentialConfig};
use crate::secret::Secret;

pub use client_certificate::ClientCertificateCredential;
pub use client_secret::ClientSecretCredential;
pub use entra::{CredentialError, EntraError};
pub use workload_identity::WorkloadIdentityCredential;

/// A JSON number, or a number written as a string: Entra v2 sends numbers, the v1 and
/// managed-identity endpoints send strings (docs/docs/azure-facts.md §1, §2).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub(crate) enum NumberOrString {
    /// A JSON number.
    Number(f64),
    /// A number in a string.
    Text(String),
}

impl NumberOrString {
    /// The finite value, whichever way it was written.
    pub(crate) fn value(&self) -> Option<f64> {
        let value = match self {
            Self::Number(n) => *n,
            Self::Text(t) => t.trim().parse::<f64>().ok()?,
        };
        value.is_finite().then_some(value)
    }

    /// The value as whole non-negative seconds.
    pub(crate) fn seconds(&self) -> Option<u64> {
        self.value().filter(|v| *v >= 0.0).map(|v| v as u64)
    }
}

/// An access token and how long Entra said it lives.
#[derive(Debug, Clone)]
pub struct AccessToken {
    /// The bearer token.
    pub token: Secret,
    /// Lifetime from the moment of issue (`expires_in`).
    pub expires_in: Duration,
}

/// A boxed future, so credentials can be used as trait objects.
pub type TokenFuture<'a> =
    Pin<Box<dyn Future<Output = Result<AccessToken, CredentialError>> + Send + 'a>>;

/// A source of access tokens for one scope.
pub trait Credential: Send + Sync + std::fmt::Debug {
    /// Acquires a fresh token (never cached here: the refresher owns caching).
    fn get_token(&self) -> TokenFuture<'_>;

    /// A short name of the credential kind, for logs and `/readyz`.
    fn kind(&self) -> &'static str;
}

/// Builds the configured credential.
pub fn build(
    config: &Config,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<std::sync::Arc<dyn Credential>, CredentialError> {
    let entra = || {
        let tenant = config.tenant_id.as_deref().unwrap_or("organizations");
        entra::EntraClient::new(&config.authority_host, tenant, std::sync::Arc::clone(&tls))
    };
    let client_id = || config.client_id.clone().unwrap_or_default();
    let scope = config.scope.clone();
    Ok(match &config.credential {
        CredentialConfig::ClientSecret(secret) => std::sync::Arc::new(ClientSecretCredential::new(
            entra()?,
            client_id(),
            secret.clone(),
            scope,
        )),
        CredentialConfig::ClientCertificate {
            path,
            password,
            send_chain,
        } => std::sync::Arc::new(ClientCertificateCredential::new(
            entra()?,
            client_id(),
            scope,
            path.clone(),
            password.clone(),
            *send_chain,
        )),
        CredentialConfig::WorkloadIdentity { token_file } => std::sync::Arc::new(
            WorkloadIdentityCredential::new(entra()?, client_id(), scope, token_file.clone()),
        ),
        CredentialConfig::ManagedIdentity { endpoint, selector } => {
            std::sync::Arc::new(managed_identity::ManagedIdentityCredential::new(
                endpoint.clone(),
                selector.clone(),
                &scope,
                tls,
            )?)
        }
        CredentialConfig::AzureCli => std::sync::Arc::new(azure_cli::AzureCliCredential::new(
            &scope,
            config.tenant_id.clone(),
        )),
    })
}
