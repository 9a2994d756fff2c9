//! Every way a sidecar gets an Azure identity, against the emulator over real sockets:
//! certificate assertions (RS256/`x5t` and PS256/`x5t#S256`), federated (workload identity)
//! assertions, IMDS and the App Service / Container Apps endpoint (docs/azure-facts.md §1, §2).

use crate::common::emulator_client::*;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use foundry_proxy::emulator::{self, EmulatorConfig, ImdsFault, RunningEmulator, identities};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const RESOURCE: &str = "https://cognitiveservices.azure.com";

/// The first `label` block of a PEM text, re-armoured (jsonwebtoken reads only the first block).
fn pem_block(pem: &str, label: &str) -> String {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin).expect("begin");
    let stop = pem[start..].find(&end).expect("end") + start + end.len();
    pem[start..stop].to_owned()
}

/// The certificate's DER, base64 (standard), as `x5c` carries it.
fn x5c(pem: &str) -> String {
    let block = pem_block(pem, "CERTIFICATE");
    block
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
}

/// The token endpoint URL the emulator expects in a certificate assertion's `aud`.
fn token_url(emu: &RunningEmulator) -> String {
    format!("{}/{}/oauth2/v2.0/token", emu.url(), identities::TENANT_ID)
}

/// Claims of a certificate assertion for the demo app, valid for 5 minutes from the emulator's now.
fn cert_claims(emu: &RunningEmulator) -> Value {
    let now = emu.emulator.now_secs();
    json!({
        "aud": token_url(emu),
        "iss": identities::CLIENT_ID,
        "sub": identities::CLIENT_ID,
        "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now,
        "iat": now,
        "exp": now + 300,
    })
}

