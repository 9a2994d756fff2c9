//! The realtime API's text modality (docs/azure-facts.md §7): `session.created` at once, then
//! `session.update`, `conversation.item.create` and `response.create` answered with the GA
//! event names (`response.output_text.delta`, `response.done` with `usage`). Audio is not
//! emulated: a session reports `output_modalities: ["text"]`.

use serde_json::{Value, json};

use super::text;
use super::websocket::invalid_event;

/// A server event id.
pub(crate) fn event_id() -> String {
    text::id("event_")
}

/// The session every realtime socket starts with.
fn session(model: &str) -> Value {
    json!({"id": text::id("sess_"), "object": "realtime.session", "type": "realtime",
           "model": model, "output_modalities": ["text"], "instructions": "",
           "tools": [], "tool_choice": "auto", "max_output_tokens": "inf"})
}

/// `session.created`, the first event of a realtime socket.
pub(crate) fn session_created(model: &str) -> Value {
    json!({"type": "session.created", "event_id": event_id(), "session": session(model)})
}

/// The server events that answer one client event of type `kind`; `items` holds the
/// conversation's user texts.
pub(crate) fn answer(
    model: &str,
    items: &mut Vec<String>,
    kind: &str,
    event: &Value,
) -> Vec<Value> {
    match kind {
        "session.update" => {
            let mut updated = session(model);
            if let (Some(into), Some(Value::Object(from))) =
                (updated.as_object_mut(), event.get("session"))
            {
                into.extend(from.clone());
            }
            vec![json!({"type": "session.updated", "event_id": event_id(), "session": updated})]
        }
        "conversation.item.create" => {
            let item = event.get("item").cloned().unwrap_or(Value::Null);
            let said = item
                .get("content")
                .map(text::content_text)
                .unwrap_or_default();
            items.push(said);
            let mut item = item;
            if let Some(fields) = item.as_object_mut() {
                fields
                    .entry("id")
                    .or_insert_with(|| json!(text::id("item_")));
                fields.insert("status".into(), json!("completed"));
            }
            vec![
                json!({"type": "conversation.item.created", "event_id": event_id(),
                        "previous_item_id": null, "item": item}),
            ]
        }
        "response.create" => response(items),
        "input_audio_buffer.append" | "input_audio_buffer.commit" => vec![invalid_event(
            "invalid_value",
            "The emulator plays the text modality only: audio input is not supported.",
            event.get("event_id"),
        )],
        other => vec![invalid_event(
            "invalid_value",
            &format!(
                "Invalid value: '{other}'. Supported values are: 'session.update', 'conversation.item.create' and 'response.create'."
            ),
            event.get("event_id"),
        )],
    }
}

/// One response: created, its text as deltas, done with usage.
fn response(items: &[String]) -> Vec<Value> {
    let last = items.last().map_or("", String::as_str);
    let content = text::answer(last);
    let pieces = text::chunks(&content, None);
    let (response_id, item_id) = (text::id("resp_"), text::id("item_"));
    let input_tokens = text::token_count(&items.join(" "));
    let output_tokens = pieces.len() as u64;
    let item = |status: &str, content: Value| {
        json!({"id": item_id, "object": "realtime.item", "type": "message", "status": status,
               "role": "assistant", "content": content})
    };
    let part = |text: &str| json!({"type": "output_text", "text": text});
    let object = |status: &str, output: Value, usage: Value| {
        json!({"id": response_id, "object": "realtime.response", "status": status,
               "status_details": null, "output": output, "output_modalities": ["text"],
               "conversation_id": null, "usage": usage})
    };
    let at = json!({"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0});
    let with = |kind: &str, mut fields: Value| {
        if let (Some(into), Some(from)) = (fields.as_object_mut(), at.as_object()) {
            for (k, v) in from {
                into.entry(k.clone()).or_insert(v.clone());
            }
            into.insert("type".into(), json!(kind));
            into.insert("event_id".into(), json!(event_id()));
        }
        fields
    };
    let mut events = vec![
        json!({"type": "response.created", "event_id": event_id(),
               "response": object("in_progress", json!([]), Value::Null)}),
        json!({"type": "response.output_item.added", "event_id": event_id(),
               "response_id": response_id, "output_index": 0, "item": item("in_progress", json!([]))}),
        with("response.content_part.added", json!({"part": part("")})),
    ];
    events.extend(
        pieces
            .iter()
            .map(|piece| with("response.output_text.delta", json!({"delta": piece}))),
    );
    let done_item = item("completed", json!([part(&content)]));
    events.extend([
        with("response.output_text.done", json!({"text": content})),
        with("response.content_part.done", json!({"part": part(&content)})),
        json!({"type": "response.output_item.done", "event_id": event_id(),
               "response_id": response_id, "output_index": 0, "item": done_item}),
        json!({"type": "response.done", "event_id": event_id(), "response": object(
            "completed",
            json!([done_item]),
            json!({"total_tokens": input_tokens + output_tokens, "input_tokens": input_tokens,
                   "output_tokens": output_tokens,
                   "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "cached_tokens": 0},
                   "output_token_details": {"text_tokens": output_tokens, "audio_tokens": 0}}),
        )}),
    ]);
    events
}
