//! Streaming: SSE passes through chunk by chunk, and a client that goes away cancels the
//! upstream request.

use crate::common;

use std::time::Duration;

use common::{Harness, Setup, eventually};
use foundry_proxy::config::Settings;
use foundry_proxy::emulator::identities as world;
use serde_json::json;

fn stream_request(harness: &Harness, chunks: u32, delay_ms: u32) -> reqwest::RequestBuilder {
    harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .header("x-emulator-chunks", chunks.to_string())
        .header("x-emulator-chunk-delay-ms", delay_ms.to_string())
        .json(&json!({"model": world::CHAT_DEPLOYMENT, "stream": true, "messages": [{"role": "user", "content": "stream please"}]}))
}

/// The first SSE event reaches the client while the emulator is still producing the
/// stream: nothing is buffered. The whole stream then arrives intact, ending in [DONE].
#[tokio::test]
async fn sse_is_incremental() {
    let harness = Harness::start().await;
    let mut response = stream_request(&harness, 6, 150)
        .send()
        .await
        .expect("stream starts");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let first = response
        .chunk()
        .await
        .expect("read")
        .expect("a first chunk");
    assert!(
        String::from_utf8_lossy(&first).starts_with("data: "),
        "{first:?}"
    );
    assert_eq!(
        harness.emulator.emulator.streams_completed(),
        0,
        "the first event arrived before the upstream finished"
    );
    let mut text = String::from_utf8_lossy(&first).into_owned();
    let mut reads = 1;
    while let Some(chunk) = response.chunk().await.expect("read") {
        text.push_str(&String::from_utf8_lossy(&chunk));
        reads += 1;
    }
    assert!(reads > 3, "events arrived separately ({reads} reads)");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        eventually(Duration::from_secs(2), || harness
            .emulator
            .emulator
            .streams_completed()
            == 1)
        .await
    );
    harness.stop().await;
}

/// A client that disconnects mid-stream makes the proxy drop the upstream request; the
/// emulator sees the cancellation and the proxy keeps serving.
#[tokio::test]
async fn client_disconnect_cancels_upstream() {
    let harness = Harness::start().await;
    let mut response = stream_request(&harness, 50, 200)
        .send()
        .await
        .expect("stream starts");
    response.chunk().await.expect("read").expect("first chunk");
    drop(response);
    let emulator = &harness.emulator.emulator;
    assert!(
        eventually(Duration::from_secs(5), || emulator.streams_cancelled() == 1).await,
        "upstream stream cancelled"
    );
    assert_eq!(emulator.streams_completed(), 0);
    let after = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "still there?"),
        )
        .await;
    assert_eq!(after.status(), 200);
    harness.stop().await;
}

/// The sum of a histogram's observations for `route`, from the `/metrics` text.
fn histogram_sum(metrics: &str, name: &str, route: &str) -> f64 {
    let prefix = format!("{name}_sum{{");
    let route = format!("route=\"{route}\"");
    metrics
        .lines()
        .find(|line| line.starts_with(&prefix) && line.contains(&route))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} for {route} in:\n{metrics}"))
}

/// `foundry_proxy_stream_ttfb_seconds` is the time from the request to the first body byte
/// the caller gets, not to the upstream's response headers: behind an upstream that answers
/// its headers at once and its first event 400 ms later, the time to first byte is at least
/// 400 ms while the upstream latency (to the headers) is less.
#[tokio::test]
async fn stream_ttfb_is_the_first_body_byte() {
    const FIRST_EVENT_DELAY: Duration = Duration::from_millis(400);
    let app = axum::Router::new().fallback(|| async {
        let events = futures_util::stream::once(async {
            tokio::time::sleep(FIRST_EVENT_DELAY).await;
            Ok::<_, std::io::Error>(axum::body::Bytes::from_static(
                b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n",
            ))
        });
        (
            [("content-type", "text/event-stream")],
            axum::body::Body::from_stream(events),
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let harness = Harness::start_with(Setup {
        settings: Settings {
            endpoint: Some(upstream),
            ..Settings::default()
        },
        ..Setup::default()
    })
    .await;
    let response = harness
        .post_json(
            "/v1/chat/completions",
            json!({"model": world::CHAT_DEPLOYMENT, "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body = response.text().await.expect("body");
    assert!(body.contains("[DONE]"), "{body}");

    let metrics = harness
        .client
        .get(harness.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let ttfb = histogram_sum(
        &metrics,
        "foundry_proxy_stream_ttfb_seconds",
        "chat/completions",
    );
    let upstream = histogram_sum(
        &metrics,
        "foundry_proxy_upstream_latency_seconds",
        "chat/completions",
    );
    assert!(
        ttfb >= FIRST_EVENT_DELAY.as_secs_f64(),
        "ttfb {ttfb} s is before the first event"
    );
    assert!(
        upstream < FIRST_EVENT_DELAY.as_secs_f64(),
        "upstream latency {upstream} s includes the body"
    );
    harness.stop().await;
}
