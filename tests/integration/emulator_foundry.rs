//! The emulator's Foundry side over real sockets: surfaces, answers, refusals, injected faults,
//! the resource kind and the clock offset, per docs/azure-facts.md §4 and §5.

use std::time::{Duration, Instant};

use crate::common::emulator_client::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use foundry_proxy::emulator::{self, EmulatorConfig, ResourceKind, identities};
use serde_json::{Value, json};

/// The 401 of a Foundry (AI Services) resource.
const FOUNDRY_401: &str = "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com/ or https://ai.azure.com/), or have expired.";
/// The 401 of a classic Azure OpenAI resource.
const CLASSIC_401: &str = "Unauthorized. Access token is missing, invalid, audience is incorrect (https://cognitiveservices.azure.com), or have expired.";

/// A good token gets an Azure-shaped chat completion with Azure's response headers.
#[tokio::test]
async fn chat_with_good_token() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let resp = post(
        &chat_url(&emu, identities::CHAT_DEPLOYMENT),
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
    assert_eq!(record.token_appid.as_deref(), Some(identities::CLIENT_ID));
    assert_eq!(record.token_oid.as_deref(), Some(identities::OBJECT_ID));
    assert_eq!(
        record.deployment.as_deref(),
        Some(identities::CHAT_DEPLOYMENT)
    );
    let auth = record
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .expect("auth header");
    assert_eq!(auth.1, "Bearer <redacted>");
}

/// No token, an api-key, an expired token and a wrong audience each get a Foundry resource's 401 bodies.
#[tokio::test]
async fn missing_expired_or_misaddressed_tokens_get_401() {
    let emu = start().await;
    let url = chat_url(&emu, identities::CHAT_DEPLOYMENT);
    // The demo world is a Foundry resource, so its 401 names both audiences.
    let unauthorized = json!({"statusCode": 401, "message": FOUNDRY_401});
    assert_eq!(
        status_and_json(post(&url, None, &chat_body(), &[]).await).await,
        (401, unauthorized.clone())
    );

    let (status, body) =
        status_and_json(post(&url, None, &chat_body(), &[("api-key", "0123")]).await).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("401")));

    let mut claims = emu
        .emulator
        .token_claims(
            identities::CLIENT_ID,
            "https://cognitiveservices.azure.com",
            10,
        )
        .expect("claims");
    claims.exp = claims.iat - 1;
    let expired = emu.emulator.sign_token(&claims).expect("sign");
    assert_eq!(
        status_and_json(post(&url, Some(&expired), &chat_body(), &[]).await).await,
        (401, unauthorized.clone())
    );

    let claims = emu
        .emulator
        .token_claims(identities::CLIENT_ID, "https://ml.azure.com", 600)
        .expect("claims");
    let wrong_aud = emu.emulator.sign_token(&claims).expect("sign");
    assert_eq!(
        status_and_json(post(&url, Some(&wrong_aud), &chat_body(), &[]).await).await,
        (401, unauthorized.clone())
    );

    let claims = emu
        .emulator
        .token_claims(identities::CLIENT_ID, "https://ai.azure.com/", 600)
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
        &chat_url(&emu, identities::CHAT_DEPLOYMENT),
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
        identities::TENANT_ID,
        identities::NO_ROLE_CLIENT_ID,
        identities::NO_ROLE_CLIENT_SECRET,
    )
    .await;
    let (status, body) = status_and_json(
        post(
            &chat_url(&emu, identities::CHAT_DEPLOYMENT),
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
            identities::NO_ROLE_OBJECT_ID
        )
    );
    let url = format!(
        "{}/openai/deployments/{}/embeddings?api-version={CHAT_V}",
        emu.url(),
        identities::EMBEDDING_DEPLOYMENT
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
    let body_in = json!({"model": identities::CHAT_DEPLOYMENT, "input": "x"});
    let (_, body) = status_and_json(post(&url, Some(&token), &body_in, &[]).await).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("msg")
            .contains("OpenAI/responses/write")
    );

    emu.emulator.set_roles(
        identities::NO_ROLE_CLIENT_ID,
        vec!["Cognitive Services OpenAI User".to_owned()],
    );
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
}