/// Signs `claims` with the private key in `pem`, naming the certificate as `header` says.
fn sign(pem: &str, header: Header, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(pem_block(pem, "PRIVATE KEY").as_bytes()).expect("key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// The Rust SDK's header: RS256 with the SHA-1 `x5t`.
fn rs256_header(x5t: &str) -> Header {
    let mut header = Header::new(Algorithm::RS256);
    header.x5t = Some(x5t.to_owned());
    header
}

/// The current docs' header: PS256 with `x5t#S256`.
fn ps256_header(x5t_s256: &str) -> Header {
    let mut header = Header::new(Algorithm::PS256);
    header.x5t_s256 = Some(x5t_s256.to_owned());
    header
}

/// A client-credentials form with this assertion.
fn assertion_form(assertion: &str) -> Vec<(&'static str, String)> {
    vec![
        ("client_id", identities::CLIENT_ID.to_owned()),
        ("client_assertion_type", JWT_BEARER.to_owned()),
        ("client_assertion", assertion.to_owned()),
        ("scope", SCOPE.to_owned()),
        ("grant_type", "client_credentials".to_owned()),
    ]
}

/// Status and body of a token request carrying `assertion`.
async fn assert_with(emu: &RunningEmulator, assertion: &str) -> (u16, Value) {
    let form = assertion_form(assertion);
    let resp = client()
        .post(token_url(emu))
        .form(&form)
        .send()
        .await
        .expect("token request");
    status_and_json(resp).await
}

/// Asserts an AADSTS refusal and returns its description.
fn refused(result: &(u16, Value), status: u16, error: &str, code: u32) -> String {
    let (got, body) = result;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"], json!([code]), "{body}");
    body["error_description"]
        .as_str()
        .expect("description")
        .to_owned()
}

/// A successful token response's access token, checked against Foundry with a chat call.
async fn works_on_foundry(emu: &RunningEmulator, result: &(u16, Value)) -> Value {
    let (status, body) = result;
    assert_eq!(*status, 200, "{body}");
    let token = body["access_token"].as_str().expect("access_token");
    let chat = post(
        &chat_url(emu, identities::CHAT_DEPLOYMENT),
        Some(token),
        &chat_body(),
        &[],
    )
    .await;
    assert_eq!(chat.status(), 200, "the issued token must work on Foundry");
    jwt_part(token, 1)
}

/// An RS256 assertion naming the certificate by SHA-1 `x5t` (the Rust SDK's form) gets a token
/// whose `appidacr` says "certificate".
#[tokio::test]
async fn certificate_assertion_rs256_x5t() {
    let emu = start().await;
    let jwt = sign(
        identities::CERTIFICATE_PEM,
        rs256_header(identities::CERTIFICATE_X5T),
        &cert_claims(&emu),
    );
    let claims = works_on_foundry(&emu, &assert_with(&emu, &jwt).await).await;
    assert_eq!(claims["appid"], identities::CLIENT_ID);
    assert_eq!(claims["appidacr"], "2");
}

/// A PS256 assertion naming the certificate by `x5t#S256` (the current docs' form) gets a token.
#[tokio::test]
async fn certificate_assertion_ps256_x5t_s256() {
    let emu = start().await;
    let jwt = sign(
        identities::CERTIFICATE_PEM,
        ps256_header(identities::CERTIFICATE_X5T_S256),
        &cert_claims(&emu),
    );
    works_on_foundry(&emu, &assert_with(&emu, &jwt).await).await;
}

/// `x5c` (AZURE_CLIENT_SEND_CERTIFICATE_CHAIN) is accepted when its first certificate is the
/// registered one, and refused with AADSTS700027 when it is another.
#[tokio::test]
async fn certificate_assertion_x5c_must_match() {
    let emu = start().await;
    let mut header = rs256_header(identities::CERTIFICATE_X5T);
    header.x5c = Some(vec![x5c(identities::CERTIFICATE_PEM)]);
    let jwt = sign(
        identities::CERTIFICATE_PEM,
        header.clone(),
        &cert_claims(&emu),
    );
    assert_eq!(assert_with(&emu, &jwt).await.0, 200);

    header.x5c = Some(vec![x5c(identities::UNREGISTERED_CERTIFICATE_PEM)]);
    let jwt = sign(identities::CERTIFICATE_PEM, header, &cert_claims(&emu));
    refused(
        &assert_with(&emu, &jwt).await,
        401,
        "invalid_client",
        700027,
    );
}

/// A certificate not registered on the app gets AADSTS700027 naming the client's thumbprint.
#[tokio::test]
async fn unregistered_certificate_is_700027() {
    let emu = start().await;
    let jwt = sign(
        identities::UNREGISTERED_CERTIFICATE_PEM,
        rs256_header(identities::UNREGISTERED_CERTIFICATE_X5T),
        &cert_claims(&emu),
    );
    let description = refused(
        &assert_with(&emu, &jwt).await,
        401,
        "invalid_client",
        700027,
    );
    assert!(
        description.contains(
            "Thumbprint of key used by client: '61A5A9D7209FB5B11995BC8CFEEEFD6D2EA0FA44'"
        ),
        "{description}"
    );
}

/// Naming the registered certificate but signing with another key is a bad signature: 700027.
#[tokio::test]
async fn wrong_signing_key_is_700027() {
    let emu = start().await;
    let jwt = sign(
        identities::UNREGISTERED_CERTIFICATE_PEM,
        rs256_header(identities::CERTIFICATE_X5T),
        &cert_claims(&emu),
    );
    let description = refused(
        &assert_with(&emu, &jwt).await,
        401,
        "invalid_client",
        700027,
    );
    assert!(
        description.contains(identities::CERTIFICATE_THUMBPRINT),
        "{description}"
    );
}

/// An assertion that expired (by the emulator's clock, no leeway) gets AADSTS700024 quoting the
/// real times; one not yet valid gets the same.
#[tokio::test]
async fn expired_assertion_is_700024() {
    let emu = start().await;
    let now = emu.emulator.now_secs();
    let mut claims = cert_claims(&emu);
    claims["nbf"] = json!(now - 600);
    claims["exp"] = json!(now - 1);
    let jwt = sign(
        identities::CERTIFICATE_PEM,
        rs256_header(identities::CERTIFICATE_X5T),
        &claims,
    );
    let description = refused(
        &assert_with(&emu, &jwt).await,
        401,
        "invalid_client",
        700024,
    );
    assert!(
        description.starts_with(
            "AADSTS700024: Client assertion is not within its valid time range. Current time: "
        ),
        "{description}"
    );

    let mut claims = cert_claims(&emu);
    claims["nbf"] = json!(now + 120);
    claims["exp"] = json!(now + 420);
    let jwt = sign(
        identities::CERTIFICATE_PEM,
        rs256_header(identities::CERTIFICATE_X5T),
        &claims,
    );
    refused(
        &assert_with(&emu, &jwt).await,
        401,
        "invalid_client",
        700024,
    );
}

/// A 20-minute assertion is accepted: Entra does not enforce its documented 10-minute limit.
#[tokio::test]
async fn long_lived_assertion_is_accepted() {
    let emu = start().await;
    let mut claims = cert_claims(&emu);
    claims["exp"] = json!(emu.emulator.now_secs() + 1200);
    let jwt = sign(
        identities::CERTIFICATE_PEM,
        rs256_header(identities::CERTIFICATE_X5T),
        &claims,
    );
    assert_eq!(assert_with(&emu, &jwt).await.0, 200);
}

/// An `aud` other than this token endpoint gets AADSTS700023 (Entra's "audience claim does not
/// match Realm issuer"), e.g. the public cloud's URL while talking to the emulator; a trailing
/// slash is fine.
#[tokio::test]
async fn wrong_audience_is_700023() {
    let emu = start().await;
    let mut claims = cert_claims(&emu);
    claims["aud"] = json!(format!(
        "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
        identities::TENANT_ID
    ));
    let jwt = sign(
        identities::CERTIFICATE_PEM,
        rs256_header(identities::CERTIFICATE_X5T),
        &claims,
    );
    let description = refused(
        &assert_with(&emu, &jwt).await,
        401,
        "invalid_client",
        700023,
    );
    assert!(
        description.contains("audience claim does not match"),
        "{description}"
    );

    claims["aud"] = json!(format!("{}/", token_url(&emu)));
    let jwt = sign(
        identities::CERTIFICATE_PEM,
        rs256_header(identities::CERTIFICATE_X5T),
        &claims,
    );
    assert_eq!(assert_with(&emu, &jwt).await.0, 200);
}

/// An assertion without `jti`, or with a `client_assertion_type` other than jwt-bearer, is refused.
#[tokio::test]
async fn malformed_assertions_are_refused() {
    let emu = start().await;
    let mut claims = cert_claims(&emu);
    claims.as_object_mut().expect("object").remove("jti");
    let jwt = sign(
        identities::CERTIFICATE_PEM,
        rs256_header(identities::CERTIFICATE_X5T),
        &claims,
    );
    refused(
        &assert_with(&emu, &jwt).await,
        400,
        "invalid_request",
        50027,
    );

    refused(
        &assert_with(&emu, "not.a.jwt").await,
        400,
        "invalid_request",
        50027,
    );

    let jwt = sign(
        identities::CERTIFICATE_PEM,
        rs256_header(identities::CERTIFICATE_X5T),
        &cert_claims(&emu),
    );
    let mut form = assertion_form(&jwt);
    form[1].1 = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer".to_owned();
    let resp = client()
        .post(token_url(&emu))
        .form(&form)
        .send()
        .await
        .expect("token request");
    refused(&status_and_json(resp).await, 400, "invalid_request", 50027);
}

/// A projected service-account token from the emulator's issuer, for the subject the demo app
/// trusts, gets a token (through the Rust API and the control endpoint alike).
#[tokio::test]
async fn federated_assertion_gets_a_token() {
    let emu = start().await;
    let jwt = emu.emulator.federated_token(
        identities::FEDERATED_SUBJECT,
        identities::FEDERATED_AUDIENCE,
        3600,
    );
    let projected = jwt_part(&jwt, 1);
    assert_eq!(projected["iss"], identities::FEDERATION_ISSUER);
    assert_eq!(projected["sub"], identities::FEDERATED_SUBJECT);
    assert_eq!(projected["aud"], json!([identities::FEDERATED_AUDIENCE]));
    let claims = works_on_foundry(&emu, &assert_with(&emu, &jwt).await).await;
    assert_eq!(claims["appid"], identities::CLIENT_ID);
    assert_eq!(claims["appidacr"], "2");

    let resp = client()
        .post(format!("{}/_emulator/federated-token", emu.url()))
        .json(&json!({"subject": identities::FEDERATED_SUBJECT, "lifetime_secs": 600}))
        .send()
        .await
        .expect("federated-token");
    let (status, body) = status_and_json(resp).await;
    assert_eq!(status, 200);
    let jwt = body["token"].as_str().expect("token");
    let claims = jwt_part(jwt, 1);
    assert_eq!(
        claims["exp"].as_u64().expect("exp") - claims["nbf"].as_u64().expect("nbf"),
        600
    );
    assert_eq!(assert_with(&emu, jwt).await.0, 200);
}

/// A subject, audience or issuer the app's federated credential does not name gets AADSTS70021
/// quoting the assertion's issuer, subject and audience.
#[tokio::test]
async fn federated_mismatch_is_70021() {
    let emu = start().await;
    let other = "system:serviceaccount:other:intruder";
    let jwt = emu
        .emulator
        .federated_token(other, identities::FEDERATED_AUDIENCE, 3600);
    let description = refused(
        &assert_with(&emu, &jwt).await,
        401,
        "unauthorized_client",
        70021,
    );
    assert!(
        description.contains(&format!(
            "Assertion Issuer: '{}'. Assertion Subject: '{other}'. Assertion Audience: '{}'.",
            identities::FEDERATION_ISSUER,
            identities::FEDERATED_AUDIENCE
        )),
        "{description}"
    );

    let jwt = emu.emulator.federated_token(
        identities::FEDERATED_SUBJECT,
        "api://AzureADTokenExchangeChina",
        3600,
    );
    refused(
        &assert_with(&emu, &jwt).await,
        401,
        "unauthorized_client",
        70021,
    );

    // Another issuer's token (here unsigned by any known key): no record can match it.
    let claims = json!({"iss": "https://kubernetes.default.svc.cluster.local", "sub": identities::FEDERATED_SUBJECT,
        "aud": identities::FEDERATED_AUDIENCE, "exp": emu.emulator.now_secs() + 60});
    let foreign = sign(
        identities::UNREGISTERED_CERTIFICATE_PEM,
        Header::new(Algorithm::RS256),
        &claims,
    );
    let description = refused(
        &assert_with(&emu, &foreign).await,
        401,
        "unauthorized_client",
        70021,
    );
    assert!(
        description.contains("kubernetes.default.svc"),
        "{description}"
    );
}

/// A federated token that expired, or one from the right issuer with a forged signature, is refused.
#[tokio::test]
async fn federated_expired_or_forged_is_refused() {
    let emu = start().await;
    let jwt = emu.emulator.federated_token(
        identities::FEDERATED_SUBJECT,
        identities::FEDERATED_AUDIENCE,
        1,
    );
    emu.emulator.set_clock_offset(5);
    refused(
        &assert_with(&emu, &jwt).await,
        401,
        "invalid_client",
        700024,
    );
    emu.emulator.set_clock_offset(0);

    let now = emu.emulator.now_secs();
    let claims = json!({"iss": identities::FEDERATION_ISSUER, "sub": identities::FEDERATED_SUBJECT,
        "aud": [identities::FEDERATED_AUDIENCE], "nbf": now, "exp": now + 60});
    let forged = sign(
        identities::UNREGISTERED_CERTIFICATE_PEM,
        Header::new(Algorithm::RS256),
        &claims,
    );
    refused(
        &assert_with(&emu, &forged).await,
        401,
        "invalid_client",
        700027,
    );
}

/// `GET` on an identity endpoint with query and headers.
async fn get(
    emu: &RunningEmulator,
    path: &str,
    query: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let url = url::Url::parse_with_params(&format!("{}{path}", emu.url()), query).expect("url");
    let mut req = client().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    status_and_json(req.send().await.expect("request")).await
}

const IMDS: &str = "/metadata/identity/oauth2/token";
const APP_SERVICE: &str = "/msi/token";

/// IMDS needs `Metadata: true`: without it, 400 with IMDS's body; with it, a token answer whose
/// every value is a string, for the system-assigned identity, that works on Foundry.
#[tokio::test]
async fn imds_requires_metadata_header_and_answers_strings() {
    let emu = start().await;
    let query = [("api-version", "2018-02-01"), ("resource", RESOURCE)];
    let (status, body) = get(&emu, IMDS, &query, &[]).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "Required metadata header not specified"})
    );

    let result = get(&emu, IMDS, &query, &[("Metadata", "true")]).await;
    let body = &result.1;
    for (name, value) in body.as_object().expect("object") {
        assert!(value.is_string(), "{name} must be a string: {body}");
    }
    assert_eq!(body["expires_in"], "3599");
    assert_eq!(body["refresh_token"], "");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["resource"], RESOURCE);
    assert_eq!(body["client_id"], identities::MI_CLIENT_ID);
    let expires_on: u64 = body["expires_on"]
        .as_str()
        .expect("s")
        .parse()
        .expect("epoch");
    let not_before: u64 = body["not_before"]
        .as_str()
        .expect("s")
        .parse()
        .expect("epoch");
    assert_eq!(expires_on - not_before, 3599);
    let claims = works_on_foundry(&emu, &result).await;
    assert_eq!(claims["aud"], RESOURCE);
    assert_eq!(claims["appid"], identities::MI_CLIENT_ID);
    assert_eq!(claims["oid"], identities::MI_OBJECT_ID);
    assert_eq!(claims["tid"], identities::TENANT_ID);
    assert_eq!(claims["xms_mirid"], identities::MI_RESOURCE_ID);
    assert_eq!(emu.emulator.imds_requests(), 2);
}

