//! The emulator's Entra ID side over real sockets: token shapes, AADSTS refusals, injected
//! faults, the clock offset and the control endpoint, per docs/azure-facts.md §1.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::common::emulator_client::*;
use foundry_proxy::emulator::{self, EmulatorConfig, EntraFault, ResourceKind, identities};
use serde_json::{Value, json};

/// A correct client-credentials request gets Entra's success shape (numbers) and headers.
#[tokio::test]
async fn token_success_shape_and_headers() {
    let emu = start().await;
    let form = [
        ("client_id", identities::CLIENT_ID),
        ("client_secret", identities::CLIENT_SECRET),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ];
    let resp = token_response(&emu, identities::TENANT_ID, &form).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["cache-control"], "no-store, no-cache");
    assert_eq!(h["pragma"], "no-cache");
    assert!(h.contains_key("x-ms-request-id"));
    assert!(h.contains_key("x-ms-ests-server"));
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], json!(3599));
    assert_eq!(body["ext_expires_in"], json!(3599));
    assert!(
        body["access_token"]
            .as_str()
            .expect("token")
            .starts_with("eyJ")
    );
    assert_eq!(emu.emulator.tokens_issued(), 1);
}

/// Each refusal has Entra's status, `error`, AADSTS code and full error shape, in Entra's check order.
#[tokio::test]
async fn aadsts_errors_have_entra_status_and_code() {
    let emu = start().await;
    let good = |id: &'static str, secret: &'static str, scope: &'static str| {
        vec![
            ("client_id", id),
            ("client_secret", secret),
            ("scope", scope),
            ("grant_type", "client_credentials"),
        ]
    };
    let (id, secret) = (identities::CLIENT_ID, identities::CLIENT_SECRET);
    let t = identities::TENANT_ID;
    let cases: Vec<TokenCase<'_>> = vec![
        (
            "common",
            good(id, secret, SCOPE),
            400,
            "invalid_request",
            9001023,
        ),
        (
            "consumers",
            good(id, secret, SCOPE),
            400,
            "invalid_request",
            9001023,
        ),
        (
            "00000000-0000-0000-0000-000000000000",
            good(id, secret, SCOPE),
            400,
            "invalid_tenant",
            90002,
        ),
        (
            "nobody.onmicrosoft.com",
            good(id, secret, SCOPE),
            400,
            "invalid_tenant",
            90002,
        ),
        (
            t,
            vec![
                ("client_id", id),
                ("client_secret", secret),
                ("scope", SCOPE),
                ("grant_type", "password"),
            ],
            400,
            "unsupported_grant_type",
            70003,
        ),
        (
            t,
            vec![
                ("client_secret", secret),
                ("scope", SCOPE),
                ("grant_type", "client_credentials"),
            ],
            400,
            "invalid_request",
            900144,
        ),
        (
            t,
            vec![
                ("client_id", id),
                ("client_secret", secret),
                ("grant_type", "client_credentials"),
            ],
            400,
            "invalid_request",
            900144,
        ),
        (
            t,
            good(
                identities::OTHER_CLIENT_ID,
                identities::OTHER_CLIENT_SECRET,
                SCOPE,
            ),
            400,
            "unauthorized_client",
            700016,
        ),
        (
            t,
            vec![
                ("client_id", id),
                ("scope", SCOPE),
                ("grant_type", "client_credentials"),
            ],
            401,
            "invalid_client",
            7000218,
        ),
        (
            t,
            good(id, "wrong~secret", SCOPE),
            401,
            "invalid_client",
            7000215,
        ),
        (
            t,
            good(
                identities::EXPIRED_CLIENT_ID,
                identities::EXPIRED_CLIENT_SECRET,
                SCOPE,
            ),
            401,
            "invalid_client",
            7000222,
        ),
        (
            t,
            good(id, secret, "https://cognitiveservices.azure.com"),
            400,
            "invalid_scope",
            70011,
        ),
        (
            t,
            good(
                id,
                secret,
                "https://cognitiveservices.azure.com/.default https://ai.azure.com/.default",
            ),
            400,
            "invalid_scope",
            700022,
        ),
        (
            t,
            good(id, secret, "https://example.invalid/.default"),
            400,
            "invalid_resource",
            500011,
        ),
    ];
    for (tenant, form, status, error, code) in cases {
        let (got, body) = status_and_json(token_response(&emu, tenant, &form).await).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "case {code}: {body}"
        );
        assert_eq!(body["error_codes"], json!([code]), "case {code}");
        let description = body["error_description"].as_str().expect("description");
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{description}"
        );
        assert!(
            description.contains("\r\nTrace ID: ") && description.contains("\r\nCorrelation ID: ")
        );
        assert!(description.contains("\r\nTimestamp: "));
        for key in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
            assert!(body[key].is_string(), "case {code} lacks {key}");
        }
    }
    let wrong = good(id, "wrong~secret", SCOPE);
    let (_, body) = status_and_json(token_response(&emu, t, &wrong).await).await;
    let description = body["error_description"].as_str().expect("description");
    assert!(
        description.contains(&format!("for a secret added to app '{id}'.")),
        "{description}"
    );
    assert_eq!(emu.emulator.tokens_issued(), 0);
}

