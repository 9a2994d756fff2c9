//! The forwarding handler: one inbound `/v1/...` request → one upstream request with the
//! proxy's token, the answer streamed back; a 401/403 gets one forced token refresh and
//! one retry, then an explanation.

pub mod headers;
pub mod model;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use tracing::{info, warn};

use crate::diagnose::{self, DiagnosisContext};
use crate::error::ApiError;
use crate::keys::{self, KeyEntry, KeyStore};
use crate::server::BodyReadTimeout;
use crate::telemetry;
use crate::limits::{Decision, Exceeded, KeyLimits, Limiter};
use crate::metrics::{self, Metrics, RequestRecord};
use crate::request_id;
use crate::token::{HeldToken, TokenCell};
use crate::upstream::{RouteError, Target, UpstreamClient};
use crate::usage;

/// Request bodies up to this size are held in memory so a 401 can be retried with a fresh
/// token; larger ones stream straight through (and are not retried).
const REPLAY_LIMIT: usize = 16 * 1024 * 1024;
/// Largest refusal body read for diagnosis (Azure's are a few hundred bytes).
const REFUSAL_BODY_LIMIT: usize = 256 * 1024;
/// Upstream response headers copied onto the proxy's own error answers, for support cases.
const CORRELATION_HEADERS: [&str; 4] = [
    "apim-request-id",
    "x-ms-region",
    "x-request-id",
    "x-ms-client-request-id",
];

/// What the handler shares across requests.
#[derive(Debug)]
pub struct ProxyState {
    /// Where requests go.
    pub target: Target,
    /// The token cell (read-only here).
    pub tokens: Arc<TokenCell>,
    /// The pooled outbound client.
    pub client: UpstreamClient,
    /// What diagnosis needs from the configuration.
    pub diagnosis: DiagnosisContext,
    /// Largest accepted request body.
    pub max_body: usize,
    /// Time allowed for upstream response headers.
    pub upstream_timeout: Duration,
    /// Access keys; `None` when callers are not authenticated.
    pub keys: Option<Arc<KeyStore>>,
    /// Per-key limits state.
    pub limiter: Arc<Limiter>,
    /// Prometheus metrics and usage.
    pub metrics: Arc<Metrics>,
}

/// What the handler learned about a request, for its log line and metrics.
#[derive(Debug, Default)]
struct Observed {
    model: Option<String>,
    upstream: Option<Duration>,
}

/// Who a request's log lines are about: every line of a request carries both (as fields of
/// the line itself, not of a span: a span per request cost a fifth of the request path).
#[derive(Debug, Clone, Copy)]
struct Tag<'a> {
    request_id: &'a str,
    key: &'a str,
}

/// The request body as sent upstream.
enum OutboundBody {
    /// Held in memory: cheap to send again.
    Buffered(Bytes),
    /// Streamed through once.
    Streaming(Body),
}

/// Forwards `/v1/{rest}` upstream. Every outcome is one log line and one metrics record.
///
/// It is the router's fallback: any other path is answered 404 `unknown_path` here. Either way
/// the response carries the request's `x-request-id`.
pub async fn forward(State(state): State<Arc<ProxyState>>, mut request: Request) -> Response {
    let id = request_id::ensure(&mut request);
    let mut response = forward_with_id(&state, request, &id).await;
    response
        .headers_mut()
        .entry(request_id::HEADER)
        .or_insert(id);
    response
}

async fn forward_with_id(state: &Arc<ProxyState>, request: Request, id: &HeaderValue) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    // Clones share the request's bytes: no allocation for the log line.
    let uri = request.uri().clone();
    let path = uri.path();
    let request_id = id.to_str().unwrap_or("");
    if !path.starts_with("/v1/") {
        return diagnose::proxy_refusal("unknown_path", &diagnose::catalog::Vars::new())
            .into_response();
    }
    if !FORWARDED_METHODS.contains(&method) {
        info!(method = %method, path = %telemetry::loggable(path), status = 405, request_id = %request_id, "request refused: method not forwarded");
        return method_not_allowed(&method);
    }
    let key = match keys::authenticate(state.keys.as_deref(), request.headers()) {
        Ok(key) => key,
        Err(error) => {
            let response = error.into_response();
            info!(method = %method, path = %telemetry::loggable(path), status = response.status().as_u16(), request_id = %request_id, "request refused: no valid access key");
            return response;
        }
    };
    let key_name = key.as_ref().map_or("", |k| k.name.as_str());
    let tag = Tag {
        request_id,
        key: key_name,
    };
    let mut observed = Observed::default();
    let outcome = forward_request(state, request, key.as_ref(), tag, &mut observed).await;
    let response = outcome.unwrap_or_else(IntoResponse::into_response);
    let route = metrics::route_label(path.strip_prefix("/v1/").unwrap_or(path));
    let status = response.status().as_u16();
    state.metrics.record_request(&RequestRecord {
        route: &route,
        status,
        model: observed.model.as_deref().unwrap_or(""),
        key: key_name,
        upstream_latency: observed.upstream,
    });
    info!(
        method = %method,
        path = %telemetry::loggable(path),
        status,
        model = observed.model.as_deref().unwrap_or(""),
        upstream_ms = observed.upstream.map(|d| d.as_millis() as u64),
        total_ms = started.elapsed().as_millis() as u64,
        request_id = %tag.request_id,
        key = %tag.key,
        "request"
    );
    response
}