/// `client_id`, `object_id` and `msi_res_id` each select the user-assigned identity; no
/// selector means the system-assigned one; an unknown one is 400 "Identity not found".
#[tokio::test]
async fn imds_selects_system_or_user_assigned() {
    let emu = start().await;
    let md = [("Metadata", "true")];
    let base = [("api-version", "2019-08-01"), ("resource", RESOURCE)];
    for selector in [
        ("client_id", identities::USER_MI_CLIENT_ID),
        ("object_id", identities::USER_MI_OBJECT_ID),
        ("msi_res_id", identities::USER_MI_RESOURCE_ID),
    ] {
        let query = [base[0], base[1], selector];
        let (status, body) = get(&emu, IMDS, &query, &md).await;
        assert_eq!(status, 200, "{selector:?}: {body}");
        assert_eq!(
            body["client_id"],
            identities::USER_MI_CLIENT_ID,
            "{selector:?}"
        );
        let claims = jwt_part(body["access_token"].as_str().expect("token"), 1);
        assert_eq!(claims["oid"], identities::USER_MI_OBJECT_ID);
    }
    let (_, body) = get(&emu, IMDS, &base, &md).await;
    assert_eq!(body["client_id"], identities::MI_CLIENT_ID);

    let query = [
        base[0],
        base[1],
        ("client_id", "00000000-0000-0000-0000-000000000000"),
    ];
    let (status, body) = get(&emu, IMDS, &query, &md).await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": "invalid_request", "error_description": "Identity not found"})
    );
}

