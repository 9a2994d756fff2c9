//! The emulator's media ops as OpenAI and Azure answer them: DALL·E `url` images served back by
//! the emulator, GPT-image `b64_json`, audio translations, and every transcription format.

use crate::common::emulator_client::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use foundry_proxy::emulator::{
    self, DeploymentKind, DeploymentSpec, EmulatorConfig, RunningEmulator, identities,
};
use serde_json::{Value, json};

/// The eight bytes every PNG starts with.
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// POSTs a multipart form (text fields and one small WAV file) to `/openai/v1/{op}`.
async fn upload(
    emu: &RunningEmulator,
    token: &str,
    op: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    let boundary = "XyZboundary";
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nRIFF....\r\n--{boundary}--\r\n"));
    client()
        .post(format!("{}/openai/v1/{op}", emu.url()))
        .bearer_auth(token)
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .expect("send")
}

/// dall-e-3 answers with a `url` by default, which serves a PNG; `b64_json` when asked.
#[tokio::test]
async fn dall_e_answers_with_a_url_by_default() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let url = format!("{}/openai/v1/images/generations", emu.url());
    let ask = |extra: Value| {
        let mut body = json!({"model": identities::IMAGE_DEPLOYMENT, "prompt": "a cat"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        body
    };
    let (status, body) =
        status_and_json(post(&url, Some(&token), &ask(json!({})), &[]).await).await;
    assert_eq!(status, 200, "{body}");
    let image_url = body["data"][0]["url"].as_str().expect("url").to_owned();
    assert!(body["data"][0].get("b64_json").is_none(), "{body}");
    assert!(
        image_url.starts_with(&format!("{}/_emulator/images/", emu.url()))
            && image_url.ends_with(".png"),
        "{image_url}"
    );
    let image = client().get(&image_url).send().await.expect("image");
    assert_eq!(image.status(), 200);
    assert_eq!(image.headers()["content-type"], "image/png");
    assert!(
        image
            .bytes()
            .await
            .expect("bytes")
            .starts_with(PNG_SIGNATURE)
    );

    let (status, body) = status_and_json(
        post(
            &url,
            Some(&token),
            &ask(json!({"response_format": "b64_json", "n": 2})),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"].as_array().map(Vec::len), Some(2));
    let b64 = body["data"][1]["b64_json"].as_str().expect("b64_json");
    assert!(
        STANDARD
            .decode(b64)
            .expect("base64")
            .starts_with(PNG_SIGNATURE)
    );

    let (status, _) = status_and_json(
        post(
            &url,
            Some(&token),
            &ask(json!({"response_format": "gif"})),
            &[],
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    let missing = client()
        .get(format!("{}/_emulator/images/nothing.gif", emu.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
}

/// A GPT-image deployment always answers with `b64_json`.
#[tokio::test]
async fn gpt_image_answers_with_b64_json() {
    let mut config = EmulatorConfig::default();
    config.deployments.push(DeploymentSpec {
        name: "gpt-image-1".to_owned(),
        model: "gpt-image-1".to_owned(),
        kind: DeploymentKind::Image,
    });
    let emu = emulator::spawn(config).await.expect("spawn");
    let token = good_token(&emu).await;
    let url = format!("{}/openai/v1/images/generations", emu.url());
    let body = json!({"model": "gpt-image-1", "prompt": "a cat"});
    let (status, body) = status_and_json(post(&url, Some(&token), &body, &[]).await).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["data"][0]["b64_json"].is_string() && body["data"][0].get("url").is_none());
}

/// `/audio/translations` takes the same multipart upload and answers English text.
#[tokio::test]
async fn audio_translations_answer_english() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let model = ("model", identities::TRANSCRIPTION_DEPLOYMENT);
    let (status, body) =
        status_and_json(upload(&emu, &token, "audio/translations", &[model]).await).await;
    assert_eq!(status, 200, "{body}");
    let text = body["text"].as_str().expect("text");
    assert!(text.contains("English translation of a.wav"), "{text}");

    let (status, body) = status_and_json(
        upload(
            &emu,
            &token,
            "audio/translations",
            &[model, ("response_format", "verbose_json")],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["task"].as_str(), body["language"].as_str()),
        (200, Some("translate"), Some("english"))
    );

    // The classic route too, with the deployment in the path.
    let resp = client()
        .post(format!(
            "{}/openai/deployments/{}/audio/translations?api-version={CHAT_V}",
            emu.url(),
            identities::TRANSCRIPTION_DEPLOYMENT
        ))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), 400, "JSON instead of multipart");
}

/// Transcriptions honour every `response_format` with OpenAI's content types.
#[tokio::test]
async fn transcription_formats() {
    let emu = start().await;
    let token = good_token(&emu).await;
    let model = ("model", identities::TRANSCRIPTION_DEPLOYMENT);
    let text = "Hello from the foundry-proxy emulator. This is a transcription of a.wav (8 bytes).";
    let cases: [(&str, &str, String); 3] = [
        ("text", "text/plain; charset=utf-8", format!("{text}\n")),
        (
            "srt",
            "text/plain; charset=utf-8",
            format!("1\n00:00:00,000 --> 00:00:01,000\n{text}\n\n"),
        ),
        (
            "vtt",
            "text/plain; charset=utf-8",
            format!("WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n{text}\n\n"),
        ),
    ];
    for (format, content_type, expected) in cases {
        let resp = upload(
            &emu,
            &token,
            "audio/transcriptions",
            &[model, ("response_format", format)],
        )
        .await;
        assert_eq!(resp.status(), 200, "{format}");
        assert_eq!(resp.headers()["content-type"], content_type, "{format}");
        assert_eq!(resp.text().await.expect("text"), expected, "{format}");
    }
    for fields in [vec![model], vec![model, ("response_format", "json")]] {
        let resp = upload(&emu, &token, "audio/transcriptions", &fields).await;
        assert_eq!(resp.headers()["content-type"], "application/json");
        assert_eq!(status_and_json(resp).await, (200, json!({"text": text})));
    }
    let resp = upload(
        &emu,
        &token,
        "audio/transcriptions",
        &[model, ("response_format", "verbose_json")],
    )
    .await;
    let (status, body) = status_and_json(resp).await;
    assert_eq!(
        (status, body["task"].as_str(), body["text"].as_str()),
        (200, Some("transcribe"), Some(text))
    );
    assert_eq!(body["segments"][0]["text"], text);

    let resp = upload(
        &emu,
        &token,
        "audio/transcriptions",
        &[model, ("response_format", "mp3")],
    )
    .await;
    let (status, body): (u16, Value) = status_and_json(resp).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("response_format")
    );
}
