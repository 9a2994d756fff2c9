//! The smaller ops: the model list, audio transcriptions and image generations.

use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::body::MultipartForm;
use super::handler::GenCtx;
use crate::emulator::state::Emulator;

/// A 1×1 transparent PNG.
const TINY_PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// `GET …/models`: the deployments, in OpenAI's list shape (ids are what clients pass as `model`).
pub(crate) fn models(emu: &Emulator) -> Response {
    let created = emu.now_secs();
    let data: Vec<Value> = emu
        .config
        .deployments
        .iter()
        .map(|d| json!({"id": d.name, "object": "model", "created": created, "owned_by": "system"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `POST …/audio/transcriptions` (multipart): a deterministic text naming the uploaded file.
pub(crate) fn transcription(form: &MultipartForm) -> Response {
    let (name, len) = form.file.clone().unwrap_or_else(|| ("audio".to_owned(), 0));
    let text = format!(
        "Hello from the foundry-proxy emulator. This is a transcription of {name} ({len} bytes)."
    );
    match form.fields.get("response_format").map(String::as_str) {
        Some("text" | "srt" | "vtt") => ([("content-type", "text/plain; charset=utf-8")], text).into_response(),
        Some("verbose_json") => axum::Json(json!({
            "task": "transcribe", "language": "english", "duration": 1.0, "text": text, "segments": [],
        }))
        .into_response(),
        _ => axum::Json(json!({"text": text})).into_response(),
    }
}

/// `POST …/images/generations`: `n` tiny PNGs as `b64_json`.
pub(crate) fn image(ctx: &GenCtx<'_>, body: &Value) -> Response {
    let n = body
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 10);
    let prompt = body.get("prompt").and_then(Value::as_str).unwrap_or("");
    let data: Vec<Value> = (0..n)
        .map(|_| json!({"b64_json": TINY_PNG_B64, "revised_prompt": prompt, "content_filter_results": super::text::content_filter_results()}))
        .collect();
    axum::Json(json!({"created": ctx.emu.now_secs(), "data": data})).into_response()
}