/// Missing `resource` or `api-version`, and a scope sent where a resource belongs, are 400s
/// with IMDS-shaped bodies.
#[tokio::test]
async fn imds_parameter_errors() {
    let emu = start().await;
    let md = [("Metadata", "true")];
    let (status, body) = get(&emu, IMDS, &[("api-version", "2018-02-01")], &md).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error_description"],
        "Required audience parameter not specified"
    );

    let (status, body) = get(&emu, IMDS, &[("resource", RESOURCE)], &md).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["error_description"]
            .as_str()
            .expect("s")
            .contains("api-version")
    );

    let query = [("api-version", "2018-02-01"), ("resource", SCOPE)];
    let (status, body) = get(&emu, IMDS, &query, &md).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_resource");
    assert!(
        body["error_description"]
            .as_str()
            .expect("s")
            .starts_with("AADSTS500011")
    );
}

/// A host with no system-assigned identity: IMDS falls back to a lone user-assigned one, and
/// with none at all answers 400.
#[tokio::test]
async fn imds_without_system_assigned_identity() {
    let mut config = EmulatorConfig::default();
    config.managed_identities.retain(|m| !m.system_assigned);
    let emu = emulator::spawn(config).await.expect("spawn");
    let md = [("Metadata", "true")];
    let query = [("api-version", "2018-02-01"), ("resource", RESOURCE)];
    let (status, body) = get(&emu, IMDS, &query, &md).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["client_id"], identities::USER_MI_CLIENT_ID);

    let config = EmulatorConfig {
        managed_identities: Vec::new(),
        ..EmulatorConfig::default()
    };
    let bare = emulator::spawn(config).await.expect("spawn");
    let (status, body) = get(&bare, IMDS, &query, &md).await;
    assert_eq!(status, 400);
    assert_eq!(body["error_description"], "No managed identity assigned");
}

