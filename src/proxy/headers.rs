//! Which headers cross the proxy. Pure functions over `HeaderMap`, edited in place so the
//! request path copies nothing.

use http::HeaderMap;
use http::header::{self, HeaderName};

// The name lists below are `static`, not `const`: a `const` array is built anew (and
// dropped) at every use, that is for every header of every request checked against it.

/// Hop-by-hop headers (RFC 9110 §7.6.1) plus the older ones proxies still see.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The caller's credentials, never forwarded: the proxy's token replaces them. `x-api-key` is
/// what Anthropic clients send.
static CALLER_CREDENTIALS: [HeaderName; 3] = [
    header::AUTHORIZATION,
    HeaderName::from_static("api-key"),
    HeaderName::from_static("x-api-key"),
];

/// Headers some servers and gateways read as a replacement path or method (IIS URL Rewrite,
/// Rails/ASP.NET method overrides): never forwarded, so the route and method Azure sees are the
/// ones the proxy checked.
static OVERRIDES: [HeaderName; 5] = [
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
    HeaderName::from_static("x-http-method-override"),
    HeaderName::from_static("x-http-method"),
    HeaderName::from_static("x-method-override"),
];

/// What a browser says about the page behind a request: checked at the edge (the browser
/// guard) and never forwarded — the proxy, not the page, is Azure's client, and the page's
/// cookies and address are nobody's business upstream.
static BROWSER_CONTEXT: [HeaderName; 3] = [header::ORIGIN, header::REFERER, header::COOKIE];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_matching(headers, |name| {
        HOP_BY_HOP.contains(name) || name == header::UPGRADE
    });
}

/// Prepares the caller's headers for the upstream: no hop-by-hop headers, no caller
/// credentials, no `Host` (the client sets the upstream's), no `Expect` (the body is
/// already read or streamed by the proxy), no path or method overrides and no browser context
/// (`Origin`, `Referer`, `Cookie`, `Sec-Fetch-*`).
pub fn prepare_request_headers(headers: &mut HeaderMap) {
    remove_matching(headers, |name| {
        HOP_BY_HOP.contains(name)
            || CALLER_CREDENTIALS.contains(name)
            || name == header::UPGRADE
            || name == header::HOST
            || name == header::EXPECT
            || OVERRIDES.contains(name)
            || BROWSER_CONTEXT.contains(name)
            || name.as_str().starts_with("sec-fetch-")
    });
}

/// Removes every header `unwanted` names, and those a `Connection` header names. One pass over
/// the few headers present (rather than one lookup per unwanted name); removals only for what
/// is there.
fn remove_matching(headers: &mut HeaderMap, unwanted: impl Fn(&HeaderName) -> bool) {
    let mut found: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if unwanted(name) {
            found.push(name.clone());
        }
    }
    if found.contains(&header::CONNECTION) {
        // Split the bytes, not the text: a value with one non-ASCII byte (obs-text) still names
        // the headers it lists.
        found.extend(
            headers
                .get_all(header::CONNECTION)
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                .map(<[u8]>::trim_ascii)
                // The usual values name no header (`close`) or one removed already
                // (`keep-alive`): no name is built for them (a custom name allocates).
                .filter(|token| {
                    !token.eq_ignore_ascii_case(b"keep-alive")
                        && !token.eq_ignore_ascii_case(b"close")
                })
                .filter_map(|name| HeaderName::from_bytes(name).ok()),
        );
    }
    for name in found {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Credentials, hop-by-hop, Connection-named, override and browser-context headers go;
    /// the rest stays.
    #[test]
    fn request_headers_filtered() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "Bearer sk-caller"),
            ("api-key", "caller-key"),
            ("x-api-key", "sk-ant-caller"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "tools-2024-04-04"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("host", "127.0.0.1:8080"),
            ("x-original-url", "/admin"),
            ("x-rewrite-url", "/admin"),
            ("x-http-method-override", "TRACE"),
            ("x-http-method", "TRACE"),
            ("x-method-override", "TRACE"),
            ("origin", "http://localhost:3000"),
            ("referer", "http://localhost:3000/chat"),
            ("cookie", "session=1"),
            ("sec-fetch-site", "same-site"),
            ("sec-fetch-mode", "cors"),
            ("content-type", "application/json"),
            ("x-ms-client-request-id", "abc"),
            ("openai-beta", "assistants=v2"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        prepare_request_headers(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "anthropic-beta",
                "anthropic-version",
                "content-type",
                "openai-beta",
                "x-ms-client-request-id"
            ]
        );
    }
}
