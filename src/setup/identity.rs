//! The identity `setup` makes or reuses through Microsoft Graph (docs/azure-facts.md §8): the
//! App Registration, its service principal, and one credential (a client secret, a certificate,
//! or a federated credential for workload identity).

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use serde_json::json;

use super::azure::{CallError, Plane, items, text};
use super::refusal::Refusal;
use super::steps::Steps;
use crate::secret::Secret;

/// The audience Entra expects in federated tokens (docs/azure-facts.md §2).
const EXCHANGE_AUDIENCE: &str = "api://AzureADTokenExchange";

/// Which App Registration to use.
#[derive(Debug, Clone)]
pub enum AppChoice {
    /// Find by display name, create when absent.
    Name(String),
    /// An existing app by application (client) id.
    Id(String),
}

/// The App Registration as Graph knows it.
#[derive(Debug, Clone, Serialize)]
pub struct App {
    /// The application object's id (for `addPassword` and friends).
    pub object_id: String,
    /// The application (client) id: `AZURE_CLIENT_ID`.
    pub app_id: String,
    /// Its display name.
    pub display_name: String,
}

fn app_of(value: &serde_json::Value) -> App {
    App {
        object_id: text(value, "/id"),
        app_id: text(value, "/appId"),
        display_name: text(value, "/displayName"),
    }
}

/// Graph's 403 on a write, explained; anything else passed on.
fn graph_refusal(e: CallError, what: &str) -> Refusal {
    match e {
        CallError::Answer(a) if a.status == 403 => Refusal::graph_denied(what, a),
        e => e.refusal(what),
    }
}

