//! Foundry's authentication (bearer token, tenant) and authorisation (data-plane RBAC).

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::error::FoundryError;
use super::route::{Op, Route, Surface};
use crate::emulator::config::ResourceKind;
use crate::emulator::entra::jwt::AccessTokenClaims;
use crate::emulator::state::Emulator;

/// Roles with inference data actions (docs/azure-facts.md §6), by display name and by role id.
/// Owner, Contributor and Cognitive Services Contributor are absent on purpose: no data actions.
const INFERENCE_ROLES: &[&str] = &[
    "Cognitive Services OpenAI User",
    "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
    "Cognitive Services OpenAI Contributor",
    "a001fd3d-188f-4b5d-821b-7da978bf7442",
    "Cognitive Services User",
    "a97b65f3-24c7-4388-baec-2e87135dc908",
    "Azure AI Developer",
    "64702f94-c441-49e6-a78b-ef80e0188fee",
    "Azure AI User",
    "Foundry User",
    "53ca6127-db72-4b80-b1b0-d745d6d5456d",
];

/// Roles whose data actions include the project's
/// `Microsoft.CognitiveServices/accounts/AIServices/agents/write`: those granting
/// `Microsoft.CognitiveServices/*` (docs/azure-facts.md §6, §7). Cognitive Services OpenAI
/// User and Contributor and Azure AI Developer hold only `…/accounts/OpenAI/*` (and, for the
/// developer, Speech and Content Safety), so they are absent.
const PROJECT_ROLES: &[&str] = &[
    "Cognitive Services User",
    "a97b65f3-24c7-4388-baec-2e87135dc908",
    "Azure AI User",
    "Foundry User",
    "53ca6127-db72-4b80-b1b0-d745d6d5456d",
];

/// The bearer token of a request, if it has one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("authorization")?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Checks the caller's credential in Azure's order: presence, signature/expiry/audience, tenant.
/// A project endpoint takes only `https://ai.azure.com` tokens; the resource's other routes
/// take both audiences (docs/azure-facts.md §7). A refused audience gets the resource's
/// bad-token 401 either way (§5).
pub(crate) fn authenticate(
    emu: &Emulator,
    headers: &HeaderMap,
    surface: Surface,
) -> Result<AccessTokenClaims, FoundryError> {
    let kind = emu.resource_kind();
    let Some(token) = bearer(headers) else {
        // The Claude routes also take a key as `x-api-key` (docs/azure-facts.md §7); the
        // emulator has no keys, so it is refused like `api-key`.
        let key = headers.contains_key("api-key")
            || (surface == Surface::Anthropic && headers.contains_key("x-api-key"));
        return Err(if key {
            FoundryError::InvalidSubscriptionKey
        } else {
            FoundryError::Unauthorized(kind)
        });
    };
    // The surface decides the audiences; the emulator's (possibly shifted) clock decides expiry.
    let audiences = match surface {
        Surface::Project => ResourceKind::PROJECT_AUDIENCES,
        _ => kind.audiences(),
    };
    let claims = emu
        .keys
        .verify(token, audiences, emu.now_secs())
        .map_err(|e| {
            tracing::debug!(error = %e, "bearer token refused");
            FoundryError::Unauthorized(kind)
        })?;
    if emu.is_revoked(&claims.uti) {
        return Err(FoundryError::Unauthorized(kind));
    }
    if claims.tid != emu.config.resource_tenant {
        return Err(FoundryError::TenantMismatch { tid: claims.tid });
    }
    Ok(claims)
}

/// Checks the principal's current role assignments (read per request, so `set_roles` acts at
/// once). Roles count at the resource's scope, which covers its projects (docs/azure-facts.md §6).
pub(crate) fn authorize(
    emu: &Emulator,
    claims: &AccessTokenClaims,
    route: &Route,
) -> Result<(), FoundryError> {
    let (granting, denied) = match route.surface {
        Surface::Project => (PROJECT_ROLES, project_permission_denied(claims, route.op)),
        _ => (INFERENCE_ROLES, permission_denied(claims, route.op)),
    };
    let roles = emu.roles_of(&claims.appid);
    let allowed = roles
        .iter()
        .any(|r| granting.iter().any(|known| known.eq_ignore_ascii_case(r)));
    if allowed { Ok(()) } else { Err(denied) }
}

/// The project endpoint's PermissionDenied: the project data action, with Foundry's
/// aka.ms/FoundryPermissions hint (docs/azure-facts.md §5, §7).
pub(crate) fn project_permission_denied(claims: &AccessTokenClaims, op: Op) -> FoundryError {
    let (data_action, operation) = op.project_data_action();
    FoundryError::PermissionDenied {
        oid: claims.oid.clone(),
        data_action,
        operation,
        foundry_hint: true,
    }
}

/// The PermissionDenied refusal for this principal and op.
pub(crate) fn permission_denied(claims: &AccessTokenClaims, op: Op) -> FoundryError {
    permission_denied_worded(claims, op, false)
}

/// PermissionDenied, with the Foundry data-plane hint appended when `foundry_hint`.
pub(crate) fn permission_denied_worded(
    claims: &AccessTokenClaims,
    op: Op,
    foundry_hint: bool,
) -> FoundryError {
    let (data_action, operation) = op.data_action();
    FoundryError::PermissionDenied {
        oid: claims.oid.clone(),
        data_action,
        operation,
        foundry_hint,
    }
}

/// `(appid, oid)` of a bearer token without verifying it, for the request records only.
pub(crate) fn peek_identity(token: &str) -> (Option<String>, Option<String>) {
    let payload = token
        .split('.')
        .nth(1)
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let field = |name: &str| {
        payload
            .as_ref()
            .and_then(|p| p.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    (field("appid"), field("oid"))
}
