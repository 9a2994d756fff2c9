//! Shared state for replicas: `FOUNDRY_PROXY_REDIS_URL` (`redis://` or `rediss://` for TLS)
//! and `FOUNDRY_PROXY_REDIS_FAILURE` (`open`, the default, or `closed`).

use url::Url;

use super::ConfigError;
use crate::secret::Secret;

/// Redis URL variable.
pub const ENV_REDIS_URL: &str = "FOUNDRY_PROXY_REDIS_URL";
/// What to do while Redis cannot be reached.
pub const ENV_REDIS_FAILURE: &str = "FOUNDRY_PROXY_REDIS_FAILURE";

/// What requests of limited or budgeted keys get while Redis cannot be reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisFailure {
    /// Each replica falls back to its own limiter and budgets (the default: availability
    /// first, the team's limits approximate until Redis answers again).
    #[default]
    Open,
    /// 503 `redis_unavailable`, explained, with `retry-after`.
    Closed,
}

impl RedisFailure {
    /// The setting's value.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisFailure::Open => "open",
            RedisFailure::Closed => "closed",
        }
    }
}

/// A validated Redis setting.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// The URL as given: it may hold a password, so it is only read to connect.
    pub url: Secret,
    /// The URL without user or password, for logs and `/status`.
    pub shown: String,
    /// `rediss://`.
    pub tls: bool,
    /// Fail open or closed.
    pub failure: RedisFailure,
}

/// Validates the two settings; `None` when no URL is set (a failure mode alone is an error,
/// as it would silently do nothing).
pub fn validate(
    url: Option<Secret>,
    failure: Option<String>,
) -> Result<Option<RedisConfig>, ConfigError> {
    let failure = failure
        .map(|text| match text.trim().to_ascii_lowercase().as_str() {
            "open" => Ok(RedisFailure::Open),
            "closed" => Ok(RedisFailure::Closed),
            _ => Err(ConfigError::new(
                ENV_REDIS_FAILURE,
                format!("'{text}' is neither open nor closed"),
                "use open (fall back to each replica's own limits) or closed (answer 503)",
            )),
        })
        .transpose()?;
    let Some(url) = url else {
        return match failure {
            Some(_) => Err(ConfigError::new(
                ENV_REDIS_FAILURE,
                "is set but FOUNDRY_PROXY_REDIS_URL is not, so it would do nothing",
                "set FOUNDRY_PROXY_REDIS_URL=redis://HOST:6379, or remove FOUNDRY_PROXY_REDIS_FAILURE",
            )),
            None => Ok(None),
        };
    };
    // The parse error's text never includes the URL, which may hold a password.
    let parsed = Url::parse(url.expose().trim()).map_err(|e| {
        ConfigError::new(
            ENV_REDIS_URL,
            format!("is not a URL ({e})"),
            "use redis://[:PASSWORD@]HOST:6379[/DB], or rediss:// for TLS",
        )
    })?;
    let tls = match parsed.scheme() {
        "redis" => false,
        "rediss" => true,
        other => {
            return Err(ConfigError::new(
                ENV_REDIS_URL,
                format!("has the scheme '{other}'"),
                "use redis://HOST:6379, or rediss://HOST:6380 for TLS (Valkey takes the same URLs)",
            ));
        }
    };
    // redis-rs reads `#insecure` as "skip certificate checks": never silently.
    if parsed.fragment().is_some() {
        return Err(ConfigError::new(
            ENV_REDIS_URL,
            "has a #fragment (redis-rs reads #insecure as: do not check the certificate)",
            "remove the #… part; for a private CA, put it in SSL_CERT_FILE",
        ));
    }
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        return Err(ConfigError::new(
            ENV_REDIS_URL,
            "names no host",
            "use redis://HOST:6379",
        ));
    };
    let port = parsed.port().unwrap_or(6379);
    let db = parsed.path().trim_start_matches('/');
    let shown = format!(
        "{}://{host}:{port}{}",
        parsed.scheme(),
        if db.is_empty() {
            String::new()
        } else {
            format!("/{db}")
        }
    );
    Ok(Some(RedisConfig {
        url: Secret::new(url.expose().trim()),
        shown,
        tls,
        failure: failure.unwrap_or_default(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Option<Secret> {
        Some(Secret::new(text))
    }

    /// The shown URL never carries the password; TLS and the failure mode are read.
    #[test]
    fn password_is_never_shown() {
        let config = validate(secret("rediss://:hunter2@cache.example:6380/2"), None)
            .expect("valid")
            .expect("set");
        assert_eq!(config.shown, "rediss://cache.example:6380/2");
        assert!(config.tls);
        assert_eq!(config.failure, RedisFailure::Open);
        assert!(!format!("{config:?}").contains("hunter2"));
        let closed = validate(secret("redis://r"), Some("Closed".into()))
            .expect("valid")
            .expect("set");
        assert_eq!(closed.failure, RedisFailure::Closed);
        assert_eq!(closed.shown, "redis://r:6379");
    }

    /// Every mistake names the setting and the fix, without echoing a password.
    #[test]
    fn mistakes_are_explained() {
        for (url, failure, setting) in [
            (Some("http://r:6379"), None, ENV_REDIS_URL),
            (Some("rediss://:pw@r:6380#insecure"), None, ENV_REDIS_URL),
            (Some("not a url :pw@"), None, ENV_REDIS_URL),
            (Some("redis://r"), Some("maybe"), ENV_REDIS_FAILURE),
            (None, Some("closed"), ENV_REDIS_FAILURE),
        ] {
            let error =
                validate(url.and_then(secret), failure.map(str::to_owned)).expect_err("refused");
            let text = error.to_string();
            assert!(text.contains(setting), "{text}");
            assert!(!text.contains(":pw"), "{text}");
        }
        assert!(validate(None, None).expect("valid").is_none());
    }
}
