//! The proxy's configuration: defaults < TOML file < environment < command-line flags.
//!
//! Every layer is read into a [`Settings`] of optional values; the layers are merged and
//! then [`Settings::validate`] turns them into a [`Config`] or one [`ConfigError`] that names
//! the setting (by its environment variable, the name users know) and the fix.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::secret::Secret;
use crate::server::browser_guard::HostRule;
use crate::upstream::ApiStyle;

pub mod credential;
pub mod prices;
pub mod redis;
pub mod upstreams;
mod validate;

pub use credential::{CredentialConfig, CredentialSettings};
pub use prices::{Price, Prices};
pub use upstreams::{ModelSetting, ModelTarget, UpstreamConfig, UpstreamSettings, Upstreams};

/// Default listen address: loopback only, so nothing is exposed by accident.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default Entra ID authority (public cloud).
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// Default token scope for Azure OpenAI and Foundry.
pub const DEFAULT_SCOPE: &str = "https://cognitiveservices.azure.com/.default";
/// Default largest request body accepted from clients.
pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;
/// Default time allowed for the upstream to send response headers. Non-streaming completions
/// of long answers can take minutes before the first byte.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(600);
/// Default time in-flight requests get to finish after SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default largest WebSocket message, either way: a realtime `input_audio_buffer.append` of a
/// few seconds of base64 audio fits many times over.
pub const DEFAULT_WS_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Default time a WebSocket may pass with no message either way (and a message may take to
/// reach a client that stopped reading) before the proxy closes it.
pub const DEFAULT_WS_IDLE_TIMEOUT: Duration = Duration::from_secs(900);

/// The validated configuration the proxy runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the proxy listens on.
    pub listen: SocketAddr,
    /// Entra tenant (GUID or domain) of the App Registration; `None` for managed identity
    /// and the Azure CLI, whose tenant shows in the token.
    pub tenant_id: Option<String>,
    /// The App Registration's application (client) id, or a user-assigned managed
    /// identity's client id.
    pub client_id: Option<String>,
    /// Where tokens come from.
    pub credential: CredentialConfig,
    /// Why this credential was chosen, for the start-up log.
    pub credential_reason: String,
    /// Entra authority, without a trailing slash.
    pub authority_host: Url,
    /// The OAuth2 scope, `{resource}/.default`.
    pub scope: String,
    /// The Foundry / Azure OpenAI endpoint, without a trailing slash.
    pub endpoint: Url,
    /// Where Claude's Messages API is (`FOUNDRY_ANTHROPIC_ENDPOINT`); `None` derives it from
    /// `endpoint` ([`crate::upstream::anthropic_resource`]).
    pub anthropic_endpoint: Option<Url>,
    /// How inbound `/v1/...` paths map to the endpoint.
    pub api: ApiStyle,
    /// api-version sent upstream; `None` means the style's default.
    pub api_version: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body: usize,
    /// Friendly model names mapped to deployment names.
    pub models: BTreeMap<String, String>,
    /// What models' tokens cost (`[prices."MODEL"]`), for dollar budgets and the ledger.
    pub prices: Prices,
    /// The usage ledger (SQLite); `None` keeps usage in memory only.
    pub usage_db: Option<PathBuf>,
    /// Shared state for replicas (`FOUNDRY_PROXY_REDIS_URL`); `None` keeps limits and usage
    /// in this process.
    pub redis: Option<self::redis::RedisConfig>,
    /// Time allowed for the upstream to send response headers.
    pub upstream_timeout: Duration,
    /// Time in-flight requests get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Largest WebSocket message relayed, either way, in bytes.
    pub ws_max_message: usize,
    /// Time a WebSocket may pass without a message either way before it is closed.
    pub ws_idle_timeout: Duration,
    /// The access keys file; `None` means callers are not authenticated.
    pub keys_file: Option<PathBuf>,
    /// Serve without access keys on a non-loopback address (explicit opt-in).
    pub allow_anonymous: bool,
    /// A separate address for `/metrics`; `None` serves it on the main listener.
    pub metrics_listen: Option<SocketAddr>,
    /// Browser origins allowed to call the proxy (CORS); empty means CORS is off, and any
    /// request from a web page is refused.
    pub cors_origins: Vec<String>,
    /// Host names, besides the loopback names and IP literals, that requests may name.
    pub allowed_hosts: Vec<HostRule>,
    /// Extra CA certificates (PEM) trusted for the endpoint and the authority.
    pub extra_ca_file: Option<PathBuf>,
    /// Several upstreams (`[[upstream]]`, `[models."NAME"] targets`, `max_wait`); empty in
    /// the environment-only setup, which has the one `endpoint`.
    pub upstreams: Upstreams,
}

