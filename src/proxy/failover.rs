//! The request path with several upstreams (`[[upstream]]`): phases 2 to 4 of
//! [`super::forward_with_id`], once per target until one answers.
//!
//! A request goes to the first target of [`Pool::plan`] that is not resting. A 429 (either
//! kind), a 500/502/503, a refused or reset connection or a timeout sends it to the next
//! target — only while nothing has gone back to the client, and only when its body is held
//! (as for the 401 retry; larger bodies get one attempt). 400s, 404s and everything else are
//! the answer; a 401/403 is explained naming the upstream. When every target rests, the client
//! gets 429 `upstreams_resting` with the smallest wait, or, under `max_wait`, the proxy waits
//! and tries again.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use tokio::time::Instant;
use tracing::{info, warn};

use super::{
    Answer, Exchange, Observed, OutboundBody, REFUSAL_BODY_LIMIT, Read, UpstreamRequest,
    explain_refusal, explain_upstream, headers, model, read_limited, read_request, rewrite_body,
    route_error, send_with_retry, stream_back, worth_explaining,
};
use crate::diagnose::{self, RefusalCode};
use crate::error::ApiError;
use crate::pool::{Candidate, MAX_ATTEMPTS, Member, Pool, health};
use crate::upstream::Route;

use super::ProxyState;

/// What a failed attempt left to answer with, should no other target do better.
enum Failure {
    /// An answer read whole (a 429 or 5xx).
    Answer(http::response::Parts, Bytes, usize),
    /// No answer (connection or timeout): the proxy's own 502/504.
    Error(ApiError),
}

/// Phases 2 to 4 with failover between the pool's targets.
pub(super) async fn forward(
    state: &ProxyState,
    pool: &Pool,
    request: Request,
    exchange: Exchange<'_>,
    observed: &mut Observed,
) -> Result<Response, ApiError> {
    let route = exchange.route;
    let caller = exchange.key.map(std::sync::Arc::as_ref);
    let cap = caller.and_then(|k| k.rules.max_tokens_cap);
    let Read {
        mut parts,
        facts,
        body,
    } = match read_request(state, request, &route, caller, observed).await? {
        Ok(read) => read,
        Err(answered) => return Ok(answered),
    };
    // Prepared once: every attempt sends a copy.
    headers::prepare_request_headers(&mut parts.headers);
    parts.headers.remove(http::header::ACCEPT_ENCODING);
    let model = facts.model.as_deref();
    let plan = pool.plan(model);
    // A body that streams through can be sent once only.
    let (held, mut streaming) = match body {
        OutboundBody::Buffered(bytes) => (Some(bytes), None),
        OutboundBody::Streaming(stream) => (None, Some(stream)),
    };
    let mut tried = vec![false; plan.len()];
    let mut last: Option<Failure> = None;
    let mut attempts = 0;
    let mut waited = Duration::ZERO;
    loop {
        let now = Instant::now();
        let next = (0..plan.len())
            .find(|&i| !tried[i] && pool.resting(&plan[i], model, now).is_none())
            .filter(|_| attempts < MAX_ATTEMPTS && (held.is_some() || attempts == 0));
        let Some(index) = next else {
            // Nothing left to try now: wait for the first target to wake when allowed, else
            // answer with what the attempts left.
            let smallest = plan
                .iter()
                .map(|c| pool.resting(c, model, now))
                .collect::<Option<Vec<_>>>()
                .and_then(|waits| waits.into_iter().min());
            match smallest {
                Some(wait)
                    if attempts < MAX_ATTEMPTS
                        && held.is_some()
                        && pool.max_wait.is_some_and(|max| waited + wait <= max) =>
                {
                    info!(wait_ms = wait.as_millis() as u64, request_id = %exchange.tag.request_id, "every upstream rests: waiting");
                    tokio::time::sleep(wait).await;
                    waited += wait;
                    tried.fill(false);
                    continue;
                }
                Some(wait) => return Err(all_resting(pool, &plan, model, wait, now)),
                None => break,
            }
        };
        tried[index] = true;
        attempts += 1;
        let candidate = plan[index];
        let member = &pool.members[candidate.member];
        let key = Pool::key(&candidate, model);
        let body = match (&held, streaming.take()) {
            (Some(bytes), _) => OutboundBody::Buffered(bytes.clone()),
            (None, Some(stream)) => OutboundBody::Streaming(stream),
            (None, None) => break,
        };
        let (request, ask_stream_usage) =
            for_target(member, &route, &candidate, &facts, &parts, body, cap)?;
        observed.via = Some((member.name.clone(), key.to_owned()));
        member.counters.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let sent =
            match send_with_retry(state, &member.tokens, exchange.tag, request, observed).await {
                Ok(sent) => sent,
                Err(error) if is_unanswered(&error) => {
                    note_failure(
                        member,
                        key,
                        &error.code.to_string(),
                        &exchange,
                        index + 1 < plan.len(),
                    );
                    last = Some(Failure::Error(error));
                    continue;
                }
                Err(error) => return Err(error),
            };
        let response = match sent.answer {
            Answer::Refused(parts, body) => {
                warn!(upstream = %member.name, deployment = key, status = parts.status.as_u16(), request_id = %exchange.tag.request_id, "upstream refused the proxy's token");
                return Ok(named(
                    explain_refusal(
                        &member.diagnosis,
                        exchange.tag,
                        &route,
                        parts,
                        body,
                        &sent.token,
                        model,
                    ),
                    member,
                    key,
                ));
            }
            Answer::Response(response) => response,
        };
        member.counters.answered_in(started.elapsed());
        let status = response.status();
        if is_retryable(status) {
            let (parts, incoming) = response.into_parts();
            let body = read_limited(incoming, REFUSAL_BODY_LIMIT)
                .await
                .unwrap_or_default();
            if status == StatusCode::TOO_MANY_REQUESTS {
                note_rate_limited(
                    member,
                    key,
                    &parts.headers,
                    &exchange,
                    index + 1 < plan.len(),
                );
            } else {
                note_failure(
                    member,
                    key,
                    status.as_str(),
                    &exchange,
                    index + 1 < plan.len(),
                );
            }
            last = Some(Failure::Answer(parts, body, candidate.member));
            continue;
        }
        if member.health.succeeded(key) {
            info!(upstream = %member.name, deployment = key, request_id = %exchange.tag.request_id, "upstream restored");
        }
        if worth_explaining(&response) {
            let explained = explain_upstream(
                &member.diagnosis,
                exchange.tag,
                &route,
                response,
                &sent.token,
                model,
            )
            .await;
            return Ok(named(explained, member, key));
        }
        return Ok(stream_back(
            state,
            exchange,
            response,
            facts.model.clone(),
            ask_stream_usage,
        ));
    }
    answer_last(pool, &plan, last, &exchange, &route, model).await
}

