//! The smaller ops: the model list, audio transcriptions and translations, and image
//! generations (with the generated images served back at `/_emulator/images/{id}.png`).

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::body::MultipartForm;
use super::error::FoundryError;
use super::handler::GenCtx;
use crate::emulator::state::Emulator;
use crate::emulator::util::uuid;

/// A 1×1 transparent PNG.
const TINY_PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

/// The audio formats Whisper-style deployments answer in, as OpenAI's 400 lists them.
const AUDIO_FORMATS: &[&str] = &["json", "text", "srt", "verbose_json", "vtt"];

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

/// Which audio op is answered: the text differs, the formats are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AudioTask {
    /// `audio/transcriptions`: the text in the spoken language.
    Transcribe,
    /// `audio/translations`: the text in English, whatever was spoken.
    Translate,
}

/// `POST …/audio/transcriptions` and `…/audio/translations` (multipart): a deterministic text
/// naming the uploaded file, in the `response_format` asked for. `json` and `verbose_json` are
/// JSON; `text`, `srt` and `vtt` are `text/plain`, as OpenAI and Azure send them.
pub(crate) fn audio(form: &MultipartForm, task: AudioTask) -> Result<Response, FoundryError> {
    let (name, len) = form.file.clone().unwrap_or_else(|| ("audio".to_owned(), 0));
    let (text, task_name) = match task {
        AudioTask::Transcribe => (
            format!(
                "Hello from the foundry-proxy emulator. This is a transcription of {name} ({len} bytes)."
            ),
            "transcribe",
        ),
        AudioTask::Translate => (
            format!(
                "Hello from the foundry-proxy emulator. This is an English translation of {name} ({len} bytes)."
            ),
            "translate",
        ),
    };
    let plain =
        |body: String| ([("content-type", "text/plain; charset=utf-8")], body).into_response();
    let format = form
        .fields
        .get("response_format")
        .map_or("json", String::as_str);
    Ok(match format {
        "json" => axum::Json(json!({"text": text})).into_response(),
        "text" => plain(format!("{text}\n")),
        "srt" => plain(format!("1\n00:00:00,000 --> 00:00:01,000\n{text}\n\n")),
        "vtt" => plain(format!(
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n\n"
        )),
        "verbose_json" => axum::Json(json!({
            "task": task_name,
            "language": "english",
            "duration": 1.0,
            "text": text,
            "segments": [{
                "id": 0, "seek": 0, "start": 0.0, "end": 1.0, "text": text, "tokens": [],
                "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.0,
                "no_speech_prob": 0.01,
            }],
        }))
        .into_response(),
        other => {
            return Err(FoundryError::BadRequest {
                message: format!("'{other}' is not one of {AUDIO_FORMATS:?} - 'response_format'"),
            });
        }
    })
}

/// `POST …/images/generations`: `n` tiny PNGs. DALL·E deployments answer with a `url` unless
/// `response_format` is `b64_json` (OpenAI's default is `url`); GPT-image deployments always
/// answer with `b64_json`. URLs point at `{base}/_emulator/images/{id}.png`, which serves the PNG.
pub(crate) fn image(ctx: &GenCtx<'_>, body: &Value, base: &str) -> Result<Response, FoundryError> {
    let n = body
        .get("n")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 10);
    let prompt = body.get("prompt").and_then(Value::as_str).unwrap_or("");
    let as_url = if ctx.model.starts_with("dall-e") {
        match body.get("response_format").and_then(Value::as_str) {
            None | Some("url") => true,
            Some("b64_json") => false,
            Some(other) => {
                return Err(FoundryError::BadRequest {
                    message: format!(
                        "'{other}' is not one of ['url', 'b64_json'] - 'response_format'"
                    ),
                });
            }
        }
    } else {
        false
    };
    let data: Vec<Value> = (0..n)
        .map(|_| {
            let mut item = json!({
                "revised_prompt": prompt,
                "content_filter_results": super::text::content_filter_results(),
            });
            item[if as_url { "url" } else { "b64_json" }] = if as_url {
                json!(format!("{base}/_emulator/images/{}.png", uuid()))
            } else {
                json!(TINY_PNG_B64)
            };
            item
        })
        .collect();
    Ok(axum::Json(json!({"created": ctx.emu.now_secs(), "data": data})).into_response())
}

/// `GET /_emulator/images/{id}.png`: the PNG behind a generated image URL (every image the
/// emulator generates is the same 1×1 PNG, so any `*.png` name answers it).
pub(crate) async fn image_file(Path(file): Path<String>) -> Response {
    let png = file
        .strip_suffix(".png")
        .filter(|id| !id.is_empty())
        .and_then(|_| STANDARD.decode(TINY_PNG_B64).ok());
    match png {
        Some(bytes) => ([("content-type", "image/png")], bytes).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
