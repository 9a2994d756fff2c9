//! [`Settings::validate`]: every value checked, group by group, into a [`Config`].
//!
//! The groups run in a fixed order (listener, credential, upstream, request limits, model
//! aliases, team sharing, the Host allow-list, TLS), so the first problem reported is the same whatever else is
//! wrong. Each group is a function of the settings it reads and nothing else.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::ENV_ANTHROPIC_ENDPOINT;
use super::credential::{self, CredentialSettings};
use super::{
    Cloud, Config, ConfigError, DEFAULT_LISTEN, DEFAULT_MAX_BODY, DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_UPSTREAM_TIMEOUT, DEFAULT_WS_IDLE_TIMEOUT, DEFAULT_WS_MAX_MESSAGE, ENV_API,
    ENV_API_VERSION, ENV_AUTHORITY_HOST, ENV_CORS_ORIGINS, ENV_ENDPOINT, ENV_LISTEN,
    ENV_METRICS_LISTEN, ENV_SSL_CERT_FILE, ENV_WS_IDLE_TIMEOUT, ENV_WS_MAX_MESSAGE, Environment,
    Settings, check_scope, check_tenant, optional, parse_base_url, parse_size, parse_size_of,
    required,
};
use crate::secret::Secret;
use crate::server::browser_guard::{HostRule, parse_allowed_hosts};
use crate::upstream::ApiStyle;

impl Settings {
    /// Checks every value and builds the [`Config`]; `env` supplies `SSL_CERT_FILE`.
    pub fn validate(self, env: &dyn Environment) -> Result<Config, ConfigError> {
        // Destructured whole: a new setting does not compile until a group reads it.
        let Settings {
            listen,
            tenant_id,
            client_id,
            client_secret,
            authority_host,
            scope,
            endpoint,
            anthropic_endpoint,
            api,
            api_version,
            max_body,
            upstream_timeout_secs,
            shutdown_grace_secs,
            ws_max_message,
            ws_idle_timeout_secs,
            keys_file,
            allow_anonymous,
            metrics_listen,
            cors_origins,
            allowed_hosts,
            models,
            prices,
            usage_db,
            redis_url,
            redis_failure,
            credential,
            upstream: upstream_tables,
            max_wait,
            source,
        } = self;
        let listen = listener(listen)?;
        let identity = identity(
            tenant_id,
            client_id,
            client_secret.as_ref(),
            credential,
            env,
        )?;
        let models = models.unwrap_or_default();
        let upstreams = super::upstreams::validate(
            upstream_tables.unwrap_or_default(),
            &models,
            max_wait,
            scope.as_deref(),
            super::upstreams::Source(source.as_deref()),
        )?;
        // With `[[upstream]]` tables, the one endpoint (its cloud, Claude's resource, what
        // `check` and `/status` show first) is FOUNDRY_ENDPOINT when set, else the upstream
        // tried first.
        let (endpoint, api, api_version) = match upstreams.list.iter().min_by_key(|u| u.priority) {
            Some(first) if endpoint.is_none() => (
                Some(first.endpoint.to_string()),
                Some(first.api.as_str().to_owned()),
                first.api_version.clone(),
            ),
            _ => (endpoint, api, api_version),
        };
        let upstream = upstream(endpoint, authority_host, scope, api, api_version)?;
        let anthropic_endpoint = anthropic_endpoint
            .map(|text| {
                parse_base_url(
                    &text,
                    ENV_ANTHROPIC_ENDPOINT,
                    "use the resource that serves Claude, e.g. https://NAME.services.ai.azure.com (or https://NAME.services.ai.azure.com/anthropic)",
                )
            })
            .transpose()?;
        let max_body = match max_body {
            None => DEFAULT_MAX_BODY,
            Some(size) => parse_size(&size)?,
        };
        let ws_max_message = match ws_max_message {
            None => DEFAULT_WS_MAX_MESSAGE,
            Some(size) => parse_size_of(ENV_WS_MAX_MESSAGE, &size)?,
        };
        let ws_idle_timeout = match ws_idle_timeout_secs {
            None => DEFAULT_WS_IDLE_TIMEOUT,
            Some(0) => {
                return Err(ConfigError::new(
                    ENV_WS_IDLE_TIMEOUT,
                    "must be more than 0",
                    "use seconds, e.g. 900",
                ));
            }
            Some(secs) => Duration::from_secs(secs),
        };
        let models = model_aliases(models)?;
        if upstreams.list.is_empty() && !upstreams.models.is_empty() {
            return Err(ConfigError::new(
                "[models] targets",
                "targets name upstreams, but the file has no [[upstream]] table",
                "add [[upstream]] tables (name, endpoint), or use NAME = \"deployment\" aliases",
            ));
        }
        let prices = super::Prices::new(prices)?;
        let team = team(
            listen,
            keys_file,
            allow_anonymous,
            metrics_listen,
            cors_origins,
        )?;
        let allowed_hosts = host_allow_list(allowed_hosts)?;
        let extra_ca_file = extra_ca_file(env)?;
        let redis = super::redis::validate(redis_url, redis_failure)?;

        Ok(Config {
            listen,
            tenant_id: identity.tenant_id,
            client_id: identity.client_id,
            credential: identity.choice.credential,
            credential_reason: identity.choice.reason,
            authority_host: upstream.authority_host,
            scope: upstream.scope,
            endpoint: upstream.endpoint,
            anthropic_endpoint,
            api: upstream.api,
            api_version: upstream.api_version,
            max_body,
            models,
            prices,
            usage_db,
            redis,
            upstream_timeout: upstream_timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT),
            shutdown_grace: shutdown_grace_secs
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_SHUTDOWN_GRACE),
            ws_max_message,
            ws_idle_timeout,
            extra_ca_file,
            keys_file: team.keys_file,
            allow_anonymous: team.allow_anonymous,
            metrics_listen: team.metrics_listen,
            cors_origins: team.cors_origins,
            allowed_hosts,
            upstreams,
        })
    }
}

