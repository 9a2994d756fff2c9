//! `foundry-proxy setup`: the IAM steps done for the user with their own Azure login — find
//! the resource, create or reuse the App Registration and its service principal, add a
//! credential, assign the role on the resource, write the env file `serve` reads, wait for
//! the role to apply, then run `check` (docs/credentials.md, docs/azure-facts.md §8).
//!
//! - `cloud`: ARM and Graph endpoints and scopes per cloud (`FOUNDRY_PROXY_ARM_ENDPOINT`,
//!   `FOUNDRY_PROXY_GRAPH_ENDPOINT`)
//! - `azure`: the JSON client for both planes; `resource`: finding and vetting the resource
//! - `identity`: app, service principal, secret / certificate / federated credential (Graph);
//!   `credential`: which credential to keep or add
//! - `role`: the role assignment, retried while a new principal replicates
//! - `signin`: the operator's token (Azure CLI, or the `FOUNDRY_CREDENTIAL` credential)
//! - `envfile`: the mode-0600 env file; `wait`: `check` until the identity works
//! - `steps`, `refusal`, `report`: what ran and what remains, why it stopped, the output

pub mod azure;
pub mod cli;
pub mod cloud;
mod credential;
pub mod envfile;
pub mod identity;
pub mod refusal;
pub mod report;
pub mod resource;
pub mod role;
pub mod signin;
pub mod steps;
pub mod wait;

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{ConfigError, Environment};
use crate::secret::Secret;

use azure::Plane;
use identity::{App, AppChoice};
use refusal::Refusal;
use resource::Resource;
use steps::Steps;

/// How long the propagation wait lasts at most (role assignments: up to ten minutes).
pub const WAIT_LIMIT: Duration = Duration::from_secs(600);

/// Which credential the App Registration gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// A client secret, written to the env file.
    Secret,
    /// The certificate in `AZURE_CLIENT_CERTIFICATE_PATH`.
    Certificate,
    /// A federated credential for workload identity (`--issuer`, `--subject`).
    Federated,
}

/// Whose role it is.
#[derive(Debug, Clone)]
pub enum Principal {
    /// An App Registration found or made by setup.
    App(AppChoice),
    /// An existing principal by object id: only the role is assigned.
    Assignee(String),
}

/// What `setup` was asked to do, validated.
#[derive(Debug, Clone)]
pub struct SetupOptions {
    /// The resource's name or ARM id.
    pub resource: String,
    /// The app, or an assignee.
    pub principal: Principal,
    /// `(display name, role definition id)`.
    pub role: (&'static str, &'static str),
    /// The credential to add.
    pub credential: CredentialKind,
    /// For federated credentials: the external issuer and subject.
    pub federation: Option<(String, String)>,
    /// A certificate PEM (cert and key), for `--credential certificate`.
    pub certificate: Option<PathBuf>,
    /// Days a new client secret lives.
    pub secret_days: u32,
    /// Where the env file goes.
    pub env_file: PathBuf,
    /// Plan only.
    pub dry_run: bool,
    /// How long to wait for the identity to work.
    pub wait_limit: Duration,
}

/// What `setup` did, found, and left to do.
#[derive(Debug)]
pub struct Outcome {
    /// Plan only.
    pub dry_run: bool,
    /// Every step, in order.
    pub steps: Steps,
    /// Why it stopped, if it did.
    pub refusal: Option<Refusal>,
    /// The resource, once found.
    pub resource: Option<Resource>,
    /// The app, once found or made.
    pub app: Option<App>,
    /// The object id the role is assigned to.
    pub principal_id: Option<String>,
    /// A secret added in this run: shown once, then only in the env file.
    pub new_secret: Option<Secret>,
    /// The env file, once written or found right.
    pub env_file: Option<PathBuf>,
    /// The last `check`, when it ran.
    pub check: Option<crate::check::Report>,
    /// The command to run next.
    pub next: Option<String>,
}

impl Outcome {
    /// 0 when everything is done and `check` passed (or a dry run planned it), else 1.
    pub fn exit_code(&self) -> u8 {
        let checked = self.check.as_ref().is_none_or(|r| r.ok);
        u8::from(self.refusal.is_some() || !checked)
    }
}

/// Step names in order, for the "remaining" list after a failure.
const ORDER: &[&str] = &[
    "sign-in",
    "resource",
    "application",
    "service principal",
    "credential",
    "role",
    "env file",
    "propagation",
];

fn after(step: &str) -> Vec<&'static str> {
    ORDER
        .iter()
        .skip_while(|s| **s != step)
        .skip(1)
        .copied()
        .collect()
}

