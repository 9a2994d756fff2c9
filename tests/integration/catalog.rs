//! The diagnosis catalog end to end: every Azure and Entra refusal it knows, played for real
//! by the emulator (or, for the two catch-alls, by a small fake), comes out of the proxy with
//! its code, Azure's status, the cause, the fix and Azure's own body.

use crate::common;

use std::collections::BTreeSet;

use axum::http::StatusCode;
use common::{Harness, Setup, error_of};
use foundry_proxy::config::Settings;
use foundry_proxy::diagnose::catalog::{CATALOG, Origin};
use foundry_proxy::emulator::{EmulatorConfig, EntraFault, ResourceKind, identities as world};
use foundry_proxy::secret::Secret;
use serde_json::{Value, json};

/// One refusal to play and what the caller must see.
struct Case {
    code: &'static str,
    status: u16,
    setup: fn() -> Setup,
    fault: Option<&'static str>,
    path: &'static str,
    body: fn() -> Value,
    /// A phrase the message must contain.
    phrase: &'static str,
}

fn chat() -> Value {
    Harness::chat(world::CHAT_DEPLOYMENT, "hi")
}
fn chat_unknown_deployment() -> Value {
    Harness::chat("no-such-deployment", "hi")
}
fn responses() -> Value {
    json!({"model": world::CHAT_DEPLOYMENT, "input": "hi"})
}
fn demo() -> Setup {
    Setup::default()
}
fn app(tenant: &str, client: &str, secret: &str) -> Setup {
    Setup {
        settings: Settings {
            tenant_id: Some(tenant.into()),
            client_id: Some(client.into()),
            client_secret: Some(Secret::new(secret)),
            ..Settings::default()
        },
        ..Setup::default()
    }
}
fn no_role_app() -> Setup {
    app(
        world::TENANT_ID,
        world::NO_ROLE_CLIENT_ID,
        world::NO_ROLE_CLIENT_SECRET,
    )
}
fn other_tenant_app() -> Setup {
    app(
        world::OTHER_TENANT_ID,
        world::OTHER_CLIENT_ID,
        world::OTHER_CLIENT_SECRET,
    )
}
/// A scope whose audience no OpenAI route accepts (the v1 API takes both
/// cognitiveservices and ai.azure.com on either resource kind, docs/azure-facts.md §7).
fn classic_resource_with_ml_scope() -> Setup {
    let mut setup = Setup {
        emulator: EmulatorConfig {
            resource_kind: ResourceKind::OpenAi,
            ..EmulatorConfig::default()
        },
        ..Setup::default()
    };
    setup.settings.scope = Some("https://ml.azure.com/.default".into());
    setup
}
fn clock_two_hours_ahead() -> Setup {
    // The emulator's clock 2 h behind ours: to this machine, Entra's tokens look expired.
    Setup {
        emulator: EmulatorConfig {
            clock_offset_secs: -7200,
            ..EmulatorConfig::default()
        },
        ..Setup::default()
    }
}
fn models_style() -> Setup {
    let mut setup = Setup::default();
    setup.settings.api = Some("models".into());
    setup.settings.endpoint = Some("/models".into());
    setup
}
fn unsupported_version() -> Setup {
    let mut setup = Setup::default();
    setup.settings.api = Some("deployments".into());
    setup.settings.api_version = Some("2001-01-01".into());
    setup
}

const fn case(code: &'static str, status: u16, fault: &'static str, phrase: &'static str) -> Case {
    Case {
        code,
        status,
        setup: demo,
        fault: Some(fault),
        path: "/v1/chat/completions",
        body: chat,
        phrase,
    }
}

