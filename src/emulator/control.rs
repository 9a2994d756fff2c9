//! `/_emulator/*`: the emulator's controls and observations over HTTP, for tests in any language.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use super::config::{ImdsFault, ResourceKind};
use super::state::{Emulator, EntraFault};

/// Body of `POST /_emulator/config`; absent fields leave settings unchanged.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigUpdate {
    /// `"503"` (any status), `"stall:MS"`, `"garbage"`, `"aadsts:N"`, or `null` to clear.
    #[serde(default, deserialize_with = "present")]
    entra_fault: Option<Option<String>>,
    token_lifetime_secs: Option<u64>,
    expires_in_as_string: Option<bool>,
    /// Role display names by client id.
    roles: Option<HashMap<String, Vec<String>>>,
    /// `"foundry"` or `"openai"`.
    resource_kind: Option<ResourceKind>,
    /// Seconds the emulator's clock is ahead of the real one (negative: behind).
    clock_offset_secs: Option<i64>,
    /// `{"status": 503, "times": 2}`, or `null` to clear.
    #[serde(default, deserialize_with = "present")]
    imds_fault: Option<Option<ImdsFault>>,
    /// Management plane: users may register applications (else Graph's 403).
    app_registration_allowed: Option<bool>,
    /// Management plane: the caller may write role assignments (else ARM's 403).
    role_assignment_allowed: Option<bool>,
    /// Management plane: how long a new service principal is unknown to ARM.
    replication_delay_ms: Option<u64>,
    /// Management plane: how long a new role assignment takes to apply.
    propagation_delay_ms: Option<u64>,
    /// Per named resource: `{"kind": "unavailable"}`, `{"kind": "rate-limit",
    /// "retry_after_ms": 1500}`, or `null` to clear.
    resource_faults: Option<HashMap<String, Option<crate::emulator::resources::ResourceFault>>>,
}

/// Keeps an explicit `null` apart from an absent field (`Some(None)` vs `None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `POST /_emulator/federated-token`; absent fields take the demo workload's values.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FederatedTokenRequest {
    /// `sub`; default `system:serviceaccount:default:foundry-proxy`.
    #[serde(default = "default_subject")]
    subject: String,
    /// `aud`; default `api://AzureADTokenExchange`.
    #[serde(default = "default_audience")]
    audience: String,
    /// Seconds until `exp`; default 3600 (a kubelet's projected token lives about an hour).
    #[serde(default = "default_lifetime")]
    lifetime_secs: u64,
}

fn default_subject() -> String {
    super::identities::FEDERATED_SUBJECT.to_owned()
}

fn default_audience() -> String {
    super::identities::FEDERATED_AUDIENCE.to_owned()
}

fn default_lifetime() -> u64 {
    3600
}

/// Parses the `entra_fault` notation of the control endpoint.
pub(crate) fn parse_fault(text: &str) -> Option<EntraFault> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("garbage") {
        return Some(EntraFault::Garbage);
    }
    if let Some(code) = text.strip_prefix("aadsts:") {
        // Only codes the emulator can play, so a typo fails when set rather than when used.
        return code
            .trim()
            .parse()
            .ok()
            .filter(|c| EntraFault::AADSTS_CODES.contains(c))
            .map(EntraFault::Aadsts);
    }
    if let Some(ms) = text.strip_prefix("stall:") {
        return ms
            .trim()
            .parse()
            .ok()
            .map(|ms| EntraFault::Stall(Duration::from_millis(ms)));
    }
    text.parse::<u16>()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .map(EntraFault::Status)
}

/// Why `text` is not an `entra_fault`, listing what is.
pub(crate) fn fault_help(text: &str) -> String {
    let codes: Vec<String> = EntraFault::AADSTS_CODES
        .iter()
        .map(u32::to_string)
        .collect();
    format!(
        "entra_fault '{text}' is not a status code, 'stall:MS', 'garbage' or 'aadsts:N' with N one of {}",
        codes.join(", ")
    )
}

