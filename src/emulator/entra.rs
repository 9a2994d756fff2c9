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

use super::entra_error::{EntraError, entra_headers};
use super::jwt::AccessTokenClaims;
use super::records::TokenRequestRecord;
use super::state::{Emulator, EntraFault};
use super::util::{parse_form, percent_decode, uuid};

/// Resources (scope minus `/.default`) that have a service principal in every emulated tenant.
const KNOWN_RESOURCES: [&str; 5] = [
    "https://cognitiveservices.azure.com",
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
    };
    let id = emu.record_token_request(record);
    let correlation = header_str(&headers, "client-request-id");

    match emu.entra_fault() {
        Some(EntraFault::Stall(delay)) => tokio::time::sleep(delay).await,
        Some(EntraFault::Status(status)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            let error = if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                "temporarily_unavailable"
            } else {
                "invalid_request"
            };
            emu.finish_token_request(id, status.as_u16(), Some(90033));
            tracing::debug!(status = status.as_u16(), "entra fault injected");
            let err = EntraError::new(
                status,
                error,
                90033,
                "A transient error has occurred. Please try again.",
            );
            return err.into_response_with(correlation);
        }
        Some(EntraFault::Garbage) => {
            emu.finish_token_request(id, 200, None);
            let page = "<html><head><title>Service Unavailable</title></head><body>upstream hiccup</body></html>";
            return ([("content-type", "text/html")], page).into_response();
        }
        None => {}
    }

    match issue(&emu, &tenant, &params) {
        Ok(response) => {
            emu.finish_token_request(id, 200, None);
            response
        }
        Err(err) => {
            emu.finish_token_request(id, err.status.as_u16(), err.code);
            tracing::debug!(code = ?err.code, "token request refused");
            err.into_response_with(correlation)
        }
    }
}

/// Runs Entra's checks in its order and issues a token when all pass.
fn issue(
    emu: &Emulator,
    tenant_segment: &str,
    params: &TokenParams,
) -> Result<Response, EntraError> {
    let segment = tenant_segment.to_ascii_lowercase();
    if segment == "common" || segment == "consumers" {
        return Err(EntraError::bad_request(
            9001023,
            "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.",
        ));
    }
    let Some(tenant) = emu.config.resolve_tenant(tenant_segment) else {
        return Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
            90002,
            format!(
                "Tenant '{tenant_segment}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
            ),
        ));
    };
    match params.get("grant_type") {
        None => return Err(missing("grant_type")),
        Some("client_credentials") => {}
        Some(other) => {
            return Err(EntraError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
    }
    let client_id = params.client_id().ok_or_else(|| missing("client_id"))?;
    let scope = params.get("scope").ok_or_else(|| missing("scope"))?;
    let app = emu
        .app(client_id)
        .filter(|a| a.tenant == tenant)
        .ok_or_else(|| {
            EntraError::new(
                StatusCode::BAD_REQUEST,
                "unauthorized_client",
                700016,
                format!("Application with identifier '{client_id}' was not found in the directory '{tenant_segment}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."),
            )
        })?;
    if params.get("client_assertion").is_some() {
        // Certificate and federated credentials arrive in a later change; say so plainly.
        return Err(EntraError {
            status: StatusCode::BAD_REQUEST,
            error: "unsupported",
            code: None,
            message: "the emulator does not yet verify client assertions; use a client secret"
                .to_owned(),
        });
    }
    let secret = params.client_secret().ok_or_else(|| {
        EntraError::invalid_client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    })?;
    if secret != app.client_secret {
        return Err(EntraError::invalid_client(
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.",
                app.client_id
            ),
        ));
    }
    if app.secret_expired {
        return Err(EntraError::invalid_client(
            7000222,
            format!(
                "The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.",
                app.client_id
            ),
        ));
    }
    let audience = audience_of(scope, tenant_segment)?;

    let (lifetime, as_string) = emu.token_settings();
    let claims =
        AccessTokenClaims::app_only(tenant, &app.client_id, &app.object_id, &audience, lifetime);
    let access_token = emu.keys.sign(&claims).map_err(|e| {
        tracing::error!(error = %e, "token signing failed");
        EntraError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            90033,
            "Token signing failed.",
        )
    })?;
    emu.count_token_issued(&claims.uti);
    tracing::debug!(client_id = %app.client_id, "token issued");
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
    let invalid_scope = |s: &str| {
        EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            70011,
            format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {s} is not valid."
            ),
        )
    };
    let mut resources: Vec<&str> = Vec::new();
    for s in scope.split_whitespace() {
        // v1 resources: the audience is everything before the last slash.
        let resource = s
            .strip_suffix("/.default")
            .filter(|r| !r.is_empty())
            .ok_or_else(|| invalid_scope(s))?;
        if !resources.contains(&resource) {
            resources.push(resource);
        }
    }
    match resources.as_slice() {
        [] => Err(missing("scope")),
        [one] => {
            let known = KNOWN_RESOURCES
                .iter()
                .any(|k| k.eq_ignore_ascii_case(one.trim_end_matches('/')));
            if known {
                Ok((*one).to_owned())
            } else {
                Err(EntraError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_resource",
                    500011,
                    format!(
                        "The resource principal named {one} was not found in the tenant named {tenant_segment}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."
                    ),
                ))
            }
        }
        _ => Err(EntraError::new(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            700022,
            format!(
                "The provided value for the input parameter scope is not valid because it contains more than one resource. Scope {scope} is not valid."
            ),
        )),
    }
}

/// AADSTS900144 for a missing parameter.
fn missing(name: &str) -> EntraError {
    EntraError::bad_request(
        900144,
        format!("The request body must contain the following parameter: '{name}'."),
    )
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
