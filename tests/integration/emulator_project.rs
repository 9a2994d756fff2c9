//! The emulator's Foundry project endpoints, token audiences and the two kinds of 429, per
//! docs/azure-facts.md §5, §6 and §7.

use crate::common::emulator_client::*;
use foundry_proxy::emulator::{ResourceKind, RunningEmulator, identities};
use serde_json::{Value, json};

/// The 401 of a Foundry (AI Services) resource.
const FOUNDRY_401: &str = "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com/ or https://ai.azure.com/), or have expired.";

/// A token from the token endpoint for `https://ai.azure.com/.default` (asserting its `aud`).
async fn ai_token(emu: &RunningEmulator, id: &str, secret: &str) -> String {
    let form = [
        ("client_id", id),
        ("client_secret", secret),
        ("scope", identities::PROJECT_SCOPE),
        ("grant_type", "client_credentials"),
    ];
    let resp = token_response(emu, identities::TENANT_ID, &form).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    let token = body["access_token"].as_str().expect("token").to_owned();
    assert_eq!(jwt_part(&token, 1)["aud"], "https://ai.azure.com");
    token
}

/// The demo app's token for the project audience.
async fn demo_ai_token(emu: &RunningEmulator) -> String {
    ai_token(emu, identities::CLIENT_ID, identities::CLIENT_SECRET).await
}

/// `{emulator}/api/projects/{project}/openai/v1/{op}`.
fn project_url(emu: &RunningEmulator, project: &str, op: &str) -> String {
    format!("{}/api/projects/{project}/openai/v1/{op}", emu.url())
}

/// A v1 chat body naming the demo chat deployment.
fn v1_chat() -> Value {
    json!({"model": identities::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "ping"}]})
}

/// The project PermissionDenied body for this principal.
fn project_denied(oid: &str) -> Value {
    json!({"error": {"code": "PermissionDenied", "message": format!(
        "The principal `{oid}` lacks the required data action `Microsoft.CognitiveServices/accounts/AIServices/agents/write` to perform `POST /api/projects/{{projectName}}/openai/*` operation. For instructions on granting the necessary permissions, see https://aka.ms/FoundryPermissions."
    )}})
}

