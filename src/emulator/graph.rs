//! Microsoft Graph v1.0, the part `setup` uses (docs/azure-facts.md §8): applications
//! (create, `$filter` lookups, `addPassword`, `keyCredentials` by PATCH, `addKey` in
//! `graph_keys`, federated identity
//! credentials) and service principals (create, `$filter` lookups). Tokens must carry the
//! audience `https://graph.microsoft.com`; a tenant where users may not register applications
//! answers 403 `Authorization_RequestDenied`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::config::FederatedCredentialSpec;
use super::directory::{Application, Federated, Password, ServicePrincipal};
use super::entra::certificate::Certificate;
use super::foundry::auth::bearer;
use super::state::Emulator;
use super::util::{iso_timestamp, random_alnum, uuid};

const AUDIENCES: &[&str] = &[
    "https://graph.microsoft.com",
    "https://graph.microsoft.com/",
];

/// Graph's routes, merged into the emulator's router.
pub(crate) fn routes() -> axum::Router<Arc<Emulator>> {
    axum::Router::new()
        .route(
            "/v1.0/applications",
            post(create_application).get(list_applications),
        )
        .route(
            "/v1.0/applications/{id}",
            get(get_application).patch(patch_application),
        )
        .route("/v1.0/applications/{id}/addPassword", post(add_password))
        .route(
            "/v1.0/applications/{id}/addKey",
            post(super::graph_keys::add_key),
        )
        .route(
            "/v1.0/applications/{id}/federatedIdentityCredentials",
            post(add_federated).get(list_federated),
        )
        .route(
            "/v1.0/servicePrincipals",
            post(create_service_principal).get(list_service_principals),
        )
}

/// A Graph refusal; answered as `{"error":{"code","message","innerError":{…}}}`.
#[derive(Debug)]
pub(crate) struct GraphError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for GraphError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message, "innerError": {
            "date": iso_timestamp(super::util::since_epoch().as_secs()),
            "request-id": uuid(),
            "client-request-id": uuid(),
        }}});
        (self.status, Json(body)).into_response()
    }
}

fn error(status: StatusCode, code: &'static str, message: &str) -> GraphError {
    GraphError {
        status,
        code,
        message: message.to_owned(),
    }
}

pub(super) fn not_found(id: &str) -> GraphError {
    error(
        StatusCode::NOT_FOUND,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

pub(super) fn bad_request(message: &str) -> GraphError {
    error(StatusCode::BAD_REQUEST, "Request_BadRequest", message)
}

/// Checks the caller's token: signed by the emulator, for Graph, in time.
pub(super) fn authenticate(emu: &Emulator, headers: &HeaderMap) -> Result<(), GraphError> {
    let Some(token) = bearer(headers) else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            "Access token is empty.",
        ));
    };
    emu.keys
        .verify(token, AUDIENCES, emu.now_secs())
        .map(|_| ())
        .map_err(|_| {
            error(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationToken",
                "Access token validation failure. Invalid audience.",
            )
        })
}

/// `$filter=NAME eq 'VALUE'`, the only filter form the emulator reads.
fn filter(query: &HashMap<String, String>) -> Result<Option<(String, String)>, GraphError> {
    let Some(text) = query.get("$filter") else {
        return Ok(None);
    };
    let parsed = text.split_once(" eq ").and_then(|(name, value)| {
        let value = value.trim().strip_prefix('\'')?.strip_suffix('\'')?;
        Some((name.trim().to_owned(), value.replace("''", "'")))
    });
    parsed
        .map(Some)
        .ok_or_else(|| bad_request(&format!("Invalid filter clause: {text}")))
}

fn application_json(app: &Application) -> Value {
    json!({
        "id": app.id,
        "appId": app.app_id,
        "displayName": app.display_name,
        "signInAudience": "AzureADMyOrg",
        "passwordCredentials": app.passwords.iter().map(|p| json!({
            "keyId": p.key_id, "displayName": p.display_name, "endDateTime": p.end,
            "hint": p.value.chars().take(3).collect::<String>(), "secretText": null,
        })).collect::<Vec<_>>(),
        "keyCredentials": app.certificates.iter().map(|(key_id, _)| json!({
            "keyId": key_id, "type": "AsymmetricX509Cert", "usage": "Verify", "key": null,
        })).collect::<Vec<_>>(),
    })
}