/// A token from another tenant gets the 400 tenant mismatch.
#[tokio::test]
async fn other_tenant_token_is_refused() {
    let emu = start().await;
    let token = token_for(
        &emu,
        identities::OTHER_TENANT_ID,
        identities::OTHER_CLIENT_ID,
        identities::OTHER_CLIENT_SECRET,
    )
    .await;
    let (status, body) = status_and_json(
        post(
            &chat_url(&emu, identities::CHAT_DEPLOYMENT),
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
        json!({"error": {"code": "Tenant provided in token does not match resource token", "message": format!("Token tenant {} does not match resource tenant.", identities::OTHER_TENANT_ID)}})
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
            &chat_url(&emu, identities::EMBEDDING_DEPLOYMENT),
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
        identities::CHAT_DEPLOYMENT
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
    let body = json!({"model": identities::CHAT_DEPLOYMENT, "messages": []});
    assert_eq!(
        status_and_json(post(&v1, Some(&token), &body, &[]).await).await,
        (400, unsupported)
    );
    let unknown_op = format!(
        "{}/openai/deployments/{}/fine-tunes?api-version={CHAT_V}",
        emu.url(),
        identities::CHAT_DEPLOYMENT
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
    let body = json!({"model": identities::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]});
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
            .any(|m| m["id"] == identities::CHAT_DEPLOYMENT)
    );
}

/// A stream arrives in several separate reads, spaced out, ends with usage and [DONE], and counts as completed.
#[tokio::test]
async fn chat_stream_arrives_incrementally() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let body = json!({"messages": [{"role": "user", "content": "ping"}], "stream": true, "stream_options": {"include_usage": true}});
    let resp = post(
        &chat_url(&emu, identities::CHAT_DEPLOYMENT),
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
        &chat_url(&emu, identities::CHAT_DEPLOYMENT),
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
    let req = |format: &str| json!({"model": identities::EMBEDDING_DEPLOYMENT, "input": ["hello world"], "encoding_format": format});
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
            &json!({"model": identities::CHAT_DEPLOYMENT, "input": "ping"}),
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
        &json!({"model": identities::CHAT_DEPLOYMENT, "input": "ping", "stream": true}),
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
    let url = chat_url(&emu, identities::CHAT_DEPLOYMENT);
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

/// Audio transcriptions take multipart/form-data with the deployment in the `model` field.
#[tokio::test]
async fn audio_transcription_multipart() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let boundary = "XyZboundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n{}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--{boundary}--\r\n",
        identities::TRANSCRIPTION_DEPLOYMENT
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

/// The newer x-emulator-fault values answer with Azure's exact status and body.
#[tokio::test]
async fn more_request_faults_have_exact_bodies() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let url = chat_url(&emu, identities::CHAT_DEPLOYMENT);
    let wrapped = |code: &str, message: &str| json!({"error": {"code": code, "message": message}});
    let (data_action, operation) = (
        "Microsoft.CognitiveServices/accounts/OpenAI/deployments/chat/completions/action",
        "POST /openai/deployments/{deployment-id}/chat/completions",
    );
    let denied = format!(
        "The principal `{}` lacks the required data action `{data_action}` to perform `{operation}` operation.",
        identities::OBJECT_ID
    );
    let cases = [
        (
            "regional-endpoint",
            400,
            wrapped(
                "BadRequest",
                "Please provide a custom subdomain for token authentication, otherwise API key is required.",
            ),
        ),
        (
            "network-rules",
            403,
            wrapped(
                "403",
                "Access denied due to Virtual Network/Firewall rules.",
            ),
        ),
        (
            "vnet-endpoint",
            403,
            wrapped(
                "403",
                "A Virtual Network is configured for this resource. Please use the correct endpoint for making requests. Check https://aka.ms/cogsvc-vnet for more details.",
            ),
        ),
        (
            "private-endpoint",
            403,
            wrapped("403", "Traffic is not from an approved private endpoint."),
        ),
        (
            "api-version-too-old",
            400,
            wrapped(
                "BadRequest",
                "Model gpt-4o-mini-2024-07-18 is enabled only for api versions 2024-12-01-preview and later",
            ),
        ),
        (
            "api-version-unsupported",
            400,
            wrapped("BadRequest", "API version not supported"),
        ),
        (
            "resource-not-found",
            404,
            wrapped("404", "Resource not found"),
        ),
        (
            "permission-denied-legacy",
            401,
            wrapped(
                "PermissionDenied",
                "Principal does not have access to API/Operation.",
            ),
        ),
        (
            "permission-denied",
            401,
            wrapped("PermissionDenied", &denied),
        ),
        (
            "permission-denied-foundry",
            401,
            wrapped(
                "PermissionDenied",
                &format!(
                    "{denied} For instructions on granting the necessary permissions, see https://aka.ms/FoundryPermissions."
                ),
            ),
        ),
        (
            "unauthorized",
            401,
            json!({"statusCode": 401, "message": CLASSIC_401}),
        ),
        (
            "bad-key",
            401,
            wrapped(
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource.",
            ),
        ),
        (
            "parameter-not-supported",
            422,
            json!({"status": 422, "code": "parameter_not_supported", "detail": {"loc": ["body", "response_format"], "input": "json_object"}, "message": "One of the parameters contain invalid values."}),
        ),
        (
            "unknown-model",
            404,
            json!({"error": {"code": "unknown_model", "message": "Unknown model: gpt-4o-mini", "details": "Unknown model: gpt-4o-mini"}}),
        ),
    ];
    for (fault, status, body) in cases {
        let resp = post(
            &url,
            Some(&token),
            &chat_body(),
            &[("x-emulator-fault", fault)],
        )
        .await;
        let policy = resp.headers().get("policy-id").cloned();
        assert_eq!(status_and_json(resp).await, (status, body), "{fault}");
        let expected_policy =
            (fault == "network-rules").then_some("ThrowExceptionDueToTrafficDenied");
        assert_eq!(
            policy.as_ref().map(|v| v.to_str().expect("ascii")),
            expected_policy,
            "{fault}"
        );
    }

    // unknown-model names the model the request gave, on the Foundry Models surface too.
    let models_url = format!(
        "{}/models/chat/completions?api-version=2024-05-01-preview",
        emu.url()
    );
    let body = json!({"model": identities::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]});
    let (status, body) = status_and_json(
        post(
            &models_url,
            Some(&token),
            &body,
            &[("x-emulator-fault", "unknown-model")],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["message"].as_str()),
        (404, Some("Unknown model: gpt-4o-mini"))
    );
}

