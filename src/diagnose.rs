//! Turning Azure's refusals into explanations: cause, fix steps, and the identity seen.
//!
//! Two sources of refusal: the upstream (Foundry / Azure OpenAI answering 401/403, or 400 for
//! a token from another tenant) and Entra ID (refusing the credential, or unreachable).

use tokio::time::Instant;

use http::StatusCode;
use serde_json::Value;

use crate::claims::{Identity, TokenClaims};
use crate::config::Config;
use crate::credential::{CredentialError, EntraError};
use crate::error::{ApiError, UpstreamAnswer};
use crate::token::{HeldToken, RefreshFailure, Unusable};

/// The roles that allow inference with an Entra token, as the portal names them.
const INFERENCE_ROLES: &str = "Azure AI User (renamed Foundry User in May 2026), Azure AI Developer, or Cognitive Services OpenAI User";

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
    /// The token endpoint, for messages.
    pub authority: String,
}

impl DiagnosisContext {
    /// Reads what it needs from the configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            tenant_id: config.tenant_id.clone(),
            client_id: config.client_id.clone(),
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
        }
    }

    /// The resource name: the first label of an Azure endpoint host; a placeholder for IP
    /// addresses and local hosts (the emulator), which carry no resource name.
    fn resource_name(&self) -> &str {
        let host = self.endpoint_host.as_str();
        let is_named = host.contains('.')
            && host.parse::<std::net::IpAddr>().is_err()
            && !host.starts_with('[');
        match host.split('.').next() {
            Some(label) if is_named && !label.is_empty() => label,
            _ => "YOUR-RESOURCE",
        }
    }

    /// The audiences this endpoint accepts, by cloud and kind.
    pub fn expected_audiences(&self) -> &'static [&'static str] {
        let host = self.endpoint_host.as_str();
        if host.ends_with(".azure.us") {
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
}

/// Explains an upstream answer of 401/403 (always) or 400 (when it is a token refusal);
/// `None` means the answer is not a refusal this module explains and passes through unchanged.
pub fn upstream_refusal(
    ctx: &DiagnosisContext,
    status: StatusCode,
    body: &[u8],
    token: Option<&HeldToken>,
) -> Option<ApiError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let error_code = json
        .as_ref()
        .and_then(|j| j.pointer("/error/code"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let error_message = json
        .as_ref()
        .and_then(|j| j.pointer("/error/message"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let claims = token.and_then(|t| t.claims.as_ref());
    let identity = claims.map(TokenClaims::identity);

    let explained = if error_code == "PermissionDenied" {
        missing_role(ctx, error_message, claims)
    } else if error_code.starts_with("Tenant provided in token does not match") {
        wrong_tenant(ctx, status, claims)
    } else if json.as_ref().and_then(|j| j.get("statusCode")).is_some()
        && status == StatusCode::UNAUTHORIZED
    {
        bad_token(ctx, token)
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        let mut unknown = ApiError::new(
            status,
            kind_for(status),
            "upstream_refused",
            format!(
                "{} refused the request ({}): {}",
                ctx.endpoint_host,
                status.as_u16(),
                if error_message.is_empty() {
                    "no explanation given"
                } else {
                    error_message
                }
            ),
        );
        unknown.fix = vec![
            format!(
                "Check that app {} (tenant {}) has a data-plane role on the resource: Access control (IAM) → Role assignments.",
                ctx.client_id, ctx.tenant_id
            ),
            "A 403 often comes from the resource's network rules: Networking → Firewalls and virtual networks must allow this machine, or use its private endpoint.".to_owned(),
            "Azure's own answer is under `upstream`.".to_owned(),
        ];
        unknown
    } else {
        return None;
    };
    let mut explained = explained;
    explained.status = status;
    explained.kind = kind_for(status);
    explained.upstream = Some(UpstreamAnswer::new(status.as_u16(), body));
    explained.identity = identity;
    Some(explained)
}

fn kind_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::FORBIDDEN => "permission_error",
        StatusCode::UNAUTHORIZED => "authentication_error",
        _ => "invalid_request_error",
    }
}

fn missing_role(
    ctx: &DiagnosisContext,
    azure_message: &str,
    claims: Option<&TokenClaims>,
) -> ApiError {
    let object_id = between(azure_message, "principal `", "`")
        .map(str::to_owned)
        .or_else(|| claims.and_then(|c| c.oid.clone()))
        .unwrap_or_else(|| "(unknown)".to_owned());
    let data_action = between(azure_message, "data action `", "`");
    let responses_note = if data_action.is_some_and(|a| a.contains("/responses/")) {
        " The Responses API needs its own data action (…/OpenAI/responses/write), which these roles include."
    } else {
        ""
    };
    let action_note = data_action
        .map(|a| format!(" (it lacks `{a}`)"))
        .unwrap_or_default();
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "missing_role_assignment",
        format!(
            "The app's service principal (object id {object_id}) has no role on {host} that allows inference{action_note}. \
             Assign it {INFERENCE_ROLES} in the resource's Access control (IAM); assignments take up to 10 minutes to apply.{responses_note}",
            host = ctx.endpoint_host,
        ),
    )
    .with_fix([
        format!("Azure portal → your resource '{}' → Access control (IAM) → Add → Add role assignment.", ctx.resource_name()),
        format!("Role: {INFERENCE_ROLES}. Owner, Contributor and Cognitive Services Contributor are not enough: they grant no data actions."),
        format!(
            "Members: 'User, group, or service principal' → Select members → search for your App Registration by name or client id {} → Review + assign.",
            ctx.client_id
        ),
        "No API permissions are needed in the App Registration: Azure checks the role assignment at the resource, not claims in the token.".to_owned(),
        "Wait up to 10 minutes for the assignment to apply; the proxy keeps working and needs no restart.".to_owned(),
        format!(
            "Or with the Azure CLI (53ca6127-… is the role id of Azure AI User, now Foundry User): az role assignment create --assignee-object-id {object_id} --assignee-principal-type ServicePrincipal --role 53ca6127-db72-4b80-b1b0-d745d6d5456d --scope $(az cognitiveservices account show --name {} --resource-group YOUR-RESOURCE-GROUP --query id -o tsv)",
            ctx.resource_name()
        ),
    ])
}

fn wrong_tenant(
    ctx: &DiagnosisContext,
    _status: StatusCode,
    claims: Option<&TokenClaims>,
) -> ApiError {
    let token_tenant = claims
        .and_then(|c| c.tid.clone())
        .unwrap_or_else(|| ctx.tenant_id.clone());
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        "token_wrong_tenant",
        format!(
            "The token comes from tenant {token_tenant}, but {} belongs to a different tenant. Use an App Registration in the resource's own tenant.",
            ctx.endpoint_host
        ),
    )
    .with_fix([
        "Find the resource's tenant: Azure portal → your resource → Overview → JSON View, or the directory switcher (top right) while viewing it.".to_owned(),
        "Set AZURE_TENANT_ID to that tenant's Directory (tenant) ID and use an App Registration (AZURE_CLIENT_ID, AZURE_CLIENT_SECRET) from that tenant.".to_owned(),
    ])
}

