//! The managed-identity credential: a token from the host's identity endpoint, IMDS on
//! Azure VMs and scale sets, or `IDENTITY_ENDPOINT` on App Service and Container Apps
//! (docs/docs/azure-facts.md §2).
//!
//! Both endpoints take a *resource* (the scope without `/.default`) and answer a v1-style
//! body whose numbers may be strings. IMDS is allowed to be briefly unavailable (404, 410,
//! 429, 5xx), so one [`Credential::get_token`] call retries with exponential backoff before
//! giving up; the refresher's own backoff comes on top of that.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use serde::Deserialize;

use super::NumberOrString;
use crate::clock::unix_now;
use tracing::debug;
use url::Url;

use super::{AccessToken, Credential, CredentialError, TokenFuture};
use crate::config::credential::{IdentitySelector, ManagedIdentityEndpoint};
use crate::diagnose::RefusalCode;
use crate::secret::Secret;

/// The IMDS token path, under the IMDS base URL.
const IMDS_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";
/// The api-version IMDS documents for tokens.
const IMDS_API_VERSION: &str = "2018-02-01";
/// The api-version of the App Service / Container Apps endpoint.
const APP_SERVICE_API_VERSION: &str = "2019-08-01";
/// IMDS is link-local: if it is there at all, it answers a connect at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one attempt, connect to last byte.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay; it doubles with each retry.
const RETRY_BASE: Duration = Duration::from_millis(800);
/// Retries after the first attempt: 0.8 + 1.6 + … + 25.6 s ≈ 50 s of waiting, which covers
/// IMDS's promise to be back within 70 s after a 410 once the attempts' own time is added.
const MAX_RETRIES: u32 = 6;

/// A token from the host's managed identity (system- or user-assigned).
pub struct ManagedIdentityCredential {
    http: reqwest::Client,
    /// The full token URL, query included (identity selectors are not secret).
    url: Url,
    /// What to call the endpoint in messages: its kind and origin, no query.
    shown: String,
    /// IMDS's `Metadata: true`, or App Service's `X-IDENTITY-HEADER` (marked sensitive).
    headers: HeaderMap,
    /// The App Service header value, so that an endpoint echoing it cannot leak it.
    header_secret: Option<Secret>,
    retry: RetryPolicy,
}

