//! The Entra ID + Foundry emulator over real sockets: shapes, statuses and faults per azure-facts.md.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use foundry_proxy::emulator::{self, EmulatorConfig, EntraFault, RunningEmulator, demo};
use serde_json::{Value, json};

const SCOPE: &str = "https://cognitiveservices.azure.com/.default";
const CHAT_V: &str = "2024-10-21";

/// tenant, form, expected status, `error`, AADSTS code.
type TokenCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str, u32);

async fn start() -> RunningEmulator {
    emulator::spawn(EmulatorConfig::default())
        .await
        .expect("spawn emulator")
}

fn client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: a provider must exist even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn token_response(
    emu: &RunningEmulator,
    tenant: &str,
    form: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .post(format!("{}/{tenant}/oauth2/v2.0/token", emu.url()))
        .form(form)
        .send()
        .await
        .expect("token request")
}

async fn token_for(emu: &RunningEmulator, tenant: &str, id: &str, secret: &str) -> String {
    let form = [
        ("client_id", id),
        ("client_secret", secret),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ];
    let resp = token_response(emu, tenant, &form).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.expect("json");
    body["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

async fn good_token(emu: &RunningEmulator) -> String {
    token_for(emu, demo::TENANT_ID, demo::CLIENT_ID, demo::CLIENT_SECRET).await
}

fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("jwt part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

fn chat_url(emu: &RunningEmulator, deployment: &str) -> String {
    format!(
        "{}/openai/deployments/{deployment}/chat/completions?api-version={CHAT_V}",
        emu.url()
    )
}

fn chat_body() -> Value {
    json!({"messages": [{"role": "user", "content": "ping"}]})
}

async fn post(
    url: &str,
    token: Option<&str>,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().post(url).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}

async fn status_and_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

/// A correct client-credentials request gets Entra's success shape (numbers) and headers.
#[tokio::test]
async fn token_success_shape_and_headers() {
    let emu = start().await;
    let form = [
        ("client_id", demo::CLIENT_ID),
        ("client_secret", demo::CLIENT_SECRET),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ];
    let resp = token_response(&emu, demo::TENANT_ID, &form).await;
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
    let (id, secret) = (demo::CLIENT_ID, demo::CLIENT_SECRET);
    let t = demo::TENANT_ID;
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
            good(demo::OTHER_CLIENT_ID, demo::OTHER_CLIENT_SECRET, SCOPE),
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
            good(demo::EXPIRED_CLIENT_ID, demo::EXPIRED_CLIENT_SECRET, SCOPE),
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

/// A client assertion is refused plainly (not verified yet), and Basic client auth works.
#[tokio::test]
async fn client_assertion_unsupported_and_basic_auth_accepted() {
    let emu = start().await;
    let form = [
        ("client_id", demo::CLIENT_ID),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", "eyJ.x.y"),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ];
    let (status, body) = status_and_json(token_response(&emu, demo::TENANT_ID, &form).await).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("unsupported")));

    let resp = client()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            emu.url(),
            demo::TENANT_DOMAIN
        ))
        .basic_auth(demo::CLIENT_ID, Some(demo::CLIENT_SECRET))
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
        ("client_id", demo::CLIENT_ID),
        ("client_secret", demo::CLIENT_SECRET),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ];
    let (_, body) = status_and_json(token_response(&emu, demo::TENANT_ID, &form).await).await;
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
        format!("https://sts.windows.net/{}/", demo::TENANT_ID)
    );
    assert_eq!(c["tid"], demo::TENANT_ID);
    assert_eq!(c["appid"], demo::CLIENT_ID);
    assert_eq!(c["oid"], demo::OBJECT_ID);
    assert_eq!(c["sub"], demo::OBJECT_ID);
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

