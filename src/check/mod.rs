//! `foundry-proxy check`: the permission checklist, walked for real.
//!
//! Each step uses the same code as the proxy (configuration, credential, upstream mapping,
//! diagnosis catalog), so what `check` says is what the proxy would answer.

mod endpoint;
pub mod report;
mod upstreams;

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde::Serialize;

use crate::claims::{Identity, TokenClaims};
use crate::config::CredentialConfig;
use crate::config::credential::SecretSource;
use crate::config::{Config, ConfigError};
use crate::credential::AccessToken;
use crate::diagnose::RefusalCode;
use crate::diagnose::{self, DiagnosisContext, RequestFacts, looks_like_guid};
use crate::error::ApiError;
use crate::upstream::{ApiStyle, Target};

/// Clock difference from Entra's tokens beyond which the check warns.
const CLOCK_SKEW_WARNING_SECS: i64 = 300;
/// Time allowed for the inference call.
const INFERENCE_TIMEOUT: Duration = Duration::from_secs(60);

/// How a step went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// All good.
    Pass,
    /// Works, but something deserves attention.
    Warn,
    /// Broken: the proxy would fail here.
    Fail,
    /// Not run, because an earlier step failed or it does not apply.
    Skip,
}

/// One line of the checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Short name: configuration, entra, token, endpoint, inference.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// One line of what was found.
    pub summary: String,
    /// Further facts, one per line.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// The catalog code (or the setting, for configuration errors) when not passing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Fix steps when not passing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fix: Vec<String>,
}

impl Step {
    fn new(name: &'static str, status: Status, summary: impl Into<String>) -> Self {
        Self {
            name,
            status,
            summary: summary.into(),
            details: Vec::new(),
            code: None,
            fix: Vec::new(),
        }
    }

    fn from_error(name: &'static str, status: Status, error: &ApiError) -> Self {
        Self {
            name,
            status,
            summary: format!("{} ({})", error.message, error.status.as_u16()),
            details: Vec::new(),
            code: Some(error.code.as_str().to_owned()),
            fix: error.fix.clone(),
        }
    }

    fn detail(mut self, line: impl Into<String>) -> Self {
        self.details.push(line.into());
        self
    }
}

/// The whole checklist.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when no step failed.
    pub ok: bool,
    /// The steps in order.
    pub steps: Vec<Step>,
    /// Who the proxy is, as seen in its token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// The fix for the first failure, ready to act on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fix: Vec<String>,
}

impl Report {
    fn finish(steps: Vec<Step>, identity: Option<Identity>) -> Self {
        let failure = steps.iter().find(|s| s.status == Status::Fail);
        let fix = failure.map(|s| s.fix.clone()).unwrap_or_default();
        Self {
            ok: failure.is_none(),
            steps,
            identity,
            fix,
        }
    }

    /// The process exit code: 0 all well, 2 configuration invalid, 1 any other failure.
    pub fn exit_code(&self) -> u8 {
        match self.steps.iter().find(|s| s.status == Status::Fail) {
            None => 0,
            Some(step) if step.name == "configuration" => 2,
            Some(_) => 1,
        }
    }
}

/// What to test beyond the configuration.
#[derive(Debug, Clone, Default)]
pub struct CheckOptions {
    /// A deployment for a one-token chat call; without it the models list is used.
    pub model: Option<String>,
}

/// Runs every step. `config` is the result of loading the configuration.
pub async fn run(config: Result<Config, ConfigError>, options: &CheckOptions) -> Report {
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            let mut step = Step::new("configuration", Status::Fail, error.to_string());
            step.code = Some(error.setting.clone());
            step.fix = vec![error.fix.clone()];
            let mut steps = vec![step];
            steps.extend(
                ["entra", "token", "endpoint", "inference"]
                    .map(|name| Step::new(name, Status::Skip, "not run")),
            );
            return Report::finish(steps, None);
        }
    };
    let ctx = DiagnosisContext::from_config(&config).one_off();
    let target = Target::from_config(&config);
    let mut steps = vec![configuration_step(&config, &target, &ctx)];

    let tls = match crate::tls::client_config(config.extra_ca_file.as_deref()) {
        Ok(tls) => tls,
        Err(e) => {
            steps.push(Step::new(
                "entra",
                Status::Fail,
                format!("SSL_CERT_FILE: {e}"),
            ));
            return Report::finish(steps, None);
        }
    };
    let (entra_step, token) = entra_step(&config, &ctx, Arc::clone(&tls)).await;
    steps.push(entra_step);
    let Some(token) = token else {
        steps.extend(
            ["token", "endpoint", "inference"]
                .map(|name| Step::new(name, Status::Skip, "no token")),
        );
        return Report::finish(steps, None);
    };
    let claims = TokenClaims::decode(token.token.expose());
    steps.push(token_step(&config, &ctx, claims.as_ref(), &token));
    let endpoint_step = endpoint::check(&config.endpoint, &ctx, &tls).await;
    let reachable = endpoint_step.status != Status::Fail;
    steps.push(endpoint_step);
    if reachable {
        steps.push(
            inference_step(
                &target,
                &ctx,
                &token,
                claims.as_ref(),
                options,
                Arc::clone(&tls),
            )
            .await,
        );
    } else {
        steps.push(Step::new("inference", Status::Skip, "endpoint unreachable"));
    }
    steps.extend(upstreams::steps(&config, &token, options, &tls).await);
    Report::finish(steps, claims.as_ref().map(TokenClaims::identity))
}

