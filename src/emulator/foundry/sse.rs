//! Streaming bodies: frames sent one at a time through a channel, with a delay between them,
//! counting streams started, completed, cancelled and reset.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use super::handler::GenCtx;
use crate::emulator::state::Emulator;

/// A `data:`-only SSE frame (Chat Completions style).
pub(crate) fn data(json: &serde_json::Value) -> String {
    format!("data: {json}\n\n")
}

/// An SSE frame with an `event:` line (Responses style).
pub(crate) fn event(name: &str, json: &serde_json::Value) -> String {
    format!("event: {name}\ndata: {json}\n\n")
}

/// Answers with `frames` as `text/event-stream`, the first at once and each next one after
/// `ctx.delay`; with `ctx.reset_after` = N, the connection is dropped after N frames.
///
/// A spawned task feeds the body; when the client goes away the body (and so the receiver) is
/// dropped, which the task sees either while waiting or on its next send.
pub(crate) fn stream(ctx: &GenCtx<'_>, frames: Vec<String>) -> Response {
    // Capacity 1: the task runs at most one frame ahead of the socket, so cancellation shows soon.
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(1);
    ctx.emu.streams_started.fetch_add(1, Ordering::SeqCst);
    let emu = Arc::clone(ctx.emu);
    let delay = ctx.delay;
    let reset_after = ctx.reset_after;
    tokio::spawn(async move {
        for (i, frame) in frames.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = tx.closed() => return cancelled(&emu),
                }
            }
            if reset_after == Some(i) {
                // A body error makes hyper drop the connection without ending the chunked
                // body: the client sees the stream cut, as when a front end resets it.
                emu.streams_reset.fetch_add(1, Ordering::SeqCst);
                tracing::debug!(frames = i, "stream reset (x-emulator-reset-after)");
                let reset = io::Error::new(io::ErrorKind::ConnectionReset, "emulated reset");
                let _ = tx.send(Err(reset)).await;
                return;
            }
            if tx.send(Ok(Bytes::from(frame))).await.is_err() {
                return cancelled(&emu);
            }
        }
        emu.streams_completed.fetch_add(1, Ordering::SeqCst);
        tracing::debug!("stream completed");
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
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