/// The listening address (`FOUNDRY_PROXY_LISTEN`), loopback port 8080 by default.
fn listener(listen: Option<String>) -> Result<SocketAddr, ConfigError> {
    let text = listen.unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
    text.trim().parse::<SocketAddr>().map_err(|_| {
        ConfigError::new(
            ENV_LISTEN,
            format!("'{text}' is not an address with a port"),
            "use IP:PORT, e.g. 127.0.0.1:8080",
        )
    })
}

/// Who the proxy is towards Entra: tenant, client id and the credential chosen.
struct Identity {
    tenant_id: Option<String>,
    client_id: Option<String>,
    choice: credential::Choice,
}

/// The tenant and client id as given, and the credential they and the `[credential]` table
/// choose (the Azure CLI only when `az` is on `PATH`).
fn identity(
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<&Secret>,
    settings: Option<CredentialSettings>,
    env: &dyn Environment,
) -> Result<Identity, ConfigError> {
    let tenant_id = optional(tenant_id);
    if let Some(tenant) = &tenant_id {
        check_tenant(tenant)?;
    }
    let client_id = optional(client_id);
    let app = credential::AppIdentity {
        tenant_id: tenant_id.as_deref(),
        client_id: client_id.as_deref(),
        client_secret,
    };
    let choice = credential::choose(
        settings.unwrap_or_default(),
        &app,
        credential::az_on_path(env),
    )?;
    Ok(Identity {
        tenant_id,
        client_id,
        choice,
    })
}

/// Where requests and token requests go.
struct Upstream {
    endpoint: Url,
    authority_host: Url,
    scope: String,
    api: ApiStyle,
    api_version: Option<String>,
}

/// The endpoint (required), then what defaults from its cloud (authority, scope) and its
/// host (API style), and the api-version.
fn upstream(
    endpoint: Option<String>,
    authority_host: Option<String>,
    scope: Option<String>,
    api: Option<String>,
    api_version: Option<String>,
) -> Result<Upstream, ConfigError> {
    let endpoint_text = required(
        endpoint,
        ENV_ENDPOINT,
        "set it to your resource's endpoint, e.g. https://NAME.openai.azure.com or https://NAME.services.ai.azure.com (Azure portal → your resource → Keys and Endpoint)",
    )?;
    let endpoint = parse_base_url(
        &endpoint_text,
        ENV_ENDPOINT,
        "use your resource's https:// endpoint, e.g. https://NAME.openai.azure.com",
    )?;
    let cloud = Cloud::of(&endpoint);

    let authority_text = authority_host.unwrap_or_else(|| cloud.authority().to_owned());
    let authority_host = parse_base_url(
        &authority_text,
        ENV_AUTHORITY_HOST,
        "use https://login.microsoftonline.com (or your cloud's authority)",
    )?;

    let api = match api {
        Some(text) => text.parse::<ApiStyle>().map_err(|_| {
            ConfigError::new(
                ENV_API,
                format!("unknown API style '{text}'"),
                "use one of openai-v1, project, deployments, models, passthrough",
            )
        })?,
        None => ApiStyle::guess(&endpoint),
    };

    // A project endpoint refuses the Cognitive Services audience (docs/azure-facts.md §7).
    let scope = scope.unwrap_or_else(|| api.default_scope(cloud.scope()).to_owned());
    check_scope(&scope)?;

    let api_version = api_version.map(|v| v.trim().to_owned());
    if let Some(version) = &api_version {
        let valid = !version.is_empty()
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid {
            return Err(ConfigError::new(
                ENV_API_VERSION,
                format!("'{version}' is not an api-version"),
                "use a version such as 2024-10-21 or 2025-04-01-preview",
            ));
        }
    }
    Ok(Upstream {
        endpoint,
        authority_host,
        scope,
        api,
        api_version,
    })
}