/// The answer when no target did better: the last failure's answer (explained when the
/// catalog knows it, else as Azure sent it), or the proxy's own 502/504.
async fn answer_last(
    pool: &Pool,
    plan: &[Candidate<'_>],
    last: Option<Failure>,
    exchange: &Exchange<'_>,
    route: &Route<'_>,
    model: Option<&str>,
) -> Result<Response, ApiError> {
    match last {
        Some(Failure::Answer(parts, body, member)) => {
            let member = &pool.members[member];
            let token = member
                .tokens
                .usable_token()
                .await
                .map_err(|why| diagnose::no_token(&member.diagnosis, &why))?;
            Ok(explain_refusal(
                &member.diagnosis,
                exchange.tag,
                route,
                parts,
                body,
                &token,
                model,
            ))
        }
        Some(Failure::Error(error)) => Err(error),
        None => Err(all_resting(
            pool,
            plan,
            model,
            Duration::ZERO,
            Instant::now(),
        )),
    }
}

/// The upstream request for one target: its deployment in the body or the URL, its
/// api-version, the caller's headers.
fn for_target(
    member: &Member,
    route: &Route<'_>,
    candidate: &Candidate<'_>,
    facts: &model::BodyFacts,
    parts: &http::request::Parts,
    body: OutboundBody,
    cap: Option<u64>,
) -> Result<(UpstreamRequest, bool), ApiError> {
    let mut headers = parts.headers.clone();
    let (route, facts) = match candidate.deployment {
        Some(deployment) => {
            let mut facts = facts.clone();
            facts.model = Some(deployment.to_owned());
            (
                Route {
                    deployment: Some(deployment),
                    ..*route
                },
                std::borrow::Cow::Owned(facts),
            )
        }
        None => (*route, std::borrow::Cow::Borrowed(facts)),
    };
    // A rewritten body gets its own `content-length` there; an unchanged one keeps the
    // caller's.
    let (body, ask_stream_usage) =
        rewrite_body(&member.target, &route, &mut headers, body, &facts, cap);
    let uri = member
        .target
        .uri(&route, facts.model.as_deref())
        .map_err(|e| route_error(e, &route))?;
    Ok((
        UpstreamRequest {
            method: parts.method.clone(),
            uri,
            headers,
            body,
        },
        ask_stream_usage,
    ))
}

/// The statuses another target may answer better: quota and capacity (429) and Azure's own
/// failures (500, 502, 503). 400s and 404s are the request's, and 504 may have been served.
fn is_retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 500 | 502 | 503)
}

