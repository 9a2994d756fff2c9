//! Usage accounting: token counts read from the upstream's own `usage`, without buffering
//! streams.
//!
//! - [`from_json`]: `usage` of a complete JSON answer (Chat Completions, Completions,
//!   Embeddings, Responses API).
//! - [`request_usage_in_stream`]: asks the upstream for a final usage chunk in a chat stream
//!   (`stream_options.include_usage`).
//! - [`observe`]: wraps a response body; every frame passes on as it arrives and the usage is
//!   reported once, when the body ends, fails or is dropped. With `strip_injected` the usage the
//!   proxy asked for is taken out again, so the client gets the stream it asked for.
//!
//! The pieces: `inject` (the request rewrite), `sse` (the incremental event scanner, no I/O),
//! `event` (one event's data and the JSON read inside it), `observe` (the `http_body::Body`
//! wrapper).

mod event;
mod inject;
mod observe;
mod sse;

use http::HeaderMap;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use serde::Deserialize;

pub use inject::{request_usage_in_known_stream, request_usage_in_stream};
pub use observe::{observe, observe_with_first_byte};

/// Token counts from an upstream answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input tokens (`prompt_tokens`, or the Responses API's `input_tokens`).
    pub prompt_tokens: u64,
    /// Output tokens (`completion_tokens`, or `output_tokens`); 0 for embeddings.
    pub completion_tokens: u64,
    /// Of the input tokens, those read from the prompt cache (`prompt_tokens_details.cached_tokens`,
    /// `input_tokens_details.cached_tokens`, or Anthropic's `cache_read_input_tokens`), priced
    /// apart.
    pub cached_tokens: u64,
}

impl Usage {
    /// Input plus output tokens.
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// A `usage` object in any naming: OpenAI's, the Responses API's, or Anthropic's (whose
/// `input_tokens` leaves out the tokens written to and read from the prompt cache, counted
/// apart). Unknown fields (`total_tokens`, the `*_details`) are skipped without being built.
#[derive(Debug, Deserialize)]
struct RawUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    prompt_tokens_details: Option<Details>,
    input_tokens_details: Option<Details>,
}

/// The `*_tokens_details` member the cached count is read from; its other fields are skipped.
#[derive(Debug, Deserialize)]
struct Details {
    cached_tokens: Option<u64>,
}

impl RawUsage {
    /// The input tokens this object names, cache tokens included; None when it names none.
    fn input(&self) -> Option<u64> {
        let cached = [
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        let named = self.prompt_tokens.or(self.input_tokens);
        if named.is_none() && cached.iter().all(Option::is_none) {
            return None;
        }
        Some(
            cached
                .iter()
                .flatten()
                .fold(named.unwrap_or(0), |sum, n| sum.saturating_add(*n)),
        )
    }

    /// The cached input tokens this object names, if any.
    fn cached(&self) -> Option<u64> {
        let details = |d: &Option<Details>| d.as_ref().and_then(|d| d.cached_tokens);
        details(&self.prompt_tokens_details)
            .or_else(|| details(&self.input_tokens_details))
            .or(self.cache_read_input_tokens)
    }

    /// The counts, or None when the object names none of them.
    fn usage(&self) -> Option<Usage> {
        self.usage_after(None)
    }

    /// The counts, a count this object leaves out taken from `earlier`: an Anthropic stream's
    /// `message_delta` names the output tokens, its `message_start` the input tokens.
    fn usage_after(&self, earlier: Option<Usage>) -> Option<Usage> {
        let prompt = self.input();
        let completion = self.completion_tokens.or(self.output_tokens);
        if prompt.is_none() && completion.is_none() {
            return None;
        }
        let earlier = earlier.unwrap_or_default();
        Some(Usage {
            prompt_tokens: prompt.unwrap_or(earlier.prompt_tokens),
            completion_tokens: completion.unwrap_or(earlier.completion_tokens),
            cached_tokens: self.cached().unwrap_or(earlier.cached_tokens),
        })
    }
}

/// Reads `usage` from a complete JSON answer: chat/completions/embeddings (`usage.prompt_tokens`,
/// `usage.completion_tokens`), Responses API (`usage.input_tokens`, `usage.output_tokens`),
/// Anthropic Messages (`usage.input_tokens` plus the cache counts, `usage.output_tokens`;
/// count_tokens' top-level `input_tokens` is a count, not usage, and is not read).
/// None if absent, null, or the body is not a JSON object.
///
/// Only the `usage` object is decoded: the rest of the answer (an embeddings answer is mostly
/// numbers, a chat answer mostly text) is stepped over by [`top_level_value`], several times
/// faster than a parser skipping it, and without checking it is valid JSON — that is the
/// client's business, not the meter's.
pub fn from_json(body: &[u8]) -> Option<Usage> {
    let value = top_level_value(body, b"usage")?;
    let mut deserializer = serde_json::Deserializer::from_slice(value);
    Option::<RawUsage>::deserialize(&mut deserializer)
        .ok()??
        .usage()
}

/// The counts of a `usage` object already parsed (a WebSocket event's `response.usage`); None
/// when it names none.
pub fn from_value(usage: &serde_json::Value) -> Option<Usage> {
    RawUsage::deserialize(usage).ok()?.usage()
}

/// The bytes from the start of the value of member `key` of the top-level JSON object to the end
/// of `body`; None when `body` is not an object or has no such member. Strings are skipped with
/// `memchr` (only `"` and `\` stop it) and nested values by counting brackets, so a `"usage"`
/// inside a string or a nested object never matches.
fn top_level_value<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let start = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if body[start] != b'{' {
        return None;
    }
    let mut depth = 0usize;
    let mut at = start;
    while at < body.len() {
        match body[at] {
            b'"' => {
                let end = string_end(body, at + 1)?;
                if depth == 1 && is_key(&body[at..=end], key) {
                    let colon = end
                        + 1
                        + body[end + 1..]
                            .iter()
                            .position(|b| !b.is_ascii_whitespace())?;
                    if body[colon] == b':' {
                        return Some(&body[colon + 1..]);
                    }
                }
                at = end + 1;
            }
            b'{' | b'[' => {
                depth += 1;
                at += 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                at += 1;
            }
            _ => at += 1,
        }
    }
    None
}

