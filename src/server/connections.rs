//! Accepting connections: HTTP/1.1 and HTTP/2 (prior knowledge) on one listener, with the
//! limits a server facing untrusted clients needs, and a bounded graceful drain.
//!
//! hyper's connection builder is used directly (not `axum::serve`) because the limits live
//! there: without a timer, hyper never times out a client that sends its headers a byte at a
//! time (slowloris), and `axum::serve` sets none.
//!
//! Around hyper, each connection also gets:
//! - a deadline for its first request (the header read timeout): hyper's timer starts only
//!   once the HTTP version is known, so a client that sends nothing, stops inside the HTTP/2
//!   preface or never sends a request on HTTP/2 would otherwise hold its connection forever;
//! - request bodies that fail with [`BodyReadTimeout`] (answered 408) when the client stops
//!   sending in the middle;
//! - a limit on requests abandoned before their answer (HTTP/2 rapid reset paced to get past
//!   h2's own protection): the connection is closed.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use crate::diagnose::RefusalCode;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

/// Limits on what one client connection may do.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time allowed for a request's headers to arrive (HTTP/1.1), and for a new connection's
    /// first request to begin (HTTP/1.1 and HTTP/2, the version sniffing included); a client
    /// slower than this is disconnected.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers, HTTP/1.1) or header list (HTTP/2) in
    /// bytes; larger heads are answered 431.
    pub max_header_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_streams: u32,
    /// Time a request body may stall: a client that stops sending in the middle of a body
    /// (fewer bytes than its `Content-Length`, an unfinished chunk) is answered 408.
    pub body_read_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(15),
            max_header_bytes: 64 * 1024,
            http2_max_streams: 256,
            body_read_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting (new
/// connections are refused), lets open requests finish for at most `grace`, and returns.
pub(super) async fn run(
    listener: TcpListener,
    app: super::App,
    limits: ConnectionLimits,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let builder = builder(limits);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                pause_after_accept_error(&error).await;
                continue;
            }
        };
        // Without NODELAY small SSE events wait for Nagle's timer.
        let _ = stream.set_nodelay(true);
        let watch = Arc::new(Watch::default());
        let service = {
            let (counted, guarded) = (Arc::clone(&watch), Arc::clone(&watch));
            let body_read_timeout = limits.body_read_timeout;
            // Around the whole app, so every answer — the browser guard's refusals too — gets
            // its route's error shape (and no body when the request was HEAD); here rather than as a `Router::layer`, which would
            // box one more future per request.
            tower::Layer::layer(&super::error_shape::ErrorShapeLayer, app.clone())
                .map_request(move |request: http::Request<Incoming>| {
                    counted.requests.fetch_add(1, Ordering::Relaxed);
                    request.map(|body| TimedBody::new(body, body_read_timeout))
                })
                .map_future(move |answer| {
                    let mut guard = Unanswered {
                        watch: Arc::clone(&guarded),
                        answered: false,
                    };
                    async move {
                        let answer = answer.await;
                        guard.answered();
                        answer
                    }
                })
        };
        // HTTP/1.1 upgrades are offered for WebSockets (`proxy::websocket`); once a connection
        // is upgraded it leaves hyper (and this drain), and its relay closes it at shutdown.
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        let first_request_limit = limits.header_read_timeout;
        tokio::spawn(async move {
            let connection = std::pin::pin!(connection);
            // hyper's header read timeout starts only once the protocol is known: a client
            // that sends nothing, or stops inside the HTTP/2 preface, or opens HTTP/2 and never
            // sends a request, would hold the connection forever.
            let first_request = std::pin::pin!(Some(tokio::time::sleep(first_request_limit)));
            match guarded(connection, first_request, &watch).await {
                Guarded::Ended(Ok(())) => {}
                Guarded::Ended(Err(error)) => {
                    // Clients that go away, time out or send garbage: theirs to know, not a
                    // fault of the proxy.
                    debug!(%error, "connection ended with an error");
                }
                Guarded::NoFirstRequest => {
                    debug!("no request within the header read timeout: connection closed");
                }
                Guarded::Abused => warn!(
                    abandoned = watch.abandoned.load(Ordering::Relaxed),
                    requests = watch.requests.load(Ordering::Relaxed),
                    "most requests on a connection were cancelled before their answer (HTTP/2 rapid reset?): connection closed"
                ),
            }
        });
    }
    drop(listener);
    info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining in-flight requests"
    );
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => {
            warn!("grace period over; closing the remaining connections");
        }
    }
}

fn builder(limits: ConnectionLimits) -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Requests a connection may abandon (an HTTP/2 stream reset before its answer began) before
/// it is closed, once they are also most of its requests. Each abandoned request may have cost
/// an upstream request and connection: resetting streams as fast as they open would otherwise
/// turn a few bytes per stream into that much work (HTTP/2 "rapid reset"), past the stream limit.
const ABANDONED_LIMIT: u32 = 100;

