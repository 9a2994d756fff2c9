//! Every dialect the tools speak: the Azure OpenAI paths (`/openai/deployments/{d}/…`,
//! `/openai/v1/…`, `/openai/{rest}`, `/v1/deployments/{d}/…`) reach each upstream style, and a
//! Foundry project endpoint works from `FOUNDRY_ENDPOINT` alone.

use crate::common;

use common::{Harness, Setup, error_of};
use foundry_proxy::config::Settings;
use foundry_proxy::emulator::identities as world;
use foundry_proxy::secret::Secret;
use serde_json::{Value, json};

/// A proxy for `api` (and the emulator) with these settings laid over the demo's.
async fn start(settings: Settings) -> Harness {
    let harness = Harness::start_with(Setup {
        settings,
        ..Setup::default()
    })
    .await;
    harness.wait_ready().await;
    harness
}

fn style(api: &str) -> Settings {
    Settings {
        api: Some(api.into()),
        ..Settings::default()
    }
}

/// The emulator's record of the last inference request: path, query and the deployment it
/// resolved.
fn last_upstream(harness: &Harness) -> (String, Option<String>, Option<String>) {
    let records = harness.emulator.emulator.inference_requests();
    let last = records.last().expect("a request reached the emulator");
    (
        last.path.clone(),
        last.query.clone(),
        last.deployment.clone(),
    )
}

/// The demo project as the endpoint, with another app's credentials when given.
fn project(app: Option<(&str, &str)>) -> Settings {
    Settings {
        endpoint: Some(format!("/api/projects/{}", world::PROJECT)),
        api: Some("project".into()),
        client_id: app.map(|(id, _)| id.to_owned()),
        client_secret: app.map(|(_, secret)| Secret::new(secret)),
        ..Settings::default()
    }
}

/// A project endpoint with the Cognitive Services scope forced: the project refuses the
/// audience, and the explanation says which scope it needs.
#[tokio::test]
async fn project_audience_is_explained() {
    let mut settings = project(None);
    settings.scope = Some(world::SCOPE.into());
    let harness = start(settings).await;
    let response = harness
        .post_json("/v1/chat/completions", chat_body(world::CHAT_DEPLOYMENT))
        .await;
    assert_eq!(response.status(), 401);
    let error = error_of(response).await;
    assert_eq!(error["code"], "token_wrong_audience", "{error}");
    assert!(error.to_string().contains(world::PROJECT_SCOPE), "{error}");
    harness.stop().await;
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "dialects"}]})
}