/// A configuration problem: which setting, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem} — {fix}")]
pub struct ConfigError {
    /// The setting, named as its environment variable (or the file key for file-only settings).
    pub setting: String,
    /// What is wrong with it.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl ConfigError {
    pub(crate) fn new(setting: &str, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            setting: setting.to_owned(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// Where environment variables come from: the process, or a map in tests.
pub trait Environment {
    /// The variable's value, if set and non-empty.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Environment for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.trim().is_empty())
    }
}

/// One layer of settings, every value optional. The TOML file deserializes into this.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `FOUNDRY_PROXY_LISTEN`
    pub listen: Option<String>,
    /// `AZURE_TENANT_ID`
    pub tenant_id: Option<String>,
    /// `AZURE_CLIENT_ID`
    pub client_id: Option<String>,
    /// `AZURE_CLIENT_SECRET`
    pub client_secret: Option<Secret>,
    /// `AZURE_AUTHORITY_HOST`
    pub authority_host: Option<String>,
    /// `FOUNDRY_SCOPE`
    pub scope: Option<String>,
    /// `FOUNDRY_ENDPOINT`
    pub endpoint: Option<String>,
    /// `FOUNDRY_ANTHROPIC_ENDPOINT`
    pub anthropic_endpoint: Option<String>,
    /// `FOUNDRY_API`
    pub api: Option<String>,
    /// `FOUNDRY_API_VERSION`
    pub api_version: Option<String>,
    /// `FOUNDRY_PROXY_MAX_BODY`: bytes, or a size such as `32MiB`.
    pub max_body: Option<SizeSetting>,
    /// `FOUNDRY_PROXY_UPSTREAM_TIMEOUT`: seconds.
    pub upstream_timeout_secs: Option<u64>,
    /// `FOUNDRY_PROXY_SHUTDOWN_GRACE`: seconds.
    pub shutdown_grace_secs: Option<u64>,
    /// `FOUNDRY_PROXY_WS_MAX_MESSAGE`: bytes, or a size such as `16MiB`.
    pub ws_max_message: Option<SizeSetting>,
    /// `FOUNDRY_PROXY_WS_IDLE_TIMEOUT`: seconds.
    pub ws_idle_timeout_secs: Option<u64>,
    /// `FOUNDRY_PROXY_KEYS_FILE`
    pub keys_file: Option<PathBuf>,
    /// `FOUNDRY_PROXY_ALLOW_ANONYMOUS`
    pub allow_anonymous: Option<bool>,
    /// `FOUNDRY_PROXY_METRICS_LISTEN`
    pub metrics_listen: Option<String>,
    /// `FOUNDRY_PROXY_CORS_ORIGINS` (comma-separated in the environment)
    pub cors_origins: Option<Vec<String>>,
    /// `FOUNDRY_PROXY_ALLOWED_HOSTS` (comma-separated in the environment)
    pub allowed_hosts: Option<Vec<String>>,
    /// `[models]` table: alias = "deployment", or `[models."NAME"] targets = [...]`.
    pub models: Option<BTreeMap<String, ModelSetting>>,
    /// `[prices."MODEL"]` tables: US dollars per million tokens.
    pub prices: Option<BTreeMap<String, Price>>,
    /// `FOUNDRY_PROXY_USAGE_DB`
    pub usage_db: Option<PathBuf>,
    /// `FOUNDRY_PROXY_REDIS_URL` (may hold a password)
    pub redis_url: Option<Secret>,
    /// `FOUNDRY_PROXY_REDIS_FAILURE`: `open` or `closed`.
    pub redis_failure: Option<String>,
    /// `[credential]` table: which credential and its settings.
    pub credential: Option<CredentialSettings>,
    /// `[[upstream]]` tables (file only).
    pub upstream: Option<Vec<toml::Spanned<UpstreamSettings>>>,
    /// `max_wait`: seconds the proxy may wait for a resting target (file only).
    pub max_wait: Option<f64>,
    /// The config file's text, to name the line of a value in errors.
    #[serde(skip)]
    pub source: Option<std::sync::Arc<str>>,
}

/// A size in a config file: a number of bytes or a string like `32MiB`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeSetting {
    /// Plain bytes.
    Bytes(u64),
    /// A string with an optional unit suffix.
    Text(String),
}

