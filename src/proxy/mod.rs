//! The forwarding handler: one inbound `/v1/...` request → one upstream request with the
//! proxy's token, the answer streamed back; a 401/403 gets one forced token refresh and
//! one retry, then an explanation.
//!
//! The request goes through named phases (listed on `forward_with_id`): admit, prepare, send
//! with the one retry, explain or stream back, record. Each later phase takes the previous
//! one's product (`Outbound`, `UpstreamRequest`, `Sent`), not the inbound request, so another
//! inbound dialect needs its own admit and prepare steps and reuses the rest.

mod account;
pub(crate) mod admission;
pub mod dialect;
mod failover;
pub mod headers;
mod key_rules;
pub mod model;
pub mod websocket;

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

use crate::diagnose::RefusalCode;
use crate::diagnose::{self, DiagnosisContext};
use crate::error::ApiError;
use crate::keys::{self, KeyEntry, KeyStore};
use crate::limits::Limiter;
use crate::metrics::{self, Metrics, RequestRecord};
use crate::request_id;
use crate::server::BodyReadTimeout;
use crate::telemetry;
use crate::token::{HeldToken, TokenCell};
use crate::upstream::{Dialect, Route, RouteError, Target, UpstreamClient};
use crate::usage;
use dialect::PathProblem;

/// Request bodies up to this size are held in memory so a 401 can be retried with a fresh
/// token; larger ones stream straight through (and are not retried).
const REPLAY_LIMIT: usize = 16 * 1024 * 1024;
/// Largest refusal body read for diagnosis (Azure's are a few hundred bytes).
const REFUSAL_BODY_LIMIT: usize = 256 * 1024;
/// Upstream response headers copied onto the proxy's own explanations of Azure's answers: for
/// support cases, and so a client still sees when to retry and what is left of its quota.
const CORRELATION_HEADERS: [&str; 11] = [
    "apim-request-id",
    "x-ms-region",
    "x-request-id",
    "x-ms-client-request-id",
    "retry-after",
    "retry-after-ms",
    "x-ms-retry-after-ms",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
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
    /// Per-key budget spend (day, month).
    pub budgets: Arc<crate::budget::Budgets>,
    /// What models' tokens cost, for dollar budgets (shared: every answer's usage sink holds it).
    pub prices: Arc<crate::config::Prices>,
    /// The usage ledger (`FOUNDRY_PROXY_USAGE_DB`); `None` keeps usage in memory only.
    pub ledger: Option<Arc<crate::ledger::Ledger>>,
    /// Limits, budgets and usage shared with other replicas (`FOUNDRY_PROXY_REDIS_URL`);
    /// `None` keeps them in this process.
    pub shared: Option<Arc<crate::shared::Shared>>,
    /// Prometheus metrics and usage.
    pub metrics: Arc<Metrics>,
    /// WebSocket limits, the shutdown signal and the open sockets.
    pub websockets: websocket::Sockets,
    /// Several upstreams (`[[upstream]]`), with failover; `None` sends everything to `target`.
    pub pool: Option<Arc<crate::pool::Pool>>,
}

/// What the handler learned about a request, for its log line and metrics.
#[derive(Debug, Default)]
struct Observed {
    model: Option<String>,
    upstream: Option<Duration>,
    /// The upstream and deployment that answered, with several upstreams.
    via: Option<(String, String)>,
}

/// Who a request's log lines are about: every line of a request carries both (as fields of
/// the line itself, not of a span: a span per request cost a fifth of the request path).
#[derive(Debug, Clone, Copy)]
struct Tag<'a> {
    request_id: &'a str,
    key: &'a str,
}

/// An admitted request as the phases see it. Everything is borrowed from the request or its
/// key: nothing here is allocated per request.
#[derive(Debug, Clone, Copy)]
struct Exchange<'a> {
    /// When the request arrived: the start of its total time and of a stream's time to first
    /// byte.
    started: Instant,
    /// What the path asks for, in whichever dialect it was written.
    route: Route<'a>,
    /// The operation as a metrics label ([`metrics::route_label`]).
    label: &'a str,
    /// The caller's key; `None` when callers are not authenticated.
    key: Option<&'a Arc<KeyEntry>>,
    /// For log lines.
    tag: Tag<'a>,
}

