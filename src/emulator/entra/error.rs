//! Entra ID's error answer: the AADSTS JSON body and the headers that come with it.

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::emulator::util::{entra_timestamp, uuid};

/// `x-ms-ests-server` as Entra sends it (a build number and a slice name).
pub(crate) const ESTS_SERVER: &str = "2.1.21454.3 - SEC ProdSlices";

/// An error the token endpoint answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntraError {
    pub(crate) status: StatusCode,
    /// The OAuth `error` value, e.g. `invalid_client`.
    pub(crate) error: &'static str,
    /// The AADSTS number; `None` for the emulator's own "unsupported" answer.
    pub(crate) code: Option<u32>,
    /// The message after `AADSTSnnn: `, verbatim from Entra where known.
    pub(crate) message: String,
}

impl EntraError {
    pub(crate) fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            code: Some(code),
            message: message.into(),
        }
    }

    /// 400 invalid_request.
    pub(crate) fn bad_request(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", code, message)
    }

    /// 401 invalid_client.
    pub(crate) fn invalid_client(code: u32, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
    }

    /// Renders the body; `correlation_id` is the caller's `client-request-id` when it sent one,
    /// and `now` the emulator's clock (epoch seconds) for the timestamps.
    pub(crate) fn into_response_with(self, correlation_id: Option<String>, now: u64) -> Response {
        let trace_id = uuid();
        let correlation_id = correlation_id.unwrap_or_else(uuid);
        let timestamp = entra_timestamp(now);
        let prefix = self
            .code
            .map(|c| format!("AADSTS{c}: "))
            .unwrap_or_default();
        let description = format!(
            "{prefix}{}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
            self.message
        );
        let mut body = json!({
            "error": self.error,
            "error_description": description,
            "error_codes": self.code.map(|c| vec![c]).unwrap_or_default(),
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
        });
        if let Some(code) = self.code {
            body["error_uri"] = json!(format!(
                "https://login.microsoftonline.com/error?code={code}"
            ));
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        entra_headers(response.headers_mut(), &trace_id);
        response
    }
}

/// Headers Entra puts on every token-endpoint answer.
pub(crate) fn entra_headers(headers: &mut HeaderMap, trace_id: &str) {
    headers.insert(
        "cache-control",
        HeaderValue::from_static("no-store, no-cache"),
    );
    headers.insert("pragma", HeaderValue::from_static("no-cache"));
    headers.insert(
        "content-type",
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(trace_id) {
        headers.insert("x-ms-request-id", v);
    }
    headers.insert("x-ms-ests-server", HeaderValue::from_static(ESTS_SERVER));
}
