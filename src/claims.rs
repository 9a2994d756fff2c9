//! Reading the claims of the proxy's own access token, to explain refusals.
//!
//! The signature is not checked: the token came straight from Entra over TLS and is only
//! read to tell the user which tenant, app, principal and audience it carries.

use base64::Engine;
use serde::{Deserialize, Serialize};

/// The claims of an Entra access token that matter for diagnosis (v1 and v2 names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TokenClaims {
    /// Audience: the resource the token is for.
    pub aud: Option<String>,
    /// Issuer.
    pub iss: Option<String>,
    /// Tenant id.
    pub tid: Option<String>,
    /// Application id (v1).
    pub appid: Option<String>,
    /// Authorized party: application id (v2).
    pub azp: Option<String>,
    /// Object id of the service principal.
    pub oid: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: Option<i64>,
    /// Not before, seconds since the epoch.
    pub nbf: Option<i64>,
    /// Issued at, seconds since the epoch.
    pub iat: Option<i64>,
}

impl TokenClaims {
    /// Decodes the payload of a JWT without verifying it; `None` if it is not a JWT.
    pub fn decode(token: &str) -> Option<Self> {
        let payload = token.split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The application id, whichever token version carries it.
    pub fn app_id(&self) -> Option<&str> {
        self.appid.as_deref().or(self.azp.as_deref())
    }

    /// The identity shown to users in error JSON.
    pub fn identity(&self) -> Identity {
        Identity {
            tenant: self.tid.clone(),
            app_id: self.app_id().map(str::to_owned),
            object_id: self.oid.clone(),
            audience: self.aud.clone(),
            expires_at: self.exp.and_then(format_unix),
        }
    }
}

/// Who the proxy is, as seen in its token: shown in error JSON and by `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Tenant id (`tid`).
    pub tenant: Option<String>,
    /// Application (client) id (`appid`/`azp`).
    pub app_id: Option<String>,
    /// The service principal's object id (`oid`), the one to assign roles to.
    pub object_id: Option<String>,
    /// Audience (`aud`).
    pub audience: Option<String>,
    /// Expiry in RFC 3339.
    pub expires_at: Option<String>,
}

/// Formats seconds since the epoch as RFC 3339 UTC.
pub fn format_unix(seconds: i64) -> Option<String> {
    let at = time::OffsetDateTime::from_unix_timestamp(seconds).ok()?;
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1 token's claims are read, and garbage is not a token.
    #[test]
    fn decodes_v1_claims() {
        let payload = serde_json::json!({"aud":"https://cognitiveservices.azure.com","tid":"t","appid":"a","oid":"o","exp":1_700_000_000});
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
        let claims =
            TokenClaims::decode(&format!("eyJhbGciOiJSUzI1NiJ9.{encoded}.sig")).expect("claims");
        assert_eq!(claims.app_id(), Some("a"));
        assert_eq!(
            claims.identity().expires_at.as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(TokenClaims::decode("not-a-jwt"), None);
    }
}