impl ManagedIdentityCredential {
    /// A credential for the identity `selector` picks at `endpoint`, asking for `scope`
    /// (a trailing `/.default` is removed to make the resource).
    pub fn new(
        endpoint: ManagedIdentityEndpoint,
        selector: IdentitySelector,
        scope: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Self, CredentialError> {
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(ATTEMPT_TIMEOUT)
            // IMDS and the App Service endpoint are host-local and unsupported behind a proxy.
            .no_proxy()
            .user_agent(concat!("foundry-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CredentialError::Unavailable(format!("cannot build http client: {e}")))?;
        let resource = resource_of(scope);
        let mut headers = HeaderMap::new();
        let (url, shown, header_secret) = match endpoint {
            ManagedIdentityEndpoint::Imds { endpoint } => {
                let mut url = endpoint.clone();
                let path = format!("{}{IMDS_TOKEN_PATH}", endpoint.path().trim_end_matches('/'));
                url.set_path(&path);
                url.set_query(None);
                url.query_pairs_mut()
                    .append_pair("api-version", IMDS_API_VERSION)
                    .append_pair("resource", resource);
                append_selector(
                    &mut url,
                    &selector,
                    ["client_id", "object_id", "msi_res_id"],
                );
                headers.insert("metadata", HeaderValue::from_static("true"));
                (url, format!("IMDS at {}", origin(&endpoint)), None)
            }
            ManagedIdentityEndpoint::AppService { endpoint, header } => {
                let mut url = endpoint.clone();
                url.query_pairs_mut()
                    .append_pair("resource", resource)
                    .append_pair("api-version", APP_SERVICE_API_VERSION);
                append_selector(
                    &mut url,
                    &selector,
                    ["client_id", "principal_id", "mi_res_id"],
                );
                let mut value = HeaderValue::from_str(header.expose()).map_err(|_| {
                    CredentialError::Source {
                        code: RefusalCode::ManagedIdentityRefused,
                        detail: "IDENTITY_HEADER holds characters not allowed in an HTTP header"
                            .into(),
                        transient: false,
                    }
                })?;
                value.set_sensitive(true);
                headers.insert("x-identity-header", value);
                let shown = format!(
                    "the identity endpoint {}{}",
                    origin(&endpoint),
                    endpoint.path()
                );
                (url, shown, Some(header))
            }
        };
        Ok(Self {
            http,
            url,
            shown,
            headers,
            header_secret,
            retry: RetryPolicy::default(),
        })
    }

    /// The same credential with a different first retry delay (it still doubles, and a
    /// `Retry-After` is capped in proportion). For tests, which cannot wait 50 s.
    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.retry.base = base;
        self
    }

    /// One attempt: the status and body, or a connection error.
    async fn attempt(&self) -> Result<Answer, reqwest::Error> {
        let response = self
            .http
            .get(self.url.clone())
            .headers(self.headers.clone())
            .send()
            .await?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.bytes().await?;
        Ok(Answer {
            status,
            retry_after,
            body: body.to_vec(),
        })
    }

    async fn fetch(&self) -> Result<AccessToken, CredentialError> {
        let mut retries = 0;
        loop {
            let outcome = self.attempt().await;
            let (delay, last) = match outcome {
                Ok(answer) => match classify(answer.status) {
                    Outcome::Success => {
                        return parse_token(&answer.body, unix_now()).map_err(|e| {
                            unavailable(format!(
                                "{} answered {} but {e}",
                                self.shown, answer.status
                            ))
                        });
                    }
                    Outcome::Final => return Err(self.refusal(answer.status, &answer.body)),
                    Outcome::Retry => {
                        let delay = answer
                            .retry_after
                            .map_or_else(|| self.retry.delay(retries), |s| self.retry.capped(s));
                        let text = error_text(&self.redact_body(&answer.body));
                        (delay, format!("answered {}: {text}", answer.status))
                    }
                },
                Err(e) => (self.retry.delay(retries), describe_send_error(&e)),
            };
            if retries >= self.retry.max_retries {
                let attempts = retries + 1;
                return Err(unavailable(self.redact(format!(
                    "{} still failed after {attempts} attempts: it {last}",
                    self.shown
                ))));
            }
            debug!(
                endpoint = %self.shown,
                retry = retries + 1,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                reason = %self.redact(last),
                "managed identity endpoint not ready, retrying"
            );
            tokio::time::sleep(delay).await;
            retries += 1;
        }
    }

    /// A final (non-retryable) answer as an error.
    fn refusal(&self, status: u16, body: &[u8]) -> CredentialError {
        let text = error_text(&self.redact_body(body));
        let detail = self.redact(format!("{} answered {status}: {text}", self.shown));
        let code = match status {
            401 | 403 => RefusalCode::ManagedIdentityRefused,
            400 if names_missing_identity(&text) => RefusalCode::ManagedIdentityNotFound,
            _ => RefusalCode::ManagedIdentityRefused,
        };
        CredentialError::Source {
            code,
            detail,
            transient: false,
        }
    }

    /// The body without the identity header's value, before any of it is shown: cut at 200
    /// characters, a body could otherwise keep part of it, which [`Self::redact`] cannot find.
    fn redact_body<'a>(&self, body: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        let Some(secret) = self.header_secret.as_ref().filter(|s| !s.is_blank()) else {
            return std::borrow::Cow::Borrowed(body);
        };
        let needle = secret.expose().as_bytes();
        let mut out = Vec::new();
        let mut from = 0;
        for at in memchr::memmem::find_iter(body, needle) {
            if at >= from {
                out.extend_from_slice(&body[from..at]);
                out.extend_from_slice(b"<redacted>");
                from = at + needle.len();
            }
        }
        if from == 0 {
            return std::borrow::Cow::Borrowed(body);
        }
        out.extend_from_slice(&body[from..]);
        std::borrow::Cow::Owned(out)
    }

