//! Managed identity token endpoints (docs/docs/azure-facts.md §2) on the emulator's listener:
//!
//! - IMDS (VMs): `GET /metadata/identity/oauth2/token?api-version=…&resource=…` with
//!   `Metadata: true`; every value of the answer is a string.
//! - App Service / Container Apps: `GET /msi/token?resource=…&api-version=2019-08-01` with
//!   `X-IDENTITY-HEADER`; `expires_on` is a string and there is no `expires_in`.
//!
//! Both issue the same v1 access token as the token endpoint, for a managed identity of
//! `EmulatorConfig::managed_identities`, with `aud` = the resource exactly as sent.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::jwt::AccessTokenClaims;
use super::token::is_known_resource;
use crate::emulator::config::ManagedIdentitySpec;
use crate::emulator::state::Emulator;
use crate::emulator::util::{parse_form, uuid};

/// IMDS api-versions the emulator serves: the Python SDK's and the Rust SDK's (docs/docs/azure-facts.md §2).
const IMDS_API_VERSIONS: [&str; 2] = ["2018-02-01", "2019-08-01"];
/// The App Service api-version with `X-IDENTITY-HEADER` (2017-09-01 used a `secret` header).
const APP_SERVICE_API_VERSION: &str = "2019-08-01";

/// Which id of an identity a selector parameter gives.
#[derive(Debug, Clone, Copy)]
enum By {
    /// `client_id`.
    Client,
    /// `object_id` / `principal_id`.
    Object,
    /// `msi_res_id` (IMDS) / `mi_res_id` (App Service): the ARM resource id.
    Resource,
}

/// A selector the request carries: which id, and its value.
type Selector<'a> = (By, &'a str);

/// Why no identity could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NoIdentity {
    /// No selector and nothing to default to.
    NoneAssigned,
    /// A selector that names no identity of the host.
    NotFound,
    /// More than one selector.
    TooManySelectors,
}

