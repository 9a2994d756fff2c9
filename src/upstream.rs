//! Where a request goes: API styles, the inbound-path → upstream-URL mapping, and the
//! one shared outbound HTTP client.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::Uri;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use url::Url;

/// The latest dated GA api-version of the classic `deployments` surface.
pub const DEFAULT_DEPLOYMENTS_API_VERSION: &str = "2024-10-21";
/// The api-version of the Foundry Models inference surface.
pub const DEFAULT_MODELS_API_VERSION: &str = "2024-05-01-preview";

/// The scope of a Foundry project endpoint's tokens (docs/azure-facts.md §7).
pub const PROJECT_SCOPE: &str = "https://ai.azure.com/.default";

/// How inbound `/v1/{rest}` paths map onto the upstream endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiStyle {
    /// `{endpoint}/openai/v1/{rest}`: the v1 surface; `model` names the deployment.
    OpenAiV1,
    /// `{endpoint}/openai/v1/{rest}` where the endpoint is a Foundry project
    /// (`…/api/projects/{name}`): the v1 surface of one project, with its own audience.
    Project,
    /// `{endpoint}/openai/deployments/{model}/{rest}?api-version=V`: the classic surface.
    Deployments,
    /// `{endpoint}/{rest}?api-version=V`, the endpoint ending in `/models`.
    Models,
    /// `{endpoint}/v1/{rest}`: provider-native serverless endpoints.
    Passthrough,
}

impl ApiStyle {
    /// The style's name as written in `FOUNDRY_API`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenAiV1 => "openai-v1",
            Self::Project => "project",
            Self::Deployments => "deployments",
            Self::Models => "models",
            Self::Passthrough => "passthrough",
        }
    }

    /// Guesses the style from the endpoint URL when `FOUNDRY_API` is not set.
    pub fn guess(endpoint: &Url) -> Self {
        let path = endpoint.path().trim_end_matches('/');
        let host = endpoint.host_str().unwrap_or_default().to_ascii_lowercase();
        if project_path(path).is_some() {
            Self::Project
        } else if path.ends_with("/models") {
            Self::Models
        } else if path.ends_with("/openai/v1") || path.ends_with("/openai") {
            Self::OpenAiV1
        } else if host.ends_with(".models.ai.azure.com")
            || host.ends_with(".inference.ai.azure.com")
            || !path.is_empty()
        {
            Self::Passthrough
        } else {
            Self::OpenAiV1
        }
    }

    /// The api-version sent when none is configured.
    pub fn default_api_version(self) -> Option<&'static str> {
        match self {
            Self::Deployments => Some(DEFAULT_DEPLOYMENTS_API_VERSION),
            Self::Models => Some(DEFAULT_MODELS_API_VERSION),
            Self::OpenAiV1 | Self::Project | Self::Passthrough => None,
        }
    }

    /// True for the styles that reach the v1 surface (`…/openai/v1/`), where the body's
    /// `model` names the deployment and no api-version is needed.
    pub fn is_v1(self) -> bool {
        matches!(self, Self::OpenAiV1 | Self::Project)
    }

    /// The token scope the style needs when `FOUNDRY_SCOPE` is not set: project endpoints
    /// refuse the Cognitive Services audience (docs/azure-facts.md §7).
    pub fn default_scope(self, cloud_scope: &'static str) -> &'static str {
        match self {
            Self::Project => PROJECT_SCOPE,
            _ => cloud_scope,
        }
    }
}

/// The project part of an endpoint path: `/api/projects/{name}`, optionally followed by
/// `/openai` or `/openai/v1` (the surface itself), on any host. Returns the project's name.
pub fn project_path(path: &str) -> Option<&str> {
    let rest = path.trim_end_matches('/').strip_prefix("/api/projects/")?;
    let (name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = !name.is_empty() && matches!(tail, "" | "openai" | "openai/v1");
    valid.then_some(name)
}

impl fmt::Display for ApiStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown `FOUNDRY_API` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown API style")]
pub struct UnknownApiStyle;

impl FromStr for ApiStyle {
    type Err = UnknownApiStyle;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "openai-v1" | "v1" => Ok(Self::OpenAiV1),
            "project" => Ok(Self::Project),
            "deployments" => Ok(Self::Deployments),
            "models" => Ok(Self::Models),
            "passthrough" => Ok(Self::Passthrough),
            _ => Err(UnknownApiStyle),
        }
    }
}

