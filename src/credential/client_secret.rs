//! The client-secret credential: OAuth2 client credentials with `client_secret`. A secret
//! given as a file is read at every refresh, so rotating it needs no restart.

use super::entra::{CredentialError, EntraClient};
use super::{Credential, TokenFuture};
use crate::config::credential::SecretSource;
use crate::diagnose::RefusalCode;
use crate::secret::Secret;

/// App Registration id + secret value, exchanged at the tenant's token endpoint.
#[derive(Debug)]
pub struct ClientSecretCredential {
    entra: EntraClient,
    client_id: String,
    secret: SecretSource,
    scope: String,
}

impl ClientSecretCredential {
    /// A credential for `client_id` with `secret`, asking for `scope`.
    pub fn new(entra: EntraClient, client_id: String, secret: SecretSource, scope: String) -> Self {
        Self {
            entra,
            client_id,
            secret,
            scope,
        }
    }

    fn current_secret(&self) -> Result<Secret, CredentialError> {
        match &self.secret {
            SecretSource::Value(secret) => Ok(secret.clone()),
            SecretSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| CredentialError::Source {
                    code: RefusalCode::SecretFileUnreadable,
                    detail: format!("cannot read {}: {e}", path.display()),
                    transient: false,
                })?;
                let secret = Secret::new(text.trim());
                if secret.is_blank() {
                    return Err(CredentialError::Source {
                        code: RefusalCode::SecretFileUnreadable,
                        detail: format!("{} is empty", path.display()),
                        transient: false,
                    });
                }
                Ok(secret)
            }
        }
    }
}

impl Credential for ClientSecretCredential {
    fn get_token(&self) -> TokenFuture<'_> {
        Box::pin(async move {
            let secret = self.current_secret()?;
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", secret.expose()),
                ("scope", self.scope.as_str()),
            ];
            self.entra.request_token(&form).await
        })
    }

    fn kind(&self) -> &'static str {
        "client-secret"
    }
}