/// Whether the quoted JSON string `quoted` is `key`: byte for byte, or (rarely) once its
/// escapes are decoded (`"us\u0061ge"` is `usage` to any JSON parser, so to the meter too).
fn is_key(quoted: &[u8], key: &[u8]) -> bool {
    let raw = &quoted[1..quoted.len() - 1];
    if raw == key {
        return true;
    }
    // At most six bytes (`\uXXXX`) per character of the key; longer strings are not it.
    raw.len() <= key.len() * 6
        && memchr::memchr(b'\\', raw).is_some()
        && serde_json::from_slice::<String>(quoted).is_ok_and(|text| text.as_bytes() == key)
}

/// The index of the `"` that closes the string whose contents start at `from`.
fn string_end(body: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let found = from + memchr::memchr2(b'"', b'\\', &body[from..])?;
        if body[found] == b'"' {
            return Some(found);
        }
        // An escape: the next byte is taken whatever it is (`\"` does not end the string).
        from = found + 2;
        if from > body.len() {
            return None;
        }
    }
}

/// How a response body is watched, from its headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// One JSON document: a bounded copy is parsed at the end.
    Json,
    /// `text/event-stream`: scanned event by event as it passes.
    Sse,
    /// Anything else: passed through untouched, no usage.
    Other,
}

impl BodyKind {
    /// `text/event-stream` → Sse; `application/json` or any `…+json` → Json; else (or no
    /// header) Other. Parameters (`; charset=utf-8`) and case are ignored.
    pub fn from_content_type(value: Option<&http::HeaderValue>) -> Self {
        let Some(value) = value.and_then(|v| v.to_str().ok()) else {
            return Self::Other;
        };
        let essence = value.split(';').next().unwrap_or_default().trim();
        let starts = |prefix: &str| {
            essence
                .get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        };
        let ends = |suffix: &str| {
            essence
                .len()
                .checked_sub(suffix.len())
                .and_then(|at| essence.get(at..))
                .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
        };
        if essence.eq_ignore_ascii_case("text/event-stream") {
            Self::Sse
        } else if essence.eq_ignore_ascii_case("application/json")
            || (starts("application/") && ends("+json"))
        {
            Self::Json
        } else {
            Self::Other
        }
    }

    /// Like [`from_content_type`](Self::from_content_type), but Other when the body is
    /// compressed (`content-encoding` other than `identity`): its bytes cannot be read as they pass.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let encoded = headers
            .get_all(CONTENT_ENCODING)
            .iter()
            .any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
        if encoded {
            Self::Other
        } else {
            Self::from_content_type(headers.get(CONTENT_TYPE))
        }
    }
}