/// The request body as sent upstream.
enum OutboundBody {
    /// Held in memory: cheap to send again.
    Buffered(Bytes),
    /// Streamed through once.
    Streaming(Body),
}

/// The upstream request, but for its token (each attempt adds its own).
struct UpstreamRequest {
    method: Method,
    uri: Uri,
    /// The caller's headers, prepared for the hop to Azure.
    headers: HeaderMap,
    body: OutboundBody,
}

/// A prepared request and what its answer needs to know about it.
struct Outbound {
    request: UpstreamRequest,
    /// The `model` the caller's body names (before aliasing), for usage and explanations.
    model: Option<String>,
    /// The proxy asked for usage in the stream: its usage event is taken out again.
    ask_stream_usage: bool,
}

/// What preparing a request came to.
enum Prepared {
    /// Answered by the proxy itself (the model list, when aliases are configured).
    Answered(Response),
    /// To be sent upstream.
    Outbound(Outbound),
}

/// What the upstream answered, after the retry if there was one.
struct Sent {
    answer: Answer,
    /// The token of the last attempt: its claims explain a refusal.
    token: Arc<HeldToken>,
}

/// The upstream's answer.
enum Answer {
    /// Headers received; the body is still to be read or streamed.
    Response(http::Response<hyper::body::Incoming>),
    /// A 401/403, already read, that no fresher token could get past.
    Refused(http::response::Parts, Bytes),
}

/// Forwards a request in any inbound dialect ([`dialect`]) upstream. Every outcome is one log
/// line and one metrics record.
///
/// It is the router's fallback: a path no dialect has is answered 404 `unknown_path` here. Either way
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

/// The request path, phase by phase:
/// 1. [`admit`]: a `/v1/` path, a forwarded method, a valid key, then ([`within_limits`]) the
///    key's limits;
/// 2. [`prepare`]: the body read as far as needed, aliases and usage options applied, the
///    upstream URI and headers built;
/// 3. [`send_with_retry`]: sent with the proxy's token, one retry after a refreshed token;
/// 4. [`explain_upstream`] a refusal diagnosis knows, or [`stream_back`] the answer;
/// 5. [`record`]: one log line and one metrics record.
async fn forward_with_id(state: &Arc<ProxyState>, request: Request, id: &HeaderValue) -> Response {
    let started = Instant::now();
    // Clones share the request's bytes: no allocation for the log line.
    let method = request.method().clone();
    let uri = request.uri().clone();
    let path = uri.path();
    let request_id = id.to_str().unwrap_or("");
    if websocket::is_upgrade(request.headers()) {
        // Boxed: the upgrade's future is several times the size of a request's, and a future
        // is as large as its largest branch: unboxed, every HTTP request's future would carry
        // (and be copied with) the WebSocket path's state.
        return Box::pin(websocket::accept(state, request, request_id)).await;
    }
    let route = match dialect::route(path, uri.query()) {
        Ok(route) => route,
        Err(problem) => return unknown_path(&method, path, problem, request_id).into_response(),
    };
    let key = match admit(state, &request, request_id) {
        Ok(key) => key,
        Err(refused) => return refused.into_response(),
    };
    let label = metrics::route_label(route.rest);
    let exchange = Exchange {
        started,
        route,
        label: &label,
        key: key.as_ref(),
        tag: Tag {
            request_id,
            key: key.as_ref().map_or("", |k| k.name.as_str()),
        },
    };
    let mut observed = Observed::default();
    let response = forward_request(state, request, exchange, &mut observed)
        .await
        .unwrap_or_else(IntoResponse::into_response);
    record(state, exchange, &method, path, &observed, &response);
    response
}

