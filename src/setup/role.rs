//! The role assignment at the resource's scope (docs/azure-facts.md §8): found in place, or
//! made with `PUT …/roleAssignments/{new guid}`; retried while a new service principal has not
//! replicated to ARM yet (400 `PrincipalNotFound`).

use std::time::{Duration, Instant};

use serde_json::json;

use super::azure::{CallError, Plane, items, text};
use super::refusal::Refusal;
use super::steps::Steps;

/// api-version of the role assignment calls.
const ASSIGNMENTS_API: &str = "2022-04-01";
/// How long to keep retrying while the principal replicates.
const REPLICATION_LIMIT: Duration = Duration::from_secs(180);

/// The roles `setup` assigns: display name and role definition id (docs/azure-facts.md §8).
pub const ROLES: &[(&str, &str)] = &[
    ("Azure AI User", "53ca6127-db72-4b80-b1b0-d745d6d5456d"),
    ("Azure AI Developer", "64702f94-c441-49e6-a78b-ef80e0188fee"),
    (
        "Cognitive Services OpenAI User",
        "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
    ),
];

/// The role definition id of a role name `setup` accepts (any case), or the accepted names.
pub fn role_id(name: &str) -> Result<(&'static str, &'static str), String> {
    ROLES
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.trim()))
        .copied()
        .ok_or_else(|| {
            let names: Vec<&str> = ROLES.iter().map(|(n, _)| *n).collect();
            format!(
                "--role: '{name}' is not a role setup assigns — use one of: {}",
                names.join(", ")
            )
        })
}

/// The subscription part of a resource id: role definitions are named under it.
fn subscription_of(scope: &str) -> &str {
    match scope.match_indices('/').nth(2) {
        Some((end, _)) => &scope[..end],
        None => scope,
    }
}

/// Makes sure `principal` holds `role` at `scope`. `fresh`: the principal was created in this
/// run, so `PrincipalNotFound` means "not replicated yet" and is retried; otherwise it means
/// a wrong id and is refused at once.
pub async fn assign(
    arm: &Plane,
    scope: &str,
    principal: Option<&str>,
    fresh: bool,
    role: (&str, &str),
    steps: &mut Steps,
) -> Result<(), Refusal> {
    let (role_name, role_guid) = role;
    let Some(principal) = principal else {
        steps.planned("role", format!("assign {role_name} on the resource"));
        return Ok(());
    };
    let path = format!("{scope}/providers/Microsoft.Authorization/roleAssignments");
    let filter = format!("principalId eq '{principal}'");
    let existing = items(
        &arm.get(
            &path,
            &[("api-version", ASSIGNMENTS_API), ("$filter", &filter)],
        )
        .await
        .map_err(|e| e.refusal("list the role assignments"))?,
    );
    let held = existing.iter().any(|a| {
        text(a, "/properties/roleDefinitionId")
            .rsplit('/')
            .next()
            .is_some_and(|g| g.eq_ignore_ascii_case(role_guid))
    });
    if held {
        steps.kept(
            "role",
            format!("{role_name} already assigned on the resource"),
        );
        return Ok(());
    }
    if steps.dry_run() {
        steps.planned("role", format!("assign {role_name} on the resource"));
        return Ok(());
    }
    let body = json!({"properties": {
        "roleDefinitionId": format!("{}/providers/Microsoft.Authorization/roleDefinitions/{role_guid}", subscription_of(scope)),
        "principalId": principal,
        // Naming the type lets ARM skip most of the replication wait (docs/azure-facts.md §8).
        "principalType": "ServicePrincipal",
    }});
    let started = Instant::now();
    let mut delay = Duration::from_secs(1);
    let mut retries = 0u32;
    loop {
        let put = format!("{path}/{}", uuid::Uuid::new_v4());
        match arm
            .send(
                reqwest::Method::PUT,
                &put,
                &[("api-version", ASSIGNMENTS_API)],
                Some(&body),
            )
            .await
        {
            Ok(_) => {
                let waited = if retries > 0 {
                    format!(" after {retries} retries while the principal replicated")
                } else {
                    String::new()
                };
                steps.done(
                    "role",
                    format!("{role_name} assigned on the resource{waited}"),
                );
                return Ok(());
            }
            Err(e) if e.code() == Some("RoleAssignmentExists") => {
                steps.kept(
                    "role",
                    format!("{role_name} already assigned on the resource"),
                );
                return Ok(());
            }
            Err(e)
                if fresh
                    && e.code() == Some("PrincipalNotFound")
                    && started.elapsed() < REPLICATION_LIMIT =>
            {
                retries += 1;
                eprintln!(
                    "foundry-proxy setup: the service principal has not replicated yet; retrying in {}s",
                    delay.as_secs()
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(15));
            }
            Err(CallError::Answer(a)) if a.status == 403 => {
                return Err(Refusal::role_assignment_denied(scope, a));
            }
            Err(CallError::Answer(a)) if a.code == "PrincipalNotFound" => {
                return Err(Refusal::new(
                    "principal_not_found",
                    format!("Azure Resource Manager does not know the principal {principal}: a wrong object id, or one created moments ago that has not replicated yet."),
                    &["Check the object id (for a managed identity: its Object (principal) ID, not its Client ID); if it was just created, run setup again in a few minutes."],
                ).with_azure(a));
            }
            Err(e) => return Err(e.refusal("assign the role")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_scopes() {
        assert_eq!(
            role_id("azure ai user").map(|r| r.1),
            Ok("53ca6127-db72-4b80-b1b0-d745d6d5456d")
        );
        assert!(role_id("Owner").unwrap_err().contains("Azure AI Developer"));
        assert_eq!(
            subscription_of("/subscriptions/s1/resourceGroups/rg/providers/X/accounts/a"),
            "/subscriptions/s1"
        );
    }
}