/// How a connection's task ended.
enum Guarded<E> {
    /// hyper is done with the connection.
    Ended(Result<(), E>),
    /// No request began within the header read timeout.
    NoFirstRequest,
    /// Most of its requests were abandoned ([`ABANDONED_LIMIT`]).
    Abused,
}

/// Drives `connection` until it ends, or until it breaks the connection's limits (dropping it
/// closes the connection).
///
/// Polled by hand rather than with `tokio::select!`, because this runs at every wake-up of the
/// connection's task (once per streamed event): `select!` would poll a `Notified` (which takes
/// its `Notify`'s mutex at every poll) and the first-request timer (until it fires, long after
/// the first request), and draw a random branch order. Here a wake-up costs one poll of the
/// connection, one atomic load and a waker comparison; the timer is dropped once a request
/// has arrived.
async fn guarded<C, E>(
    mut connection: Pin<&mut C>,
    mut first_request: Pin<&mut Option<Sleep>>,
    watch: &Watch,
) -> Guarded<E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut registered: Option<std::task::Waker> = None;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(ended) = connection.as_mut().poll(cx) {
            return Poll::Ready(Guarded::Ended(ended));
        }
        if let Some(timer) = first_request.as_mut().as_pin_mut() {
            if watch.requests.load(Ordering::Relaxed) > 0 {
                first_request.set(None);
            } else if timer.poll(cx).is_ready() {
                return Poll::Ready(Guarded::NoFirstRequest);
            }
        }
        if !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let waker = cx.waker().clone();
            *watch.lock_waker() = Some(waker.clone());
            registered = Some(waker);
        }
        // After the waker is stored: an `Unanswered` that sets the flag later wakes it.
        if watch.abused.load(Ordering::Acquire) {
            return Poll::Ready(Guarded::Abused);
        }
        Poll::Pending
    })
    .await
}

/// What one connection's requests did, for the connection's own limits.
#[derive(Debug, Default)]
struct Watch {
    /// Requests that arrived whole.
    requests: AtomicU32,
    /// Requests dropped before their answer was ready.
    abandoned: AtomicU32,
    /// Set when abandoned requests pass [`ABANDONED_LIMIT`] and half the requests.
    abused: AtomicBool,
    /// The connection task's waker, woken when `abused` is set (an HTTP/2 request is dropped
    /// on its own task). Locked only when the task's waker changes and when abuse is found.
    waker: Mutex<Option<std::task::Waker>>,
}

