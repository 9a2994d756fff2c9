//! Helpers shared by `emulator_entra.rs` and `emulator_foundry.rs`: a running emulator, token
//! requests and Foundry calls over real sockets.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use foundry_proxy::emulator::{self, EmulatorConfig, RunningEmulator, identities};
use serde_json::{Value, json};

pub(crate) const SCOPE: &str = "https://cognitiveservices.azure.com/.default";
pub(crate) const CHAT_V: &str = "2024-10-21";

/// tenant, form, expected status, `error`, AADSTS code.
pub(crate) type TokenCase<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str, u32);

/// A running emulator with the demo world.
pub(crate) async fn start() -> RunningEmulator {
    emulator::spawn(EmulatorConfig::default())
        .await
        .expect("spawn emulator")
}

/// A plain HTTP client.
pub(crate) fn client() -> reqwest::Client {
    // reqwest is built with `rustls-no-provider`: a provider must exist even for plain http.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

/// `POST /{tenant}/oauth2/v2.0/token` with this form.
pub(crate) async fn token_response(
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

/// A token for this app (asserting 200).
pub(crate) async fn token_for(
    emu: &RunningEmulator,
    tenant: &str,
    id: &str,
    secret: &str,
) -> String {
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

/// A token for the demo app.
pub(crate) async fn good_token(emu: &RunningEmulator) -> String {
    token_for(
        emu,
        identities::TENANT_ID,
        identities::CLIENT_ID,
        identities::CLIENT_SECRET,
    )
    .await
}

/// Part `index` of a JWT (0 header, 1 claims), decoded.
pub(crate) fn jwt_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).expect("jwt part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("json")
}

/// The deployments-surface chat URL for `deployment`.
pub(crate) fn chat_url(emu: &RunningEmulator, deployment: &str) -> String {
    format!(
        "{}/openai/deployments/{deployment}/chat/completions?api-version={CHAT_V}",
        emu.url()
    )
}

/// A one-message chat body.
pub(crate) fn chat_body() -> Value {
    json!({"messages": [{"role": "user", "content": "ping"}]})
}

/// POSTs JSON with an optional bearer token and extra headers.
pub(crate) async fn post(
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

/// Status and JSON body.
pub(crate) async fn status_and_json(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

/// A correct client-credentials form for the demo app.
pub(crate) fn good_form() -> [(&'static str, &'static str); 4] {
    [
        ("client_id", identities::CLIENT_ID),
        ("client_secret", identities::CLIENT_SECRET),
        ("scope", SCOPE),
        ("grant_type", "client_credentials"),
    ]
}

/// `POST /_emulator/config` with this body; returns the status.
pub(crate) async fn control_config(emu: &RunningEmulator, body: &Value) -> u16 {
    client()
        .post(format!("{}/_emulator/config", emu.url()))
        .json(body)
        .send()
        .await
        .expect("config")
        .status()
        .as_u16()
}

/// `GET /_emulator/state`.
pub(crate) async fn control_state(emu: &RunningEmulator) -> Value {
    client()
        .get(format!("{}/_emulator/state", emu.url()))
        .send()
        .await
        .expect("state")
        .json()
        .await
        .expect("json")
}