/// The environment variables read, in [`Settings`] field order.
pub const ENV_LISTEN: &str = "FOUNDRY_PROXY_LISTEN";
/// Tenant id variable.
pub const ENV_TENANT_ID: &str = "AZURE_TENANT_ID";
/// Client id variable.
pub const ENV_CLIENT_ID: &str = "AZURE_CLIENT_ID";
/// Client secret variable.
pub const ENV_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
/// Authority host variable.
pub const ENV_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
/// Scope variable.
pub const ENV_SCOPE: &str = "FOUNDRY_SCOPE";
/// Endpoint variable.
pub const ENV_ENDPOINT: &str = "FOUNDRY_ENDPOINT";
/// Claude's Messages API endpoint variable (when it differs from the derived one).
pub const ENV_ANTHROPIC_ENDPOINT: &str = "FOUNDRY_ANTHROPIC_ENDPOINT";
/// API style variable.
pub const ENV_API: &str = "FOUNDRY_API";
/// api-version variable.
pub const ENV_API_VERSION: &str = "FOUNDRY_API_VERSION";
/// Body limit variable.
pub const ENV_MAX_BODY: &str = "FOUNDRY_PROXY_MAX_BODY";
/// Upstream header timeout variable.
pub const ENV_UPSTREAM_TIMEOUT: &str = "FOUNDRY_PROXY_UPSTREAM_TIMEOUT";
/// Shutdown grace variable.
pub const ENV_SHUTDOWN_GRACE: &str = "FOUNDRY_PROXY_SHUTDOWN_GRACE";
/// WebSocket message size limit variable.
pub const ENV_WS_MAX_MESSAGE: &str = "FOUNDRY_PROXY_WS_MAX_MESSAGE";
/// WebSocket idle timeout variable.
pub const ENV_WS_IDLE_TIMEOUT: &str = "FOUNDRY_PROXY_WS_IDLE_TIMEOUT";
/// Config file variable.
pub const ENV_CONFIG: &str = "FOUNDRY_PROXY_CONFIG";
/// Access keys file variable.
pub const ENV_KEYS_FILE: &str = "FOUNDRY_PROXY_KEYS_FILE";
/// Anonymous opt-in variable.
pub const ENV_ALLOW_ANONYMOUS: &str = "FOUNDRY_PROXY_ALLOW_ANONYMOUS";
/// Separate metrics address variable.
pub const ENV_METRICS_LISTEN: &str = "FOUNDRY_PROXY_METRICS_LISTEN";
/// Usage ledger (SQLite file) variable.
pub const ENV_USAGE_DB: &str = "FOUNDRY_PROXY_USAGE_DB";
/// CORS allow-list variable.
pub const ENV_CORS_ORIGINS: &str = "FOUNDRY_PROXY_CORS_ORIGINS";
/// Host names (besides loopback names and IP literals) requests may name.
pub const ENV_ALLOWED_HOSTS: &str = "FOUNDRY_PROXY_ALLOWED_HOSTS";
/// Extra CA bundle variable (the usual OpenSSL name).
pub const ENV_SSL_CERT_FILE: &str = "SSL_CERT_FILE";

