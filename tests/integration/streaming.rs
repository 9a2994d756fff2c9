//! Streaming: SSE passes through chunk by chunk, and a client that goes away cancels the
//! upstream request.

use crate::common;

use std::time::Duration;

use common::{Harness, eventually};
use foundry_proxy::emulator::demo as world;
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
