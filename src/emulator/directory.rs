//! The directory the management plane changes: apps and service principals created through
//! Graph, their credentials, and role assignments made through ARM, with the two delays Azure
//! has (docs/azure-facts.md §8): a new service principal is unknown to ARM until it has
//! replicated, and a new role assignment grants nothing until it has propagated.
//!
//! Held by [`Emulator`](super::Emulator); the Graph and ARM handlers write it, and the token
//! endpoint and Foundry's role check read it.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::config::FederatedCredentialSpec;
use super::entra::certificate::Certificate;

/// Built-in roles `setup` may assign, by role definition id (docs/azure-facts.md §8), with the
/// display name Foundry's role check knows them by.
pub(crate) const ROLE_DEFINITIONS: &[(&str, &str)] = &[
    ("53ca6127-db72-4b80-b1b0-d745d6d5456d", "Azure AI User"),
    ("64702f94-c441-49e6-a78b-ef80e0188fee", "Azure AI Developer"),
    (
        "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
        "Cognitive Services OpenAI User",
    ),
    (
        "a97b65f3-24c7-4388-baec-2e87135dc908",
        "Cognitive Services User",
    ),
];

/// An application object created through Graph.
#[derive(Clone, Debug)]
pub(crate) struct Application {
    /// The application object's id (Graph's `id`).
    pub(crate) id: String,
    /// The application (client) id.
    pub(crate) app_id: String,
    pub(crate) display_name: String,
    /// Client secrets: `(keyId, value, endDateTime)`; the value is never shown again.
    pub(crate) passwords: Vec<Password>,
    /// Certificates registered through `keyCredentials`, with their `keyId`.
    pub(crate) certificates: Vec<(String, Certificate)>,
    /// Federated identity credentials with their `id` and `name`.
    pub(crate) federated: Vec<Federated>,
    /// One of the configured apps (it existed before the emulator started): not counted as created.
    pub(crate) seeded: bool,
}

/// A client secret on an application.
#[derive(Clone)]
pub(crate) struct Password {
    pub(crate) key_id: String,
    pub(crate) value: String,
    pub(crate) display_name: String,
    pub(crate) end: String,
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Password")
            .field("key_id", &self.key_id)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

/// A federated identity credential on an application.
#[derive(Clone, Debug)]
pub(crate) struct Federated {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) spec: FederatedCredentialSpec,
}

/// A service principal created through Graph.
#[derive(Clone, Debug)]
pub(crate) struct ServicePrincipal {
    /// The object id role assignments name.
    pub(crate) id: String,
    pub(crate) app_id: String,
    pub(crate) display_name: String,
    /// When it was created: ARM knows it only after the replication delay.
    pub(crate) created: Instant,
    /// A configured app's: it existed before the emulator started.
    pub(crate) seeded: bool,
}

/// A role assignment made through ARM.
#[derive(Clone, Debug)]
pub(crate) struct Assignment {
    /// The assignment's name (a GUID); its id is `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
    pub(crate) name: String,
    pub(crate) scope: String,
    /// The full role definition id as sent.
    pub(crate) role_definition_id: String,
    pub(crate) principal_id: String,
    pub(crate) principal_type: String,
    /// When it was made: it grants its role only after the propagation delay.
    pub(crate) created: Instant,
}

impl Assignment {
    /// The role's display name, when the definition is one of [`ROLE_DEFINITIONS`].
    pub(crate) fn role_name(&self) -> Option<&'static str> {
        let guid = self.role_definition_id.rsplit('/').next()?;
        ROLE_DEFINITIONS
            .iter()
            .find(|(id, _)| id.eq_ignore_ascii_case(guid))
            .map(|(_, name)| *name)
    }
}

/// What the operator's tenant and subscription allow, and how long Azure takes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// Users may register applications (else Graph answers 403 `Authorization_RequestDenied`).
    pub(crate) app_registration_allowed: bool,
    /// The caller holds `Microsoft.Authorization/roleAssignments/write` (else 403 `AuthorizationFailed`).
    pub(crate) role_assignment_allowed: bool,
    /// How long a new service principal stays unknown to ARM.
    pub(crate) replication_delay: Duration,
    /// How long a new role assignment takes to grant its role.
    pub(crate) propagation_delay: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            app_registration_allowed: true,
            role_assignment_allowed: true,
            replication_delay: Duration::ZERO,
            propagation_delay: Duration::ZERO,
        }
    }
}

/// Everything the management plane created, behind one lock held only for short reads and writes.
#[derive(Debug, Default)]
pub(crate) struct Directory {
    inner: Mutex<Objects>,
}

