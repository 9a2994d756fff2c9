//! One handler for every inference path, checking in Azure's order
//! (path and api-version, credential, tenant, role, deployment) before generating an answer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Bytes, to_bytes};
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::anthropic;
use super::auth;
use super::body::{self, Payload};
use super::chat;
use super::embeddings;
use super::error::FoundryError;
use super::fault::{self, Fault, Stage};
use super::media;
use super::responses;
use super::route::{self, Op, Route, Surface};
use crate::emulator::config::{DeploymentKind, DeploymentSpec, ResourceKind};
use crate::emulator::records::InferenceRecord;
use crate::emulator::resources::{self, ResourceFaultKind, ResourceSpec};
use crate::emulator::state::Emulator;
use crate::emulator::util::uuid;

/// Largest request body read (audio uploads can be big).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What the generators need to know about the request being answered.
#[derive(Debug)]
pub(crate) struct GenCtx<'a> {
    pub(crate) emu: &'a Arc<Emulator>,
    /// The deployment's underlying model name, reported in `model`.
    pub(crate) model: &'a str,
    /// `x-emulator-chunks`: how many content chunks to produce.
    pub(crate) chunks: Option<usize>,
    /// Delay between streamed frames.
    pub(crate) delay: Duration,
    /// `x-emulator-reset-after`: drop the connection after this many streamed frames.
    pub(crate) reset_after: Option<usize>,
}

/// Every request that is not for Entra or `/_emulator`.
pub(crate) async fn handle(State(emu): State<Arc<Emulator>>, request: Request) -> Response {
    if super::websocket::is_upgrade(request.headers()) {
        return super::websocket::handle(emu, request).await;
    }
    let (mut parts, body) = request.into_parts();
    // A named resource: `/resources/{name}/…` is that resource's Foundry surface.
    let resource = match resources::split(parts.uri.path()) {
        Some((name, rest)) => {
            let found = emu.config.resources.iter().find(|r| r.name == name);
            let rest = match parts.uri.query() {
                Some(query) => format!("{rest}?{query}"),
                None => rest.to_owned(),
            };
            if let Ok(uri) = rest.parse() {
                parts.uri = uri;
            }
            match found {
                Some(spec) => Some(spec),
                None => return FoundryError::ResourceNotFound.into_response(),
            }
        }
        None => None,
    };
    let (mut response, deployment, body_len) = match to_bytes(body, MAX_BODY).await {
        Ok(bytes) => {
            let len = bytes.len();
            let mut deployment = None;
            let response = serve(&emu, &parts, bytes, &mut deployment, resource)
                .await
                .unwrap_or_else(IntoResponse::into_response);
            (response, deployment, len)
        }
        Err(_) => {
            let body = json!({"error": {"code": "RequestEntityTooLarge", "message": "The request body is too large."}});
            (
                (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(body)).into_response(),
                None,
                0,
            )
        }
    };
    let region = resource
        .and_then(|r| r.region.as_deref())
        .unwrap_or(&emu.config.region);
    add_headers(region, &parts.headers, &mut response);
    record(
        &emu,
        &parts,
        deployment,
        body_len,
        response.status(),
        resource.map(|r| r.name.clone()),
    );
    tracing::debug!(path = %parts.uri.path(), status = response.status().as_u16(), "foundry request");
    response
}