/// How an observed body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The upstream body ended normally.
    Complete,
    /// The upstream body yielded an error.
    Error,
    /// The body was dropped before its end (the client went away).
    Dropped,
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Chat Completions usage: prompt and completion tokens.
    /// Cached input tokens are read in each API's naming and stay part of the input count.
    #[test]
    fn cached_tokens_in_every_naming() {
        let cases: [(&[u8], u64, u64); 3] = [
            (
                br#"{"usage":{"prompt_tokens":100,"completion_tokens":5,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":64}}}"#,
                100,
                64,
            ),
            (
                br#"{"usage":{"input_tokens":80,"output_tokens":5,"input_tokens_details":{"cached_tokens":32}}}"#,
                80,
                32,
            ),
            (
                br#"{"usage":{"input_tokens":10,"cache_read_input_tokens":50,"output_tokens":5}}"#,
                60,
                50,
            ),
        ];
        for (body, prompt, cached) in cases {
            let usage = from_json(body).expect("usage");
            assert_eq!((usage.prompt_tokens, usage.cached_tokens), (prompt, cached));
        }
    }

    #[test]
    fn chat_usage() {
        let body = br#"{"id":"x","choices":[{"message":{"content":"hi"}}],
            "usage":{"completion_tokens":7,"prompt_tokens":12,"total_tokens":19,
            "prompt_tokens_details":{"cached_tokens":0}}}"#;
        let usage = from_json(body).expect("usage");
        assert_eq!(
            usage,
            Usage {
                prompt_tokens: 12,
                completion_tokens: 7,
                cached_tokens: 0,
            }
        );
        assert_eq!(usage.total(), 19);
    }

    /// Anthropic Messages: input tokens plus both cache counts, output tokens; count_tokens'
    /// answer (a top-level `input_tokens`) is no usage.
    #[test]
    fn anthropic_usage() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"hi"}],
            "model":"claude-sonnet-4-5","stop_reason":"end_turn",
            "usage":{"input_tokens":10,"cache_creation_input_tokens":4,"cache_read_input_tokens":6,"output_tokens":3}}"#;
        assert_eq!(
            from_json(body),
            Some(Usage {
                prompt_tokens: 20,
                completion_tokens: 3,
                cached_tokens: 6,
            })
        );
        assert_eq!(from_json(br#"{"input_tokens":42}"#), None);
    }

    /// Embeddings report prompt tokens only: completion counts as 0.
    #[test]
    fn embeddings_usage() {
        let body = br#"{"object":"list","data":[],"usage":{"prompt_tokens":5,"total_tokens":5}}"#;
        assert_eq!(
            from_json(body),
            Some(Usage {
                prompt_tokens: 5,
                completion_tokens: 0,
                cached_tokens: 0,
            })
        );
    }

    /// The Responses API names them input and output tokens.
    #[test]
    fn responses_usage() {
        let body = br#"{"object":"response","output":[],"usage":{"input_tokens":3,
            "input_tokens_details":{"cached_tokens":0},"output_tokens":4,"total_tokens":7}}"#;
        assert_eq!(
            from_json(body),
            Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                cached_tokens: 0,
            })
        );
    }

    /// No usage, a null usage, an empty usage, an error answer or non-JSON: None.
    #[test]
    fn absent_usage() {
        for body in [
            &br#"{"id":"x"}"#[..],
            br#"{"usage":null}"#,
            br#"{"usage":{}}"#,
            br#"{"error":{"code":"429","message":"slow down"}}"#,
            b"not json",
            b"[1,2]",
            br#"[{"usage":{"prompt_tokens":1}}]"#,
            br#"{"choices":[{"usage":{"prompt_tokens":1}}],"x":"\"usage\":{\"prompt_tokens\":2}"}"#,
            br#"{"a":"\\","b":{"usage":{"prompt_tokens":3}}}"#,
            br#"{"usage""#,
            b"",
        ] {
            assert_eq!(from_json(body), None, "{}", String::from_utf8_lossy(body));
        }
    }

    /// A `usage` key written with escapes is still `usage` (found by `tests/integration/fuzz/`).
    #[test]
    fn escaped_key() {
        let body = br#"{"id":"x\"","u\u0073\u0061ge":{"in\u0070ut_tokens":4}}"#;
        assert_eq!(
            from_json(body),
            Some(Usage {
                prompt_tokens: 4,
                completion_tokens: 0,
                cached_tokens: 0,
            })
        );
        assert_eq!(from_json(br#"{"usag\u0065x":{"prompt_tokens":1}}"#), None);
    }

    /// Content types map to kinds whatever their parameters and case; compressed bodies are Other.
    #[test]
    fn kinds() {
        let kind = |v: &str| BodyKind::from_content_type(Some(&HeaderValue::from_str(v).unwrap()));
        assert_eq!(kind("text/event-stream; charset=utf-8"), BodyKind::Sse);
        assert_eq!(kind("Text/Event-Stream"), BodyKind::Sse);
        assert_eq!(kind("application/json"), BodyKind::Json);
        assert_eq!(kind("application/json; charset=utf-8"), BodyKind::Json);
        assert_eq!(kind("application/problem+json"), BodyKind::Json);
        assert_eq!(kind("text/plain"), BodyKind::Other);
        assert_eq!(kind("audio/mpeg"), BodyKind::Other);
        assert_eq!(BodyKind::from_content_type(None), BodyKind::Other);

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert_eq!(BodyKind::from_headers(&headers), BodyKind::Json);
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("identity"));
        assert_eq!(BodyKind::from_headers(&headers), BodyKind::Json);
        headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(BodyKind::from_headers(&headers), BodyKind::Other);
    }
}
