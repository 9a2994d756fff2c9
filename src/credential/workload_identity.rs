//! Workload identity federation: a token from another identity provider (the AKS
//! service-account token, a GitHub OIDC token) exchanged for an Entra token. The file is read
//! at every refresh because the kubelet rotates it.

use std::path::PathBuf;

use super::entra::{CredentialError, EntraClient};
use super::{Credential, TokenFuture};
use crate::diagnose::RefusalCode;

/// App (or managed identity) id + a federated token file.
#[derive(Debug)]
pub struct WorkloadIdentityCredential {
    entra: EntraClient,
    client_id: String,
    scope: String,
    token_file: PathBuf,
}

impl WorkloadIdentityCredential {
    /// A credential for `client_id` presenting the token in `token_file`.
    pub fn new(entra: EntraClient, client_id: String, scope: String, token_file: PathBuf) -> Self {
        Self {
            entra,
            client_id,
            scope,
            token_file,
        }
    }

    fn read_assertion(&self) -> Result<String, CredentialError> {
        let unreadable = |detail: String| CredentialError::Source {
            code: RefusalCode::FederatedTokenUnreadable,
            detail,
            transient: true,
        };
        let text = std::fs::read_to_string(&self.token_file)
            .map_err(|e| unreadable(format!("cannot read {}: {e}", self.token_file.display())))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(unreadable(format!(
                "{} is empty",
                self.token_file.display()
            )));
        }
        Ok(token.to_owned())
    }
}

impl Credential for WorkloadIdentityCredential {
    fn get_token(&self) -> TokenFuture<'_> {
        Box::pin(async move {
            let assertion = self.read_assertion()?;
            self.entra
                .request_token_with_assertion(&self.client_id, &self.scope, &assertion)
                .await
        })
    }

    fn kind(&self) -> &'static str {
        "workload-identity"
    }
}