/// Deployment names Azure allows: letters, digits, `-`, `_`, `.`; at most 64 characters. A
/// leading dot is refused too: no real name has one, and `.`, `..` or `...` as a URL segment
/// is one that servers and gateways may normalise away.
pub fn is_valid_deployment_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Why a request cannot be routed upstream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The path contains `..`, encoded slashes or other characters that could escape the route.
    #[error("the path '{0}' is not allowed")]
    BadPath(String),
    /// The `deployments` style needs `model` and the body has none.
    #[error("the request has no 'model'")]
    MissingModel,
    /// `model` is not a possible deployment name.
    #[error("'{0}' is not a valid deployment name")]
    BadModel(String),
}

/// How the caller addressed the API: which inbound dialect, and what it named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    /// The operation path after the surface's prefix, e.g. `chat/completions`.
    pub rest: &'a str,
    /// The caller's query string, if any.
    pub query: Option<&'a str>,
    /// The deployment named in the path (`…/deployments/{deployment}/…`), if any.
    pub deployment: Option<&'a str>,
    /// Which dialect the path was written in.
    pub dialect: Dialect,
}

/// The inbound dialects: what OpenAI clients send, and what Azure OpenAI clients send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `/v1/{rest}` (OpenAI clients) or `/openai/v1/{rest}` (the v1 surface's Azure path): the
    /// deployment is the body's `model`, and any `api-version` is the caller's own choice.
    V1,
    /// `/openai/deployments/{deployment}/{rest}?api-version=V` or `/openai/{rest}?api-version=V`
    /// (`AzureOpenAI` clients): the query's api-version is for the classic surface.
    Classic,
    /// `/v1/messages`, `/v1/messages/count_tokens` (Anthropic SDKs with
    /// `ANTHROPIC_BASE_URL`) or `/anthropic/v1/{rest}` (a Foundry base URL): Claude's Messages
    /// API, sent to `{resource}/anthropic/v1/{rest}` whatever the API style, with no api-version.
    Anthropic,
}

impl<'a> Route<'a> {
    /// `/v1/{rest}?{query}`: the OpenAI dialect.
    pub fn v1(rest: &'a str, query: Option<&'a str>) -> Self {
        Self {
            rest,
            query,
            deployment: None,
            dialect: Dialect::V1,
        }
    }

    /// `{rest}?{query}` of Claude's Messages API: the Anthropic dialect.
    pub fn anthropic(rest: &'a str, query: Option<&'a str>) -> Self {
        Self {
            rest,
            query,
            deployment: None,
            dialect: Dialect::Anthropic,
        }
    }

    /// The `api-version` the caller's query names, if any.
    pub fn api_version(&self) -> Option<&'a str> {
        self.query?.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            key.eq_ignore_ascii_case("api-version").then_some(value)
        })
    }
}

/// Operations Azure serves under `/openai/deployments/{deployment}/`; every other path
/// goes to `/openai/{rest}` in the `deployments` style.
const DEPLOYMENT_OPERATIONS: &[&str] = &[
    "chat/completions",
    "completions",
    "embeddings",
    "audio/transcriptions",
    "audio/translations",
    "audio/speech",
    "images/generations",
    "images/edits",
    "images/variations",
    "extensions/chat/completions",
];

/// The upstream endpoint with its style, ready to map inbound paths. Built once at start.
#[derive(Debug, Clone)]
pub struct Target {
    style: ApiStyle,
    /// Endpoint with no trailing slash, e.g. `https://contoso.openai.azure.com`.
    base: String,
    /// `api-version=V` query pair, prebuilt.
    version_pair: Option<String>,
    /// Friendly names → deployment names.
    aliases: std::collections::BTreeMap<String, String>,
    /// `base` split once, so each request's URI is assembled without parsing it again:
    /// scheme and authority (shared, not copied) and the path prefix (`base`'s path part).
    origin: Option<Origin>,
    /// Where Claude's Messages API is: the resource's `services.ai.azure.com` host, or
    /// `FOUNDRY_ANTHROPIC_ENDPOINT`; no trailing slash.
    anthropic_base: String,
    /// `anthropic_base` split once, like `origin`.
    anthropic_origin: Option<Origin>,
}