    /// Removes the identity header's value from text shown to anyone.
    fn redact(&self, text: String) -> String {
        match &self.header_secret {
            Some(secret) if !secret.is_blank() && text.contains(secret.expose()) => {
                text.replace(secret.expose(), "<redacted>")
            }
            _ => text,
        }
    }
}

impl std::fmt::Debug for ManagedIdentityCredential {
    /// The endpoint and URL only: the App Service header is never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedIdentityCredential")
            .field("endpoint", &self.shown)
            .field("url", &self.url.as_str())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Credential for ManagedIdentityCredential {
    fn get_token(&self) -> TokenFuture<'_> {
        Box::pin(self.fetch())
    }

    fn kind(&self) -> &'static str {
        "managed-identity"
    }
}

/// One answer of the endpoint.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

/// What to do with an answer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 2xx: read the token.
    Success,
    /// 404, 410, 429, 5xx: IMDS is starting, updating or busy; ask again.
    Retry,
    /// Anything else: asking again will not help.
    Final,
}

/// Classifies a status by the IMDS retry rules (docs/docs/azure-facts.md §2).
fn classify(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Success,
        404 | 410 | 429 | 500..=599 => Outcome::Retry,
        _ => Outcome::Final,
    }
}

/// Backoff between attempts of one `get_token`.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    base: Duration,
    max_retries: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: RETRY_BASE,
            max_retries: MAX_RETRIES,
        }
    }
}

impl RetryPolicy {
    /// Delay before retry number `retry + 1`: base · 2^retry.
    fn delay(&self, retry: u32) -> Duration {
        self.base.saturating_mul(1 << retry.min(16))
    }

    /// A server-requested delay, capped at the longest backoff step so one answer cannot
    /// stretch the whole budget.
    fn capped(&self, requested: Duration) -> Duration {
        requested.min(self.delay(self.max_retries.saturating_sub(1)))
    }
}

/// `Retry-After` in seconds; the HTTP-date form is ignored (the backoff applies instead).
fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The resource for a scope: `https://cognitiveservices.azure.com/.default` →
/// `https://cognitiveservices.azure.com`.
fn resource_of(scope: &str) -> &str {
    scope.strip_suffix("/.default").unwrap_or(scope)
}

fn append_selector(url: &mut Url, selector: &IdentitySelector, names: [&str; 3]) {
    let [client, object, resource] = names;
    let pair = match selector {
        IdentitySelector::SystemAssigned => None,
        IdentitySelector::ClientId(id) => Some((client, id)),
        IdentitySelector::ObjectId(id) => Some((object, id)),
        IdentitySelector::ResourceId(id) => Some((resource, id)),
    };
    if let Some((name, value)) = pair {
        url.query_pairs_mut().append_pair(name, value);
    }
}

/// `scheme://host:port` of a URL.
fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn unavailable(detail: String) -> CredentialError {
    CredentialError::Source {
        code: RefusalCode::ManagedIdentityUnavailable,
        detail,
        transient: true,
    }
}

/// True when a 400's text says the requested identity does not exist on this host.
fn names_missing_identity(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("identity")
        && (text.contains("not found")
            || text.contains("not assigned")
            || text.contains("no managed identity")
            || text.contains("unable to load"))
}

/// Why a request got no answer, without the URL (the query is not secret, but long).
fn describe_send_error(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "could not be reached".to_owned()
    } else {
        "failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The endpoint's own words from an error body: IMDS's `error_description`, App Service's
/// `message`, an `error` string or object, else the start of the body.
fn error_text(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: Option<serde_json::Value>,
        error_description: Option<String>,
        message: Option<String>,
        #[serde(rename = "Message")]
        message_pascal: Option<String>,
    }
    let from_json = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|e| {
            let nested = e.error.as_ref().and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("message")?.as_str().map(str::to_owned),
                _ => None,
            });
            let error_code = e.error.as_ref().and_then(|v| v.as_str()).map(str::to_owned);
            match (e.error_description, error_code) {
                (Some(description), Some(code)) => Some(format!("{code}: {description}")),
                (Some(description), None) => Some(description),
                (None, _) => e.message.or(e.message_pascal).or(nested),
            }
        });
    let text = from_json.unwrap_or_else(|| {
        let snippet: String = String::from_utf8_lossy(body).chars().take(200).collect();
        snippet
    });
    let line = text.lines().next().unwrap_or_default().trim();
    if line.is_empty() {
        "(no error text)".to_owned()
    } else {
        line.trim_end_matches('.').to_owned()
    }
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: Option<String>,
    expires_in: Option<NumberOrString>,
    expires_on: Option<NumberOrString>,
}