impl Watch {
    fn lock_waker(&self) -> std::sync::MutexGuard<'_, Option<std::task::Waker>> {
        // A panic while holding it cannot leave a waker half-written.
        self.waker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Counts its request as abandoned if dropped before the answer is ready.
struct Unanswered {
    watch: Arc<Watch>,
    answered: bool,
}

impl Unanswered {
    /// The answer is ready: the request was not abandoned.
    fn answered(&mut self) {
        self.answered = true;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let watch = &self.watch;
        let abandoned = watch.abandoned.fetch_add(1, Ordering::Relaxed) + 1;
        let requests = watch.requests.load(Ordering::Relaxed);
        if abandoned > ABANDONED_LIMIT && abandoned.saturating_mul(2) > requests {
            watch.abused.store(true, Ordering::Release);
            if let Some(waker) = watch.lock_waker().as_ref() {
                waker.wake_by_ref();
            }
        }
    }
}

/// A request body that stopped arriving: the client sent nothing for the connection's body read
/// timeout while the body was being read. Raised by the listener's request bodies, answered 408.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no request body data for {} s", .0.as_secs())]
pub struct BodyReadTimeout(pub Duration);

impl BodyReadTimeout {
    /// The timeout somewhere in `error`'s chain of causes.
    pub(crate) fn find(error: &(dyn std::error::Error + 'static)) -> Option<Self> {
        let mut current = Some(error);
        while let Some(error) = current {
            if let Some(timeout) = error.downcast_ref::<Self>() {
                return Some(*timeout);
            }
            current = error.source();
        }
        None
    }

    /// The 408 `request_body_timeout` answered for it.
    pub(crate) fn refusal(self) -> crate::error::ApiError {
        let vars =
            crate::diagnose::catalog::Vars::new().set("detail", self.0.as_secs().to_string());
        let mut error = crate::diagnose::proxy_refusal(RefusalCode::RequestBodyTimeout, &vars);
        error.kind = "invalid_request_error";
        error
    }
}

/// A request body that fails with [`BodyReadTimeout`] once the client has sent nothing for
/// `limit` while the body is being read. Only time spent waiting for the client counts: a reader
/// that pauses (an upstream applying back-pressure) does not use the client's time up.
struct TimedBody {
    inner: Incoming,
    limit: Duration,
    /// Made at the first wait, then reset at each new wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// A read is waiting for the client and the timer runs.
    waiting: bool,
}

impl TimedBody {
    fn new(inner: Incoming, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
            waiting: false,
        }
    }
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            return Poll::Ready(frame.map(|frame| frame.map_err(Into::into)));
        }
        if !this.waiting {
            this.waiting = true;
            let deadline = Instant::now() + this.limit;
            match this.timer.as_mut() {
                Some(timer) => timer.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        match this.timer.as_mut().map(|timer| timer.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(Some(Err(Box::new(BodyReadTimeout(this.limit))))),
            _ => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// Linux errno values `accept` fails with when the process or system runs out of a resource
// (asm-generic/errno-base.h, errno.h). `std::io::ErrorKind` has no exact kind for them
// (ENOMEM is `ErrorKind::OutOfMemory`, matched by kind); the crate does not depend on `libc`
// for three numbers.
/// ENFILE: the system's table of open files is full.
const ENFILE: i32 = 23;
/// EMFILE: the process has as many file descriptors open as its limit allows.
const EMFILE: i32 = 24;
/// ENOBUFS: no socket buffer space (kernel memory).
const ENOBUFS: i32 = 105;

/// After a failed `accept`: out of file descriptors or memory, wait a moment (the error
/// repeats at once otherwise, spinning a core); anything else is the one connection's.
async fn pause_after_accept_error(error: &io::Error) {
    let resource_exhausted = error.kind() == io::ErrorKind::OutOfMemory
        || matches!(error.raw_os_error(), Some(ENFILE | EMFILE | ENOBUFS));
    if resource_exhausted {
        warn!(%error, "cannot accept connections: out of file descriptors or memory; retrying in 100 ms");
        tokio::time::sleep(Duration::from_millis(100)).await;
    } else {
        debug!(%error, "accept failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that never ends by itself.
    fn open_connection() -> std::future::Pending<Result<(), ()>> {
        std::future::pending()
    }

    /// Requests abandoned past the limit end the connection, also when they are dropped on
    /// another task (hyper runs each HTTP/2 request on its own): the flag wakes it.
    #[tokio::test]
    async fn abandoned_requests_end_the_connection() {
        let watch = Arc::new(Watch::default());
        let abandon = {
            let watch = Arc::clone(&watch);
            tokio::spawn(async move {
                for _ in 0..=ABANDONED_LIMIT {
                    watch.requests.fetch_add(1, Ordering::Relaxed);
                    drop(Unanswered {
                        watch: Arc::clone(&watch),
                        answered: false,
                    });
                    tokio::task::yield_now().await;
                }
            })
        };
        let connection = std::pin::pin!(open_connection());
        let first_request = std::pin::pin!(None::<Sleep>);
        // Bounded, so a lost wake-up fails the test instead of hanging it.
        let ended = tokio::time::timeout(
            Duration::from_secs(10),
            guarded(connection, first_request, &watch),
        )
        .await
        .expect("the connection task was not woken");
        assert!(matches!(ended, Guarded::Abused));
        abandon.await.expect("abandoning task");
        assert_eq!(watch.abandoned.load(Ordering::Relaxed), ABANDONED_LIMIT + 1);
    }

    /// Answered requests are not abandoned, however many: the connection stays open.
    #[tokio::test(start_paused = true)]
    async fn answered_requests_do_not_count() {
        let watch = Arc::new(Watch::default());
        for _ in 0..=2 * ABANDONED_LIMIT {
            watch.requests.fetch_add(1, Ordering::Relaxed);
            let mut guard = Unanswered {
                watch: Arc::clone(&watch),
                answered: false,
            };
            guard.answered();
        }
        let connection = std::pin::pin!(open_connection());
        let first_request = std::pin::pin!(None::<Sleep>);
        let open = tokio::time::timeout(
            Duration::from_secs(60),
            guarded(connection, first_request, &watch),
        )
        .await;
        assert!(open.is_err(), "the connection was ended");
        assert_eq!(watch.abandoned.load(Ordering::Relaxed), 0);
    }

    /// No request within the header read timeout ends a connection; once one has come, the
    /// deadline no longer applies.
    #[tokio::test(start_paused = true)]
    async fn first_request_deadline() {
        let limit = Duration::from_secs(15);
        let watch = Watch::default();
        let connection = std::pin::pin!(open_connection());
        let first_request = std::pin::pin!(Some(tokio::time::sleep(limit)));
        let ended = guarded(connection, first_request, &watch).await;
        assert!(matches!(ended, Guarded::NoFirstRequest));

        let watch = Watch::default();
        watch.requests.store(1, Ordering::Relaxed);
        let connection = std::pin::pin!(open_connection());
        let first_request = std::pin::pin!(Some(tokio::time::sleep(limit)));
        let open =
            tokio::time::timeout(4 * limit, guarded(connection, first_request, &watch)).await;
        assert!(open.is_err(), "the connection was ended");
    }
}
