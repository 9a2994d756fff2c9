//! The one place that decides the shape of the proxy's own errors: from the request's path,
//! before any other layer runs, so every refusal — the browser guard's, the access keys', the
//! limits', bad input, Entra failures, explained Azure refusals — comes out in the shape the
//! route's clients read. OpenAI's shape is what [`crate::error::ApiError`] writes; on the
//! Anthropic routes ([`crate::proxy::dialect::is_anthropic_path`]) the written error is
//! rewritten in Anthropic's ([`WrittenError::reshape`]).

use std::task::{Context, Poll};

use axum::response::Response;
use futures_util::FutureExt;
use futures_util::future::{Either, Map};
use http::Request;
use tower::{Layer, Service};

use crate::error::{ErrorShape, WrittenError};
use crate::proxy::dialect::is_anthropic_path;

/// Wraps a service so its errors take the shape of the route's clients.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorShapeLayer;

impl<S> Layer<S> for ErrorShapeLayer {
    type Service = ErrorShaped<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorShaped { inner }
    }
}

/// A service behind an [`ErrorShapeLayer`].
#[derive(Debug, Clone)]
pub struct ErrorShaped<S> {
    inner: S,
}

/// Rewrites a proxy-written error in Anthropic's shape.
type Reshape<E> = fn(Result<Response, E>) -> Result<Response, E>;

fn to_anthropic<E>(result: Result<Response, E>) -> Result<Response, E> {
    result.map(|mut response| {
        WrittenError::reshape(&mut response, ErrorShape::Anthropic);
        response
    })
}

impl<S, B> Service<Request<B>> for ErrorShaped<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    // OpenAI routes get the inner future itself: nothing is added to their path.
    type Future = Either<Map<S::Future, Reshape<S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if is_anthropic_path(request.uri().path()) {
            Either::Left(
                self.inner
                    .call(request)
                    .map(to_anthropic::<S::Error> as Reshape<S::Error>),
            )
        } else {
            Either::Right(self.inner.call(request))
        }
    }
}