/// Phases 1 (limits) to 4 for an admitted request; every refusal on the way is an
/// [`ApiError`].
async fn forward_request(
    state: &ProxyState,
    request: Request,
    exchange: Exchange<'_>,
    observed: &mut Observed,
) -> Result<Response, ApiError> {
    admission::within_limits(state, exchange.key).await?;
    let key = exchange.key.map(Arc::as_ref);
    if let Some(pool) = &state.pool {
        // Boxed, so a single upstream's requests do not carry the failover loop's state.
        return Box::pin(failover::forward(state, pool, request, exchange, observed)).await;
    }
    let outbound = match prepare(state, request, &exchange.route, key, observed).await? {
        Prepared::Answered(response) => return Ok(response),
        Prepared::Outbound(outbound) => outbound,
    };
    let model = outbound.model.as_deref();
    let sent = send_with_retry(
        state,
        &state.tokens,
        exchange.tag,
        outbound.request,
        observed,
    )
    .await?;
    let response = match sent.answer {
        Answer::Refused(parts, body) => {
            return Ok(explain_refusal(
                &state.diagnosis,
                exchange.tag,
                &exchange.route,
                parts,
                body,
                &sent.token,
                model,
            ));
        }
        Answer::Response(response) if worth_explaining(&response) => {
            return Ok(explain_upstream(
                &state.diagnosis,
                exchange.tag,
                &exchange.route,
                response,
                &sent.token,
                model,
            )
            .await);
        }
        Answer::Response(response) => response,
    };
    Ok(stream_back(
        state,
        exchange,
        response,
        outbound.model,
        outbound.ask_stream_usage,
    ))
}

/// A path no dialect serves: 404 `unknown_path`, naming the client settings that work (logged,
/// so an operator sees a misconfigured client); a deployment name Azure cannot have: 400
/// `invalid_model`.
fn unknown_path(method: &Method, path: &str, problem: PathProblem, request_id: &str) -> ApiError {
    let error = match problem {
        PathProblem::Unknown => diagnose::proxy_refusal(
            RefusalCode::UnknownPath,
            &diagnose::catalog::Vars::new().set("detail", telemetry::loggable(path)),
        ),
        PathProblem::BadDeployment => refuse(
            RefusalCode::InvalidModel,
            path.split('/')
                .nth(3)
                .unwrap_or_default()
                .escape_debug()
                .to_string(),
        ),
    };
    info!(method = %method, path = %telemetry::loggable(path), status = error.status.as_u16(), request_id = %request_id, "request refused: no such route");
    error
}

/// Phase 1, admit: only the forwarded methods (else 405), and, when keys are configured,
/// only callers with a valid key (else 401). A refusal here is logged but not counted in the
/// request metrics: it has no key to be counted under.
fn admit(
    state: &ProxyState,
    request: &Request,
    request_id: &str,
) -> Result<Option<Arc<KeyEntry>>, ApiError> {
    let method = request.method();
    let path = request.uri().path();
    if !FORWARDED_METHODS.contains(method) {
        info!(method = %method, path = %telemetry::loggable(path), status = 405, request_id = %request_id, "request refused: method not forwarded");
        return Err(method_not_allowed(method));
    }
    keys::authenticate(state.keys.as_deref(), request.headers()).inspect_err(|error| {
        info!(method = %method, path = %telemetry::loggable(path), status = error.status.as_u16(), request_id = %request_id, "request refused: no valid access key");
    })
}