impl Settings {
    /// Reads a TOML config file; unknown keys and bad values are errors naming the key.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                ENV_CONFIG,
                format!("cannot read config file {shown}: {e}"),
                "check the path given to --config or FOUNDRY_PROXY_CONFIG",
            )
        })?;
        let parsed: Result<Self, _> = toml::from_str(&text);
        parsed
            .map(|mut settings| {
                settings.source = Some(std::sync::Arc::from(text.as_str()));
                settings
            })
            .map_err(|e| {
                let detail = e.message().replace('\n', " ");
                let location = e
                    .span()
                    .map(|span| {
                        let line = text[..span.start].matches('\n').count() + 1;
                        format!(" (line {line})")
                    })
                    .unwrap_or_default();
                ConfigError::new(
                    ENV_CONFIG,
                    format!("{shown}{location}: {detail}"),
                    "fix that key; config/example.toml lists every valid key",
                )
            })
    }

    /// Reads the environment layer.
    pub fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let seconds = |name: &str| -> Result<Option<u64>, ConfigError> {
            env.var(name)
                .map(|v| {
                    v.trim().parse::<u64>().map_err(|_| {
                        ConfigError::new(
                            name,
                            format!("'{v}' is not a whole number of seconds"),
                            "use e.g. 30",
                        )
                    })
                })
                .transpose()
        };
        Ok(Self {
            listen: env.var(ENV_LISTEN),
            tenant_id: env.var(ENV_TENANT_ID),
            client_id: env.var(ENV_CLIENT_ID),
            client_secret: env.var(ENV_CLIENT_SECRET).map(Secret::new),
            authority_host: env.var(ENV_AUTHORITY_HOST),
            scope: env.var(ENV_SCOPE),
            endpoint: env.var(ENV_ENDPOINT),
            anthropic_endpoint: env.var(ENV_ANTHROPIC_ENDPOINT),
            api: env.var(ENV_API),
            api_version: env.var(ENV_API_VERSION),
            max_body: env.var(ENV_MAX_BODY).map(SizeSetting::Text),
            upstream_timeout_secs: seconds(ENV_UPSTREAM_TIMEOUT)?,
            shutdown_grace_secs: seconds(ENV_SHUTDOWN_GRACE)?,
            ws_max_message: env.var(ENV_WS_MAX_MESSAGE).map(SizeSetting::Text),
            ws_idle_timeout_secs: seconds(ENV_WS_IDLE_TIMEOUT)?,
            keys_file: env.var(ENV_KEYS_FILE).map(PathBuf::from),
            allow_anonymous: env
                .var(ENV_ALLOW_ANONYMOUS)
                .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                    "1" | "true" | "yes" => Ok(true),
                    "0" | "false" | "no" => Ok(false),
                    _ => Err(ConfigError::new(
                        ENV_ALLOW_ANONYMOUS,
                        format!("'{v}' is not true or false"),
                        "use true or false",
                    )),
                })
                .transpose()?,
            metrics_listen: env.var(ENV_METRICS_LISTEN),
            cors_origins: env.var(ENV_CORS_ORIGINS).map(|v| comma_list(&v)),
            allowed_hosts: env.var(ENV_ALLOWED_HOSTS).map(|v| comma_list(&v)),
            models: None,
            prices: None,
            usage_db: env.var(ENV_USAGE_DB).map(PathBuf::from),
            redis_url: env.var(self::redis::ENV_REDIS_URL).map(Secret::new),
            redis_failure: env.var(self::redis::ENV_REDIS_FAILURE),
            credential: Some(CredentialSettings::from_env(env)?),
            upstream: None,
            max_wait: None,
            source: None,
        })
    }

    /// Overlays `higher` on `self`: every value `higher` sets wins.
    pub fn overlay(self, higher: Settings) -> Settings {
        let models = match (self.models, higher.models) {
            (Some(mut low), Some(high)) => {
                low.extend(high);
                Some(low)
            }
            (low, high) => high.or(low),
        };
        Settings {
            listen: higher.listen.or(self.listen),
            tenant_id: higher.tenant_id.or(self.tenant_id),
            client_id: higher.client_id.or(self.client_id),
            client_secret: higher.client_secret.or(self.client_secret),
            authority_host: higher.authority_host.or(self.authority_host),
            scope: higher.scope.or(self.scope),
            endpoint: higher.endpoint.or(self.endpoint),
            anthropic_endpoint: higher.anthropic_endpoint.or(self.anthropic_endpoint),
            api: higher.api.or(self.api),
            api_version: higher.api_version.or(self.api_version),
            max_body: higher.max_body.or(self.max_body),
            upstream_timeout_secs: higher.upstream_timeout_secs.or(self.upstream_timeout_secs),
            shutdown_grace_secs: higher.shutdown_grace_secs.or(self.shutdown_grace_secs),
            ws_max_message: higher.ws_max_message.or(self.ws_max_message),
            ws_idle_timeout_secs: higher.ws_idle_timeout_secs.or(self.ws_idle_timeout_secs),
            keys_file: higher.keys_file.or(self.keys_file),
            allow_anonymous: higher.allow_anonymous.or(self.allow_anonymous),
            metrics_listen: higher.metrics_listen.or(self.metrics_listen),
            cors_origins: higher.cors_origins.or(self.cors_origins),
            allowed_hosts: higher.allowed_hosts.or(self.allowed_hosts),
            models,
            prices: higher.prices.or(self.prices),
            usage_db: higher.usage_db.or(self.usage_db),
            redis_url: higher.redis_url.or(self.redis_url),
            redis_failure: higher.redis_failure.or(self.redis_failure),
            credential: match (self.credential, higher.credential) {
                (Some(low), Some(high)) => Some(low.overlay(high)),
                (low, high) => high.or(low),
            },
            upstream: higher.upstream.or(self.upstream),
            max_wait: higher.max_wait.or(self.max_wait),
            source: self.source.or(higher.source),
        }
    }
}