/// App Service / Container Apps: `X-IDENTITY-HEADER` missing or wrong → 401; right → the
/// App Service shape (`expires_on` a string, no `expires_in`); `principal_id` selects.
#[tokio::test]
async fn app_service_checks_identity_header() {
    let emu = start().await;
    let query = [("resource", RESOURCE), ("api-version", "2019-08-01")];
    let (status, body) = get(&emu, APP_SERVICE, &query, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["statusCode"], 401);
    let (status, _) = get(&emu, APP_SERVICE, &query, &[("X-IDENTITY-HEADER", "guess")]).await;
    assert_eq!(status, 401);

    let header = [("X-IDENTITY-HEADER", identities::IDENTITY_HEADER)];
    let result = get(&emu, APP_SERVICE, &query, &header).await;
    let body = &result.1;
    let keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys.len(), 5, "{body}");
    assert!(body.get("expires_in").is_none());
    assert!(
        body["expires_on"]
            .as_str()
            .expect("string")
            .parse::<u64>()
            .is_ok()
    );
    assert_eq!(body["resource"], RESOURCE);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["client_id"], identities::MI_CLIENT_ID);
    works_on_foundry(&emu, &result).await;

    let query = [
        query[0],
        query[1],
        ("principal_id", identities::USER_MI_OBJECT_ID),
    ];
    let (status, body) = get(&emu, APP_SERVICE, &query, &header).await;
    assert_eq!(status, 200);
    assert_eq!(body["client_id"], identities::USER_MI_CLIENT_ID);

    let query = [
        query[0],
        query[1],
        ("client_id", "00000000-0000-0000-0000-000000000000"),
    ];
    let (status, _) = get(&emu, APP_SERVICE, &query, &header).await;
    assert_eq!(status, 400);
    assert_eq!(emu.emulator.app_service_requests(), 5);
    assert_eq!(emu.emulator.imds_requests(), 0);
}