/// A malformed client assertion is refused with AADSTS50027 (and redacted in the records), and
/// Basic client auth works. Valid assertions are covered in `emulator_identity.rs`.
#[tokio::test]
async fn malformed_client_assertion_refused_and_basic_auth_accepted() {
    let emu = start().await;
    let form = [
        ("client_id", identities::CLIENT_ID),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", "eyJ.x.y"),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ];
    let (status, body) =
        status_and_json(token_response(&emu, identities::TENANT_ID, &form).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    assert_eq!(body["error_codes"], json!([50027]));

    let resp = client()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            emu.url(),
            identities::TENANT_DOMAIN
        ))
        .basic_auth(identities::CLIENT_ID, Some(identities::CLIENT_SECRET))
        .form(&[("scope", SCOPE), ("grant_type", "client_credentials")])
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 200);
    let records = emu.emulator.token_requests();
    assert_eq!(records[0].form["client_assertion"], "<redacted>");
    assert!(records[1].basic_auth);
}

/// With expires_in_as_string, both lifetimes are JSON strings (the v1/MSI shape).
#[tokio::test]
async fn expires_in_can_be_a_string() {
    let emu = start().await;
    emu.emulator.set_expires_in_as_string(true);
    emu.emulator.set_token_lifetime(600);
    let form = [
        ("client_id", identities::CLIENT_ID),
        ("client_secret", identities::CLIENT_SECRET),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ];
    let (_, body) = status_and_json(token_response(&emu, identities::TENANT_ID, &form).await).await;
    assert_eq!(body["expires_in"], json!("600"));
    assert_eq!(body["ext_expires_in"], json!("600"));
}

/// The token is an RS256 JWT with v1 app-only claims and exp - iat = the lifetime.
#[tokio::test]
async fn jwt_has_v1_app_only_claims() {
    let emu = start().await;
    emu.emulator.set_token_lifetime(1234);
    let token = good_token(&emu).await;
    let header = jwt_part(&token, 0);
    assert_eq!(
        (header["alg"].as_str(), header["typ"].as_str()),
        (Some("RS256"), Some("JWT"))
    );
    assert_eq!(header["x5t"], header["kid"]);
    let c = jwt_part(&token, 1);
    assert_eq!(c["aud"], "https://cognitiveservices.azure.com");
    assert_eq!(
        c["iss"],
        format!("https://sts.windows.net/{}/", identities::TENANT_ID)
    );
    assert_eq!(c["tid"], identities::TENANT_ID);
    assert_eq!(c["appid"], identities::CLIENT_ID);
    assert_eq!(c["oid"], identities::OBJECT_ID);
    assert_eq!(c["sub"], identities::OBJECT_ID);
    assert_eq!(
        (c["ver"].as_str(), c["appidacr"].as_str()),
        (Some("1.0"), Some("1"))
    );
    assert_eq!(
        c["exp"].as_u64().expect("exp") - c["iat"].as_u64().expect("iat"),
        1234
    );
    assert!(c.get("roles").is_none());
    for key in ["nbf", "idp", "uti", "rh", "aio"] {
        assert!(c.get(key).is_some(), "missing {key}");
    }
}

