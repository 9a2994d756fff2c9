//! The body wrapper: frames pass on as they arrive while usage is read on the way, and the
//! result is reported once, however the body ends.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};

use super::sse::SseScanner;
use super::{BodyKind, Ending, Usage, from_json};

/// The most of a JSON answer copied for parsing; a longer answer reports no usage.
const JSON_LIMIT: usize = 1024 * 1024;

/// Called once with the usage seen and how the body ended.
type OnDone = Box<dyn FnOnce(Option<Usage>, Ending) + Send>;

/// Wraps a response body so usage is observed as it passes.
///
/// - [`BodyKind::Json`]: every chunk passes on unchanged; a copy of at most 1 MiB is parsed
///   with [`from_json`] at the end (a one-chunk answer is kept by reference, not copied).
/// - [`BodyKind::Sse`]: events are scanned across any chunk boundaries; usage comes from the
///   chat chunk with a non-null `usage`, or the Responses API's `response.usage`
///   (`response.completed`). With `strip_injected` (the proxy added
///   `stream_options.include_usage` with [`request_usage_in_stream`](super::request_usage_in_stream)),
///   the usage-only event and the `"usage":null` members the upstream then adds to every chunk
///   are taken out, so the client gets the bytes it would have got without the injection. While
///   stripping, the bytes of an unfinished event wait for its end; the size hint is then
///   unknown, so a `content-length` from upstream must not be forwarded.
/// - [`BodyKind::Other`]: passes untouched; reports `None`.
///
/// Trailers pass through. `on_done` is called exactly once: when the upstream body ends
/// ([`Ending::Complete`]), yields an error ([`Ending::Error`]) or the wrapper is dropped first
/// ([`Ending::Dropped`], the client went away), with the usage seen by then. It runs on the task
/// that polls the body, so it must be quick and must not block.
pub fn observe<B>(
    body: B,
    kind: BodyKind,
    strip_injected: bool,
    on_done: impl FnOnce(Option<Usage>, Ending) + Send + 'static,
) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
{
    observe_with_first_byte(body, kind, strip_injected, None::<fn()>, on_done)
}

/// [`observe`], and `on_first_byte` is called once, when the first non-empty data frame is
/// passed on (not when an upstream chunk arrives: a chunk that is all stripped out sends
/// nothing). A body that sends no data never calls it. It runs on the task that polls the
/// body, so it must be quick; after it, each frame costs one `Option` check.
///
/// Generic over the upstream body (hyper's `Incoming` on the request path) so it is wrapped
/// as it is, not boxed first into an axum `Body`: one allocation per answer and one dynamic
/// call per frame less.
pub fn observe_with_first_byte<B, F>(
    body: B,
    kind: BodyKind,
    strip_injected: bool,
    on_first_byte: Option<F>,
    on_done: impl FnOnce(Option<Usage>, Ending) + Send + 'static,
) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<axum::BoxError>,
    F: FnOnce() + Send + Unpin + 'static,
{
    if body.is_end_stream() {
        // Nothing will be polled: an empty body has ended already, with no usage.
        on_done(None, Ending::Complete);
        return Body::new(body);
    }
    let watch = match kind {
        BodyKind::Json => Watch::Json(JsonCopy::default()),
        BodyKind::Sse => Watch::Sse(SseScanner::new(strip_injected)),
        BodyKind::Other => Watch::Other,
    };
    Body::new(Observed {
        inner: body,
        watch,
        on_first_byte,
        on_done: Some(Box::new(on_done)),
        ended: false,
        trailers: None,
    })
}

/// What is watched for, by kind.
#[derive(Debug)]
enum Watch {
    Json(JsonCopy),
    Sse(SseScanner),
    Other,
}

impl Watch {
    /// One data chunk in; what to pass on out.
    fn data(&mut self, chunk: Bytes) -> Bytes {
        match self {
            Self::Json(copy) => {
                copy.push(&chunk);
                chunk
            }
            Self::Sse(scanner) => scanner.feed(chunk),
            Self::Other => chunk,
        }
    }

    /// The upstream body ended: settles the usage, returns bytes still to pass on.
    fn end(&mut self) -> Bytes {
        match self {
            Self::Json(copy) => {
                copy.finish();
                Bytes::new()
            }
            Self::Sse(scanner) => scanner.finish(),
            Self::Other => Bytes::new(),
        }
    }

    fn usage(&self) -> Option<Usage> {
        match self {
            Self::Json(copy) => copy.usage,
            Self::Sse(scanner) => scanner.usage(),
            Self::Other => None,
        }
    }

    /// Whether the output may differ from the input.
    fn strips(&self) -> bool {
        matches!(self, Self::Sse(scanner) if scanner.strips())
    }
}