/// An IMDS fault answers its status the given number of times (IMDS-style bodies), then IMDS
/// recovers; every attempt is counted. Also settable over the control endpoint, which reports it.
#[tokio::test]
async fn imds_fault_then_recovery() {
    let emu = start().await;
    let md = [("Metadata", "true")];
    let query = [("api-version", "2018-02-01"), ("resource", RESOURCE)];
    emu.emulator.set_imds_fault(Some(ImdsFault {
        status: 503,
        times: 2,
    }));
    for _ in 0..2 {
        let (status, body) = get(&emu, IMDS, &query, &md).await;
        assert_eq!(status, 503);
        assert!(body["error"].is_string() && body["error_description"].is_string());
    }
    assert_eq!(get(&emu, IMDS, &query, &md).await.0, 200);
    assert_eq!(emu.emulator.imds_requests(), 3);
    assert_eq!(emu.emulator.imds_fault(), None);

    let status = control_config(&emu, &json!({"imds_fault": {"status": 410, "times": 1}})).await;
    assert_eq!(status, 204);
    let state = control_state(&emu).await;
    assert_eq!(state["imds_fault"], json!({"status": 410, "times": 1}));
    let (status, body) = get(&emu, IMDS, &query, &md).await;
    assert_eq!(status, 410);
    assert_eq!(body["error_description"], "IMDS is going through updates");
    assert_eq!(get(&emu, IMDS, &query, &md).await.0, 200);
    let state = control_state(&emu).await;
    assert_eq!(state["imds_fault"], Value::Null);
    assert_eq!(state["imds_requests"], 5);
    assert_eq!(state["app_service_requests"], 0);

    assert_eq!(
        control_config(&emu, &json!({"imds_fault": {"status": 429, "times": 3}})).await,
        204
    );
    assert_eq!(
        control_config(&emu, &json!({"imds_fault": null})).await,
        204
    );
    assert_eq!(get(&emu, IMDS, &query, &md).await.0, 200);
}

/// Both PKCS#12 encodings ship beside the PEM (their contents were checked with `openssl pkcs12
/// -info` when made; the emulator itself never reads them), and the PEM's certificate is the
/// one `CERTIFICATE_X5T` names.
#[test]
fn certificate_files_are_shipped() {
    assert!(identities::CERTIFICATE_P12.len() > 1000);
    assert!(identities::CERTIFICATE_P12_LEGACY.len() > 1000);
    assert_ne!(
        identities::CERTIFICATE_P12,
        identities::CERTIFICATE_P12_LEGACY
    );
    assert_eq!(identities::CERTIFICATE_P12_PASSWORD, "emulator");
    assert!(identities::CERTIFICATE_PEM.contains("-----BEGIN PRIVATE KEY-----"));
    assert!(identities::UNREGISTERED_CERTIFICATE_PEM.contains("-----BEGIN PRIVATE KEY-----"));
    let der = STANDARD
        .decode(x5c(identities::CERTIFICATE_PEM))
        .expect("der");
    assert!(der.len() > 500);
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(identities::CERTIFICATE_X5T)
            .expect("x5t")
            .len(),
        20
    );
}