async fn serve(
    emu: &Arc<Emulator>,
    parts: &Parts,
    bytes: Bytes,
    deployment_out: &mut Option<String>,
    resource: Option<&ResourceSpec>,
) -> Result<Response, FoundryError> {
    // A region that is down answers before anything else is looked at.
    let resource_fault = resource.and_then(|spec| emu.resource_fault(spec));
    if let Some(down) = resource_fault.as_ref().filter(|f| {
        matches!(
            f.kind,
            ResourceFaultKind::ServerError | ResourceFaultKind::Unavailable
        )
    }) {
        return Err(resources::fault_refusal(down, "", "", ""));
    }
    let estimate = bytes.len() as u64 / 4;
    let fault = fault::from_headers(&parts.headers)?;
    // Each fault is played at its stage, so the checks Azure runs before it still run first.
    refuse_at(fault, Stage::Edge)?;
    let api_version = parts.uri.query().and_then(api_version);
    let route = route::route(
        parts.method.as_str(),
        parts.uri.path(),
        api_version.as_deref(),
    )?;
    admit(emu, &parts.headers, &route, fault)?;

    let payload =
        body::parse(&parts.headers, bytes)
            .await
            .map_err(|e| match (route.surface, e) {
                // Anthropic's API words an unreadable body its own way.
                (Surface::Anthropic, FoundryError::BadRequest { message }) => {
                    FoundryError::anthropic_invalid(message)
                }
                (_, e) => e,
            })?;
    let deployments = resource
        .map(|r| r.deployments.as_slice())
        .filter(|list| !list.is_empty())
        .unwrap_or(&emu.config.deployments);
    let deployment = match route.op {
        Op::Models => None,
        _ => Some(resolve_deployment(deployments, &route, &payload)?),
    };
    *deployment_out = deployment.map(|d| d.name.clone());
    if let (Some(spec), Some(d)) = (resource, deployment) {
        let region = spec.region.as_deref().unwrap_or(&emu.config.region);
        if let Some(limited) = resource_fault {
            return Err(resources::fault_refusal(
                &limited, region, &d.name, &d.model,
            ));
        }
        // TPM is charged on admission from an estimate: the prompt and `max_tokens`
        // (docs/azure-facts.md §7).
        let body = payload.json();
        let max_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| body.get(*k).and_then(serde_json::Value::as_u64))
            .unwrap_or(0);
        if let Err(spent) = emu.charge_quota(spec, &d.name, estimate + max_tokens) {
            let wait_ms = u64::try_from(spent.wait.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            return Err(resources::quota_refusal(
                region, &d.name, &d.model, spent.kind, wait_ms,
            ));
        }
    }
    if let Some(f) = fault.filter(|f| f.stage() == Stage::Deployment) {
        return Err(deployment_fault(emu, f, &route, &payload, deployment));
    }
    let Some(deployment) = deployment else {
        return Ok(media::models(emu));
    };
    // Claude is served only on the Messages API: Azure's 404 on every OpenAI route (§7).
    if deployment.kind == DeploymentKind::Claude && route.surface != Surface::Anthropic {
        return Err(FoundryError::ApiNotSupported);
    }
    if route.op.kind() != Some(deployment.kind) {
        return Err(FoundryError::OperationNotSupported {
            op: route.op.short_name(),
            model: deployment.model.clone(),
        });
    }
    let ctx = GenCtx {
        emu,
        model: &deployment.model,
        chunks: header_num(&parts.headers, "x-emulator-chunks")
            .map(|n| n.clamp(1, 10_000) as usize),
        delay: Duration::from_millis(
            header_num(&parts.headers, "x-emulator-chunk-delay-ms")
                .unwrap_or(emu.config.stream_chunk_delay_ms)
                .min(60_000),
        ),
        reset_after: header_num(&parts.headers, "x-emulator-reset-after")
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    };
    let body = payload.json();
    Ok(match (route.op, &payload) {
        (Op::ChatCompletions, _) => chat::chat_completions(&ctx, body),
        (Op::Completions, _) => chat::completions(&ctx, body),
        (Op::Responses, _) => responses::responses(&ctx, body),
        (Op::Embeddings, _) => embeddings::embeddings(&ctx, body),
        (Op::ImagesGenerations, _) => media::image(&ctx, body, &image_base(&parts.headers))?,
        (Op::AudioTranscriptions, Payload::Multipart(form)) => {
            media::audio(form, media::AudioTask::Transcribe)?
        }
        (Op::AudioTranslations, Payload::Multipart(form)) => {
            media::audio(form, media::AudioTask::Translate)?
        }
        (Op::AudioTranscriptions | Op::AudioTranslations, _) => {
            return Err(FoundryError::BadRequest {
                message: format!(
                    "{} expects a multipart/form-data body",
                    route.op.short_name()
                ),
            });
        }
        (Op::Messages, _) => anthropic::messages(&ctx, body)?,
        (Op::CountTokens, _) => anthropic::count_tokens(body)?,
        (Op::Models, _) => media::models(emu),
        // Realtime is reached only by an upgrade (`websocket`); no HTTP path names it.
        (Op::Realtime, _) => return Err(FoundryError::ResourceNotFound),
    })
}

/// The refusal of `fault` when it is played at `stage` and needs nothing from the request.
pub(crate) fn refuse_at(fault: Option<Fault>, stage: Stage) -> Result<(), FoundryError> {
    match fault.filter(|f| f.stage() == stage) {
        Some(f) => f.fixed_refusal().map_or(Ok(()), Err),
        None => Ok(()),
    }
}