/// Loads the full configuration: defaults < file < environment < `flags`.
///
/// The file is `file` if given, else `FOUNDRY_PROXY_CONFIG` if set.
pub fn load(
    file: Option<&Path>,
    env: &dyn Environment,
    flags: Settings,
) -> Result<Config, ConfigError> {
    let file_path = file
        .map(Path::to_path_buf)
        .or_else(|| env.var(ENV_CONFIG).map(PathBuf::from));
    let from_file = match &file_path {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    from_file
        .overlay(Settings::from_env(env)?)
        .overlay(flags)
        .validate(env)
}

/// The non-empty, trimmed entries of a comma-separated environment value.
pub(crate) fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|entry| entry.trim().to_owned())
        .filter(|entry| !entry.is_empty())
        .collect()
}

fn optional(value: Option<String>) -> Option<String> {
    value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// The Azure cloud an endpoint belongs to: it decides the default authority and scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cloud {
    /// Azure public cloud.
    Public,
    /// Azure US Government.
    UsGovernment,
    /// Azure operated by 21Vianet (China).
    China,
}

impl Cloud {
    /// The cloud of an endpoint URL, by its host's suffix.
    pub fn of(endpoint: &Url) -> Self {
        let host = endpoint.host_str().unwrap_or_default().to_ascii_lowercase();
        if host.ends_with(".azure.us") {
            Self::UsGovernment
        } else if host.ends_with(".azure.cn") {
            Self::China
        } else {
            Self::Public
        }
    }

    /// The Entra authority of the cloud.
    pub fn authority(self) -> &'static str {
        match self {
            Self::Public => DEFAULT_AUTHORITY_HOST,
            Self::UsGovernment => "https://login.microsoftonline.us",
            Self::China => "https://login.chinacloudapi.cn",
        }
    }

    /// The Cognitive Services scope of the cloud.
    pub fn scope(self) -> &'static str {
        match self {
            Self::Public => DEFAULT_SCOPE,
            Self::UsGovernment => "https://cognitiveservices.azure.us/.default",
            Self::China => "https://cognitiveservices.azure.cn/.default",
        }
    }
}

fn required(value: Option<String>, setting: &str, fix: &str) -> Result<String, ConfigError> {
    match value.map(|v| v.trim().to_owned()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(ConfigError::new(setting, "missing", fix)),
    }
}

fn check_tenant(tenant: &str) -> Result<(), ConfigError> {
    let lowered = tenant.to_ascii_lowercase();
    if matches!(lowered.as_str(), "common" | "organizations" | "consumers") {
        return Err(ConfigError::new(
            ENV_TENANT_ID,
            format!(
                "'{tenant}' cannot issue app-only tokens (client credentials need a specific tenant)"
            ),
            "use the Directory (tenant) ID GUID from your App Registration's Overview page",
        ));
    }
    let valid = tenant
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !valid {
        return Err(ConfigError::new(
            ENV_TENANT_ID,
            format!("'{tenant}' is not a tenant id or domain"),
            "use the Directory (tenant) ID GUID from your App Registration's Overview page",
        ));
    }
    Ok(())
}

fn check_scope(scope: &str) -> Result<(), ConfigError> {
    let valid = scope.ends_with("/.default")
        && !scope.contains(char::is_whitespace)
        && scope.len() > "/.default".len();
    if valid {
        Ok(())
    } else {
        Err(ConfigError::new(
            ENV_SCOPE,
            format!("'{scope}' is not a {{resource}}/.default scope"),
            "leave it unset for https://cognitiveservices.azure.com/.default, or use your cloud's resource followed by /.default",
        ))
    }
}

/// Parses an endpoint or authority URL: https, or plain http only for loopback hosts.
pub(crate) fn parse_base_url(text: &str, setting: &str, fix: &str) -> Result<Url, ConfigError> {
    let trimmed = text.trim().trim_end_matches('/');
    let url = Url::parse(trimmed)
        .map_err(|e| ConfigError::new(setting, format!("'{trimmed}' is not a URL ({e})"), fix))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            setting,
            format!("'{trimmed}' must not have a query or fragment"),
            fix,
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            setting,
            "the URL must not contain credentials",
            fix,
        ));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(ConfigError::new(
            setting,
            format!("plain http is only allowed for loopback hosts, not '{trimmed}'"),
            "use https://",
        )),
        other => Err(ConfigError::new(
            setting,
            format!("unsupported scheme '{other}'"),
            fix,
        )),
    }
}

