//! Chat Completions and legacy Completions: JSON answers and `data:` SSE streams, Azure-shaped.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::handler::GenCtx;
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

/// `POST …/chat/completions`.
pub(crate) fn chat_completions(ctx: &GenCtx<'_>, body: &Value) -> Response {
    let (last_user, all) = text::from_messages(body.get("messages"));
    let answer = text::answer(&last_user);
    let chunks = text::chunks(&answer, ctx.chunks);
    let usage = chat_usage(text::token_count(&all), chunks.len() as u64);
    let id = text::id("chatcmpl-");
    let created = ctx.emu.now_secs();
    if !wants_stream(body) {
        let content = chunks.concat();
        return axum::Json(json!({
            "choices": [{
                "content_filter_results": content_filter_results(),
                "finish_reason": "stop",
                "index": 0,
                "logprobs": null,
                "message": {"annotations": [], "content": content, "refusal": null, "role": "assistant"},
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
    frames.push(chunk(choice(json!({}), json!("stop"), json!({}))));
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
