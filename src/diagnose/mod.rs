//! Turning refusals into explanations: a stable code, the cause, fix steps, and the
//! identity seen in the proxy's token.
//!
//! Three sources of refusal: the upstream (Azure OpenAI / Foundry), Entra ID (refusing the
//! credential, or unreachable) and the proxy itself. All texts live in [`catalog`];
//! this module decides which entry applies and fills in the details.

pub mod catalog;
mod code;

pub use code::RefusalCode;

use http::StatusCode;
use serde_json::Value;
use tokio::time::Instant;

use crate::claims::{Identity, TokenClaims};
use crate::config::Config;
use crate::credential::{CredentialError, EntraError};
use crate::error::{ApiError, UpstreamAnswer};
use crate::token::{RefreshFailure, Unusable};
use catalog::Vars;

/// A refusal soon after start may be a role assignment that has not propagated yet.
const RECENT_START: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// What the diagnosis needs to know about the configuration.
#[derive(Debug, Clone)]
pub struct DiagnosisContext {
    /// `AZURE_TENANT_ID` as configured.
    pub tenant_id: String,
    /// `AZURE_CLIENT_ID` as configured.
    pub client_id: String,
    /// The scope requested.
    pub scope: String,
    /// The endpoint's host, e.g. `contoso.openai.azure.com`.
    pub endpoint_host: String,
    /// The Entra authority, for messages.
    pub authority: String,
    /// The API style's name.
    pub api: &'static str,
    /// The api-version sent, if any.
    pub api_version: Option<String>,
    /// When the proxy started (for the "role assigned minutes ago" hint); `None` for a
    /// one-off diagnosis such as `check`, where the hint always applies.
    pub started: Option<Instant>,
}

/// What the diagnosis knows about the request that was refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestFacts<'a> {
    /// The body's `model`, when known.
    pub model: Option<&'a str>,
    /// The api-version the caller's query named, when it named one (it is the one Azure saw).
    pub api_version: Option<&'a str>,
}

impl DiagnosisContext {
    /// Reads what it needs from the configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            tenant_id: config
                .tenant_id
                .clone()
                .unwrap_or_else(|| "(the credential's tenant)".to_owned()),
            client_id: config
                .client_id
                .clone()
                .unwrap_or_else(|| "(the credential's identity)".to_owned()),
            scope: config.scope.clone(),
            endpoint_host: config
                .endpoint
                .host_str()
                .unwrap_or_default()
                .to_ascii_lowercase(),
            authority: config
                .authority_host
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
            api: config.api.as_str(),
            api_version: config
                .api_version
                .clone()
                .or_else(|| config.api.default_api_version().map(str::to_owned)),
            started: Some(Instant::now()),
        }
    }

    /// The same context for a one-off diagnosis (`check`).
    pub fn one_off(mut self) -> Self {
        self.started = None;
        self
    }

    /// The resource name: the first label of an Azure endpoint host; a placeholder for IP
    /// addresses and local hosts (the emulator), which carry no resource name.
    pub fn resource_name(&self) -> &str {
        let host = self.endpoint_host.as_str();
        let is_named = host.contains('.')
            && host.parse::<std::net::IpAddr>().is_err()
            && !host.starts_with('[');
        match host.split('.').next() {
            Some(label) if is_named && !label.is_empty() => label,
            _ => "<resource>",
        }
    }

    /// The audiences this endpoint accepts, by cloud, kind and style (docs/azure-facts.md §5,
    /// §7): a project endpoint only `https://ai.azure.com`; a resource's own endpoints both
    /// that and Cognitive Services (documented for the v1 surface, assumed for the classic one).
    pub fn expected_audiences(&self) -> &'static [&'static str] {
        let host = self.endpoint_host.as_str();
        if self.api == crate::upstream::ApiStyle::Project.as_str() {
            &["https://ai.azure.com"]
        } else if host.ends_with(".azure.us") {
            &["https://cognitiveservices.azure.us"]
        } else if host.ends_with(".azure.cn") {
            &["https://cognitiveservices.azure.cn"]
        } else if host.ends_with(".models.ai.azure.com")
            || host.ends_with(".inference.ai.azure.com")
        {
            &[
                "https://cognitiveservices.azure.com",
                "https://ml.azure.com",
            ]
        } else {
            &[
                "https://cognitiveservices.azure.com",
                "https://ai.azure.com",
            ]
        }
    }

    /// The variables every template may use.
    pub fn vars(&self) -> Vars {
        Vars::new()
            .set("client_id", self.client_id.clone())
            .set("tenant_id", self.tenant_id.clone())
            .set("scope", self.scope.clone())
            .set("endpoint_host", self.endpoint_host.clone())
            .set("resource", self.resource_name().to_owned())
            .set("authority", self.authority.clone())
            .set("api", self.api)
            .set(
                "api_version",
                self.api_version
                    .clone()
                    .unwrap_or_else(|| "none".to_owned()),
            )
            .set("expected_audience", self.expected_audiences().join(" or "))
            .set(
                "expected_scope",
                format!("{}/.default", self.expected_audiences()[0]),
            )
    }

    fn recent_hint(&self) -> &'static str {
        if self.started.is_none_or(|at| at.elapsed() < RECENT_START) {
            " If the role was assigned in the last 10 minutes, it may simply not have reached Azure yet."
        } else {
            ""
        }
    }
}