/// True for `localhost`, `127.0.0.0/8` and `::1`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn parse_size(size: &SizeSetting) -> Result<usize, ConfigError> {
    parse_size_of(ENV_MAX_BODY, size)
}

/// A size setting (`setting` names it in errors): bytes, or a number with a unit.
fn parse_size_of(setting: &str, size: &SizeSetting) -> Result<usize, ConfigError> {
    let bad = |text: &str| {
        ConfigError::new(
            setting,
            format!("'{text}' is not a size"),
            "use bytes or a size such as 32MiB, 512KiB, 1GiB",
        )
    };
    let bytes = match size {
        SizeSetting::Bytes(n) => *n,
        SizeSetting::Text(text) => {
            let trimmed = text.trim();
            let split = trimmed
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(trimmed.len());
            let (digits, unit) = trimmed.split_at(split);
            let number: u64 = digits.parse().map_err(|_| bad(text))?;
            let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" => 1_000,
                "kib" => 1 << 10,
                "m" | "mb" => 1_000_000,
                "mib" => 1 << 20,
                "g" | "gb" => 1_000_000_000,
                "gib" => 1 << 30,
                _ => return Err(bad(text)),
            };
            number.checked_mul(multiplier).ok_or_else(|| bad(text))?
        }
    };
    if bytes == 0 {
        return Err(ConfigError::new(
            setting,
            "must be more than 0",
            "use a size such as 32MiB",
        ));
    }
    usize::try_from(bytes)
        .map_err(|_| ConfigError::new(setting, "too large", "use a size such as 32MiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn minimal() -> BTreeMap<String, String> {
        env(&[
            (ENV_TENANT_ID, "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            (ENV_CLIENT_ID, "00000000-0000-0000-0000-000000000001"),
            (ENV_CLIENT_SECRET, "abc~def"),
            (ENV_ENDPOINT, "https://contoso.openai.azure.com/"),
        ])
    }

    /// With only the four required variables, every default applies.
    #[test]
    fn defaults_apply() {
        let config = load(None, &minimal(), Settings::default()).expect("valid");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.scope, DEFAULT_SCOPE);
        assert_eq!(
            config.endpoint.as_str(),
            "https://contoso.openai.azure.com/"
        );
        assert_eq!(config.api, ApiStyle::OpenAiV1);
        assert_eq!(config.max_body, DEFAULT_MAX_BODY);
    }

    /// Each missing required variable is named in the error.
    #[test]
    fn missing_settings_are_named() {
        for name in [
            ENV_TENANT_ID,
            ENV_CLIENT_ID,
            ENV_CLIENT_SECRET,
            ENV_ENDPOINT,
        ] {
            let mut vars = minimal();
            vars.remove(name);
            let err = load(None, &vars, Settings::default()).expect_err("must fail");
            assert_eq!(err.setting, name);
            assert!(err.to_string().starts_with(name), "{err}");
        }
    }

    /// `FOUNDRY_ANTHROPIC_ENDPOINT` is optional, validated like the endpoint (https except on
    /// loopback, no query, no credentials), and reaches the target.
    #[test]
    fn anthropic_endpoint() {
        let mut vars = minimal();
        let config = load(None, &vars, Settings::default()).expect("valid");
        assert_eq!(config.anthropic_endpoint, None);
        for bad in [
            "http://claude.example.com",
            "https://claude.example.com/?x=1",
            "https://user:pw@claude.example.com",
            "not a url",
        ] {
            vars.insert(ENV_ANTHROPIC_ENDPOINT.into(), bad.into());
            let err = load(None, &vars, Settings::default()).expect_err(bad);
            assert_eq!(err.setting, ENV_ANTHROPIC_ENDPOINT, "{bad}");
        }
        vars.insert(
            ENV_ANTHROPIC_ENDPOINT.into(),
            "https://other.services.ai.azure.com/anthropic/".into(),
        );
        let config = load(None, &vars, Settings::default()).expect("valid");
        let target = crate::upstream::Target::from_config(&config);
        assert_eq!(
            target.anthropic_base(),
            "https://other.services.ai.azure.com"
        );
        vars.insert(
            ENV_ANTHROPIC_ENDPOINT.into(),
            "http://127.0.0.1:9001".into(),
        );
        assert!(load(None, &vars, Settings::default()).is_ok());
    }

    /// Plain http is refused for remote hosts and accepted for loopback.
    #[test]
    fn http_only_for_loopback() {
        let mut vars = minimal();
        vars.insert(
            ENV_ENDPOINT.into(),
            "http://contoso.openai.azure.com".into(),
        );
        assert_eq!(
            load(None, &vars, Settings::default())
                .expect_err("remote http")
                .setting,
            ENV_ENDPOINT
        );
        vars.insert(ENV_ENDPOINT.into(), "http://127.0.0.1:9000".into());
        assert!(load(None, &vars, Settings::default()).is_ok());
        vars.insert(ENV_AUTHORITY_HOST.into(), "http://login.example.com".into());
        assert_eq!(
            load(None, &vars, Settings::default())
                .expect_err("remote http")
                .setting,
            ENV_AUTHORITY_HOST
        );
    }

    /// Flags beat the environment, which beats the file.
    #[test]
    fn precedence_file_env_flags() {
        let dir = std::env::temp_dir().join(format!("fp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("precedence.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:1111\"\napi_version = \"2024-06-01\"\nscope = \"https://ai.azure.com/.default\"\n").expect("write");
        let mut vars = minimal();
        vars.insert(ENV_LISTEN.into(), "127.0.0.1:2222".into());
        vars.insert(ENV_API_VERSION.into(), "2024-10-21".into());
        let flags = Settings {
            listen: Some("127.0.0.1:3333".into()),
            ..Settings::default()
        };
        let config = load(Some(&file), &vars, flags).expect("valid");
        assert_eq!(config.listen.port(), 3333);
        assert_eq!(config.api_version.as_deref(), Some("2024-10-21"));
        assert_eq!(config.scope, "https://ai.azure.com/.default");
    }

    /// Unknown keys in the file are rejected by name.
    #[test]
    fn unknown_file_keys_rejected() {
        let dir = std::env::temp_dir().join(format!("fp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("unknown.toml");
        std::fs::write(
            &file,
            "endpoint = \"https://x.openai.azure.com\"\nendpiont = \"typo\"\n",
        )
        .expect("write");
        let err = load(Some(&file), &minimal(), Settings::default()).expect_err("unknown key");
        assert!(err.problem.contains("endpiont"), "{err}");
        assert!(err.problem.contains("line 2"), "{err}");
    }

    /// Sizes accept units and reject nonsense.
    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size(&SizeSetting::Text("32MiB".into())), Ok(32 << 20));
        assert_eq!(parse_size(&SizeSetting::Text("1000".into())), Ok(1000));
        assert_eq!(parse_size(&SizeSetting::Bytes(5)), Ok(5));
        assert!(parse_size(&SizeSetting::Text("lots".into())).is_err());
        assert!(parse_size(&SizeSetting::Text("0".into())).is_err());
    }

    /// Multi-tenant authorities cannot do client credentials.
    #[test]
    fn common_tenant_rejected() {
        let mut vars = minimal();
        vars.insert(ENV_TENANT_ID.into(), "common".into());
        let err = load(None, &vars, Settings::default()).expect_err("common");
        assert_eq!(err.setting, ENV_TENANT_ID);
    }

    /// The shipped config/example.toml loads with the schema as it is, given the four
    /// required values from the environment.
    #[test]
    fn example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/example.toml");
        let config = load(Some(&path), &minimal(), Settings::default()).expect("example loads");
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.max_body, DEFAULT_MAX_BODY);
    }

    /// The authority and scope follow the endpoint's cloud unless set.
    #[test]
    fn clouds_follow_the_endpoint() {
        for (endpoint, authority, scope) in [
            (
                "https://r.openai.azure.us",
                "https://login.microsoftonline.us/",
                "https://cognitiveservices.azure.us/.default",
            ),
            (
                "https://r.openai.azure.cn",
                "https://login.chinacloudapi.cn/",
                "https://cognitiveservices.azure.cn/.default",
            ),
            (
                "https://r.services.ai.azure.com",
                "https://login.microsoftonline.com/",
                DEFAULT_SCOPE,
            ),
        ] {
            let mut vars = minimal();
            vars.insert(ENV_ENDPOINT.into(), endpoint.into());
            let config = load(None, &vars, Settings::default()).expect("valid");
            assert_eq!(config.authority_host.as_str(), authority, "{endpoint}");
            assert_eq!(config.scope, scope, "{endpoint}");
        }
        let mut vars = minimal();
        vars.insert(ENV_ENDPOINT.into(), "https://r.openai.azure.us".into());
        vars.insert(
            ENV_SCOPE.into(),
            "https://cognitiveservices.azure.com/.default".into(),
        );
        assert_eq!(
            load(None, &vars, Settings::default()).expect("valid").scope,
            "https://cognitiveservices.azure.com/.default"
        );
    }

    /// The credential settings come from their usual environment names and the
    /// `[credential]` table, with the environment winning.
    #[test]
    fn credential_settings_layers() {
        let dir = std::env::temp_dir().join(format!("fp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert = dir.join("cert.pem");
        std::fs::write(&cert, "placeholder").expect("write");
        let file = dir.join("credential.toml");
        std::fs::write(
            &file,
            format!(
                "[credential]\nkind = \"client-certificate\"\ncertificate_path = {:?}\n",
                cert
            ),
        )
        .expect("write");
        let mut vars = minimal();
        vars.remove(ENV_CLIENT_SECRET);
        let config = load(Some(&file), &vars, Settings::default()).expect("valid");
        assert_eq!(config.credential.kind(), "client-certificate");
        vars.insert("FOUNDRY_CREDENTIAL".into(), "workload-identity".into());
        vars.insert(
            "AZURE_FEDERATED_TOKEN_FILE".into(),
            "/var/run/secrets/azure/tokens/azure-identity-token".into(),
        );
        let config = load(Some(&file), &vars, Settings::default()).expect("valid");
        assert_eq!(config.credential.kind(), "workload-identity");
        assert!(config.credential_reason.contains("FOUNDRY_CREDENTIAL"));
    }

    /// A non-loopback listener needs access keys or an explicit anonymous opt-in.
    #[test]
    fn anonymous_only_on_loopback_unless_allowed() {
        let mut vars = minimal();
        vars.insert(ENV_LISTEN.into(), "0.0.0.0:8080".into());
        let err = load(None, &vars, Settings::default()).expect_err("refused");
        assert_eq!(err.setting, ENV_LISTEN);
        assert!(
            err.fix.contains("FOUNDRY_PROXY_KEYS_FILE")
                && err.fix.contains("FOUNDRY_PROXY_ALLOW_ANONYMOUS"),
            "{err}"
        );
        vars.insert(ENV_ALLOW_ANONYMOUS.into(), "true".into());
        assert!(
            load(None, &vars, Settings::default())
                .expect("allowed")
                .allow_anonymous
        );
        vars.remove(ENV_ALLOW_ANONYMOUS);
        vars.insert(ENV_KEYS_FILE.into(), "/etc/foundry-proxy/keys.toml".into());
        assert!(load(None, &vars, Settings::default()).is_ok());
    }

    /// With `[[upstream]]` tables, FOUNDRY_ENDPOINT is not needed: the first upstream by
    /// priority stands for the one endpoint, with its style.
    #[test]
    fn upstreams_need_no_endpoint() {
        let dir = std::env::temp_dir().join(format!("fp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("upstreams.toml");
        std::fs::write(
            &file,
            "[[upstream]]\nname = \"b\"\nendpoint = \"https://b.openai.azure.com\"\npriority = 2\n\n[[upstream]]\nname = \"a\"\nendpoint = \"https://a.openai.azure.com\"\napi = \"deployments\"\npriority = 1\n",
        )
        .expect("write");
        let mut vars = minimal();
        vars.remove(ENV_ENDPOINT);
        let config = load(Some(&file), &vars, Settings::default()).expect("valid");
        assert_eq!(config.endpoint.as_str(), "https://a.openai.azure.com/");
        assert_eq!(config.api, ApiStyle::Deployments);
        assert_eq!(config.upstreams.list.len(), 2);
        let err = load(None, &vars, Settings::default()).expect_err("no endpoint at all");
        assert_eq!(err.setting, ENV_ENDPOINT);
    }

    /// CORS origins must be origins; a separate metrics address must be an address.
    #[test]
    fn cors_and_metrics_settings() {
        let mut vars = minimal();
        vars.insert(
            ENV_CORS_ORIGINS.into(),
            "http://localhost:3000, https://chat.example.com".into(),
        );
        vars.insert(ENV_METRICS_LISTEN.into(), "127.0.0.1:9090".into());
        let config = load(None, &vars, Settings::default()).expect("valid");
        assert_eq!(
            config.cors_origins,
            ["http://localhost:3000", "https://chat.example.com"]
        );
        assert_eq!(config.metrics_listen.map(|a| a.port()), Some(9090));
        vars.insert(
            ENV_CORS_ORIGINS.into(),
            "https://chat.example.com/app".into(),
        );
        assert_eq!(
            load(None, &vars, Settings::default())
                .expect_err("a path")
                .setting,
            ENV_CORS_ORIGINS
        );
    }
}
