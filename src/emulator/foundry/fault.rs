//! `x-emulator-fault`: one Foundry refusal asked for by the request itself.
//!
//! Each fault is played at the point where Azure would refuse, so the checks before it still run:
//!
//! - **Edge** (before routing and authentication; Azure's gateway refuses these whatever the
//!   credential): `network-rules`, `vnet-endpoint`, `private-endpoint`, `regional-endpoint`.
//! - **Route** (after the path is known, before authentication): `resource-not-found`,
//!   `api-version-unsupported`.
//! - **Credential** (instead of authentication; no valid caller needed): `key-auth-disabled`,
//!   `bad-key`, `unauthorized`.
//! - **Caller** (after authentication, so the token must be good): `permission-denied`,
//!   `permission-denied-legacy`, `permission-denied-foundry`, `permission-denied-project` (the
//!   project endpoint's refusal: `…/AIServices/agents/write`, docs/azure-facts.md §7).
//! - **Deployment** (after authorisation and deployment lookup): `rate-limit` (the quota 429,
//!   "exceeded the token rate limit"), `high-demand` (the capacity 429, "experiencing high
//!   demand"; docs/azure-facts.md §7), `content-filter`, `deployment-not-found`, `server-error`,
//!   `api-version-too-old`, `parameter-not-supported`, `unknown-model`.

use axum::http::HeaderMap;

use super::error::FoundryError;

/// A request-scoped failure asked for with `x-emulator-fault`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    NetworkRules,
    VnetEndpoint,
    PrivateEndpoint,
    RegionalEndpoint,
    ResourceNotFound,
    ApiVersionUnsupported,
    KeyAuthDisabled,
    BadKey,
    Unauthorized,
    PermissionDenied,
    PermissionDeniedLegacy,
    PermissionDeniedFoundry,
    PermissionDeniedProject,
    RateLimit,
    HighDemand,
    ContentFilter,
    DeploymentNotFound,
    ServerError,
    ApiVersionTooOld,
    ParameterNotSupported,
    UnknownModel,
}

/// Where in Foundry's checks a fault is played (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Edge,
    Route,
    Credential,
    Caller,
    Deployment,
}

/// Every fault with its header value, in the order the unknown-fault 400 lists them.
const FAULTS: &[(&str, Fault)] = &[
    ("rate-limit", Fault::RateLimit),
    ("content-filter", Fault::ContentFilter),
    ("deployment-not-found", Fault::DeploymentNotFound),
    ("server-error", Fault::ServerError),
    ("key-auth-disabled", Fault::KeyAuthDisabled),
    ("permission-denied", Fault::PermissionDenied),
    ("regional-endpoint", Fault::RegionalEndpoint),
    ("network-rules", Fault::NetworkRules),
    ("vnet-endpoint", Fault::VnetEndpoint),
    ("private-endpoint", Fault::PrivateEndpoint),
    ("api-version-too-old", Fault::ApiVersionTooOld),
    ("api-version-unsupported", Fault::ApiVersionUnsupported),
    ("resource-not-found", Fault::ResourceNotFound),
    ("permission-denied-legacy", Fault::PermissionDeniedLegacy),
    ("permission-denied-foundry", Fault::PermissionDeniedFoundry),
    ("unauthorized", Fault::Unauthorized),
    ("bad-key", Fault::BadKey),
    ("parameter-not-supported", Fault::ParameterNotSupported),
    ("unknown-model", Fault::UnknownModel),
    ("permission-denied-project", Fault::PermissionDeniedProject),
    ("high-demand", Fault::HighDemand),
];

impl Fault {
    /// Where the fault is played.
    pub(crate) fn stage(self) -> Stage {
        use Fault as F;
        match self {
            F::NetworkRules | F::VnetEndpoint | F::PrivateEndpoint | F::RegionalEndpoint => {
                Stage::Edge
            }
            F::ResourceNotFound | F::ApiVersionUnsupported => Stage::Route,
            F::KeyAuthDisabled | F::BadKey | F::Unauthorized => Stage::Credential,
            F::PermissionDenied
            | F::PermissionDeniedLegacy
            | F::PermissionDeniedFoundry
            | F::PermissionDeniedProject => Stage::Caller,
            F::RateLimit
            | F::HighDemand
            | F::ContentFilter
            | F::DeploymentNotFound
            | F::ServerError
            | F::ApiVersionTooOld
            | F::ParameterNotSupported
            | F::UnknownModel => Stage::Deployment,
        }
    }

    /// The refusal of a fault that needs nothing from the request (edge, route and credential
    /// faults); `None` for the faults that need the caller or the deployment.
    pub(crate) fn fixed_refusal(self) -> Option<FoundryError> {
        use Fault as F;
        Some(match self {
            F::NetworkRules => FoundryError::NetworkRules,
            F::VnetEndpoint => FoundryError::VnetEndpoint,
            F::PrivateEndpoint => FoundryError::PrivateEndpoint,
            F::RegionalEndpoint => FoundryError::RegionalEndpoint,
            F::ResourceNotFound => FoundryError::ResourceNotFound,
            F::ApiVersionUnsupported => FoundryError::ApiVersionNotSupported,
            F::KeyAuthDisabled => FoundryError::KeyAuthDisabled,
            F::BadKey => FoundryError::InvalidSubscriptionKey,
            // The classic resource's wording, whatever kind the emulator plays: the fault stands
            // for the observed body of docs/azure-facts.md §5, not for this resource's own 401.
            F::Unauthorized => {
                FoundryError::Unauthorized(crate::emulator::config::ResourceKind::OpenAi)
            }
            _ => return None,
        })
    }
}

/// Every header value, comma-separated, for the unknown-fault 400.
pub(crate) fn known_names() -> String {
    FAULTS
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The fault a request asks for; an unknown value is itself refused with a 400 naming them all.
pub(crate) fn from_headers(headers: &HeaderMap) -> Result<Option<Fault>, FoundryError> {
    let Some(value) = headers
        .get("x-emulator-fault")
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(None);
    };
    let value = value.trim();
    FAULTS
        .iter()
        .find(|(name, _)| *name == value)
        .map(|(_, fault)| Some(*fault))
        .ok_or_else(|| FoundryError::UnknownFault {
            value: value.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_is_named_once() {
        let mut names: Vec<&str> = FAULTS.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FAULTS.len());
        assert_eq!(FAULTS.len(), 21);
    }

    #[test]
    fn fixed_refusals_are_exactly_the_early_stages() {
        for (name, fault) in FAULTS {
            let early = matches!(
                fault.stage(),
                Stage::Edge | Stage::Route | Stage::Credential
            );
            assert_eq!(fault.fixed_refusal().is_some(), early, "{name}");
        }
    }
}