/// The checks between the route and the deployment, in Azure's order: the resource kind, the
/// route and credential faults, the credential, the project, the caller faults and the role.
/// Shared by every HTTP request and the WebSocket handshakes (`websocket`).
pub(crate) fn admit(
    emu: &Emulator,
    headers: &HeaderMap,
    route: &Route,
    fault: Option<Fault>,
) -> Result<(), FoundryError> {
    // A classic Azure OpenAI resource has no projects and no Claude (docs/azure-facts.md §7):
    // its gateway knows no such path.
    if matches!(route.surface, Surface::Project | Surface::Anthropic)
        && emu.resource_kind() == ResourceKind::OpenAi
    {
        return Err(FoundryError::ResourceNotFound);
    }
    refuse_at(fault, Stage::Route)?;
    refuse_at(fault, Stage::Credential)?;
    let claims = auth::authenticate(emu, headers, route.surface)?;
    // The project is looked up once the caller is known (the order is UNCONFIRMED,
    // docs/azure-facts.md §7); its roles are checked at the resource's scope below.
    if let Some(project) = route.project.as_deref()
        && !emu.config.has_project(project)
    {
        return Err(FoundryError::ProjectNotFound {
            project: project.to_owned(),
        });
    }
    match fault {
        Some(Fault::PermissionDenied) => return Err(auth::permission_denied(&claims, route.op)),
        Some(Fault::PermissionDeniedProject) => {
            return Err(auth::project_permission_denied(&claims, route.op));
        }
        Some(Fault::PermissionDeniedFoundry) => {
            return Err(auth::permission_denied_worded(&claims, route.op, true));
        }
        Some(Fault::PermissionDeniedLegacy) => return Err(FoundryError::PermissionDeniedLegacy),
        _ => {}
    }
    auth::authorize(emu, &claims, route)?;
    Ok(())
}

/// Finds the deployment a request addresses, refusing like the surface it came through.
pub(crate) fn resolve_deployment<'e>(
    deployments: &'e [DeploymentSpec],
    route: &Route,
    payload: &Payload,
) -> Result<&'e DeploymentSpec, FoundryError> {
    let by_name =
        |name: &str| resources::find(deployments, name).ok_or(FoundryError::DeploymentNotFound);
    match (
        route.surface,
        route.path_deployment.as_deref(),
        payload.model(),
    ) {
        // Anthropic's own answers for a missing or unknown model (Azure's: UNCONFIRMED, §7).
        (Surface::Anthropic, _, Some(name)) => resources::find(deployments, name)
            .filter(|d| d.kind == DeploymentKind::Claude)
            .ok_or_else(|| FoundryError::anthropic_model_not_found(name)),
        (Surface::Anthropic, _, None) => {
            Err(FoundryError::anthropic_invalid("model: Field required"))
        }
        (Surface::Deployments, Some(name), _) => by_name(name),
        (Surface::Models, _, Some(name)) => {
            resources::find(deployments, name).ok_or_else(|| FoundryError::UnknownModel {
                model: name.to_owned(),
            })
        }
        (Surface::Models, _, None) => Err(FoundryError::NoModelName),
        (Surface::Passthrough, _, None) => {
            // Serverless endpoints serve one model; stand in with the first one that fits the op.
            let kind = route.op.kind().unwrap_or(DeploymentKind::Chat);
            deployments
                .iter()
                .find(|d| d.kind == kind)
                .ok_or(FoundryError::DeploymentNotFound)
        }
        (_, _, Some(name)) => by_name(name),
        (_, _, None) => Err(FoundryError::ModelRequired),
    }
}