/// A bounded copy of a JSON answer.
#[derive(Debug, Default)]
struct JsonCopy {
    /// The first chunk, by reference (most answers are one chunk).
    first: Option<Bytes>,
    /// The answer so far once it is more than one chunk.
    joined: Vec<u8>,
    /// Longer than [`JSON_LIMIT`]: not kept.
    oversized: bool,
    /// Set at the end.
    usage: Option<Usage>,
}

impl JsonCopy {
    fn push(&mut self, chunk: &Bytes) {
        if self.oversized || chunk.is_empty() {
            return;
        }
        let first_len = self.first.as_ref().map_or(0, Bytes::len);
        if first_len + self.joined.len() + chunk.len() > JSON_LIMIT {
            self.oversized = true;
            self.first = None;
            self.joined = Vec::new();
        } else if let Some(first) = self.first.take() {
            self.joined.reserve(first.len() + chunk.len());
            self.joined.extend_from_slice(&first);
            self.joined.extend_from_slice(chunk);
        } else if self.joined.is_empty() {
            self.first = Some(chunk.clone());
        } else {
            self.joined.extend_from_slice(chunk);
        }
    }

    fn finish(&mut self) {
        if !self.oversized {
            self.usage = match &self.first {
                Some(first) => from_json(first),
                None => from_json(&self.joined),
            };
        }
        self.first = None;
        self.joined = Vec::new();
    }
}

/// The wrapper itself around the upstream body `B`; `F` is called at the first data byte
/// passed on.
struct Observed<B, F> {
    /// The upstream body.
    inner: B,
    watch: Watch,
    /// Taken by the first non-empty data frame passed on.
    on_first_byte: Option<F>,
    /// Taken by the first report.
    on_done: Option<OnDone>,
    /// The upstream body has ended (or failed): it is not polled again.
    ended: bool,
    /// Trailers waiting for the bytes that must go before them.
    trailers: Option<Frame<Bytes>>,
}

impl<B, F> fmt::Debug for Observed<B, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observed")
            .field("watch", &self.watch)
            .field("ended", &self.ended)
            .field("first_byte_sent", &self.on_first_byte.is_none())
            .field("reported", &self.on_done.is_none())
            .finish_non_exhaustive()
    }
}

impl<B, F: FnOnce()> Observed<B, F> {
    /// A data frame to pass on; the first non-empty one calls `on_first_byte`.
    fn pass(&mut self, data: Bytes) -> Frame<Bytes> {
        if !data.is_empty()
            && let Some(on_first_byte) = self.on_first_byte.take()
        {
            on_first_byte();
        }
        Frame::data(data)
    }
}

impl<B, F> Observed<B, F> {
    fn report(&mut self, ending: Ending) {
        if let Some(on_done) = self.on_done.take() {
            on_done(self.watch.usage(), ending);
        }
    }

    /// The upstream body is done: settle, report, and return the bytes still to pass on.
    fn complete(&mut self) -> Bytes {
        self.ended = true;
        let tail = self.watch.end();
        self.report(Ending::Complete);
        tail
    }
}

impl<B, F> http_body::Body for Observed<B, F>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
    F: FnOnce() + Unpin,
{
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(trailers) = this.trailers.take() {
                return Poll::Ready(Some(Ok(trailers)));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(error)) => {
                    this.ended = true;
                    this.report(Ending::Error);
                    return Poll::Ready(Some(Err(axum::Error::new(error))));
                }
                None => {
                    let tail = this.complete();
                    if tail.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(this.pass(tail))));
                }
            };
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    // Trailers end the body; held bytes go first.
                    let tail = if frame.is_trailers() {
                        this.complete()
                    } else {
                        Bytes::new()
                    };
                    if tail.is_empty() {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    this.trailers = Some(frame);
                    return Poll::Ready(Some(Ok(this.pass(tail))));
                }
            };
            let arrived_empty = data.is_empty();
            let mut out = this.watch.data(data);
            // A body that knows it is over may not be polled again: settle now.
            if this.inner.is_end_stream() {
                let tail = this.complete();
                if !tail.is_empty() {
                    out = join(out, tail);
                }
            }
            if out.is_empty() && !arrived_empty {
                // All of it was taken out: nothing to send for this chunk.
                continue;
            }
            return Poll::Ready(Some(Ok(this.pass(out))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        if self.ended {
            SizeHint::with_exact(0)
        } else if self.watch.strips() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

impl<B, F> Drop for Observed<B, F> {
    fn drop(&mut self) {
        self.report(Ending::Dropped);
    }
}

fn join(a: Bytes, b: Bytes) -> Bytes {
    if a.is_empty() {
        return b;
    }
    let mut out = BytesMut::with_capacity(a.len() + b.len());
    out.extend_from_slice(&a);
    out.extend_from_slice(&b);
    out.freeze()
}
