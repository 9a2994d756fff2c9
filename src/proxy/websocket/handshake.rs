//! The inbound handshake: what an upgrade asks for (which surface, which deployment, which
//! subprotocols, which key), and the upstream URL it maps to.

use http::header::{SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::{HeaderMap, HeaderValue};

use crate::diagnose::RefusalCode;
use crate::error::ApiError;
use crate::upstream::{self, ApiStyle, Dialect, Route, Target};

/// The subprotocol prefix browser clients put the API key in (`new WebSocket(url,
/// ["realtime", "openai-insecure-api-key." + key])`): read as an access key, never sent on.
const KEY_PROTOCOL: &str = "openai-insecure-api-key.";

/// The api-version of the realtime surface under `/openai/realtime` when the caller names
/// none (docs/azure-facts.md §7: the preview route's version).
pub(super) const REALTIME_API_VERSION: &str = "2025-04-01-preview";

/// True for an HTTP/1.1 WebSocket upgrade (`Upgrade: websocket`, any case).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        })
}

/// What the client's handshake offers.
#[derive(Debug)]
pub(super) struct Offer {
    /// `Sec-WebSocket-Key`, for the `Sec-WebSocket-Accept` answer.
    pub(super) key: HeaderValue,
    /// The access key from an `openai-insecure-api-key.KEY` subprotocol, if any.
    pub(super) api_key: Option<String>,
    /// The first other subprotocol offered (e.g. `realtime`): the one the answer selects.
    pub(super) protocol: Option<HeaderValue>,
}

/// Reads the handshake; an upgrade that is not RFC 6455's version 13 is refused 426.
pub(super) fn offer(headers: &HeaderMap) -> Result<Offer, ApiError> {
    let version_ok = headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes().trim_ascii() == b"13");
    let key = headers
        .get(SEC_WEBSOCKET_KEY)
        .filter(|_| version_ok)
        .cloned()
        .ok_or_else(|| {
            let mut refusal = not_supported(
                "this upgrade is not a WebSocket version 13 handshake (Sec-WebSocket-Key and Sec-WebSocket-Version: 13)",
            );
            refusal
                .headers
                .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
            refusal
        })?;
    let mut api_key = None;
    let mut protocol = None;
    let offered = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty());
    for name in offered {
        match name.strip_prefix(KEY_PROTOCOL) {
            Some(key) => api_key = Some(key.to_owned()),
            None if protocol.is_none() => protocol = HeaderValue::from_str(name).ok(),
            None => {}
        }
    }
    Ok(Offer {
        key,
        api_key,
        protocol,
    })
}

/// Where a served upgrade goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SocketRoute {
    /// `ws://…` or `wss://…`, with the deployment and api-version in the query.
    pub(super) url: String,
    /// The deployment a realtime socket names (after aliases), for usage and metrics.
    pub(super) model: Option<String>,
    /// `realtime` or `responses`: the metrics route label.
    pub(super) label: &'static str,
}

/// The upstream WebSocket for an inbound upgrade, per API style (docs/azure-facts.md §7):
/// openai-v1 and project → `{endpoint}/openai/v1/realtime?model=D` and
/// `{endpoint}/openai/v1/responses`; deployments → `{endpoint}/openai/realtime?api-version=V&deployment=D`
/// (and the v1 path for the Responses mode, which has no dated route). Anything else is 426.
pub(super) fn socket_route(target: &Target, route: &Route<'_>) -> Result<SocketRoute, ApiError> {
    let label = match (route.rest, route.dialect, route.deployment) {
        ("realtime", Dialect::V1 | Dialect::Classic, None) => "realtime",
        ("responses", Dialect::V1 | Dialect::Classic, None) => "responses",
        _ => {
            return Err(not_supported(&format!(
                "'{}' has no WebSocket mode",
                route.rest.escape_debug()
            )));
        }
    };
    let style = target.style();
    if matches!(style, ApiStyle::Models | ApiStyle::Passthrough) {
        return Err(not_supported(&format!(
            "FOUNDRY_API={style} has no WebSocket surface"
        )));
    }
    let query = Query::read(route.query);
    if label == "responses" {
        let rest = Route::v1("responses", query.others.as_deref());
        let url = match style {
            ApiStyle::Deployments => {
                let mut url = format!("{}/openai/v1/responses", target.base());
                if let Some(others) = &query.others {
                    url.push('?');
                    url.push_str(others);
                }
                url
            }
            _ => target
                .route_url(&rest, None)
                .map_err(|e| not_supported(&e.to_string()))?,
        };
        return Ok(SocketRoute {
            url: websocket_scheme(url),
            model: None,
            label,
        });
    }
    let named = query.deployment.ok_or_else(|| {
        not_supported("realtime needs the deployment: /v1/realtime?model=DEPLOYMENT")
    })?;
    let deployment = target.alias(&named).unwrap_or(&named).to_owned();
    if !upstream::is_valid_deployment_name(&deployment) {
        return Err(crate::proxy::refuse(
            RefusalCode::InvalidModel,
            deployment.escape_debug().to_string(),
        ));
    }
    let mut pairs = url::form_urlencoded::Serializer::new(String::new());
    let built = match style {
        ApiStyle::Deployments => {
            let version = query.api_version.as_deref().unwrap_or(REALTIME_API_VERSION);
            pairs.append_pair("api-version", version);
            pairs.append_pair("deployment", &deployment);
            with_others(pairs.finish(), query.others.as_deref())
        }
        _ => {
            pairs.append_pair("model", &deployment);
            with_others(pairs.finish(), query.others.as_deref())
        }
    };
    let dialect = if style == ApiStyle::Deployments {
        Dialect::Classic
    } else {
        Dialect::V1
    };
    let upstream_route = Route {
        rest: "realtime",
        query: Some(&built),
        deployment: None,
        dialect,
    };
    let url = target
        .route_url(&upstream_route, None)
        .map_err(|e| not_supported(&e.to_string()))?;
    Ok(SocketRoute {
        url: websocket_scheme(url),
        model: Some(deployment),
        label,
    })
}

