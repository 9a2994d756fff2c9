//! Refusals explained: Azure's 401/403 and Entra's AADSTS errors become OpenAI-shaped JSON
//! with a stable code, the cause, the fix steps and the identity seen in the token.

use crate::common;

use std::time::Duration;

use common::{Harness, Setup, error_of};
use foundry_proxy::config::Settings;
use foundry_proxy::emulator::{EntraFault, identities as world};
use foundry_proxy::secret::Secret;

fn app(tenant: &str, client_id: &str, secret: &str) -> Setup {
    Setup {
        settings: Settings {
            tenant_id: Some(tenant.into()),
            client_id: Some(client_id.into()),
            client_secret: Some(Secret::new(secret)),
            ..Settings::default()
        },
        ..Setup::default()
    }
}

async fn chat(harness: &Harness) -> reqwest::Response {
    harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "hi"),
        )
        .await
}

/// An app without a data-plane role gets 401 missing_role_assignment naming the roles, the
/// IAM steps, that no API permissions are needed, the 10-minute delay and its object id.
#[tokio::test]
async fn missing_role_is_explained() {
    let harness = Harness::start_with(app(
        world::TENANT_ID,
        world::NO_ROLE_CLIENT_ID,
        world::NO_ROLE_CLIENT_SECRET,
    ))
    .await;
    let response = chat(&harness).await;
    assert_eq!(response.status(), 401);
    assert!(
        response.headers().contains_key("apim-request-id"),
        "Azure's request id kept for support"
    );
    let error = error_of(response).await;
    assert_eq!(error["code"], "missing_role_assignment");
    assert_eq!(error["type"], "authentication_error");
    let message = error["message"].as_str().expect("message");
    for needle in [
        "Azure AI User",
        "Foundry User",
        "Azure AI Developer",
        "Cognitive Services OpenAI User",
        "Access control (IAM)",
        "10 minutes",
        world::NO_ROLE_OBJECT_ID,
    ] {
        assert!(
            message.contains(needle),
            "message lacks {needle:?}: {message}"
        );
    }
    let fix = error["fix"].to_string();
    for needle in [
        "Add role assignment",
        "No API permissions",
        "Owner, Contributor",
        "az role assignment create",
    ] {
        assert!(fix.contains(needle), "fix lacks {needle:?}: {fix}");
    }
    assert_eq!(error["upstream"]["status"], 401);
    assert_eq!(
        error["upstream"]["body"]["error"]["code"],
        "PermissionDenied"
    );
    assert_eq!(error["identity"]["object_id"], world::NO_ROLE_OBJECT_ID);
    assert_eq!(error["identity"]["app_id"], world::NO_ROLE_CLIENT_ID);
    assert_eq!(error["identity"]["tenant"], world::TENANT_ID);
    harness.stop().await;
}

/// A role granted while the proxy runs takes effect with no restart.
#[tokio::test]
async fn role_granted_later_just_works() {
    let harness = Harness::start_with(app(
        world::TENANT_ID,
        world::NO_ROLE_CLIENT_ID,
        world::NO_ROLE_CLIENT_SECRET,
    ))
    .await;
    assert_eq!(chat(&harness).await.status(), 401);
    harness
        .emulator
        .emulator
        .set_roles(world::NO_ROLE_CLIENT_ID, vec!["Azure AI User".into()]);
    assert_eq!(chat(&harness).await.status(), 200);
    harness.stop().await;
}

/// A token from another tenant: Azure's 400 keeps its status and gains the explanation.
#[tokio::test]
async fn wrong_tenant_is_explained() {
    let harness = Harness::start_with(app(
        world::OTHER_TENANT_ID,
        world::OTHER_CLIENT_ID,
        world::OTHER_CLIENT_SECRET,
    ))
    .await;
    let response = chat(&harness).await;
    assert_eq!(response.status(), 400);
    let error = error_of(response).await;
    assert_eq!(error["code"], "token_wrong_tenant");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains(world::OTHER_TENANT_ID)
    );
    assert_eq!(error["upstream"]["status"], 400);
    harness.stop().await;
}

/// A token for the wrong audience is told apart from an expired one by decoding it.
#[tokio::test]
async fn wrong_audience_is_explained() {
    let mut setup = Setup::default();
    setup.settings.scope = Some("https://ml.azure.com/.default".into());
    let harness = Harness::start_with(setup).await;
    let response = chat(&harness).await;
    assert_eq!(response.status(), 401);
    let error = error_of(response).await;
    assert_eq!(error["code"], "token_wrong_audience");
    let message = error["message"].as_str().expect("message");
    assert!(message.contains("https://ml.azure.com"), "{message}");
    assert!(
        error["fix"][0]
            .as_str()
            .expect("fix")
            .contains("FOUNDRY_SCOPE"),
        "{error}"
    );
    assert_eq!(error["upstream"]["body"]["statusCode"], 401);
    assert_eq!(error["identity"]["audience"], "https://ml.azure.com");
    harness.stop().await;
}

