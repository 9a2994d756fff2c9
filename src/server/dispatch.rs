//! The first choice every request meets: the proxy's own endpoints, or forwarding.
//!
//! axum's `Router` matches each path against its routes, clones the matched route's boxed
//! service and records path parameters, for its fallback too: about 3 500 instructions and six
//! allocations of every proxied request (a twentieth of its path through the proxy), spent to
//! learn that the path is not one of four fixed ones. Those four go to the router, which
//! serves them with their request-id layers and method checks; every other path goes straight
//! to [`proxy::forward`]. What the router also did for every answer, emptying the body of an
//! answer to HEAD, is done outermost for all of them (`server::head`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use futures_util::future::Either;
use http::Request;
use tower::Service;

use crate::proxy::{self, ProxyState};

/// The paths of the proxy's own endpoints, exactly as the router matches them.
pub(super) const OWN_PATHS: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/status"];

/// The proxy's own endpoints (`own`) and forwarding, chosen by path.
#[derive(Clone)]
pub(super) struct Dispatch {
    own: Router,
    proxy: Arc<ProxyState>,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch").finish_non_exhaustive()
    }
}

impl Dispatch {
    /// `own` serves [`OWN_PATHS`]; everything else is forwarded with `proxy`.
    pub(super) fn new(own: Router, proxy: Arc<ProxyState>) -> Self {
        Self { own, proxy }
    }
}

/// A forwarded request's future (a named type: closures that take it, such as the
/// connection's `map_future`, then need no higher-ranked lifetime for the trait object).
pub(super) struct Forwarding(Pin<Box<dyn Future<Output = Response> + Send + 'static>>);

impl Future for Forwarding {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.0.as_mut().poll(cx).map(Ok)
    }
}

impl<B> Service<Request<B>> for Dispatch
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<<Router as Service<Request<B>>>::Future, Forwarding>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both ways are always ready (the router's `poll_ready` is too).
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if OWN_PATHS.contains(&request.uri().path()) {
            Either::Left(self.own.call(request))
        } else {
            let proxy = Arc::clone(&self.proxy);
            Either::Right(Forwarding(Box::pin(proxy::forward(
                State(proxy),
                request.map(Body::new),
            ))))
        }
    }
}
