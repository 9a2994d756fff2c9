//! Access tokens: v1 app-only claims, RS256 signing and verification with the emulator's key.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::emulator::util::random_alnum;

// A public, emulator-only RSA key pair generated once with openssl for this repository. It signs
// tokens only the emulator accepts; it protects nothing. Embedded because RSA key generation in
// debug builds is slow.
const PRIVATE_KEY_PEM: &str = include_str!("emulator_signing_key.pem");
const PUBLIC_KEY_PEM: &str = include_str!("emulator_signing_pub.pem");

/// `kid` and `x5t` of the emulator's signing key: base64url SHA-1 of its self-signed certificate,
/// computed with openssl when the key was made (Entra v1 tokens carry the same value in both).
pub const KEY_THUMBPRINT: &str = "Z5jhLj7VRTBNP6X4NGlobtfWs84";

/// The claims of a v1 app-only access token, as Entra issues them for client credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    /// Audience: the scope minus `/.default`.
    pub aud: String,
    /// `https://sts.windows.net/{tid}/`.
    pub iss: String,
    /// Issued at (epoch seconds).
    pub iat: u64,
    /// Not before (epoch seconds).
    pub nbf: u64,
    /// Expiry (epoch seconds).
    pub exp: u64,
    /// Opaque Entra-internal value.
    pub aio: String,
    /// Application (client) id.
    pub appid: String,
    /// "1" = client secret, "2" = certificate.
    pub appidacr: String,
    /// Identity provider: the issuer for app-only tokens.
    pub idp: String,
    /// Service principal object id.
    pub oid: String,
    /// Opaque Entra-internal value.
    pub rh: String,
    /// Subject: the object id for app-only tokens.
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    /// Unique token id.
    pub uti: String,
    /// "1.0".
    pub ver: String,
    /// App roles; absent unless granted (the emulator never grants app roles).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<String>>,
    /// ARM resource id of a managed identity (its tokens carry it); absent for apps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xms_mirid: Option<String>,
}

impl AccessTokenClaims {
    /// Claims for an app-only token issued at `now` (epoch seconds): the emulator's clock,
    /// [`Emulator::now_secs`](crate::emulator::Emulator::now_secs), which may be shifted.
    pub fn issued_at(
        now: u64,
        tenant: &str,
        client_id: &str,
        object_id: &str,
        aud: &str,
        lifetime_secs: u64,
    ) -> Self {
        let iss = format!("https://sts.windows.net/{tenant}/");
        Self {
            aud: aud.to_owned(),
            iss: iss.clone(),
            iat: now,
            nbf: now,
            exp: now + lifetime_secs,
            aio: format!("E2{}", random_alnum(40)),
            appid: client_id.to_owned(),
            appidacr: "1".to_owned(),
            idp: iss,
            oid: object_id.to_owned(),
            rh: format!("0.A{}.", random_alnum(52)),
            sub: object_id.to_owned(),
            tid: tenant.to_owned(),
            uti: random_alnum(22),
            ver: "1.0".to_owned(),
            roles: None,
            xms_mirid: None,
        }
    }
}

/// Why a bearer token was refused; all of these get the same 401 at the Foundry side.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenRejected {
    /// Malformed, badly signed or for another audience.
    #[error("token rejected: {0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// `exp` is before the verifier's now.
    #[error("token rejected: expired at {exp}, now {now}")]
    Expired { exp: u64, now: u64 },
    /// `nbf` is after the verifier's now.
    #[error("token rejected: not valid before {nbf}, now {now}")]
    NotYetValid { nbf: u64, now: u64 },
}

/// The emulator's signing and verifying keys.
pub(crate) struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys { .. }")
    }
}

impl Keys {
    /// Parses the embedded key pair.
    pub(crate) fn embedded() -> Self {
        // The PEM files are constants checked by a unit test, so failing here is a build defect.
        #[allow(clippy::expect_used)]
        Self {
            encoding: EncodingKey::from_rsa_pem(PRIVATE_KEY_PEM.as_bytes())
                .expect("embedded emulator private key is valid PEM"),
            decoding: DecodingKey::from_rsa_pem(PUBLIC_KEY_PEM.as_bytes())
                .expect("embedded emulator public key is valid PEM"),
        }
    }

