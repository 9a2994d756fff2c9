//! Azure Resource Manager, the part `setup` uses (docs/azure-facts.md §8): subscriptions, the
//! Cognitive Services accounts in a subscription (or one by id), and role assignments at an
//! account's scope (list, and `PUT` with 201, 409 `RoleAssignmentExists`, 400
//! `PrincipalNotFound` while a new service principal replicates, 403 `AuthorizationFailed`).
//! Tokens must carry the audience `https://management.azure.com`; every call needs `api-version`.
//!
//! The world: two subscriptions ([`identities::SUBSCRIPTION_ID`] and
//! [`identities::OTHER_SUBSCRIPTION_ID`]) and four accounts: the emulator's own Foundry
//! resource (its endpoint is the emulator's address), one without a custom subdomain, one of a
//! kind without chat inference, and one name present in both subscriptions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use serde_json::{Value, json};

use super::directory::{Assignment, ROLE_DEFINITIONS};
use super::foundry::auth::bearer;
use super::identities;
use super::state::Emulator;

const AUDIENCES: &[&str] = &[
    "https://management.azure.com",
    "https://management.azure.com/",
];
const ACCOUNTS: &str = "/providers/Microsoft.CognitiveServices/accounts";
const ASSIGNMENTS: &str = "/providers/Microsoft.Authorization/roleAssignments";

/// ARM's routes, merged into the emulator's router.
pub(crate) fn routes() -> axum::Router<Arc<Emulator>> {
    axum::Router::new()
        .route("/subscriptions", get(subscriptions))
        .route("/subscriptions/{*rest}", any(resource))
}

/// An ARM refusal; answered as `{"error":{"code","message"}}`.
#[derive(Debug)]
pub(crate) struct ArmError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ArmError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, code: &'static str, message: &str) -> ArmError {
    ArmError {
        status,
        code,
        message: message.to_owned(),
    }
}

/// Checks the token (signed by the emulator, for ARM, in time) and `api-version`; returns the
/// caller's object id.
fn admit(
    emu: &Emulator,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<String, ArmError> {
    let Some(token) = bearer(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.",
        ));
    };
    let claims = emu
        .keys
        .verify(token, AUDIENCES, emu.now_secs())
        .map_err(|_| {
            error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            )
        })?;
    if !query.contains_key("api-version") {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    }
    Ok(claims.oid)
}

