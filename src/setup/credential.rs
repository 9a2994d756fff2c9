//! The credential step: a client secret (kept when the env file's still works for this app),
//! the certificate of `AZURE_CLIENT_CERTIFICATE_PATH`, or a federated credential.

use std::collections::BTreeMap;

use super::azure::Plane;
use super::identity::{self, App};
use super::refusal::Refusal;
use super::resource::Resource;
use super::{CredentialKind, Outcome, SetupOptions, cloud, envfile};
use crate::config::Settings;

/// The credential step: reuse the env file's when it still works for this app, else add one.
pub(super) async fn step(
    options: &SetupOptions,
    graph: &Plane,
    app: Option<&App>,
    resource: &Resource,
    cloud: &cloud::Cloud,
    vars: &mut Vec<(&'static str, String)>,
    out: &mut Outcome,
) -> Result<(), Refusal> {
    let steps = &mut out.steps;
    match options.credential {
        CredentialKind::Federated => {
            let (issuer, subject) = options.federation.clone().unwrap_or_default();
            identity::federated(graph, app, &issuer, &subject, steps).await?;
            Ok(())
        }
        CredentialKind::Secret => {
            let Some(app) = app else {
                steps.planned("credential", "add a client secret");
                return Ok(());
            };
            let previous = envfile::read(&options.env_file);
            let reusable = previous.get("AZURE_CLIENT_ID") == Some(&app.app_id)
                && previous
                    .get("AZURE_CLIENT_SECRET")
                    .is_some_and(|s| !s.is_empty());
            if reusable
                && let Some(secret) = previous.get("AZURE_CLIENT_SECRET")
                && works(&previous, resource, cloud).await
            {
                steps.kept(
                    "credential",
                    format!("client secret in {}", options.env_file.display()),
                );
                vars.push(("AZURE_CLIENT_SECRET", secret.clone()));
                return Ok(());
            }
            if steps.dry_run() {
                steps.planned("credential", "add a client secret");
                return Ok(());
            }
            let secret = identity::add_secret(graph, app, options.secret_days).await?;
            steps.done(
                "credential",
                format!("client secret added (valid {} days)", options.secret_days),
            );
            vars.push(("AZURE_CLIENT_SECRET", secret.expose().to_owned()));
            out.new_secret = Some(secret);
            Ok(())
        }
        CredentialKind::Certificate => {
            let path = options.certificate.clone().unwrap_or_default();
            vars.push(("AZURE_CLIENT_CERTIFICATE_PATH", path.display().to_string()));
            let Some(app) = app else {
                steps.planned(
                    "credential",
                    format!("register the certificate {}", path.display()),
                );
                return Ok(());
            };
            let previous = envfile::read(&options.env_file);
            let same = previous.get("AZURE_CLIENT_ID") == Some(&app.app_id)
                && previous
                    .get("AZURE_CLIENT_CERTIFICATE_PATH")
                    .map(String::as_str)
                    == Some(&*path.display().to_string());
            if same && works(&previous, resource, cloud).await {
                steps.kept("credential", format!("certificate {}", path.display()));
                return Ok(());
            }
            if steps.dry_run() {
                steps.planned(
                    "credential",
                    format!("register the certificate {}", path.display()),
                );
                return Ok(());
            }
            identity::set_certificate(graph, app, &path).await?;
            steps.done(
                "credential",
                format!("certificate {} registered", path.display()),
            );
            Ok(())
        }
    }
}

/// Whether the env file's credential still gets a token from Entra.
async fn works(
    previous: &BTreeMap<String, String>,
    resource: &Resource,
    cloud: &cloud::Cloud,
) -> bool {
    let mut vars = previous.clone();
    vars.entry("FOUNDRY_ENDPOINT".to_owned())
        .or_insert_with(|| resource.endpoint.clone());
    if let Some(authority) = &cloud.authority {
        vars.insert("AZURE_AUTHORITY_HOST".to_owned(), authority.clone());
    }
    let Ok(config) = crate::config::load(None, &vars, Settings::default()) else {
        return false;
    };
    let Ok(tls) = crate::tls::client_config(config.extra_ca_file.as_deref()) else {
        return false;
    };
    match crate::credential::build(&config, tls) {
        Ok(credential) => credential.get_token().await.is_ok(),
        Err(_) => false,
    }
}