/// The `[models]` table: every alias must name a valid deployment.
fn model_aliases(
    models: BTreeMap<String, super::ModelSetting>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let models: BTreeMap<String, String> = models
        .into_iter()
        .filter_map(|(name, setting)| match setting {
            super::ModelSetting::Alias(deployment) => Some((name, deployment)),
            super::ModelSetting::Targets(_) => None,
        })
        .collect();
    for (alias, deployment) in &models {
        if !crate::upstream::is_valid_deployment_name(deployment) {
            return Err(ConfigError::new(
                &format!("models.{alias}"),
                format!("'{deployment}' is not a valid deployment name"),
                "use the deployment name exactly as shown in the Foundry portal (letters, digits, '-', '_', '.')",
            ));
        }
    }
    Ok(models)
}

/// What sharing the proxy with a team takes.
struct Team {
    keys_file: Option<PathBuf>,
    allow_anonymous: bool,
    metrics_listen: Option<SocketAddr>,
    cors_origins: Vec<String>,
}

/// Access keys (required on a non-loopback `listen` unless anonymous use is explicit), the
/// separate metrics listener and the CORS origins.
fn team(
    listen: SocketAddr,
    keys_file: Option<PathBuf>,
    allow_anonymous: Option<bool>,
    metrics_listen: Option<String>,
    cors_origins: Option<Vec<String>>,
) -> Result<Team, ConfigError> {
    let allow_anonymous = allow_anonymous.unwrap_or(false);
    if keys_file.is_none() && !allow_anonymous && !listen.ip().is_loopback() {
        return Err(ConfigError::new(
            ENV_LISTEN,
            format!(
                "{listen} is reachable from other machines, and no access keys are configured: anyone who reaches it would use this App Registration's permissions"
            ),
            "set FOUNDRY_PROXY_KEYS_FILE (create keys with `foundry-proxy keys add NAME`), listen on 127.0.0.1, or set FOUNDRY_PROXY_ALLOW_ANONYMOUS=true if something in front authenticates callers",
        ));
    }
    let metrics_listen = metrics_listen
        .map(|text| {
            text.trim().parse::<SocketAddr>().map_err(|_| {
                ConfigError::new(
                    ENV_METRICS_LISTEN,
                    format!("'{text}' is not an address with a port"),
                    "use IP:PORT, e.g. 127.0.0.1:9090",
                )
            })
        })
        .transpose()?;
    let cors_origins = cors_origins.unwrap_or_default();
    for origin in &cors_origins {
        let valid = origin == "*"
            || Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https") && u.path() == "/" && !origin.ends_with('/')
            });
        if !valid {
            return Err(ConfigError::new(
                ENV_CORS_ORIGINS,
                format!("'{origin}' is not an origin"),
                "list origins as scheme://host[:port] without a path, e.g. http://localhost:3000",
            ));
        }
    }
    Ok(Team {
        keys_file,
        allow_anonymous,
        metrics_listen,
        cors_origins,
    })
}

/// The names requests may give as Host besides the proxy's own (`FOUNDRY_PROXY_ALLOWED_HOSTS`).
fn host_allow_list(entries: Option<Vec<String>>) -> Result<Vec<HostRule>, ConfigError> {
    parse_allowed_hosts(&entries.unwrap_or_default())
}

/// Extra CA certificates from `SSL_CERT_FILE`, which must then be a readable file.
fn extra_ca_file(env: &dyn Environment) -> Result<Option<PathBuf>, ConfigError> {
    let extra_ca_file = env.var(ENV_SSL_CERT_FILE).map(PathBuf::from);
    if let Some(path) = extra_ca_file.as_ref().filter(|path| !path.is_file()) {
        return Err(ConfigError::new(
            ENV_SSL_CERT_FILE,
            format!("{} is not a readable file", path.display()),
            "point it at a PEM bundle of CA certificates, or unset it",
        ));
    }
    Ok(extra_ca_file)
}
