//! Claude's Messages API as Foundry serves it at `/anthropic/v1/messages` and
//! `/anthropic/v1/messages/count_tokens` (docs/azure-facts.md §7), in Anthropic's wire format:
//! JSON messages, the SSE event sequence of a stream, `tool_use` blocks from the shared answer
//! rules (`model`), and token counts that agree between all three.

use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::FoundryError;
use super::handler::GenCtx;
use super::model;
use super::sse;
use super::text;

/// `POST /anthropic/v1/messages`: a message, or its stream when `stream` is true.
pub(crate) fn messages(ctx: &GenCtx<'_>, body: &Value) -> Result<Response, FoundryError> {
    check_messages(body)?;
    let max_tokens = body
        .get("max_tokens")
        .and_then(Value::as_u64)
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            FoundryError::anthropic_invalid(if body.get("max_tokens").is_some() {
                "max_tokens: Input should be a valid integer greater than or equal to 1"
            } else {
                "max_tokens: Field required"
            })
        })?;
    let input_tokens = input_tokens(body);
    let (blocks, mut stop_reason) = match model::answer(&ask(body)) {
        model::Answer::Text { content, .. } => (
            vec![Block::Text(text::chunks(&content, ctx.chunks))],
            "end_turn",
        ),
        model::Answer::ToolCalls(calls) => (
            calls
                .into_iter()
                .map(|call| Block::ToolUse {
                    id: text::id("toolu_"),
                    pieces: model::json_chunks(&call.arguments, ctx.chunks),
                    call,
                })
                .collect(),
            "tool_use",
        ),
    };
    // A text answer longer than `max_tokens` is cut there, as the model stops mid-answer.
    let blocks = match blocks.as_slice() {
        [Block::Text(pieces)] if pieces.len() as u64 > max_tokens => {
            stop_reason = "max_tokens";
            let kept = usize::try_from(max_tokens).unwrap_or(usize::MAX);
            vec![Block::Text(pieces[..kept].to_vec())]
        }
        _ => blocks,
    };
    // Every piece (a word of prose, a few characters of tool input) is one output token.
    let output_tokens = blocks.iter().map(|b| b.pieces().len() as u64).sum::<u64>();
    let id = text::id("msg_");
    let usage = |output: u64| {
        json!({
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output,
        })
    };
    let message = |content: Value, stop: Value, output: u64| {
        json!({
            "id": id, "type": "message", "role": "assistant", "model": ctx.model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": usage(output),
        })
    };
    let wants_stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    if !wants_stream {
        let content: Vec<Value> = blocks.iter().map(Block::json).collect();
        let body = message(json!(content), json!(stop_reason), output_tokens);
        return Ok(with_request_id(axum::Json(body).into_response()));
    }
    // Anthropic's order: message_start (input tokens, an output count of 1), each block's
    // start / deltas / stop with one ping after the first start, then message_delta with the
    // stop reason and the cumulative output tokens, then message_stop.
    let mut frames = vec![sse::event(
        "message_start",
        &json!({"type": "message_start", "message": message(json!([]), Value::Null, 1)}),
    )];
    for (index, block) in blocks.iter().enumerate() {
        frames.push(sse::event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block.head()}),
        ));
        if index == 0 {
            frames.push(sse::event("ping", &json!({"type": "ping"})));
        }
        for piece in block.pieces() {
            let delta = match block {
                Block::Text(_) => json!({"type": "text_delta", "text": piece}),
                Block::ToolUse { .. } => json!({"type": "input_json_delta", "partial_json": piece}),
            };
            frames.push(sse::event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        frames.push(sse::event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ));
    }
    frames.push(sse::event(
        "message_delta",
        &json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens},
        }),
    ));
    frames.push(sse::event("message_stop", &json!({"type": "message_stop"})));
    Ok(with_request_id(sse::stream(ctx, frames)))
}

/// `POST /anthropic/v1/messages/count_tokens`: `{"input_tokens": N}`, the same N a message
/// for this request reports in `usage.input_tokens`.
pub(crate) fn count_tokens(body: &Value) -> Result<Response, FoundryError> {
    check_messages(body)?;
    let counted = json!({"input_tokens": input_tokens(body)});
    Ok(with_request_id(axum::Json(counted).into_response()))
}

/// One content block of the answer, with the pieces it streams in.
enum Block {
    /// Prose, one piece per word (or as `x-emulator-chunks` asks).
    Text(Vec<String>),
    /// A tool call; `pieces` are its input JSON in fragments.
    ToolUse {
        id: String,
        call: model::Call,
        pieces: Vec<String>,
    },
}

impl Block {
    fn pieces(&self) -> &[String] {
        match self {
            Block::Text(pieces) | Block::ToolUse { pieces, .. } => pieces,
        }
    }

