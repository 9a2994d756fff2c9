//! Usage accounting on real bodies: answers and streams from the emulator over a real socket
//! are fed through `usage::observe`, split at every byte, cut short and broken.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use bytes::Bytes;
use foundry_proxy::emulator::{self, EmulatorConfig, RunningEmulator, identities};
use foundry_proxy::usage::{self, BodyKind, Ending, Usage};
use http_body_util::BodyExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// A running emulator and a token for the demo app.
struct Upstream {
    emulator: RunningEmulator,
    token: String,
    client: reqwest::Client,
}

impl Upstream {
    async fn start() -> Self {
        // reqwest is built with `rustls-no-provider`: a provider must exist even for plain http.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let emulator = emulator::spawn(EmulatorConfig::default())
            .await
            .expect("spawn emulator");
        let client = reqwest::Client::new();
        let answer: Value = client
            .post(format!(
                "{}/{}/oauth2/v2.0/token",
                emulator.url(),
                identities::TENANT_ID
            ))
            .form(&[
                ("client_id", identities::CLIENT_ID),
                ("client_secret", identities::CLIENT_SECRET),
                ("scope", identities::SCOPE),
                ("grant_type", "client_credentials"),
            ])
            .send()
            .await
            .expect("token request")
            .json()
            .await
            .expect("token json");
        let token = answer["access_token"]
            .as_str()
            .expect("access_token")
            .to_owned();
        Self {
            emulator,
            token,
            client,
        }
    }

    /// POSTs `body` (as given) to `/openai/v1/{path}`; the answer has five content chunks.
    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        let response = self
            .client
            .post(format!("{}/openai/v1/{path}", self.emulator.url()))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .header("x-emulator-chunks", "5")
            .body(body)
            .send()
            .await
            .expect("request");
        assert_eq!(response.status(), 200);
        response
    }

    /// The whole answer to `body`, unobserved.
    async fn fetch(&self, path: &str, body: &Value) -> Bytes {
        self.post(path, body.to_string())
            .await
            .bytes()
            .await
            .expect("body")
    }
}

/// A reqwest answer as an axum body, chunk by chunk as it arrives.
fn as_body(response: reqwest::Response) -> (BodyKind, Body) {
    let kind = BodyKind::from_headers(response.headers());
    let chunks = futures_util::stream::unfold(response, |mut response| async move {
        match response.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), response)),
            Ok(None) => None,
            Err(error) => Some((Err(error), response)),
        }
    });
    (kind, Body::from_stream(chunks))
}

/// What `on_done` was called with, every time.
type Reports = Arc<Mutex<Vec<(Option<Usage>, Ending)>>>;

fn observed(body: Body, kind: BodyKind, strip: bool) -> (Body, Reports) {
    let reports = Reports::default();
    let seen = Arc::clone(&reports);
    let body = usage::observe(body, kind, strip, move |usage, ending| {
        seen.lock().expect("lock").push((usage, ending));
    });
    (body, reports)
}

/// Runs `body` through `observe` to the end: the output and the one report.
async fn run(body: Body, kind: BodyKind, strip: bool) -> (Bytes, Option<Usage>) {
    let (body, reports) = observed(body, kind, strip);
    let out = body.collect().await.expect("body").to_bytes();
    let reports = reports.lock().expect("lock").clone();
    assert_eq!(reports.len(), 1, "on_done called once: {reports:?}");
    assert_eq!(reports[0].1, Ending::Complete);
    (out, reports[0].0)
}

/// `bytes` as a body of these pieces.
fn chunked(bytes: &[u8], cuts: &[usize]) -> Body {
    let mut pieces = Vec::new();
    let mut from = 0;
    for &cut in cuts {
        pieces.push(Ok::<_, Infallible>(Bytes::copy_from_slice(
            &bytes[from..cut],
        )));
        from = cut;
    }
    pieces.push(Ok(Bytes::copy_from_slice(&bytes[from..])));
    Body::from_stream(futures_util::stream::iter(pieces))
}

