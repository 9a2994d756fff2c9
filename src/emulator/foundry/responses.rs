//! The Responses API: a JSON `response` object, or `event:`/`data:` SSE in OpenAI's event order.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::handler::GenCtx;
use super::model;
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

/// What the answer rules need from a Responses request: `function_call` items name the tools
/// called, and trailing `function_call_output` items are the results that answer them.
fn responses_ask(body: &Value, last_user: String) -> model::Ask {
    let items: &[Value] = body
        .get("input")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    fn kind(item: &Value) -> &str {
        item.get("type").and_then(Value::as_str).unwrap_or("")
    }
    let calls: Vec<(&str, &str)> = items
        .iter()
        .filter(|i| kind(i) == "function_call")
        .filter_map(|i| {
            Some((
                i.get("call_id").and_then(Value::as_str).unwrap_or(""),
                i.get("name").and_then(Value::as_str)?,
            ))
        })
        .collect();
    let trailing = items
        .iter()
        .rev()
        .take_while(|i| kind(i) == "function_call_output")
        .count();
    let tool_results = items[items.len() - trailing..]
        .iter()
        .map(|i| {
            let id = i.get("call_id").and_then(Value::as_str).unwrap_or("");
            // With `previous_response_id` the call is not in the input: named by its call id.
            let name = calls
                .iter()
                .find(|(call_id, _)| *call_id == id)
                .map_or(id, |(_, name)| name);
            let output = match i.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(other) => text::content_text(other),
                None => String::new(),
            };
            (name.to_owned(), output)
        })
        .collect();
    model::Ask::openai(
        body,
        model::format(body.pointer("/text/format"), "/schema"),
        last_user,
        tool_results,
        calls.iter().map(|(_, name)| (*name).to_owned()).collect(),
    )
}

/// The request's `text` settings as the response object reports them, `format` defaulting to text.
fn reported_text(body: &Value) -> Value {
    let mut text = body
        .get("text")
        .filter(|t| t.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}));
    if text.get("format").is_none() {
        text["format"] = json!({"type": "text"});
    }
    text
}

