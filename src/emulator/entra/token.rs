//! The Entra ID v2.0 token endpoint, client-credentials grant only.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::json;

use super::aadsts::{self, RequestFacts};
use super::assertion::{self, Endpoint, JWT_BEARER};
use super::error::{EntraError, entra_headers};
use super::jwt::AccessTokenClaims;
use crate::emulator::records::TokenRequestRecord;
use crate::emulator::state::{Emulator, EntraFault};
use crate::emulator::util::{parse_form, percent_decode, uuid};

/// Resources (scope minus `/.default`) that have a service principal in every emulated tenant.
const KNOWN_RESOURCES: [&str; 7] = [
    "https://cognitiveservices.azure.com",
    // The management plane, for operators' tokens (`setup`): docs/azure-facts.md §8.
    "https://management.azure.com",
    "https://graph.microsoft.com",
    "https://ai.azure.com",
    "https://cognitiveservices.azure.us",
    "https://cognitiveservices.azure.cn",
    "https://ml.azure.com",
];

/// The request's parameters, from the form and (for client credentials) Basic auth.
#[derive(Debug, Default)]
struct TokenParams {
    fields: BTreeMap<String, String>,
    basic: Option<(String, String)>,
}

impl TokenParams {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn client_id(&self) -> Option<&str> {
        self.get("client_id")
            .or(self.basic.as_ref().map(|(id, _)| id.as_str()))
    }

    fn client_secret(&self) -> Option<&str> {
        self.get("client_secret")
            .or(self.basic.as_ref().map(|(_, s)| s.as_str()))
    }
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub(crate) async fn token(
    State(emu): State<Arc<Emulator>>,
    Path(tenant): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = header_str(&headers, "content-type");
    let is_form = content_type
        .as_deref()
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let mut params = TokenParams::default();
    if is_form {
        for (k, v) in parse_form(&body) {
            params.fields.entry(k).or_insert(v);
        }
    }
    params.basic = basic_credentials(&headers);
    let record = TokenRequestRecord {
        tenant: tenant.clone(),
        content_type,
        form: redacted(&params.fields),
        basic_auth: params.basic.is_some(),
        status: 0,
        aadsts: None,
        received_ms: crate::emulator::util::now_millis(),
    };
    let id = emu.record_token_request(record);
    let correlation = header_str(&headers, "client-request-id");

    match emu.entra_fault() {
        Some(EntraFault::Stall(delay)) => tokio::time::sleep(delay).await,
        Some(EntraFault::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            emu.finish_token_request(id, status.as_u16(), Some(90033));
            tracing::debug!(status = status.as_u16(), "entra fault injected");
            return aadsts::transient(status).into_response_with(correlation, emu.now_secs());
        }
        Some(EntraFault::Aadsts(code)) => {
            let facts = RequestFacts {
                client_id: params.client_id(),
                tenant: &tenant,
                scope: params.get("scope"),
                grant_type: params.get("grant_type"),
                client_assertion: params.get("client_assertion"),
                now: emu.now_secs(),
            };
            // Codes are checked when the fault is set; an unknown one still gets a transient error.
            let err = aadsts::injected(code, &facts)
                .unwrap_or_else(|| aadsts::transient(StatusCode::SERVICE_UNAVAILABLE));
            emu.finish_token_request(id, err.status.as_u16(), err.code);
            tracing::debug!(code, "entra AADSTS fault injected");
            return err.into_response_with(correlation, emu.now_secs());
        }
        Some(EntraFault::Garbage) => {
            emu.finish_token_request(id, 200, None);
            let page = "<html><head><title>Service Unavailable</title></head><body>upstream hiccup</body></html>";
            return ([("content-type", "text/html")], page).into_response();
        }
        None => {}
    }

    // HTTP/1.1 names the host in `Host`; HTTP/2 in the URI's authority.
    let host = header_str(&headers, "host").or(uri.authority().map(|a| a.to_string()));
    let endpoint = Endpoint {
        host: host.as_deref(),
        tenant_segment: &tenant,
    };
    match issue(&emu, &endpoint, &params) {
        Ok(response) => {
            emu.finish_token_request(id, 200, None);
            response
        }
        Err(err) => {
            emu.finish_token_request(id, err.status.as_u16(), err.code);
            tracing::debug!(code = ?err.code, "token request refused");
            err.into_response_with(correlation, emu.now_secs())
        }
    }
}

/// Runs Entra's checks in its order and issues a token when all pass.
fn issue(
    emu: &Emulator,
    endpoint: &Endpoint<'_>,
    params: &TokenParams,
) -> Result<Response, EntraError> {
    let tenant_segment = endpoint.tenant_segment;
    let segment = tenant_segment.to_ascii_lowercase();
    if segment == "common" || segment == "consumers" {
        return Err(aadsts::common_endpoint());
    }
    let Some(tenant) = emu.config.resolve_tenant(tenant_segment) else {
        return Err(aadsts::tenant_not_found(tenant_segment));
    };
    match params.get("grant_type") {
        None => return Err(aadsts::missing("grant_type")),
        Some("client_credentials") => {}
        Some(other) => return Err(aadsts::unsupported_grant(other)),
    }
    let client_id = params
        .client_id()
        .ok_or_else(|| aadsts::missing("client_id"))?;
    let scope = params
        .get("scope")
        .ok_or_else(|| aadsts::missing("scope"))?;
    let app = emu
        .app(client_id)
        .filter(|a| a.tenant == tenant)
        .ok_or_else(|| aadsts::app_not_found(client_id, tenant_segment))?;
    // An assertion wins over a secret sent alongside it.
    let asserted = if let Some(jwt) = params.get("client_assertion") {
        match params.get("client_assertion_type") {
            Some(JWT_BEARER) => {}
            None => return Err(aadsts::missing("client_assertion_type")),
            Some(other) => {
                return Err(aadsts::invalid_assertion(&format!(
                    "client_assertion_type '{other}' is not supported; use '{JWT_BEARER}'."
                )));
            }
        }
        Some(assertion::verify(emu, &app, endpoint, jwt)?)
    } else {
        let secret = params.client_secret().ok_or_else(aadsts::no_credential)?;
        if !emu.secret_matches(&app, secret) {
            return Err(aadsts::invalid_secret(&app.client_id));
        }
        if app.secret_expired {
            return Err(aadsts::expired_secret(&app.client_id));
        }
        None
    };
    let audience = audience_of(scope, tenant_segment)?;

    let (lifetime, as_string) = emu.token_settings();
    let mut claims = AccessTokenClaims::issued_at(
        emu.now_secs(),
        tenant,
        &app.client_id,
        &app.object_id,
        &audience,
        lifetime,
    );
    if asserted.is_some() {
        // appidacr "2": the client proved itself with an assertion, not a secret (docs/docs/azure-facts.md §3).
        claims.appidacr = "2".to_owned();
    }
    let access_token = emu.keys.sign(&claims).map_err(|e| {
        tracing::error!(error = %e, "token signing failed");
        EntraError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            90033,
            "Token signing failed.",
        )
    })?;
    emu.count_token_issued(&claims.uti, &access_token);
    tracing::debug!(client_id = %app.client_id, credential = ?asserted, "token issued");
    let expires = if as_string {
        json!(lifetime.to_string())
    } else {
        json!(lifetime)
    };
    let body = json!({
        "token_type": "Bearer",
        "expires_in": expires,
        "ext_expires_in": expires,
        "access_token": access_token,
    });
    let mut response = axum::Json(body).into_response();
    entra_headers(response.headers_mut(), &uuid());
    Ok(response)
}

