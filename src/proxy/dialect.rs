//! The inbound dialects: which paths the proxy serves, and what each names.
//!
//! OpenAI clients send `/v1/{rest}`; Azure OpenAI clients (`AzureOpenAI`, LangChain's
//! `AzureChatOpenAI`, LiteLLM's `azure/`, Semantic Kernel, …) send the Azure paths:
//! - `/openai/deployments/{deployment}/{rest}?api-version=V`, the deployment in the path;
//! - `/openai/v1/{rest}`, the v1 surface under its Azure path (Microsoft's v1 samples);
//! - `/openai/{rest}?api-version=V`, the routes without a deployment (responses, files, …);
//! - `/v1/deployments/{deployment}/{rest}`, what `AzureOpenAI(base_url=…/v1)` sends.
//!
//!
//! Anthropic clients (Claude) send `/v1/messages` and `/v1/messages/count_tokens`
//! (`ANTHROPIC_BASE_URL=http://127.0.0.1:8080`) or `/anthropic/v1/{rest}` (a Foundry base URL,
//! `…/anthropic`): [`Dialect::Anthropic`], whatever the API style.
//!
//! Each becomes an [`upstream::Route`]; where it goes then depends only on the configured
//! API style ([`upstream::Target::route_url`]).

use crate::upstream::{self, Dialect, Route};

/// Why a path is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    /// No dialect has this path.
    Unknown,
    /// The deployment segment is not a possible deployment name.
    BadDeployment,
}

/// True for the paths of the Anthropic dialect (and any path under `/anthropic/`): the
/// answers to them, errors included, are in Anthropic's shape. A few byte comparisons, so
/// every request can be asked.
pub fn is_anthropic_path(path: &str) -> bool {
    path.starts_with("/anthropic/")
        || path == "/anthropic"
        || matches!(path, "/v1/messages" | "/v1/messages/count_tokens")
}

/// The route a request path and query stand for, in any of the dialects above.
pub fn route<'a>(path: &'a str, query: Option<&'a str>) -> Result<Route<'a>, PathProblem> {
    let (dialect, after) = if let Some(rest) = path.strip_prefix("/v1/") {
        if matches!(rest, "messages" | "messages/count_tokens") {
            return Ok(Route::anthropic(rest, query));
        }
        match rest.strip_prefix("deployments/") {
            // `/v1/deployments` alone is no OpenAI route either; only `…/{name}/{op}` is.
            Some(named) if named.contains('/') => (Dialect::Classic, Some(named)),
            _ => return Ok(Route::v1(rest, query)),
        }
    } else if let Some(rest) = path.strip_prefix("/openai/") {
        if let Some(rest) = rest.strip_prefix("v1/") {
            return Ok(Route::v1(rest, query));
        }
        match rest.strip_prefix("deployments/") {
            Some(named) => (Dialect::Classic, Some(named)),
            None => {
                return Ok(Route {
                    rest,
                    query,
                    deployment: None,
                    dialect: Dialect::Classic,
                });
            }
        }
    } else if let Some(rest) = path.strip_prefix("/anthropic/v1/") {
        return Ok(Route::anthropic(rest, query));
    } else {
        return Err(PathProblem::Unknown);
    };
    let named = after.unwrap_or_default();
    let (deployment, rest) = named.split_once('/').ok_or(PathProblem::Unknown)?;
    if !upstream::is_valid_deployment_name(deployment) {
        return Err(PathProblem::BadDeployment);
    }
    Ok(Route {
        rest,
        query,
        deployment: Some(deployment),
        dialect,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(path: &str) -> Result<(&str, Option<&str>, Dialect), PathProblem> {
        route(path, None).map(|r| (r.rest, r.deployment, r.dialect))
    }

    /// Every dialect's path reads as the operation, the deployment it names and its dialect.
    #[test]
    fn dialects() {
        assert_eq!(
            parts("/v1/chat/completions"),
            Ok(("chat/completions", None, Dialect::V1))
        );
        assert_eq!(
            parts("/openai/v1/responses"),
            Ok(("responses", None, Dialect::V1))
        );
        assert_eq!(
            parts("/openai/deployments/gpt-4o/chat/completions"),
            Ok(("chat/completions", Some("gpt-4o"), Dialect::Classic))
        );
        assert_eq!(
            parts("/v1/deployments/gpt-4o/embeddings"),
            Ok(("embeddings", Some("gpt-4o"), Dialect::Classic))
        );
        assert_eq!(
            parts("/openai/responses"),
            Ok(("responses", None, Dialect::Classic))
        );
        assert_eq!(
            parts("/openai/files/abc"),
            Ok(("files/abc", None, Dialect::Classic))
        );
        assert_eq!(
            parts("/v1/deployments"),
            Ok(("deployments", None, Dialect::V1))
        );
        assert_eq!(
            parts("/v1/messages"),
            Ok(("messages", None, Dialect::Anthropic))
        );
        assert_eq!(
            parts("/v1/messages/count_tokens"),
            Ok(("messages/count_tokens", None, Dialect::Anthropic))
        );
        assert_eq!(
            parts("/anthropic/v1/messages"),
            Ok(("messages", None, Dialect::Anthropic))
        );
        assert_eq!(
            parts("/anthropic/v1/models/claude-sonnet-4-5"),
            Ok(("models/claude-sonnet-4-5", None, Dialect::Anthropic))
        );
        // Other `/v1/messages…` paths stay OpenAI's (the Assistants API has its own).
        assert_eq!(
            parts("/v1/messages/batches"),
            Ok(("messages/batches", None, Dialect::V1))
        );
        assert!(is_anthropic_path("/anthropic/v2/x"));
        assert!(is_anthropic_path("/v1/messages"));
        assert!(!is_anthropic_path("/v1/chat/completions"));
        assert!(!is_anthropic_path("/anthropicx/v1/messages"));
    }

    /// Paths outside every dialect, and deployment names Azure cannot have, are refused.
    #[test]
    fn refusals() {
        for path in [
            "/",
            "/v2/chat",
            "/openai",
            "/openaiv1/x",
            "/V1/models",
            "//v1/models",
            "/anthropic",
            "/anthropic/v2/messages",
        ] {
            assert_eq!(parts(path), Err(PathProblem::Unknown), "{path}");
        }
        assert_eq!(parts("/openai/deployments/gpt"), Err(PathProblem::Unknown));
        for path in [
            "/openai/deployments/../chat/completions",
            "/openai/deployments/a%2fb/chat/completions",
            "/openai/deployments//chat/completions",
            "/v1/deployments/.x/chat/completions",
        ] {
            assert_eq!(parts(path), Err(PathProblem::BadDeployment), "{path}");
        }
    }
}
