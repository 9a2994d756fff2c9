//! Upstream routing: Target::url and Target::uri.

use super::generators::*;
use super::*;
use foundry_proxy::upstream::{Dialect, Route};

const ENDPOINTS: &[&str] = &[
    "https://contoso.openai.azure.com",
    "https://contoso.openai.azure.com/openai/v1/",
    "https://contoso.openai.azure.com/openai",
    "https://r.services.ai.azure.com/models",
    "https://gw.example.com/api/projects/p1/",
    "http://127.0.0.1:8081",
    "http://[::1]:9000/base",
    "https://m.eastus.models.ai.azure.com/inference",
];

const STYLES: &[ApiStyle] = &[
    ApiStyle::OpenAiV1,
    ApiStyle::Project,
    ApiStyle::Deployments,
    ApiStyle::Models,
    ApiStyle::Passthrough,
];

/// Path-like rests: segments of ordinary and hostile pieces.
fn rest() -> BoxedStrategy<String> {
    let segment = prop_oneof![
        4 => prop::sample::select(&[
            "chat", "completions", "embeddings", "responses", "models", "audio",
            "transcriptions", "files", "resp_1", "openai", "deployments", "v1",
        ][..]).prop_map(str::to_owned),
        2 => prop::sample::select(&[
            "..", ".", "", "%2e%2e", "%2E.", ".%2e", "%2f", "%2F", "%5c", "%5C", "%252e",
            "a%2fb", "%00", "%", "a@b", "a?b", "a#b", "a\\b", "a\r\nb", "...", "%u002e",
            "\u{ff0e}\u{ff0e}", "a b", "~", ";x=1", "@", ":", "//",
        ][..]).prop_map(str::to_owned),
        1 => re("\\PC{0,6}"),
        1 => re("[ -~]{0,6}"),
    ];
    prop_oneof![
        4 => prop::collection::vec(segment, 1..5).prop_map(|s| s.join("/")),
        1 => re("\\PC{0,20}"),
        1 => any::<Vec<u8>>().prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
    .boxed()
}

fn query() -> BoxedStrategy<Option<String>> {
    proptest::option::of(prop_oneof![
        2 => re("[a-z=&-]{0,20}"),
        1 => re("[ -~]{0,20}"),
        1 => re("\\PC{0,20}"),
        1 => prop::sample::select(&[
            "api-version=x", "a=1&api-version=2024-10-21", "#frag", "@evil.com", "/../../x",
            "x=1#@evil.com/", "\r\nHost: evil",
        ][..]).prop_map(str::to_owned),
    ])
    .boxed()
}

fn model() -> BoxedStrategy<Option<String>> {
    proptest::option::of(prop_oneof![
        2 => re("[a-zA-Z0-9._-]{1,10}"),
        1 => prop::sample::select(&["fast", "..", ".", "../x", "a/b", "gpt-4o", "%2e%2e"][..])
            .prop_map(str::to_owned),
        1 => re("\\PC{0,10}"),
    ])
    .boxed()
}

/// The path every upstream URL of this target must start with.
fn expected_prefix(
    endpoint: &Url,
    style: ApiStyle,
    deployment: Option<&str>,
    needs_model: bool,
    deployment_in_path: bool,
) -> String {
    let mut base = endpoint.as_str().trim_end_matches('/').to_owned();
    if style.is_v1() {
        for suffix in ["/openai/v1", "/openai"] {
            if let Some(stripped) = base.strip_suffix(suffix) {
                base = stripped.to_owned();
                break;
            }
        }
    }
    let base_path = Url::parse(&base)
        .expect("base")
        .path()
        .trim_end_matches('/')
        .to_owned();
    let tail = match style {
        ApiStyle::OpenAiV1 | ApiStyle::Project => "/openai/v1/".to_owned(),
        ApiStyle::Passthrough => "/v1/".to_owned(),
        ApiStyle::Models => "/".to_owned(),
        ApiStyle::Deployments if needs_model || deployment_in_path => {
            format!("/openai/deployments/{}/", deployment.unwrap_or("?"))
        }
        ApiStyle::Deployments => "/openai/".to_owned(),
    };
    format!("{base_path}{tail}")
}

/// Percent-decodes what it can.
fn decoded(segment: &str) -> String {
    percent_decode(segment.as_bytes())
}

fn percent_decode(bytes: &[u8]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16)
        {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// No segment after the prefix that could climb out of it, even once decoded.
fn check_confined(path: &str, prefix: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        path.starts_with(prefix),
        "{:?} is not under {:?}",
        path,
        prefix
    );
    for segment in path[prefix.len()..].split('/') {
        let plain = decoded(segment);
        prop_assert!(
            plain != ".." && plain != "." && !plain.contains('/') && !plain.contains('\\'),
            "segment {:?} of {:?}",
            segment,
            path
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(2))]

    /// `Target::url` / `Target::uri` with any rest, query and model: never panic; when Ok, the
    /// host, port and scheme are the endpoint's and the path stays under the style's prefix,
    /// with no segment that climbs out of it.
    #[test]
    fn routing_stays_on_the_endpoint(
        endpoint in prop::sample::select(ENDPOINTS),
        style in prop::sample::select(STYLES),
        version in proptest::option::of(prop::sample::select(&["2024-10-21", "x&y=z", "a#b"][..])),
        aliases in prop::collection::btree_map(re("[a-z]{1,5}"), re("[a-zA-Z0-9._-]{1,10}|\\.\\.|a/b"), 0..3),
        rest in rest(),
        query in query(),
        model in model(),
        path_deployment in model(),
        classic in any::<bool>(),
    ) {
        let endpoint = Url::parse(endpoint).expect("endpoint");
        let target = Target::new(&endpoint, style, version, aliases.clone());
        let route = Route {
            rest: &rest,
            query: query.as_deref(),
            deployment: path_deployment.as_deref(),
            dialect: if classic { Dialect::Classic } else { Dialect::V1 },
        };
        let url = target.route_url(&route, model.as_deref());
        let uri = target.uri(&route, model.as_deref());
        let needs_model = target.needs_model(&route);
        let named = path_deployment.as_deref().or(model.as_deref());
        let deployment = named.map(|m| aliases.get(m).map_or(m, String::as_str));
        let prefix = expected_prefix(&endpoint, style, deployment, needs_model, path_deployment.is_some());
        if let Ok(url) = &url {
            let parsed = Url::parse(url).expect("an Ok URL parses");
            prop_assert_eq!(parsed.scheme(), endpoint.scheme());
            prop_assert_eq!(parsed.host_str(), endpoint.host_str());
            prop_assert_eq!(parsed.port_or_known_default(), endpoint.port_or_known_default());
            prop_assert!(parsed.username().is_empty() && parsed.password().is_none());
            check_confined(parsed.path(), &prefix)?;
            if needs_model || (style == ApiStyle::Deployments && path_deployment.is_some()) {
                let deployment = deployment.expect("a routed deployment has a model");
                prop_assert!(foundry_proxy::upstream::is_valid_deployment_name(deployment));
            }
        }
        if let Ok(uri) = &uri {
            prop_assert!(url.is_ok(), "uri Ok but url {:?}", url);
            prop_assert_eq!(uri.scheme_str(), Some(endpoint.scheme()));
            let host = uri.host().expect("host").trim_start_matches('[').trim_end_matches(']');
            let expected_host = endpoint.host_str().expect("host").trim_start_matches('[').trim_end_matches(']');
            prop_assert_eq!(host, expected_host);
            prop_assert_eq!(uri.port_u16(), endpoint.port());
            check_confined(uri.path(), &prefix)?;
        }
    }
}