/// The request's tools as the response object reports them: function tools get the defaults
/// the service fills in (`strict` true, `description` null).
fn reported_tools(body: &Value) -> Value {
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    tools
        .into_iter()
        .map(|mut t| {
            if t.get("type").and_then(Value::as_str) == Some("function")
                && let Some(o) = t.as_object_mut()
            {
                o.entry("strict").or_insert(json!(true));
                o.entry("description").or_insert(Value::Null);
            }
            t
        })
        .collect()
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
        "parallel_tool_calls": body.get("parallel_tool_calls").cloned().unwrap_or(json!(true)),
        "previous_response_id": body.get("previous_response_id").cloned().unwrap_or(Value::Null),
        "reasoning": {"effort": null, "summary": null},
        "store": body.get("store").cloned().unwrap_or(json!(true)),
        "temperature": body.get("temperature").cloned().unwrap_or(json!(1.0)),
        "text": reported_text(body),
        "tool_choice": body.get("tool_choice").cloned().unwrap_or(json!("auto")),
        "tools": reported_tools(body),
        "top_p": body.get("top_p").cloned().unwrap_or(json!(1.0)),
        "truncation": "disabled",
        "usage": usage,
        "user": null,
        "metadata": body.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// One output item of the answer, with its stream pieces.
enum Item {
    Message {
        id: String,
        pieces: Vec<String>,
    },
    Call {
        id: String,
        call_id: String,
        call: model::Call,
        pieces: Vec<String>,
    },
}

impl Item {
    fn done(&self) -> Value {
        match self {
            Item::Message { id, pieces } => {
                json!({"id": id, "type": "message", "status": "completed", "role": "assistant",
                       "content": [output_text(&pieces.concat())]})
            }
            Item::Call {
                id, call_id, call, ..
            } => json!({"id": id, "type": "function_call", "status": "completed",
                        "arguments": call.arguments, "call_id": call_id, "name": call.name}),
        }
    }
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// `POST …/responses`: the `response` object, or its events as SSE when `stream` is set.
pub(crate) fn responses(ctx: &GenCtx<'_>, body: &Value) -> Response {
    let (completed, events) = response_events(ctx, body);
    if !body.get("stream").and_then(Value::as_bool).unwrap_or(false) {
        return axum::Json(completed).into_response();
    }
    let frames = events
        .iter()
        .map(|data| sse::event(data["type"].as_str().unwrap_or_default(), data))
        .collect();
    sse::stream(ctx, frames)
}

/// The answer to a Responses request: the completed `response` object, and the events of its
/// stream in OpenAI's order, each with its `type` and `sequence_number` (the SSE stream and
/// the WebSocket mode send the same events).
pub(crate) fn response_events(ctx: &GenCtx<'_>, body: &Value) -> (Value, Vec<Value>) {
    let (last_user, all) = input_text(body);
    let items: Vec<Item> = match model::answer(&responses_ask(body, last_user)) {
        model::Answer::Text { content, json } => vec![Item::Message {
            id: format!("msg_{}", text::id("")),
            pieces: if json {
                model::json_chunks(&content, ctx.chunks)
            } else {
                text::chunks(&content, ctx.chunks)
            },
        }],
        model::Answer::ToolCalls(calls) => calls
            .into_iter()
            .map(|call| Item::Call {
                id: format!("fc_{}", text::id("")),
                call_id: text::id("call_"),
                pieces: model::json_chunks(&call.arguments, ctx.chunks),
                call,
            })
            .collect(),
    };
    let input_tokens = text::token_count(&all);
    let output_tokens = items
        .iter()
        .map(|i| match i {
            Item::Message { pieces, .. } | Item::Call { pieces, .. } => pieces.len() as u64,
        })
        .sum::<u64>();
    let usage = json!({
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    });
    let id = format!("resp_{}", text::id(""));
    let created = ctx.emu.now_secs();
    let completed = response_object(
        &id,
        created,
        ctx.model,
        body,
        "completed",
        items.iter().map(Item::done).collect(),
        usage,
    );
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
    ];
    for (index, item) in items.iter().enumerate() {
        match item {
            Item::Message { id: msg_id, pieces } => {
                let full = pieces.concat();
                events.push((
                    "response.output_item.added",
                    json!({"output_index": index, "item": {"id": msg_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}}),
                ));
                events.push((
                    "response.content_part.added",
                    json!({"item_id": msg_id, "output_index": index, "content_index": 0, "part": output_text("")}),
                ));
                for piece in pieces {
                    events.push((
                        "response.output_text.delta",
                        json!({"item_id": msg_id, "output_index": index, "content_index": 0, "delta": piece, "logprobs": []}),
                    ));
                }
                events.push((
                    "response.output_text.done",
                    json!({"item_id": msg_id, "output_index": index, "content_index": 0, "text": full, "logprobs": []}),
                ));
                events.push((
                    "response.content_part.done",
                    json!({"item_id": msg_id, "output_index": index, "content_index": 0, "part": output_text(&full)}),
                ));
            }
            Item::Call {
                id: item_id,
                call_id,
                call,
                pieces,
            } => {
                events.push((
                    "response.output_item.added",
                    json!({"output_index": index, "item": {"id": item_id, "type": "function_call", "status": "in_progress", "arguments": "", "call_id": call_id, "name": call.name}}),
                ));
                for piece in pieces {
                    events.push((
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id, "output_index": index, "delta": piece}),
                    ));
                }
                events.push((
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": index, "name": call.name, "arguments": call.arguments}),
                ));
            }
        }
        events.push((
            "response.output_item.done",
            json!({"output_index": index, "item": item.done()}),
        ));
    }
    events.push(("response.completed", json!({"response": completed.clone()})));

    let events = events
        .into_iter()
        .enumerate()
        .map(|(seq, (name, mut data))| {
            data["type"] = json!(name);
            data["sequence_number"] = json!(seq);
            data
        })
        .collect();
    (completed, events)
}