/// The `{"statusCode":401,...}` refusal: expiry, audience and tenant look the same to Azure,
/// so the proxy reads its own token to say which it is.
fn bad_token(ctx: &DiagnosisContext, token: Option<&HeldToken>) -> ApiError {
    let claims = token.and_then(|t| t.claims.as_ref());
    let audience = claims
        .and_then(|c| c.aud.as_deref())
        .map(|a| a.trim_end_matches('/'));
    let expected = ctx.expected_audiences();
    let now_unix = time::OffsetDateTime::now_utc().unix_timestamp();

    if token.is_some_and(|t| !t.is_valid(Instant::now()))
        || claims
            .and_then(|c| c.exp)
            .is_some_and(|exp| exp <= now_unix)
    {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "token_expired",
            "The proxy's access token had expired when Azure checked it. The proxy renews tokens at half their lifetime; this points to a clock that is wrong on this machine or a refresh that keeps failing.",
        )
        .with_fix([
            "Check the system clock (timedatectl status; enable NTP).",
            "Check /readyz and the proxy's logs for 'token refresh failed'.",
        ]);
    }
    if let Some(aud) = audience.filter(|aud| !expected.contains(aud)) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "token_wrong_audience",
            format!(
                "The proxy's token is for '{aud}', but {} accepts only tokens for {}. Set FOUNDRY_SCOPE to {}/.default (or unset it).",
                ctx.endpoint_host,
                expected.join(" or "),
                expected[0]
            ),
        )
        .with_fix([
            format!("Set FOUNDRY_SCOPE={}/.default, or remove it to use the default.", expected[0]),
            "For US Government use https://cognitiveservices.azure.us/.default; for Azure China, https://cognitiveservices.azure.cn/.default.".to_owned(),
        ]);
    }
    if let Some(tid) = claims
        .and_then(|c| c.tid.as_deref())
        .filter(|tid| looks_like_guid(&ctx.tenant_id) && !tid.eq_ignore_ascii_case(&ctx.tenant_id))
    {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "token_wrong_tenant",
            format!("The token was issued by tenant {tid}, not the configured AZURE_TENANT_ID {}.", ctx.tenant_id),
        )
        .with_fix(["Check AZURE_AUTHORITY_HOST and AZURE_TENANT_ID: the token must come from the resource's own tenant."]);
    }
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        "token_rejected",
        format!(
            "{} rejected the proxy's token although it is unexpired and for the right audience. The endpoint may be in another cloud than the authority {}, or not accept Entra tokens at all.",
            ctx.endpoint_host, ctx.authority
        ),
    )
    .with_fix([
        "Use the resource's custom-subdomain endpoint (https://NAME.openai.azure.com or https://NAME.services.ai.azure.com): regional endpoints accept only API keys.",
        "Make sure AZURE_AUTHORITY_HOST is the authority of the endpoint's cloud.",
    ])
}