/// Entra faults: a status with an Entra body, a stall that still answers, and a non-JSON 200.
#[tokio::test]
async fn entra_faults() {
    let emu = start().await;
    let form = [
        ("client_id", identities::CLIENT_ID),
        ("client_secret", identities::CLIENT_SECRET),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ];
    emu.emulator.set_entra_fault(Some(EntraFault::Status(503)));
    let (status, body) =
        status_and_json(token_response(&emu, identities::TENANT_ID, &form).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );

    emu.emulator
        .set_entra_fault(Some(EntraFault::Stall(Duration::from_millis(300))));
    let started = Instant::now();
    assert_eq!(
        token_response(&emu, identities::TENANT_ID, &form)
            .await
            .status(),
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    emu.emulator.set_entra_fault(Some(EntraFault::Garbage));
    let resp = token_response(&emu, identities::TENANT_ID, &form).await;
    assert_eq!(resp.status(), 200);
    assert!(serde_json::from_str::<Value>(&resp.text().await.expect("text")).is_err());
    let statuses: Vec<u16> = emu
        .emulator
        .token_requests()
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [503, 200, 200]);
}

/// The HTTP control endpoint sets faults and roles, reports state, and resets records.
#[tokio::test]
async fn control_endpoint() {
    let emu = start().await;
    let control = |path: &str| format!("{}/_emulator/{path}", emu.url());
    let resp = client()
        .post(control("config"))
        .json(
            &json!({"entra_fault": "503", "roles": {(identities::NO_ROLE_CLIENT_ID): ["Azure AI User"]}}),
        )
        .send()
        .await
        .expect("config");
    assert_eq!(resp.status(), 204);
    let form = [
        ("client_id", identities::CLIENT_ID),
        ("client_secret", identities::CLIENT_SECRET),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ];
    assert_eq!(
        token_response(&emu, identities::TENANT_ID, &form)
            .await
            .status(),
        503
    );
    client()
        .post(control("config"))
        .json(&json!({"entra_fault": null}))
        .send()
        .await
        .expect("clear");
    let token = token_for(
        &emu,
        identities::TENANT_ID,
        identities::NO_ROLE_CLIENT_ID,
        identities::NO_ROLE_CLIENT_SECRET,
    )
    .await;
    assert_eq!(
        post(
            &chat_url(&emu, identities::CHAT_DEPLOYMENT),
            Some(&token),
            &chat_body(),
            &[]
        )
        .await
        .status(),
        200
    );

    let state: Value = client()
        .get(control("state"))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json");
    assert_eq!(state["tokens_issued"], 1);
    assert_eq!(state["token_requests"].as_array().expect("array").len(), 2);
    assert_eq!(
        state["token_requests"][1]["form"]["client_secret"],
        "<redacted>"
    );
    assert_eq!(state["inference_requests"][0]["status"], 200);
    assert_eq!(
        client()
            .post(control("reset"))
            .send()
            .await
            .expect("reset")
            .status(),
        204
    );
    assert!(
        emu.emulator.token_requests().is_empty() && emu.emulator.inference_requests().is_empty()
    );
}

