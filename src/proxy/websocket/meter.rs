//! Usage on a WebSocket: each `response.create` from the client counts as a request against
//! its key's limits; each `response.done` (realtime) or `response.completed` / `.incomplete` /
//! `.failed` (Responses mode) from upstream carries `response.usage`, counted toward the key's
//! token limits, the metrics and `/status`. Messages are looked into only when their bytes name
//! such an event, so audio and deltas pass untouched.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::keys::KeyEntry;
use crate::proxy::account::UsageSink;
use crate::proxy::admission::within_limits;
use crate::proxy::{ProxyState, key_rules};
use crate::usage;

/// One socket's meter.
#[derive(Debug)]
pub(super) struct Meter {
    pub(super) state: Arc<ProxyState>,
    pub(super) key: Option<Arc<KeyEntry>>,
    /// The deployment the handshake named (realtime), or the last `response.create`'s `model`.
    pub(super) model: String,
    /// Where a finished response's usage is counted.
    pub(super) sink: UsageSink,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "type")]
    kind: Option<String>,
    model: Option<String>,
    event_id: Option<Value>,
    response: Option<Inner>,
}

#[derive(Deserialize)]
struct Inner {
    usage: Option<Value>,
}

impl Meter {
    /// A client message: `Ok(Some(text))` is the message to send instead (a Responses-mode
    /// `model` that is an alias, replaced by its deployment); `Err` holds the `error` event to
    /// answer instead of sending it on (the key is over a limit).
    pub(super) async fn client_sent(&mut self, text: &str) -> Result<Option<String>, String> {
        if memchr::memmem::find(text.as_bytes(), b"response.create").is_none() {
            return Ok(None);
        }
        let Ok(head) = serde_json::from_str::<Head>(text) else {
            return Ok(None);
        };
        if head.kind.as_deref() != Some("response.create") {
            return Ok(None);
        }
        let mut rewritten = None;
        if let Some(model) = head.model {
            let deployment = self.state.target.alias(&model);
            rewritten = deployment
                .and_then(|d| crate::proxy::model::with_model(text.as_bytes(), d))
                .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok());
            self.model = model;
        }
        let allowed = match &self.key {
            Some(key) => {
                key_rules::allow_model(key, Some(&self.model), self.state.target.aliases())
            }
            None => Ok(()),
        };
        let admitted = match allowed {
            Ok(()) => within_limits(&self.state, self.key.as_ref()).await,
            Err(refused) => Err(refused),
        };
        admitted.map_err(|refusal| error_event(&refusal, head.event_id))?;
        Ok(rewritten)
    }

    /// An upstream message: counts the usage of a finished response.
    pub(super) fn upstream_sent(&self, text: &str) {
        let bytes = text.as_bytes();
        if memchr::memmem::find(bytes, b"\"usage\"").is_none()
            || memchr::memmem::find(bytes, b"\"response.").is_none()
        {
            return;
        }
        let Ok(head) = serde_json::from_str::<Head>(text) else {
            return;
        };
        let finished = matches!(
            head.kind.as_deref(),
            Some(
                "response.done" | "response.completed" | "response.incomplete" | "response.failed"
            )
        );
        let seen = head
            .response
            .and_then(|r| r.usage)
            .as_ref()
            .and_then(usage::from_value);
        if let (true, Some(seen)) = (finished, seen) {
            let deployment = self.state.target.alias(&self.model);
            self.sink
                .record(self.key.as_deref(), &self.model, deployment, &seen);
        }
    }
}

/// A refusal as a realtime `error` event (the socket stays open), naming the client's event.
fn error_event(refusal: &ApiError, event_id: Option<Value>) -> String {
    let body: Value = serde_json::from_slice(&refusal.body()).unwrap_or(Value::Null);
    let mut event = json!({"type": "error", "status": refusal.status.as_u16(),
                           "error": body.get("error").cloned().unwrap_or(Value::Null)});
    if let Some(id) = event_id {
        event["error"]["event_id"] = id;
    }
    event.to_string()
}