/// Validates `scope` (exactly one `{resource}/.default`, for a known resource) and returns the `aud`.
fn audience_of(scope: &str, tenant_segment: &str) -> Result<String, EntraError> {
    let mut resources: Vec<&str> = Vec::new();
    for s in scope.split_whitespace() {
        // v1 resources: the audience is everything before the last slash.
        let resource = s
            .strip_suffix("/.default")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| aadsts::invalid_scope(s))?;
        if !resources.contains(&resource) {
            resources.push(resource);
        }
    }
    match resources.as_slice() {
        [] => Err(aadsts::missing("scope")),
        [one] => {
            if is_known_resource(one) {
                Ok((*one).to_owned())
            } else {
                Err(aadsts::resource_not_found(one, tenant_segment))
            }
        }
        _ => Err(aadsts::multiple_resources(scope)),
    }
}

/// True when `resource` (with or without a trailing slash) has a service principal in every
/// emulated tenant; the token endpoint and the managed identity endpoints share this list.
pub(crate) fn is_known_resource(resource: &str) -> bool {
    KNOWN_RESOURCES
        .iter()
        .any(|k| k.eq_ignore_ascii_case(resource.trim_end_matches('/')))
}

/// Client id and secret from `Authorization: Basic`, each form-urlencoded per RFC 6749 §2.3.1.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = header_str(headers, "authorization")?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((
        percent_decode(id.as_bytes()),
        percent_decode(secret.as_bytes()),
    ))
}

/// Form fields with credential values hidden, for the records.
fn redacted(fields: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    fields
        .iter()
        .map(|(k, v)| {
            let shown = if k == "client_secret" || k == "client_assertion" {
                "<redacted>".to_owned()
            } else {
                v.clone()
            };
            (k.clone(), shown)
        })
        .collect()
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_owned)
}