fn azure_cases() -> Vec<Case> {
    vec![
        case(
            "missing_role_assignment",
            401,
            "permission-denied",
            "Access control (IAM)",
        ),
        case(
            "missing_role_assignment",
            401,
            "permission-denied-legacy",
            "Azure AI User",
        ),
        case(
            "missing_role_assignment",
            401,
            "permission-denied-foundry",
            "Azure AI Developer",
        ),
        Case {
            setup: no_role_app,
            fault: None,
            ..case("missing_role_assignment", 401, "", world::NO_ROLE_OBJECT_ID)
        },
        Case {
            setup: no_role_app,
            fault: None,
            path: "/v1/responses",
            body: responses,
            ..case("missing_responses_permission", 401, "", "responses/write")
        },
        Case {
            setup: other_tenant_app,
            fault: None,
            ..case("token_wrong_tenant", 400, "", world::OTHER_TENANT_ID)
        },
        Case {
            setup: classic_resource_with_ml_scope,
            fault: None,
            ..case("token_wrong_audience", 401, "", "https://ml.azure.com")
        },
        Case {
            setup: clock_two_hours_ahead,
            ..case("token_expired", 401, "unauthorized", "clock")
        },
        case("token_rejected", 401, "unauthorized", "unexpired"),
        case(
            "custom_subdomain_required",
            400,
            "regional-endpoint",
            "regional endpoint",
        ),
        case(
            "key_auth_disabled",
            403,
            "key-auth-disabled",
            "Entra ID tokens",
        ),
        case("api_key_expected", 401, "bad-key", "API key"),
        case(
            "network_rules",
            403,
            "network-rules",
            "Virtual Network/Firewall rules",
        ),
        case(
            "private_endpoint_required",
            403,
            "private-endpoint",
            "private endpoint",
        ),
        case(
            "private_endpoint_required",
            403,
            "vnet-endpoint",
            "private endpoint",
        ),
        case(
            "deployment_not_found",
            404,
            "deployment-not-found",
            "deployment name",
        ),
        Case {
            fault: None,
            body: chat_unknown_deployment,
            ..case("deployment_not_found", 404, "", "'no-such-deployment'")
        },
        Case {
            setup: models_style,
            fault: None,
            body: chat_unknown_deployment,
            ..case("unknown_model", 404, "", "'no-such-deployment'")
        },
        case(
            "resource_not_found",
            404,
            "resource-not-found",
            "no such route",
        ),
        Case {
            setup: unsupported_version,
            fault: None,
            ..case("api_version_not_supported", 400, "", "'2001-01-01'")
        },
        case(
            "api_version_not_supported",
            400,
            "api-version-unsupported",
            "api-version",
        ),
        case(
            "api_version_too_old",
            400,
            "api-version-too-old",
            "2024-12-01-preview",
        ),
        case(
            "parameter_not_supported",
            422,
            "parameter-not-supported",
            "response_format",
        ),
    ]
}

/// Each Azure refusal the emulator plays comes back explained: its code, Azure's status,
/// a message with the cause, fix steps, and Azure's body under `upstream`.
#[tokio::test]
async fn azure_refusals_are_explained() {
    for case in azure_cases() {
        let harness = Harness::start_with((case.setup)()).await;
        let mut request = harness
            .client
            .post(harness.url(case.path))
            .json(&(case.body)());
        if let Some(fault) = case.fault {
            request = request.header("x-emulator-fault", fault);
        }
        let response = request.send().await.expect("answer");
        let label = format!("{} ({})", case.code, case.fault.unwrap_or("natural"));
        assert_eq!(response.status(), case.status, "{label}");
        assert!(
            response.headers().contains_key("apim-request-id"),
            "{label}: Azure's request id kept"
        );
        let error = error_of(response).await;
        assert_eq!(error["code"], case.code, "{label}: {error}");
        let message = error["message"].as_str().expect("message");
        assert!(
            message.contains(case.phrase),
            "{label}: {message:?} lacks {:?}",
            case.phrase
        );
        assert!(
            !message.contains("<client_id>") && !message.contains("<object_id>"),
            "{label}: unfilled: {message}"
        );
        assert!(
            error["fix"].as_array().is_some_and(|f| !f.is_empty()),
            "{label}"
        );
        assert_eq!(error["upstream"]["status"], case.status, "{label}");
        assert!(!error["upstream"]["body"].is_null(), "{label}");
        harness.stop().await;
    }
}

/// Each AADSTS code of the fact sheet, answered by Entra for the proxy's credential, comes back
/// as 401 with its own code and the AADSTS number, on requests and on /readyz.
#[tokio::test]
async fn entra_refusals_are_explained() {
    for (aadsts, code) in entra_cases() {
        let setup = Setup {
            entra_fault: Some(EntraFault::Aadsts(aadsts)),
            ..Setup::default()
        };
        let harness = Harness::start_with(setup).await;
        let response = harness.post_json("/v1/chat/completions", chat()).await;
        assert_eq!(response.status(), 401, "{aadsts}");
        let error = error_of(response).await;
        assert_eq!(error["code"], code, "{aadsts}: {error}");
        assert_eq!(
            error["upstream"]["body"]["error_codes"][0], aadsts,
            "{aadsts}"
        );
        assert!(
            error["fix"].as_array().is_some_and(|f| !f.is_empty()),
            "{aadsts}"
        );
        let ready: Value = harness.get_json("/readyz").await;
        assert_eq!(ready["code"], code, "{aadsts}");
        harness.stop().await;
    }
}

