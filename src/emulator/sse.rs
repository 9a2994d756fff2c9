//! Streaming bodies: frames sent one at a time through a channel, with a delay between them,
//! counting streams started, completed and cancelled.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::state::Emulator;

/// A `data:`-only SSE frame (Chat Completions style).
pub(crate) fn data(json: &serde_json::Value) -> String {
    format!("data: {json}\n\n")
}

/// An SSE frame with an `event:` line (Responses style).
pub(crate) fn event(name: &str, json: &serde_json::Value) -> String {
    format!("event: {name}\ndata: {json}\n\n")
}

/// Answers with `frames` as `text/event-stream`, the first at once and each next one after `delay`.
///
/// A spawned task feeds the body; when the client goes away the body (and so the receiver) is
/// dropped, which the task sees either while waiting or on its next send.
pub(crate) fn stream(emu: &Arc<Emulator>, frames: Vec<String>, delay: Duration) -> Response {
    // Capacity 1: the task runs at most one frame ahead of the socket, so cancellation shows soon.
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    emu.streams_started.fetch_add(1, Ordering::SeqCst);
    let emu = Arc::clone(emu);
    tokio::spawn(async move {
        for (i, frame) in frames.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = tx.closed() => return cancelled(&emu),
                }
            }
            if tx.send(Bytes::from(frame)).await.is_err() {
                return cancelled(&emu);
            }
        }
        emu.streams_completed.fetch_add(1, Ordering::SeqCst);
        tracing::debug!("stream completed");
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    (
        [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response()
}

fn cancelled(emu: &Emulator) {
    emu.streams_cancelled.fetch_add(1, Ordering::SeqCst);
    tracing::debug!("stream cancelled by client");
}
