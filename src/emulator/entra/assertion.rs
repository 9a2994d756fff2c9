//! Client assertions at the token endpoint (docs/docs/azure-facts.md §1, §2): a certificate assertion when
//! `iss` = `sub` = the app's client id, a federated (workload identity) assertion otherwise.

use jsonwebtoken::{Algorithm, Header};
use serde_json::Value;

use super::aadsts;
use super::certificate::thumbprint_hex;
use super::error::EntraError;
use super::jwt::signature_only;
use crate::emulator::config::AppSpec;
use crate::emulator::state::Emulator;

/// The only `client_assertion_type` Entra accepts.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Which credential an accepted assertion proved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AssertionKind {
    /// Signed with a certificate registered on the app.
    Certificate,
    /// A token from an external issuer that a federated credential on the app trusts.
    Federated,
}

/// How the client addressed the token endpoint: a certificate assertion's `aud` must name it.
#[derive(Debug)]
pub(crate) struct Endpoint<'a> {
    /// The `Host` (or HTTP/2 authority) the request was sent to.
    pub(crate) host: Option<&'a str>,
    /// The tenant path segment, as sent (GUID or domain).
    pub(crate) tenant_segment: &'a str,
}

impl Endpoint<'_> {
    /// True when `aud` is this endpoint's URL. Both schemes are accepted: the emulator serves
    /// plain HTTP but may sit behind a TLS terminator, and a wrong scheme never reaches it anyway.
    fn is_addressed_by(&self, aud: &str) -> bool {
        let Some(host) = self.host else { return false };
        let aud = aud.trim_end_matches('/');
        ["http", "https"].iter().any(|scheme| {
            let url = format!(
                "{scheme}://{host}/{}/oauth2/v2.0/token",
                self.tenant_segment
            );
            aud.eq_ignore_ascii_case(&url)
        })
    }
}

/// Verifies `assertion` for `app` as Entra does, by the emulator's clock (no leeway).
pub(crate) fn verify(
    emu: &Emulator,
    app: &AppSpec,
    endpoint: &Endpoint<'_>,
    assertion: &str,
) -> Result<AssertionKind, EntraError> {
    let header = jsonwebtoken::decode_header(assertion).map_err(|e| {
        aadsts::invalid_assertion(&format!("The client assertion is malformed: {e}."))
    })?;
    let claims = unverified_claims(assertion)?;
    let is_self_issued = [text(&claims, "iss"), text(&claims, "sub")]
        .iter()
        .all(|v| v.is_some_and(|v| v.eq_ignore_ascii_case(&app.client_id)));
    if is_self_issued {
        verify_certificate(emu, app, endpoint, assertion, &header, &claims)?;
        Ok(AssertionKind::Certificate)
    } else {
        verify_federated(emu, app, assertion, &header, &claims)?;
        Ok(AssertionKind::Federated)
    }
}

/// A certificate assertion: key by `x5t#S256` or `x5t`, RS256 or PS256, `x5c`, `aud`, times, `jti`.
fn verify_certificate(
    emu: &Emulator,
    app: &AppSpec,
    endpoint: &Endpoint<'_>,
    assertion: &str,
    header: &Header,
    claims: &Value,
) -> Result<(), EntraError> {
    // SHA-256 first: current docs use it; the Rust SDK sends only SHA-1 (docs/docs/azure-facts.md §1).
    let named = header
        .x5t_s256
        .as_deref()
        .map(|t| (t, true))
        .or(header.x5t.as_deref().map(|t| (t, false)));
    let thumbprint = named.map(|(t, _)| thumbprint_hex(t)).unwrap_or_default();
    let refused = || aadsts::invalid_signature(&thumbprint);
    let (named, sha256) = named.ok_or_else(refused)?;
    let cert = emu
        .certificates_of(&app.client_id)
        .into_iter()
        .find(|c| {
            let registered = if sha256 { &c.x5t_s256 } else { &c.x5t };
            registered == named.trim_end_matches('=')
        })
        .ok_or_else(refused)?;
    if !matches!(header.alg, Algorithm::RS256 | Algorithm::PS256) {
        return Err(refused());
    }
    if let Some(chain) = header.x5c_der().map_err(|_| refused())?
        && chain.first() != Some(&cert.der)
    {
        return Err(refused());
    }
    jsonwebtoken::decode::<Value>(assertion, &cert.key, &signature_only(header.alg))
        .map_err(|_| refused())?;
    let aud_ok = audiences(claims)
        .iter()
        .any(|aud| endpoint.is_addressed_by(aud));
    if !aud_ok {
        return Err(aadsts::assertion_audience_mismatch());
    }
    check_times(claims, emu.now_secs())?;
    if text(claims, "jti").is_none() {
        return Err(aadsts::invalid_assertion(
            "The client assertion has no 'jti' claim.",
        ));
    }
    Ok(())
}