/// Runs setup. `env` supplies `AZURE_AUTHORITY_HOST`, `AZURE_TENANT_ID`, the endpoint
/// overrides and `SSL_CERT_FILE`; `az` is the Azure CLI program.
pub async fn run(
    options: &SetupOptions,
    env: &dyn Environment,
    az: &std::path::Path,
) -> Result<Outcome, ConfigError> {
    let cloud = cloud::Cloud::from_env(env)?;
    let extra_ca = env.var("SSL_CERT_FILE").map(PathBuf::from);
    let mut outcome = Outcome {
        dry_run: options.dry_run,
        steps: Steps::new(options.dry_run),
        refusal: None,
        resource: None,
        app: None,
        principal_id: None,
        new_secret: None,
        env_file: None,
        check: None,
        next: None,
    };
    let mut current = "sign-in";
    if let Err(refusal) = steps(
        options,
        env,
        az,
        &cloud,
        extra_ca,
        &mut outcome,
        &mut current,
    )
    .await
    {
        outcome
            .steps
            .failed(current, refusal.cause.clone(), &after(current));
        outcome.refusal = Some(refusal);
    }
    Ok(outcome)
}

#[allow(clippy::too_many_arguments)]
async fn steps(
    options: &SetupOptions,
    env: &dyn Environment,
    az: &std::path::Path,
    cloud: &cloud::Cloud,
    extra_ca: Option<PathBuf>,
    out: &mut Outcome,
    current: &mut &'static str,
) -> Result<(), Refusal> {
    let tls = crate::tls::client_config(extra_ca.as_deref())
        .map_err(|e| Refusal::unreachable("set up TLS", &format!("SSL_CERT_FILE: {e}")))?;
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .build()
        .map_err(|e| Refusal::unreachable("set up HTTP", &e.to_string()))?;
    let operator = signin::Operator::from_env(env);
    let arm_token = operator.token(env, cloud, az, &cloud.arm_scope).await?;
    let arm = Plane::new(http.clone(), &cloud.arm, arm_token);
    let graph = match &options.principal {
        Principal::App(_) => {
            let graph_token = operator.token(env, cloud, az, &cloud.graph_scope).await?;
            Some(Plane::new(http.clone(), &cloud.graph, graph_token))
        }
        Principal::Assignee(_) => None,
    };
    let planes = if graph.is_some() {
        "Azure Resource Manager, Microsoft Graph"
    } else {
        "Azure Resource Manager"
    };
    out.steps
        .ok("sign-in", format!("{} ({planes})", operator.describe()));

    *current = "resource";
    let resource = resource::find(&arm, &options.resource).await?;
    out.steps.ok(
        "resource",
        format!(
            "{} ({}) at {}; key authentication {}",
            resource.name,
            resource.kind,
            resource.endpoint,
            if resource.key_auth_disabled {
                "disabled"
            } else {
                "enabled"
            }
        ),
    );
    out.resource = Some(resource.clone());

    let mut vars: Vec<(&str, String)> = Vec::new();
    let principal = match (&options.principal, &graph) {
        (Principal::Assignee(object_id), _) => {
            out.steps
                .skipped("application", "--assignee: the identity exists already");
            Some(object_id.clone())
        }
        (Principal::App(choice), Some(graph)) => {
            *current = "application";
            let app = identity::application(graph, choice, &mut out.steps).await?;
            *current = "service principal";
            let sp = identity::service_principal(graph, app.as_ref(), &mut out.steps).await?;
            *current = "credential";
            credential::step(
                options,
                graph,
                app.as_ref(),
                &resource,
                cloud,
                &mut vars,
                out,
            )
            .await?;
            out.app = app;
            sp
        }
        (Principal::App(_), None) => None,
    };
    out.principal_id = principal.clone();

    *current = "role";
    // A service principal made in this run may not have replicated to ARM yet.
    let fresh = out
        .steps
        .list
        .iter()
        .any(|s| s.name == "service principal" && s.status == steps::Status::Done);
    let role_result = role::assign(
        &arm,
        &resource.id,
        principal.as_deref(),
        fresh,
        options.role,
        &mut out.steps,
    )
    .await;
    // A secret added in this run is written down even when the role is refused, so it is not
    // lost and a re-run keeps it.
    if role_result.is_err() && out.new_secret.is_none() {
        return role_result;
    }

    *current = "env file";
    let all = envfile::settings(&resource, out.app.as_ref(), vars, cloud);
    let header = envfile::header(options, &resource);
    if options.dry_run {
        out.steps
            .planned("env file", format!("write {}", options.env_file.display()));
        out.steps.skipped("propagation", "dry run");
        return Ok(());
    }
    let text = envfile::render(&header, &all);
    if envfile::write(&options.env_file, &text)? {
        out.steps.done(
            "env file",
            format!("{} (mode 0600)", options.env_file.display()),
        );
    } else {
        out.steps.kept(
            "env file",
            format!("{} unchanged", options.env_file.display()),
        );
    }
    out.env_file = Some(options.env_file.clone());
    if let Err(refusal) = role_result {
        *current = "role";
        return Err(refusal);
    }
    out.next = Some(format!(
        "set -a; . {}; set +a; foundry-proxy serve",
        options.env_file.display()
    ));

    *current = "propagation";
    let can_sign_in = matches!(options.principal, Principal::App(_))
        && options.credential != CredentialKind::Federated;
    out.check = wait::propagation(can_sign_in, &all, env, options.wait_limit, &mut out.steps).await;
    Ok(())
}