/// The directory's contents.
#[derive(Debug, Default)]
pub(crate) struct Objects {
    pub(crate) policy: Policy,
    pub(crate) applications: Vec<Application>,
    pub(crate) service_principals: Vec<ServicePrincipal>,
    pub(crate) assignments: Vec<Assignment>,
}

impl Directory {
    /// A directory that already holds the configured apps of `tenant` and their service
    /// principals, so Graph finds them (`--app-id` of an app an administrator made).
    pub(crate) fn seeded(apps: &[super::AppSpec], tenant: &str) -> Self {
        let mut objects = Objects::default();
        for app in apps.iter().filter(|a| a.tenant == tenant) {
            objects.applications.push(Application {
                id: super::util::uuid(),
                app_id: app.client_id.clone(),
                display_name: format!("emulator app {}", app.client_id),
                passwords: Vec::new(),
                certificates: Vec::new(),
                federated: Vec::new(),
                seeded: true,
            });
            objects.service_principals.push(ServicePrincipal {
                id: app.object_id.clone(),
                app_id: app.client_id.clone(),
                display_name: format!("emulator app {}", app.client_id),
                created: Instant::now(),
                seeded: true,
            });
        }
        Self {
            inner: Mutex::new(objects),
        }
    }

    /// The contents, locked; a panic elsewhere must not poison every later request.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Objects> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Objects {
    /// The application with this client id.
    pub(crate) fn application_by_app_id(&self, app_id: &str) -> Option<&Application> {
        self.applications
            .iter()
            .find(|a| a.app_id.eq_ignore_ascii_case(app_id))
    }

    /// The application with this object id, for changes.
    pub(crate) fn application_mut(&mut self, id: &str) -> Option<&mut Application> {
        self.applications
            .iter_mut()
            .find(|a| a.id.eq_ignore_ascii_case(id))
    }

    /// The service principal of this client id.
    pub(crate) fn service_principal_of(&self, app_id: &str) -> Option<&ServicePrincipal> {
        self.service_principals
            .iter()
            .find(|sp| sp.app_id.eq_ignore_ascii_case(app_id))
    }

    /// Whether ARM knows this service principal yet (it has replicated).
    pub(crate) fn replicated(&self, object_id: &str) -> Option<bool> {
        self.service_principals
            .iter()
            .find(|sp| sp.id.eq_ignore_ascii_case(object_id))
            .map(|sp| sp.seeded || sp.created.elapsed() >= self.policy.replication_delay)
    }

    /// Role names granted to any of these principals by assignments that have propagated.
    pub(crate) fn propagated_roles(&self, object_ids: &[String]) -> Vec<String> {
        self.assignments
            .iter()
            .filter(|a| {
                object_ids
                    .iter()
                    .any(|o| o.eq_ignore_ascii_case(&a.principal_id))
            })
            .filter(|a| a.created.elapsed() >= self.policy.propagation_delay)
            .filter_map(Assignment::role_name)
            .map(str::to_owned)
            .collect()
    }
}

/// A role assignment as tests see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleAssignmentView {
    /// The principal's object id.
    pub principal_id: String,
    /// The role's display name, or the role definition id when it is not a known role.
    pub role: String,
    /// The scope it was made at.
    pub scope: String,
}

/// Counts of what the management plane has created (configured apps not counted, their new
/// credentials counted), to prove a re-run changed nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct DirectoryCounts {
    /// Applications created through Graph.
    pub applications: usize,
    /// Service principals created through Graph.
    pub service_principals: usize,
    /// Client secrets added, over every application.
    pub secrets: usize,
    /// Certificates registered, over every application.
    pub certificates: usize,
    /// Federated identity credentials, over every application.
    pub federated_credentials: usize,
    /// Role assignments made through ARM.
    pub role_assignments: usize,
}

impl super::Emulator {
    /// Lets users register applications, or not (Graph's 403 `Authorization_RequestDenied`).
    pub fn set_app_registration_allowed(&self, allowed: bool) {
        self.directory.lock().policy.app_registration_allowed = allowed;
    }

    /// Gives the caller the right to assign roles, or not (ARM's 403 `AuthorizationFailed`).
    pub fn set_role_assignment_allowed(&self, allowed: bool) {
        self.directory.lock().policy.role_assignment_allowed = allowed;
    }

    /// How long a new service principal stays unknown to ARM (400 `PrincipalNotFound`).
    pub fn set_replication_delay(&self, delay: Duration) {
        self.directory.lock().policy.replication_delay = delay;
    }

    /// How long a new role assignment takes to grant its role to inference calls.
    pub fn set_propagation_delay(&self, delay: Duration) {
        self.directory.lock().policy.propagation_delay = delay;
    }

