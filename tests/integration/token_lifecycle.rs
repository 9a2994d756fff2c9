//! The token: requested exactly as Entra expects, renewed ahead of expiry, and refreshed
//! once (single flight) when Azure rejects it.

use crate::common;

use std::time::Duration;

use common::{Harness, Setup};
use foundry_proxy::emulator::{EmulatorConfig, identities as world};

/// The token request is a form POST to {authority}/{tenant}/oauth2/v2.0/token with exactly
/// the client-credentials fields and the default scope.
#[tokio::test]
async fn token_request_is_client_credentials() {
    let harness = Harness::start().await;
    harness.wait_ready().await;
    let requests = harness.emulator.emulator.token_requests();
    let first = requests.first().expect("a token request");
    assert_eq!(first.tenant, world::TENANT_ID);
    assert_eq!(
        first.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert!(!first.basic_auth);
    let fields: Vec<(&str, &str)> = first
        .form
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("client_id", world::CLIENT_ID),
            ("client_secret", "<redacted>"),
            ("grant_type", "client_credentials"),
            ("scope", "https://cognitiveservices.azure.com/.default"),
        ]
    );
    assert_eq!(first.status, 200);
    harness.stop().await;
}

/// Tokens that live 3 seconds (expires_in sent as a string) are renewed at half their
/// lifetime: a steady stream of requests over several lifetimes never fails.
#[tokio::test]
async fn short_lived_tokens_renewed_without_failures() {
    let emulator = EmulatorConfig {
        token_lifetime_secs: 3,
        expires_in_as_string: true,
        ..EmulatorConfig::default()
    };
    let harness = Harness::start_with(Setup {
        emulator,
        ..Setup::default()
    })
    .await;
    harness.wait_ready().await;
    let mut failures = Vec::new();
    for i in 0..70 {
        let response = harness
            .post_json(
                "/v1/chat/completions",
                Harness::chat(world::CHAT_DEPLOYMENT, "tick"),
            )
            .await;
        if response.status() != 200 {
            failures.push((i, response.status()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let issued = harness.emulator.emulator.tokens_issued();
    assert!(
        (4..=8).contains(&issued),
        "about one token per 1.5 s over ~7 s, got {issued}"
    );
    harness.stop().await;
}

/// /readyz reports the token's remaining life and the next refresh, and the identity.
#[tokio::test]
async fn readyz_reports_token_state() {
    let harness = Harness::start().await;
    harness.wait_ready().await;
    let body: serde_json::Value = harness.get_json("/readyz").await;
    assert_eq!(body["status"], "ready");
    assert_eq!(body["credential"], "client-secret");
    let expires = body["token_expires_in_secs"].as_u64().expect("expiry");
    let refresh = body["next_refresh_in_secs"].as_u64().expect("refresh");
    assert!(
        expires > 3500 && refresh < expires && refresh > 1700,
        "{body}"
    );
    assert_eq!(body["identity"]["object_id"], world::OBJECT_ID);
    harness.stop().await;
}

/// When Azure rejects a token the proxy still believes valid, the proxy forces one refresh
/// and retries once: the caller sees 200. Many concurrent rejections cause a single token
/// request (single flight).
#[tokio::test]
async fn rejected_token_is_refreshed_once_and_retried() {
    let harness = Harness::start().await;
    harness.wait_ready().await;
    // Past the forced-refresh cooldown that follows the first token.
    tokio::time::sleep(Duration::from_millis(5_200)).await;
    let emulator = std::sync::Arc::clone(&harness.emulator.emulator);
    let before = emulator.tokens_issued();
    emulator.revoke_issued_tokens();
    let requests = (0..20).map(|_| {
        harness.post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "again"),
        )
    });
    let statuses: Vec<u16> = futures_util::future::join_all(requests)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        emulator.tokens_issued(),
        before + 1,
        "one forced refresh for twenty rejections"
    );
    harness.stop().await;
}

/// While the first token is still on its way, requests get 503 token_pending with
/// retry-after, not a hang.
#[tokio::test]
async fn first_token_pending_is_503() {
    let policy = foundry_proxy::token::TokenPolicy {
        first_token_wait: Duration::from_millis(200),
        ..foundry_proxy::token::TokenPolicy::default()
    };
    let setup = Setup {
        entra_fault: Some(foundry_proxy::emulator::EntraFault::Stall(
            Duration::from_secs(3),
        )),
        policy: Some(policy),
        ..Setup::default()
    };
    let harness = Harness::start_with(setup).await;
    let response = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "early"),
        )
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(common::error_of(response).await["code"], "token_pending");
    harness.stop().await;
}

/// Tokens that are already expired when they arrive (expires_in 0) never reach Azure: the
/// caller gets 503 token_renewal_pending, and the refresher does not spin.
#[tokio::test]
async fn zero_lifetime_tokens_are_not_sent() {
    let emulator = EmulatorConfig {
        token_lifetime_secs: 0,
        ..EmulatorConfig::default()
    };
    let harness = Harness::start_with(Setup {
        emulator,
        ..Setup::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let response = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "now"),
        )
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        common::error_of(response).await["code"],
        "token_renewal_pending"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let issued = harness.emulator.emulator.tokens_issued();
    assert!(issued <= 4, "no hot loop: {issued} tokens in about 2.3 s");
    assert!(harness.emulator.emulator.inference_requests().is_empty());
    harness.stop().await;
}