/// A base URL's scheme and authority, and where its path starts.
type Origin = (http::uri::Scheme, http::uri::Authority, usize);

/// Splits a base URL into its [`Origin`].
fn origin(base: &str) -> Option<Origin> {
    base.parse::<Uri>().ok().and_then(|uri| {
        let parts = uri.into_parts();
        let authority = parts.authority?;
        let scheme = parts.scheme?;
        // The path prefix starts right after `scheme://authority`.
        let prefix_at = scheme.as_str().len() + "://".len() + authority.as_str().len();
        Some((scheme, authority, prefix_at))
    })
}

/// The resource that serves Claude for an endpoint: its scheme and host (and port), with an
/// Azure OpenAI or Cognitive Services host name (`NAME.openai.azure.com`,
/// `NAME.cognitiveservices.azure.com`) replaced by the same resource's Foundry name,
/// `NAME.services.ai.azure.com` (docs/azure-facts.md §7, one resource, several host names).
/// Other hosts, loopback ones included, stay as they are; the endpoint's path is dropped.
pub fn anthropic_resource(endpoint: &Url) -> String {
    let host = endpoint.host_str().unwrap_or_default();
    let lower = host.to_ascii_lowercase();
    let mapped = [".openai.azure.com", ".cognitiveservices.azure.com"]
        .iter()
        .find_map(|suffix| lower.strip_suffix(suffix))
        .filter(|name| !name.is_empty() && !name.contains('.'))
        .map(|name| format!("{name}.services.ai.azure.com"));
    let mut base = format!(
        "{}://{}",
        endpoint.scheme(),
        mapped.as_deref().unwrap_or(host)
    );
    if let Some(port) = endpoint.port() {
        base.push_str(&format!(":{port}"));
    }
    base
}