fn service_principal_json(sp: &ServicePrincipal) -> Value {
    json!({"id": sp.id, "appId": sp.app_id, "displayName": sp.display_name,
           "servicePrincipalType": "Application", "accountEnabled": true})
}

fn text_field<'a>(body: &'a Value, name: &str) -> Result<&'a str, GraphError> {
    body.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| bad_request(&format!("Property '{name}' is required.")))
}

async fn create_application(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, GraphError> {
    authenticate(&emu, &headers)?;
    let name = text_field(&body, "displayName")?.to_owned();
    let mut dir = emu.directory.lock();
    if !dir.policy.app_registration_allowed {
        return Err(error(
            StatusCode::FORBIDDEN,
            "Authorization_RequestDenied",
            "Insufficient privileges to complete the operation.",
        ));
    }
    let app = Application {
        id: uuid(),
        app_id: uuid(),
        display_name: name,
        passwords: Vec::new(),
        certificates: Vec::new(),
        federated: Vec::new(),
        seeded: false,
    };
    let answer = application_json(&app);
    dir.applications.push(app);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

async fn list_applications(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, GraphError> {
    authenticate(&emu, &headers)?;
    let filter = filter(&query)?;
    let dir = emu.directory.lock();
    let value: Vec<Value> = dir
        .applications
        .iter()
        .filter(|a| match &filter {
            None => true,
            Some((name, v)) if name == "appId" => a.app_id.eq_ignore_ascii_case(v),
            Some((name, v)) if name == "displayName" => a.display_name == *v,
            Some(_) => false,
        })
        .map(application_json)
        .collect();
    Ok(Json(json!({"value": value})).into_response())
}

async fn get_application(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, GraphError> {
    authenticate(&emu, &headers)?;
    let mut dir = emu.directory.lock();
    match dir.application_mut(&id) {
        Some(app) => Ok(Json(application_json(app)).into_response()),
        None => Err(not_found(&id)),
    }
}

/// The certificate of a keyCredential (`key`: base64 DER), or Graph's 400.
pub(super) fn certificate_of(key_credential: &Value) -> Result<Certificate, GraphError> {
    key_credential
        .get("key")
        .and_then(Value::as_str)
        .and_then(|k| STANDARD.decode(k).ok())
        .and_then(|der| Certificate::from_der(der).ok())
        .ok_or_else(|| {
            bad_request("Invalid value specified for property 'key' of resource 'KeyCredential'.")
        })
}

/// `PATCH` with `keyCredentials`: the list replaces the app's certificates (Graph's way to add
/// the first certificate; `addKey` needs a proof signed by an existing one).
async fn patch_application(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Response, GraphError> {
    authenticate(&emu, &headers)?;
    let mut certificates = Vec::new();
    if let Some(keys) = body.get("keyCredentials").and_then(Value::as_array) {
        for key in keys {
            let cert = certificate_of(key)?;
            let key_id = key
                .get("keyId")
                .and_then(Value::as_str)
                .map_or_else(uuid, str::to_owned);
            certificates.push((key_id, cert));
        }
    }
    let mut dir = emu.directory.lock();
    let Some(app) = dir.application_mut(&id) else {
        return Err(not_found(&id));
    };
    if body.get("keyCredentials").is_some() {
        app.certificates = certificates;
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn add_password(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Response, GraphError> {
    authenticate(&emu, &headers)?;
    let credential = body.get("passwordCredential").cloned().unwrap_or_default();
    let display_name = credential
        .get("displayName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let now = emu.now_secs();
    let end = credential
        .get("endDateTime")
        .and_then(Value::as_str)
        .map_or_else(|| iso_timestamp(now + 2 * 365 * 86_400), str::to_owned);
    // Entra's secrets are 40 characters; the first three are the hint.
    let value = format!("{}~{}", random_alnum(3), random_alnum(36));
    let password = Password {
        key_id: uuid(),
        value: value.clone(),
        display_name,
        end,
    };
    let answer = json!({
        "customKeyIdentifier": null,
        "displayName": password.display_name,
        "endDateTime": password.end,
        "hint": &value[..3],
        "keyId": password.key_id,
        "secretText": value,
        "startDateTime": iso_timestamp(now),
    });
    let mut dir = emu.directory.lock();
    let Some(app) = dir.application_mut(&id) else {
        return Err(not_found(&id));
    };
    app.passwords.push(password);
    Ok(Json(answer).into_response())
}

fn federated_json(f: &Federated) -> Value {
    json!({"id": f.id, "name": f.name, "issuer": f.spec.issuer, "subject": f.spec.subject,
           "audiences": [f.spec.audience], "description": null})
}

async fn add_federated(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Result<Response, GraphError> {
    authenticate(&emu, &headers)?;
    let fields = (|| {
        Ok::<_, GraphError>((
            text_field(&body, "name")?.to_owned(),
            text_field(&body, "issuer")?.to_owned(),
            text_field(&body, "subject")?.to_owned(),
        ))
    })();
    let (name, issuer, subject) = fields?;
    let audience = body
        .get("audiences")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or(super::identities::FEDERATED_AUDIENCE)
        .to_owned();
    let mut dir = emu.directory.lock();
    let Some(app) = dir.application_mut(&id) else {
        return Err(not_found(&id));
    };
    if app.federated.iter().any(|f| f.name == name) {
        return Err(error(
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue",
            "FederatedIdentityCredential with name already exists.",
        ));
    }
    let federated = Federated {
        id: uuid(),
        name,
        spec: FederatedCredentialSpec {
            issuer,
            subject,
            audience,
        },
    };
    let answer = federated_json(&federated);
    app.federated.push(federated);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

async fn list_federated(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, GraphError> {
    authenticate(&emu, &headers)?;
    let mut dir = emu.directory.lock();
    match dir.application_mut(&id) {
        Some(app) => {
            let value: Vec<Value> = app.federated.iter().map(federated_json).collect();
            Ok(Json(json!({"value": value})).into_response())
        }
        None => Err(not_found(&id)),
    }
}

async fn create_service_principal(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Result<Response, GraphError> {
    authenticate(&emu, &headers)?;
    let app_id = text_field(&body, "appId")?.to_owned();
    let mut dir = emu.directory.lock();
    let Some(display_name) = dir
        .application_by_app_id(&app_id)
        .map(|a| a.display_name.clone())
    else {
        return Err(bad_request(&format!(
            "The appId '{app_id}' of the service principal does not reference a valid application object."
        )));
    };
    if dir.service_principal_of(&app_id).is_some() {
        return Err(error(
            StatusCode::CONFLICT,
            "Request_MultipleObjectsWithSameKeyValue",
            "The service principal cannot be created, updated, or restored because the service principal name is already in use.",
        ));
    }
    let sp = ServicePrincipal {
        id: uuid(),
        app_id,
        display_name,
        created: Instant::now(),
        seeded: false,
    };
    let answer = service_principal_json(&sp);
    dir.service_principals.push(sp);
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

async fn list_service_principals(
    State(emu): State<Arc<Emulator>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, GraphError> {
    authenticate(&emu, &headers)?;
    let filter = filter(&query)?;
    let dir = emu.directory.lock();
    let value: Vec<Value> = dir
        .service_principals
        .iter()
        .filter(|sp| match &filter {
            None => true,
            Some((name, v)) if name == "appId" => sp.app_id.eq_ignore_ascii_case(v),
            Some((name, v)) if name == "id" => sp.id.eq_ignore_ascii_case(v),
            Some(_) => false,
        })
        .map(service_principal_json)
        .collect();
    Ok(Json(json!({"value": value})).into_response())
}
