//! Every AADSTS answer the emulator gives, each message in one place (docs/docs/azure-facts.md §1).
//!
//! The token endpoint's checks call these builders when a request really fails, and
//! [`EntraFault::Aadsts`](crate::emulator::state::EntraFault::Aadsts) calls them through [`injected`] with
//! the request's client id, tenant and scope, so an injected error reads exactly like a real one.
//! Where §1 marks the HTTP status UNCONFIRMED, `invalid_client` answers 401 and others 400.

use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::error::EntraError;
use super::jwt::KEY_THUMBPRINT;
use crate::emulator::util::iso_timestamp;

/// The codes [`injected`] can play.
pub(crate) const CODES: &[u32] = &[
    7000215, 7000222, 700016, 90002, 70011, 500011, 7000218, 700027, 700024, 70021, 700022, 900144,
    9001023, 90033,
];

/// The scope named when a request being failed on purpose sent none.
const DEFAULT_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// The audience of a Kubernetes projected service-account token for workload identity (§2).
const TOKEN_EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// What an injected error may quote from the request being answered.
#[derive(Debug, Default)]
pub(crate) struct RequestFacts<'a> {
    /// `client_id` (form or Basic auth).
    pub(crate) client_id: Option<&'a str>,
    /// The tenant path segment, as sent.
    pub(crate) tenant: &'a str,
    /// `scope`, as sent.
    pub(crate) scope: Option<&'a str>,
    /// `grant_type`, as sent.
    pub(crate) grant_type: Option<&'a str>,
    /// `client_assertion`, as sent (decoded without verification, for quoting only).
    pub(crate) client_assertion: Option<&'a str>,
    /// The emulator's now, in epoch seconds.
    pub(crate) now: u64,
}

/// The error for `code` filled in from the request; `None` for a code not in [`CODES`].
pub(crate) fn injected(code: u32, facts: &RequestFacts<'_>) -> Option<EntraError> {
    let client_id = facts.client_id.unwrap_or_default();
    let scope = facts.scope.unwrap_or(DEFAULT_SCOPE);
    let assertion = facts
        .client_assertion
        .map(Assertion::peek)
        .unwrap_or_default();
    Some(match code {
        7000215 => invalid_secret(client_id),
        7000222 => expired_secret(client_id),
        700016 => app_not_found(client_id, facts.tenant),
        90002 => tenant_not_found(facts.tenant),
        70011 => invalid_scope(scope),
        500011 => {
            let first = scope.split_whitespace().next().unwrap_or(DEFAULT_SCOPE);
            let resource = first.strip_suffix("/.default").unwrap_or(first);
            resource_not_found(resource, facts.tenant)
        }
        7000218 => no_credential(),
        700027 => invalid_signature(&assertion.thumbprint()),
        700024 => {
            // Without an assertion to quote, play one that lived 5 minutes and ended 10 ago.
            let nbf = assertion
                .time("nbf")
                .unwrap_or(facts.now.saturating_sub(900));
            let exp = assertion
                .time("exp")
                .unwrap_or(facts.now.saturating_sub(600));
            assertion_out_of_time(facts.now, nbf, exp)
        }
        70021 => no_federated_record(
            assertion
                .text("iss")
                .unwrap_or("https://kubernetes.default.svc.cluster.local"),
            assertion
                .text("sub")
                .unwrap_or("system:serviceaccount:default:workload-identity-sa"),
            assertion.text("aud").unwrap_or(TOKEN_EXCHANGE_AUDIENCE),
        ),
        700022 => multiple_resources(scope),
        900144 => {
            let present = [
                ("grant_type", facts.grant_type),
                ("client_id", facts.client_id),
                ("scope", facts.scope),
            ];
            // Name what is really missing when something is; Entra checks grant_type first.
            let name = present
                .iter()
                .find(|(_, value)| value.is_none())
                .map_or("grant_type", |(name, _)| *name);
            missing(name)
        }
        9001023 => common_endpoint(),
        90033 => transient(StatusCode::SERVICE_UNAVAILABLE),
        _ => return None,
    })
}

/// AADSTS9001023: client credentials on `/common` or `/consumers`.
pub(crate) fn common_endpoint() -> EntraError {
    EntraError::bad_request(
        9001023,
        "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
    )
}

