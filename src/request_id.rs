//! Request ids: the client's `x-request-id` when it sends one, else a new random (v4) UUID.
//! The id goes upstream with the request, into every log line about it, and back to the
//! client in the response's `x-request-id` (unless the upstream answered with its own).

use http::{HeaderName, HeaderValue, Request};
use tower_http::request_id::{MakeRequestId, RequestId};

/// The header that carries the id.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// A new id: a v4 UUID drawn from the thread's generator, which is seeded once, rather than
/// one `getrandom` system call per request.
pub fn generate() -> HeaderValue {
    let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = id.hyphenated().encode_lower(&mut text);
    HeaderValue::from_str(text).expect("a hyphenated UUID is a valid header value")
}

/// The request's id, set first if the client sent none.
pub fn ensure<B>(request: &mut Request<B>) -> HeaderValue {
    if let Some(id) = request.headers().get(HEADER) {
        return id.clone();
    }
    let id = generate();
    request.headers_mut().insert(HEADER, id.clone());
    id
}

/// [`generate`] for tower-http's request-id layers (the proxy's own endpoints).
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _request: &Request<B>) -> Option<RequestId> {
        Some(RequestId::new(generate()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client's id is kept; a missing one is made, set on the request, and unique.
    #[test]
    fn ensure_keeps_or_makes() {
        let mut request = Request::new(());
        request
            .headers_mut()
            .insert(HEADER, HeaderValue::from_static("client-7"));
        assert_eq!(ensure(&mut request), "client-7");

        let mut request = Request::new(());
        let made = ensure(&mut request);
        assert_eq!(request.headers().get(HEADER), Some(&made));
        let text = made.to_str().expect("ascii");
        assert_eq!(
            uuid::Uuid::parse_str(text).expect("uuid").get_version_num(),
            4
        );
        assert_ne!(generate(), generate());
    }
}
