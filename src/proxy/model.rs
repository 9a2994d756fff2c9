//! Reading what the proxy needs from a request body in one pass: `model` (for styles that route
//! on it, aliases, metrics and explanations) and whether a chat stream was asked for. Only those
//! fields are decoded; the body itself is forwarded byte for byte.

use std::borrow::Cow;

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_TYPE;
use serde::Deserialize;

use super::refuse;
use crate::diagnose::RefusalCode;
use crate::error::ApiError;

/// What one pass over a request body tells the proxy.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BodyFacts {
    /// The body's `model`.
    pub model: Option<String>,
    /// `"stream": true` (a JSON `true`, nothing else).
    pub stream: bool,
    /// The body has a `stream_options` member, whatever its value (`null` included).
    pub has_stream_options: bool,
    /// `stream_options.include_usage` is `true`: the client asked for usage itself.
    pub usage_asked: bool,
}

/// The fields read; every other member is skipped without being decoded.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "is_true")]
    stream: bool,
    #[serde(default, deserialize_with = "stream_options")]
    stream_options: StreamOptions,
}

/// What `stream_options` says, read without building it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum StreamOptions {
    #[default]
    Absent,
    /// Present (`null`, or an object without `include_usage: true`).
    Present,
    /// An object with `include_usage: true`.
    AsksUsage,
}

/// Only `model`: the fallback for bodies the full peek refuses (a duplicated `stream`).
#[derive(Deserialize)]
struct ModelOnly<'a> {
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
}

fn is_true<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(matches!(
        serde_json::Value::deserialize(deserializer)?,
        serde_json::Value::Bool(true)
    ))
}

/// `null` and objects; any other value is malformed and fails the peek (the body then goes
/// as it came: Azure's 400 says what is wrong better than the proxy would).
fn stream_options<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<StreamOptions, D::Error> {
    // A map, not a struct: serde reads a struct from an array too (`[true]`).
    let options = Option::<serde_json::Map<String, serde_json::Value>>::deserialize(deserializer)?;
    let asks = options.is_some_and(|o| o.get("include_usage") == Some(&true.into()));
    Ok(if asks {
        StreamOptions::AsksUsage
    } else {
        StreamOptions::Present
    })
}

/// The body's facts: from JSON, or (`model` only) from the `model` field of a multipart form.
pub async fn read_facts(headers: &HeaderMap, body: &Bytes) -> Result<BodyFacts, ApiError> {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        let model = multipart_model(content_type, body).await?;
        return Ok(BodyFacts {
            model,
            ..BodyFacts::default()
        });
    }
    if body.is_empty() {
        return Ok(BodyFacts::default());
    }
    json_facts(body)
}

/// The facts of a JSON body; a 400 in the OpenAI shape if the body is not a JSON object.
pub fn json_facts(body: &[u8]) -> Result<BodyFacts, ApiError> {
    // serde reads a struct from an array too (`["gpt-4o", true]` has a model and a stream):
    // only an object counts.
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first.is_some_and(|b| *b != b'{') {
        return Err(refuse(
            RefusalCode::InvalidJson,
            "the body is not a JSON object",
        ));
    }
    // The members skipped below are not decoded, so not checked for UTF-8 either: JSON is UTF-8.
    if let Err(e) = std::str::from_utf8(body) {
        return Err(refuse(
            RefusalCode::InvalidJson,
            format!("the body is not UTF-8 ({e})"),
        ));
    }
    match serde_json::from_slice::<Peek<'_>>(body) {
        Ok(peek) => Ok(BodyFacts {
            model: peek.model.map(Cow::into_owned),
            stream: peek.stream,
            has_stream_options: peek.stream_options != StreamOptions::Absent,
            usage_asked: peek.stream_options == StreamOptions::AsksUsage,
        }),
        // Duplicated members are refused by the peek; `model` alone may still be readable.
        Err(e) => match serde_json::from_slice::<ModelOnly<'_>>(body) {
            Ok(parsed) => Ok(BodyFacts {
                model: parsed.model.map(Cow::into_owned),
                ..BodyFacts::default()
            }),
            Err(_) => Err(refuse(RefusalCode::InvalidJson, e.to_string())),
        },
    }
}

/// The body with `model` replaced (an alias resolved to its deployment); `None` when the body
/// is not a JSON object.
pub fn with_model(body: &[u8], deployment: &str) -> Option<Bytes> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.as_object_mut()?.insert(
        "model".to_owned(),
        serde_json::Value::String(deployment.to_owned()),
    );
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