/// The methods of the HTTP APIs behind the proxy. Anything else is refused, not forwarded:
/// TRACE would have a server echo the request, the proxy's token included; CONNECT asks for a
/// tunnel; unknown tokens have no meaning for Azure.
const FORWARDED_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// 405 in the OpenAI shape, with the methods that are forwarded in `Allow`.
fn method_not_allowed(method: &Method) -> Response {
    let mut error = refuse("method_not_allowed", method.as_str());
    error.kind = "invalid_request_error";
    error.headers.insert(
        http::header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    error.into_response()
}

/// Counts the request against its key's limits, or answers 429 with `retry-after`.
fn admit(state: &ProxyState, key: &KeyEntry) -> Result<(), ApiError> {
    let limits = KeyLimits {
        requests_per_minute: key.limits.requests_per_minute.map(u64::from),
        tokens_per_minute: key.limits.tokens_per_minute,
    };
    match state
        .limiter
        .admit(&key.name, limits, tokio::time::Instant::now())
    {
        Decision::Allow => Ok(()),
        Decision::Deny {
            exceeded,
            limit,
            retry_after,
        } => {
            let code = match exceeded {
                Exceeded::Requests => "rate_limit_exceeded",
                Exceeded::Tokens => "token_limit_exceeded",
            };
            let vars = diagnose::catalog::Vars::new()
                .set("detail", key.name.clone())
                .set("limit", limit.to_string());
            let mut error = diagnose::proxy_refusal(code, &vars);
            error.retry_after = Some(retry_after.as_secs().max(1));
            Err(error)
        }
    }
}

/// True when the upstream surface accepts `stream_options` (the v1 API, and dated versions
/// from 2024-09-01 on): only then does the proxy ask for usage in streams.
fn can_request_stream_usage(target: &Target) -> bool {
    match target.style() {
        crate::upstream::ApiStyle::OpenAiV1 => true,
        crate::upstream::ApiStyle::Deployments => {
            target.api_version().is_some_and(|v| v >= "2024-09-01")
        }
        _ => false,
    }
}

async fn forward_request(
    state: &ProxyState,
    request: Request,
    key: Option<&Arc<KeyEntry>>,
    tag: Tag<'_>,
    observed: &mut Observed,
) -> Result<Response, ApiError> {
    if let Some(key) = key {
        admit(state, key)?;
    }
    let (mut parts, body) = request.into_parts();
    let rest = parts.uri.path().strip_prefix("/v1/").unwrap_or_default();
    let content_length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if content_length.is_some_and(|n| n > state.max_body as u64) {
        return Err(too_large(state.max_body));
    }

    let needs_model = state.target.needs_model(rest) && parts.method != Method::GET;
    let body = if needs_model || content_length.is_none_or(|n| n <= REPLAY_LIMIT as u64) {
        OutboundBody::Buffered(read_body(body, state.max_body).await?)
    } else {
        OutboundBody::Streaming(body)
    };
    let mut body = body;
    // One pass over the body reads `model` and whether a stream was asked for.
    let facts = match &body {
        OutboundBody::Buffered(bytes) if needs_model => {
            model::read_facts(&parts.headers, bytes).await?
        }
        // Other styles only read `model` for aliases, metrics and explanations: a body that is
        // not JSON is Azure's to refuse, not the proxy's.
        OutboundBody::Buffered(bytes) if is_json(&parts.headers) => {
            model::json_facts(bytes).unwrap_or_default()
        }
        _ => model::BodyFacts::default(),
    };
    let model = facts.model;
    observed.model.clone_from(&model);
    if rest == "models" && parts.method == Method::GET && !state.target.aliases().is_empty() {
        return Ok(model::alias_list(state.target.aliases()));
    }
    let mut ask_stream_usage = false;
    if let OutboundBody::Buffered(bytes) = &body {
        // In the deployments style the alias picks the URL; elsewhere `model` itself must name
        // the deployment, so the body is rewritten (only when an alias matches).
        let rewrite = state.target.style() != crate::upstream::ApiStyle::Deployments;
        let mut rewritten = model
            .as_deref()
            .and_then(|name| state.target.alias(name))
            .filter(|_| rewrite)
            .and_then(|deployment| model::with_model(bytes, deployment));
        // Ask for usage in streams (stripped again before the client sees it), so streamed
        // tokens count against the key's limits and in the usage metrics.
        if matches!(rest, "chat/completions" | "completions")
            && can_request_stream_usage(&state.target)
        {
            let current = rewritten.as_ref().unwrap_or(bytes);
            if let Some(with_usage) = usage::request_usage_in_known_stream(
                current,
                facts.stream,
                facts.has_stream_options,
                facts.usage_asked,
            ) {
                rewritten = Some(with_usage);
                ask_stream_usage = true;
            }
        }
        if let Some(rewritten) = rewritten {
            parts.headers.insert(CONTENT_LENGTH, rewritten.len().into());
            body = OutboundBody::Buffered(rewritten);
        }
    }
    let uri = state
        .target
        .uri(rest, parts.uri.query(), model.as_deref())
        .map_err(route_error)?;

    let token = state
        .tokens
        .usable_token()
        .await
        .map_err(|why| diagnose::no_token(&state.diagnosis, &why))?;

    let mut headers = parts.headers;
    headers::prepare_request_headers(&mut headers);
    // Compressed answers could not be read for `usage` on their way through; the hop to
    // Azure is not where bandwidth matters.
    headers.remove(http::header::ACCEPT_ENCODING);
    let method = parts.method;

    let upstream_started = Instant::now();
    let replay = match &body {
        OutboundBody::Buffered(bytes) => Some(bytes.clone()),
        OutboundBody::Streaming(_) => None,
    };
    let first_body = match body {
        OutboundBody::Buffered(bytes) => Body::from(bytes),
        OutboundBody::Streaming(stream) => stream,
    };
    let request = build_request(&method, &uri, &headers, &token, first_body);
    let mut response = send(state, tag, request).await?;
    let mut token = token;

    if let Some(bytes) = replay.as_ref().filter(|_| is_refusal(response.status())) {
        // Read the refusal first: it is needed if no fresher token can be had, and reading
        // it returns the connection to the pool.
        let (parts, incoming) = response.into_parts();
        let refusal = read_limited(incoming, REFUSAL_BODY_LIMIT)
            .await
            .unwrap_or_default();
        let Some(fresh) = state.tokens.refreshed_after(token.serial).await else {
            observed.upstream = Some(upstream_started.elapsed());
            return Ok(explain_refusal(
                state,
                tag,
                parts,
                refusal,
                &token,
                model.as_deref(),
            ));
        };
        info!(
            status = parts.status.as_u16(),
            request_id = %tag.request_id,
            key = %tag.key,
            "retrying with a refreshed token"
        );
        token = fresh;
        response = send(
            state,
            tag,
            build_request(&method, &uri, &headers, &token, Body::from(bytes.clone())),
        )
        .await?;
    }
    let upstream_elapsed = upstream_started.elapsed();
    observed.upstream = Some(upstream_elapsed);

    let status = response.status();
    if is_refusal(status) || (diagnose::worth_reading(status) && is_small_json(response.headers()))
    {
        let (parts, incoming) = response.into_parts();
        let bytes = read_limited(incoming, REFUSAL_BODY_LIMIT)
            .await
            .unwrap_or_default();
        return Ok(explain_refusal(
            state,
            tag,
            parts,
            bytes,
            &token,
            model.as_deref(),
        ));
    }

    let (mut parts, incoming) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let kind = usage::BodyKind::from_headers(&parts.headers);
    let strip = ask_stream_usage && kind == usage::BodyKind::Sse;
    if strip {
        // The stripped stream is shorter than what Azure announced.
        parts.headers.remove(CONTENT_LENGTH);
    }
    let stream_guard = (kind == usage::BodyKind::Sse).then(|| {
        state
            .metrics
            .record_ttfb(&metrics::route_label(rest), upstream_elapsed.as_secs_f64());
        state.metrics.stream_started()
    });
    let on_done = {
        let limiter = Arc::clone(&state.limiter);
        let metrics = Arc::clone(&state.metrics);
        let key = key.map(Arc::clone);
        let model = model.unwrap_or_default();
        move |seen: Option<usage::Usage>, _ending: usage::Ending| {
            drop(stream_guard);
            if let Some(seen) = seen {
                let key_name = key.as_ref().map_or("", |k| k.name.as_str());
                if !key_name.is_empty() {
                    limiter.add_tokens(key_name, seen.total(), tokio::time::Instant::now());
                }
                metrics.record_usage(key_name, &model, seen.prompt_tokens, seen.completion_tokens);
            }
        }
    };
    let body = usage::observe(Body::new(incoming), kind, strip, on_done);
    Ok(Response::from_parts(parts, body))
}

/// Answers a refusal whose body has been read: explained when diagnosis knows it, else
/// passed on byte for byte.
fn explain_refusal(
    state: &ProxyState,
    tag: Tag<'_>,
    parts: http::response::Parts,
    body: Bytes,
    token: &HeldToken,
    model: Option<&str>,
) -> Response {
    let facts = diagnose::RequestFacts { model };
    if let Some(mut explained) = diagnose::upstream_refusal(
        &state.diagnosis,
        parts.status,
        &body,
        token.claims.as_ref(),
        facts,
    ) {
        warn!(
            status = parts.status.as_u16(),
            code = explained.code,
            request_id = %tag.request_id,
            key = %tag.key,
            "upstream refused"
        );
        copy_correlation_headers(&parts.headers, &mut explained.headers);
        return explained.into_response();
    }
    let mut response = Response::from_parts(parts, Body::from(body));
    headers::strip_hop_by_hop(response.headers_mut());
    // The body may have been cut at the read limit; let the server frame what is sent.
    response.headers_mut().remove(CONTENT_LENGTH);
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

fn is_refusal(status: StatusCode) -> bool {
    status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN
}

/// 400s worth reading for diagnosis: small JSON bodies (a content-filter 400 is JSON too; it
/// is read, not recognised, and passed on byte for byte).
fn is_small_json(headers: &HeaderMap) -> bool {
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    let small = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n <= REFUSAL_BODY_LIMIT);
    json && small
}

fn build_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    token: &HeldToken,
    body: Body,
) -> http::Request<Body> {
    let mut request = http::Request::new(body);
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    // A clone copies the map's tables whole; values are shared, not copied.
    let mut outbound = headers.clone();
    outbound.insert(AUTHORIZATION, token.header.clone());
    *request.headers_mut() = outbound;
    request
}