/// A config file with an unknown field fails with a message naming it.
#[tokio::test]
async fn config_errors_name_the_field() {
    let dir = std::env::temp_dir().join(format!("emu-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "region = \"West Europe\"\ntoken_lifetme_secs = 5\n").expect("write");
    let err = emulator::load_config(&path)
        .expect_err("must fail")
        .to_string();
    assert!(err.contains("token_lifetme_secs"), "{err}");
    std::fs::write(
        &path,
        "region = \"West Europe\"\nstream_chunk_delay_ms = 1\nresource_kind = \"openai\"\nclock_offset_secs = -5\n",
    )
    .expect("write");
    let config = emulator::load_config(&path).expect("valid");
    assert_eq!(
        (config.region.as_str(), config.apps.len()),
        ("West Europe", 5)
    );
    assert_eq!(
        (config.resource_kind, config.clock_offset_secs),
        (ResourceKind::OpenAi, -5)
    );
    assert_eq!(
        EmulatorConfig::default().resource_kind,
        ResourceKind::Foundry
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains(identities::CLIENT_SECRET));
}

/// `shutdown` stops the server: the port no longer answers afterwards.
#[tokio::test]
async fn shutdown_stops_the_server() {
    let emu = start().await;
    let url = format!("{}/_emulator/state", emu.url());
    assert_eq!(
        client().get(&url).send().await.expect("state").status(),
        200
    );
    emu.shutdown().await;
    assert!(client().get(&url).send().await.is_err());
}

/// Each AADSTS fault answers as Entra does: status, `error`, the code, the verbatim message with
/// the request's client id, tenant and scope, and the full error shape.
#[tokio::test]
async fn aadsts_faults_answer_like_entra() {
    let emu = start().await;
    let (id, t) = (identities::CLIENT_ID, identities::TENANT_ID);
    let cases: Vec<(u32, u16, &str, String)> = vec![
        (
            7000215,
            401,
            "invalid_client",
            format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{id}'."),
        ),
        (
            7000222,
            401,
            "invalid_client",
            format!("The provided client secret keys for app '{id}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds."),
        ),
        (
            700016,
            400,
            "unauthorized_client",
            format!("Application with identifier '{id}' was not found in the directory '{t}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."),
        ),
        (
            90002,
            400,
            "invalid_tenant",
            format!("Tenant '{t}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."),
        ),
        (
            70011,
            400,
            "invalid_scope",
            format!("The provided value for the input parameter 'scope' is not valid. The scope {SCOPE} is not valid."),
        ),
        (
            500011,
            400,
            "invalid_resource",
            format!("The resource principal named https://cognitiveservices.azure.com was not found in the tenant named {t}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You might have sent your authentication request to the wrong tenant."),
        ),
        (
            7000218,
            401,
            "invalid_client",
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.".to_owned(),
        ),
        (
            700027,
            401,
            "invalid_client",
            "Client assertion contains an invalid signature. [Reason - The key was not found., Thumbprint of key used by client: '".to_owned(),
        ),
        (
            700024,
            401,
            "invalid_client",
            "Client assertion is not within its valid time range. Current time: ".to_owned(),
        ),
        (
            70021,
            401,
            "unauthorized_client",
            "No matching federated identity record found for presented assertion. Assertion Issuer: '".to_owned(),
        ),
        (
            700022,
            400,
            "invalid_scope",
            format!("The provided value for the input parameter scope is not valid because it contains more than one resource. Scope {SCOPE} is not valid."),
        ),
        (
            900144,
            400,
            "invalid_request",
            "The request body must contain the following parameter: 'grant_type'.".to_owned(),
        ),
        (
            9001023,
            400,
            "invalid_request",
            "The grant type isn't supported over the /common or /consumers endpoints. Please use the /organizations or tenant-specific endpoint.".to_owned(),
        ),
        (
            90033,
            503,
            "temporarily_unavailable",
            "A transient error has occurred. Please try again.".to_owned(),
        ),
    ];
    assert_eq!(cases.len(), EntraFault::AADSTS_CODES.len());
    for (code, status, error, message) in cases {
        emu.emulator.set_entra_fault(Some(EntraFault::Aadsts(code)));
        let (got, body) = status_and_json(token_response(&emu, t, &good_form()).await).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{code}: {body}"
        );
        assert_eq!(body["error_codes"], json!([code]));
        let description = body["error_description"].as_str().expect("description");
        assert!(
            description.starts_with(&format!("AADSTS{code}: {message}")),
            "{code}: {description}"
        );
        assert!(
            description.contains("\r\nTrace ID: ") && description.contains("\r\nCorrelation ID: ")
        );
        assert!(description.ends_with(&format!(
            "\r\nTimestamp: {}",
            body["timestamp"].as_str().expect("timestamp")
        )));
        assert_eq!(
            body["error_uri"],
            format!("https://login.microsoftonline.com/error?code={code}")
        );
        assert!(body["trace_id"].is_string() && body["correlation_id"].is_string());
        let record = emu.emulator.token_requests().pop().expect("record");
        assert_eq!((record.status, record.aadsts), (status, Some(code)));
    }
    assert_eq!(emu.emulator.tokens_issued(), 0);
}

