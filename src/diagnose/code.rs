//! The refusal codes: the `code` of every error the proxy answers with (its own refusals and
//! the explanations of Azure's and Entra's), one variant per [catalog](super::catalog) entry.
//! The strings are a contract with callers and scripts: [`RefusalCode::as_str`] is what goes on
//! the wire, and a typo in a variant does not compile.

use std::fmt;

/// A refusal code; [`RefusalCode::as_str`] is its wire form (`missing_role_assignment`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalCode {
    /// `missing_role_assignment`
    MissingRoleAssignment,
    /// `missing_responses_permission`
    MissingResponsesPermission,
    /// `missing_project_permission`
    MissingProjectPermission,
    /// `token_wrong_tenant`
    TokenWrongTenant,
    /// `token_wrong_audience`
    TokenWrongAudience,
    /// `token_expired`
    TokenExpired,
    /// `token_rejected`
    TokenRejected,
    /// `custom_subdomain_required`
    CustomSubdomainRequired,
    /// `key_auth_disabled`
    KeyAuthDisabled,
    /// `api_key_expected`
    ApiKeyExpected,
    /// `network_rules`
    NetworkRules,
    /// `private_endpoint_required`
    PrivateEndpointRequired,
    /// `deployment_not_found`
    DeploymentNotFound,
    /// `api_not_supported`
    ApiNotSupported,
    /// `deployment_quota_exceeded`
    DeploymentQuotaExceeded,
    /// `azure_capacity_exceeded`
    AzureCapacityExceeded,
    /// `unknown_model`
    UnknownModel,
    /// `resource_not_found`
    ResourceNotFound,
    /// `api_version_not_supported`
    ApiVersionNotSupported,
    /// `api_version_too_old`
    ApiVersionTooOld,
    /// `parameter_not_supported`
    ParameterNotSupported,
    /// `upstream_refused`
    UpstreamRefused,
    /// `invalid_client_secret`
    InvalidClientSecret,
    /// `client_secret_expired`
    ClientSecretExpired,
    /// `unknown_client_id`
    UnknownClientId,
    /// `unknown_tenant`
    UnknownTenant,
    /// `invalid_scope`
    InvalidScope,
    /// `unknown_resource`
    UnknownResource,
    /// `scope_multiple_resources`
    ScopeMultipleResources,
    /// `missing_client_credential`
    MissingClientCredential,
    /// `certificate_not_registered`
    CertificateNotRegistered,
    /// `assertion_time_invalid`
    AssertionTimeInvalid,
    /// `federated_credential_mismatch`
    FederatedCredentialMismatch,
    /// `missing_parameter`
    MissingParameter,
    /// `tenant_specific_endpoint_required`
    TenantSpecificEndpointRequired,
    /// `entra_refused`
    EntraRefused,
    /// `entra_unavailable`
    EntraUnavailable,
    /// `secret_file_unreadable`
    SecretFileUnreadable,
    /// `certificate_unreadable`
    CertificateUnreadable,
    /// `federated_token_unreadable`
    FederatedTokenUnreadable,
    /// `managed_identity_unavailable`
    ManagedIdentityUnavailable,
    /// `managed_identity_not_found`
    ManagedIdentityNotFound,
    /// `managed_identity_refused`
    ManagedIdentityRefused,
    /// `azure_cli_missing`
    AzureCliMissing,
    /// `azure_cli_logged_out`
    AzureCliLoggedOut,
    /// `azure_cli_failed`
    AzureCliFailed,
    /// `invalid_api_key`
    InvalidApiKey,
    /// `admin_key_required`
    AdminKeyRequired,
    /// `key_expired`
    KeyExpired,
    /// `model_not_allowed`
    ModelNotAllowed,
    /// `budget_exhausted`
    BudgetExhausted,
    /// `rate_limit_exceeded`
    RateLimitExceeded,
    /// `token_limit_exceeded`
    TokenLimitExceeded,
    /// `redis_unavailable`
    RedisUnavailable,
    /// `token_pending`
    TokenPending,
    /// `token_renewal_pending`
    TokenRenewalPending,
    /// `unknown_path`
    UnknownPath,
    /// `host_not_allowed`
    HostNotAllowed,
    /// `origin_not_allowed`
    OriginNotAllowed,
    /// `invalid_path`
    InvalidPath,
    /// `method_not_allowed`
    MethodNotAllowed,
    /// `websocket_not_supported`
    WebSocketNotSupported,
    /// `missing_model`
    MissingModel,
    /// `invalid_model`
    InvalidModel,
    /// `invalid_json`
    InvalidJson,
    /// `invalid_multipart`
    InvalidMultipart,
    /// `unreadable_body`
    UnreadableBody,
    /// `request_body_timeout`
    RequestBodyTimeout,
    /// `request_too_large`
    RequestTooLarge,
    /// `upstream_unreachable`
    UpstreamUnreachable,
    /// `upstream_timeout`
    UpstreamTimeout,
    /// `upstreams_resting`
    UpstreamsResting,
}