/// Finds (or, unless dry-run, creates) the App Registration. `None`: it would be created.
pub async fn application(
    graph: &Plane,
    choice: &AppChoice,
    steps: &mut Steps,
) -> Result<Option<App>, Refusal> {
    let (field, value) = match choice {
        AppChoice::Name(name) => ("displayName", name),
        AppChoice::Id(id) => ("appId", id),
    };
    let filter = format!("{field} eq '{}'", value.replace('\'', "''"));
    let found = items(
        &graph
            .get("/v1.0/applications", &[("$filter", &filter)])
            .await
            .map_err(|e| e.refusal("look up the App Registration"))?,
    );
    match (found.as_slice(), choice) {
        ([one], _) => {
            let app = app_of(one);
            steps.kept(
                "application",
                format!("{} ({})", app.display_name, app.app_id),
            );
            Ok(Some(app))
        }
        ([], AppChoice::Id(id)) => Err(Refusal::new(
            "app_not_found",
            format!("No App Registration with application (client) id {id} is visible to you."),
            &[
                "Check the id (Entra admin center → App registrations → the app → Application (client) ID).",
                "If an administrator made it, ask them to add you as an owner of it; or drop --app-id to let setup create one.",
            ],
        )),
        ([], AppChoice::Name(name)) => {
            if steps.dry_run() {
                steps.planned("application", format!("create App Registration '{name}'"));
                return Ok(None);
            }
            let created = graph
                .send(
                    reqwest::Method::POST,
                    "/v1.0/applications",
                    &[],
                    Some(&json!({"displayName": name, "signInAudience": "AzureADMyOrg"})),
                )
                .await
                .map_err(|e| match e {
                    CallError::Answer(a) if a.status == 403 => Refusal::app_registration_denied(a),
                    e => e.refusal("create the App Registration"),
                })?;
            let app = app_of(&created);
            steps.done("application", format!("created '{name}' ({})", app.app_id));
            Ok(Some(app))
        }
        (many, _) => Err(Refusal::new(
            "app_ambiguous",
            format!(
                "{} App Registrations are named '{value}': {}.",
                many.len(),
                many.iter()
                    .map(|a| text(a, "/appId"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            &["Pass the one to use with --app-id APPLICATION_ID, or pick another --app-name."],
        )),
    }
}

/// Finds (or creates) the app's service principal; returns its object id.
pub async fn service_principal(
    graph: &Plane,
    app: Option<&App>,
    steps: &mut Steps,
) -> Result<Option<String>, Refusal> {
    let Some(app) = app else {
        steps.planned("service principal", "create it for the new app");
        return Ok(None);
    };
    let filter = format!("appId eq '{}'", app.app_id);
    let found = items(
        &graph
            .get("/v1.0/servicePrincipals", &[("$filter", &filter)])
            .await
            .map_err(|e| e.refusal("look up the service principal"))?,
    );
    if let Some(sp) = found.first() {
        let id = text(sp, "/id");
        steps.kept("service principal", format!("object id {id}"));
        return Ok(Some(id));
    }
    if steps.dry_run() {
        steps.planned("service principal", "create it for the app");
        return Ok(None);
    }
    let created = graph
        .send(
            reqwest::Method::POST,
            "/v1.0/servicePrincipals",
            &[],
            Some(&json!({"appId": app.app_id})),
        )
        .await
        .map_err(|e| graph_refusal(e, "create the service principal"))?;
    let id = text(&created, "/id");
    steps.done("service principal", format!("created, object id {id}"));
    Ok(Some(id))
}

/// Adds a client secret valid for `days` days; its value is returned once and never logged.
pub async fn add_secret(graph: &Plane, app: &App, days: u32) -> Result<Secret, Refusal> {
    let end = time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(days));
    let end = end
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let answer = graph
        .send(
            reqwest::Method::POST,
            &format!("/v1.0/applications/{}/addPassword", app.object_id),
            &[],
            Some(&json!({"passwordCredential": {"displayName": "foundry-proxy", "endDateTime": end}})),
        )
        .await
        .map_err(|e| graph_refusal(e, "add a client secret"))?;
    let value = text(&answer, "/secretText");
    if value.is_empty() {
        return Err(Refusal::unreachable(
            "add a client secret",
            "Graph's answer has no secretText",
        ));
    }
    Ok(Secret::new(value))
}

/// Registers the certificate of the PEM file at `path` on the app (replacing its certificate
/// list: Graph's `addKey` needs a proof signed by an existing certificate, so the first one is
/// set with `PATCH keyCredentials`).
pub async fn set_certificate(graph: &Plane, app: &App, path: &Path) -> Result<(), Refusal> {
    let material = crate::credential::certificate::CertificateMaterial::load(path, None)
        .map_err(|e| {
            Refusal::new(
                "certificate_unreadable",
                format!("Cannot read the certificate: {e}"),
                &["Set AZURE_CLIENT_CERTIFICATE_PATH to a PEM file holding the certificate and its private key."],
            )
        })?;
    let Some(leaf) = material.chain.first() else {
        return Err(Refusal::new(
            "certificate_unreadable",
            "The certificate file holds no certificate.",
            &[
                "Set AZURE_CLIENT_CERTIFICATE_PATH to a PEM file holding the certificate and its private key.",
            ],
        ));
    };
    let body = json!({"keyCredentials": [{
        "type": "AsymmetricX509Cert", "usage": "Verify", "key": STANDARD.encode(leaf),
        "displayName": "foundry-proxy",
    }]});
    graph
        .send(
            reqwest::Method::PATCH,
            &format!("/v1.0/applications/{}", app.object_id),
            &[],
            Some(&body),
        )
        .await
        .map_err(|e| graph_refusal(e, "register the certificate"))?;
    Ok(())
}

/// Adds a federated credential for `issuer` and `subject` unless one exists.
pub async fn federated(
    graph: &Plane,
    app: Option<&App>,
    issuer: &str,
    subject: &str,
    steps: &mut Steps,
) -> Result<(), Refusal> {
    let Some(app) = app else {
        steps.planned("credential", format!("federated credential for {subject}"));
        return Ok(());
    };
    let path = format!(
        "/v1.0/applications/{}/federatedIdentityCredentials",
        app.object_id
    );
    let existing = items(
        &graph
            .get(&path, &[])
            .await
            .map_err(|e| e.refusal("list the federated credentials"))?,
    );
    let same = existing
        .iter()
        .any(|f| text(f, "/issuer") == issuer && text(f, "/subject") == subject);
    if same {
        steps.kept("credential", format!("federated credential for {subject}"));
        return Ok(());
    }
    if steps.dry_run() {
        steps.planned("credential", format!("federated credential for {subject}"));
        return Ok(());
    }
    // Names must be unique per app; one per (issuer, subject) pair.
    let name = format!("foundry-proxy-{}", existing.len() + 1);
    let body = json!({"name": name, "issuer": issuer, "subject": subject,
                      "audiences": [EXCHANGE_AUDIENCE]});
    graph
        .send(reqwest::Method::POST, &path, &[], Some(&body))
        .await
        .map_err(|e| graph_refusal(e, "add the federated credential"))?;
    steps.done(
        "credential",
        format!("federated credential for {subject} added"),
    );
    Ok(())
}