/// The `data:` payloads of an SSE stream, as JSON (`[DONE]` as a string), without `id` and
/// `created`.
fn events(stream: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(stream).expect("utf-8");
    text.split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let data = event.strip_prefix("data: ").expect("one data line");
            let mut value: Value =
                serde_json::from_str(data).unwrap_or_else(|_| Value::String(data.to_owned()));
            if let Some(object) = value.as_object_mut() {
                object.remove("id");
                object.remove("created");
            }
            value
        })
        .collect()
}

fn chat(stream: bool, include_usage: Option<bool>) -> Value {
    let mut body = json!({
        "model": identities::CHAT_DEPLOYMENT,
        "messages": [{"role": "user", "content": "count the tokens of this prompt"}],
        "stream": stream,
    });
    if let Some(include) = include_usage {
        body["stream_options"] = json!({"include_usage": include});
    }
    body
}

/// The usage in the emulator's own usage-only event.
fn usage_event(stream: &[u8]) -> Usage {
    let event = events(stream)
        .into_iter()
        .find(|e| e["choices"] == json!([]) && e["usage"].is_object())
        .expect("a usage event");
    Usage {
        prompt_tokens: event["usage"]["prompt_tokens"].as_u64().expect("prompt"),
        completion_tokens: event["usage"]["completion_tokens"]
            .as_u64()
            .expect("completion"),
        cached_tokens: 0,
    }
}

/// A stream the client asked usage for passes untouched, and its usage is the emulator's: the
/// same prompt tokens as the JSON answer, one completion token per content chunk.
#[tokio::test]
async fn stream_usage_matches_the_emulator() {
    let upstream = Upstream::start().await;
    let response = upstream
        .post("chat/completions", chat(true, Some(true)).to_string())
        .await;
    let (kind, body) = as_body(response);
    assert_eq!(kind, BodyKind::Sse);
    let (out, seen) = run(body, kind, false).await;
    let seen = seen.expect("usage seen");
    assert_eq!(seen, usage_event(&out));
    assert_eq!(seen.completion_tokens, 5);
    assert!(out.ends_with(b"data: [DONE]\n\n"));

    let answer = upstream.fetch("chat/completions", &chat(false, None)).await;
    let json_usage = usage::from_json(&answer).expect("json usage");
    assert_eq!(json_usage, seen);
}

/// With the proxy's own `include_usage`, the stripped stream is the one the client would have
/// got without it: same events, same contents, byte for byte once ids and timestamps agree.
#[tokio::test]
async fn stripped_stream_is_the_plain_stream() {
    let upstream = Upstream::start().await;
    for asked in [None, Some(false)] {
        let original = chat(true, asked).to_string();
        let rewritten =
            usage::request_usage_in_stream(original.as_bytes()).expect("usage requested");
        let (kind, body) = as_body(upstream.post("chat/completions", rewritten).await);
        let (out, seen) = run(body, kind, true).await;
        let plain = upstream.fetch("chat/completions", &chat(true, asked)).await;

        assert_eq!(events(&out), events(&plain));
        assert_eq!(
            events(&out).len(),
            9,
            "filter, role, 5 chunks, stop, [DONE]"
        );
        assert_eq!(seen.map(|u| u.completion_tokens), Some(5));
        // Byte for byte, once the stripped stream carries the plain stream's id and time.
        let field = |stream: &[u8], name: &str| events_raw(stream)[1][name].to_string();
        let same = String::from_utf8(out.to_vec())
            .expect("utf-8")
            .replace(&field(&out, "id"), &field(&plain, "id"))
            .replace(
                &format!("\"created\":{}", field(&out, "created")),
                &format!("\"created\":{}", field(&plain, "created")),
            );
        assert_eq!(same, String::from_utf8(plain.to_vec()).expect("utf-8"));
    }
}

/// Events as JSON, ids and times kept.
fn events_raw(stream: &[u8]) -> Vec<Value> {
    std::str::from_utf8(stream)
        .expect("utf-8")
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap_or(Value::Null))
        .collect()
}

