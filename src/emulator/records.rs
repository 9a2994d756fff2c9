//! What the emulator observed, for tests: token requests and Foundry requests.

use std::collections::BTreeMap;

use serde::Serialize;

/// One POST to the token endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TokenRequestRecord {
    /// The `{tenant}` path segment, as sent.
    pub tenant: String,
    /// The request's `Content-Type`, if any.
    pub content_type: Option<String>,
    /// Form fields; `client_secret` and `client_assertion` values are replaced by `<redacted>`.
    pub form: BTreeMap<String, String>,
    /// Whether client credentials came as HTTP Basic auth.
    pub basic_auth: bool,
    /// The answer's status; 0 while the answer is still pending (a stall fault).
    pub status: u16,
    /// The AADSTS code of an error answer.
    pub aadsts: Option<u32>,
    /// When the request arrived: milliseconds since the Unix epoch on the real clock (the
    /// clock offset does not apply), so tests can see how retries are spaced.
    pub received_ms: u64,
}

/// One request to the Foundry side (anything not under the token endpoint or `/_emulator`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InferenceRecord {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// All request headers in order; an `authorization` value reads `Bearer <redacted>` and an
    /// `api-key` value reads `<redacted>`.
    pub headers: Vec<(String, String)>,
    /// Whether an `Authorization` header was present.
    pub authorization_present: bool,
    /// `appid` of the bearer token, when it decoded and verified.
    pub token_appid: Option<String>,
    /// `oid` of the bearer token, when it decoded and verified.
    pub token_oid: Option<String>,
    /// The deployment the request resolved to, if it got that far.
    pub deployment: Option<String>,
    /// Request body length in bytes.
    pub body_len: usize,
    /// The answer's status.
    pub status: u16,
    /// The named resource (`/resources/{name}/…`) the request went to; `None` for the main one.
    pub resource: Option<String>,
}
