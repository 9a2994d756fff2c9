//! Reading a Foundry request body: JSON, or multipart/form-data for audio uploads.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::Value;

use super::error::FoundryError;

/// The text fields of a multipart form and the uploaded file's name and size.
#[derive(Debug, Default, Clone)]
pub(crate) struct MultipartForm {
    pub(crate) fields: BTreeMap<String, String>,
    pub(crate) file: Option<(String, usize)>,
}

/// A parsed request body.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    Json(Value),
    Multipart(MultipartForm),
    Empty,
}

impl Payload {
    /// The body's `model` (the deployment on body-routed surfaces).
    pub(crate) fn model(&self) -> Option<&str> {
        match self {
            Payload::Json(v) => v.get("model").and_then(Value::as_str),
            Payload::Multipart(f) => f.fields.get("model").map(String::as_str),
            Payload::Empty => None,
        }
        .filter(|m| !m.is_empty())
    }

    /// The JSON body, or `null` for other payloads.
    pub(crate) fn json(&self) -> &Value {
        match self {
            Payload::Json(v) => v,
            _ => &Value::Null,
        }
    }
}

/// Parses the body according to its content type.
pub(crate) async fn parse(headers: &HeaderMap, body: Bytes) -> Result<Payload, FoundryError> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if content_type.starts_with("multipart/form-data") {
        return multipart(&content_type, body).await.map(Payload::Multipart);
    }
    if body.is_empty() {
        return Ok(Payload::Empty);
    }
    serde_json::from_slice(&body)
        .map(Payload::Json)
        .map_err(|e| FoundryError::BadRequest {
            message: format!("We could not parse the JSON body of your request. ({e})"),
        })
}

async fn multipart(content_type: &str, body: Bytes) -> Result<MultipartForm, FoundryError> {
    let bad = |e: multer::Error| FoundryError::BadRequest {
        message: format!("invalid multipart/form-data body: {e}"),
    };
    let boundary = multer::parse_boundary(content_type).map_err(bad)?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut form = MultipartForm::default();
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or("").to_owned();
        match field.file_name().map(str::to_owned) {
            Some(file_name) => {
                let data = field.bytes().await.map_err(bad)?;
                form.file = Some((file_name, data.len()));
            }
            None => {
                let value = field.text().await.map_err(bad)?;
                form.fields.insert(name, value);
            }
        }
    }
    Ok(form)
}