/// Injected assertion errors quote the request's assertion: thumbprint, times, issuer and subject.
#[tokio::test]
async fn aadsts_faults_quote_the_assertion() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let emu = start().await;
    let encode = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let sha1 = [0xABu8; 20];
    let assertion = format!(
        "{}.{}.sig",
        encode(json!({"alg": "RS256", "typ": "JWT", "x5t": URL_SAFE_NO_PAD.encode(sha1)})),
        encode(
            json!({"iss": "https://token.actions.githubusercontent.com", "sub": "repo:o/r:ref:refs/heads/main", "aud": "api://AzureADTokenExchange", "nbf": 0, "exp": 300})
        )
    );
    let form = [
        ("client_id", identities::CLIENT_ID),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion.as_str()),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ];
    let description = |body: &Value| body["error_description"].as_str().expect("d").to_owned();

    emu.emulator
        .set_entra_fault(Some(EntraFault::Aadsts(700027)));
    let (_, body) = status_and_json(token_response(&emu, identities::TENANT_ID, &form).await).await;
    assert!(
        description(&body).contains(&format!(
            "Thumbprint of key used by client: '{}']",
            "AB".repeat(20)
        )),
        "{body}"
    );

    emu.emulator
        .set_entra_fault(Some(EntraFault::Aadsts(700024)));
    let (_, body) = status_and_json(token_response(&emu, identities::TENANT_ID, &form).await).await;
    assert!(description(&body).contains(", assertion valid from 1970-01-01T00:00:00.0000000Z, expiry time of assertion 1970-01-01T00:05:00.0000000Z."), "{body}");

    emu.emulator
        .set_entra_fault(Some(EntraFault::Aadsts(70021)));
    let (_, body) = status_and_json(token_response(&emu, identities::TENANT_ID, &form).await).await;
    assert!(description(&body).starts_with("AADSTS70021: No matching federated identity record found for presented assertion. Assertion Issuer: 'https://token.actions.githubusercontent.com'. Assertion Subject: 'repo:o/r:ref:refs/heads/main'. Assertion Audience: 'api://AzureADTokenExchange'.\r\n"), "{body}");
}

