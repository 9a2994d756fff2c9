//! Headers: prepare_request_headers, strip_hop_by_hop, presented_key.

use super::generators::*;
use super::*;

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];
const CREDENTIALS: &[&str] = &["authorization", "api-key"];
/// Not forwarded either: the upstream's own `Host`, `Expect`, and path or method overrides.
const NOT_FORWARDED: &[&str] = &[
    "host",
    "expect",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];
const ORDINARY: &[&str] = &[
    "content-type",
    "accept",
    "x-request-id",
    "x-ms-client-request-id",
    "openai-beta",
    "x-private",
    "x-other",
    "user-agent",
];

fn header_name() -> BoxedStrategy<String> {
    prop_oneof![
        2 => prop::sample::select(HOP_BY_HOP).prop_map(str::to_owned),
        1 => prop::sample::select(CREDENTIALS).prop_map(str::to_owned),
        1 => prop::sample::select(NOT_FORWARDED).prop_map(str::to_owned),
        2 => prop::sample::select(ORDINARY).prop_map(str::to_owned),
        1 => re("[a-z0-9!#$%&'*+.^_`|~-]{1,12}"),
    ]
    .boxed()
}

/// Header value bytes: visible ASCII, blanks and obs-text.
fn header_value() -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(
        prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff],
        0..24,
    )
    .boxed()
}

const CONNECTION_JUNK: &[&[u8]] = &[b"", b" ", b"\t", b" \xe9", b"\xff"];

/// A `Connection` value listing names (in any case, with blanks and junk between).
fn connection_value() -> BoxedStrategy<Vec<u8>> {
    prop::collection::vec(
        (
            header_name(),
            any::<bool>(),
            prop::sample::select(CONNECTION_JUNK),
        ),
        0..5,
    )
    .prop_map(|names| {
        let mut out = Vec::new();
        for (i, (name, upper, junk)) in names.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(junk);
            let name = if *upper {
                name.to_ascii_uppercase()
            } else {
                name.clone()
            };
            out.extend_from_slice(name.as_bytes());
            out.push(b' ');
        }
        out
    })
    .boxed()
}

fn header_set() -> BoxedStrategy<Vec<(String, Vec<u8>)>> {
    prop::collection::vec(
        prop_oneof![
            4 => (header_name(), header_value()),
            1 => (Just("connection".to_owned()), connection_value()),
        ],
        0..12,
    )
    .boxed()
}

fn header_map(pairs: &[(String, Vec<u8>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    headers
}

/// The names every `Connection` header lists (split on commas, blanks trimmed).
fn connection_listed(headers: &HeaderMap) -> std::collections::HashSet<HeaderName> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect()
}

/// Checks that exactly the `removed` names (and the ones `Connection` lists) are gone and
/// every other header is still there with all its values, in order.
fn check_filter(
    before: &HeaderMap,
    after: &HeaderMap,
    removed: &[&[&str]],
) -> Result<(), TestCaseError> {
    let listed = connection_listed(before);
    let connection_present = before.contains_key(http::header::CONNECTION);
    for name in before.keys() {
        let gone = removed.iter().any(|set| set.contains(&name.as_str()))
            || (connection_present && listed.contains(name));
        if gone {
            prop_assert!(!after.contains_key(name), "{} was kept", name);
        } else {
            let kept: Vec<&HeaderValue> = after.get_all(name).iter().collect();
            let had: Vec<&HeaderValue> = before.get_all(name).iter().collect();
            prop_assert_eq!(kept, had, "{} changed", name);
        }
    }
    prop_assert!(after.keys().all(|name| before.contains_key(name)));
    Ok(())
}

proptest! {
    #![proptest_config(config(5))]

    /// `prepare_request_headers`: no hop-by-hop header, caller credential, `Host`, `Expect` or
    /// header named by `Connection` survives; every other header is kept as it was.
    #[test]
    fn request_headers_filtered(pairs in header_set()) {
        let before = header_map(&pairs);
        let mut after = before.clone();
        prepare_request_headers(&mut after);
        check_filter(&before, &after, &[HOP_BY_HOP, CREDENTIALS, NOT_FORWARDED])?;
    }
}

proptest! {
    #![proptest_config(config(4))]

    /// `strip_hop_by_hop`: the hop-by-hop headers and those `Connection` names go, the rest
    /// (credentials included) stays.
    #[test]
    fn hop_by_hop_stripped(pairs in header_set()) {
        let before = header_map(&pairs);
        let mut after = before.clone();
        strip_hop_by_hop(&mut after);
        check_filter(&before, &after, &[HOP_BY_HOP])?;
    }
}

proptest! {
    #![proptest_config(config(1))]

    /// `presented_key` never panics; a key it finds is non-empty, trimmed, and part of one of
    /// the values sent.
    #[test]
    fn presented_key_of_any_headers(
        values in prop::collection::vec(
            (prop::sample::select(&["authorization", "api-key", "x-api-key"][..]),
             prop_oneof![
                 header_value(),
                 (re("(?i:bearer)[ \t]{0,2}"), re("[ -~]{0,20}"))
                     .prop_map(|(s, k)| format!("{s}{k}").into_bytes()),
             ]),
            0..4,
        ),
    ) {
        let mut headers = HeaderMap::new();
        for (name, value) in &values {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(*name, value);
            }
        }
        if let Some(key) = keys::presented_key(&headers) {
            prop_assert!(!key.is_empty());
            prop_assert_eq!(key, key.trim());
            prop_assert!(headers.values().any(|v| v.to_str().is_ok_and(|v| v.contains(key))));
        }
    }
}
