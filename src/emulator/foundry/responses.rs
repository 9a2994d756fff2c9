//! The Responses API: a JSON `response` object, or `event:`/`data:` SSE in OpenAI's event order.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::handler::GenCtx;
use super::sse;
use super::text;

/// `(last user text, all input text)` of a Responses `input` (a string or a list of items).
fn input_text(body: &Value) -> (String, String) {
    let instructions = body
        .get("instructions")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (last, all) = match body.get("input") {
        Some(Value::String(s)) => (s.clone(), s.clone()),
        Some(items @ Value::Array(_)) => text::from_messages(Some(items)),
        _ => (String::new(), String::new()),
    };
    (last, format!("{instructions} {all}"))
}

/// The `response` object, in the given status, with the given output items and usage.
fn response_object(
    id: &str,
    created: u64,
    model: &str,
    body: &Value,
    status: &str,
    output: Value,
    usage: Value,
) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": body.get("instructions").cloned().unwrap_or(Value::Null),
        "max_output_tokens": body.get("max_output_tokens").cloned().unwrap_or(Value::Null),
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": body.get("previous_response_id").cloned().unwrap_or(Value::Null),
        "reasoning": {"effort": null, "summary": null},
        "store": body.get("store").cloned().unwrap_or(json!(true)),
        "temperature": body.get("temperature").cloned().unwrap_or(json!(1.0)),
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": body.get("top_p").cloned().unwrap_or(json!(1.0)),
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": body.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// `POST …/responses`.
pub(crate) fn responses(ctx: &GenCtx<'_>, body: &Value) -> Response {
    let (last_user, all) = input_text(body);
    let answer = text::answer(&last_user);
    let chunks = text::chunks(&answer, ctx.chunks);
    let full = chunks.concat();
    let input_tokens = text::token_count(&all);
    let output_tokens = chunks.len() as u64;
    let usage = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    });
    let id = format!("resp_{}", text::id(""));
    let msg_id = format!("msg_{}", text::id(""));
    let created = ctx.emu.now_secs();
    let part = json!({"type": "output_text", "text": full, "annotations": [], "logprobs": []});
    let item = |status: &str, content: Value| json!({"id": msg_id, "type": "message", "status": status, "role": "assistant", "content": content});
    let done_item = item("completed", json!([part]));
    let completed = response_object(
        &id,
        created,
        ctx.model,
        body,
        "completed",
        json!([done_item]),
        usage,
    );
    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        return axum::Json(completed).into_response();
    }

    let in_progress = response_object(
        &id,
        created,
        ctx.model,
        body,
        "in_progress",
        json!([]),
        Value::Null,
    );
    let mut events: Vec<(&str, Value)> = vec![
        ("response.created", json!({"response": in_progress})),
        ("response.in_progress", json!({"response": in_progress})),
        (
            "response.output_item.added",
            json!({"output_index": 0, "item": item("in_progress", json!([]))}),
        ),
        (
            "response.content_part.added",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0,
                   "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
        ),
    ];
    for piece in &chunks {
        events.push((
            "response.output_text.delta",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "delta": piece, "logprobs": []}),
        ));
    }
    events.push((
        "response.output_text.done",
        json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "text": full, "logprobs": []}),
    ));
    events.push((
        "response.content_part.done",
        json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "part": part}),
    ));
    events.push((
        "response.output_item.done",
        json!({"output_index": 0, "item": done_item}),
    ));
    events.push(("response.completed", json!({"response": completed})));

    let frames = events
        .into_iter()
        .enumerate()
        .map(|(seq, (name, mut data))| {
            data["type"] = json!(name);
            data["sequence_number"] = json!(seq);
            sse::event(name, &data)
        })
        .collect();
    sse::stream(ctx, frames)
}