/// Edge, route and credential faults answer whatever the credential; the others need a valid
/// caller, so without a token they get the ordinary 401 instead.
#[tokio::test]
async fn faults_are_played_at_their_stage() {
    let emu = start().await;
    let url = chat_url(&emu, identities::CHAT_DEPLOYMENT);
    let cases = [
        ("network-rules", 403),
        ("vnet-endpoint", 403),
        ("private-endpoint", 403),
        ("regional-endpoint", 400),
        ("resource-not-found", 404),
        ("api-version-unsupported", 400),
        ("key-auth-disabled", 403),
        ("bad-key", 401),
        ("unauthorized", 401),
        ("permission-denied", 401),
        ("permission-denied-legacy", 401),
        ("permission-denied-foundry", 401),
        ("permission-denied-project", 401),
        ("rate-limit", 401),
        ("high-demand", 401),
        ("parameter-not-supported", 401),
        ("api-version-too-old", 401),
        ("unknown-model", 401),
    ];
    for (fault, status) in cases {
        let (got, body) =
            status_and_json(post(&url, None, &chat_body(), &[("x-emulator-fault", fault)]).await)
                .await;
        assert_eq!(got, status, "{fault}: {body}");
        let plain_401 = body == json!({"statusCode": 401, "message": FOUNDRY_401});
        let early = !matches!(
            fault,
            "permission-denied"
                | "permission-denied-legacy"
                | "permission-denied-foundry"
                | "permission-denied-project"
                | "rate-limit"
                | "high-demand"
                | "parameter-not-supported"
                | "api-version-too-old"
                | "unknown-model"
        );
        assert_eq!(plain_401, !early, "{fault}: {body}");
    }
    // The edge refuses before routing: even an unknown path gets the firewall's 403.
    let nowhere = format!("{}/nowhere", emu.url());
    let resp = post(
        &nowhere,
        None,
        &chat_body(),
        &[("x-emulator-fault", "network-rules")],
    )
    .await;
    assert_eq!(resp.status(), 403);
    // An unauthorised caller gets PermissionDenied before any deployment fault.
    let token = token_for(
        &emu,
        identities::TENANT_ID,
        identities::NO_ROLE_CLIENT_ID,
        identities::NO_ROLE_CLIENT_SECRET,
    )
    .await;
    let (status, body) = status_and_json(
        post(
            &url,
            Some(&token),
            &chat_body(),
            &[("x-emulator-fault", "unknown-model")],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("PermissionDenied"))
    );
}