/// Builds the answer for catalog entry `code`, with `status` (Azure's own, when it answered).
pub fn explain(code: RefusalCode, status: StatusCode, vars: &Vars) -> ApiError {
    let entry = catalog::entry(code);
    ApiError::new(
        status,
        kind_for(status),
        entry.code,
        vars.render(entry.cause),
    )
    .with_fix(entry.fix.iter().map(|step| vars.render(step)))
}

/// One of the proxy's own refusals, with its catalog status.
pub fn proxy_refusal(code: RefusalCode, vars: &Vars) -> ApiError {
    let status =
        StatusCode::from_u16(catalog::entry(code).status).unwrap_or(StatusCode::BAD_REQUEST);
    explain(code, status, vars)
}

fn kind_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 | 400 | 422 => "invalid_request_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

/// True for the statuses whose small bodies are read to look for a known refusal.
pub fn worth_reading(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 401 | 403 | 404 | 422 | 429)
}

/// Explains an upstream refusal. `None` means the answer is not one the catalog knows and
/// is not an authentication refusal: it passes through unchanged (429, content filter, …).
pub fn upstream_refusal(
    ctx: &DiagnosisContext,
    status: StatusCode,
    body: &[u8],
    claims: Option<&TokenClaims>,
    request: RequestFacts<'_>,
) -> Option<ApiError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let text = |pointer: &str| {
        json.as_ref()
            .and_then(|j| j.pointer(pointer))
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let error_code = text("/error/code");
    let message = match text("/error/message") {
        "" => text("/message"),
        found => found,
    };
    let mut vars = ctx
        .vars()
        .set("status", status.as_u16().to_string())
        .set(
            "azure_message",
            if message.is_empty() {
                "no explanation given".to_owned()
            } else {
                message.to_owned()
            },
        )
        .maybe("deployment", request.model)
        .maybe("api_version", request.api_version)
        .set(
            "version_fix",
            if request.api_version.is_some() {
                "Set the api-version your client sends (e.g. AzureOpenAI(api_version=...), OPENAI_API_VERSION) to a current one"
            } else {
                "Set FOUNDRY_API_VERSION to a current one"
            },
        )
        .maybe(
            "client_id",
            claims.and_then(TokenClaims::app_id).map(str::to_owned),
        )
        .maybe("tenant_id", claims.and_then(|c| c.tid.clone()))
        .maybe("object_id", claims.and_then(|c| c.oid.clone()));

    let code: RefusalCode = match (status.as_u16(), error_code) {
        (401 | 403, "PermissionDenied") => {
            if let Some(oid) = between(message, "principal `", "`") {
                vars = vars.set("object_id", oid);
            }
            let action = between(message, "data action `", "`");
            vars = vars
                .set(
                    "lacks",
                    action
                        .map(|a| format!(" (it lacks `{a}`)"))
                        .unwrap_or_default(),
                )
                .set("recent", ctx.recent_hint());
            if action.is_some_and(|a| a.contains("/responses/")) {
                RefusalCode::MissingResponsesPermission
            } else if action.is_some_and(|a| a.contains("/AIServices/agents/")) {
                RefusalCode::MissingProjectPermission
            } else {
                RefusalCode::MissingRoleAssignment
            }
        }
        (401, _) if json.as_ref().is_some_and(|j| j.get("statusCode").is_some()) => {
            let (code, more) = bad_token(ctx, claims, message);
            vars = more
                .into_iter()
                .fold(vars, |v, (name, value)| v.set(name, value));
            code
        }
        (400 | 401, c) if c.starts_with("Tenant provided in token does not match") => {
            vars = vars.set(
                "token_tenant",
                claims
                    .and_then(|c| c.tid.clone())
                    .unwrap_or_else(|| "(unknown)".into()),
            );
            RefusalCode::TokenWrongTenant
        }
        (403, "AuthenticationTypeDisabled") => RefusalCode::KeyAuthDisabled,
        (401, _) if message.starts_with("Access denied due to invalid subscription key") => {
            RefusalCode::ApiKeyExpected
        }
        (403, _) if message.contains("Virtual Network/Firewall rules") => RefusalCode::NetworkRules,
        (403, _)
            if message.contains("approved private endpoint")
                || message.contains("A Virtual Network is configured") =>
        {
            RefusalCode::PrivateEndpointRequired
        }
        (401 | 403, _) => RefusalCode::UpstreamRefused,
        (400, _) if message.contains("custom subdomain for token authentication") => {
            RefusalCode::CustomSubdomainRequired
        }
        (400, _) if message == "API version not supported" => RefusalCode::ApiVersionNotSupported,
        (400, _) if message.contains("is enabled only for api versions") => {
            RefusalCode::ApiVersionTooOld
        }
        (404, "DeploymentNotFound") => RefusalCode::DeploymentNotFound,
        (404, "api_not_supported") => RefusalCode::ApiNotSupported,
        // Two kinds of 429 (docs/azure-facts.md §7): Azure's capacity, or the deployment's quota.
        (429, _) if message.contains("high demand") => RefusalCode::AzureCapacityExceeded,
        (429, _) if message.to_ascii_lowercase().contains("rate limit") => {
            RefusalCode::DeploymentQuotaExceeded
        }
        (404, "unknown_model") => RefusalCode::UnknownModel,
        (404, "404") if message == "Resource not found" => RefusalCode::ResourceNotFound,
        (422, _) if text("/code") == "parameter_not_supported" => {
            let location = json
                .as_ref()
                .and_then(|j| j.pointer("/detail/loc"))
                .map(Value::to_string)
                .unwrap_or_default();
            vars = vars.set(
                "azure_message",
                format!("{message} {location}").trim().to_owned(),
            );
            RefusalCode::ParameterNotSupported
        }
        _ => return None,
    };
    let mut explained = explain(code, status, &vars);
    explained.upstream = Some(UpstreamAnswer::new(status.as_u16(), body));
    explained.identity = claims.map(TokenClaims::identity);
    Some(explained)
}