impl RefusalCode {
    /// Every code, in catalog order.
    pub const ALL: [Self; 72] = [
        Self::MissingRoleAssignment,
        Self::MissingResponsesPermission,
        Self::MissingProjectPermission,
        Self::TokenWrongTenant,
        Self::TokenWrongAudience,
        Self::TokenExpired,
        Self::TokenRejected,
        Self::CustomSubdomainRequired,
        Self::KeyAuthDisabled,
        Self::ApiKeyExpected,
        Self::NetworkRules,
        Self::PrivateEndpointRequired,
        Self::DeploymentNotFound,
        Self::ApiNotSupported,
        Self::DeploymentQuotaExceeded,
        Self::AzureCapacityExceeded,
        Self::UnknownModel,
        Self::ResourceNotFound,
        Self::ApiVersionNotSupported,
        Self::ApiVersionTooOld,
        Self::ParameterNotSupported,
        Self::UpstreamRefused,
        Self::InvalidClientSecret,
        Self::ClientSecretExpired,
        Self::UnknownClientId,
        Self::UnknownTenant,
        Self::InvalidScope,
        Self::UnknownResource,
        Self::ScopeMultipleResources,
        Self::MissingClientCredential,
        Self::CertificateNotRegistered,
        Self::AssertionTimeInvalid,
        Self::FederatedCredentialMismatch,
        Self::MissingParameter,
        Self::TenantSpecificEndpointRequired,
        Self::EntraRefused,
        Self::EntraUnavailable,
        Self::SecretFileUnreadable,
        Self::CertificateUnreadable,
        Self::FederatedTokenUnreadable,
        Self::ManagedIdentityUnavailable,
        Self::ManagedIdentityNotFound,
        Self::ManagedIdentityRefused,
        Self::AzureCliMissing,
        Self::AzureCliLoggedOut,
        Self::AzureCliFailed,
        Self::InvalidApiKey,
        Self::AdminKeyRequired,
        Self::KeyExpired,
        Self::ModelNotAllowed,
        Self::BudgetExhausted,
        Self::RateLimitExceeded,
        Self::TokenLimitExceeded,
        Self::RedisUnavailable,
        Self::TokenPending,
        Self::TokenRenewalPending,
        Self::UnknownPath,
        Self::HostNotAllowed,
        Self::OriginNotAllowed,
        Self::InvalidPath,
        Self::MethodNotAllowed,
        Self::WebSocketNotSupported,
        Self::MissingModel,
        Self::InvalidModel,
        Self::InvalidJson,
        Self::InvalidMultipart,
        Self::UnreadableBody,
        Self::RequestBodyTimeout,
        Self::RequestTooLarge,
        Self::UpstreamUnreachable,
        Self::UpstreamTimeout,
        Self::UpstreamsResting,
    ];