/// Phase 5: the request's one log line and one metrics record.
fn record(
    state: &ProxyState,
    exchange: Exchange<'_>,
    method: &Method,
    path: &str,
    observed: &Observed,
    response: &Response,
) {
    let status = response.status().as_u16();
    let model = observed.model.as_deref().unwrap_or("");
    state.metrics.record_request(&RequestRecord {
        route: exchange.label,
        status,
        model,
        key: exchange.tag.key,
        upstream_latency: observed.upstream,
    });
    if let Some(ledger) = &state.ledger {
        ledger.request(exchange.tag.key, model, status);
    }
    if let Some(shared) = &state.shared {
        shared.send(crate::shared::Event::Request {
            key: exchange.tag.key.to_owned(),
            model: model.to_owned(),
            error: status >= 400,
            now: crate::clock::unix_now_signed(),
        });
    }
    let (upstream, deployment) = observed
        .via
        .as_ref()
        .map_or(("", ""), |(u, d)| (u.as_str(), d.as_str()));
    info!(
        method = %method,
        path = %telemetry::loggable(path),
        status,
        model,
        upstream,
        deployment,
        upstream_ms = observed.upstream.map(|d| d.as_millis() as u64),
        total_ms = exchange.started.elapsed().as_millis() as u64,
        request_id = %exchange.tag.request_id,
        key = %exchange.tag.key,
        "request"
    );
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
fn method_not_allowed(method: &Method) -> ApiError {
    let mut error = refuse(RefusalCode::MethodNotAllowed, method.as_str());
    error.kind = "invalid_request_error";
    error.headers.insert(
        http::header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    error
}

/// True when the upstream surface accepts `stream_options` (the v1 API, and dated versions
/// from 2024-09-01 on — the caller's own api-version when it sends one, as that is the one
/// Azure sees): only then does the proxy ask for usage in streams.
fn can_request_stream_usage(target: &Target, route: &Route<'_>) -> bool {
    match target.style() {
        crate::upstream::ApiStyle::OpenAiV1 | crate::upstream::ApiStyle::Project => true,
        crate::upstream::ApiStyle::Deployments => route
            .api_version()
            .or(target.api_version())
            .is_some_and(|v| v >= "2024-09-01"),
        _ => false,
    }
}

/// A request read as far as every target needs it.
struct Read {
    /// The caller's method, URI and headers.
    parts: http::request::Parts,
    facts: model::BodyFacts,
    body: OutboundBody,
}

/// Phase 2's start, for one target or several: the body read when it must be (for `model`,
/// the key's rules, or to send it again), `model` and `stream` read, the key's model
/// allow-list applied; `Err` is `GET /v1/models` answered here when aliases are configured.
async fn read_request(
    state: &ProxyState,
    request: Request,
    route: &Route<'_>,
    key: Option<&KeyEntry>,
    observed: &mut Observed,
) -> Result<Result<Read, Response>, ApiError> {
    let (parts, body) = request.into_parts();
    let reads_body = key.is_some_and(|k| k.rules.reads_body());
    let (body, mut facts) = read_facts(state, &parts, body, route, reads_body).await?;
    // A deployment in the path is what the caller asked for, whatever the body says.
    if let Some(deployment) = route.deployment {
        facts.model = Some(deployment.to_owned());
    }
    observed.model.clone_from(&facts.model);
    if let Some(key) = key {
        key_rules::allow_model(key, facts.model.as_deref(), state.target.aliases())?;
    }
    if route.rest == "models"
        && route.dialect != Dialect::Anthropic
        && route.deployment.is_none()
        && parts.method == Method::GET
        && !state.target.aliases().is_empty()
    {
        return Ok(Err(model::alias_list(state.target.aliases())));
    }
    Ok(Ok(Read { parts, facts, body }))
}

/// Phase 2, prepare: the body is read when it must be (for `model`, or to send it again after
/// a 401) and read once for `model` and `stream`; `GET /v1/models` is answered here when
/// aliases are configured; aliases and usage options are applied ([`rewrite_body`]); the
/// upstream URI and headers are built.
async fn prepare(
    state: &ProxyState,
    request: Request,
    route: &Route<'_>,
    key: Option<&KeyEntry>,
    observed: &mut Observed,
) -> Result<Prepared, ApiError> {
    let Read {
        mut parts,
        facts,
        body,
    } = match read_request(state, request, route, key, observed).await? {
        Ok(read) => read,
        Err(answered) => return Ok(Prepared::Answered(answered)),
    };
    let cap = key.and_then(|k| k.rules.max_tokens_cap);
    let (body, ask_stream_usage) =
        rewrite_body(&state.target, route, &mut parts.headers, body, &facts, cap);
    let uri = state
        .target
        .uri(route, facts.model.as_deref())
        .map_err(|e| route_error(e, route))?;
    let mut headers = parts.headers;
    headers::prepare_request_headers(&mut headers);
    // Compressed answers could not be read for `usage` on their way through; the hop to
    // Azure is not where bandwidth matters.
    headers.remove(http::header::ACCEPT_ENCODING);
    Ok(Prepared::Outbound(Outbound {
        request: UpstreamRequest {
            method: parts.method,
            uri,
            headers,
            body,
        },
        model: facts.model,
        ask_stream_usage,
    }))
}

/// Reads the body into memory when `model` must be read from it (the style needs it, or the
/// key's rules do: `reads_body`), or when it is small enough to be sent again after a 401
/// (larger ones stream through); then reads `model` and whether a stream is asked for, in one
/// pass.
async fn read_facts(
    state: &ProxyState,
    parts: &http::request::Parts,
    body: Body,
    route: &Route<'_>,
    reads_body: bool,
) -> Result<(OutboundBody, model::BodyFacts), ApiError> {
    let content_length = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if content_length.is_some_and(|n| n > state.max_body as u64) {
        return Err(too_large(state.max_body));
    }
    let needs_model = state.target.needs_model(route) && parts.method != Method::GET;
    let body =
        if needs_model || reads_body || content_length.is_none_or(|n| n <= REPLAY_LIMIT as u64) {
            OutboundBody::Buffered(read_body(body, state.max_body).await?)
        } else {
            OutboundBody::Streaming(body)
        };
    let facts = match &body {
        OutboundBody::Buffered(bytes) if needs_model => {
            model::read_facts(&parts.headers, bytes).await?
        }
        // Other styles only read `model` for aliases, metrics and explanations: a body that is
        // not JSON is Azure's to refuse, not the proxy's.
        OutboundBody::Buffered(bytes) if is_json(&parts.headers) => {
            model::json_facts(bytes).unwrap_or_default()
        }
        // Uploads (audio, images): their `model` form field, for usage and metrics.
        OutboundBody::Buffered(bytes) if is_multipart(&parts.headers) => {
            model::read_facts(&parts.headers, bytes)
                .await
                .unwrap_or_default()
        }
        _ => model::BodyFacts::default(),
    };
    Ok((body, facts))
}

/// Rewrites a held body when needed: an alias in `model` becomes its deployment (except in
/// the deployments style, where the alias picks the URL instead), the key's token cap is
/// applied (`cap`), and chat or completion streams ask for usage. Returns the body to send and
/// whether usage was asked for; a rewritten body gets its new `content-length`.
fn rewrite_body(
    target: &Target,
    route: &Route<'_>,
    headers: &mut HeaderMap,
    body: OutboundBody,
    facts: &model::BodyFacts,
    cap: Option<u64>,
) -> (OutboundBody, bool) {
    let OutboundBody::Buffered(bytes) = &body else {
        return (body, false);
    };
    let rest = route.rest;
    // Claude's Messages API always takes the deployment in the body, whatever the style.
    let rewrite = route.dialect == Dialect::Anthropic
        || target.style() != crate::upstream::ApiStyle::Deployments;
    // The deployment goes in the body's `model` for every style but `deployments`: the one
    // the path names (Azure dialect), or the one an alias stands for.
    let name = facts.model.as_deref();
    let deployment = name
        .and_then(|name| target.alias(name))
        .or(route.deployment.filter(|_| is_json(headers)));
    let mut rewritten = deployment
        .filter(|_| rewrite)
        .and_then(|deployment| model::with_model(bytes, deployment));
    if let Some(cap) = cap.filter(|_| is_json(headers)) {
        let current = rewritten.as_ref().unwrap_or(bytes);
        if let Some(capped) = key_rules::capped_body(current, route, target, cap) {
            rewritten = Some(capped);
        }
    }
    let mut ask_stream_usage = false;
    // Ask for usage in streams (stripped again before the client sees it), so streamed
    // tokens count against the key's limits and in the usage metrics.
    if matches!(rest, "chat/completions" | "completions")
        && route.dialect != Dialect::Anthropic
        && can_request_stream_usage(target, route)
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
    match rewritten {
        Some(rewritten) => {
            headers.insert(CONTENT_LENGTH, rewritten.len().into());
            (OutboundBody::Buffered(rewritten), ask_stream_usage)
        }
        None => (body, ask_stream_usage),
    }
}

/// Phase 3, send: with the current token. A 401/403 to a request whose body is held gets one
/// forced token refresh and one retry; when no fresher token can be had, the refusal (already
/// read) is the answer. Records the upstream time in `observed`.
async fn send_with_retry(
    state: &ProxyState,
    tokens: &TokenCell,
    tag: Tag<'_>,
    request: UpstreamRequest,
    observed: &mut Observed,
) -> Result<Sent, ApiError> {
    let mut token = tokens
        .usable_token()
        .await
        .map_err(|why| diagnose::no_token(&state.diagnosis, &why))?;
    let UpstreamRequest {
        method,
        uri,
        headers,
        body,
    } = request;
    let upstream_started = Instant::now();
    let (first_body, replay) = match body {
        OutboundBody::Buffered(bytes) => (Body::from(bytes.clone()), Some(bytes)),
        OutboundBody::Streaming(stream) => (stream, None),
    };
    let mut response = send(
        state,
        tag,
        build_request(&method, &uri, &headers, &token, first_body),
    )
    .await?;
    if let Some(bytes) = replay.filter(|_| is_refusal(response.status())) {
        // Read the refusal first: it is needed if no fresher token can be had, and reading
        // it returns the connection to the pool.
        let (parts, incoming) = response.into_parts();
        let refusal = read_limited(incoming, REFUSAL_BODY_LIMIT)
            .await
            .unwrap_or_default();
        let Some(fresh) = tokens.refreshed_after(token.serial).await else {
            observed.upstream = Some(upstream_started.elapsed());
            return Ok(Sent {
                answer: Answer::Refused(parts, refusal),
                token,
            });
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
            build_request(&method, &uri, &headers, &token, Body::from(bytes)),
        )
        .await?;
    }
    observed.upstream = Some(upstream_started.elapsed());
    Ok(Sent {
        answer: Answer::Response(response),
        token,
    })
}

/// Answers worth reading for diagnosis: 401/403, and small JSON bodies of the statuses it
/// knows refusals for.
fn worth_explaining(response: &http::Response<hyper::body::Incoming>) -> bool {
    let status = response.status();
    is_refusal(status) || (diagnose::worth_reading(status) && is_small_json(response.headers()))
}

/// Phase 4, explain: reads a refusal's body and answers it through [`explain_refusal`].
async fn explain_upstream(
    diagnosis: &DiagnosisContext,
    tag: Tag<'_>,
    route: &Route<'_>,
    response: http::Response<hyper::body::Incoming>,
    token: &HeldToken,
    model: Option<&str>,
) -> Response {
    let (parts, incoming) = response.into_parts();
    let body = read_limited(incoming, REFUSAL_BODY_LIMIT)
        .await
        .unwrap_or_default();
    explain_refusal(diagnosis, tag, route, parts, body, token, model)
}

/// Phase 4, stream back: the answer passes to the caller as it arrives, hop-by-hop headers
/// removed. Usage is read on the way (and counted against the key and in the metrics when
/// the body ends); a stream is counted in flight, and the time from the request's start to
/// its first body byte sent to the caller is recorded.
fn stream_back(
    state: &ProxyState,
    exchange: Exchange<'_>,
    response: http::Response<hyper::body::Incoming>,
    model: Option<String>,
    ask_stream_usage: bool,
) -> Response {
    let (mut parts, incoming) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let kind = usage::BodyKind::from_headers(&parts.headers);
    let is_stream = kind == usage::BodyKind::Sse;
    let strip = ask_stream_usage && is_stream;
    if strip {
        // The stripped stream is shorter than what Azure announced.
        parts.headers.remove(CONTENT_LENGTH);
    }
    let stream_guard = is_stream.then(|| state.metrics.stream_started());
    let first_byte = is_stream.then(|| {
        let ttfb = state.metrics.stream_ttfb(exchange.label);
        let started = exchange.started;
        move || ttfb.observe(started.elapsed().as_secs_f64())
    });
    let on_done = {
        let sink = account::UsageSink::of(state);
        let key = exchange.key.map(Arc::clone);
        let model = model.unwrap_or_default();
        let deployment = state.target.alias(&model).map(str::to_owned);
        move |seen: Option<usage::Usage>, _ending: usage::Ending| {
            drop(stream_guard);
            if let Some(seen) = seen {
                sink.record(key.as_deref(), &model, deployment.as_deref(), &seen);
            }
        }
    };
    let body = usage::observe_with_first_byte(incoming, kind, strip, first_byte, on_done);
    Response::from_parts(parts, body)
}

/// Answers a refusal whose body has been read: explained when diagnosis knows it, else
/// passed on byte for byte.
fn explain_refusal(
    diagnosis: &DiagnosisContext,
    tag: Tag<'_>,
    route: &Route<'_>,
    parts: http::response::Parts,
    body: Bytes,
    token: &HeldToken,
    model: Option<&str>,
) -> Response {
    let facts = diagnose::RequestFacts {
        model,
        api_version: route.api_version(),
    };
    if let Some(mut explained) =
        diagnose::upstream_refusal(diagnosis, parts.status, &body, token.claims.as_ref(), facts)
    {
        warn!(
            status = parts.status.as_u16(),
            code = explained.code.as_str(),
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

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/"))
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
            Err(diagnose::proxy_refusal(RefusalCode::UpstreamTimeout, &vars))
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
        RefusalCode::UpstreamUnreachable,
        &state.diagnosis.vars().set("detail", cause),
    )
}

async fn read_body(body: Body, max: usize) -> Result<Bytes, ApiError> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large(max)),
        Err(error) => Err(BodyReadTimeout::find(&*error).map_or_else(
            || refuse(RefusalCode::UnreadableBody, error.to_string()),
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
pub(crate) fn refuse(code: RefusalCode, detail: impl Into<String>) -> ApiError {
    diagnose::proxy_refusal(code, &diagnose::catalog::Vars::new().set("detail", detail))
}

fn too_large(max: usize) -> ApiError {
    diagnose::proxy_refusal(
        RefusalCode::RequestTooLarge,
        &diagnose::catalog::Vars::new().set("max_body", max.to_string()),
    )
}

fn route_error(error: RouteError, route: &Route<'_>) -> ApiError {
    match error {
        RouteError::MissingModel => refuse(RefusalCode::MissingModel, ""),
        RouteError::BadModel(model) => {
            refuse(RefusalCode::InvalidModel, model.escape_debug().to_string())
        }
        RouteError::BadPath(path) => {
            let prefix = match (route.dialect, route.deployment) {
                (Dialect::V1, _) => "/v1/".to_owned(),
                (Dialect::Classic, Some(deployment)) => {
                    format!("/openai/deployments/{deployment}/")
                }
                (Dialect::Classic, None) => "/openai/".to_owned(),
                (Dialect::Anthropic, _) => "/anthropic/v1/".to_owned(),
            };
            refuse(
                RefusalCode::InvalidPath,
                format!("{prefix}{}", path.escape_debug()),
            )
        }
    }
}

fn copy_correlation_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for name in CORRELATION_HEADERS {
        if let Some(value) = from.get(name) {
            to.insert(HeaderName::from_static(name), value.clone());
        }
    }
}
