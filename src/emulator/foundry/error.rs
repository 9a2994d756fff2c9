//! Foundry's refusals, with the exact bodies of docs/azure-facts.md §4 and §5.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::emulator::config::ResourceKind;

/// Appended to PermissionDenied by Foundry data-plane variants (docs/azure-facts.md §5, I10).
const FOUNDRY_PERMISSIONS_HINT: &str = " For instructions on granting the necessary permissions, see https://aka.ms/FoundryPermissions.";

/// The capacity 429's message (docs/azure-facts.md §7), as users reported it.
const HIGH_DEMAND_MESSAGE: &str = "The system is currently experiencing high demand and cannot process your request. Your request exceeds the maximum usage size allowed during peak load. Please retry after 20 seconds. For improved latency reliability, consider switching to Provisioned Throughput.";

/// Seconds the quota 429 asks the caller to wait; its message says the same.
pub(crate) const QUOTA_RETRY_SECS: u32 = 45;
/// Seconds the capacity 429 asks the caller to wait; its message says the same.
const HIGH_DEMAND_RETRY_SECS: u32 = 20;

/// A refusal from the Foundry side; rendered as Azure renders it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FoundryError {
    /// Unknown path or op, or a deployments path without api-version.
    ResourceNotFound,
    /// A dated api-version the surface does not serve.
    ApiVersionNotSupported,
    /// No usable bearer token: missing, bad signature, expired, wrong audience; worded as this
    /// kind of resource words it.
    Unauthorized(ResourceKind),
    /// An `api-key` header instead of a token; the emulator has no keys.
    InvalidSubscriptionKey,
    /// Token from a tenant other than the resource's.
    TenantMismatch { tid: String },
    /// The principal has no role with the op's data action.
    PermissionDenied {
        oid: String,
        data_action: &'static str,
        operation: &'static str,
        /// Append the Foundry data-plane hint (aka.ms/FoundryPermissions).
        foundry_hint: bool,
    },
    /// The older PermissionDenied wording, with no principal or data action.
    PermissionDeniedLegacy,
    /// Injected: a token sent to a regional endpoint instead of the custom subdomain.
    RegionalEndpoint,
    /// Injected: the resource's firewall refuses the caller's network.
    NetworkRules,
    /// Injected: the resource is behind a virtual network and this endpoint is not its.
    VnetEndpoint,
    /// Injected: the resource accepts only traffic from approved private endpoints.
    PrivateEndpoint,
    /// Injected: the api-version predates the deployment's model.
    ApiVersionTooOld { model: String },
    /// Injected: a body parameter the model does not support (Foundry Models, 422).
    ParameterNotSupported,
    /// Deployment name unknown (OpenAI surfaces).
    DeploymentNotFound,
    /// Model name unknown (Foundry Models surface).
    UnknownModel { model: String },
    /// Foundry Models surface without a model.
    NoModelName,
    /// OpenAI v1 surface without a model.
    ModelRequired,
    /// The deployment's model cannot do this op.
    OperationNotSupported { op: &'static str, model: String },
    /// The request body is not what the op needs.
    BadRequest { message: String },
    /// A project name the resource does not have.
    ProjectNotFound { project: String },
    /// Injected: the deployment's quota is spent ("exceeded the token rate limit").
    RateLimited { message: String },
    /// A resource's quota is spent: the quota 429 with the exact wait
    /// ([`crate::emulator::resources`]).
    QuotaSpent { message: String, retry_ms: u64 },
    /// A resource's region is down: 503 (body UNCONFIRMED).
    Unavailable,
    /// Injected: Azure's capacity is short ("experiencing high demand"), whatever the quota.
    HighDemand,
    /// Injected: prompt blocked by the content filter.
    ContentFilter,
    /// Injected: 500.
    ServerError,
    /// Injected: key-based auth disabled on the resource.
    KeyAuthDisabled,
    /// An `x-emulator-fault` value the emulator does not know.
    UnknownFault { value: String },
    /// A Claude deployment called on an OpenAI route (docs/azure-facts.md §7).
    ApiNotSupported,
    /// A refusal of the Claude Messages API in Anthropic's shape,
    /// `{"type":"error","error":{"type":KIND,"message":…}}`.
    Anthropic {
        status: StatusCode,
        /// Anthropic's error type: `invalid_request_error`, `not_found_error`, `rate_limit_error`,
        /// `overloaded_error`, `api_error`, …
        kind: &'static str,
        message: String,
    },
}

impl FoundryError {
    /// Anthropic's 400 `invalid_request_error`.
    pub(crate) fn anthropic_invalid(message: impl Into<String>) -> FoundryError {
        FoundryError::Anthropic {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
        }
    }

    /// Anthropic's 404 `not_found_error` for a `model` that names no Claude deployment.
    pub(crate) fn anthropic_model_not_found(model: &str) -> FoundryError {
        FoundryError::Anthropic {
            status: StatusCode::NOT_FOUND,
            kind: "not_found_error",
            message: format!("model: {model}"),
        }
    }
}