/// `GET /_emulator/state`.
pub(crate) async fn state(State(emu): State<Arc<Emulator>>) -> Response {
    axum::Json(json!({
        "resource_kind": emu.resource_kind().as_str(),
        "clock_offset_secs": emu.clock_offset(),
        "entra_fault": emu.entra_fault().map(|f| f.to_string()),
        "imds_fault": emu.imds_fault(),
        "imds_requests": emu.imds_requests(),
        "app_service_requests": emu.app_service_requests(),
        "roles": emu.roles(),
        "tokens_issued": emu.tokens_issued(),
        "streams_started": emu.streams_started(),
        "streams_completed": emu.streams_completed(),
        "streams_cancelled": emu.streams_cancelled(),
        "streams_reset": emu.streams_reset(),
        "token_requests": emu.token_requests(),
        "inference_requests": emu.inference_requests(),
        "directory": emu.directory_counts(),
    }))
    .into_response()
}

/// `POST /_emulator/config`.
pub(crate) async fn config(
    State(emu): State<Arc<Emulator>>,
    update: Result<axum::Json<ConfigUpdate>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let update = match update {
        Ok(axum::Json(u)) => u,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": e.body_text()})),
            )
                .into_response();
        }
    };
    if let Some(fault) = update.entra_fault {
        let parsed = match fault.as_deref() {
            None => None,
            Some(text) => match parse_fault(text) {
                Some(f) => Some(f),
                None => {
                    let msg = fault_help(text);
                    return (StatusCode::BAD_REQUEST, axum::Json(json!({"error": msg})))
                        .into_response();
                }
            },
        };
        emu.set_entra_fault(parsed);
    }
    if let Some(secs) = update.token_lifetime_secs {
        emu.set_token_lifetime(secs);
    }
    if let Some(yes) = update.expires_in_as_string {
        emu.set_expires_in_as_string(yes);
    }
    for (client_id, roles) in update.roles.unwrap_or_default() {
        emu.set_roles(&client_id, roles);
    }
    for (resource, fault) in update.resource_faults.unwrap_or_default() {
        emu.set_resource_fault(&resource, fault);
    }
    if let Some(kind) = update.resource_kind {
        emu.set_resource_kind(kind);
    }
    if let Some(secs) = update.clock_offset_secs {
        emu.set_clock_offset(secs);
    }
    if let Some(fault) = update.imds_fault {
        emu.set_imds_fault(fault);
    }
    if let Some(allowed) = update.app_registration_allowed {
        emu.set_app_registration_allowed(allowed);
    }
    if let Some(allowed) = update.role_assignment_allowed {
        emu.set_role_assignment_allowed(allowed);
    }
    if let Some(ms) = update.replication_delay_ms {
        emu.set_replication_delay(Duration::from_millis(ms));
    }
    if let Some(ms) = update.propagation_delay_ms {
        emu.set_propagation_delay(Duration::from_millis(ms));
    }
    tracing::debug!("emulator config updated");
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /_emulator/federated-token`: `{"token": JWT}` from the emulator's OIDC issuer, as a
/// kubelet would project it; write it to the file `AZURE_FEDERATED_TOKEN_FILE` names.
pub(crate) async fn federated_token(
    State(emu): State<Arc<Emulator>>,
    request: Result<axum::Json<FederatedTokenRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    match request {
        Ok(axum::Json(r)) => {
            let token = emu.federated_token(&r.subject, &r.audience, r.lifetime_secs);
            axum::Json(json!({"token": token})).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": e.body_text()})),
        )
            .into_response(),
    }
}

/// `POST /_emulator/reset`: forgets recorded requests.
pub(crate) async fn reset(State(emu): State<Arc<Emulator>>) -> StatusCode {
    emu.clear_records();
    emu.reset_resources();
    StatusCode::NO_CONTENT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_notation() {
        assert_eq!(parse_fault("503"), Some(EntraFault::Status(503)));
        assert_eq!(
            parse_fault("stall:250"),
            Some(EntraFault::Stall(Duration::from_millis(250)))
        );
        assert_eq!(parse_fault("garbage"), Some(EntraFault::Garbage));
        assert_eq!(
            parse_fault("aadsts:700027"),
            Some(EntraFault::Aadsts(700027))
        );
        assert_eq!(parse_fault("aadsts:12345"), None);
        assert_eq!(parse_fault("nope"), None);
        for fault in [
            EntraFault::Status(429),
            EntraFault::Stall(Duration::from_millis(5)),
            EntraFault::Garbage,
            EntraFault::Aadsts(90002),
        ] {
            assert_eq!(parse_fault(&fault.to_string()), Some(fault));
        }
    }
}