/// A good token gets an Azure-shaped chat completion with Azure's response headers.
#[tokio::test]
async fn chat_with_good_token() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let resp = post(
        &chat_url(&emu, demo::CHAT_DEPLOYMENT),
        Some(&token),
        &chat_body(),
        &[("x-ms-client-request-id", "abc-123")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert!(h.contains_key("apim-request-id"));
    assert_eq!(h["x-ms-region"], "Sweden Central");
    assert!(
        h.contains_key("x-ratelimit-remaining-requests")
            && h.contains_key("x-ratelimit-remaining-tokens")
    );
    assert_eq!(h["x-ms-client-request-id"], "abc-123");
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gpt-4o-mini-2024-07-18");
    assert!(body["id"].as_str().expect("id").starts_with("chatcmpl-"));
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert!(content.ends_with("You said: ping"), "{content}");
    assert!(body["prompt_filter_results"].is_array());
    assert!(body["choices"][0]["content_filter_results"].is_object());
    assert_eq!(body["usage"]["prompt_tokens"], 1);

    let record = emu.emulator.inference_requests().pop().expect("record");
    assert_eq!(record.status, 200);
    assert!(record.authorization_present);
    assert_eq!(record.token_appid.as_deref(), Some(demo::CLIENT_ID));
    assert_eq!(record.token_oid.as_deref(), Some(demo::OBJECT_ID));
    assert_eq!(record.deployment.as_deref(), Some(demo::CHAT_DEPLOYMENT));
    let auth = record
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .expect("auth header");
    assert_eq!(auth.1, "Bearer <redacted>");
}

/// No token, an api-key, an expired token and a wrong audience each get Azure's 401 bodies.
#[tokio::test]
async fn missing_expired_or_misaddressed_tokens_get_401() {
    let emu = start().await;
    let url = chat_url(&emu, demo::CHAT_DEPLOYMENT);
    let unauthorized = json!({"statusCode": 401, "message": "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired."});
    assert_eq!(
        status_and_json(post(&url, None, &chat_body(), &[]).await).await,
        (401, unauthorized.clone())
    );

    let (status, body) =
        status_and_json(post(&url, None, &chat_body(), &[("api-key", "0123")]).await).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("401")));

    let mut claims = emu
        .emulator
        .token_claims(demo::CLIENT_ID, "https://cognitiveservices.azure.com", 10)
        .expect("claims");
    claims.exp = claims.iat - 1;
    let expired = emu.emulator.sign_token(&claims).expect("sign");
    assert_eq!(
        status_and_json(post(&url, Some(&expired), &chat_body(), &[]).await).await,
        (401, unauthorized.clone())
    );

    let claims = emu
        .emulator
        .token_claims(demo::CLIENT_ID, "https://ml.azure.com", 600)
        .expect("claims");
    let wrong_aud = emu.emulator.sign_token(&claims).expect("sign");
    assert_eq!(
        status_and_json(post(&url, Some(&wrong_aud), &chat_body(), &[]).await).await,
        (401, unauthorized.clone())
    );

    let claims = emu
        .emulator
        .token_claims(demo::CLIENT_ID, "https://ai.azure.com/", 600)
        .expect("claims");
    let foundry_aud = emu.emulator.sign_token(&claims).expect("sign");
    assert_eq!(
        post(&url, Some(&foundry_aud), &chat_body(), &[])
            .await
            .status(),
        200
    );
}

/// A token with a 1-second lifetime stops working once it has expired (no leeway).
#[tokio::test]
async fn short_lived_token_expires() {
    let emu = start().await;
    emu.emulator.set_token_lifetime(1);
    let token = good_token(&emu).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let resp = post(
        &chat_url(&emu, demo::CHAT_DEPLOYMENT),
        Some(&token),
        &chat_body(),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 401);
}

/// The Contributor-only app gets PermissionDenied naming its object id and the op's data action;
/// granting a data role at runtime lets the same token through.
#[tokio::test]
async fn permission_denied_names_the_data_action() {
    let emu = start().await;
    let token = token_for(
        &emu,
        demo::TENANT_ID,
        demo::NO_ROLE_CLIENT_ID,
        demo::NO_ROLE_CLIENT_SECRET,
    )
    .await;
    let (status, body) = status_and_json(
        post(
            &chat_url(&emu, demo::CHAT_DEPLOYMENT),
            Some(&token),
            &chat_body(),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "PermissionDenied");
    assert_eq!(
        body["error"]["message"],
        format!(
            "The principal `{}` lacks the required data action `Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action` to perform `POST /openai/deployments/{{deployment-id}}/chat/completions` operation.",
            demo::NO_ROLE_OBJECT_ID
        )
    );
    let url = format!(
        "{}/openai/deployments/{}/embeddings?api-version={CHAT_V}",
        emu.url(),
        demo::EMBEDDING_DEPLOYMENT
    );
    let (_, body) =
        status_and_json(post(&url, Some(&token), &json!({"input": "x"}), &[]).await).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("OpenAI/deployments/embeddings/action")
    );
    let url = format!("{}/openai/v1/responses", emu.url());
    let body_in = json!({"model": demo::CHAT_DEPLOYMENT, "input": "x"});
    let (_, body) = status_and_json(post(&url, Some(&token), &body_in, &[]).await).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("OpenAI/responses/write")
    );

    emu.emulator.set_roles(
        demo::NO_ROLE_CLIENT_ID,
        vec!["Cognitive Services OpenAI User".to_owned()],
    );
    assert_eq!(
        post(
            &chat_url(&emu, demo::CHAT_DEPLOYMENT),
            Some(&token),
            &chat_body(),
            &[]
        )
        .await
        .status(),
        200
    );
}