/// The request's query parameters (first value of each name; empty values count as absent).
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: Option<String>) -> Self {
        Self(parse_form(raw.unwrap_or_default().as_bytes()))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, v)| k == name && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /metadata/identity/oauth2/token`: the VM's Instance Metadata Service.
pub(crate) async fn imds(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Some(status) = emu.next_imds_request() {
        tracing::debug!(status, "imds fault injected");
        return imds_fault(status);
    }
    // IMDS wants exactly `true`, lower case (docs/docs/azure-facts.md §2), as an SSRF guard.
    let metadata = headers.get("metadata").and_then(|v| v.to_str().ok());
    if metadata != Some("true") {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required metadata header not specified",
        );
    }
    let query = Query::parse(raw);
    match query.get("api-version") {
        None => {
            return imds_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Required query variable 'api-version' is missing",
            );
        }
        Some(v) if !IMDS_API_VERSIONS.contains(&v) => {
            let message = format!(
                "Invalid api-version '{v}'. Supported versions: {}",
                IMDS_API_VERSIONS.join(", ")
            );
            return imds_error(StatusCode::BAD_REQUEST, "invalid_request", &message);
        }
        Some(_) => {}
    }
    let Some(resource) = query.get("resource") else {
        return imds_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required audience parameter not specified",
        );
    };
    let selectors = selectors(
        &query,
        &[
            ("client_id", By::Client),
            ("object_id", By::Object),
            ("msi_res_id", By::Resource),
        ],
    );
    // IMDS alone falls back to a lone user-assigned identity when there is no system-assigned one.
    let identity = match choose(&emu, &selectors, true) {
        Ok(identity) => identity,
        Err(why) => {
            return imds_error(StatusCode::BAD_REQUEST, "invalid_request", why.message());
        }
    };
    if !is_known_resource(resource) {
        let message = resource_not_found(&emu, resource);
        return imds_error(StatusCode::BAD_REQUEST, "invalid_resource", &message);
    }
    let Some(issued) = issue(&emu, identity, resource) else {
        return imds_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unknown",
            "Failed to retrieve token from the Active directory.",
        );
    };
    axum::Json(json!({
        "access_token": issued.token,
        "refresh_token": "",
        "expires_in": issued.lifetime.to_string(),
        "ext_expires_in": issued.lifetime.to_string(),
        "expires_on": issued.expires_on.to_string(),
        "not_before": issued.not_before.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": identity.client_id,
    }))
    .into_response()
}

/// `GET /msi/token`: the App Service / Container Apps identity endpoint (`IDENTITY_ENDPOINT`).
pub(crate) async fn app_service(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    emu.count_app_service_request();
    let sent = headers
        .get("x-identity-header")
        .and_then(|v| v.to_str().ok());
    if sent != Some(emu.config.identity_header.as_str()) {
        let message = if sent.is_some() {
            "The X-IDENTITY-HEADER value does not match IDENTITY_HEADER."
        } else {
            "The X-IDENTITY-HEADER header is required."
        };
        return app_service_error(StatusCode::UNAUTHORIZED, message);
    }
    let query = Query::parse(raw);
    match query.get("api-version") {
        Some(APP_SERVICE_API_VERSION) => {}
        None => {
            return app_service_error(
                StatusCode::BAD_REQUEST,
                "The api-version query parameter is required.",
            );
        }
        Some(v) => {
            let message = format!(
                "The api-version '{v}' is not supported with X-IDENTITY-HEADER; use {APP_SERVICE_API_VERSION}."
            );
            return app_service_error(StatusCode::BAD_REQUEST, &message);
        }
    }
    let Some(resource) = query.get("resource") else {
        return app_service_error(
            StatusCode::BAD_REQUEST,
            "The resource query parameter is required.",
        );
    };
    let selectors = selectors(
        &query,
        &[
            ("client_id", By::Client),
            ("principal_id", By::Object),
            ("object_id", By::Object),
            ("mi_res_id", By::Resource),
        ],
    );
    let identity = match choose(&emu, &selectors, false) {
        Ok(identity) => identity,
        Err(NoIdentity::NotFound) => {
            return app_service_error(
                StatusCode::BAD_REQUEST,
                "No Managed Identity found for specified ClientId/ResourceId/PrincipalId.",
            );
        }
        Err(why) => return app_service_error(StatusCode::BAD_REQUEST, why.message()),
    };
    if !is_known_resource(resource) {
        let message = resource_not_found(&emu, resource);
        return app_service_error(StatusCode::BAD_REQUEST, &message);
    }
    let Some(issued) = issue(&emu, identity, resource) else {
        return app_service_error(StatusCode::INTERNAL_SERVER_ERROR, "Token signing failed.");
    };
    axum::Json(json!({
        "access_token": issued.token,
        "expires_on": issued.expires_on.to_string(),
        "resource": resource,
        "token_type": "Bearer",
        "client_id": identity.client_id,
    }))
    .into_response()
}

/// The selectors the request carries, among `params`.
fn selectors<'a>(query: &'a Query, params: &[(&str, By)]) -> Vec<Selector<'a>> {
    params
        .iter()
        .filter_map(|(name, by)| Some((*by, query.get(name)?)))
        .collect()
}

/// The identity a request names; with none named, the system-assigned one (or, when
/// `lone_user_assigned`, the only user-assigned one if there is no system-assigned identity).
fn choose<'a>(
    emu: &'a Emulator,
    selectors: &[Selector<'_>],
    lone_user_assigned: bool,
) -> Result<&'a ManagedIdentitySpec, NoIdentity> {
    let identities = &emu.config.managed_identities;
    match selectors {
        [] => identities
            .iter()
            .find(|m| m.system_assigned)
            .or(match identities.as_slice() {
                [only] if lone_user_assigned => Some(only),
                _ => None,
            })
            .ok_or(NoIdentity::NoneAssigned),
        [one] => identities
            .iter()
            .find(|m| {
                let (by, id) = one;
                // Ids and ARM resource ids are case-insensitive in Azure.
                let own = match by {
                    By::Client => &m.client_id,
                    By::Object => &m.object_id,
                    By::Resource => &m.resource_id,
                };
                own.eq_ignore_ascii_case(id)
            })
            .ok_or(NoIdentity::NotFound),
        _ => Err(NoIdentity::TooManySelectors),
    }
}

impl NoIdentity {
    fn message(self) -> &'static str {
        match self {
            NoIdentity::NoneAssigned => "No managed identity assigned",
            NoIdentity::NotFound => "Identity not found",
            NoIdentity::TooManySelectors => {
                "Only one of client_id, object_id and the resource id parameter may be specified"
            }
        }
    }
}

/// A token issued for a managed identity.
struct Issued {
    token: String,
    lifetime: u64,
    not_before: u64,
    expires_on: u64,
}

/// Signs a v1 token for `identity` and `resource` (the audience, exactly as sent).
fn issue(emu: &Emulator, identity: &ManagedIdentitySpec, resource: &str) -> Option<Issued> {
    let (lifetime, _) = emu.token_settings();
    let mut claims = AccessTokenClaims::issued_at(
        emu.now_secs(),
        &emu.config.resource_tenant,
        &identity.client_id,
        &identity.object_id,
        resource,
        lifetime,
    );
    // Managed identity tokens prove a certificate-like credential and name their ARM resource.
    claims.appidacr = "2".to_owned();
    claims.xms_mirid = Some(identity.resource_id.clone());
    let token = emu
        .keys
        .sign(&claims)
        .map_err(|e| tracing::error!(error = %e, "token signing failed"))
        .ok()?;
    emu.count_token_issued(&claims.uti, &token);
    tracing::debug!(client_id = %identity.client_id, "managed identity token issued");
    Some(Issued {
        token,
        lifetime,
        not_before: claims.nbf,
        expires_on: claims.exp,
    })
}

/// The AADSTS500011 text Entra gives the identity endpoint for an unknown resource (e.g. a
/// scope sent as the resource, `/.default` and all).
fn resource_not_found(emu: &Emulator, resource: &str) -> String {
    let err = super::aadsts::resource_not_found(resource, &emu.config.resource_tenant);
    format!("AADSTS500011: {}", err.message)
}

/// IMDS's error body: `{"error", "error_description"}`.
fn imds_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({"error": error, "error_description": description});
    (status, axum::Json(body)).into_response()
}

/// An injected IMDS failure, worded after the IMDS docs' error table.
fn imds_fault(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let (error, description) = match status.as_u16() {
        404 => ("not_found", "IMDS endpoint is updating"),
        410 => ("service_unavailable", "IMDS is going through updates"),
        429 => ("too_many_requests", "IMDS Throttle limit reached"),
        500..=599 => (
            "service_unavailable",
            "Transient error from the managed identities subsystem. Retry after at least 1 second.",
        ),
        _ => ("invalid_request", "Injected IMDS failure"),
    };
    imds_error(status, error, description)
}

/// App Service's error body: `{"statusCode", "message", "correlationId"}`.
fn app_service_error(status: StatusCode, message: &str) -> Response {
    let body: Value = json!({
        "statusCode": status.as_u16(),
        "message": message,
        "correlationId": uuid(),
    });
    (status, axum::Json(body)).into_response()
}