/// AADSTS90002: the tenant segment names no tenant.
pub(crate) fn tenant_not_found(segment: &str) -> EntraError {
    EntraError::new(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90002,
        format!(
            "Tenant '{segment}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
        ),
    )
}

/// AADSTS70003: a grant type other than client credentials.
pub(crate) fn unsupported_grant(grant: &str) -> EntraError {
    EntraError::new(
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
        70003,
        format!("The app requested an unsupported grant type '{grant}'."),
    )
}

/// AADSTS900144: a required parameter is missing.
pub(crate) fn missing(name: &str) -> EntraError {
    EntraError::bad_request(
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
}

/// AADSTS700016: no such app in the tenant addressed.
pub(crate) fn app_not_found(client_id: &str, tenant_segment: &str) -> EntraError {
    EntraError::new(
        StatusCode::BAD_REQUEST,
        "unauthorized_client",
        700016,
        format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant_segment}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
        ),
    )
}

/// AADSTS7000218: neither a secret nor an assertion.
pub(crate) fn no_credential() -> EntraError {
    EntraError::invalid_client(
        7000218,
        "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
    )
}

/// AADSTS7000215: a wrong secret (often the secret's id instead of its value).
pub(crate) fn invalid_secret(app_id: &str) -> EntraError {
    EntraError::invalid_client(
        7000215,
        format!(
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{app_id}'."
        ),
    )
}

/// AADSTS7000222: the secret exists but has expired.
pub(crate) fn expired_secret(app_id: &str) -> EntraError {
    EntraError::invalid_client(
        7000222,
        format!(
            "The provided client secret keys for app '{app_id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."
        ),
    )
}

/// AADSTS70011: a scope that is not `{resource}/.default`.
pub(crate) fn invalid_scope(scope: &str) -> EntraError {
    EntraError::new(
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        70011,
        format!(
            "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
        ),
    )
}

/// AADSTS500011: the scope's resource has no service principal in the tenant.
pub(crate) fn resource_not_found(resource: &str, tenant_segment: &str) -> EntraError {
    EntraError::new(
        StatusCode::BAD_REQUEST,
        "invalid_resource",
        500011,
        format!(
            "The resource principal named {resource} was not found in the tenant named {tenant_segment}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
        ),
    )
}

/// AADSTS700022: scopes for more than one resource.
pub(crate) fn multiple_resources(scope: &str) -> EntraError {
    EntraError::new(
        StatusCode::BAD_REQUEST,
        "invalid_scope",
        700022,
        format!(
            "The provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."
        ),
    )
}

/// AADSTS90033: a transient failure, with the status given (`temporarily_unavailable` for 5xx
/// and 429, `invalid_request` otherwise).
pub(crate) fn transient(status: StatusCode) -> EntraError {
    let error = if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        "temporarily_unavailable"
    } else {
        "invalid_request"
    };
    EntraError::new(
        status,
        error,
        90033,
        "A transient error has occurred. Please try again.",
    )
}

/// AADSTS700027: the assertion's signing key is not registered on the app.
pub(crate) fn invalid_signature(thumbprint: &str) -> EntraError {
    EntraError::invalid_client(
        700027,
        format!(
            "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}']"
        ),
    )
}

/// AADSTS700024: the assertion is outside its `nbf`..`exp` window by Entra's clock.
pub(crate) fn assertion_out_of_time(now: u64, nbf: u64, exp: u64) -> EntraError {
    EntraError::invalid_client(
        700024,
        format!(
            "Client assertion is not within its valid time range. Current time: {}, assertion valid from {}, expiry time of assertion {}. Review the documentation at https://docs.microsoft.com/azure/active-directory/develop/active-directory-certificate-credentials .",
            iso_timestamp(now),
            iso_timestamp(nbf),
            iso_timestamp(exp)
        ),
    )
}

/// AADSTS70021: no federated credential on the app matches the assertion.
pub(crate) fn no_federated_record(issuer: &str, subject: &str, audience: &str) -> EntraError {
    EntraError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized_client",
        70021,
        format!(
            "No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{audience}'."
        ),
    )
}