fn configuration_step(config: &Config, target: &Target, ctx: &DiagnosisContext) -> Step {
    let mut step = Step::new(
        "configuration",
        Status::Pass,
        format!(
            "{} credential, endpoint {} ({} API)",
            config.credential.kind(),
            target.base(),
            target.style()
        ),
    )
    .detail(format!("chosen because {}", config.credential_reason))
    .detail(format!(
        "tenant {}, client id {}",
        config
            .tenant_id
            .as_deref()
            .unwrap_or("(from the credential)"),
        config
            .client_id
            .as_deref()
            .unwrap_or("(from the credential)")
    ))
    .detail(format!(
        "authority {}, scope {}",
        ctx.authority, config.scope
    ));
    if let Some(version) = target.api_version() {
        step = step.detail(format!("api-version {version}"));
    }
    let secret_looks_like_id = matches!(
        &config.credential,
        CredentialConfig::ClientSecret(SecretSource::Value(secret)) if looks_like_guid(secret.expose().trim())
    );
    if secret_looks_like_id {
        step.status = Status::Warn;
        step.summary =
            "AZURE_CLIENT_SECRET looks like a Secret ID (a GUID), not a secret Value".to_owned();
        step.fix =
            vec![diagnose::catalog::entry(RefusalCode::InvalidClientSecret).fix[0].to_owned()];
    }
    step
}

async fn entra_step(
    config: &Config,
    ctx: &DiagnosisContext,
    tls: Arc<rustls::ClientConfig>,
) -> (Step, Option<AccessToken>) {
    let credential = match crate::credential::build(config, tls) {
        Ok(credential) => credential,
        Err(e) => return (Step::new("entra", Status::Fail, e.to_string()), None),
    };
    let source = if config.credential.needs_app() {
        format!(
            "token endpoint {}/{}/oauth2/v2.0/token",
            ctx.authority,
            config.tenant_id.as_deref().unwrap_or_default()
        )
    } else {
        format!("credential {}", credential.kind())
    };
    match credential.get_token().await {
        Ok(token) => {
            let step = Step::new(
                "entra",
                Status::Pass,
                format!(
                    "token acquired by {} for {} (lifetime {} s)",
                    credential.kind(),
                    config.scope,
                    token.expires_in.as_secs()
                ),
            )
            .detail(source);
            (step, Some(token))
        }
        Err(error) => (
            Step::from_error(
                "entra",
                Status::Fail,
                &diagnose::credential_error(ctx, &error, 1),
            ),
            None,
        ),
    }
}