/// Each credential Entra refuses gets 401 with its AADSTS code explained, on every request
/// and on /readyz (503), while the process stays up and keeps retrying.
#[tokio::test]
async fn entra_refusals_are_explained() {
    let cases = [
        (
            world::TENANT_ID,
            world::CLIENT_ID,
            "wrong-secret",
            "invalid_client_secret",
            7_000_215,
            "Value",
        ),
        (
            world::TENANT_ID,
            world::EXPIRED_CLIENT_ID,
            world::EXPIRED_CLIENT_SECRET,
            "client_secret_expired",
            7_000_222,
            "New client secret",
        ),
        (
            world::TENANT_ID,
            "00000000-0000-0000-0000-00000000abcd",
            "x",
            "unknown_client_id",
            700_016,
            "Application (client) ID",
        ),
        (
            "00000000-0000-0000-0000-0000000000ff",
            world::CLIENT_ID,
            world::CLIENT_SECRET,
            "unknown_tenant",
            90_002,
            "Directory (tenant) ID",
        ),
    ];
    for (tenant, client, secret, code, aadsts, fix_word) in cases {
        let harness = Harness::start_with(app(tenant, client, secret)).await;
        let response = chat(&harness).await;
        assert_eq!(response.status(), 401, "{code}");
        let error = error_of(response).await;
        assert_eq!(error["code"], code);
        assert!(
            error["message"]
                .as_str()
                .expect("message")
                .contains(&format!("AADSTS{aadsts}")),
            "{error}"
        );
        assert!(
            error["fix"].to_string().contains(fix_word),
            "{code}: {}",
            error["fix"]
        );
        assert_eq!(error["upstream"]["body"]["error_codes"][0], aadsts);
        assert!(
            !error.to_string().contains(secret) || secret.len() < 3,
            "no secret echoed"
        );

        let ready = harness
            .client
            .get(harness.url("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(ready.status(), 503);
        let body: serde_json::Value = ready.json().await.expect("json");
        assert_eq!(body["status"], "not_ready");
        assert_eq!(body["code"], code);
        let health = harness
            .client
            .get(harness.url("/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(health.status(), 200, "still alive");
        harness.stop().await;
    }
}

/// The scope's resource unknown to Entra (AADSTS500011) is explained too.
#[tokio::test]
async fn unknown_resource_scope_is_explained() {
    let mut setup = Setup::default();
    setup.settings.scope = Some("https://unknown-resource.example.com/.default".into());
    let harness = Harness::start_with(setup).await;
    let error = error_of(chat(&harness).await).await;
    assert_eq!(error["code"], "unknown_resource");
    harness.stop().await;
}

/// Entra unreachable with no token held: 503 with retry-after; once Entra is back the proxy
/// recovers by itself.
#[tokio::test]
async fn entra_outage_then_recovery() {
    let harness = Harness::start_with(Setup {
        entra_fault: Some(EntraFault::Status(503)),
        ..Setup::default()
    })
    .await;
    let response = chat(&harness).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let error = error_of(response).await;
    assert_eq!(error["code"], "entra_unavailable");
    assert!(
        error["message"].as_str().expect("message").contains("503"),
        "{error}"
    );
    let ready = harness
        .client
        .get(harness.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);

    harness.emulator.emulator.set_entra_fault(None);
    let mut recovered = false;
    for _ in 0..150 {
        if chat(&harness).await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "recovers by itself after Entra comes back");
    harness.stop().await;
}

/// A Claude deployment called on chat/completions: Azure's 404 `api_not_supported` keeps its
/// status and body, and is explained as the Messages-API-only model it is (not as a missing
/// deployment). Azure's answer comes from a stand-in upstream with the body users reported
/// (docs/azure-facts.md §7).
#[tokio::test]
async fn claude_on_chat_completions_is_explained() {
    let app = axum::Router::new().fallback(|| async {
        (
            http::StatusCode::NOT_FOUND,
            [("content-type", "application/json")],
            r#"{"error":{"code":"api_not_supported","message":"Requested API is currently not supported"}}"#,
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut emulator_world = Setup::default();
    emulator_world.settings.endpoint = Some(upstream);
    let harness = Harness::start_with(emulator_world).await;
    harness.wait_ready().await;
    let response = harness
        .post_json(
            "/v1/chat/completions",
            serde_json::json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(response.status(), 404);
    let error = error_of(response).await;
    assert_eq!(error["code"], "api_not_supported", "{error}");
    assert_eq!(
        error["upstream"]["body"]["error"]["code"],
        "api_not_supported"
    );
    let message = error["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("claude-sonnet-4-5") && message.contains("Messages API"),
        "{message}"
    );
    harness.stop().await;
}
