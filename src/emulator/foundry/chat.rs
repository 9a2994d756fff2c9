//! Chat Completions and legacy Completions: JSON answers and `data:` SSE streams, Azure-shaped.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::handler::GenCtx;
use super::model;
use super::sse;
use super::text::{self, SYSTEM_FINGERPRINT, content_filter_results, prompt_filter_results};

/// Usage in Chat Completions shape.
fn chat_usage(prompt: u64, completion: u64) -> Value {
    json!({
        "completion_tokens": completion,
        "completion_tokens_details": {"accepted_prediction_tokens": 0, "audio_tokens": 0, "reasoning_tokens": 0, "rejected_prediction_tokens": 0},
        "prompt_tokens": prompt,
        "prompt_tokens_details": {"audio_tokens": 0, "cached_tokens": 0},
        "total_tokens": prompt + completion,
    })
}

fn wants_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

fn wants_usage(body: &Value) -> bool {
    body.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// What the answer rules need from a Chat Completions request.
fn chat_ask(body: &Value) -> model::Ask {
    let messages: &[Value] = body
        .get("messages")
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice);
    let (last_user, _) = text::from_messages(body.get("messages"));
    // Every tool call the assistant made, by id, to name the results that answer them.
    let calls: Vec<(&str, &str)> = messages
        .iter()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("assistant"))
        .flat_map(|m| {
            m.get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(|c| {
            Some((
                c.get("id").and_then(Value::as_str).unwrap_or(""),
                c.pointer("/function/name").and_then(Value::as_str)?,
            ))
        })
        .collect();
    let trailing_tools = messages
        .iter()
        .rev()
        .take_while(|m| m.get("role").and_then(Value::as_str) == Some("tool"))
        .count();
    let tool_results = messages[messages.len() - trailing_tools..]
        .iter()
        .map(|m| {
            let id = m.get("tool_call_id").and_then(Value::as_str).unwrap_or("");
            let name = calls
                .iter()
                .find(|(call_id, _)| *call_id == id)
                .map_or(id, |(_, name)| name);
            (
                name.to_owned(),
                text::content_text(m.get("content").unwrap_or(&Value::Null)),
            )
        })
        .collect();
    model::Ask::openai(
        body,
        model::format(body.get("response_format"), "/json_schema/schema"),
        last_user,
        tool_results,
        calls.iter().map(|(_, name)| (*name).to_owned()).collect(),
    )
}

/// One tool call of an answer, with its id and its arguments cut into stream pieces.
struct CallOut {
    id: String,
    call: model::Call,
    pieces: Vec<String>,
}

impl CallOut {
    /// The call as a non-streamed message shows it (the `arguments` given whole).
    fn json(&self) -> Value {
        json!({"id": self.id, "type": "function", "function": {"name": self.call.name, "arguments": self.call.arguments}})
    }
}

/// `POST …/chat/completions`.
pub(crate) fn chat_completions(ctx: &GenCtx<'_>, body: &Value) -> Response {
    let (_, all) = text::from_messages(body.get("messages"));
    let answer = model::answer(&chat_ask(body));
    // Content pieces (prose by word, JSON by a few characters), or tool calls with their
    // argument pieces; the number of pieces is the completion's token count.
    let (mut chunks, calls): (Vec<String>, Vec<CallOut>) = match answer {
        model::Answer::Text {
            content,
            json: false,
        } => (text::chunks(&content, ctx.chunks), vec![]),
        model::Answer::Text {
            content,
            json: true,
        } => (model::json_chunks(&content, ctx.chunks), vec![]),
        model::Answer::ToolCalls(calls) => (
            vec![],
            calls
                .into_iter()
                .map(|call| CallOut {
                    id: text::id("call_"),
                    pieces: model::json_chunks(&call.arguments, ctx.chunks),
                    call,
                })
                .collect(),
        ),
    };
    // A text answer longer than the request allows stops there, as Azure's does, with
    // finish_reason "length" (`max_completion_tokens`, or the older `max_tokens`).
    let allowed = ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|field| body.get(*field).and_then(Value::as_u64))
        .and_then(|n| usize::try_from(n).ok());
    let cut = calls.is_empty() && allowed.is_some_and(|n| chunks.len() > n);
    if cut {
        chunks.truncate(allowed.unwrap_or_default());
    }
    let completion_tokens =
        (chunks.len() + calls.iter().map(|c| c.pieces.len()).sum::<usize>()) as u64;
    let usage = chat_usage(text::token_count(&all), completion_tokens);
    let finish = if cut {
        "length"
    } else if calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    let id = text::id("chatcmpl-");
    let created = ctx.emu.now_secs();
    if !wants_stream(body) {
        let mut message =
            json!({"annotations": [], "content": null, "refusal": null, "role": "assistant"});
        if calls.is_empty() {
            message["content"] = json!(chunks.concat());
        } else {
            message["tool_calls"] = calls.iter().map(CallOut::json).collect();
        }
        return axum::Json(json!({
            "choices": [{
                "content_filter_results": content_filter_results(),
                "finish_reason": finish,
                "index": 0,
                "logprobs": null,
                "message": message,
            }],
            "created": created,
            "id": id,
            "model": ctx.model,
            "object": "chat.completion",
            "prompt_filter_results": prompt_filter_results(),
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "usage": usage,
        }))
        .into_response();
    }
    let include_usage = wants_usage(body);
    let chunk = |choices: Value| {
        let mut c = json!({
            "choices": choices, "created": created, "id": id, "model": ctx.model,
            "object": "chat.completion.chunk", "system_fingerprint": SYSTEM_FINGERPRINT,
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        sse::data(&c)
    };
    let choice = |delta: Value, finish: Value, filter: Value| json!([{"content_filter_results": filter, "delta": delta, "finish_reason": finish, "index": 0, "logprobs": null}]);
    // Azure opens every stream with the prompt's filter verdict and no choices.
    let mut frames = vec![sse::data(&json!({
        "choices": [], "created": 0, "id": "", "model": "", "object": "",
        "prompt_filter_results": prompt_filter_results(),
    }))];
    if calls.is_empty() {
        frames.push(chunk(choice(
            json!({"content": "", "refusal": null, "role": "assistant"}),
            Value::Null,
            json!({}),
        )));
        for piece in &chunks {
            frames.push(chunk(choice(
                json!({"content": piece}),
                Value::Null,
                content_filter_results(),
            )));
        }
    } else {
        // As OpenAI streams tool calls: each call opens with its id, type, name and empty
        // arguments (the first one also with the role), then its arguments in fragments.
        for (
            index,
            CallOut {
                id: call_id,
                call,
                pieces,
            },
        ) in calls.iter().enumerate()
        {
            let head = json!([{"index": index, "id": call_id, "type": "function",
                "function": {"name": call.name, "arguments": ""}}]);
            let delta = if index == 0 {
                json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": head})
            } else {
                json!({"tool_calls": head})
            };
            frames.push(chunk(choice(delta, Value::Null, json!({}))));
            for piece in pieces {
                frames.push(chunk(choice(
                    json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                    Value::Null,
                    json!({}),
                )));
            }
        }
    }
    frames.push(chunk(choice(json!({}), json!(finish), json!({}))));
    if include_usage {
        let mut last = json!({
            "choices": [], "created": created, "id": id, "model": ctx.model,
            "object": "chat.completion.chunk", "system_fingerprint": SYSTEM_FINGERPRINT,
        });
        last["usage"] = usage;
        frames.push(sse::data(&last));
    }
    frames.push("data: [DONE]\n\n".to_owned());
    sse::stream(ctx, frames)
}

/// `POST …/completions` (legacy text completions).
pub(crate) fn completions(ctx: &GenCtx<'_>, body: &Value) -> Response {
    let prompt = match body.get("prompt") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" "),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let answer = text::answer(&prompt);
    let chunks = text::chunks(&answer, ctx.chunks);
    let prompt_tokens = text::token_count(&prompt);
    let completion_tokens = chunks.len() as u64;
    let usage = json!({"completion_tokens": completion_tokens, "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens + completion_tokens});
    let id = text::id("cmpl-");
    let created = ctx.emu.now_secs();
    let choice = |text: &str, finish: Value| json!([{"text": text, "index": 0, "finish_reason": finish, "logprobs": null, "content_filter_results": content_filter_results()}]);
    if !wants_stream(body) {
        return axum::Json(json!({
            "id": id, "object": "text_completion", "created": created, "model": ctx.model,
            "choices": choice(&chunks.concat(), json!("stop")),
            "prompt_filter_results": prompt_filter_results(),
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "usage": usage,
        }))
        .into_response();
    }
    let frame = |choices: Value| {
        sse::data(
            &json!({"id": id, "object": "text_completion", "created": created, "model": ctx.model, "choices": choices, "system_fingerprint": SYSTEM_FINGERPRINT}),
        )
    };
    let mut frames = vec![sse::data(&json!({
        "choices": [], "created": 0, "id": "", "model": "", "object": "",
        "prompt_filter_results": prompt_filter_results(),
    }))];
    let last = chunks.len() - 1;
    for (i, piece) in chunks.iter().enumerate() {
        let finish = if i == last {
            json!("stop")
        } else {
            Value::Null
        };
        frames.push(frame(choice(piece, finish)));
    }
    if wants_usage(body) {
        frames.push(sse::data(&json!({"id": id, "object": "text_completion", "created": created, "model": ctx.model, "choices": [], "usage": usage})));
    }
    frames.push("data: [DONE]\n\n".to_owned());
    sse::stream(ctx, frames)
}