/// Explains why no token is available: Entra refused the credential (401), or Entra is
/// unreachable or failing (503 with `retry-after`).
pub fn credential_failure(ctx: &DiagnosisContext, failure: &RefreshFailure) -> ApiError {
    let retry_after = failure
        .next_attempt
        .saturating_duration_since(Instant::now())
        .as_secs()
        .max(1);
    match &failure.error {
        CredentialError::Rejected(entra) if !failure.error.is_transient() => {
            let mut error = entra_refusal(ctx, entra);
            error.upstream = Some(UpstreamAnswer {
                status: entra.status,
                body: serde_json::json!({
                    "error": entra.error,
                    "error_description": entra.description,
                    "error_codes": entra.code.map(|c| vec![c]).unwrap_or_default(),
                    "trace_id": entra.trace_id,
                    "correlation_id": entra.correlation_id,
                }),
            });
            error.identity = Some(Identity {
                tenant: Some(ctx.tenant_id.clone()),
                app_id: Some(ctx.client_id.clone()),
                ..Identity::default()
            });
            error
        }
        other => {
            let mut error = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "entra_unavailable",
                format!(
                    "The proxy holds no valid token and cannot get one from Entra ID at {}: {other}. It retries with backoff; try again in {retry_after} s.",
                    ctx.authority
                ),
            )
            .with_fix([
                "Check network access from this machine to the authority (proxy, firewall, DNS).",
                "If AZURE_AUTHORITY_HOST is set, check it is the right cloud's authority.",
            ]);
            error.retry_after = Some(retry_after);
            error
        }
    }
}

/// The answer when no valid token can be sent, for each reason.
pub fn no_token(ctx: &DiagnosisContext, why: &Unusable) -> ApiError {
    match why {
        Unusable::Starting => starting(),
        Unusable::Expired => expired_pending_refresh(),
        Unusable::Failed(failure) => credential_failure(ctx, failure),
    }
}

/// The answer while the first token is still being fetched.
fn starting() -> ApiError {
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        "token_pending",
        "The proxy is still getting its first token from Entra ID. Try again in a moment.",
    );
    error.retry_after = Some(1);
    error
}

/// The answer when the token expired before its renewal came due (lifetimes under a second).
fn expired_pending_refresh() -> ApiError {
    let mut error = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "api_error",
        "token_expired",
        "The proxy's token expired before its renewal was due; Entra is issuing tokens too short-lived to use. A new one is on its way.",
    );
    error.retry_after = Some(1);
    error
}