async fn subscriptions(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ArmError> {
    admit(&emu, &headers, &query)?;
    let tenant = &emu.config.resource_tenant;
    let value: Vec<Value> = [
        (identities::SUBSCRIPTION_ID, "Emulated subscription"),
        (
            identities::OTHER_SUBSCRIPTION_ID,
            "Second emulated subscription",
        ),
    ]
    .iter()
    .map(|(id, name)| {
        json!({"id": format!("/subscriptions/{id}"), "subscriptionId": id,
               "displayName": name, "state": "Enabled", "tenantId": tenant})
    })
    .collect();
    Ok(Json(json!({"value": value})).into_response())
}

/// The accounts of the emulated world, their endpoints from the address the caller used.
fn accounts(emu: &Emulator, host: &str) -> Vec<Value> {
    let location = "swedencentral";
    let account = |sub: &str, name: &str, kind: &str, subdomain: bool, endpoint: String| {
        json!({
            "id": format!("/subscriptions/{sub}/resourceGroups/{}{ACCOUNTS}/{name}", identities::RESOURCE_GROUP),
            "name": name,
            "type": "Microsoft.CognitiveServices/accounts",
            "kind": kind,
            "location": location,
            "sku": {"name": "S0"},
            "properties": {
                // AI Services accounts also list their OpenAI endpoint (UNCONFIRMED name,
                // docs/azure-facts.md §8); the emulator's is the same address.
                "endpoints": {"OpenAI Language Model Instance API": endpoint},
                "endpoint": endpoint,
                "customSubDomainName": if subdomain { Value::from(name) } else { Value::Null },
                "disableLocalAuth": subdomain,
                "provisioningState": "Succeeded",
                "publicNetworkAccess": "Enabled",
            },
        })
    };
    let kind = match emu.resource_kind() {
        super::config::ResourceKind::Foundry => "AIServices",
        super::config::ResourceKind::OpenAi => "OpenAI",
    };
    let sub = identities::SUBSCRIPTION_ID;
    vec![
        account(
            sub,
            identities::ACCOUNT_NAME,
            kind,
            true,
            format!("http://{host}/"),
        ),
        account(
            sub,
            identities::REGIONAL_ACCOUNT_NAME,
            "OpenAI",
            false,
            format!("https://{location}.api.cognitive.microsoft.com/"),
        ),
        account(
            sub,
            identities::SPEECH_ACCOUNT_NAME,
            "SpeechServices",
            true,
            format!(
                "https://{}.cognitiveservices.azure.com/",
                identities::SPEECH_ACCOUNT_NAME
            ),
        ),
        account(
            sub,
            identities::TWIN_ACCOUNT_NAME,
            "AIServices",
            true,
            format!(
                "https://{}.services.ai.azure.com/",
                identities::TWIN_ACCOUNT_NAME
            ),
        ),
        account(
            identities::OTHER_SUBSCRIPTION_ID,
            identities::TWIN_ACCOUNT_NAME,
            "OpenAI",
            true,
            format!(
                "https://{}.openai.azure.com/",
                identities::TWIN_ACCOUNT_NAME
            ),
        ),
    ]
}

fn account_id(account: &Value) -> &str {
    account
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Everything under `/subscriptions/{sub}/…`, dispatched on the path's shape.
async fn resource(
    State(emu): State<Arc<Emulator>>,
    method: Method,
    headers: HeaderMap,
    Path(rest): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Response, ArmError> {
    let caller = admit(&emu, &headers, &query)?;
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let path = format!("/subscriptions/{rest}");
    let all = accounts(&emu, host);
    if let Some((scope, name)) = path.split_once(&format!("{ASSIGNMENTS}/")) {
        if method != Method::PUT {
            return Err(error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "Only PUT is played here.",
            ));
        }
        let Some(account) = all
            .iter()
            .find(|a| account_id(a).eq_ignore_ascii_case(scope))
        else {
            return Err(not_found(scope));
        };
        return put_assignment(&emu, &caller, account_id(account), name, &body);
    }
    if let Some(scope) = path.strip_suffix(ASSIGNMENTS) {
        let Some(account) = all
            .iter()
            .find(|a| account_id(a).eq_ignore_ascii_case(scope))
        else {
            return Err(not_found(scope));
        };
        return list_assignments(&emu, account_id(account), &query);
    }
    if method != Method::GET {
        return Err(error(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "Only GET is played here.",
        ));
    }
    if let Some(sub) = path
        .strip_prefix("/subscriptions/")
        .and_then(|p| p.strip_suffix(ACCOUNTS))
    {
        let prefix = format!("/subscriptions/{sub}/").to_ascii_lowercase();
        let value: Vec<&Value> = all
            .iter()
            .filter(|a| account_id(a).to_ascii_lowercase().starts_with(&prefix))
            .collect();
        return Ok(Json(json!({"value": value})).into_response());
    }
    match all
        .iter()
        .find(|a| account_id(a).eq_ignore_ascii_case(&path))
    {
        Some(account) => Ok(Json(account.clone()).into_response()),
        None => Err(not_found(&path)),
    }
}

fn not_found(path: &str) -> ArmError {
    let name = path.rsplit('/').next().unwrap_or_default();
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        &format!(
            "The Resource 'Microsoft.CognitiveServices/accounts/{name}' under resource group '{}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
            identities::RESOURCE_GROUP
        ),
    )
}

fn assignment_json(a: &Assignment) -> Value {
    json!({
        "id": format!("{}{ASSIGNMENTS}/{}", a.scope, a.name),
        "name": a.name,
        "type": "Microsoft.Authorization/roleAssignments",
        "properties": {
            "roleDefinitionId": a.role_definition_id,
            "principalId": a.principal_id,
            "principalType": a.principal_type,
            "scope": a.scope,
        },
    })
}

fn list_assignments(
    emu: &Emulator,
    scope: &str,
    query: &HashMap<String, String>,
) -> Result<Response, ArmError> {
    // `$filter=principalId eq '…'`; `atScope()` and others list everything at the scope.
    let principal = query.get("$filter").and_then(|f| {
        let value = f.strip_prefix("principalId eq ")?.trim();
        Some(value.trim_matches('\'').to_owned())
    });
    let dir = emu.directory.lock();
    let value: Vec<Value> = dir
        .assignments
        .iter()
        .filter(|a| a.scope.eq_ignore_ascii_case(scope))
        .filter(|a| {
            principal
                .as_ref()
                .is_none_or(|p| a.principal_id.eq_ignore_ascii_case(p))
        })
        .map(assignment_json)
        .collect();
    Ok(Json(json!({"value": value})).into_response())
}

fn put_assignment(
    emu: &Emulator,
    caller: &str,
    scope: &str,
    name: &str,
    body: &[u8],
) -> Result<Response, ArmError> {
    let props = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|b| b.get("properties").cloned())
        .unwrap_or_default();
    let field = |n: &str| {
        props
            .get(n)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (role_definition_id, principal_id) = (field("roleDefinitionId"), field("principalId"));
    if role_definition_id.is_empty() || principal_id.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContent",
            "The request content was invalid and could not be deserialized: properties.roleDefinitionId and properties.principalId are required.",
        ));
    }
    if !emu.directory.lock().policy.role_assignment_allowed {
        return Err(error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            &format!(
                "The client '{caller}' with object id '{caller}' does not have authorization to perform action 'Microsoft.Authorization/roleAssignments/write' over scope '{scope}{ASSIGNMENTS}/{name}' or the scope is invalid. If access was recently granted, please refresh your credentials."
            ),
        ));
    }
    let guid = role_definition_id.rsplit('/').next().unwrap_or_default();
    if !ROLE_DEFINITIONS
        .iter()
        .any(|(id, _)| id.eq_ignore_ascii_case(guid))
    {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "RoleDefinitionDoesNotExist",
            &format!("The specified role definition with ID '{guid}' does not exist."),
        ));
    }
    if emu.principal_known(&principal_id) != Some(true) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "PrincipalNotFound",
            &format!(
                "Principal {} does not exist in the directory {}. Check that you have the correct principal ID. If you are creating this principal and then immediately assigning a role, this error might be related to a replication delay. In this case, set the role assignment principalType property to a value, such as ServicePrincipal, User, or Group.  See https://aka.ms/docs-principaltype",
                principal_id.replace('-', ""),
                emu.config.resource_tenant
            ),
        ));
    }
    let mut dir = emu.directory.lock();
    let same = |a: &&Assignment| {
        a.scope.eq_ignore_ascii_case(scope)
            && a.principal_id.eq_ignore_ascii_case(&principal_id)
            && a.role_definition_id
                .rsplit('/')
                .next()
                .is_some_and(|g| g.eq_ignore_ascii_case(guid))
    };
    if dir.assignments.iter().any(|a| same(&a)) {
        return Err(error(
            StatusCode::CONFLICT,
            "RoleAssignmentExists",
            "The role assignment already exists.",
        ));
    }
    let assignment = Assignment {
        name: name.to_owned(),
        scope: scope.to_owned(),
        role_definition_id,
        principal_id,
        principal_type: field("principalType"),
        created: Instant::now(),
    };
    let answer = assignment_json(&assignment);
    dir.assignments.push(assignment);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}