/// Responses API streams report `response.completed`'s usage and pass unchanged, stripping or not.
#[tokio::test]
async fn responses_stream_usage() {
    let upstream = Upstream::start().await;
    let body =
        json!({"model": identities::CHAT_DEPLOYMENT, "input": "three word prompt", "stream": true});
    let recorded = upstream.fetch("responses", &body).await;
    let completed: Value = std::str::from_utf8(&recorded)
        .expect("utf-8")
        .split("\n\n")
        .find(|e| e.starts_with("event: response.completed\n"))
        .and_then(|e| e.split_once("\ndata: "))
        .map(|(_, data)| serde_json::from_str(data).expect("json"))
        .expect("response.completed");
    let expected = Usage {
        prompt_tokens: completed["response"]["usage"]["input_tokens"]
            .as_u64()
            .expect("input"),
        completion_tokens: completed["response"]["usage"]["output_tokens"]
            .as_u64()
            .expect("output"),
        cached_tokens: 0,
    };
    assert_eq!(expected.completion_tokens, 5);
    for strip in [false, true] {
        let (out, seen) = run(chunked(&recorded, &[]), BodyKind::Sse, strip).await;
        assert_eq!(out, recorded);
        assert_eq!(seen, Some(expected));
    }
    let (kind, live) = as_body(upstream.post("responses", body.to_string()).await);
    assert_eq!(run(live, kind, false).await.1, Some(expected));
}

/// JSON answers pass unchanged and report their usage: chat, embeddings (prompt only),
/// Responses API.
#[tokio::test]
async fn json_answers() {
    let upstream = Upstream::start().await;
    let cases = [
        ("chat/completions", chat(false, None)),
        (
            "embeddings",
            json!({"model": identities::EMBEDDING_DEPLOYMENT, "input": ["one two", "three"]}),
        ),
        (
            "responses",
            json!({"model": identities::CHAT_DEPLOYMENT, "input": "hello there"}),
        ),
    ];
    for (path, body) in cases {
        let expected = usage::from_json(&upstream.fetch(path, &body).await).expect("usage");
        let (kind, live) = as_body(upstream.post(path, body.to_string()).await);
        assert_eq!(kind, BodyKind::Json);
        let (out, seen) = run(live, kind, false).await;
        assert_eq!(seen, Some(expected), "{path}");
        assert_eq!(usage::from_json(&out), Some(expected));
        if path == "embeddings" {
            assert_eq!(expected.completion_tokens, 0);
            assert_eq!(expected.prompt_tokens, 3);
        }
    }
}

/// A recorded stream split at every byte boundary, and at many random sets of boundaries, in
/// `\n` and `\r\n` framing: the output and the usage never depend on where the chunks end.
#[tokio::test]
async fn any_split_gives_the_same_output() {
    let upstream = Upstream::start().await;
    let recorded = upstream
        .fetch("chat/completions", &chat(true, Some(true)))
        .await;
    let crlf = Bytes::from(
        String::from_utf8(recorded.to_vec())
            .expect("utf-8")
            .replace('\n', "\r\n"),
    );
    let expected = Some(usage_event(&recorded));
    let mut rng = StdRng::seed_from_u64(0x05a6e);
    for stream in [recorded, crlf] {
        for strip in [false, true] {
            let (whole, usage) = run(chunked(&stream, &[]), BodyKind::Sse, strip).await;
            assert_eq!(usage, expected);
            if strip {
                assert!(whole.len() < stream.len());
            } else {
                assert_eq!(whole, stream);
            }
            for at in 0..=stream.len() {
                let (out, seen) = run(chunked(&stream, &[at]), BodyKind::Sse, strip).await;
                assert_eq!(out, whole, "split at {at}, strip {strip}");
                assert_eq!(seen, usage);
            }
            for _ in 0..100 {
                let count = rng.random_range(1..40);
                let mut cuts: Vec<usize> = (0..count)
                    .map(|_| rng.random_range(0..=stream.len()))
                    .collect();
                cuts.sort_unstable();
                let (out, seen) = run(chunked(&stream, &cuts), BodyKind::Sse, strip).await;
                assert_eq!(out, whole, "cuts {cuts:?}, strip {strip}");
                assert_eq!(seen, usage);
            }
        }
    }
}

