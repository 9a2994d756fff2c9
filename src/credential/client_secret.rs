//! The client-secret credential: OAuth2 client credentials with `client_secret`.

use super::entra::EntraClient;
use super::{Credential, TokenFuture};
use crate::secret::Secret;

/// App Registration id + secret value, exchanged at the tenant's token endpoint.
#[derive(Debug)]
pub struct ClientSecretCredential {
    entra: EntraClient,
    client_id: String,
    client_secret: Secret,
    scope: String,
}

impl ClientSecretCredential {
    /// A credential for `client_id`/`client_secret` asking for `scope`.
    pub fn new(
        entra: EntraClient,
        client_id: String,
        client_secret: Secret,
        scope: String,
    ) -> Self {
        Self {
            entra,
            client_id,
            client_secret,
            scope,
        }
    }
}

impl Credential for ClientSecretCredential {
    fn get_token(&self) -> TokenFuture<'_> {
        Box::pin(async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose()),
                ("scope", self.scope.as_str()),
            ];
            self.entra.request_token(&form).await
        })
    }

    fn kind(&self) -> &'static str {
        "client-secret"
    }
}