impl FoundryError {
    /// Status and body, exactly as Azure sends them.
    pub(crate) fn parts(&self) -> (StatusCode, Value) {
        use FoundryError as E;
        let wrapped =
            |code: &str, message: &str| json!({"error": {"code": code, "message": message}});
        match self {
            E::ResourceNotFound => (StatusCode::NOT_FOUND, wrapped("404", "Resource not found")),
            E::ApiVersionNotSupported => (
                StatusCode::BAD_REQUEST,
                wrapped("BadRequest", "API version not supported"),
            ),
            E::Unauthorized(kind) => (
                StatusCode::UNAUTHORIZED,
                json!({"statusCode": 401, "message": kind.unauthorized_message()}),
            ),
            E::InvalidSubscriptionKey => (
                StatusCode::UNAUTHORIZED,
                wrapped(
                    "401",
                    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
                ),
            ),
            E::TenantMismatch { tid } => (
                StatusCode::BAD_REQUEST,
                wrapped(
                    "Tenant provided in token does not match resource token",
                    &format!("Token tenant {tid} does not match resource tenant."),
                ),
            ),
            E::PermissionDenied {
                oid,
                data_action,
                operation,
                foundry_hint,
            } => (
                StatusCode::UNAUTHORIZED,
                wrapped(
                    "PermissionDenied",
                    &format!(
                        "The principal `{oid}` lacks the required data action `{data_action}` to perform `{operation}` operation.{}",
                        if *foundry_hint {
                            FOUNDRY_PERMISSIONS_HINT
                        } else {
                            ""
                        }
                    ),
                ),
            ),
            E::PermissionDeniedLegacy => (
                StatusCode::UNAUTHORIZED,
                wrapped(
                    "PermissionDenied",
                    "Principal does not have access to API/Operation.",
                ),
            ),
            E::RegionalEndpoint => (
                StatusCode::BAD_REQUEST,
                wrapped(
                    "BadRequest",
                    "Please provide a custom subdomain for token authentication, otherwise API key is required.",
                ),
            ),
            E::NetworkRules => (
                StatusCode::FORBIDDEN,
                wrapped(
                    "403",
                    "Access denied due to Virtual Network/Firewall rules.",
                ),
            ),
            E::VnetEndpoint => (
                StatusCode::FORBIDDEN,
                wrapped(
                    "403",
                    "A Virtual Network is configured for this resource. Please use the correct endpoint for making requests. Check https://aka.ms/cogsvc-vnet for more details.",
                ),
            ),
            E::PrivateEndpoint => (
                StatusCode::FORBIDDEN,
                wrapped("403", "Traffic is not from an approved private endpoint."),
            ),
            E::ApiVersionTooOld { model } => (
                StatusCode::BAD_REQUEST,
                wrapped(
                    "BadRequest",
                    &format!(
                        "Model {model} is enabled only for api versions 2024-12-01-preview and later"
                    ),
                ),
            ),
            E::ParameterNotSupported => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({
                    "status": 422,
                    "code": "parameter_not_supported",
                    "detail": {"loc": ["body", "response_format"], "input": "json_object"},
                    "message": "One of the parameters contain invalid values."
                }),
            ),
            E::DeploymentNotFound => (
                StatusCode::NOT_FOUND,
                wrapped(
                    "DeploymentNotFound",
                    "The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again.",
                ),
            ),
            E::UnknownModel { model } => {
                let message = format!("Unknown model: {model}");
                (
                    StatusCode::NOT_FOUND,
                    json!({"error": {"code": "unknown_model", "message": message, "details": message}}),
                )
            }
            E::NoModelName => {
                let message = "No model specified in request. Please provide a model name in the request body or as a x-ms-model-mesh-model-name header.";
                (
                    StatusCode::BAD_REQUEST,
                    json!({"error": {"code": "no_model_name", "message": message, "details": message}}),
                )
            }
            E::ModelRequired => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"message": "you must provide a model parameter", "type": "invalid_request_error", "param": null, "code": null}}),
            ),
            E::OperationNotSupported { op, model } => (
                StatusCode::BAD_REQUEST,
                wrapped(
                    "OperationNotSupported",
                    &format!(
                        "The {op} operation does not work with the specified model, {model}. Please choose different model and try again. You can learn more about which models can be used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993."
                    ),
                ),
            ),
            E::BadRequest { message } => (
                StatusCode::BAD_REQUEST,
                json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
            ),
            E::ProjectNotFound { project } => (
                StatusCode::NOT_FOUND,
                // docs/azure-facts.md §7: the body of this 404 is UNCONFIRMED.
                wrapped(
                    "NotFound",
                    &format!("Project '{project}' was not found on this resource."),
                ),
            ),
            E::RateLimited { message } => (StatusCode::TOO_MANY_REQUESTS, wrapped("429", message)),
            E::QuotaSpent { message, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, wrapped("429", message))
            }
            // docs/azure-facts.md §7: the body of a regional outage's 503 is UNCONFIRMED.
            E::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                wrapped(
                    "ServiceUnavailable",
                    "The service is temporarily unable to process your request. Please try again later.",
                ),
            ),
            // docs/azure-facts.md §7: wording from users' reports; the envelope and code are
            // assumed to be the quota 429's (UNCONFIRMED).
            E::HighDemand => (
                StatusCode::TOO_MANY_REQUESTS,
                wrapped("429", HIGH_DEMAND_MESSAGE),
            ),
            E::ContentFilter => (StatusCode::BAD_REQUEST, content_filter_body()),
            E::ServerError => (
                StatusCode::INTERNAL_SERVER_ERROR,
                wrapped(
                    "InternalServerError",
                    "The server had an error while processing your request. Sorry about that!",
                ),
            ),
            E::KeyAuthDisabled => (
                StatusCode::FORBIDDEN,
                wrapped(
                    "AuthenticationTypeDisabled",
                    "Key based authentication is disabled for this resource.",
                ),
            ),
            E::ApiNotSupported => (
                StatusCode::NOT_FOUND,
                json!({"error": {"code": "api_not_supported", "message": "Requested API is currently not supported"}}),
            ),
            E::Anthropic {
                status,
                kind,
                message,
            } => (
                *status,
                json!({"type": "error", "error": {"type": kind, "message": message}}),
            ),
            E::UnknownFault { value } => (
                StatusCode::BAD_REQUEST,
                wrapped(
                    "EmulatorUnknownFault",
                    &format!(
                        "unknown x-emulator-fault '{value}'; known: {}",
                        super::fault::known_names()
                    ),
                ),
            ),
        }
    }
}