/// A body that fails midway reports once, as an error, with the usage seen before the failure.
#[tokio::test]
async fn error_reports_once() {
    let usage_chunk =
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3}}\n\n";
    let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"data: {\"choices\":[{}]}\n\n")),
        Ok(Bytes::from(usage_chunk)),
        Err(std::io::Error::other("upstream reset")),
        Ok(Bytes::from_static(b"data: [DONE]\n\n")),
    ];
    let body = Body::from_stream(futures_util::stream::iter(pieces));
    let (mut body, reports) = observed(body, BodyKind::Sse, false);
    let mut frames = 0;
    let failed = loop {
        match body.frame().await {
            Some(Ok(_)) => frames += 1,
            Some(Err(_)) => break true,
            None => break false,
        }
    };
    assert!(failed);
    assert_eq!(frames, 2);
    drop(body);
    let reports = reports.lock().expect("lock").clone();
    assert_eq!(
        reports,
        vec![(
            Some(Usage {
                prompt_tokens: 2,
                completion_tokens: 3,
                cached_tokens: 0,
            }),
            Ending::Error
        )]
    );
}

/// A client that goes away mid-stream (the body dropped early) reports once, as dropped; so does
/// a body dropped before it was ever polled.
#[tokio::test]
async fn early_drop_reports_once() {
    let upstream = Upstream::start().await;
    let response = upstream
        .client
        .post(format!(
            "{}/openai/v1/chat/completions",
            upstream.emulator.url()
        ))
        .bearer_auth(&upstream.token)
        .header("x-emulator-chunks", "20")
        .header("x-emulator-chunk-delay-ms", "50")
        .json(&chat(true, Some(true)))
        .send()
        .await
        .expect("request");
    let (kind, body) = as_body(response);
    let (mut body, reports) = observed(body, kind, true);
    body.frame().await.expect("a frame").expect("data");
    assert!(reports.lock().expect("lock").is_empty());
    drop(body);
    assert_eq!(
        *reports.lock().expect("lock"),
        vec![(None, Ending::Dropped)]
    );

    let (body, reports) = observed(chunked(b"{\"usage\":null}", &[]), BodyKind::Json, false);
    drop(body);
    assert_eq!(
        *reports.lock().expect("lock"),
        vec![(None, Ending::Dropped)]
    );
}

/// Other bodies pass untouched and report no usage; an empty body reports at once.
#[tokio::test]
async fn other_and_empty_bodies() {
    let bytes = b"{\"usage\":{\"prompt_tokens\":1}}";
    let (out, seen) = run(chunked(bytes, &[5]), BodyKind::Other, true).await;
    assert_eq!(&out[..], bytes);
    assert_eq!(seen, None);

    let (body, reports) = observed(Body::empty(), BodyKind::Sse, true);
    assert_eq!(
        *reports.lock().expect("lock"),
        vec![(None, Ending::Complete)]
    );
    assert!(body.collect().await.expect("empty").to_bytes().is_empty());
}

/// Trailers pass through, after any bytes held for an unfinished event.
#[tokio::test]
async fn trailers_pass_through() {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-done", http::HeaderValue::from_static("yes"));
    let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = vec![
        Ok(http_body::Frame::data(Bytes::from_static(
            b"data: [DONE]\n\ndata: {",
        ))),
        Ok(http_body::Frame::trailers(trailers.clone())),
    ];
    let inner = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let (body, reports) = observed(Body::new(inner), BodyKind::Sse, true);
    let collected = body.collect().await.expect("body");
    assert_eq!(collected.trailers(), Some(&trailers));
    assert_eq!(&collected.to_bytes()[..], b"data: [DONE]\n\ndata: {");
    assert_eq!(
        *reports.lock().expect("lock"),
        vec![(None, Ending::Complete)]
    );
}