impl Target {
    /// The target a configuration names: its endpoint, API style, api-version and aliases.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self::new(
            &config.endpoint,
            config.api,
            config.api_version.as_deref(),
            config.models.clone(),
        )
        .with_anthropic_endpoint(config.anthropic_endpoint.as_ref())
    }

    /// Builds the target from the configured endpoint, style and version override.
    pub fn new(
        endpoint: &Url,
        style: ApiStyle,
        api_version: Option<&str>,
        aliases: std::collections::BTreeMap<String, String>,
    ) -> Self {
        let mut base = endpoint.as_str().trim_end_matches('/').to_owned();
        // An endpoint given as ".../openai/v1" or ".../openai" names the surface itself.
        if style.is_v1() {
            for suffix in ["/openai/v1", "/openai"] {
                if let Some(stripped) = base.strip_suffix(suffix) {
                    base = stripped.to_owned();
                    break;
                }
            }
        }
        let version = api_version.or(style.default_api_version());
        let anthropic_base = anthropic_resource(endpoint);
        Self {
            style,
            origin: origin(&base),
            base,
            version_pair: version.map(|v| format!("api-version={v}")),
            aliases,
            anthropic_origin: origin(&anthropic_base),
            anthropic_base,
        }
    }

    /// Sends Claude's Messages API to `endpoint` (`FOUNDRY_ANTHROPIC_ENDPOINT`) instead of the
    /// resource derived from the main endpoint. An endpoint ending in `/anthropic` or
    /// `/anthropic/v1` names the surface itself.
    pub fn with_anthropic_endpoint(mut self, endpoint: Option<&Url>) -> Self {
        if let Some(endpoint) = endpoint {
            let mut base = endpoint.as_str().trim_end_matches('/');
            for suffix in ["/anthropic/v1", "/anthropic"] {
                if let Some(stripped) = base.strip_suffix(suffix) {
                    base = stripped;
                    break;
                }
            }
            self.anthropic_base = base.to_owned();
            self.anthropic_origin = origin(base);
        }
        self
    }

    /// Where Claude's Messages API is sent: `{anthropic_base}/anthropic/v1/…`.
    pub fn anthropic_base(&self) -> &str {
        &self.anthropic_base
    }

    /// [`Target::url`] as an `http::Uri`, for the forwarding path: only the path and query
    /// are new bytes; scheme and authority are shared with every other request.
    pub fn uri(&self, route: &Route<'_>, model: Option<&str>) -> Result<Uri, RouteError> {
        let url = self.route_url(route, model)?;
        let bad_path = || RouteError::BadPath(route.rest.to_owned());
        let origin = if route.dialect == Dialect::Anthropic {
            &self.anthropic_origin
        } else {
            &self.origin
        };
        let Some((scheme, authority, prefix_at)) = origin else {
            return url.parse().map_err(|_| bad_path());
        };
        let mut path_and_query = bytes::Bytes::from(url);
        let path_and_query = path_and_query.split_off(*prefix_at);
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme.clone());
        parts.authority = Some(authority.clone());
        parts.path_and_query = Some(
            http::uri::PathAndQuery::from_maybe_shared(path_and_query).map_err(|_| bad_path())?,
        );
        Uri::from_parts(parts).map_err(|_| bad_path())
    }

    /// The API style in use.
    pub fn style(&self) -> ApiStyle {
        self.style
    }

    /// The endpoint, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The deployment a friendly model name stands for (`[models]` table).
    pub fn alias(&self, model: &str) -> Option<&str> {
        self.aliases.get(model).map(String::as_str)
    }

    /// The friendly names of the `[models]` table, with their deployments.
    pub fn aliases(&self) -> &std::collections::BTreeMap<String, String> {
        &self.aliases
    }

    /// The api-version sent upstream, if any.
    pub fn api_version(&self) -> Option<&str> {
        self.version_pair
            .as_deref()
            .and_then(|p| p.strip_prefix("api-version="))
    }

    /// True when routing `route` needs the deployment from the request body: the
    /// `deployments` style, for an operation served under a deployment, when the path names
    /// none.
    pub fn needs_model(&self, route: &Route<'_>) -> bool {
        self.style == ApiStyle::Deployments
            && route.dialect != Dialect::Anthropic
            && route.deployment.is_none()
            && DEPLOYMENT_OPERATIONS.contains(&route.rest.trim_end_matches('/'))
    }

    /// The upstream URL for inbound `/v1/{rest}?{query}`; `model` is the body's model
    /// (used only by the `deployments` style).
    pub fn url(
        &self,
        rest: &str,
        query: Option<&str>,
        model: Option<&str>,
    ) -> Result<String, RouteError> {
        self.route_url(&Route::v1(rest, query), model)
    }

    /// The upstream URL for a request in any inbound dialect; `model` is the body's model
    /// (used only by the `deployments` style, when the path names no deployment).
    ///
    /// A deployment named in the path picks the deployment URL in the `deployments` style;
    /// the other styles carry it in the body's `model` (the caller rewrites the body). A
    /// classic-dialect api-version is kept for the `deployments` style, replaced by the
    /// configured one for `models`, and dropped for the v1 surface and passthrough, which take
    /// none.
    pub fn route_url(&self, route: &Route<'_>, model: Option<&str>) -> Result<String, RouteError> {
        let rest = route.rest;
        check_rest(rest)?;
        if route.dialect == Dialect::Anthropic {
            return Ok(self.anthropic_url(route));
        }
        let mut url = String::with_capacity(self.base.len() + rest.len() + 64);
        url.push_str(&self.base);
        match self.style {
            ApiStyle::OpenAiV1 | ApiStyle::Project => url.push_str("/openai/v1/"),
            ApiStyle::Passthrough => url.push_str("/v1/"),
            ApiStyle::Models => url.push('/'),
            ApiStyle::Deployments => {
                let named = match route.deployment {
                    Some(deployment) => Some(deployment),
                    None if self.needs_model(route) => Some(model.ok_or(RouteError::MissingModel)?),
                    None => None,
                };
                if let Some(name) = named {
                    let deployment = self.aliases.get(name).map_or(name, String::as_str);
                    if !is_valid_deployment_name(deployment) {
                        return Err(RouteError::BadModel(deployment.to_owned()));
                    }
                    url.push_str("/openai/deployments/");
                    url.push_str(deployment);
                    url.push('/');
                } else {
                    url.push_str("/openai/");
                }
            }
        }
        url.push_str(rest);
        let client_query = route.query.filter(|q| !q.is_empty());
        let drops_classic_version =
            route.dialect == Dialect::Classic && self.style != ApiStyle::Deployments;
        let kept_query;
        let client_query = if drops_classic_version {
            kept_query = without_api_version(client_query.unwrap_or_default());
            Some(kept_query.as_str()).filter(|q| !q.is_empty())
        } else {
            client_query
        };
        // The client's own api-version replaces the proxy's, whatever its case: a server that
        // reads query names case-insensitively would otherwise see two.
        let client_sets_version = client_query.is_some_and(|q| {
            q.split('&').any(|pair| {
                pair.as_bytes()
                    .get(..VERSION_KEY.len())
                    .is_some_and(|key| key.eq_ignore_ascii_case(VERSION_KEY))
            })
        });
        let version = self
            .version_pair
            .as_deref()
            .filter(|_| !client_sets_version);
        match (client_query, version) {
            (Some(q), Some(v)) => {
                url.push('?');
                url.push_str(q);
                url.push('&');
                url.push_str(v);
            }
            (Some(single), None) | (None, Some(single)) => {
                url.push('?');
                url.push_str(single);
            }
            (None, None) => {}
        }
        Ok(url)
    }
}