/// AADSTS700023: a certificate assertion's `aud` is not this token endpoint. Message as in
/// Entra's error-code reference; status and `error` UNCONFIRMED (401 invalid_client here).
pub(crate) fn assertion_audience_mismatch() -> EntraError {
    EntraError::invalid_client(
        700023,
        "Client assertion audience claim does not match Realm issuer. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials.",
    )
}

/// AADSTS50027: a client assertion that is not a usable JWT (malformed, a claim missing, an
/// unsupported `client_assertion_type`); `detail` says which. Status and wording after the
/// first sentence are the emulator's (UNCONFIRMED).
pub(crate) fn invalid_assertion(detail: &str) -> EntraError {
    EntraError::bad_request(50027, format!("Invalid JWT token. {detail}"))
}

/// A client assertion's header and claims, decoded without verification to quote them.
#[derive(Debug, Default)]
struct Assertion {
    header: Option<Value>,
    claims: Option<Value>,
}

impl Assertion {
    fn peek(jwt: &str) -> Self {
        let mut parts = jwt
            .split('.')
            .map(|p| URL_SAFE_NO_PAD.decode(p.trim_end_matches('=')).ok())
            .map(|bytes| bytes.and_then(|b| serde_json::from_slice::<Value>(&b).ok()));
        Self {
            header: parts.next().flatten(),
            claims: parts.next().flatten(),
        }
    }

    fn text(&self, claim: &str) -> Option<&str> {
        self.claims.as_ref()?.get(claim)?.as_str()
    }

    fn time(&self, claim: &str) -> Option<u64> {
        self.claims.as_ref()?.get(claim)?.as_u64()
    }

    /// The key thumbprint as Entra prints it (upper-case hex), from `x5t` or `x5t#S256`; the
    /// emulator's own key's when the assertion names none.
    fn thumbprint(&self) -> String {
        let header = self.header.as_ref();
        let named = ["x5t", "x5t#S256"]
            .iter()
            .find_map(|field| header?.get(*field)?.as_str());
        let encoded = named.unwrap_or(KEY_THUMBPRINT);
        match URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')) {
            Ok(bytes) => bytes.iter().map(|b| format!("{b:02X}")).collect(),
            Err(_) => encoded.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> RequestFacts<'static> {
        RequestFacts {
            client_id: Some("app-1"),
            tenant: "tenant-1",
            scope: Some("https://ai.azure.com/.default"),
            grant_type: Some("client_credentials"),
            client_assertion: None,
            now: 1_709_251_199,
        }
    }

    #[test]
    fn every_code_is_playable_and_names_itself() {
        for code in CODES {
            let err = injected(*code, &facts()).expect("known code");
            assert_eq!(err.code, Some(*code));
        }
        assert!(injected(12345, &facts()).is_none());
    }

    #[test]
    fn messages_quote_the_request() {
        assert!(injected(500011, &facts()).expect("500011").message.starts_with(
            "The resource principal named https://ai.azure.com was not found in the tenant named tenant-1."
        ));
        assert!(
            injected(700016, &facts())
                .expect("700016")
                .message
                .contains("'app-1' was not found in the directory 'tenant-1'")
        );
    }

    #[test]
    fn thumbprint_is_upper_hex_sha1() {
        let thumbprint = Assertion::default().thumbprint();
        assert_eq!(thumbprint.len(), 40);
        assert!(
            thumbprint
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
        );
    }

    #[test]
    fn assertion_times_are_quoted() {
        let claims = URL_SAFE_NO_PAD.encode(r#"{"nbf":0,"exp":60,"iss":"i","sub":"s"}"#);
        let jwt = format!("e30.{claims}.sig");
        let facts = RequestFacts {
            client_assertion: Some(&jwt),
            ..facts()
        };
        let message = injected(700024, &facts).expect("700024").message;
        assert!(message.contains("Current time: 2024-02-29T23:59:59.0000000Z, assertion valid from 1970-01-01T00:00:00.0000000Z, expiry time of assertion 1970-01-01T00:01:00.0000000Z."), "{message}");
        let message = injected(70021, &facts).expect("70021").message;
        assert!(message.ends_with("Assertion Issuer: 'i'. Assertion Subject: 's'. Assertion Audience: 'api://AzureADTokenExchange'."), "{message}");
    }
}