    /// The block as a non-streamed message shows it.
    fn json(&self) -> Value {
        match self {
            Block::Text(pieces) => json!({"type": "text", "text": pieces.concat()}),
            Block::ToolUse { id, call, .. } => json!({
                "type": "tool_use", "id": id, "name": call.name,
                "input": serde_json::from_str::<Value>(&call.arguments).unwrap_or_else(|_| json!({})),
            }),
        }
    }

    /// The block as its `content_block_start` event shows it: empty, filled by the deltas.
    fn head(&self) -> Value {
        match self {
            Block::Text(_) => json!({"type": "text", "text": ""}),
            Block::ToolUse { id, call, .. } => {
                json!({"type": "tool_use", "id": id, "name": call.name, "input": {}})
            }
        }
    }
}

/// The `messages` array both routes need, refused in Anthropic's shape when absent or empty.
fn check_messages(body: &Value) -> Result<(), FoundryError> {
    if !body.is_object() {
        return Err(FoundryError::anthropic_invalid(
            "The request body is not valid JSON.",
        ));
    }
    match body.get("messages").and_then(Value::as_array) {
        Some(list) if !list.is_empty() => Ok(()),
        Some(_) => Err(FoundryError::anthropic_invalid(
            "messages: at least one message is required",
        )),
        None => Err(FoundryError::anthropic_invalid("messages: Field required")),
    }
}

/// The request's input tokens: one per word of the system prompt, every message's text, tool
/// inputs and results, and the tool definitions. Shared by messages and count_tokens.
fn input_tokens(body: &Value) -> u64 {
    let mut words = vec![block_text(body.get("system").unwrap_or(&Value::Null))];
    for message in body
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        words.push(block_text(message.get("content").unwrap_or(&Value::Null)));
    }
    for tool in body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for field in ["name", "description"] {
            if let Some(s) = tool.get(field).and_then(Value::as_str) {
                words.push(s.to_owned());
            }
        }
    }
    text::token_count(&words.join(" "))
}

/// All the text of a `content` (a string or blocks): text, tool inputs as JSON, tool results.
fn block_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("tool_use") => b.get("input").map(Value::to_string).unwrap_or_default(),
                Some("tool_result") => block_text(b.get("content").unwrap_or(&Value::Null)),
                _ => b
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// What the answer rules need from a Messages request.
fn ask(body: &Value) -> model::Ask {
    let messages: &[Value] = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let role = |m: &Value| m.get("role").and_then(Value::as_str).map(str::to_owned);
    let blocks = |m: &'_ Value| -> Vec<Value> {
        m.get("content")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let of_type = |b: &Value, t: &str| b.get("type").and_then(Value::as_str) == Some(t);
    // Every tool_use the assistant made, by id, to name the tool_result blocks answering them.
    let calls: Vec<(String, String)> = messages
        .iter()
        .filter(|m| role(m).as_deref() == Some("assistant"))
        .flat_map(blocks)
        .filter(|b| of_type(b, "tool_use"))
        .filter_map(|b| {
            Some((
                b.get("id").and_then(Value::as_str).unwrap_or("").to_owned(),
                b.get("name").and_then(Value::as_str)?.to_owned(),
            ))
        })
        .collect();
    let last = messages
        .last()
        .filter(|m| role(m).as_deref() == Some("user"));
    let tool_results = last
        .map(blocks)
        .unwrap_or_default()
        .iter()
        .filter(|b| of_type(b, "tool_result"))
        .map(|b| {
            let id = b.get("tool_use_id").and_then(Value::as_str).unwrap_or("");
            let name = calls
                .iter()
                .find(|(call_id, _)| call_id == id)
                .map_or(id, |(_, name)| name.as_str());
            (
                name.to_owned(),
                block_text(b.get("content").unwrap_or(&Value::Null)),
            )
        })
        .collect();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| role(m).as_deref() == Some("user"))
        .map(|m| text::content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    // Client tools carry an `input_schema`; server tools (web search, …) are not called.
    let tools = body
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(model::Tool {
                name: t.get("name").and_then(Value::as_str)?.to_owned(),
                parameters: t.get("input_schema").filter(|s| s.is_object())?.clone(),
            })
        })
        .collect();
    let choice = body.get("tool_choice");
    model::Ask {
        tools,
        choice: match choice.and_then(|c| c.get("type")).and_then(Value::as_str) {
            Some("none") => model::ToolChoice::None,
            Some("any") => model::ToolChoice::Required,
            Some("tool") => choice
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .map_or(model::ToolChoice::Auto, |n| {
                    model::ToolChoice::Named(n.to_owned())
                }),
            _ => model::ToolChoice::Auto,
        },
        parallel: choice
            .and_then(|c| c.get("disable_parallel_tool_use"))
            .and_then(Value::as_bool)
            != Some(true),
        format: model::Format::Text,
        last_user,
        tool_results,
        called: calls.into_iter().map(|(_, name)| name).collect(),
    }
}

/// Anthropic's answers carry a `request-id` header (`req_…`).
fn with_request_id(mut response: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&text::id("req_")) {
        response.headers_mut().insert("request-id", v);
    }
    response
}