impl Target {
    /// `{anthropic_base}/anthropic/v1/{rest}?{query}`: the caller's query as it is, no
    /// api-version (the Messages API takes none), whatever the style.
    fn anthropic_url(&self, route: &Route<'_>) -> String {
        let query = route.query.filter(|q| !q.is_empty());
        let mut url = String::with_capacity(
            self.anthropic_base.len() + route.rest.len() + query.map_or(0, str::len) + 16,
        );
        url.push_str(&self.anthropic_base);
        url.push_str("/anthropic/v1/");
        url.push_str(route.rest);
        if let Some(query) = query {
            url.push('?');
            url.push_str(query);
        }
        url
    }
}

/// `api-version=`, the query pair that selects the API version.
const VERSION_KEY: &[u8] = b"api-version=";

/// `query` without its `api-version` pairs (any case).
fn without_api_version(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            !pair.is_empty()
                && !pair
                    .as_bytes()
                    .get(..VERSION_KEY.len())
                    .is_some_and(|key| key.eq_ignore_ascii_case(VERSION_KEY))
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Refuses paths that could escape the intended upstream route, or that a server or gateway
/// on the way could read differently from the proxy:
/// - empty segments (`//`, a leading or trailing `/`) and segments starting with `.` (`.`,
///   `..`, `...`, `..;`, `..%20`: dot segments, or names some servers normalise into them);
/// - `\`, `@`, `;` (path parameters), `?`, `#`, control characters and any non-ASCII byte
///   (raw Unicode, look-alikes and bidi controls, must be percent-encoded);
/// - percent escapes that are malformed (`%`, `%zz`, IIS-style `%u002e`) or that encode `/`,
///   `\`, `.`, `%` (double encoding) or a control character.
fn check_rest(rest: &str) -> Result<(), RouteError> {
    let escapes = rest.is_empty()
        || rest
            .split('/')
            .any(|segment| segment.is_empty() || segment.starts_with('.'))
        || rest.bytes().any(|b| {
            !b.is_ascii() || b.is_ascii_control() || matches!(b, b'\\' | b'#' | b'?' | b'@' | b';')
        })
        || !escapes_are_plain(rest.as_bytes());
    if escapes {
        Err(RouteError::BadPath(rest.to_owned()))
    } else {
        Ok(())
    }
}

/// True when every `%` starts a two-hex-digit escape of a byte that is not a separator, a dot,
/// a `%` or a control character.
fn escapes_are_plain(path: &[u8]) -> bool {
    let hex = |b: Option<&u8>| b.and_then(|b| char::from(*b).to_digit(16));
    let mut from = 0;
    while let Some(found) = memchr::memchr(b'%', &path[from..]) {
        let at = from + found;
        let Some((high, low)) = hex(path.get(at + 1)).zip(hex(path.get(at + 2))) else {
            return false;
        };
        let decoded = ((high << 4) | low) as u8;
        if matches!(decoded, b'/' | b'\\' | b'.' | b'%') || decoded.is_ascii_control() {
            return false;
        }
        from = at + 3;
    }
    true
}

/// The shared outbound client: pooled keep-alive, HTTP/2 where the upstream offers it.
pub type UpstreamClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>;

/// Builds the shared outbound client with the given TLS configuration.
pub fn build_client(tls: Arc<rustls::ClientConfig>) -> UpstreamClient {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls).clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(endpoint: &str, style: ApiStyle, version: Option<&str>) -> Target {
        let url = Url::parse(endpoint).expect("url");
        let aliases = [("fast".to_owned(), "gpt-4o-mini".to_owned())]
            .into_iter()
            .collect();
        Target::new(&url, style, version, aliases)
    }

    /// The forwarding path's `Uri` is the URL, parsed: for every style, with a path in the
    /// endpoint, a port, a query and an api-version.
    #[test]
    fn uri_matches_url() {
        for (endpoint, style) in [
            ("https://contoso.openai.azure.com", ApiStyle::Deployments),
            (
                "https://contoso.openai.azure.com/openai/v1",
                ApiStyle::OpenAiV1,
            ),
            ("http://127.0.0.1:8081", ApiStyle::OpenAiV1),
            (
                "https://contoso.services.ai.azure.com/models",
                ApiStyle::Models,
            ),
            (
                "https://gw.example.com/api/projects/p1/",
                ApiStyle::Passthrough,
            ),
        ] {
            let target = target(endpoint, style, None);
            for (rest, query) in [
                ("chat/completions", None),
                ("embeddings", Some("a=1&api-version=2024-10-21")),
                ("responses/resp_1", Some("")),
            ] {
                let url = target.url(rest, query, Some("fast")).expect("url");
                let uri = target
                    .uri(&Route::v1(rest, query), Some("fast"))
                    .expect("uri");
                assert_eq!(
                    uri,
                    url.parse::<Uri>().expect("parses"),
                    "{endpoint} {rest}"
                );
                assert_eq!(uri.to_string(), url);
            }
        }
    }

    /// Each style maps chat completions as ARCHITECTURE.md "API styles" says.
    #[test]
    fn styles_map_paths() {
        let v1 = target("https://r.openai.azure.com/", ApiStyle::OpenAiV1, None);
        assert_eq!(
            v1.url("chat/completions", None, None).as_deref(),
            Ok("https://r.openai.azure.com/openai/v1/chat/completions")
        );
        let dep = target("https://r.openai.azure.com", ApiStyle::Deployments, None);
        assert_eq!(
            dep.url("chat/completions", None, Some("gpt-4o")).as_deref(),
            Ok(
                "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
            )
        );
        assert_eq!(
            dep.url("responses", None, None).as_deref(),
            Ok("https://r.openai.azure.com/openai/responses?api-version=2024-10-21")
        );
        let models = target(
            "https://r.services.ai.azure.com/models",
            ApiStyle::Models,
            None,
        );
        assert_eq!(
            models.url("chat/completions", None, None).as_deref(),
            Ok(
                "https://r.services.ai.azure.com/models/chat/completions?api-version=2024-05-01-preview"
            )
        );
        let pass = target(
            "https://m.eastus.models.ai.azure.com/inference",
            ApiStyle::Passthrough,
            None,
        );
        assert_eq!(
            pass.url("chat/completions", None, None).as_deref(),
            Ok("https://m.eastus.models.ai.azure.com/inference/v1/chat/completions")
        );
    }

    /// Aliases, query strings and version overrides combine correctly.
    #[test]
    fn aliases_queries_versions() {
        let dep = target(
            "https://r.openai.azure.com",
            ApiStyle::Deployments,
            Some("2025-04-01-preview"),
        );
        assert_eq!(
            dep.url("embeddings", Some("a=1"), Some("fast")).as_deref(),
            Ok(
                "https://r.openai.azure.com/openai/deployments/gpt-4o-mini/embeddings?a=1&api-version=2025-04-01-preview"
            )
        );
        assert_eq!(
            dep.url("embeddings", Some("api-version=x"), Some("m"))
                .as_deref(),
            Ok("https://r.openai.azure.com/openai/deployments/m/embeddings?api-version=x")
        );
        assert_eq!(
            dep.url("embeddings", Some("API-Version=x"), Some("m"))
                .as_deref(),
            Ok("https://r.openai.azure.com/openai/deployments/m/embeddings?API-Version=x"),
            "the client's api-version, in any case, replaces the proxy's"
        );
        assert_eq!(
            dep.url("embeddings", Some("x=api-version=y"), Some("m"))
                .as_deref(),
            Ok(
                "https://r.openai.azure.com/openai/deployments/m/embeddings?x=api-version=y&api-version=2025-04-01-preview"
            )
        );
        assert_eq!(
            dep.url("chat/completions", None, None),
            Err(RouteError::MissingModel)
        );
        assert_eq!(
            dep.url("chat/completions", None, Some("../x")),
            Err(RouteError::BadModel("../x".into()))
        );
    }

    /// Traversal and smuggling attempts are refused.
    #[test]
    fn hostile_paths_refused() {
        let v1 = target("https://r.openai.azure.com", ApiStyle::OpenAiV1, None);
        for rest in [
            "../admin",
            "a/../b",
            "a%2f..",
            "a%2F",
            "x%2e%2e/y",
            "a//b",
            "a\r\nb",
            "",
            "/x",
            "a@b",
            "a\\b",
            "a/",
            "...",
            "../",
            "a/..;/b",
            "a;x=1/b",
            "a/..%20/b",
            "%252e%252e/x",
            "a%252fb",
            "%u002e%u002e/x",
            "a%",
            "a%2",
            "a%zz",
            "a%00",
            "a%0d%0ab",
            "a%1B",
            "a%7f",
            "c\u{f6}mpletions",
            "\u{202e}x",
            "\u{9b}31m",
        ] {
            assert!(
                matches!(v1.url(rest, None, None), Err(RouteError::BadPath(_))),
                "{rest:?}"
            );
        }
    }

    /// Escapes of ordinary characters, and ids with dots, dashes and colons, pass.
    #[test]
    fn plain_paths_pass() {
        let v1 = target("https://r.openai.azure.com", ApiStyle::OpenAiV1, None);
        for rest in [
            "chat/completions",
            "files/file-abc.jsonl/content",
            "models/ft:gpt-4o-mini:org::abc",
            "models/gpt%2D4o",
            "vector_stores/vs_1/files/caf%C3%A9",
        ] {
            assert!(v1.url(rest, None, None).is_ok(), "{rest:?}");
        }
    }

    /// The style is guessed from the endpoint's host and path.
    #[test]
    fn style_guessing() {
        let guess = |u: &str| ApiStyle::guess(&Url::parse(u).expect("url"));
        assert_eq!(guess("https://r.openai.azure.com"), ApiStyle::OpenAiV1);
        assert_eq!(
            guess("https://r.services.ai.azure.com/"),
            ApiStyle::OpenAiV1
        );
        assert_eq!(
            guess("https://r.openai.azure.com/openai/v1/"),
            ApiStyle::OpenAiV1
        );
        assert_eq!(
            guess("https://r.services.ai.azure.com/models"),
            ApiStyle::Models
        );
        assert_eq!(
            guess("https://m.eastus.models.ai.azure.com"),
            ApiStyle::Passthrough
        );
        assert_eq!(
            guess("https://m.eastus.models.ai.azure.com/inference"),
            ApiStyle::Passthrough
        );
        // Foundry projects, on any host (the emulator's loopback too), with or without the
        // surface's own suffix; and their scope.
        for endpoint in [
            "https://r.services.ai.azure.com/api/projects/team-a",
            "https://r.services.ai.azure.com/api/projects/team-a/",
            "https://r.services.ai.azure.com/api/projects/team-a/openai/v1",
            "http://127.0.0.1:8081/api/projects/demo-project",
        ] {
            assert_eq!(guess(endpoint), ApiStyle::Project, "{endpoint}");
        }
        assert_eq!(
            guess("https://r.services.ai.azure.com/api/projects/"),
            ApiStyle::Passthrough
        );
        assert_eq!(
            ApiStyle::Project.default_scope("https://cognitiveservices.azure.com/.default"),
            PROJECT_SCOPE
        );
        let project =
            Url::parse("https://r.services.ai.azure.com/api/projects/p/openai/v1").expect("url");
        let target = Target::new(&project, ApiStyle::Project, None, Default::default());
        assert_eq!(
            target.url("responses", None, None).expect("url"),
            "https://r.services.ai.azure.com/api/projects/p/openai/v1/responses"
        );
    }

    /// Claude's resource: an Azure OpenAI or Cognitive Services host becomes the same
    /// resource's `services.ai.azure.com` name; other hosts (loopback too) stay; paths go.
    #[test]
    fn anthropic_resource_hosts() {
        for (endpoint, resource) in [
            (
                "https://contoso.openai.azure.com",
                "https://contoso.services.ai.azure.com",
            ),
            (
                "https://Contoso.OpenAI.Azure.com/openai/v1/",
                "https://contoso.services.ai.azure.com",
            ),
            (
                "https://contoso.cognitiveservices.azure.com/",
                "https://contoso.services.ai.azure.com",
            ),
            (
                "https://contoso.services.ai.azure.com/api/projects/p",
                "https://contoso.services.ai.azure.com",
            ),
            (
                "https://contoso.services.ai.azure.com/models",
                "https://contoso.services.ai.azure.com",
            ),
            ("http://127.0.0.1:8081", "http://127.0.0.1:8081"),
            ("http://localhost:9000/openai/v1", "http://localhost:9000"),
            (
                "https://gw.example.com:8443/foundry",
                "https://gw.example.com:8443",
            ),
            (
                "https://a.b.openai.azure.com",
                "https://a.b.openai.azure.com",
            ),
        ] {
            let url = Url::parse(endpoint).expect("url");
            assert_eq!(anthropic_resource(&url), resource, "{endpoint}");
        }
    }

    /// Anthropic routes go to `{resource}/anthropic/v1/{rest}` in every style, without an
    /// api-version; `FOUNDRY_ANTHROPIC_ENDPOINT` replaces the resource.
    #[test]
    fn anthropic_routes() {
        let route = Route {
            rest: "messages/count_tokens",
            query: Some("beta=true"),
            deployment: None,
            dialect: Dialect::Anthropic,
        };
        for style in [ApiStyle::Deployments, ApiStyle::OpenAiV1, ApiStyle::Models] {
            let target = target("https://r.openai.azure.com", style, Some("2024-10-21"));
            assert_eq!(
                target.route_url(&route, None).as_deref(),
                Ok("https://r.services.ai.azure.com/anthropic/v1/messages/count_tokens?beta=true")
            );
            assert_eq!(
                target.uri(&route, None).expect("uri").to_string(),
                "https://r.services.ai.azure.com/anthropic/v1/messages/count_tokens?beta=true"
            );
        }
        let own = Url::parse("https://claude.example.com:8443/anthropic/").expect("url");
        let target = target("http://127.0.0.1:8081", ApiStyle::OpenAiV1, None)
            .with_anthropic_endpoint(Some(&own));
        let plain = Route {
            query: None,
            rest: "messages",
            ..route
        };
        assert_eq!(
            target.uri(&plain, None).expect("uri").to_string(),
            "https://claude.example.com:8443/anthropic/v1/messages"
        );
        let hostile = Route {
            rest: "../x",
            ..plain
        };
        assert!(matches!(
            target.route_url(&hostile, None),
            Err(RouteError::BadPath(_))
        ));
    }

    /// Deployment names follow Azure's rules.
    #[test]
    fn deployment_names() {
        assert!(is_valid_deployment_name("gpt-4o_mini.2"));
        assert!(is_valid_deployment_name(&"x".repeat(64)));
        for bad in [
            "",
            ".",
            "..",
            "...",
            ".hidden",
            "a/b",
            "a%2fb",
            "a b",
            "a\nb",
            "gpt-4\u{f6}",
            &"x".repeat(65),
        ] {
            assert!(!is_valid_deployment_name(bad), "{bad:?}");
        }
    }
}