/// The refusal of a fault played once the deployment is known.
pub(crate) fn deployment_fault(
    emu: &Emulator,
    fault: Fault,
    route: &Route,
    payload: &Payload,
    deployment: Option<&DeploymentSpec>,
) -> FoundryError {
    if route.surface == Surface::Anthropic {
        // Refusals from behind the gateway come in Anthropic's shape (UNCONFIRMED, §7).
        let refusal = |status, kind, message: &str| FoundryError::Anthropic {
            status,
            kind,
            message: message.to_owned(),
        };
        match fault {
            Fault::RateLimit => {
                return refusal(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    &format!(
                        "Number of request tokens has exceeded your per-minute rate limit. Please retry after {} seconds.",
                        super::error::QUOTA_RETRY_SECS
                    ),
                );
            }
            Fault::HighDemand => {
                return refusal(
                    StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                    "overloaded_error",
                    "Overloaded",
                );
            }
            Fault::ServerError => {
                return refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "api_error",
                    "Internal server error",
                );
            }
            Fault::DeploymentNotFound | Fault::UnknownModel => {
                return FoundryError::anthropic_model_not_found(payload.model().unwrap_or("-"));
            }
            _ => {}
        }
    }
    match fault {
        Fault::RateLimit => rate_limited(emu, route, deployment),
        Fault::HighDemand => FoundryError::HighDemand,
        Fault::ContentFilter => FoundryError::ContentFilter,
        Fault::ServerError => FoundryError::ServerError,
        Fault::ApiVersionTooOld => FoundryError::ApiVersionTooOld {
            model: deployment.map_or("-", |d| d.model.as_str()).to_owned(),
        },
        Fault::ParameterNotSupported => FoundryError::ParameterNotSupported,
        Fault::UnknownModel => FoundryError::UnknownModel {
            // The name as the request gave it; the serverless stand-in has none, so its deployment's.
            model: route
                .path_deployment
                .as_deref()
                .or(payload.model())
                .or(deployment.map(|d| d.name.as_str()))
                .unwrap_or("-")
                .to_owned(),
        },
        Fault::DeploymentNotFound => FoundryError::DeploymentNotFound,
        // Earlier stages were played before the deployment lookup and never get here.
        other => other
            .fixed_refusal()
            .unwrap_or(FoundryError::DeploymentNotFound),
    }
}

fn rate_limited(
    emu: &Emulator,
    route: &Route,
    deployment: Option<&DeploymentSpec>,
) -> FoundryError {
    let (dep, model) = deployment.map_or(("-", "-"), |d| (d.name.as_str(), d.model.as_str()));
    let version = route.api_version.as_deref().unwrap_or("v1");
    FoundryError::RateLimited {
        message: format!(
            "Your requests to {dep} for {model} in {} have exceeded the token rate limit for your current AIServices S0 pricing tier. This request was for {} under Azure OpenAI API version {version}. Please retry after {} seconds.",
            emu.config.region,
            route.op.operation_id(),
            super::error::QUOTA_RETRY_SECS,
        ),
    }
}

/// `api-version` from a raw query string.
fn api_version(query: &str) -> Option<String> {
    crate::emulator::util::parse_form(query.as_bytes())
        .into_iter()
        .find(|(k, _)| k == "api-version")
        .map(|(_, v)| v)
}

/// Where generated image URLs point: this emulator, as the request addressed it (through a
/// proxy, the Host the proxy used), so a client can fetch them.
fn image_base(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

pub(crate) fn header_num(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Headers every Foundry answer carries.
pub(crate) fn add_headers(region: &str, request: &HeaderMap, response: &mut Response) {
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&uuid()) {
        headers.insert("apim-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(region) {
        headers.insert("x-ms-region", v);
    }
    // The quota 429 has set its spent values already; every other answer, the capacity 429
    // included, shows limits with room left (docs/azure-facts.md §4, §7).
    for (name, value) in [
        ("x-ratelimit-limit-requests", "1000"),
        ("x-ratelimit-limit-tokens", "150000"),
        ("x-ratelimit-remaining-requests", "999"),
        ("x-ratelimit-remaining-tokens", "149000"),
    ] {
        if !headers.contains_key(name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if let Some(id) = request.get("x-ms-client-request-id") {
        headers.insert("x-ms-client-request-id", id.clone());
    }
}

pub(crate) fn record(
    emu: &Emulator,
    parts: &Parts,
    deployment: Option<String>,
    body_len: usize,
    status: StatusCode,
    resource: Option<String>,
) {
    let token = auth::bearer(&parts.headers);
    let (token_appid, token_oid) = token.map(auth::peek_identity).unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = match name.as_str() {
                "authorization" if token.is_some() => "Bearer <redacted>".to_owned(),
                "authorization" | "api-key" | "x-api-key" => "<redacted>".to_owned(),
                _ => String::from_utf8_lossy(value.as_bytes()).into_owned(),
            };
            (name.as_str().to_owned(), shown)
        })
        .collect();
    emu.record_inference(InferenceRecord {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers,
        authorization_present: parts.headers.contains_key("authorization"),
        token_appid,
        token_oid,
        deployment,
        body_len,
        status: status.as_u16(),
        resource,
    });
}
