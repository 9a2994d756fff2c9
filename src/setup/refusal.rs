//! Why `setup` stopped, in the diagnosis catalog's style: a code, the cause in a sentence, and
//! the fix as steps that say what to ask for and from whom.

use serde::Serialize;

/// A refusal from Azure (ARM or Graph) as it answered: status, `error.code`, `error.message`.
#[derive(Debug, Clone, Serialize)]
pub struct AzureAnswer {
    /// The HTTP status.
    pub status: u16,
    /// `error.code`, e.g. `AuthorizationFailed`.
    pub code: String,
    /// `error.message`.
    pub message: String,
}

/// Why a step could not be done.
#[derive(Debug, Clone, Serialize)]
pub struct Refusal {
    /// A stable code, e.g. `role_assignment_denied`.
    pub code: &'static str,
    /// One or two sentences: what happened and why.
    pub cause: String,
    /// What to do, in order.
    pub fix: Vec<String>,
    /// Azure's own answer, when Azure refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureAnswer>,
}

impl Refusal {
    /// A refusal with its code, cause and fix steps.
    pub fn new(code: &'static str, cause: impl Into<String>, fix: &[&str]) -> Self {
        Self {
            code,
            cause: cause.into(),
            fix: fix.iter().map(|s| (*s).to_owned()).collect(),
            azure: None,
        }
    }

    /// The same refusal carrying Azure's answer.
    pub fn with_azure(mut self, answer: AzureAnswer) -> Self {
        self.azure = Some(answer);
        self
    }

    /// The operator is not signed in (or the Azure CLI failed).
    pub fn not_signed_in(detail: &str) -> Self {
        Self::new(
            "not_signed_in",
            format!("Cannot sign in as you with the Azure CLI: {detail}"),
            &[
                "Run `az login` (add `--tenant TENANT` for another directory), then run setup again.",
                "setup acts with your own Azure login: it needs no secret of its own.",
            ],
        )
    }

    /// Graph's 403 on creating an application.
    pub fn app_registration_denied(answer: AzureAnswer) -> Self {
        Self::new(
            "app_registration_denied",
            "Your tenant does not let you register applications (Microsoft Graph answered 403 Authorization_RequestDenied).",
            &[
                "Ask a Microsoft Entra administrator to give you the Application Developer role (Entra admin center → Roles and administrators), or to allow users to register applications.",
                "Or ask the administrator to create the App Registration and run setup with --app-id APPLICATION_ID (you must be one of its owners to add a credential).",
                "Or, for a managed identity or a workload identity that exists already, run setup with --assignee OBJECT_ID: it only assigns the role.",
            ],
        )
        .with_azure(answer)
    }

    /// Graph's 403 on anything else (adding a credential to an app made by someone else, …).
    pub fn graph_denied(what: &str, answer: AzureAnswer) -> Self {
        Self::new(
            "graph_denied",
            format!("Microsoft Graph refused to {what} (403 {}).", answer.code),
            &[
                "Ask an owner of the App Registration to add you as an owner (App Registration → Owners), or ask a Microsoft Entra administrator (Application Administrator) to run setup.",
            ],
        )
        .with_azure(answer)
    }

    /// ARM's 403 on writing a role assignment.
    pub fn role_assignment_denied(scope: &str, answer: AzureAnswer) -> Self {
        Self::new(
            "role_assignment_denied",
            "You may not assign roles on this resource: Azure answered 403 AuthorizationFailed for Microsoft.Authorization/roleAssignments/write.",
            &[
                &format!(
                    "Ask an Owner of the resource (or its subscription) to give you Owner, User Access Administrator or Role Based Access Control Administrator on {scope}, then run setup again."
                ),
                "Or ask them to assign the role themselves: Access control (IAM) → Add role assignment → the role → the app's service principal; setup then finds it and changes nothing.",
            ],
        )
        .with_azure(answer)
    }

    /// Any other answer from Azure, passed on with what was being done.
    pub fn azure(what: &str, answer: AzureAnswer) -> Self {
        Self::new(
            "azure_refused",
            format!(
                "Azure refused to {what}: {} {}: {}",
                answer.status, answer.code, answer.message
            ),
            &["Read Azure's message above; run setup again once it is resolved."],
        )
        .with_azure(answer)
    }

    /// Azure could not be reached or answered something unreadable.
    pub fn unreachable(what: &str, detail: &str) -> Self {
        Self::new(
            "azure_unreachable",
            format!("Cannot {what}: {detail}"),
            &[
                "Check the network, a proxy or firewall in between, and FOUNDRY_PROXY_ARM_ENDPOINT / FOUNDRY_PROXY_GRAPH_ENDPOINT if set; then run setup again.",
            ],
        )
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.cause, self.code)
    }
}
