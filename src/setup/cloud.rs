//! Where the management plane is, per cloud: ARM and Graph endpoints (overridable with
//! `FOUNDRY_PROXY_ARM_ENDPOINT` and `FOUNDRY_PROXY_GRAPH_ENDPOINT`, e.g. for the emulator) and
//! the token scopes, which always name the cloud's real audiences (docs/azure-facts.md §8).

use crate::config::{ConfigError, Environment};

/// Overrides the Azure Resource Manager endpoint.
pub const ENV_ARM_ENDPOINT: &str = "FOUNDRY_PROXY_ARM_ENDPOINT";
/// Overrides the Microsoft Graph endpoint.
pub const ENV_GRAPH_ENDPOINT: &str = "FOUNDRY_PROXY_GRAPH_ENDPOINT";
/// The Entra authority, which decides the cloud.
const ENV_AUTHORITY: &str = "AZURE_AUTHORITY_HOST";

/// The management endpoints and scopes of one cloud.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cloud {
    /// ARM base URL, without a trailing slash.
    pub arm: String,
    /// Graph base URL, without a trailing slash.
    pub graph: String,
    /// Scope of ARM tokens.
    pub arm_scope: String,
    /// Scope of Graph tokens.
    pub graph_scope: String,
    /// The Entra authority host, when set (written to the env file so `serve` uses the same).
    pub authority: Option<String>,
}

impl Cloud {
    /// The cloud named by `AZURE_AUTHORITY_HOST` (public by default), endpoints overridden by
    /// the environment.
    pub fn from_env(env: &dyn Environment) -> Result<Self, ConfigError> {
        let authority = env.var(ENV_AUTHORITY);
        let host = authority
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        let (arm, graph) = if host.contains("microsoftonline.us") {
            (
                "https://management.usgovcloudapi.net",
                "https://graph.microsoft.us",
            )
        } else if host.contains("chinacloudapi.cn") {
            (
                "https://management.chinacloudapi.cn",
                "https://microsoftgraph.chinacloudapi.cn",
            )
        } else {
            (
                "https://management.azure.com",
                "https://graph.microsoft.com",
            )
        };
        Ok(Self {
            arm: endpoint(env, ENV_ARM_ENDPOINT, arm)?,
            graph: endpoint(env, ENV_GRAPH_ENDPOINT, graph)?,
            arm_scope: format!("{arm}/.default"),
            graph_scope: format!("{graph}/.default"),
            authority,
        })
    }
}

/// An endpoint from the environment or the default: `https://`, or `http://` on loopback only.
fn endpoint(env: &dyn Environment, name: &str, default: &str) -> Result<String, ConfigError> {
    let Some(value) = env.var(name) else {
        return Ok(default.to_owned());
    };
    let url = url::Url::parse(value.trim()).map_err(|e| {
        ConfigError::new(
            name,
            format!("'{value}' is not a URL: {e}"),
            format!("set {name} to a URL like {default}, or unset it"),
        )
    })?;
    let loopback = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
        return Err(ConfigError::new(
            name,
            format!("'{value}' must use https:// (http:// only for loopback hosts)"),
            format!("set {name} to an https:// URL, or unset it"),
        ));
    }
    Ok(value.trim().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn endpoints_follow_the_cloud_and_scopes_ignore_overrides() {
        let public = Cloud::from_env(&env(&[])).expect("public");
        assert_eq!(public.arm, "https://management.azure.com");
        assert_eq!(public.graph_scope, "https://graph.microsoft.com/.default");
        let gov = Cloud::from_env(&env(&[(ENV_AUTHORITY, "https://login.microsoftonline.us")]))
            .expect("gov");
        assert_eq!(gov.arm, "https://management.usgovcloudapi.net");
        assert_eq!(gov.graph, "https://graph.microsoft.us");
        let china = Cloud::from_env(&env(&[(ENV_AUTHORITY, "https://login.chinacloudapi.cn")]))
            .expect("china");
        assert_eq!(china.graph, "https://microsoftgraph.chinacloudapi.cn");
        let local =
            Cloud::from_env(&env(&[(ENV_ARM_ENDPOINT, "http://127.0.0.1:9/")])).expect("loopback");
        assert_eq!(local.arm, "http://127.0.0.1:9");
        assert_eq!(local.arm_scope, "https://management.azure.com/.default");
        let err = Cloud::from_env(&env(&[(ENV_GRAPH_ENDPOINT, "http://example.com")]))
            .expect_err("plain http off loopback");
        assert_eq!(err.setting, ENV_GRAPH_ENDPOINT);
    }
}