async fn send(
    state: &ProxyState,
    tag: Tag<'_>,
    request: http::Request<Body>,
) -> Result<http::Response<hyper::body::Incoming>, ApiError> {
    match tokio::time::timeout(state.upstream_timeout, state.client.request(request)).await {
        Ok(Ok(response)) => Ok(response),
        // A streamed request body that stopped arriving is the client's failure, not Azure's.
        Ok(Err(error)) => Err(BodyReadTimeout::find(&error).map_or_else(
            || upstream_unreachable(state, tag, &error),
            BodyReadTimeout::refusal,
        )),
        Err(_) => {
            let vars = state
                .diagnosis
                .vars()
                .set("detail", state.upstream_timeout.as_secs().to_string());
            Err(diagnose::proxy_refusal("upstream_timeout", &vars))
        }
    }
}

fn upstream_unreachable(
    state: &ProxyState,
    tag: Tag<'_>,
    error: &hyper_util::client::legacy::Error,
) -> ApiError {
    let mut cause = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause.push_str(": ");
        cause.push_str(&inner.to_string());
        source = inner.source();
    }
    warn!(error = %cause, request_id = %tag.request_id, key = %tag.key, "upstream request failed");
    diagnose::proxy_refusal(
        "upstream_unreachable",
        &state.diagnosis.vars().set("detail", cause),
    )
}