    /// Signs claims into a compact JWT with Entra's v1 header shape.
    pub(crate) fn sign(
        &self,
        claims: &AccessTokenClaims,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(KEY_THUMBPRINT.to_owned());
        header.x5t = Some(KEY_THUMBPRINT.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// Signs arbitrary claims with the same key and header, e.g. the emulator's federated
    /// (external OIDC issuer) tokens.
    pub(crate) fn sign_value(
        &self,
        claims: &serde_json::Value,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.typ = Some("JWT".to_owned());
        header.kid = Some(KEY_THUMBPRINT.to_owned());
        jsonwebtoken::encode(&header, claims, &self.encoding)
    }

    /// Checks only the signature (RS256, this key) and returns the claims; the caller checks
    /// issuer, times and audience with its own clock and its own error for each.
    pub(crate) fn verify_signature_only(
        &self,
        token: &str,
    ) -> Result<serde_json::Value, jsonwebtoken::errors::Error> {
        jsonwebtoken::decode::<serde_json::Value>(
            token,
            &self.decoding,
            &signature_only(Algorithm::RS256),
        )
        .map(|data| data.claims)
    }

    /// Verifies signature, one of `audiences`, and expiry and `nbf` against `now` (no leeway).
    pub(crate) fn verify(
        &self,
        token: &str,
        audiences: &[&str],
        now: u64,
    ) -> Result<AccessTokenClaims, TokenRejected> {
        let mut validation = Validation::new(Algorithm::RS256);
        // jsonwebtoken reads the real clock; the emulator's clock may be shifted, so times are
        // checked below against `now` instead.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_audience(audiences);
        validation.set_required_spec_claims(&["exp", "aud"]);
        let claims =
            jsonwebtoken::decode::<AccessTokenClaims>(token, &self.decoding, &validation)?.claims;
        // No leeway: tests use 1-second tokens, so any leeway would hide expiry.
        if claims.exp < now {
            return Err(TokenRejected::Expired {
                exp: claims.exp,
                now,
            });
        }
        if claims.nbf > now {
            return Err(TokenRejected::NotYetValid {
                nbf: claims.nbf,
                now,
            });
        }
        Ok(claims)
    }
}

/// Validation that checks the signature with `alg` and nothing else (no claims required).
pub(crate) fn signature_only(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    validation
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUDIENCES: &[&str] = &["https://ai.azure.com", "https://ai.azure.com/"];

    #[test]
    fn embedded_keys_sign_and_verify() {
        let keys = Keys::embedded();
        let claims = AccessTokenClaims::issued_at(1_000, "t", "c", "o", "https://ai.azure.com", 60);
        let token = keys.sign(&claims).expect("sign");
        let verified = keys.verify(&token, AUDIENCES, claims.iat).expect("verify");
        assert_eq!(verified, claims);
    }

    #[test]
    fn wrong_audience_is_rejected() {
        let keys = Keys::embedded();
        let claims = AccessTokenClaims::issued_at(1_000, "t", "c", "o", "https://ml.azure.com", 60);
        let token = keys.sign(&claims).expect("sign");
        assert!(keys.verify(&token, AUDIENCES, claims.iat).is_err());
    }

    #[test]
    fn times_are_checked_against_the_given_now() {
        let keys = Keys::embedded();
        let claims = AccessTokenClaims::issued_at(1_000, "t", "c", "o", "https://ai.azure.com", 60);
        let token = keys.sign(&claims).expect("sign");
        assert!(keys.verify(&token, AUDIENCES, 1_060).is_ok());
        assert!(matches!(
            keys.verify(&token, AUDIENCES, 1_061),
            Err(TokenRejected::Expired { .. })
        ));
        assert!(matches!(
            keys.verify(&token, AUDIENCES, 999),
            Err(TokenRejected::NotYetValid { .. })
        ));
    }
}
