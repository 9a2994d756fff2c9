//! The error answer users see, in the OpenAI error shape so SDKs print `message`.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Serialize;

use crate::claims::Identity;
use crate::diagnose::RefusalCode;

/// An error answered by the proxy itself: status, OpenAI-shaped JSON, optional headers.
///
/// Boxed so `Result<_, ApiError>` stays one pointer wide on the request path; the fields
/// are reached through `Deref` to [`ApiErrorDetails`].
#[derive(Debug, Clone)]
pub struct ApiError(Box<ApiErrorDetails>);

impl std::ops::Deref for ApiError {
    type Target = ApiErrorDetails;

    fn deref(&self) -> &ApiErrorDetails {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ApiErrorDetails {
        &mut self.0
    }
}

/// What an [`ApiError`] says.
#[derive(Debug, Clone)]
pub struct ApiErrorDetails {
    /// HTTP status.
    pub status: StatusCode,
    /// OpenAI `type`, e.g. `authentication_error`.
    pub kind: &'static str,
    /// Stable machine-readable code, e.g. `missing_role_assignment`.
    pub code: RefusalCode,
    /// One or two sentences: the cause (the body's `message` adds the first fix step).
    pub message: String,
    /// Fix steps, in order.
    pub fix: Vec<String>,
    /// What the upstream (Foundry or Entra) answered, when it answered.
    pub upstream: Option<UpstreamAnswer>,
    /// The identity in the proxy's token, when it helps.
    pub identity: Option<Identity>,
    /// Seconds to send in `retry-after`.
    pub retry_after: Option<u64>,
    /// Extra response headers (e.g. Azure's `apim-request-id`, for support cases).
    pub headers: HeaderMap,
}

/// The refusal as the upstream sent it.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamAnswer {
    /// Its HTTP status.
    pub status: u16,
    /// Its body: JSON as sent, or a string if it was not JSON.
    pub body: serde_json::Value,
}

impl UpstreamAnswer {
    /// Keeps the upstream body as JSON when it is JSON, else as (lossy) text.
    pub fn new(status: u16, body: &[u8]) -> Self {
        let body = serde_json::from_slice(body).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(body).into_owned())
        });
        Self { status, body }
    }
}

impl ApiError {
    /// An error with no fix steps, upstream answer or identity.
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: RefusalCode,
        message: impl Into<String>,
    ) -> Self {
        Self(Box::new(ApiErrorDetails {
            status,
            kind,
            code,
            message: message.into(),
            fix: Vec::new(),
            upstream: None,
            identity: None,
            retry_after: None,
            headers: HeaderMap::new(),
        }))
    }

    /// Adds fix steps.
    pub fn with_fix<I, S>(mut self, steps: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fix.extend(steps.into_iter().map(Into::into));
        self
    }

    /// A 400 for a request the proxy cannot read or route.
    pub fn bad_request(code: RefusalCode, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            code,
            message,
        )
    }

    /// The JSON body. Its `message` is the cause followed by `Fix: ` and the first fix step,
    /// because SDKs show `message` alone; `fix` lists every step.
    pub fn body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            code: &'a str,
            param: Option<()>,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            fix: &'a [String],
            #[serde(skip_serializing_if = "Option::is_none")]
            upstream: Option<&'a UpstreamAnswer>,
            #[serde(skip_serializing_if = "Option::is_none")]
            identity: Option<&'a Identity>,
        }
        // SDKs print `message` and nothing else: it carries the first fix step too.
        let message = match self.fix.first() {
            Some(step) => std::borrow::Cow::Owned(format!("{} Fix: {step}", self.message)),
            None => std::borrow::Cow::Borrowed(self.message.as_str()),
        };
        let envelope = Envelope {
            error: Inner {
                message: &message,
                kind: self.kind,
                code: self.code.as_str(),
                param: None,
                fix: &self.fix,
                upstream: self.upstream.as_ref(),
                identity: self.identity.as_ref(),
            },
        };
        serde_json::to_vec(&envelope).map(Bytes::from).unwrap_or_else(|_| Bytes::from_static(br#"{"error":{"message":"internal error","type":"api_error","code":"internal_error","param":null}}"#))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            // OpenAI's SDKs read the millisecond form first (docs/azure-facts.md §7).
            headers.insert(
                http::HeaderName::from_static("retry-after-ms"),
                HeaderValue::from(seconds.saturating_mul(1000)),
            );
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        response
    }
}