fn entra_cases() -> Vec<(u32, &'static str)> {
    vec![
        (7_000_215, "invalid_client_secret"),
        (7_000_222, "client_secret_expired"),
        (700_016, "unknown_client_id"),
        (90_002, "unknown_tenant"),
        (70_011, "invalid_scope"),
        (500_011, "unknown_resource"),
        (700_022, "scope_multiple_resources"),
        (7_000_218, "missing_client_credential"),
        (700_027, "certificate_not_registered"),
        (700_024, "assertion_time_invalid"),
        (70_021, "federated_credential_mismatch"),
        (900_144, "missing_parameter"),
        (9_001_023, "tenant_specific_endpoint_required"),
    ]
}

/// Entra failing transiently (AADSTS90033, 503) with no token held is a 503 with retry-after.
#[tokio::test]
async fn entra_transient_failure_is_503() {
    let harness = Harness::start_with(Setup {
        entra_fault: Some(EntraFault::Aadsts(90_033)),
        ..Setup::default()
    })
    .await;
    let response = harness.post_json("/v1/chat/completions", chat()).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let error = error_of(response).await;
    assert_eq!(error["code"], "entra_unavailable");
    assert_eq!(error["upstream"]["body"]["error_codes"][0], 90_033);
    harness.stop().await;
}

/// A small server that answers every request with `status` and `body`.
async fn fake(status: u16, body: &'static str) -> String {
    let app = axum::Router::new().fallback(move || async move {
        (
            StatusCode::from_u16(status).expect("status"),
            [("content-type", "application/json")],
            body,
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A 401/403 the catalog does not know keeps Azure's status and body, wrapped in the OpenAI
/// shape with generic advice: never swallowed.
#[tokio::test]
async fn unknown_refusal_is_wrapped_not_swallowed() {
    let upstream = fake(
        403,
        r#"{"error":{"code":"SomethingNew","message":"Blocked by a policy nobody has seen yet."}}"#,
    )
    .await;
    let mut setup = Setup::default();
    setup.settings.endpoint = Some(upstream);
    let harness = Harness::start_with(setup).await;
    let response = harness.post_json("/v1/chat/completions", chat()).await;
    assert_eq!(response.status(), 403);
    let error = error_of(response).await;
    assert_eq!(error["code"], "upstream_refused");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("Blocked by a policy nobody has seen yet.")
    );
    assert_eq!(error["upstream"]["body"]["error"]["code"], "SomethingNew");
    harness.stop().await;
}

/// An AADSTS code outside the catalog is still explained with Entra's own words.
#[tokio::test]
async fn unknown_entra_refusal_is_explained() {
    let entra = fake(
        400,
        r#"{"error":"invalid_request","error_description":"AADSTS50049: Unknown or invalid instance.\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: 2026-11-26 10:00:00Z","error_codes":[50049],"timestamp":"2026-11-26 10:00:00Z","trace_id":"t","correlation_id":"c"}"#,
    )
    .await;
    let mut setup = Setup::default();
    setup.settings.authority_host = Some(entra);
    let harness = Harness::start_with(setup).await;
    let error = error_of(harness.post_json("/v1/chat/completions", chat()).await).await;
    assert_eq!(error["code"], "entra_refused");
    assert!(
        error["message"]
            .as_str()
            .expect("message")
            .contains("AADSTS50049: Unknown or invalid instance.")
    );
    harness.stop().await;
}

/// Every catalog entry is asserted by some test: the Azure and Entra ones in this file, the
/// credential and proxy ones in the test file of their capability (found by the code appearing
/// as a quoted string in a Rust or Python test).
#[test]
fn every_catalog_refusal_has_an_end_to_end_test() {
    let mut covered: BTreeSet<&str> = azure_cases().iter().map(|c| c.code).collect();
    covered.extend(entra_cases().iter().map(|(_, code)| *code));
    covered.extend(["entra_unavailable", "upstream_refused", "entra_refused"]);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = String::new();
    for dir in ["tests/integration", "tests/integration/fuzz", "tests/e2e"] {
        for entry in std::fs::read_dir(root.join(dir))
            .expect("test dir")
            .flatten()
        {
            let path = entry.path();
            let is_test = path.extension().is_some_and(|e| e == "rs" || e == "py")
                && !path.ends_with("catalog.rs");
            if is_test {
                sources.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let missing: Vec<&str> = CATALOG
        .iter()
        .filter(|e| match e.origin {
            Origin::Azure | Origin::Entra => !covered.contains(e.code.as_str()),
            Origin::Credential | Origin::Proxy => !sources.contains(&format!("\"{}\"", e.code)),
        })
        .map(|e| e.code.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "catalog entries no test asserts: {missing:?}"
    );
}