/// A token from another tenant gets the 400 tenant mismatch.
#[tokio::test]
async fn other_tenant_token_is_refused() {
    let emu = start().await;
    let token = token_for(
        &emu,
        demo::OTHER_TENANT_ID,
        demo::OTHER_CLIENT_ID,
        demo::OTHER_CLIENT_SECRET,
    )
    .await;
    let (status, body) = status_and_json(
        post(
            &chat_url(&emu, demo::CHAT_DEPLOYMENT),
            Some(&token),
            &chat_body(),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"error": {"code": "Tenant provided in token does not match resource token", "message": format!("Token tenant {} does not match resource tenant.", demo::OTHER_TENANT_ID)}})
    );
}

/// Unknown deployments and models get each surface's not-found answer; a wrong-kind deployment
/// gets OperationNotSupported.
#[tokio::test]
async fn unknown_deployments_are_refused_per_surface() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let (status, body) =
        status_and_json(post(&chat_url(&emu, "nope"), Some(&token), &chat_body(), &[]).await).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("DeploymentNotFound"))
    );
    let v1 = format!("{}/openai/v1/chat/completions", emu.url());
    let (status, body) = status_and_json(
        post(
            &v1,
            Some(&token),
            &json!({"model": "nope", "messages": []}),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("DeploymentNotFound"))
    );
    let models = format!("{}/models/chat/completions", emu.url());
    let (status, body) = status_and_json(
        post(
            &models,
            Some(&token),
            &json!({"model": "nope", "messages": []}),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("unknown_model"))
    );
    let (status, body) = status_and_json(
        post(
            &chat_url(&emu, demo::EMBEDDING_DEPLOYMENT),
            Some(&token),
            &chat_body(),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("OperationNotSupported"))
    );
}

/// Deployments paths need a known api-version; v1 refuses a dated one; unknown ops are 404.
#[tokio::test]
async fn api_version_rules() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let base = format!(
        "{}/openai/deployments/{}/chat/completions",
        emu.url(),
        demo::CHAT_DEPLOYMENT
    );
    let not_found = json!({"error": {"code": "404", "message": "Resource not found"}});
    assert_eq!(
        status_and_json(post(&base, Some(&token), &chat_body(), &[]).await).await,
        (404, not_found.clone())
    );
    let unsupported =
        json!({"error": {"code": "BadRequest", "message": "API version not supported"}});
    let url = format!("{base}?api-version=2019-01-01");
    assert_eq!(
        status_and_json(post(&url, Some(&token), &chat_body(), &[]).await).await,
        (400, unsupported.clone())
    );
    for v in ["2024-02-01", "2024-06-01", "2025-04-01-preview", "preview"] {
        let url = format!("{base}?api-version={v}");
        assert_eq!(
            post(&url, Some(&token), &chat_body(), &[]).await.status(),
            200,
            "{v}"
        );
    }
    let v1 = format!(
        "{}/openai/v1/chat/completions?api-version=2024-10-21",
        emu.url()
    );
    let body = json!({"model": demo::CHAT_DEPLOYMENT, "messages": []});
    assert_eq!(
        status_and_json(post(&v1, Some(&token), &body, &[]).await).await,
        (400, unsupported)
    );
    let unknown_op = format!(
        "{}/openai/deployments/{}/fine-tunes?api-version={CHAT_V}",
        emu.url(),
        demo::CHAT_DEPLOYMENT
    );
    assert_eq!(
        status_and_json(post(&unknown_op, Some(&token), &body, &[]).await).await,
        (404, not_found)
    );
}

