//! Every way to sign in as an App Registration, end to end against the emulator: a secret
//! from a file, a certificate (PEM, PKCS#12 modern and legacy), and a federated token file
//! (workload identity); each rotated without a restart, each failure explained.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Harness, Setup, error_of};
use foundry_proxy::config::{CredentialSettings, Settings};
use foundry_proxy::emulator::identities as world;
use foundry_proxy::secret::Secret;

/// A scratch file for this test run.
fn scratch(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fp-credentials-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write");
    path
}

fn with_credential(credential: CredentialSettings) -> Setup {
    Setup {
        settings: Settings {
            credential: Some(credential),
            ..Settings::default()
        },
        ..Setup::default()
    }
}

fn certificate(path: PathBuf, password: Option<&str>) -> Setup {
    with_credential(CredentialSettings {
        kind: Some("client-certificate".into()),
        certificate_path: Some(path),
        certificate_password: password.map(Secret::new),
        ..CredentialSettings::default()
    })
}

async fn chat_status(harness: &Harness) -> u16 {
    harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "hi"),
        )
        .await
        .status()
        .as_u16()
}

/// Polls (bounded) until a chat request succeeds: recovery after a rotation waits for the
/// refresher's next attempt.
async fn recovers(harness: &Harness) -> bool {
    for _ in 0..100 {
        if chat_status(harness).await == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A certificate in PEM, and in PKCS#12 with modern and legacy encryption, signs a client
/// assertion Entra accepts; the token request carries the assertion and no secret.
#[tokio::test]
async fn certificate_formats_work() {
    let cases = [
        (
            "pem",
            scratch("client.pem", world::CERTIFICATE_PEM.as_bytes()),
            None,
        ),
        (
            "p12",
            scratch("client.p12", world::CERTIFICATE_P12),
            Some(world::CERTIFICATE_P12_PASSWORD),
        ),
        (
            "legacy p12",
            scratch("client-legacy.p12", world::CERTIFICATE_P12_LEGACY),
            Some(world::CERTIFICATE_P12_PASSWORD),
        ),
    ];
    for (label, path, password) in cases {
        let harness = Harness::start_with(certificate(path, password)).await;
        assert_eq!(chat_status(&harness).await, 200, "{label}");
        let request = harness
            .emulator
            .emulator
            .token_requests()
            .pop()
            .expect("token request");
        assert_eq!(
            request
                .form
                .get("client_assertion_type")
                .map(String::as_str),
            Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
            "{label}"
        );
        assert!(request.form.contains_key("client_assertion"), "{label}");
        assert!(!request.form.contains_key("client_secret"), "{label}");
        harness.stop().await;
    }
}

/// The chain can be sent as x5c (AZURE_CLIENT_SEND_CERTIFICATE_CHAIN).
#[tokio::test]
async fn certificate_chain_can_be_sent() {
    let mut setup = certificate(
        scratch("chain.pem", world::CERTIFICATE_PEM.as_bytes()),
        None,
    );
    if let Some(credential) = setup.settings.credential.as_mut() {
        credential.send_certificate_chain = Some(true);
    }
    let harness = Harness::start_with(setup).await;
    assert_eq!(chat_status(&harness).await, 200);
    harness.stop().await;
}

/// A wrong PKCS#12 password and a certificate Entra does not know are both explained; a
/// certificate rotated in place is used from the next refresh on, without a restart.
#[tokio::test]
async fn certificate_failures_and_rotation() {
    let harness = Harness::start_with(certificate(
        scratch("wrong-password.p12", world::CERTIFICATE_P12),
        Some("not-the-password"),
    ))
    .await;
    let response = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "hi"),
        )
        .await;
    assert_eq!(response.status(), 401);
    let error = error_of(response).await;
    assert_eq!(error["code"], "certificate_unreadable");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("PASSWORD"),
        "{error}"
    );
    harness.stop().await;

    let path = scratch(
        "rotating.pem",
        world::UNREGISTERED_CERTIFICATE_PEM.as_bytes(),
    );
    let harness = Harness::start_with(certificate(path.clone(), None)).await;
    let response = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "hi"),
        )
        .await;
    assert_eq!(response.status(), 401);
    let error = error_of(response).await;
    assert_eq!(error["code"], "certificate_not_registered");
    assert_eq!(error["upstream"]["body"]["error_codes"][0], 700_027);
    std::fs::write(&path, world::CERTIFICATE_PEM).expect("rotate");
    assert!(
        recovers(&harness).await,
        "the rotated certificate is picked up"
    );
    harness.stop().await;
}

/// A secret given as a file is re-read at every refresh: a wrong one is explained, the
/// corrected file is used without a restart; an empty file is explained too.
#[tokio::test]
async fn secret_file_rotation() {
    let path = scratch("secret", b"not-the-secret\n");
    let setup = Setup {
        settings: Settings {
            client_secret: Some(Secret::new("")),
            credential: Some(CredentialSettings {
                client_secret_file: Some(path.clone()),
                ..CredentialSettings::default()
            }),
            ..Settings::default()
        },
        ..Setup::default()
    };
    let harness = Harness::start_with(setup).await;
    let error = error_of(
        harness
            .post_json(
                "/v1/chat/completions",
                Harness::chat(world::CHAT_DEPLOYMENT, "hi"),
            )
            .await,
    )
    .await;
    assert_eq!(error["code"], "invalid_client_secret");
    std::fs::write(&path, format!("{}\n", world::CLIENT_SECRET)).expect("rotate");
    assert!(recovers(&harness).await, "the rotated secret is picked up");
    harness.stop().await;

    let empty = scratch("empty-secret", b"\n");
    let setup = Setup {
        settings: Settings {
            client_secret: Some(Secret::new("")),
            credential: Some(CredentialSettings {
                client_secret_file: Some(empty),
                ..CredentialSettings::default()
            }),
            ..Settings::default()
        },
        ..Setup::default()
    };
    let harness = Harness::start_with(setup).await;
    let error = error_of(
        harness
            .post_json(
                "/v1/chat/completions",
                Harness::chat(world::CHAT_DEPLOYMENT, "hi"),
            )
            .await,
    )
    .await;
    assert_eq!(error["code"], "secret_file_unreadable");
    harness.stop().await;
}

