//! The one place that decides the shape of the proxy's own errors: from the request's path,
//! before any other layer runs, so every refusal — the browser guard's, the access keys', the
//! limits', bad input, Entra failures, explained Azure refusals — comes out in the shape the
//! route's clients read. OpenAI's shape is what [`crate::error::ApiError`] writes; on the
//! Anthropic routes ([`crate::proxy::dialect::is_anthropic_path`]) the written error is
//! rewritten in Anthropic's ([`WrittenError::reshape`]).
//!
//! Being outermost, it also applies the one rule every answer obeys whoever wrote it: an
//! answer to HEAD has no body ([`super::head`]).

use std::task::{Context, Poll};

use axum::response::Response;
use futures_util::FutureExt;
use futures_util::future::{Either, Map};
use http::{Method, Request};
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

/// What is done to an answer on its way out, chosen from its request.
type Reshape<E> = fn(Result<Response, E>) -> Result<Response, E>;

/// A proxy-written error in Anthropic's shape.
fn to_anthropic<E>(result: Result<Response, E>) -> Result<Response, E> {
    result.map(|mut response| {
        WrittenError::reshape(&mut response, ErrorShape::Anthropic);
        response
    })
}

/// [`to_anthropic`], then the body taken out (HEAD on an Anthropic route).
fn to_anthropic_emptied<E>(result: Result<Response, E>) -> Result<Response, E> {
    super::head::emptied(to_anthropic(result))
}

impl<S, B> Service<Request<B>> for ErrorShaped<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    // Requests on OpenAI routes other than HEAD get the inner future itself: nothing is added
    // to their path.
    type Future = Either<Map<S::Future, Reshape<S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let anthropic = is_anthropic_path(request.uri().path());
        let head = request.method() == Method::HEAD;
        let reshape: Reshape<S::Error> = match (anthropic, head) {
            (false, false) => return Either::Right(self.inner.call(request)),
            (true, false) => to_anthropic,
            (false, true) => super::head::emptied,
            (true, true) => to_anthropic_emptied,
        };
        Either::Left(self.inner.call(request).map(reshape))
    }
}