/// A federated assertion: issued by the emulator's OIDC issuer, signed with its key, in time,
/// and matching one of the app's federated credentials exactly.
fn verify_federated(
    emu: &Emulator,
    app: &AppSpec,
    assertion: &str,
    header: &Header,
    claims: &Value,
) -> Result<(), EntraError> {
    let issuer = text(claims, "iss").unwrap_or_default();
    let subject = text(claims, "sub").unwrap_or_default();
    let audiences = audiences(claims);
    let no_record = || {
        let audience = audiences.first().map_or("", String::as_str);
        aadsts::no_federated_record(issuer, subject, audience)
    };
    // An issuer the emulator does not play has no keys to check and no record to match.
    if issuer != emu.config.federation_issuer {
        return Err(no_record());
    }
    emu.keys.verify_signature_only(assertion).map_err(|_| {
        let key = header.kid.as_deref().or(header.x5t.as_deref());
        aadsts::invalid_signature(&key.map(thumbprint_hex).unwrap_or_default())
    })?;
    check_times(claims, emu.now_secs())?;
    let trusted = app
        .federated_credentials
        .iter()
        .any(|fc| fc.issuer == issuer && fc.subject == subject && audiences.contains(&fc.audience));
    if trusted { Ok(()) } else { Err(no_record()) }
}

/// `nbf` (or `iat` when absent) ≤ now ≤ `exp`, with no leeway; outside → AADSTS700024.
fn check_times(claims: &Value, now: u64) -> Result<(), EntraError> {
    let exp = time(claims, "exp")
        .ok_or_else(|| aadsts::invalid_assertion("The client assertion has no 'exp' claim."))?;
    let nbf = time(claims, "nbf").or(time(claims, "iat"));
    // Entra does not enforce the documented 10-minute limit on exp - nbf (docs/docs/azure-facts.md §1).
    if exp < now || nbf.is_some_and(|nbf| nbf > now) {
        return Err(aadsts::assertion_out_of_time(
            now,
            nbf.unwrap_or(exp.min(now)),
            exp,
        ));
    }
    Ok(())
}

/// The claims, decoded without checking the signature (which key to check with depends on them).
fn unverified_claims(assertion: &str) -> Result<Value, EntraError> {
    jsonwebtoken::dangerous::insecure_decode::<Value>(assertion)
        .map(|data| data.claims)
        .ok()
        .filter(Value::is_object)
        .ok_or_else(|| aadsts::invalid_assertion("The client assertion's claims are not JSON."))
}

fn text<'a>(claims: &'a Value, name: &str) -> Option<&'a str> {
    claims.get(name)?.as_str().filter(|s| !s.is_empty())
}

/// A time claim; JWT allows fractional seconds, which are truncated.
fn time(claims: &Value, name: &str) -> Option<u64> {
    let value = claims.get(name)?;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    value
        .as_u64()
        .or_else(|| value.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// `aud` as a list: JWT allows a string or an array (Kubernetes sends an array).
fn audiences(claims: &Value) -> Vec<String> {
    match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_matches_either_scheme_and_trailing_slash() {
        let endpoint = Endpoint {
            host: Some("127.0.0.1:8080"),
            tenant_segment: "t1",
        };
        assert!(endpoint.is_addressed_by("http://127.0.0.1:8080/t1/oauth2/v2.0/token"));
        assert!(endpoint.is_addressed_by("https://127.0.0.1:8080/T1/oauth2/v2.0/token/"));
        assert!(!endpoint.is_addressed_by("http://127.0.0.1:8080/t2/oauth2/v2.0/token"));
        assert!(
            !endpoint.is_addressed_by("https://login.microsoftonline.com/t1/oauth2/v2.0/token")
        );
    }

    #[test]
    fn times_have_no_leeway() {
        let claims = serde_json::json!({"nbf": 100, "exp": 200});
        assert!(check_times(&claims, 100).is_ok());
        assert!(check_times(&claims, 200).is_ok());
        assert_eq!(
            check_times(&claims, 99).expect_err("early").code,
            Some(700024)
        );
        assert_eq!(
            check_times(&claims, 201).expect_err("late").code,
            Some(700024)
        );
        let no_exp = serde_json::json!({"nbf": 100});
        assert_eq!(
            check_times(&no_exp, 150).expect_err("no exp").code,
            Some(50027)
        );
    }
}