fn workload_identity(token_file: PathBuf) -> Setup {
    with_credential(CredentialSettings {
        kind: Some("workload-identity".into()),
        federated_token_file: Some(token_file),
        ..CredentialSettings::default()
    })
}

/// Workload identity: the projected token is read at every refresh (the kubelet rotates it);
/// with 3-second Entra tokens and a token file replaced while serving, no request fails.
#[tokio::test]
async fn workload_identity_reads_the_file_anew() {
    let path = scratch("federated-token", b"");
    let mut setup = workload_identity(path.clone());
    setup.emulator.token_lifetime_secs = 3;
    let harness = Harness::start_with(setup).await;
    let emulator = std::sync::Arc::clone(&harness.emulator.emulator);
    std::fs::write(
        &path,
        emulator.federated_token(world::FEDERATED_SUBJECT, world::FEDERATED_AUDIENCE, 3600),
    )
    .expect("token");
    assert!(
        recovers(&harness).await,
        "works once the kubelet has written the file"
    );
    for round in 0..3 {
        std::fs::write(
            &path,
            emulator.federated_token(world::FEDERATED_SUBJECT, world::FEDERATED_AUDIENCE, 3600),
        )
        .expect("rotate");
        for _ in 0..10 {
            assert_eq!(chat_status(&harness).await, 200, "round {round}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        emulator.tokens_issued() >= 3,
        "tokens were renewed with the rotated file"
    );
    harness.stop().await;
}

/// A missing token file and a federated credential that does not match are explained.
#[tokio::test]
async fn workload_identity_failures() {
    let missing = std::env::temp_dir().join("fp-no-such-dir/azure-identity-token");
    let harness = Harness::start_with(workload_identity(missing)).await;
    let response = harness
        .post_json(
            "/v1/chat/completions",
            Harness::chat(world::CHAT_DEPLOYMENT, "hi"),
        )
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        error_of(response).await["code"],
        "federated_token_unreadable"
    );
    harness.stop().await;

    let path = scratch("wrong-subject-token", b"");
    let harness = Harness::start_with(workload_identity(path.clone())).await;
    std::fs::write(
        &path,
        harness.emulator.emulator.federated_token(
            "system:serviceaccount:other:intruder",
            world::FEDERATED_AUDIENCE,
            3600,
        ),
    )
    .expect("token");
    let mut last = serde_json::Value::Null;
    for _ in 0..50 {
        let response = harness
            .post_json(
                "/v1/chat/completions",
                Harness::chat(world::CHAT_DEPLOYMENT, "hi"),
            )
            .await;
        last = error_of(response).await;
        if last["code"] == "federated_credential_mismatch" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["code"], "federated_credential_mismatch", "{last}");
    assert!(
        last["message"]
            .as_str()
            .expect("message")
            .contains("system:serviceaccount:other:intruder"),
        "{last}"
    );
    harness.stop().await;
}

/// Managed identity through the proxy: IMDS (system- and user-assigned) and the App Service
/// endpoint, whose announcement makes `auto` choose it; the token is the identity's.
#[tokio::test]
async fn managed_identity_through_the_proxy() {
    let url = "{emulator}";
    let imds = |client_id: Option<&str>| Setup {
        settings: Settings {
            tenant_id: Some(String::new()),
            client_id: Some(client_id.unwrap_or_default().to_owned()),
            client_secret: Some(Secret::new("")),
            credential: Some(CredentialSettings {
                kind: Some("managed-identity".into()),
                imds_endpoint: Some(url.to_owned()),
                ..CredentialSettings::default()
            }),
            ..Settings::default()
        },
        ..Setup::default()
    };
    let app_service = Setup {
        settings: Settings {
            tenant_id: Some(String::new()),
            client_id: Some(String::new()),
            client_secret: Some(Secret::new("")),
            credential: Some(CredentialSettings {
                identity_endpoint: Some(format!("{url}/msi/token")),
                identity_header: Some(Secret::new(world::IDENTITY_HEADER)),
                ..CredentialSettings::default()
            }),
            ..Settings::default()
        },
        ..Setup::default()
    };
    for (label, setup, object_id) in [
        ("imds system-assigned", imds(None), world::MI_OBJECT_ID),
        (
            "imds user-assigned",
            imds(Some(world::USER_MI_CLIENT_ID)),
            world::USER_MI_OBJECT_ID,
        ),
        ("app service", app_service, world::MI_OBJECT_ID),
    ] {
        let harness = Harness::start_with(setup).await;
        let response = harness
            .post_json(
                "/v1/chat/completions",
                Harness::chat(world::CHAT_DEPLOYMENT, "hi"),
            )
            .await;
        let status = response.status().as_u16();
        assert_eq!(
            status,
            200,
            "{label}: {}",
            response.text().await.unwrap_or_default()
        );
        let record = harness
            .emulator
            .emulator
            .inference_requests()
            .pop()
            .expect("recorded");
        assert_eq!(record.token_oid.as_deref(), Some(object_id), "{label}");
        let ready: serde_json::Value = harness.get_json("/readyz").await;
        assert_eq!(ready["credential"], "managed-identity", "{label}");
        harness.stop().await;
    }
}