/// `GET /v1/models` when a `[models]` table is configured: the friendly names, in the OpenAI
/// shape, so chat UIs offer exactly those.
pub fn alias_list(
    aliases: &std::collections::BTreeMap<String, String>,
) -> axum::response::Response {
    let data: Vec<serde_json::Value> = aliases
        .iter()
        .map(|(alias, deployment)| {
            serde_json::json!({"id": alias, "object": "model", "created": 0, "owned_by": "foundry-proxy", "deployment": deployment})
        })
        .collect();
    axum::response::IntoResponse::into_response(axum::Json(
        serde_json::json!({"object": "list", "data": data}),
    ))
}

async fn multipart_model(content_type: &str, body: &Bytes) -> Result<Option<String>, ApiError> {
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        refuse(
            RefusalCode::InvalidMultipart,
            format!("no valid boundary: {e}"),
        )
    })?;
    let chunk = body.clone();
    let stream =
        futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(chunk) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some("model") => {
                return field
                    .text()
                    .await
                    .map(|text| Some(text.trim().to_owned()))
                    .map_err(|e| {
                        refuse(
                            RefusalCode::InvalidMultipart,
                            format!("the 'model' field cannot be read: {e}"),
                        )
                    });
            }
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(e) => return Err(refuse(RefusalCode::InvalidMultipart, e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// JSON bodies yield their model; broken JSON is a 400.
    #[tokio::test]
    async fn json_model() {
        let headers = HeaderMap::new();
        let body = Bytes::from_static(
            br#"{"messages":[{"role":"user","content":"hi \"model\""}],"model":"gpt-4o"}"#,
        );
        assert_eq!(
            read_facts(&headers, &body)
                .await
                .expect("ok")
                .model
                .as_deref(),
            Some("gpt-4o")
        );
        assert_eq!(
            read_facts(&headers, &Bytes::from_static(b"{}"))
                .await
                .expect("ok"),
            BodyFacts::default()
        );
        let err = read_facts(&headers, &Bytes::from_static(b"{\"model\":"))
            .await
            .expect_err("bad json");
        assert_eq!(err.code, "invalid_json");
        assert_eq!(err.status, http::StatusCode::BAD_REQUEST);
    }

    /// Multipart bodies (audio uploads) yield the `model` field.
    #[tokio::test]
    async fn multipart_model_field() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=XyZ"),
        );
        let body = Bytes::from_static(
            b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--XyZ--\r\n",
        );
        assert_eq!(
            read_facts(&headers, &body)
                .await
                .expect("ok")
                .model
                .as_deref(),
            Some("whisper")
        );
    }

    /// `stream` counts only as a JSON `true`; `stream_options` counts whatever its value.
    #[test]
    fn stream_facts() {
        let facts = |body: &str| json_facts(body.as_bytes()).expect("json");
        assert!(facts(r#"{"model":"m","stream":true}"#).stream);
        assert!(!facts(r#"{"stream":"true"}"#).stream);
        assert!(!facts(r#"{"stream":false,"x":[1,{"stream":true}]}"#).stream);
        assert!(facts(r#"{"stream_options":null}"#).has_stream_options);
        assert!(facts(r#"{"stream_options":{"include_usage":false}}"#).has_stream_options);
        assert!(!facts(r#"{"stream_options":{"include_usage":false}}"#).usage_asked);
        assert!(facts(r#"{"stream_options":{"x":[1],"include_usage":true}}"#).usage_asked);
        assert!(!facts(r#"{"stream":true}"#).has_stream_options);
        // Malformed options: nothing is asked of the stream.
        assert!(!facts(r#"{"stream":true,"stream_options":1}"#).stream);
        assert!(!facts(r#"{"stream":true,"stream_options":[true]}"#).has_stream_options);
        // Only objects (found by `tests/integration/fuzz/`).
        assert!(json_facts(br#"["{", true]"#).is_err());
        assert!(json_facts(b"{\"stream\":true,\"x\":\"\xff\"}").is_err());
        // A duplicated member: the model is still read, nothing is asked of the stream.
        let dup = facts(r#"{"model":"m","stream":true,"stream":true}"#);
        assert_eq!((dup.model.as_deref(), dup.stream), (Some("m"), false));
    }
}
