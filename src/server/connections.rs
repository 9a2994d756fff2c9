//! Accepting connections: HTTP/1.1 and HTTP/2 (prior knowledge) on one listener, with the
//! limits a server facing untrusted clients needs, and a bounded graceful drain.
//!
//! hyper's connection builder is used directly (not `axum::serve`) because the limits live
//! there: without a timer, hyper never times out a client that sends its headers a byte at a
//! time (slowloris), and `axum::serve` sets none.

use std::io;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Limits on what one client connection may do.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Time allowed for a request's headers to arrive, from its first byte (HTTP/1.1); a
    /// client slower than this is disconnected.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers, HTTP/1.1) or header list (HTTP/2) in
    /// bytes; larger heads are answered 431.
    pub max_header_bytes: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub http2_max_streams: u32,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(15),
            max_header_bytes: 64 * 1024,
            http2_max_streams: 256,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` is cancelled; then stops accepting (new
/// connections are refused), lets open requests finish for at most `grace`, and returns.
pub(super) async fn run(
    listener: TcpListener,
    app: Router,
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
        let service = TowerToHyperService::new(app.clone());
        // No upgrades (WebSocket, CONNECT) are proxied, so none are offered: hyper would
        // otherwise attach an upgrade handle to every request.
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                // Clients that go away, time out or send garbage: theirs to know, not a fault
                // of the proxy.
                debug!(%error, "connection ended with an error");
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

/// After a failed `accept`: out of file descriptors or memory, wait a moment (the error
/// repeats at once otherwise, spinning a core); anything else is the one connection's.
async fn pause_after_accept_error(error: &io::Error) {
    let resource_exhausted = matches!(error.raw_os_error(), Some(23 | 24 | 12 | 105));
    if resource_exhausted {
        warn!(%error, "cannot accept connections: out of file descriptors or memory; retrying in 100 ms");
        tokio::time::sleep(Duration::from_millis(100)).await;
    } else {
        debug!(%error, "accept failed");
    }
}
