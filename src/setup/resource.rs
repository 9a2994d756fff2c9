//! Finding the Foundry / Azure OpenAI resource: by ARM id, or by name across the operator's
//! subscriptions; refusing one that cannot serve inference with Entra ID (docs/azure-facts.md §8).

use serde::Serialize;
use serde_json::Value;

use super::azure::{CallError, Plane, items, text};
use super::refusal::Refusal;

/// api-version of the subscriptions list.
const SUBSCRIPTIONS_API: &str = "2022-12-01";
/// api-version of the Cognitive Services accounts calls.
const ACCOUNTS_API: &str = "2023-05-01";
/// Kinds that serve the OpenAI-compatible inference the proxy forwards.
const INFERENCE_KINDS: &[&str] = &["AIServices", "OpenAI"];

/// The resource `setup` works on.
#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    /// The ARM id: the scope of the role assignment.
    pub id: String,
    /// The account name.
    pub name: String,
    /// `AIServices`, `OpenAI`, …
    pub kind: String,
    /// The inference endpoint (`properties.endpoint`), without a trailing slash.
    pub endpoint: String,
    /// `properties.disableLocalAuth`: keys are off, only Entra ID works.
    pub key_auth_disabled: bool,
    /// The subscription's tenant: where the app must live.
    pub tenant: String,
}

/// Finds the resource named by `wanted` (a name or an ARM id) and checks it can be used.
pub async fn find(arm: &Plane, wanted: &str) -> Result<Resource, Refusal> {
    let subscriptions = items(
        &arm.get("/subscriptions", &[("api-version", SUBSCRIPTIONS_API)])
            .await
            .map_err(|e| e.refusal("list your subscriptions"))?,
    );
    let tenant_of = |account_id: &str| {
        subscriptions
            .iter()
            .find(|s| {
                let sub = text(s, "/id").to_ascii_lowercase();
                !sub.is_empty()
                    && account_id
                        .to_ascii_lowercase()
                        .starts_with(&format!("{sub}/"))
            })
            .map(|s| text(s, "/tenantId"))
            .unwrap_or_default()
    };
    let account = if wanted.starts_with("/subscriptions/") {
        match arm.get(wanted, &[("api-version", ACCOUNTS_API)]).await {
            Ok(account) => account,
            Err(CallError::Answer(a)) if a.status == 404 => {
                return Err(not_found(wanted, &[]).with_azure(a));
            }
            Err(e) => return Err(e.refusal("read the resource")),
        }
    } else {
        let mut seen = Vec::new();
        let mut matches = Vec::new();
        for sub in &subscriptions {
            let path = format!(
                "/subscriptions/{}/providers/Microsoft.CognitiveServices/accounts",
                text(sub, "/subscriptionId")
            );
            let list = arm
                .get(&path, &[("api-version", ACCOUNTS_API)])
                .await
                .map_err(|e| e.refusal("list the Cognitive Services accounts"))?;
            for account in items(&list) {
                let name = text(&account, "/name");
                if name.eq_ignore_ascii_case(wanted) {
                    matches.push(account);
                } else {
                    seen.push(name);
                }
            }
        }
        match matches.len() {
            0 => return Err(not_found(wanted, &seen)),
            1 => matches.remove(0),
            _ => return Err(ambiguous(wanted, &matches)),
        }
    };
    let id = text(&account, "/id");
    let resource = Resource {
        tenant: tenant_of(&id),
        name: text(&account, "/name"),
        kind: text(&account, "/kind"),
        endpoint: inference_endpoint(&account),
        key_auth_disabled: account
            .pointer("/properties/disableLocalAuth")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        id,
    };
    usable(&resource, &account)?;
    Ok(resource)
}

/// The endpoint the proxy forwards to: the account's OpenAI endpoint when it lists one
/// (`properties.endpoints`, an AI Services account's `NAME.openai.azure.com`), else its main
/// `properties.endpoint` (docs/azure-facts.md §8).
fn inference_endpoint(account: &Value) -> String {
    let openai = account
        .pointer("/properties/endpoints")
        .and_then(|e| e.get("OpenAI Language Model Instance API"))
        .and_then(Value::as_str)
        .filter(|e| !e.is_empty());
    let endpoint = openai.map_or_else(|| text(account, "/properties/endpoint"), str::to_owned);
    endpoint.trim_end_matches('/').to_owned()
}

/// Refuses a resource of a kind without chat inference, or without a custom subdomain.
fn usable(resource: &Resource, account: &Value) -> Result<(), Refusal> {
    if !INFERENCE_KINDS
        .iter()
        .any(|k| k.eq_ignore_ascii_case(&resource.kind))
    {
        return Err(Refusal::new(
            "resource_kind_unsupported",
            format!(
                "'{}' is a {} resource, which does not serve the OpenAI-compatible inference the proxy forwards.",
                resource.name, resource.kind
            ),
            &[
                "Pick an Azure AI Foundry (kind AIServices) or Azure OpenAI (kind OpenAI) resource: `az cognitiveservices account list -o table` lists them with their kind.",
            ],
        ));
    }
    let subdomain = account
        .pointer("/properties/customSubDomainName")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if !subdomain {
        return Err(Refusal::new(
            "custom_subdomain_required",
            format!(
                "'{}' has no custom subdomain (its endpoint is the regional {}), and Entra ID tokens are accepted only on a custom subdomain endpoint.",
                resource.name, resource.endpoint
            ),
            &[
                "Ask an Owner or Contributor of the resource to set a custom domain name (portal: the resource → Networking; or `az cognitiveservices account update --custom-domain NAME`). It cannot be undone.",
                "Or pick a resource that has one.",
            ],
        ));
    }
    Ok(())
}

fn not_found(wanted: &str, seen: &[String]) -> Refusal {
    let listed = if seen.is_empty() {
        "none".to_owned()
    } else {
        seen.join(", ")
    };
    Refusal::new(
        "resource_not_found",
        format!(
            "No Cognitive Services resource '{wanted}' is visible to you. Resources you can see: {listed}."
        ),
        &[
            "Check the name (or pass the full resource id: portal → the resource → JSON View), and that `az account list` shows its subscription.",
            "If it is in a subscription you cannot see, ask its Owner for at least Reader on the resource.",
        ],
    )
}

fn ambiguous(wanted: &str, matches: &[Value]) -> Refusal {
    let ids: Vec<String> = matches.iter().map(|m| text(m, "/id")).collect();
    Refusal {
        code: "resource_ambiguous",
        cause: format!(
            "{} resources are named '{wanted}': {}.",
            ids.len(),
            ids.join(", ")
        ),
        fix: vec!["Pass the full resource id with --resource instead of the name.".to_owned()],
        azure: None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_openai_endpoint_wins_over_the_main_one() {
        let with = json!({"properties": {
            "endpoint": "https://r.cognitiveservices.azure.com/",
            "endpoints": {"OpenAI Language Model Instance API": "https://r.openai.azure.com/"},
        }});
        assert_eq!(inference_endpoint(&with), "https://r.openai.azure.com");
        let without = json!({"properties": {"endpoint": "https://r.openai.azure.com/"}});
        assert_eq!(inference_endpoint(&without), "https://r.openai.azure.com");
    }
}