/// The proxy's own refusals that mean no answer came: a connection that failed or no
/// headers in time.
fn is_unanswered(error: &ApiError) -> bool {
    matches!(
        error.code,
        RefusalCode::UpstreamUnreachable | RefusalCode::UpstreamTimeout
    )
}

/// A 429: the target rests for the wait Azure asked for (capped; a default when it named
/// none).
fn note_rate_limited(
    member: &Member,
    key: &str,
    headers: &http::HeaderMap,
    exchange: &Exchange<'_>,
    more: bool,
) {
    let asked = health::rest_from_headers(headers);
    let wait = asked.unwrap_or(health::DEFAULT_REST).min(health::MAX_REST);
    let asked_ms = asked.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    member
        .health
        .rate_limited(key, wait, asked_ms, Instant::now());
    member.counters.rests.fetch_add(1, Ordering::Relaxed);
    if more {
        member.counters.failovers.fetch_add(1, Ordering::Relaxed);
    }
    warn!(upstream = %member.name, deployment = key, status = 429, rest_ms = wait.as_millis() as u64, request_id = %exchange.tag.request_id, "upstream rate limited: resting");
}

/// Counts a failure against a target; logs the ejection it causes.
fn note_failure(member: &Member, key: &str, what: &str, exchange: &Exchange<'_>, more: bool) {
    if more {
        member.counters.failovers.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(ejected) = member.health.failed(key, what, Instant::now()) {
        member.counters.rests.fetch_add(1, Ordering::Relaxed);
        warn!(upstream = %member.name, deployment = key, failure = what, eject_ms = ejected.as_millis() as u64, request_id = %exchange.tag.request_id, "upstream ejected");
    } else {
        warn!(upstream = %member.name, deployment = key, failure = what, request_id = %exchange.tag.request_id, "upstream failed");
    }
}

/// Names the upstream and deployment on an answer: `x-foundry-proxy-upstream`, and in the
/// message of the proxy's own explanations.
fn named(mut response: Response, member: &Member, key: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(&format!("{}/{key}", member.name)) {
        response
            .headers_mut()
            .insert("x-foundry-proxy-upstream", value);
    }
    if let Some(written) = response
        .extensions_mut()
        .remove::<crate::error::WrittenError>()
    {
        let mut error = written.0;
        error.message = format!(
            "Upstream '{}' (deployment '{key}', {}): {}",
            member.name, member.diagnosis.endpoint_host, error.message
        );
        let mut renamed = error.into_response();
        for (name, value) in response.headers() {
            renamed.headers_mut().insert(name.clone(), value.clone());
        }
        return renamed;
    }
    response
}

/// 429 `upstreams_resting`: the smallest wait as `retry-after` (seconds, rounded up) and
/// `retry-after-ms`, and each target with why it rests.
fn all_resting(
    pool: &Pool,
    plan: &[Candidate<'_>],
    model: Option<&str>,
    smallest: Duration,
    now: Instant,
) -> ApiError {
    let mut detail = String::new();
    for candidate in plan {
        let member = &pool.members[candidate.member];
        let key = Pool::key(candidate, model);
        let left = pool.resting(candidate, model, now).unwrap_or_default();
        let why = member
            .health
            .why(key)
            .map_or_else(|| "failed".to_owned(), |why| why.to_string());
        if !detail.is_empty() {
            detail.push_str("; ");
        }
        let _ = write!(
            detail,
            "{}/{key} rests {} ms more ({why})",
            member.name,
            left.as_millis()
        );
    }
    let millis = u64::try_from(smallest.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    let vars = diagnose::catalog::Vars::new()
        .set("detail", detail)
        .set("wait_ms", millis.to_string());
    let mut error = diagnose::proxy_refusal(RefusalCode::UpstreamsResting, &vars);
    error.retry_after = Some(millis.div_ceil(1000));
    error
        .headers
        .insert("retry-after-ms", HeaderValue::from(millis));
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Quota, capacity and Azure's failures fail over; the caller's mistakes do not.
    #[test]
    fn upstreams_retryable_statuses() {
        for status in [429, 500, 502, 503] {
            assert!(is_retryable(StatusCode::from_u16(status).expect("status")));
        }
        for status in [200, 400, 401, 403, 404, 408, 413, 422, 504] {
            assert!(!is_retryable(StatusCode::from_u16(status).expect("status")));
        }
    }
}
