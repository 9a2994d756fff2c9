//! The error answer users see: in the OpenAI error shape so SDKs print `message`, or, on the
//! Anthropic routes, in Anthropic's shape ([`ErrorShape`]) so the Anthropic SDKs raise the
//! right exception and print it.

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

    /// `message` as sent: the cause, then `Fix: ` and the first fix step, because SDKs show
    /// `message` alone.
    fn full_message(&self) -> std::borrow::Cow<'_, str> {
        match self.fix.first() {
            Some(step) => std::borrow::Cow::Owned(format!("{} Fix: {step}", self.message)),
            None => std::borrow::Cow::Borrowed(self.message.as_str()),
        }
    }

    /// The JSON body in `shape`.
    pub fn body_in(&self, shape: ErrorShape) -> Bytes {
        match shape {
            ErrorShape::OpenAi => self.body(),
            ErrorShape::Anthropic => self.anthropic_body(),
        }
    }

    /// The body in Anthropic's shape, `{"type":"error","error":{"type":…,"message":…}}`, with
    /// the same `code`, `fix`, `upstream` and `identity` members as [`ApiError::body`]. The
    /// `type` is Anthropic's for the status ([`anthropic_type`]).
    pub fn anthropic_body(&self) -> Bytes {
        #[derive(Serialize)]
        struct Envelope<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            message: &'a str,
            code: &'a str,
            #[serde(skip_serializing_if = "<[String]>::is_empty")]
            fix: &'a [String],
            #[serde(skip_serializing_if = "Option::is_none")]
            upstream: Option<&'a UpstreamAnswer>,
            #[serde(skip_serializing_if = "Option::is_none")]
            identity: Option<&'a Identity>,
        }
        let message = self.full_message();
        let envelope = Envelope {
            kind: "error",
            error: Inner {
                kind: anthropic_type(self.status, self.kind),
                message: &message,
                code: self.code.as_str(),
                fix: &self.fix,
                upstream: self.upstream.as_ref(),
                identity: self.identity.as_ref(),
            },
        };
        serde_json::to_vec(&envelope).map(Bytes::from).unwrap_or_else(|_| Bytes::from_static(br#"{"type":"error","error":{"type":"api_error","message":"internal error","code":"internal_error"}}"#))
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
        let message = self.full_message();
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

/// Which error shape a route's clients read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorShape {
    /// `{"error":{"message":…,"type":…,"code":…}}`: OpenAI and Azure OpenAI clients.
    #[default]
    OpenAi,
    /// `{"type":"error","error":{"type":…,"message":…}}`: Anthropic clients (Claude).
    Anthropic,
}

/// Anthropic's error `type` for a refusal: by status where Anthropic has a type for it (the
/// SDKs pick the exception class by status; the type names it in the message), else from the
/// OpenAI `type`.
pub fn anthropic_type(status: StatusCode, openai_kind: &str) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500.. => "api_error",
        _ => match openai_kind {
            "authentication_error" => "authentication_error",
            "permission_error" => "permission_error",
            "rate_limit_error" | "rate_limit_exceeded" => "rate_limit_error",
            _ => "invalid_request_error",
        },
    }
}

/// A response the proxy wrote from an [`ApiError`] carries the error as an extension, so
/// the one place that knows the route's clients ([`crate::server::error_shape`]) can write
/// it in their shape. Only errors pay for it.
#[derive(Debug, Clone)]
pub struct WrittenError(pub ApiError);

impl WrittenError {
    /// Rewrites `response`'s body in `shape` when the proxy wrote it from an [`ApiError`];
    /// other responses (Azure's own answers passed on) are left as they are.
    pub fn reshape(response: &mut Response, shape: ErrorShape) {
        if shape == ErrorShape::OpenAi {
            return;
        }
        let Some(WrittenError(error)) = response.extensions_mut().remove::<WrittenError>() else {
            return;
        };
        response.headers_mut().remove(header::CONTENT_LENGTH);
        *response.body_mut() = axum::body::Body::from(error.body_in(shape));
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
        response.extensions_mut().insert(WrittenError(self));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Anthropic shape carries Anthropic's type, the message with its first fix step and
    /// the same members as the OpenAI shape; reshaping replaces a written error's body only.
    #[test]
    fn anthropic_shape() {
        let error = ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            RefusalCode::MissingRoleAssignment,
            "The identity has no role.",
        )
        .with_fix(["Assign Cognitive Services User.", "Wait five minutes."]);
        let body: serde_json::Value =
            serde_json::from_slice(&error.anthropic_body()).expect("json");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "permission_error");
        assert_eq!(
            body["error"]["message"],
            "The identity has no role. Fix: Assign Cognitive Services User."
        );
        assert_eq!(body["error"]["code"], "missing_role_assignment");
        assert_eq!(body["error"]["fix"][1], "Wait five minutes.");

        let mut response = error.into_response();
        WrittenError::reshape(&mut response, ErrorShape::Anthropic);
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.extensions().get::<WrittenError>().is_none());
        let mut plain = Response::new(axum::body::Body::from("{}"));
        WrittenError::reshape(&mut plain, ErrorShape::Anthropic);
        assert!(plain.headers().is_empty());

        for (status, kind, expected) in [
            (401, "authentication_error", "authentication_error"),
            (404, "invalid_request_error", "not_found_error"),
            (413, "invalid_request_error", "request_too_large"),
            (429, "rate_limit_exceeded", "rate_limit_error"),
            (503, "service_unavailable", "api_error"),
            (529, "api_error", "overloaded_error"),
            (400, "invalid_request_error", "invalid_request_error"),
            (405, "invalid_request_error", "invalid_request_error"),
        ] {
            let status = StatusCode::from_u16(status).expect("status");
            assert_eq!(anthropic_type(status, kind), expected, "{status}");
        }
    }
}
