//! Answers to HEAD requests carry no body, whoever wrote them.
//!
//! axum's router empties the body of every answer to a HEAD request (after setting
//! `content-length` from it when the size is known). Forwarded requests no longer pass through
//! the router (`server::dispatch`), and neither do the browser guard's refusals or the
//! Anthropic-shaped errors, so the outermost layer (`server::error_shape`) does it for every
//! answer. Over HTTP/1.1 hyper would drop such a body itself; over HTTP/2 it sends it as DATA
//! frames, and a client resets the stream (an answer to HEAD has no content).

use axum::body::Body;
use axum::response::Response;
use http::HeaderValue;
use http::header::CONTENT_LENGTH;
use http_body::Body as _;

/// The answer without its body; `content-length` says how long it was when that is known and
/// the answer did not say it already (as axum's router does).
pub(super) fn emptied<E>(answer: Result<Response, E>) -> Result<Response, E> {
    answer.map(|mut response| {
        if !response.headers().contains_key(CONTENT_LENGTH)
            && let Some(size) = response.body().size_hint().exact()
        {
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(size));
        }
        *response.body_mut() = Body::empty();
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(body: &'static str) -> Result<Response, ()> {
        Ok(Response::new(Body::from(body)))
    }

    /// The body goes; its length stays in `content-length`, unless the answer had one.
    #[test]
    fn body_goes_length_stays() {
        let response = emptied(answer("{\"error\":{}}")).unwrap();
        assert_eq!(response.headers()[CONTENT_LENGTH], "12");
        assert_eq!(response.body().size_hint().exact(), Some(0));

        let mut given = Response::new(Body::from("x"));
        given
            .headers_mut()
            .insert(CONTENT_LENGTH, HeaderValue::from_static("640"));
        let response = emptied(Ok::<_, ()>(given)).unwrap();
        assert_eq!(response.headers()[CONTENT_LENGTH], "640");
        assert_eq!(response.body().size_hint().exact(), Some(0));
    }
}
