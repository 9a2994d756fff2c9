//! Asking the upstream for usage in a stream: `stream_options.include_usage`.

use bytes::Bytes;
use serde_json::{Map, Value};

/// The member inserted when the request has no `stream_options` at all.
const STREAM_OPTIONS: &[u8] = br#""stream_options":{"include_usage":true},"#;

/// Rewrites a streaming chat/completions request body so the upstream sends a final usage chunk:
/// if `stream` is true and `stream_options.include_usage` is not already true, returns the new
/// body with it set; otherwise (not streaming, already asked, not a JSON object, or a
/// `stream_options` that is neither an object nor null) None, and the body goes as it came.
///
/// For Chat Completions and legacy Completions; the Responses API always reports usage in
/// `response.completed`. When the request has no `stream_options`, the member is inserted after
/// the opening brace and every other byte is kept; otherwise the body is re-serialized (same
/// members and values, keys in serde_json's sorted order).
pub fn request_usage_in_stream(body: &[u8]) -> Option<Bytes> {
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    if request.get("stream") != Some(&Value::Bool(true)) {
        return None;
    }
    match request.get_mut("stream_options") {
        None => insert_stream_options(body),
        Some(Value::Object(options)) => {
            if options.get("include_usage") == Some(&Value::Bool(true)) {
                return None;
            }
            options.insert("include_usage".to_owned(), Value::Bool(true));
            serde_json::to_vec(&request).ok().map(Bytes::from)
        }
        Some(options @ Value::Null) => {
            let mut set = Map::new();
            set.insert("include_usage".to_owned(), Value::Bool(true));
            *options = Value::Object(set);
            serde_json::to_vec(&request).ok().map(Bytes::from)
        }
        // Malformed: the upstream's 400 says so better than a rewrite would.
        Some(_) => None,
    }
}

/// [`request_usage_in_stream`] for a body whose `stream` and `stream_options` members are
/// already known (from one pass that also read `model`): the common case — a stream without
/// `stream_options` — is a splice, with no second parse.
pub fn request_usage_in_known_stream(
    body: &[u8],
    stream: bool,
    has_stream_options: bool,
    usage_asked: bool,
) -> Option<Bytes> {
    match (stream, has_stream_options, usage_asked) {
        (false, _, _) | (true, true, true) => None,
        (true, false, _) => insert_stream_options(body),
        (true, true, false) => request_usage_in_stream(body),
    }
}

/// The body with [`STREAM_OPTIONS`] inserted as its first member.
fn insert_stream_options(body: &[u8]) -> Option<Bytes> {
    // Valid JSON with an object at the top: the first non-blank byte is its `{`, and the
    // object has members (`stream` at least), so a trailing comma is right. Anything else (an
    // array whose first string holds a `{`, say) is left alone.
    let brace = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[brace] != b'{' {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() + STREAM_OPTIONS.len());
    out.extend_from_slice(&body[..=brace]);
    out.extend_from_slice(STREAM_OPTIONS);
    out.extend_from_slice(&body[brace + 1..]);
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rewritten(body: &Value) -> Option<Value> {
        let out = request_usage_in_stream(body.to_string().as_bytes())?;
        Some(serde_json::from_slice(&out).expect("the rewrite is JSON"))
    }

    /// A request that does not stream is left alone.
    #[test]
    fn not_streaming() {
        assert_eq!(rewritten(&json!({"model": "m", "stream": false})), None);
        assert_eq!(rewritten(&json!({"model": "m"})), None);
        assert_eq!(rewritten(&json!({"model": "m", "stream": "true"})), None);
    }

    /// A request that already asks for usage is left alone.
    #[test]
    fn already_asked() {
        let body = json!({"stream": true, "stream_options": {"include_usage": true}});
        assert_eq!(rewritten(&body), None);
    }

    /// `include_usage: false` is turned to true; the other stream options stay.
    #[test]
    fn asked_not() {
        let body = json!({"model": "m", "stream": true,
            "stream_options": {"include_usage": false, "include_obfuscation": false}});
        let mut expected = body.clone();
        expected["stream_options"]["include_usage"] = json!(true);
        assert_eq!(rewritten(&body), Some(expected));

        let body = json!({"stream": true, "stream_options": {}});
        assert_eq!(
            rewritten(&body),
            Some(json!({"stream": true, "stream_options": {"include_usage": true}}))
        );

        let body = json!({"stream": true, "stream_options": null});
        assert_eq!(
            rewritten(&body),
            Some(json!({"stream": true, "stream_options": {"include_usage": true}}))
        );
    }

    /// With no `stream_options`, one member is inserted and every other byte is kept.
    #[test]
    fn absent_is_inserted() {
        let body = " {\"stream\": true,\n \"temperature\": 0.70, \"messages\": [{\"role\": \"user\", \"content\": \"caf\\u00e9\"}]}";
        let out = request_usage_in_stream(body.as_bytes()).expect("rewritten");
        assert_eq!(
            std::str::from_utf8(&out).expect("utf-8"),
            " {\"stream_options\":{\"include_usage\":true},\"stream\": true,\n \"temperature\": 0.70, \"messages\": [{\"role\": \"user\", \"content\": \"caf\\u00e9\"}]}"
        );
        let value: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(value["stream_options"]["include_usage"], true);
        assert_eq!(value["messages"][0]["content"], "café");
    }

    /// Invalid JSON, a non-object, and malformed `stream_options` are left alone.
    #[test]
    fn invalid() {
        for body in [
            &b"{\"stream\": true"[..],
            b"",
            b"[{\"stream\": true}]",
            b"{\"stream\": true, \"stream_options\": 1}",
            b"{\"stream\": true, \"stream_options\": [true]}",
        ] {
            assert_eq!(
                request_usage_in_stream(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
