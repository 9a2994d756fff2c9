//! One small JSON client for ARM and Graph: a bearer token per plane, Azure's error body
//! (`{"error":{"code","message"}}`, the same on both) read into an [`AzureAnswer`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::refusal::{AzureAnswer, Refusal};
use crate::secret::Secret;

/// How long one management call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A failed call: Azure answered with an error, or could not be asked.
#[derive(Debug)]
pub enum CallError {
    /// Azure answered with this error.
    Answer(AzureAnswer),
    /// No usable answer (network, TLS, not JSON).
    Transport(String),
}

impl CallError {
    /// The error `code` Azure answered with, if it answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Answer(a) => Some(&a.code),
            Self::Transport(_) => None,
        }
    }

    /// A refusal saying what was being done; 403s get `denied`'s explanation when given.
    pub fn refusal(self, what: &str) -> Refusal {
        match self {
            Self::Answer(answer) => Refusal::azure(what, answer),
            Self::Transport(detail) => Refusal::unreachable(what, &detail),
        }
    }
}

/// A client for one plane (ARM or Graph) acting as the operator.
#[derive(Debug, Clone)]
pub struct Plane {
    http: reqwest::Client,
    base: String,
    token: Arc<Secret>,
}

impl Plane {
    /// A client for `base` (no trailing slash) sending `token`.
    pub fn new(http: reqwest::Client, base: &str, token: Secret) -> Self {
        Self {
            http,
            base: base.to_owned(),
            token: Arc::new(token),
        }
    }

    /// `GET base+path` with query pairs.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, CallError> {
        self.send(reqwest::Method::GET, path, query, None).await
    }

    /// `method base+path` with a JSON body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let mut url = url::Url::parse(&format!("{}{path}", self.base))
            .map_err(|e| CallError::Transport(format!("bad URL {}{path}: {e}", self.base)))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose())
            .timeout(CALL_TIMEOUT);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| CallError::Transport(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| CallError::Transport(e.without_url().to_string()))?;
        if (200..300).contains(&status) {
            if bytes.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| CallError::Transport(format!("answer {status} is not JSON: {e}")));
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let field = |name: &str| {
            body.pointer(&format!("/error/{name}"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let mut message = field("message");
        if message.is_empty() {
            message = String::from_utf8_lossy(&bytes).chars().take(300).collect();
        }
        Err(CallError::Answer(AzureAnswer {
            status,
            code: field("code"),
            message,
        }))
    }
}

/// The items of a list answer (`{"value":[…]}`).
pub fn items(list: &Value) -> Vec<Value> {
    list.get("value")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// A string field (JSON pointer) of an object, or "".
pub fn text(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}