async fn read_body(body: Body, max: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large(max)),
        Err(error) => Err(BodyReadTimeout::find(&*error).map_or_else(
            || refuse("unreadable_body", error.to_string()),
            BodyReadTimeout::refusal,
        )),
    }
}

async fn read_limited(body: hyper::body::Incoming, max: usize) -> Option<Bytes> {
    Limited::new(body, max)
        .collect()
        .await
        .ok()
        .map(http_body_util::Collected::to_bytes)
}

/// One of the proxy's own refusals, with `detail` filled in.
pub(crate) fn refuse(code: &'static str, detail: impl Into<String>) -> ApiError {
    diagnose::proxy_refusal(code, &diagnose::catalog::Vars::new().set("detail", detail))
}

fn too_large(max: usize) -> ApiError {
    diagnose::proxy_refusal(
        "request_too_large",
        &diagnose::catalog::Vars::new().set("max_body", max.to_string()),
    )
}

fn route_error(error: RouteError) -> ApiError {
    match error {
        RouteError::MissingModel => refuse("missing_model", ""),
        RouteError::BadModel(model) => refuse("invalid_model", model.escape_debug().to_string()),
        RouteError::BadPath(path) => refuse("invalid_path", format!("/v1/{}", path.escape_debug())),
    }
}

fn copy_correlation_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for name in CORRELATION_HEADERS {
        if let Some(value) = from.get(name) {
            to.insert(HeaderName::from_static(name), value.clone());
        }
    }
}