    /// Every role assignment made through ARM, oldest first (propagated or not).
    pub fn role_assignments(&self) -> Vec<RoleAssignmentView> {
        self.directory
            .lock()
            .assignments
            .iter()
            .map(|a| RoleAssignmentView {
                principal_id: a.principal_id.clone(),
                role: a
                    .role_name()
                    .map_or_else(|| a.role_definition_id.clone(), str::to_owned),
                scope: a.scope.clone(),
            })
            .collect()
    }

    /// How many objects and credentials the management plane has created.
    pub fn directory_counts(&self) -> DirectoryCounts {
        let dir = self.directory.lock();
        let sum = |f: fn(&Application) -> usize| dir.applications.iter().map(f).sum();
        DirectoryCounts {
            applications: dir.applications.iter().filter(|a| !a.seeded).count(),
            service_principals: dir.service_principals.iter().filter(|s| !s.seeded).count(),
            secrets: sum(|a| a.passwords.len()),
            certificates: sum(|a| a.certificates.len()),
            federated_credentials: sum(|a| a.federated.len()),
            role_assignments: dir.assignments.len(),
        }
    }

    /// An app created through Graph, as the token endpoint sees it: it exists in the resource's
    /// tenant once it has a service principal (an app without one cannot sign in there).
    pub(crate) fn directory_app(&self, client_id: &str) -> Option<super::AppSpec> {
        let dir = self.directory.lock();
        let app = dir.application_by_app_id(client_id)?;
        let sp = dir.service_principal_of(client_id)?;
        Some(super::AppSpec {
            tenant: self.config.resource_tenant.clone(),
            client_id: app.app_id.clone(),
            // Secrets are matched by `directory_secret_matches`: an app may hold several.
            client_secret: String::new(),
            secret_expired: false,
            object_id: sp.id.clone(),
            roles: Vec::new(),
            certificates: Vec::new(),
            federated_credentials: app.federated.iter().map(|f| f.spec.clone()).collect(),
        })
    }

    /// Federated credentials added through Graph to this app.
    pub(crate) fn directory_federated(&self, client_id: &str) -> Vec<FederatedCredentialSpec> {
        let dir = self.directory.lock();
        dir.application_by_app_id(client_id)
            .map(|a| a.federated.iter().map(|f| f.spec.clone()).collect())
            .unwrap_or_default()
    }

    /// Whether `secret` is one of the secrets added to this Graph-created app.
    pub(crate) fn directory_secret_matches(&self, client_id: &str, secret: &str) -> bool {
        let dir = self.directory.lock();
        dir.application_by_app_id(client_id).is_some_and(|a| {
            a.passwords
                .iter()
                .any(|p| !secret.is_empty() && p.value == secret)
        })
    }

    /// Certificates registered on this Graph-created app.
    pub(crate) fn directory_certificates(&self, client_id: &str) -> Vec<Certificate> {
        let dir = self.directory.lock();
        dir.application_by_app_id(client_id)
            .map(|a| a.certificates.iter().map(|(_, c)| c.clone()).collect())
            .unwrap_or_default()
    }

    /// Roles granted by propagated ARM assignments to the principal behind this client id:
    /// a Graph-created service principal, a configured app or a managed identity.
    pub(crate) fn directory_roles(&self, client_id: &str) -> Vec<String> {
        let mut object_ids: Vec<String> = self
            .config
            .apps
            .iter()
            .filter(|a| a.client_id.eq_ignore_ascii_case(client_id))
            .map(|a| a.object_id.clone())
            .chain(
                self.config
                    .managed_identities
                    .iter()
                    .filter(|m| m.client_id.eq_ignore_ascii_case(client_id))
                    .map(|m| m.object_id.clone()),
            )
            .collect();
        let dir = self.directory.lock();
        if let Some(sp) = dir.service_principal_of(client_id) {
            object_ids.push(sp.id.clone());
        }
        dir.propagated_roles(&object_ids)
    }

    /// Whether a principal with this object id exists anywhere in the directory (configured
    /// apps and managed identities always; Graph-created ones once replicated). `None`: unknown.
    pub(crate) fn principal_known(&self, object_id: &str) -> Option<bool> {
        let configured = self
            .config
            .apps
            .iter()
            .map(|a| &a.object_id)
            .chain(self.config.managed_identities.iter().map(|m| &m.object_id))
            .any(|o| o.eq_ignore_ascii_case(object_id));
        if configured {
            return Some(true);
        }
        self.directory.lock().replicated(object_id)
    }
}