impl IntoResponse for FoundryError {
    fn into_response(self) -> Response {
        let (status, body) = self.parts();
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            // Both 429s carry `retry-after` and `retry-after-ms` (docs/azure-facts.md §4, §7);
            // only the quota one has spent the deployment's limits, so only it shows zero
            // remaining (the capacity one gets the ordinary values in the handler).
            FoundryError::RateLimited { .. } => {
                retry_headers(headers, QUOTA_RETRY_SECS);
                for name in [
                    "x-ratelimit-remaining-requests",
                    "x-ratelimit-remaining-tokens",
                ] {
                    headers.insert(name, axum::http::HeaderValue::from_static("0"));
                }
            }
            FoundryError::QuotaSpent { retry_ms, .. } => {
                let secs = u32::try_from(retry_ms.div_ceil(1000)).unwrap_or(u32::MAX);
                retry_headers(headers, secs.max(1));
                headers.insert("retry-after-ms", axum::http::HeaderValue::from(retry_ms));
                for name in [
                    "x-ratelimit-remaining-requests",
                    "x-ratelimit-remaining-tokens",
                ] {
                    headers.insert(name, axum::http::HeaderValue::from_static("0"));
                }
            }
            FoundryError::HighDemand => retry_headers(headers, HIGH_DEMAND_RETRY_SECS),
            // Anthropic's 429 carries `retry-after`; the wait is the quota 429's (UNCONFIRMED).
            FoundryError::Anthropic {
                kind: "rate_limit_error",
                ..
            } => {
                retry_headers(headers, QUOTA_RETRY_SECS);
                for name in [
                    "x-ratelimit-remaining-requests",
                    "x-ratelimit-remaining-tokens",
                ] {
                    headers.insert(name, axum::http::HeaderValue::from_static("0"));
                }
            }
            FoundryError::NetworkRules => {
                // Observed with the firewall 403: names the gateway policy that refused.
                headers.insert(
                    "policy-id",
                    axum::http::HeaderValue::from_static("ThrowExceptionDueToTrafficDenied"),
                );
            }
            _ => {}
        }
        response
    }
}

/// `retry-after` (seconds) and `retry-after-ms`, which OpenAI's SDKs read first.
fn retry_headers(headers: &mut axum::http::HeaderMap, secs: u32) {
    headers.insert("retry-after", axum::http::HeaderValue::from(secs));
    headers.insert(
        "retry-after-ms",
        axum::http::HeaderValue::from(secs.saturating_mul(1000)),
    );
}

/// The 400 for a prompt the content filter blocked (docs/azure-facts.md §5, I19).
fn content_filter_body() -> Value {
    let safe = json!({"filtered": false, "severity": "safe"});
    json!({"error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766",
        "type": null,
        "param": "prompt",
        "code": "content_filter",
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": {
                "hate": safe,
                "jailbreak": {"filtered": false, "detected": false},
                "self_harm": safe,
                "sexual": safe,
                "violence": {"filtered": true, "severity": "medium"}
            }
        }
    }})
}
