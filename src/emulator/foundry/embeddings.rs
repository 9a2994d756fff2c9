//! Embeddings: deterministic unit vectors per input, as float arrays or base64 little-endian f32.

use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::error::FoundryError;
use super::handler::GenCtx;
use super::text;

/// The inputs of an embeddings request and their token counts.
fn inputs(body: &Value) -> Result<Vec<(String, u64)>, FoundryError> {
    let one = |v: &Value| -> Option<(String, u64)> {
        match v {
            Value::String(s) => Some((s.clone(), text::token_count(s))),
            // Pre-tokenised input: the tokens are the text.
            Value::Array(tokens) => Some((
                Value::Array(tokens.clone()).to_string(),
                tokens.len() as u64,
            )),
            _ => None,
        }
    };
    let bad = || FoundryError::BadRequest {
        message: "'input' is a required property and must be a string or an array".to_owned(),
    };
    match body.get("input") {
        Some(Value::String(_)) => Ok(vec![one(&body["input"]).ok_or_else(bad)?]),
        // An array of numbers is one tokenised input; an array of strings or arrays is many.
        Some(Value::Array(items)) if items.iter().all(Value::is_number) && !items.is_empty() => {
            Ok(vec![one(&body["input"]).ok_or_else(bad)?])
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().map(|i| one(i).ok_or_else(bad)).collect()
        }
        _ => Err(bad()),
    }
}

/// A deterministic unit vector for `text` (FNV-1a seed, xorshift stream).
pub(crate) fn vector(text: &str, dims: usize) -> Vec<f32> {
    let mut state = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Top 24 bits mapped to [-1, 1).
            ((state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// `POST …/embeddings`.
pub(crate) fn embeddings(ctx: &GenCtx<'_>, body: &Value) -> Response {
    let inputs = match inputs(body) {
        Ok(i) => i,
        Err(e) => return e.into_response(),
    };
    let default_dims = if ctx.model.contains("3-large") {
        3072
    } else {
        1536
    };
    let dims = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .filter(|d| *d > 0)
        .unwrap_or(default_dims);
    let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, (text, _))| {
            let v = vector(text, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|(_, t)| t).sum();
    axum::Json(json!({
        "object": "list",
        "data": data,
        "model": ctx.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response()
}