/// The project endpoint serves the v1 operations to an Azure AI User with an ai.azure.com token.
#[tokio::test]
async fn project_serves_v1_ops_with_the_ai_audience() {
    let emu = start().await;
    let token = demo_ai_token(&emu).await;
    let url = project_url(&emu, identities::PROJECT, "chat/completions");
    let (status, body) = status_and_json(post(&url, Some(&token), &v1_chat(), &[]).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "chat.completion");

    let responses = json!({"model": identities::CHAT_DEPLOYMENT, "input": "ping"});
    let url = project_url(&emu, identities::PROJECT, "responses");
    let (status, body) = status_and_json(post(&url, Some(&token), &responses, &[]).await).await;
    assert_eq!((status, body["object"].as_str()), (200, Some("response")));

    let models = client()
        .get(project_url(&emu, identities::PROJECT, "models"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("models");
    assert_eq!(models.status(), 200);

    let record = emu.emulator.inference_requests().pop().expect("record");
    assert_eq!(
        record.path,
        format!("/api/projects/{}/openai/v1/models", identities::PROJECT)
    );
}

/// A cognitiveservices token (or any other audience) gets the resource's bad-token 401 on the
/// project; on the resource's own routes both audiences work, on either resource kind.
#[tokio::test]
async fn project_refuses_the_cognitiveservices_audience() {
    let emu = start().await;
    let cognitive = good_token(&emu).await;
    let ai = demo_ai_token(&emu).await;
    let url = project_url(&emu, identities::PROJECT, "chat/completions");
    let unauthorized = json!({"statusCode": 401, "message": FOUNDRY_401});
    assert_eq!(
        status_and_json(post(&url, Some(&cognitive), &v1_chat(), &[]).await).await,
        (401, unauthorized.clone())
    );
    let claims = emu
        .emulator
        .token_claims(identities::CLIENT_ID, "https://ml.azure.com", 600)
        .expect("claims");
    let other = emu.emulator.sign_token(&claims).expect("sign");
    assert_eq!(
        status_and_json(post(&url, Some(&other), &v1_chat(), &[]).await).await,
        (401, unauthorized)
    );
    let claims = emu
        .emulator
        .token_claims(identities::CLIENT_ID, "https://ai.azure.com/", 600)
        .expect("claims");
    let slashed = emu.emulator.sign_token(&claims).expect("sign");
    assert_eq!(
        post(&url, Some(&slashed), &v1_chat(), &[]).await.status(),
        200
    );

    let v1 = format!("{}/openai/v1/chat/completions", emu.url());
    let classic = chat_url(&emu, identities::CHAT_DEPLOYMENT);
    for kind in [ResourceKind::Foundry, ResourceKind::OpenAi] {
        emu.emulator.set_resource_kind(kind);
        for token in [&cognitive, &ai] {
            assert_eq!(
                post(&v1, Some(token), &v1_chat(), &[]).await.status(),
                200,
                "{kind:?} v1"
            );
            assert_eq!(
                post(&classic, Some(token), &chat_body(), &[])
                    .await
                    .status(),
                200,
                "{kind:?} deployments"
            );
        }
    }
}

/// Cognitive Services OpenAI User may call the resource but not the project: PermissionDenied
/// names the project's data action. The roles that hold it work, others do not, at once.
#[tokio::test]
async fn project_permission_denied_names_the_agents_data_action() {
    let emu = start().await;
    let token = ai_token(
        &emu,
        identities::OPENAI_USER_CLIENT_ID,
        identities::OPENAI_USER_CLIENT_SECRET,
    )
    .await;
    let url = project_url(&emu, identities::PROJECT, "chat/completions");
    assert_eq!(
        status_and_json(post(&url, Some(&token), &v1_chat(), &[]).await).await,
        (401, project_denied(identities::OPENAI_USER_OBJECT_ID))
    );
    let v1 = format!("{}/openai/v1/chat/completions", emu.url());
    assert_eq!(post(&v1, Some(&token), &v1_chat(), &[]).await.status(), 200);

    let no_role = ai_token(
        &emu,
        identities::NO_ROLE_CLIENT_ID,
        identities::NO_ROLE_CLIENT_SECRET,
    )
    .await;
    assert_eq!(
        status_and_json(post(&url, Some(&no_role), &v1_chat(), &[]).await).await,
        (401, project_denied(identities::NO_ROLE_OBJECT_ID))
    );

    let cases = [
        ("Cognitive Services User", 200),
        ("Azure AI User", 200),
        ("Foundry User", 200),
        ("53ca6127-db72-4b80-b1b0-d745d6d5456d", 200),
        ("Azure AI Developer", 401),
        ("Cognitive Services OpenAI Contributor", 401),
        ("Cognitive Services OpenAI User", 401),
    ];
    for (role, status) in cases {
        let update = json!({"roles": {identities::OPENAI_USER_CLIENT_ID: [role]}});
        assert_eq!(control_config(&emu, &update).await, 204);
        assert_eq!(
            post(&url, Some(&token), &v1_chat(), &[]).await.status(),
            status,
            "{role}"
        );
    }
}

/// Embeddings are not routed on a project; an unknown project and a project path on a classic
/// resource are 404s too.
#[tokio::test]
async fn project_embeddings_and_unknown_projects_are_404() {
    let emu = start().await;
    let token = demo_ai_token(&emu).await;
    let embeddings = json!({"model": identities::EMBEDDING_DEPLOYMENT, "input": "hi"});
    let not_found = json!({"error": {"code": "404", "message": "Resource not found"}});
    let url = project_url(&emu, identities::PROJECT, "embeddings");
    assert_eq!(
        status_and_json(post(&url, Some(&token), &embeddings, &[]).await).await,
        (404, not_found.clone())
    );

    let url = project_url(&emu, "no-such-project", "chat/completions");
    assert_eq!(
        status_and_json(post(&url, Some(&token), &v1_chat(), &[]).await).await,
        (
            404,
            json!({"error": {"code": "NotFound", "message": "Project 'no-such-project' was not found on this resource."}})
        )
    );

    emu.emulator.set_resource_kind(ResourceKind::OpenAi);
    let url = project_url(&emu, identities::PROJECT, "chat/completions");
    assert_eq!(
        status_and_json(post(&url, Some(&token), &v1_chat(), &[]).await).await,
        (404, not_found)
    );
}

/// `permission-denied-project` plays the project refusal for an authorised caller, on the
/// project and on the resource's routes alike.
#[tokio::test]
async fn permission_denied_project_fault() {
    let emu = start().await;
    let token = demo_ai_token(&emu).await;
    let fault = [("x-emulator-fault", "permission-denied-project")];
    for url in [
        project_url(&emu, identities::PROJECT, "chat/completions"),
        format!("{}/openai/v1/chat/completions", emu.url()),
    ] {
        assert_eq!(
            status_and_json(post(&url, Some(&token), &v1_chat(), &fault).await).await,
            (401, project_denied(identities::OBJECT_ID)),
            "{url}"
        );
    }
}

/// These response headers' values, in order ("-" for an absent one).
fn header_values(resp: &reqwest::Response, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| {
            resp.headers()
                .get(*n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        })
        .collect()
}

/// The quota 429 and the capacity 429 differ in wording, wait and remaining limits.
#[tokio::test]
async fn quota_and_capacity_429s_differ() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let url = format!("{}/openai/v1/chat/completions", emu.url());

    let resp = post(
        &url,
        Some(&token),
        &v1_chat(),
        &[("x-emulator-fault", "rate-limit")],
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(
        header_values(
            &resp,
            &[
                "retry-after",
                "retry-after-ms",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-remaining-tokens",
                "x-ratelimit-limit-requests",
                "x-ratelimit-limit-tokens",
            ]
        ),
        ["45", "45000", "0", "0", "1000", "150000"]
    );
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body,
        json!({"error": {"code": "429", "message": "Your requests to gpt-4o-mini for gpt-4o-mini-2024-07-18 in Sweden Central have exceeded the token rate limit for your current AIServices S0 pricing tier. This request was for ChatCompletions_Create under Azure OpenAI API version v1. Please retry after 45 seconds."}})
    );

    let resp = post(
        &url,
        Some(&token),
        &v1_chat(),
        &[("x-emulator-fault", "high-demand")],
    )
    .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(
        header_values(
            &resp,
            &[
                "retry-after",
                "retry-after-ms",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-remaining-tokens",
            ]
        ),
        ["20", "20000", "999", "149000"]
    );
    let body: Value = resp.json().await.expect("json");
    assert_eq!(
        body,
        json!({"error": {"code": "429", "message": "The system is currently experiencing high demand and cannot process your request. Your request exceeds the maximum usage size allowed during peak load. Please retry after 20 seconds. For improved latency reliability, consider switching to Provisioned Throughput."}})
    );

    // Both are deployment-stage faults: without a token, the ordinary 401 comes first.
    for fault in ["rate-limit", "high-demand"] {
        assert_eq!(
            post(&url, None, &v1_chat(), &[("x-emulator-fault", fault)])
                .await
                .status(),
            401,
            "{fault}"
        );
    }
}