/// The caller's query, read once: the deployment (`model`, or `deployment` on the Azure path),
/// its api-version, and the other pairs, passed on as they are.
struct Query {
    deployment: Option<String>,
    api_version: Option<String>,
    others: Option<String>,
}

impl Query {
    fn read(query: Option<&str>) -> Self {
        let mut read = Query {
            deployment: None,
            api_version: None,
            others: None,
        };
        let mut others = url::form_urlencoded::Serializer::new(String::new());
        let mut any = false;
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
            match name.to_ascii_lowercase().as_str() {
                "model" | "deployment" if !value.is_empty() => {
                    read.deployment = Some(value.into_owned());
                }
                "api-version" => read.api_version = Some(value.into_owned()),
                _ => {
                    others.append_pair(&name, &value);
                    any = true;
                }
            }
        }
        read.others = any.then(|| others.finish());
        read
    }
}

fn with_others(mut query: String, others: Option<&str>) -> String {
    if let Some(others) = others {
        query.push('&');
        query.push_str(others);
    }
    query
}

/// `http://` → `ws://`, `https://` → `wss://`.
fn websocket_scheme(url: String) -> String {
    if let Some(rest) = url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        url
    }
}

/// 426 `websocket_not_supported`: the client should use HTTP (Codex falls back by itself).
pub(super) fn not_supported(detail: &str) -> ApiError {
    let mut refusal = crate::proxy::refuse(RefusalCode::WebSocketNotSupported, detail);
    refusal.kind = "invalid_request_error";
    refusal
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: &str, style: ApiStyle) -> Target {
        let aliases = [("fast".to_owned(), "gpt-4o-mini".to_owned())]
            .into_iter()
            .collect();
        Target::new(
            &url::Url::parse(endpoint).expect("url"),
            style,
            None,
            aliases,
        )
    }

    fn mapped(target: &Target, path: &str, query: Option<&str>) -> Result<String, u16> {
        let route = crate::proxy::dialect::route(path, query).expect("route");
        socket_route(target, &route)
            .map(|r| r.url)
            .map_err(|e| e.status.as_u16())
    }

    /// Each style's upstream WebSocket URL, with aliases, the Azure paths and the scheme swap.
    #[test]
    fn upstream_urls_per_style() {
        let v1 = target("https://contoso.openai.azure.com", ApiStyle::OpenAiV1);
        assert_eq!(
            mapped(&v1, "/v1/realtime", Some("model=fast")),
            Ok("wss://contoso.openai.azure.com/openai/v1/realtime?model=gpt-4o-mini".into())
        );
        assert_eq!(
            mapped(&v1, "/openai/v1/responses", None),
            Ok("wss://contoso.openai.azure.com/openai/v1/responses".into())
        );
        assert_eq!(
            mapped(
                &v1,
                "/openai/realtime",
                Some("api-version=2025-04-01-preview&deployment=rt")
            ),
            Ok("wss://contoso.openai.azure.com/openai/v1/realtime?model=rt".into())
        );
        let classic = target("http://127.0.0.1:9", ApiStyle::Deployments);
        assert_eq!(
            mapped(&classic, "/v1/realtime", Some("model=rt&intent=x")),
            Ok(format!(
                "ws://127.0.0.1:9/openai/realtime?api-version={REALTIME_API_VERSION}&deployment=rt&intent=x"
            ))
        );
        assert_eq!(
            mapped(&classic, "/v1/responses", None),
            Ok("ws://127.0.0.1:9/openai/v1/responses".into())
        );
        let project = target(
            "https://r.services.ai.azure.com/api/projects/p",
            ApiStyle::Project,
        );
        assert_eq!(
            mapped(&project, "/v1/responses", None),
            Ok("wss://r.services.ai.azure.com/api/projects/p/openai/v1/responses".into())
        );
    }

    /// Routes and styles without a WebSocket surface are 426; a bad deployment is 400.
    #[test]
    fn refusals() {
        let v1 = target("https://contoso.openai.azure.com", ApiStyle::OpenAiV1);
        assert_eq!(mapped(&v1, "/v1/chat/completions", None), Err(426));
        assert_eq!(mapped(&v1, "/v1/realtime", None), Err(426));
        assert_eq!(mapped(&v1, "/v1/messages", None), Err(426));
        assert_eq!(mapped(&v1, "/v1/realtime", Some("model=..")), Err(400));
        let models = target("https://r.services.ai.azure.com/models", ApiStyle::Models);
        assert_eq!(mapped(&models, "/v1/responses", None), Err(426));
    }

    /// The key subprotocol is read and not selected; the first other one is.
    #[test]
    fn subprotocols() {
        let mut headers = HeaderMap::new();
        headers.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("openai-insecure-api-key.sk-1, realtime, other"),
        );
        let offer = offer(&headers).expect("offer");
        assert_eq!(offer.api_key.as_deref(), Some("sk-1"));
        assert_eq!(offer.protocol, Some(HeaderValue::from_static("realtime")));
        headers.remove(SEC_WEBSOCKET_VERSION);
        assert_eq!(offer_status(&headers), 426);
    }

    fn offer_status(headers: &HeaderMap) -> u16 {
        offer(headers).map_or_else(|e| e.status.as_u16(), |_| 101)
    }
}