/// What `AzureOpenAI(azure_endpoint=…)` sends — the deployment in the path, its api-version in
/// the query — reaches the v1 surface with the deployment as `model` and no dated
/// api-version, and the classic surface with the client's api-version kept.
#[tokio::test]
async fn azure_deployment_paths_reach_every_style() {
    let path = format!(
        "/openai/deployments/{}/chat/completions?api-version=2024-10-21",
        world::CHAT_DEPLOYMENT
    );
    for (api, upstream_path, upstream_query) in [
        ("openai-v1", "/openai/v1/chat/completions".to_owned(), None),
        (
            "deployments",
            format!(
                "/openai/deployments/{}/chat/completions",
                world::CHAT_DEPLOYMENT
            ),
            Some("api-version=2024-10-21".to_owned()),
        ),
    ] {
        let harness = start(style(api)).await;
        // The body names another model: the path's deployment is what the caller asked for.
        let response = harness.post_json(&path, chat_body("ignored")).await;
        assert_eq!(response.status(), 200, "{api}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["object"], "chat.completion", "{api}");
        let (path_seen, query_seen, deployment) = last_upstream(&harness);
        assert_eq!(path_seen, upstream_path, "{api}");
        assert_eq!(query_seen, upstream_query, "{api}");
        assert_eq!(deployment.as_deref(), Some(world::CHAT_DEPLOYMENT), "{api}");
        harness.stop().await;
    }
}

/// `/openai/v1/…` (Microsoft's v1 samples), `/openai/{rest}?api-version=V` (AzureOpenAI's
/// routes without a deployment) and `/v1/deployments/{d}/…` (`AzureOpenAI(base_url=…/v1)`)
/// are served too; so are aliases named in the path.
#[tokio::test]
async fn other_azure_paths_are_served() {
    let mut settings = style("openai-v1");
    settings.models = Some([("fast".to_owned(), world::CHAT_DEPLOYMENT.to_owned().into())].into());
    let harness = start(settings).await;
    let cases = [
        (
            "/openai/v1/chat/completions".to_owned(),
            chat_body(world::CHAT_DEPLOYMENT),
            "/openai/v1/chat/completions",
        ),
        (
            "/openai/responses?api-version=2025-04-01-preview".to_owned(),
            json!({"model": world::CHAT_DEPLOYMENT, "input": "hi"}),
            "/openai/v1/responses",
        ),
        (
            format!("/v1/deployments/{}/embeddings", world::EMBEDDING_DEPLOYMENT),
            json!({"input": "hi"}),
            "/openai/v1/embeddings",
        ),
        (
            "/openai/deployments/fast/chat/completions?api-version=2024-10-21".to_owned(),
            chat_body("fast"),
            "/openai/v1/chat/completions",
        ),
    ];
    for (path, body, upstream) in cases {
        let response = harness.post_json(&path, body).await;
        assert_eq!(
            response.status(),
            200,
            "{path}: {:?}",
            response.text().await
        );
        let (seen, query, _) = last_upstream(&harness);
        assert_eq!(seen, upstream, "{path}");
        assert_eq!(
            query, None,
            "{path}: no dated api-version on the v1 surface"
        );
    }
    let (_, _, deployment) = last_upstream(&harness);
    assert_eq!(deployment.as_deref(), Some(world::CHAT_DEPLOYMENT), "alias");
    harness.stop().await;
}

/// A path no dialect has gets 404 `unknown_path` naming the settings that work for OpenAI and
/// Azure clients; a deployment name Azure cannot have gets 400; nothing reaches Azure.
#[tokio::test]
async fn unknown_paths_name_the_client_settings() {
    let harness = start(Settings::default()).await;
    let response = harness
        .post_json("/chat/completions", chat_body(world::CHAT_DEPLOYMENT))
        .await;
    assert_eq!(response.status(), 404);
    let error = error_of(response).await;
    assert_eq!(error["code"], "unknown_path");
    let message = error["message"].as_str().unwrap_or_default();
    for setting in [
        "/chat/completions",
        "OPENAI_BASE_URL",
        "azure_endpoint",
        "/openai/v1",
    ] {
        assert!(message.contains(setting), "{setting}: {message}");
    }
    let response = harness
        .post_json(
            "/openai/deployments/.hidden/chat/completions?api-version=2024-10-21",
            chat_body(world::CHAT_DEPLOYMENT),
        )
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(error_of(response).await["code"], "invalid_model");
    assert!(harness.emulator.emulator.inference_requests().is_empty());
    harness.stop().await;
}

/// An upload's multipart `model` field names the model its usage is counted under.
#[tokio::test]
async fn uploads_are_counted_under_their_model() {
    let harness = start(Settings::default()).await;
    let body = format!(
        "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{}\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....WAVEfmt \r\n--b--\r\n",
        world::TRANSCRIPTION_DEPLOYMENT
    );
    let response = harness
        .client
        .post(harness.url("/v1/audio/transcriptions"))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(body)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let metrics = harness
        .client
        .get(harness.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let counted = metrics.lines().any(|line| {
        line.starts_with("foundry_proxy_requests_total")
            && line.contains(&format!("model=\"{}\"", world::TRANSCRIPTION_DEPLOYMENT))
    });
    assert!(counted, "{metrics}");
    harness.stop().await;
}

/// A project endpoint (`FOUNDRY_API=project`; the end-to-end tests choose it from
/// `FOUNDRY_ENDPOINT` alone): the `https://ai.azure.com/.default` scope is chosen by itself,
/// and requests reach the project's v1 surface.
#[tokio::test]
async fn project_endpoint_gets_its_scope_and_path() {
    let harness = start(project(None)).await;
    let response = harness
        .post_json("/v1/chat/completions", chat_body(world::CHAT_DEPLOYMENT))
        .await;
    assert_eq!(response.status(), 200);
    let (path, _, _) = last_upstream(&harness);
    assert_eq!(
        path,
        format!(
            "/api/projects/{}/openai/v1/chat/completions",
            world::PROJECT
        )
    );
    let scopes: Vec<String> = harness
        .emulator
        .emulator
        .token_requests()
        .iter()
        .filter_map(|r| r.form.get("scope").cloned())
        .collect();
    assert!(
        !scopes.is_empty() && scopes.iter().all(|s| s == world::PROJECT_SCOPE),
        "{scopes:?}"
    );
    let status = harness.get_json("/readyz").await;
    assert_eq!(status["api"], "project", "{status}");
    harness.stop().await;
}

/// A principal whose role does not reach the project (Cognitive Services OpenAI User) gets
/// Azure's 401 explained as `missing_project_permission`: which role, and where.
#[tokio::test]
async fn project_permission_is_explained() {
    let harness = start(project(Some((
        world::OPENAI_USER_CLIENT_ID,
        world::OPENAI_USER_CLIENT_SECRET,
    ))))
    .await;
    let response = harness
        .post_json("/v1/chat/completions", chat_body(world::CHAT_DEPLOYMENT))
        .await;
    assert_eq!(response.status(), 401);
    let error = error_of(response).await;
    assert_eq!(error["code"], "missing_project_permission", "{error}");
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("Azure AI User") && message.contains("Access control (IAM)"),
        "{message}"
    );
    assert!(message.contains(world::OPENAI_USER_OBJECT_ID), "{message}");
    harness.stop().await;
}

/// Azure's capacity 429 ("high demand") is told apart from the quota one: retry later or
/// elsewhere, not raise the quota; status, body and retry headers kept.
#[tokio::test]
async fn capacity_429_is_explained() {
    let harness = start(Settings::default()).await;
    let response = harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .header("x-emulator-fault", "high-demand")
        .json(&chat_body(world::CHAT_DEPLOYMENT))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "20");
    assert_eq!(response.headers()["retry-after-ms"], "20000");
    let error = error_of(response).await;
    assert_eq!(error["code"], "azure_capacity_exceeded", "{error}");
    assert!(
        error["upstream"]["body"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("high demand")),
        "{error}"
    );
    harness.stop().await;
}