/// An unknown fault is a 400 that lists every fault the emulator knows.
#[tokio::test]
async fn unknown_fault_lists_them_all() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let url = chat_url(&emu, identities::CHAT_DEPLOYMENT);
    let (status, body) = status_and_json(
        post(
            &url,
            Some(&token),
            &chat_body(),
            &[("x-emulator-fault", "meteor")],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("EmulatorUnknownFault"))
    );
    let message = body["error"]["message"].as_str().expect("message");
    let all = [
        "rate-limit",
        "content-filter",
        "deployment-not-found",
        "server-error",
        "key-auth-disabled",
        "permission-denied",
        "regional-endpoint",
        "network-rules",
        "vnet-endpoint",
        "private-endpoint",
        "api-version-too-old",
        "api-version-unsupported",
        "resource-not-found",
        "permission-denied-legacy",
        "permission-denied-foundry",
        "unauthorized",
        "bad-key",
        "parameter-not-supported",
        "unknown-model",
        "permission-denied-project",
        "high-demand",
    ];
    for name in all {
        assert!(
            message.contains(&format!(" {name}")),
            "{name} missing from {message}"
        );
    }
    assert!(
        message.starts_with("unknown x-emulator-fault 'meteor'; known: "),
        "{message}"
    );
}

/// Both resource kinds accept both audiences (with or without the slash) and refuse others;
/// a Foundry resource names both in its 401, a classic OpenAI resource only cognitiveservices.
#[tokio::test]
async fn resource_kind_decides_audiences_and_401_text() {
    let emu = start().await;
    let url = chat_url(&emu, identities::CHAT_DEPLOYMENT);
    let token = |aud: &str| {
        let claims = emu
            .emulator
            .token_claims(identities::CLIENT_ID, aud, 600)
            .expect("claims");
        emu.emulator.sign_token(&claims).expect("sign")
    };
    let status_for = |aud: &'static str| {
        let t = token(aud);
        let url = url.clone();
        async move {
            post(&url, Some(&t), &chat_body(), &[])
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(emu.emulator.resource_kind(), ResourceKind::Foundry);
    for aud in [
        "https://cognitiveservices.azure.com",
        "https://cognitiveservices.azure.com/",
        "https://ai.azure.com",
        "https://ai.azure.com/",
    ] {
        assert_eq!(status_for(aud).await, 200, "foundry {aud}");
    }
    let wrong = token("https://ml.azure.com");
    assert_eq!(
        status_and_json(post(&url, Some(&wrong), &chat_body(), &[]).await).await,
        (401, json!({"statusCode": 401, "message": FOUNDRY_401}))
    );

    // A classic resource takes both audiences too (the v1 API does, docs/azure-facts.md §7;
    // on the classic routes it is assumed), and words its 401 its own way.
    emu.emulator.set_resource_kind(ResourceKind::OpenAi);
    for aud in [
        "https://cognitiveservices.azure.com",
        "https://cognitiveservices.azure.com/",
        "https://ai.azure.com",
        "https://ai.azure.com/",
    ] {
        assert_eq!(status_for(aud).await, 200, "openai {aud}");
    }
    let t = token("https://ml.azure.com");
    assert_eq!(
        status_and_json(post(&url, Some(&t), &chat_body(), &[]).await).await,
        (401, json!({"statusCode": 401, "message": CLASSIC_401})),
        "openai ml.azure.com"
    );

    // From the config, and back over the control endpoint.
    let classic = emulator::spawn(EmulatorConfig {
        resource_kind: ResourceKind::OpenAi,
        ..EmulatorConfig::default()
    })
    .await
    .expect("spawn");
    let (status, body) = status_and_json(
        post(
            &chat_url(&classic, identities::CHAT_DEPLOYMENT),
            None,
            &chat_body(),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!((status, body["message"].as_str()), (401, Some(CLASSIC_401)));
    assert_eq!(
        control_config(&classic, &json!({"resource_kind": "foundry"})).await,
        204
    );
    let (status, body) = status_and_json(
        post(
            &chat_url(&classic, identities::CHAT_DEPLOYMENT),
            None,
            &chat_body(),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!((status, body["message"].as_str()), (401, Some(FOUNDRY_401)));
}

/// Foundry judges expiry and nbf by the emulator's shifted clock, so a client whose real clock
/// disagrees sees its token refused; the emulator's own tokens stay consistent with it.
#[tokio::test]
async fn clock_offset_moves_foundrys_expiry_check() {
    let emu = start().await;
    let url = chat_url(&emu, identities::CHAT_DEPLOYMENT);
    let token = good_token(&emu).await; // 3599 s, issued at the real now
    let status = |t: String| {
        let url = url.clone();
        async move {
            post(&url, Some(&t), &chat_body(), &[])
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(status(token.clone()).await, 200);
    emu.emulator.set_clock_offset(3700);
    assert_eq!(
        status(token.clone()).await,
        401,
        "expired by the shifted clock"
    );
    emu.emulator.set_clock_offset(-600);
    assert_eq!(
        status(token.clone()).await,
        401,
        "not yet valid by the shifted clock"
    );
    // A token issued under the offset is good under it, and later by the real clock too.
    let behind = good_token(&emu).await;
    assert_eq!(status(behind.clone()).await, 200);
    emu.emulator.set_clock_offset(0);
    assert_eq!(status(token).await, 200);
    assert_eq!(status(behind).await, 200);
    // A token issued by a clock that runs ahead is not yet valid by the real one.
    emu.emulator.set_clock_offset(600);
    let ahead = good_token(&emu).await;
    emu.emulator.set_clock_offset(0);
    assert_eq!(
        status(ahead).await,
        401,
        "from the future for the real clock"
    );

    // Generated answers carry the shifted clock too.
    emu.emulator.set_clock_offset(-86_400);
    let t = good_token(&emu).await;
    let (_, body) = status_and_json(post(&url, Some(&t), &chat_body(), &[]).await).await;
    let created = body["created"].as_u64().expect("created");
    let real = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    assert!(
        real - created >= 86_390 && real - created <= 86_410,
        "{created}"
    );
}

/// The model double (docs/emulator.md) on Chat Completions: a tool call with arguments from the
/// tool's schema, `finish_reason: tool_calls`, then text once the tool result comes back; a
/// json_schema format gives JSON from the schema; the same request, the same answer.
#[tokio::test]
async fn chat_tool_calls_and_structured_outputs() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let url = chat_url(&emu, identities::CHAT_DEPLOYMENT);
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 3}},
        "required": ["city", "days"]}}}]);
    let ask = json!({"messages": [{"role": "user", "content": "weather?"}], "tools": tools});
    let (status, first) = status_and_json(post(&url, Some(&token), &ask, &[]).await).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");
    let message = &first["choices"][0]["message"];
    assert_eq!(message["content"], Value::Null);
    let call = &message["tool_calls"][0];
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"city","days":3}"#);
    let (_, again) = status_and_json(post(&url, Some(&token), &ask, &[]).await).await;
    assert_eq!(
        again["choices"][0]["message"]["tool_calls"][0]["function"],
        call["function"]
    );

    let answered = json!({"tools": tools, "messages": [
        {"role": "user", "content": "weather?"},
        message,
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"},
    ]});
    let (_, last) = status_and_json(post(&url, Some(&token), &answered, &[]).await).await;
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        last["choices"][0]["message"]["content"],
        "Hello from the foundry-proxy emulator. Tool results: get_weather returned sunny"
    );

    let structured = json!({"messages": [{"role": "user", "content": "x"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "w", "strict": true, "schema": {
            "type": "object", "properties": {"at": {"type": "string", "format": "date"},
            "unit": {"enum": ["c", "f"]}}, "required": ["at", "unit"], "additionalProperties": false}}}});
    let (_, body) = status_and_json(post(&url, Some(&token), &structured, &[]).await).await;
    let content = body["choices"][0]["message"]["content"]
        .as_str()
        .expect("content");
    assert_eq!(
        serde_json::from_str::<Value>(content).expect("JSON content"),
        json!({"at": "2024-01-01", "unit": "c"})
    );
}