/// The catalog of Entra refusals: AADSTS code → stable code, cause, fix.
fn entra_refusal(ctx: &DiagnosisContext, entra: &EntraError) -> ApiError {
    let (code, cause, fix): (&'static str, String, Vec<String>) = match entra.code {
        Some(7_000_215) => (
            "invalid_client_secret",
            format!("Entra ID rejected the client secret of app {} (AADSTS7000215): AZURE_CLIENT_SECRET is not a valid secret value — often the Secret ID was copied instead of the Value.", ctx.client_id),
            vec![
                "App Registration → Certificates & secrets → Client secrets: the Value is shown only right after creation; the Secret ID is not the secret.".to_owned(),
                "If the value is lost, create a new client secret and set AZURE_CLIENT_SECRET to its Value.".to_owned(),
            ],
        ),
        Some(7_000_222) => (
            "client_secret_expired",
            format!("The client secret of app {} has expired (AADSTS7000222).", ctx.client_id),
            vec![
                "App Registration → Certificates & secrets → New client secret; set AZURE_CLIENT_SECRET to its Value.".to_owned(),
                "Delete the expired secret, and note the new expiry date.".to_owned(),
            ],
        ),
        Some(700_016) => (
            "unknown_client_id",
            format!("Entra ID has no application {} in tenant {} (AADSTS700016).", ctx.client_id, ctx.tenant_id),
            vec![
                "Set AZURE_CLIENT_ID to the Application (client) ID on the App Registration's Overview page (not the Object ID).".to_owned(),
                "Set AZURE_TENANT_ID to the Directory (tenant) ID on that same page.".to_owned(),
            ],
        ),
        Some(90_002) => (
            "unknown_tenant",
            format!("Entra ID does not know tenant '{}' at {} (AADSTS90002).", ctx.tenant_id, ctx.authority),
            vec![
                "Set AZURE_TENANT_ID to the Directory (tenant) ID on the App Registration's Overview page.".to_owned(),
                "For US Government set AZURE_AUTHORITY_HOST=https://login.microsoftonline.us; for Azure China, https://login.chinacloudapi.cn.".to_owned(),
            ],
        ),
        Some(70_011) => (
            "invalid_scope",
            format!("Entra ID refused the scope '{}' (AADSTS70011).", ctx.scope),
            vec!["Set FOUNDRY_SCOPE to a resource followed by /.default, e.g. https://cognitiveservices.azure.com/.default, or unset it.".to_owned()],
        ),
        Some(500_011) => (
            "unknown_resource",
            format!("The resource in scope '{}' does not exist in tenant {} (AADSTS500011).", ctx.scope, ctx.tenant_id),
            vec!["Use the scope of your cloud: https://cognitiveservices.azure.com/.default (public), …azure.us (US Government), …azure.cn (China).".to_owned()],
        ),
        Some(700_022) => (
            "scope_multiple_resources",
            format!("The scope '{}' names more than one resource (AADSTS700022).", ctx.scope),
            vec!["Set FOUNDRY_SCOPE to exactly one resource followed by /.default.".to_owned()],
        ),
        Some(7_000_218) => (
            "missing_client_credential",
            "The token request carried no client secret or assertion (AADSTS7000218).".to_owned(),
            vec!["Set AZURE_CLIENT_SECRET to the secret's Value.".to_owned()],
        ),
        Some(900_144) => (
            "missing_parameter",
            format!("Entra ID says a required parameter is missing (AADSTS900144): {}", entra.description),
            vec!["Check AZURE_CLIENT_ID and FOUNDRY_SCOPE are set.".to_owned()],
        ),
        Some(9_001_023) => (
            "tenant_specific_endpoint_required",
            "App-only tokens need a tenant-specific authority, not /common or /consumers (AADSTS9001023).".to_owned(),
            vec!["Set AZURE_TENANT_ID to your Directory (tenant) ID.".to_owned()],
        ),
        _ => (
            "entra_refused",
            format!("Entra ID refused the credential: {} ({}).", entra.description, entra.error),
            vec![format!("Look up the AADSTS code at https://login.microsoftonline.com/error and check AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET for app {}.", ctx.client_id)],
        ),
    };
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "authentication_error",
        code,
        cause,
    )
    .with_fix(fix)
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

fn looks_like_guid(text: &str) -> bool {
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
        }
    }

    /// PermissionDenied names the roles, the portal steps and the principal.
    #[test]
    fn permission_denied_explained() {
        let body = br#"{"error":{"code":"PermissionDenied","message":"The principal `abc-oid` lacks the required data action `Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action` to perform `POST /openai/deployments/{deployment-id}/chat/completions` operation."}}"#;
        let error =
            upstream_refusal(&ctx(), StatusCode::UNAUTHORIZED, body, None).expect("explained");
        assert_eq!(error.code, "missing_role_assignment");
        assert!(
            error.message.contains("abc-oid")
                && error.message.contains("Azure AI Developer")
                && error.message.contains("Foundry User")
        );
        assert!(error.fix.iter().any(|s| s.contains("Access control (IAM)")));
        assert!(error.fix.iter().any(|s| s.contains("No API permissions")));
        assert!(error.fix.iter().any(|s| s.contains("10 minutes")));
    }

    /// Other statuses pass through untouched.
    #[test]
    fn others_pass_through() {
        assert!(
            upstream_refusal(
                &ctx(),
                StatusCode::BAD_REQUEST,
                br#"{"error":{"code":"content_filter"}}"#,
                None
            )
            .is_none()
        );
        assert!(upstream_refusal(&ctx(), StatusCode::TOO_MANY_REQUESTS, b"{}", None).is_none());
        let unknown =
            upstream_refusal(&ctx(), StatusCode::FORBIDDEN, b"nope", None).expect("wrapped");
        assert_eq!(unknown.code, "upstream_refused");
        assert_eq!(
            unknown.upstream.as_ref().expect("body").body,
            Value::String("nope".into())
        );
    }

    /// Each audience maps to its cloud.
    #[test]
    fn audiences_by_cloud() {
        let mut c = ctx();
        assert_eq!(
            c.expected_audiences()[0],
            "https://cognitiveservices.azure.com"
        );
        c.endpoint_host = "x.openai.azure.us".into();
        assert_eq!(
            c.expected_audiences(),
            &["https://cognitiveservices.azure.us"]
        );
    }
}
