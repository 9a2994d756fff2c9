//! The client-certificate credential: a signed client assertion (RFC 7523) instead of a
//! secret. The certificate file is read at every refresh, so a rotated certificate is used
//! from the next refresh on without a restart.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use super::certificate::CertificateMaterial;
use super::entra::{CredentialError, EntraClient};
use super::{Credential, TokenFuture};
use crate::diagnose::RefusalCode;
use crate::secret::Secret;

/// How long a client assertion is valid: Entra's docs say 5–10 minutes at most.
const ASSERTION_LIFETIME: Duration = Duration::from_secs(600);

/// App Registration id + certificate, exchanged at the tenant's token endpoint.
#[derive(Debug)]
pub struct ClientCertificateCredential {
    entra: EntraClient,
    client_id: String,
    scope: String,
    path: PathBuf,
    password: Option<Secret>,
    send_chain: bool,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    iat: u64,
    exp: u64,
}

impl ClientCertificateCredential {
    /// A credential for `client_id` signing with the certificate at `path`.
    pub fn new(
        entra: EntraClient,
        client_id: String,
        scope: String,
        path: PathBuf,
        password: Option<Secret>,
        send_chain: bool,
    ) -> Self {
        Self {
            entra,
            client_id,
            scope,
            path,
            password,
            send_chain,
        }
    }

    /// A fresh assertion: PS256 with the `x5t#S256` thumbprint (current Entra docs), a new
    /// `jti` every time, `aud` = the token endpoint.
    pub fn assertion(&self) -> Result<String, CredentialError> {
        let material =
            CertificateMaterial::load(&self.path, self.password.as_ref()).map_err(|detail| {
                CredentialError::Source {
                    code: RefusalCode::CertificateUnreadable,
                    detail: format!("{}: {detail}", self.path.display()),
                    transient: false,
                }
            })?;
        let key = EncodingKey::from_rsa_pem(material.key_pem.expose().as_bytes()).map_err(|e| {
            CredentialError::Source {
                code: RefusalCode::CertificateUnreadable,
                detail: format!("{}: the private key cannot sign: {e}", self.path.display()),
                transient: false,
            }
        })?;
        let mut header = Header::new(Algorithm::PS256);
        header.x5t_s256 = Some(material.thumbprint_sha256());
        if self.send_chain {
            header.x5c = Some(material.x5c());
        }
        let now = crate::clock::unix_now();
        let claims = AssertionClaims {
            aud: self.entra.token_url(),
            iss: &self.client_id,
            sub: &self.client_id,
            jti: uuid::Uuid::new_v4().to_string(),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME.as_secs(),
        };
        jsonwebtoken::encode(&header, &claims, &key).map_err(|e| CredentialError::Source {
            code: RefusalCode::CertificateUnreadable,
            detail: format!("signing the client assertion failed: {e}"),
            transient: false,
        })
    }
}

impl Credential for ClientCertificateCredential {
    fn get_token(&self) -> TokenFuture<'_> {
        Box::pin(async move {
            let assertion = self.assertion()?;
            self.entra
                .request_token_with_assertion(&self.client_id, &self.scope, &assertion)
                .await
        })
    }

    fn kind(&self) -> &'static str {
        "client-certificate"
    }
}
