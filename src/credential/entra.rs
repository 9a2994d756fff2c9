//! The Entra ID v2.0 token endpoint: the request, the success body and the error body.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::NumberOrString;
use url::Url;

use super::AccessToken;
use crate::diagnose::RefusalCode;
use crate::secret::Secret;

/// Time allowed for one token request, connect to last byte.
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Why no token could be had.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// Entra answered with an OAuth2 error: the credential or request is wrong.
    #[error("entra answered {0}")]
    Rejected(EntraError),
    /// Entra could not be reached (DNS, connect, TLS, timeout).
    #[error("entra unreachable: {0}")]
    Unreachable(String),
    /// Entra answered with a server error or something that is not a token response.
    #[error("entra unavailable: {0}")]
    Unavailable(String),
    /// The credential source itself failed (a file, the Azure CLI, a managed-identity
    /// endpoint): `code` is its diagnosis catalog entry.
    #[error("{detail}")]
    Source {
        /// The catalog code that explains it.
        code: RefusalCode,
        /// What happened, for the message.
        detail: String,
        /// True when retrying soon may succeed on its own.
        transient: bool,
    },
}

impl CredentialError {
    /// True when retrying soon may succeed without anyone changing the configuration.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Rejected(e) => e.status >= 500 || e.status == 429,
            Self::Unreachable(_) | Self::Unavailable(_) => true,
            Self::Source { transient, .. } => *transient,
        }
    }
}

/// An OAuth2 error body from Entra (`AADSTS…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraError {
    /// HTTP status Entra answered with.
    pub status: u16,
    /// The OAuth2 `error` (e.g. `invalid_client`).
    pub error: String,
    /// The first line of `error_description` (`AADSTSnnn: …`), without trace ids.
    pub description: String,
    /// The AADSTS number, from `error_codes` or the description.
    pub code: Option<u64>,
    /// Entra's trace id, for support cases.
    pub trace_id: Option<String>,
    /// Entra's correlation id, for support cases.
    pub correlation_id: Option<String>,
}

impl std::fmt::Display for EntraError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error, self.description)
    }
}

/// The client for one tenant's token endpoint.
#[derive(Debug, Clone)]
pub struct EntraClient {
    http: reqwest::Client,
    token_url: Arc<str>,
}

impl EntraClient {
    /// A client for `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn new(
        authority: &Url,
        tenant: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, CredentialError> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .user_agent(concat!("foundry-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CredentialError::Unavailable(format!("cannot build http client: {e}")))?;
        let token_url = format!(
            "{}/{}/oauth2/v2.0/token",
            authority.as_str().trim_end_matches('/'),
            tenant
        );
        Ok(Self {
            http,
            token_url: token_url.into(),
        })
    }

    /// The token endpoint URL.
    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    /// Client credentials with a signed client assertion (a certificate's, or a federated
    /// token) in place of a secret.
    pub async fn request_token_with_assertion(
        &self,
        client_id: &str,
        scope: &str,
        assertion: &str,
    ) -> Result<AccessToken, CredentialError> {
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
            ("scope", scope),
        ];
        self.request_token(&form).await
    }

    /// Posts the form and reads the token or the error.
    pub async fn request_token(
        &self,
        form: &[(&str, &str)],
    ) -> Result<AccessToken, CredentialError> {
        let response = self
            .http
            .post(&*self.token_url)
            .form(form)
            .send()
            .await
            .map_err(describe_send_error)?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(describe_send_error)?;
        parse_token_response(status, &body)
    }
}

fn describe_send_error(error: reqwest::Error) -> CredentialError {
    // reqwest's Display names the URL (no secret is ever in it) and the top-level cause;
    // the source chain says why (refused, DNS, certificate).
    let timed_out = error.is_timeout();
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if timed_out {
        CredentialError::Unreachable(format!("timed out: {text}"))
    } else {
        CredentialError::Unreachable(text)
    }
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    expires_in: Option<NumberOrString>,
    token_type: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    error_codes: Vec<u64>,
    trace_id: Option<String>,
    correlation_id: Option<String>,
}

/// Interprets a token-endpoint answer. Public for tests and fuzzing.
pub fn parse_token_response(status: u16, body: &[u8]) -> Result<AccessToken, CredentialError> {
    if (200..300).contains(&status) {
        let parsed: TokenBody = serde_json::from_slice(body).map_err(|e| {
            CredentialError::Unavailable(format!("token response {status} is not a token ({e})"))
        })?;
        if parsed
            .token_type
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(CredentialError::Unavailable(
                "token response has a token_type other than Bearer".into(),
            ));
        }
        if parsed.access_token.is_empty() {
            return Err(CredentialError::Unavailable(
                "token response has an empty access_token".into(),
            ));
        }
        let seconds = parsed
            .expires_in
            .as_ref()
            .and_then(NumberOrString::seconds)
            .ok_or_else(|| {
                CredentialError::Unavailable("token response has no usable expires_in".into())
            })?;
        return Ok(AccessToken {
            token: Secret::new(parsed.access_token),
            expires_in: Duration::from_secs(seconds),
        });
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(err) => {
            let description = err
                .error_description
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            let code = err
                .error_codes
                .first()
                .copied()
                .or_else(|| aadsts_code(&description));
            Err(CredentialError::Rejected(EntraError {
                status,
                error: err.error,
                description,
                code,
                trace_id: err.trace_id,
                correlation_id: err.correlation_id,
            }))
        }
        Err(_) => {
            let snippet: String = String::from_utf8_lossy(body).chars().take(200).collect();
            Err(CredentialError::Unavailable(format!(
                "token endpoint answered {status}: {}",
                snippet.trim()
            )))
        }
    }
}

/// Reads `nnn` from a description starting `AADSTSnnn:`.
fn aadsts_code(description: &str) -> Option<u64> {
    let rest = description.strip_prefix("AADSTS")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expires_in` is accepted as a number and as a string.
    #[test]
    fn expires_in_number_or_string() {
        let number = parse_token_response(200, br#"{"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"x.y.z"}"#).expect("token");
        assert_eq!(number.expires_in, Duration::from_secs(3599));
        let text = parse_token_response(
            200,
            br#"{"token_type":"Bearer","expires_in":"10","access_token":"x.y.z"}"#,
        )
        .expect("token");
        assert_eq!(text.expires_in, Duration::from_secs(10));
        assert!(parse_token_response(200, br#"{"access_token":"x"}"#).is_err());
        assert!(parse_token_response(200, b"<html>").is_err());
    }

    /// AADSTS errors keep their code and first line only.
    #[test]
    fn entra_error_parsed() {
        let body = br#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided.\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: 2026-01-01 00:00:00Z","error_codes":[7000215],"trace_id":"t","correlation_id":"c"}"#;
        match parse_token_response(401, body) {
            Err(CredentialError::Rejected(e)) => {
                assert_eq!(e.code, Some(7000215));
                assert_eq!(
                    e.description,
                    "AADSTS7000215: Invalid client secret provided."
                );
                assert_eq!(e.trace_id.as_deref(), Some("t"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_token_response(503, b"busy"),
            Err(CredentialError::Unavailable(_))
        ));
    }
}