/// Reads a success body; `now` is seconds since the epoch. The error says what is wrong
/// with the body, never its content.
fn parse_token(body: &[u8], now: u64) -> Result<AccessToken, String> {
    let parsed: TokenBody =
        serde_json::from_slice(body).map_err(|_| "the body is not a token response".to_owned())?;
    let token = parsed
        .access_token
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| "the body has no access_token".to_owned())?;
    let lifetime = if let Some(expires_in) = &parsed.expires_in {
        expires_in
            .value()
            .ok_or_else(|| "its expires_in is not a number".to_owned())?
    } else if let Some(expires_on) = &parsed.expires_on {
        // u64 seconds are far inside f64's exact integer range for any real date.
        #[allow(clippy::cast_precision_loss)]
        let now = now as f64;
        expires_on
            .value()
            .ok_or_else(|| "its expires_on is not a number".to_owned())?
            - now
    } else {
        return Err("the body has neither expires_in nor expires_on".to_owned());
    };
    if lifetime < 1.0 {
        return Err(format!(
            "the token is already expired (lifetime {lifetime:.0} s; is this machine's clock right?)"
        ));
    }
    Ok(AccessToken {
        token: Secret::new(token),
        // Truncation to whole seconds errs on the short side, as it should.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        expires_in: Duration::from_secs(lifetime as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    /// IMDS sends every number as a string; v2-style numbers are accepted too.
    #[test]
    fn expires_in_string_or_number() {
        let imds = br#"{"access_token":"a.b.c","refresh_token":"","expires_in":"3599","expires_on":"1506484173","not_before":"1506480273","resource":"https://cognitiveservices.azure.com","token_type":"Bearer"}"#;
        let token = parse_token(imds, NOW).expect("token");
        assert_eq!(token.expires_in, Duration::from_secs(3599));
        assert_eq!(token.token.expose(), "a.b.c");
        let number =
            parse_token(br#"{"access_token":"t","expires_in":86399}"#, NOW).expect("token");
        assert_eq!(number.expires_in, Duration::from_secs(86399));
    }

    /// App Service sends only `expires_on` (epoch seconds, as a string); the lifetime is
    /// counted from now, and an expiry in the past is an error, not a zero lifetime.
    #[test]
    fn expires_on_only() {
        let body = format!(
            r#"{{"access_token":"t","expires_on":"{}","resource":"r","token_type":"Bearer","client_id":"c"}}"#,
            NOW + 600
        );
        let token = parse_token(body.as_bytes(), NOW).expect("token");
        assert_eq!(token.expires_in, Duration::from_secs(600));
        let number = format!(r#"{{"access_token":"t","expires_on":{}}}"#, NOW + 5);
        assert_eq!(
            parse_token(number.as_bytes(), NOW)
                .expect("token")
                .expires_in,
            Duration::from_secs(5)
        );
        let past = format!(r#"{{"access_token":"t","expires_on":"{}"}}"#, NOW - 10);
        assert!(
            parse_token(past.as_bytes(), NOW)
                .expect_err("expired")
                .contains("expired")
        );
        let now = format!(r#"{{"access_token":"t","expires_on":"{NOW}"}}"#);
        assert!(parse_token(now.as_bytes(), NOW).is_err());
    }

    /// Bodies that are not tokens are refused without echoing the body.
    #[test]
    fn bad_bodies() {
        for body in [
            &b"<html>"[..],
            br#"{"expires_in":"10"}"#,
            br#"{"access_token":"","expires_in":"10"}"#,
            br#"{"access_token":"secret-token"}"#,
            br#"{"access_token":"secret-token","expires_in":"soon"}"#,
            br#"{"access_token":"secret-token","expires_in":"0"}"#,
            br#"{"access_token":"secret-token","expires_in":-5}"#,
        ] {
            let error = parse_token(body, NOW).expect_err("not a token");
            assert!(!error.contains("secret-token"), "{error}");
        }
    }

    /// 404, 410, 429 and 5xx are retried; 400, 401, 403 and others are final.
    #[test]
    fn retry_classification() {
        assert_eq!(classify(200), Outcome::Success);
        for status in [404, 410, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify(status), Outcome::Retry, "{status}");
        }
        for status in [400, 401, 403, 405, 409, 422, 301] {
            assert_eq!(classify(status), Outcome::Final, "{status}");
        }
    }

    /// The default backoff doubles from 0.8 s and waits about 50 s over six retries;
    /// `Retry-After` is honoured up to the longest step.
    #[test]
    fn backoff_schedule() {
        let policy = RetryPolicy::default();
        let delays: Vec<u128> = (0..policy.max_retries)
            .map(|n| policy.delay(n).as_millis())
            .collect();
        assert_eq!(delays, [800, 1600, 3200, 6400, 12800, 25600]);
        assert_eq!(delays.iter().sum::<u128>(), 50_400);
        assert_eq!(
            policy.capped(Duration::from_secs(3)),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.capped(Duration::from_secs(3600)),
            Duration::from_millis(25_600)
        );
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    /// The endpoints' error texts are found in their different shapes.
    #[test]
    fn error_texts() {
        let imds = br#"{"error":"invalid_request","error_description":"Identity not found"}"#;
        assert_eq!(error_text(imds), "invalid_request: Identity not found");
        assert!(names_missing_identity(&error_text(imds)));
        let app_service =
            br#"{"statusCode":400,"message":"Unable to load the proper Managed Identity."}"#;
        assert_eq!(
            error_text(app_service),
            "Unable to load the proper Managed Identity"
        );
        assert!(names_missing_identity(&error_text(app_service)));
        let metadata = br#"{"error":"bad_request_102","error_description":"Required metadata header not specified"}"#;
        assert!(!names_missing_identity(&error_text(metadata)));
        let app_service = br#"{"statusCode":400,"message":"No Managed Identity found for specified ClientId/ResourceId/PrincipalId."}"#;
        assert!(names_missing_identity(&error_text(app_service)));
        assert_eq!(error_text(b"upstream busy\nmore"), "upstream busy");
        assert_eq!(error_text(b""), "(no error text)");
    }

    /// The scope loses `/.default` to become the resource.
    #[test]
    fn resource_from_scope() {
        assert_eq!(
            resource_of("https://cognitiveservices.azure.com/.default"),
            "https://cognitiveservices.azure.com"
        );
        assert_eq!(resource_of("https://ai.azure.com"), "https://ai.azure.com");
    }

    /// A body echoing the identity header is redacted before it is cut to 200 characters, so no
    /// part of the header is shown (found by `tests/integration/fuzz/`).
    #[test]
    fn echoed_header_never_shown() {
        let secret = "SECRETabcdefghijklmnopqrstuvwxyz";
        let tls = crate::tls::client_config(None).expect("tls");
        let endpoint = ManagedIdentityEndpoint::AppService {
            endpoint: Url::parse("http://127.0.0.1:1/msi/token").expect("url"),
            header: Secret::new(secret),
        };
        let credential = ManagedIdentityCredential::new(
            endpoint,
            IdentitySelector::SystemAssigned,
            "https://cognitiveservices.azure.com/.default",
            tls,
        )
        .expect("credential");
        for pad in 160..200 {
            let body = format!("{}{secret} and more", "x".repeat(pad));
            let shown = credential.refusal(400, body.as_bytes()).to_string();
            assert!(!shown.contains(&secret[..8]), "{shown}");
        }
    }
}