/// The model double on the Responses API: `function_call` items, the request's own settings in
/// the response object, and the function-call stream events.
#[tokio::test]
async fn responses_function_calls_reflect_the_request() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let url = format!("{}/openai/v1/responses", emu.url());
    let ask = json!({"model": identities::CHAT_DEPLOYMENT, "input": "weather?", "tool_choice": "required",
        "parallel_tool_calls": false, "text": {"format": {"type": "text"}, "verbosity": "low"},
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]});
    let (status, body) = status_and_json(post(&url, Some(&token), &ask, &[]).await).await;
    assert_eq!(status, 200, "{body}");
    let item = &body["output"][0];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["name"], "get_weather");
    assert_eq!(item["arguments"], "{}");
    assert_eq!(item["status"], "completed");
    assert!(
        item["call_id"]
            .as_str()
            .expect("call_id")
            .starts_with("call_")
    );
    assert_eq!(body["tool_choice"], "required");
    assert_eq!(body["parallel_tool_calls"], false);
    assert_eq!(body["text"]["verbosity"], "low");
    assert_eq!(body["tools"][0]["name"], "get_weather");
    assert_eq!(body["tools"][0]["strict"], true);

    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let resp = post(
        &url,
        Some(&token),
        &streamed,
        &[("x-emulator-chunk-delay-ms", "0")],
    )
    .await;
    let text = resp.text().await.expect("text");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ]
    );
}