/// All four surfaces answer chat; models and passthrough pick the deployment from the body or default.
#[tokio::test]
async fn every_surface_serves_chat() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let body =
        json!({"model": demo::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]});
    for path in [
        "/openai/v1/chat/completions",
        "/models/chat/completions",
        "/v1/chat/completions",
        "/inference/v1/chat/completions",
    ] {
        let resp = post(&format!("{}{path}", emu.url()), Some(&token), &body, &[]).await;
        assert_eq!(resp.status(), 200, "{path}");
    }
    let resp = post(
        &format!("{}/v1/chat/completions", emu.url()),
        Some(&token),
        &chat_body(),
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let list = client()
        .get(format!("{}/openai/v1/models", emu.url()))
        .bearer_auth(&token)
        .send()
        .await
        .expect("models");
    let (status, list) = status_and_json(list).await;
    assert_eq!((status, list["object"].as_str()), (200, Some("list")));
    assert!(
        list["data"]
            .as_array()
            .expect("data")
            .iter()
            .any(|m| m["id"] == demo::CHAT_DEPLOYMENT)
    );
}

/// A stream arrives in several separate reads, spaced out, ends with usage and [DONE], and counts as completed.
#[tokio::test]
async fn chat_stream_arrives_incrementally() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let body = json!({"messages": [{"role": "user", "content": "ping"}], "stream": true, "stream_options": {"include_usage": true}});
    let resp = post(
        &chat_url(&emu, demo::CHAT_DEPLOYMENT),
        Some(&token),
        &body,
        &[
            ("x-emulator-chunks", "4"),
            ("x-emulator-chunk-delay-ms", "100"),
        ],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let mut resp = resp;
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = resp.chunk().await.expect("chunk") {
        arrivals.push(Instant::now());
        text.push_str(std::str::from_utf8(&chunk).expect("utf8"));
    }
    assert!(arrivals.len() > 1, "stream came in one read");
    let spread = *arrivals.last().expect("last") - arrivals[0];
    assert!(
        spread >= Duration::from_millis(200),
        "no pacing: {spread:?}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    let events: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("event json"))
        .collect();
    let content: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(content.ends_with("You said: ping"));
    let usage = &events.last().expect("usage event")["usage"];
    assert_eq!(usage["completion_tokens"], 4);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        (
            emu.emulator.streams_started(),
            emu.emulator.streams_completed()
        ),
        (1, 1)
    );
}

/// Dropping the response mid-stream counts as a cancelled stream.
#[tokio::test]
async fn abandoned_stream_is_counted_cancelled() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let body = json!({"messages": [{"role": "user", "content": "ping"}], "stream": true});
    let resp = post(
        &chat_url(&emu, demo::CHAT_DEPLOYMENT),
        Some(&token),
        &body,
        &[
            ("x-emulator-chunks", "200"),
            ("x-emulator-chunk-delay-ms", "20"),
        ],
    )
    .await;
    let mut resp = resp;
    resp.chunk().await.expect("read").expect("first chunk");
    drop(resp);
    let deadline = Instant::now() + Duration::from_secs(5);
    while emu.emulator.streams_cancelled() == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(emu.emulator.streams_cancelled(), 1);
    assert_eq!(emu.emulator.streams_completed(), 0);
}

/// base64 embeddings decode to the same little-endian f32 unit vector as the float form.
#[tokio::test]
async fn embeddings_base64_decodes_to_f32() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let url = format!("{}/openai/v1/embeddings", emu.url());
    let req = |format: &str| json!({"model": demo::EMBEDDING_DEPLOYMENT, "input": ["hello world"], "encoding_format": format});
    let (_, b64) = status_and_json(post(&url, Some(&token), &req("base64"), &[]).await).await;
    let (_, floats) = status_and_json(post(&url, Some(&token), &req("float"), &[]).await).await;
    let bytes = STANDARD
        .decode(b64["data"][0]["embedding"].as_str().expect("b64"))
        .expect("decode");
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded.len(), 1536);
    let norm: f32 = decoded.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3);
    let float: Vec<f32> = floats["data"][0]["embedding"]
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_f64().expect("f") as f32)
        .collect();
    assert_eq!(decoded, float);
    assert_eq!(b64["usage"]["prompt_tokens"], 2);
}

/// Non-stream Responses carry output_text content; the stream sends OpenAI's events in order.
#[tokio::test]
async fn responses_json_and_stream() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let url = format!("{}/openai/v1/responses", emu.url());
    let (status, body) = status_and_json(
        post(
            &url,
            Some(&token),
            &json!({"model": demo::CHAT_DEPLOYMENT, "input": "ping"}),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "response");
    assert!(
        body["output"][0]["content"][0]["text"]
            .as_str()
            .expect("text")
            .ends_with("You said: ping")
    );
    let resp = post(
        &url,
        Some(&token),
        &json!({"model": demo::CHAT_DEPLOYMENT, "input": "ping", "stream": true}),
        &[("x-emulator-chunk-delay-ms", "0")],
    )
    .await;
    let text = resp.text().await.expect("text");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    let deltas = names
        .iter()
        .filter(|n| **n == "response.output_text.delta")
        .count();
    assert!(deltas > 1);
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(names, expected);
}