    /// The code as it appears in error bodies, logs and the docs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::MissingRoleAssignment => "missing_role_assignment",
            Self::MissingResponsesPermission => "missing_responses_permission",
            Self::MissingProjectPermission => "missing_project_permission",
            Self::TokenWrongTenant => "token_wrong_tenant",
            Self::TokenWrongAudience => "token_wrong_audience",
            Self::TokenExpired => "token_expired",
            Self::TokenRejected => "token_rejected",
            Self::CustomSubdomainRequired => "custom_subdomain_required",
            Self::KeyAuthDisabled => "key_auth_disabled",
            Self::ApiKeyExpected => "api_key_expected",
            Self::NetworkRules => "network_rules",
            Self::PrivateEndpointRequired => "private_endpoint_required",
            Self::DeploymentNotFound => "deployment_not_found",
            Self::ApiNotSupported => "api_not_supported",
            Self::DeploymentQuotaExceeded => "deployment_quota_exceeded",
            Self::AzureCapacityExceeded => "azure_capacity_exceeded",
            Self::UnknownModel => "unknown_model",
            Self::ResourceNotFound => "resource_not_found",
            Self::ApiVersionNotSupported => "api_version_not_supported",
            Self::ApiVersionTooOld => "api_version_too_old",
            Self::ParameterNotSupported => "parameter_not_supported",
            Self::UpstreamRefused => "upstream_refused",
            Self::InvalidClientSecret => "invalid_client_secret",
            Self::ClientSecretExpired => "client_secret_expired",
            Self::UnknownClientId => "unknown_client_id",
            Self::UnknownTenant => "unknown_tenant",
            Self::InvalidScope => "invalid_scope",
            Self::UnknownResource => "unknown_resource",
            Self::ScopeMultipleResources => "scope_multiple_resources",
            Self::MissingClientCredential => "missing_client_credential",
            Self::CertificateNotRegistered => "certificate_not_registered",
            Self::AssertionTimeInvalid => "assertion_time_invalid",
            Self::FederatedCredentialMismatch => "federated_credential_mismatch",
            Self::MissingParameter => "missing_parameter",
            Self::TenantSpecificEndpointRequired => "tenant_specific_endpoint_required",
            Self::EntraRefused => "entra_refused",
            Self::EntraUnavailable => "entra_unavailable",
            Self::SecretFileUnreadable => "secret_file_unreadable",
            Self::CertificateUnreadable => "certificate_unreadable",
            Self::FederatedTokenUnreadable => "federated_token_unreadable",
            Self::ManagedIdentityUnavailable => "managed_identity_unavailable",
            Self::ManagedIdentityNotFound => "managed_identity_not_found",
            Self::ManagedIdentityRefused => "managed_identity_refused",
            Self::AzureCliMissing => "azure_cli_missing",
            Self::AzureCliLoggedOut => "azure_cli_logged_out",
            Self::AzureCliFailed => "azure_cli_failed",
            Self::InvalidApiKey => "invalid_api_key",
            Self::AdminKeyRequired => "admin_key_required",
            Self::KeyExpired => "key_expired",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::BudgetExhausted => "budget_exhausted",
            Self::RateLimitExceeded => "rate_limit_exceeded",
            Self::TokenLimitExceeded => "token_limit_exceeded",
            Self::RedisUnavailable => "redis_unavailable",
            Self::TokenPending => "token_pending",
            Self::TokenRenewalPending => "token_renewal_pending",
            Self::UnknownPath => "unknown_path",
            Self::HostNotAllowed => "host_not_allowed",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::InvalidPath => "invalid_path",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::WebSocketNotSupported => "websocket_not_supported",
            Self::MissingModel => "missing_model",
            Self::InvalidModel => "invalid_model",
            Self::InvalidJson => "invalid_json",
            Self::InvalidMultipart => "invalid_multipart",
            Self::UnreadableBody => "unreadable_body",
            Self::RequestBodyTimeout => "request_body_timeout",
            Self::RequestTooLarge => "request_too_large",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamsResting => "upstreams_resting",
        }
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for RefusalCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Tests and callers compare with the wire form directly.
impl PartialEq<&str> for RefusalCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for RefusalCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}