/// The `{"statusCode":401,...}` refusal: expiry, audience and tenant look the same to Azure,
/// so the proxy reads its own token to say which it is.
fn bad_token(
    ctx: &DiagnosisContext,
    claims: Option<&TokenClaims>,
    azure_message: &str,
) -> (RefusalCode, Vec<(&'static str, String)>) {
    // Azure names the audiences it accepts ("audience is incorrect (A or B)"): its own word
    // beats the guess from the host name.
    let named: Vec<&str> = between(azure_message, "audience is incorrect (", ")")
        .map(|list| {
            list.split(" or ")
                .map(|a| a.trim().trim_end_matches('/'))
                .filter(|a| !a.is_empty())
                .collect()
        })
        .unwrap_or_default();
    // A project endpoint takes only its own audience, whatever the resource's 401 text lists
    // (docs/azure-facts.md §7).
    let project = ctx.api == crate::upstream::ApiStyle::Project.as_str();
    let accepted: Vec<&str> = if named.is_empty() || project {
        ctx.expected_audiences().to_vec()
    } else {
        named
    };
    let audience = claims
        .and_then(|c| c.aud.as_deref())
        .map(|a| a.trim_end_matches('/'));
    let now_unix = crate::clock::unix_now_signed();
    let outside_claims = claims.is_some_and(|c| {
        c.exp.is_some_and(|exp| exp <= now_unix) || c.nbf.is_some_and(|nbf| nbf > now_unix)
    });
    if outside_claims {
        let expires = claims
            .and_then(|c| c.exp)
            .and_then(crate::claims::format_unix)
            .unwrap_or_else(|| "unknown".into());
        return (RefusalCode::TokenExpired, vec![("expires_at", expires)]);
    }
    if let Some(aud) = audience.filter(|aud| !accepted.contains(aud)) {
        return (
            RefusalCode::TokenWrongAudience,
            vec![
                ("audience", aud.to_owned()),
                ("expected_audience", accepted.join(" or ")),
                ("expected_scope", format!("{}/.default", accepted[0])),
            ],
        );
    }
    if let Some(tid) = claims
        .and_then(|c| c.tid.as_deref())
        .filter(|tid| looks_like_guid(&ctx.tenant_id) && !tid.eq_ignore_ascii_case(&ctx.tenant_id))
    {
        return (
            RefusalCode::TokenWrongTenant,
            vec![("token_tenant", tid.to_owned())],
        );
    }
    (RefusalCode::TokenRejected, Vec::new())
}

/// The answer when no valid token can be sent, for each reason.
pub fn no_token(ctx: &DiagnosisContext, why: &Unusable) -> ApiError {
    let mut error = match why {
        Unusable::Starting => proxy_refusal(RefusalCode::TokenPending, &ctx.vars()),
        Unusable::Expired => proxy_refusal(RefusalCode::TokenRenewalPending, &ctx.vars()),
        Unusable::Failed(failure) => return credential_failure(ctx, failure),
    };
    error.retry_after = Some(1);
    error
}

/// Explains why no token is available: Entra refused the credential (401), or Entra is
/// unreachable or failing (503 with `retry-after`).
pub fn credential_failure(ctx: &DiagnosisContext, failure: &RefreshFailure) -> ApiError {
    let retry_after = failure
        .next_attempt
        .saturating_duration_since(Instant::now())
        .as_secs()
        .max(1);
    credential_error(ctx, &failure.error, retry_after)
}

/// Explains a credential error: a refusal is 401 with its catalog code; a transient failure
/// is 503 with `retry-after`.
pub fn credential_error(
    ctx: &DiagnosisContext,
    error: &CredentialError,
    retry_after: u64,
) -> ApiError {
    match error {
        CredentialError::Rejected(entra) if !error.is_transient() => entra_refusal(ctx, entra),
        CredentialError::Source {
            code,
            detail,
            transient,
        } => {
            let vars = ctx.vars().set("detail", detail.clone());
            let status = if *transient {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::UNAUTHORIZED
            };
            let mut explained = explain(*code, status, &vars);
            explained.retry_after = transient.then_some(retry_after);
            explained
        }
        other => {
            let vars = ctx.vars().set("detail", other.to_string());
            let mut explained = explain(
                RefusalCode::EntraUnavailable,
                StatusCode::SERVICE_UNAVAILABLE,
                &vars,
            );
            explained.retry_after = Some(retry_after);
            if let CredentialError::Rejected(entra) = other {
                explained.upstream = Some(entra_answer(entra));
            }
            explained
        }
    }
}

/// The catalog code for an AADSTS number.
pub fn entra_code(aadsts: Option<u64>) -> RefusalCode {
    match aadsts {
        Some(7_000_215) => RefusalCode::InvalidClientSecret,
        Some(7_000_222) => RefusalCode::ClientSecretExpired,
        Some(700_016) => RefusalCode::UnknownClientId,
        Some(90_002) => RefusalCode::UnknownTenant,
        Some(70_011) => RefusalCode::InvalidScope,
        Some(500_011) => RefusalCode::UnknownResource,
        Some(700_022) => RefusalCode::ScopeMultipleResources,
        Some(7_000_218) => RefusalCode::MissingClientCredential,
        Some(700_027) => RefusalCode::CertificateNotRegistered,
        Some(700_024) => RefusalCode::AssertionTimeInvalid,
        Some(70_021) => RefusalCode::FederatedCredentialMismatch,
        Some(900_144) => RefusalCode::MissingParameter,
        Some(9_001_023) => RefusalCode::TenantSpecificEndpointRequired,
        _ => RefusalCode::EntraRefused,
    }
}

/// Explains an Entra refusal of the credential (always 401 to the caller).
pub fn entra_refusal(ctx: &DiagnosisContext, entra: &EntraError) -> ApiError {
    let entra_message = format!("{} ({})", entra.description, entra.error);
    let vars = ctx.vars().set("entra_message", entra_message);
    let mut error = explain(entra_code(entra.code), StatusCode::UNAUTHORIZED, &vars);
    error.upstream = Some(entra_answer(entra));
    error.identity = Some(Identity {
        tenant: Some(ctx.tenant_id.clone()),
        app_id: Some(ctx.client_id.clone()),
        ..Identity::default()
    });
    error
}

fn entra_answer(entra: &EntraError) -> UpstreamAnswer {
    UpstreamAnswer {
        status: entra.status,
        body: serde_json::json!({
            "error": entra.error,
            "error_description": entra.description,
            "error_codes": entra.code.map(|c| vec![c]).unwrap_or_default(),
            "trace_id": entra.trace_id,
            "correlation_id": entra.correlation_id,
        }),
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// True for a GUID in its usual 8-4-4-4-12 form.
pub fn looks_like_guid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> DiagnosisContext {
        DiagnosisContext {
            tenant_id: "11111111-1111-1111-1111-111111111111".into(),
            client_id: "22222222-2222-2222-2222-222222222222".into(),
            scope: "https://cognitiveservices.azure.com/.default".into(),
            endpoint_host: "contoso.openai.azure.com".into(),
            authority: "https://login.microsoftonline.com".into(),
            api: "openai-v1",
            api_version: None,
            started: Some(Instant::now()),
        }
    }

    fn refusal(status: u16, body: &str) -> Option<ApiError> {
        let status = StatusCode::from_u16(status).expect("status");
        upstream_refusal(
            &ctx(),
            status,
            body.as_bytes(),
            None,
            RequestFacts {
                model: Some("gpt-x"),
                api_version: None,
            },
        )
    }

    /// PermissionDenied names the roles, the portal steps and the principal.
    #[test]
    fn permission_denied_explained() {
        let error = refusal(401, r#"{"error":{"code":"PermissionDenied","message":"The principal `abc-oid` lacks the required data action `Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action` to perform `POST /openai/deployments/{deployment-id}/chat/completions` operation."}}"#).expect("explained");
        assert_eq!(error.code, "missing_role_assignment");
        assert!(
            error.message.contains("abc-oid")
                && error.message.contains("Azure AI Developer")
                && error.message.contains("Foundry User")
        );
        assert!(
            error.message.contains("assigned in the last 10 minutes"),
            "recent start hint: {}",
            error.message
        );
        assert!(
            error
                .fix
                .iter()
                .any(|s| s.contains("Access control (IAM)") && s.contains("'contoso'"))
        );
        assert!(error.fix.iter().any(|s| s.contains("No API permissions")));
        assert!(
            error
                .fix
                .iter()
                .any(|s| s.contains("--assignee-object-id abc-oid"))
        );
        let responses = refusal(401, r#"{"error":{"code":"PermissionDenied","message":"The principal `o` lacks the required data action `Microsoft.CognitiveServices/accounts/OpenAI/responses/write` to perform `POST /openai/v1/responses` operation."}}"#).expect("explained");
        assert_eq!(responses.code, "missing_responses_permission");
    }

    /// Each known Azure body maps to its catalog code and keeps Azure's status.
    #[test]
    fn azure_bodies_classified() {
        let cases = [
            (
                403,
                r#"{"error":{"code":"AuthenticationTypeDisabled","message":"Key based authentication is disabled for this resource."}}"#,
                "key_auth_disabled",
            ),
            (
                403,
                r#"{"error":{"code":"403","message":"Access denied due to Virtual Network/Firewall rules."}}"#,
                "network_rules",
            ),
            (
                403,
                r#"{"error":{"code":"403","message":"Traffic is not from an approved private endpoint."}}"#,
                "private_endpoint_required",
            ),
            (
                400,
                r#"{"error":{"code":"BadRequest","message":"Please provide a custom subdomain for token authentication, otherwise API key is required."}}"#,
                "custom_subdomain_required",
            ),
            (
                400,
                r#"{"error":{"code":"BadRequest","message":"API version not supported"}}"#,
                "api_version_not_supported",
            ),
            (
                400,
                r#"{"error":{"code":"BadRequest","message":"Model gpt-4o is enabled only for api versions 2024-12-01-preview and later"}}"#,
                "api_version_too_old",
            ),
            (
                404,
                r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist."}}"#,
                "deployment_not_found",
            ),
            (
                404,
                r#"{"error":{"code":"404","message": "Resource not found"}}"#,
                "resource_not_found",
            ),
            (
                422,
                r#"{"status":422,"code":"parameter_not_supported","detail":{"loc":["body","response_format"],"input":"json_object"},"message":"One of the parameters contain invalid values."}"#,
                "parameter_not_supported",
            ),
            (
                401,
                r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint."}}"#,
                "api_key_expected",
            ),
            (403, "nope", "upstream_refused"),
        ];
        for (status, body, code) in cases {
            let error = refusal(status, body).unwrap_or_else(|| panic!("{code} not explained"));
            assert_eq!(error.code, code);
            assert_eq!(error.status.as_u16(), status, "{code} keeps Azure's status");
            assert!(
                !error.message.contains('<'),
                "{code}: unfilled placeholder in {}",
                error.message
            );
        }
        let missing = refusal(
            404,
            r#"{"error":{"code":"DeploymentNotFound","message":"x"}}"#,
        )
        .expect("explained");
        assert!(missing.message.contains("'gpt-x'"), "{}", missing.message);
    }

    /// Rate limits, content filters and unknown 400s pass through untouched.
    #[test]
    fn others_pass_through() {
        assert!(refusal(400, r#"{"error":{"code":"content_filter"}}"#).is_none());
        assert!(refusal(429, "{}").is_none());
        assert!(refusal(500, "{}").is_none());
        assert!(refusal(404, r#"{"error":{"code":"Other"}}"#).is_none());
    }

    /// Each audience maps to its cloud and kind.
    #[test]
    fn audiences_by_cloud() {
        let mut c = ctx();
        assert_eq!(
            c.expected_audiences(),
            &[
                "https://cognitiveservices.azure.com",
                "https://ai.azure.com"
            ],
            "a resource's own endpoints take both audiences"
        );
        c.endpoint_host = "x.services.ai.azure.com".into();
        assert!(c.expected_audiences().contains(&"https://ai.azure.com"));
        c.api = "project";
        assert_eq!(c.expected_audiences(), &["https://ai.azure.com"]);
        c.api = "openai-v1";
        c.endpoint_host = "x.openai.azure.us".into();
        assert_eq!(
            c.expected_audiences(),
            &["https://cognitiveservices.azure.us"]
        );
    }

    /// Every AADSTS code of the fact sheet has its own catalog entry.
    #[test]
    fn aadsts_codes_mapped() {
        for code in [
            7_000_215, 7_000_222, 700_016, 90_002, 70_011, 500_011, 700_022, 7_000_218, 700_027,
            700_024, 70_021, 900_144, 9_001_023,
        ] {
            let mapped = entra_code(Some(code));
            assert_ne!(mapped, "entra_refused", "{code}");
            assert_eq!(catalog::entry(mapped).code, mapped);
        }
    }
}