/// Seconds since the epoch by the real clock.
fn real_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Epoch seconds of an Entra `YYYY-MM-DD HH:MM:SSZ` timestamp (Hinnant's days-from-civil).
fn parse_entra_timestamp(text: &str) -> i64 {
    let n = |range: std::ops::Range<usize>| text[range].parse::<i64>().expect("digits");
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

/// With a clock offset, issued tokens' iat/nbf/exp and Entra's error timestamps move with it.
#[tokio::test]
async fn clock_offset_shifts_token_times_and_timestamps() {
    let emu = start().await;
    let offset = -3 * 3600;
    emu.emulator.set_clock_offset(offset);
    assert_eq!(emu.emulator.clock_offset(), offset);
    let c = jwt_part(&good_token(&emu).await, 1);
    let iat = c["iat"].as_i64().expect("iat");
    assert!((iat - (real_now() + offset)).abs() <= 5, "iat {iat}");
    assert_eq!(c["nbf"].as_i64(), Some(iat));
    assert_eq!(c["exp"].as_i64(), Some(iat + 3599));
    let claims = emu
        .emulator
        .token_claims(identities::CLIENT_ID, "https://ai.azure.com", 60)
        .expect("claims");
    assert!((claims.iat as i64 - (real_now() + offset)).abs() <= 5);

    emu.emulator
        .set_entra_fault(Some(EntraFault::Aadsts(90002)));
    let (_, body) =
        status_and_json(token_response(&emu, identities::TENANT_ID, &good_form()).await).await;
    let stamp = parse_entra_timestamp(body["timestamp"].as_str().expect("timestamp"));
    assert!((stamp - (real_now() + offset)).abs() <= 5, "{body}");

    let offset = 400 * 86_400;
    emu.emulator.set_clock_offset(offset);
    emu.emulator
        .set_entra_fault(Some(EntraFault::Aadsts(700024)));
    let (_, body) =
        status_and_json(token_response(&emu, identities::TENANT_ID, &good_form()).await).await;
    let description = body["error_description"].as_str().expect("description");
    let current = &description[description.find("Current time: ").expect("current") + 14..][..19];
    let current = parse_entra_timestamp(&current.replace('T', " "));
    assert!(
        (current - (real_now() + offset)).abs() <= 5,
        "{description}"
    );
}

/// The control endpoint takes `aadsts:N`, the resource kind and the clock offset, refuses unknown
/// values, and reports them with the current roles.
#[tokio::test]
async fn control_endpoint_sets_kind_clock_and_aadsts() {
    let emu = start().await;
    let state = control_state(&emu).await;
    assert_eq!(
        (
            &state["resource_kind"],
            &state["clock_offset_secs"],
            &state["entra_fault"]
        ),
        (&json!("foundry"), &json!(0), &Value::Null)
    );
    assert_eq!(
        state["roles"][identities::CLIENT_ID],
        json!(["Azure AI User"])
    );
    assert_eq!(
        state["roles"][identities::NO_ROLE_CLIENT_ID],
        json!(["Contributor"])
    );

    let update = json!({
        "entra_fault": "aadsts:700027",
        "resource_kind": "openai",
        "clock_offset_secs": -30,
        "roles": {(identities::NO_ROLE_CLIENT_ID): ["Foundry User"]},
    });
    assert_eq!(control_config(&emu, &update).await, 204);
    let (status, body) =
        status_and_json(token_response(&emu, identities::TENANT_ID, &good_form()).await).await;
    assert_eq!((status, &body["error_codes"]), (401, &json!([700027])));
    assert_eq!(emu.emulator.resource_kind(), ResourceKind::OpenAi);
    let state = control_state(&emu).await;
    assert_eq!(
        (
            &state["resource_kind"],
            &state["clock_offset_secs"],
            &state["entra_fault"]
        ),
        (&json!("openai"), &json!(-30), &json!("aadsts:700027"))
    );
    assert_eq!(
        state["roles"][identities::NO_ROLE_CLIENT_ID],
        json!(["Foundry User"])
    );

    for bad in [
        json!({"entra_fault": "aadsts:12345"}),
        json!({"entra_fault": "aadsts:x"}),
        json!({"resource_kind": "cognitive"}),
        json!({"clock_offset_secs": "soon"}),
    ] {
        assert_eq!(control_config(&emu, &bad).await, 400, "{bad}");
    }
    let err = "aadsts:1".parse::<EntraFault>().expect_err("unknown code");
    assert!(err.contains("700027") && err.contains("90033"), "{err}");
    assert_eq!(
        "aadsts:90002".parse::<EntraFault>(),
        Ok(EntraFault::Aadsts(90002))
    );
}