/// Each x-emulator-fault value produces its Azure answer.
#[tokio::test]
async fn request_faults() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let url = chat_url(&emu, demo::CHAT_DEPLOYMENT);
    let fault = |v: &'static str| [("x-emulator-fault", v)];

    let resp = post(&url, Some(&token), &chat_body(), &fault("rate-limit")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "45");
    assert!(resp.headers().contains_key("x-ratelimit-remaining-tokens"));
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "429");
    assert!(
        body["error"]["message"].as_str().expect("msg").starts_with(
            "Your requests to gpt-4o-mini for gpt-4o-mini-2024-07-18 in Sweden Central"
        )
    );

    let (status, body) =
        status_and_json(post(&url, Some(&token), &chat_body(), &fault("content-filter")).await)
            .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("content_filter"))
    );
    assert_eq!(
        body["error"]["innererror"]["content_filter_result"]["violence"]["filtered"],
        true
    );

    let cases = [
        ("deployment-not-found", 404, "DeploymentNotFound"),
        ("server-error", 500, "InternalServerError"),
        ("key-auth-disabled", 403, "AuthenticationTypeDisabled"),
        ("permission-denied", 401, "PermissionDenied"),
    ];
    for (value, status, code) in cases {
        let (got, body) =
            status_and_json(post(&url, Some(&token), &chat_body(), &fault(value)).await).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{value}"
        );
    }
}

/// Entra faults: a status with an Entra body, a stall that still answers, and a non-JSON 200.
#[tokio::test]
async fn entra_faults() {
    let emu = start().await;
    let form = [
        ("client_id", demo::CLIENT_ID),
        ("client_secret", demo::CLIENT_SECRET),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ];
    emu.emulator.set_entra_fault(Some(EntraFault::Status(503)));
    let (status, body) = status_and_json(token_response(&emu, demo::TENANT_ID, &form).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable"))
    );

    emu.emulator
        .set_entra_fault(Some(EntraFault::Stall(Duration::from_millis(300))));
    let started = Instant::now();
    assert_eq!(
        token_response(&emu, demo::TENANT_ID, &form).await.status(),
        200
    );
    assert!(started.elapsed() >= Duration::from_millis(300));

    emu.emulator.set_entra_fault(Some(EntraFault::Garbage));
    let resp = token_response(&emu, demo::TENANT_ID, &form).await;
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
            &json!({"entra_fault": "503", "roles": {(demo::NO_ROLE_CLIENT_ID): ["Azure AI User"]}}),
        )
        .send()
        .await
        .expect("config");
    assert_eq!(resp.status(), 204);
    let form = [
        ("client_id", demo::CLIENT_ID),
        ("client_secret", demo::CLIENT_SECRET),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ];
    assert_eq!(
        token_response(&emu, demo::TENANT_ID, &form).await.status(),
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
        demo::TENANT_ID,
        demo::NO_ROLE_CLIENT_ID,
        demo::NO_ROLE_CLIENT_SECRET,
    )
    .await;
    assert_eq!(
        post(
            &chat_url(&emu, demo::CHAT_DEPLOYMENT),
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

/// Audio transcriptions take multipart/form-data with the deployment in the `model` field.
#[tokio::test]
async fn audio_transcription_multipart() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let boundary = "XyZboundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--{boundary}--\r\n",
        demo::TRANSCRIPTION_DEPLOYMENT
    );
    let resp = client()
        .post(format!("{}/openai/v1/audio/transcriptions", emu.url()))
        .bearer_auth(&token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("send");
    let (status, body) = status_and_json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["text"].as_str().expect("text").contains("a.wav"));
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
        "region = \"West Europe\"\nstream_chunk_delay_ms = 1\n",
    )
    .expect("write");
    let config = emulator::load_config(&path).expect("valid");
    assert_eq!(
        (config.region.as_str(), config.apps.len()),
        ("West Europe", 4)
    );
    let debug = format!("{config:?}");
    assert!(!debug.contains(demo::CLIENT_SECRET));
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