fn token_step(
    config: &Config,
    ctx: &DiagnosisContext,
    claims: Option<&TokenClaims>,
    token: &AccessToken,
) -> Step {
    let Some(claims) = claims else {
        return Step::new(
            "token",
            Status::Warn,
            "the token is not a JWT: its claims cannot be compared",
        );
    };
    let identity = claims.identity();
    let unknown = || "?".to_owned();
    let mut step = Step::new(
        "token",
        Status::Pass,
        format!(
            "principal object id {} (app {}, tenant {})",
            identity.object_id.clone().unwrap_or_else(unknown),
            identity.app_id.clone().unwrap_or_else(unknown),
            identity.tenant.clone().unwrap_or_else(unknown)
        ),
    )
    .detail(format!(
        "audience {}, expires {}",
        identity.audience.clone().unwrap_or_else(unknown),
        identity.expires_at.clone().unwrap_or_else(unknown)
    ));

    let audience = claims.aud.as_deref().map(|a| a.trim_end_matches('/'));
    if let Some(aud) = audience.filter(|aud| !ctx.expected_audiences().contains(aud)) {
        let error = diagnose::explain(
            RefusalCode::TokenWrongAudience,
            StatusCode::UNAUTHORIZED,
            &ctx.vars().set("audience", aud),
        );
        return Step {
            details: step.details,
            ..Step::from_error("token", Status::Fail, &error)
        };
    }
    let configured_tenant = config.tenant_id.as_deref().filter(|t| looks_like_guid(t));
    if let Some(tid) = claims
        .tid
        .as_deref()
        .filter(|tid| configured_tenant.is_some_and(|t| !tid.eq_ignore_ascii_case(t)))
    {
        let error = diagnose::explain(
            RefusalCode::TokenWrongTenant,
            StatusCode::UNAUTHORIZED,
            &ctx.vars().set("token_tenant", tid),
        );
        return Step {
            details: step.details,
            ..Step::from_error("token", Status::Fail, &error)
        };
    }
    let configured_app = config
        .client_id
        .as_deref()
        .filter(|_| config.credential.needs_app());
    if let Some(expected) = configured_app.filter(|c| {
        claims
            .app_id()
            .is_some_and(|app| !app.eq_ignore_ascii_case(c))
    }) {
        step.status = Status::Warn;
        step.summary = format!(
            "the token's app id {} differs from AZURE_CLIENT_ID {expected}",
            claims.app_id().unwrap_or_default()
        );
    }
    let now = crate::clock::unix_now_signed();
    if let Some(issued) = claims.iat.or(claims.nbf) {
        let skew = issued - now;
        if skew.abs() > CLOCK_SKEW_WARNING_SECS {
            step.status = Status::Warn;
            step.summary = format!(
                "this machine's clock differs from Entra's by about {} s",
                -skew
            );
            step.fix = vec!["Fix the system clock (timedatectl status; enable NTP): tokens and client assertions are time-bound.".to_owned()];
        }
    }
    if let Some(exp) = claims.exp {
        let claimed = exp - claims.iat.unwrap_or(now);
        step = step.detail(format!(
            "lifetime {} s (expires_in {} s); the proxy renews at half",
            claimed,
            token.expires_in.as_secs()
        ));
    }
    step
}

async fn inference_step(
    target: &Target,
    ctx: &DiagnosisContext,
    token: &AccessToken,
    claims: Option<&TokenClaims>,
    options: &CheckOptions,
    tls: Arc<rustls::ClientConfig>,
) -> Step {
    let (method, rest, body) = match &options.model {
        Some(model) => (
            reqwest::Method::POST,
            "chat/completions",
            Some(
                serde_json::json!({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}),
            ),
        ),
        None if matches!(target.style(), ApiStyle::OpenAiV1 | ApiStyle::Deployments) => {
            (reqwest::Method::GET, "models", None)
        }
        None => {
            return Step::new(
                "inference",
                Status::Skip,
                "pass --model DEPLOYMENT to test inference on this endpoint",
            );
        }
    };
    let url = match target.url(rest, None, options.model.as_deref()) {
        Ok(url) => url,
        Err(e) => return Step::new("inference", Status::Fail, e.to_string()),
    };
    let client = match reqwest::Client::builder()
        .tls_backend_preconfigured((*tls).clone())
        .timeout(INFERENCE_TIMEOUT)
        .build()
    {
        Ok(client) => client,
        Err(e) => return Step::new("inference", Status::Fail, e.to_string()),
    };
    let mut request = client
        .request(method.clone(), &url)
        .bearer_auth(token.token.expose());
    if let Some(body) = &body {
        request = request.json(body);
    }
    let shown = format!("{method} {}", url.split('?').next().unwrap_or_default());
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            return Step::new(
                "inference",
                Status::Fail,
                format!("{shown}: {}", e.without_url()),
            );
        }
    };
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let request_id = response
        .headers()
        .get("apim-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = response.bytes().await.unwrap_or_default();
    if status.is_success() {
        return Step::new(
            "inference",
            Status::Pass,
            format!("{shown} → {}", status.as_u16()),
        );
    }
    let facts = RequestFacts {
        model: options.model.as_deref(),
        api_version: None,
    };
    let mut step = match diagnose::upstream_refusal(ctx, status, &bytes, claims, facts) {
        Some(error) => Step::from_error("inference", Status::Fail, &error),
        None => {
            let snippet: String = String::from_utf8_lossy(&bytes).chars().take(300).collect();
            Step::new(
                "inference",
                Status::Fail,
                format!("{shown} → {}: {snippet}", status.as_u16()),
            )
        }
    };
    step = step.detail(shown);
    if let Some(id) = request_id {
        step = step.detail(format!("apim-request-id {id}"));
    }
    step
}
