//! Shared test harness: the real emulator and the real proxy, each on its own 127.0.0.1:0
//! listener, wired together like `foundry-proxy demo`.

pub(crate) mod emulator_client;
pub(crate) mod logs;
pub(crate) mod raw;
pub(crate) mod redis_server;
pub(crate) mod serve_binary;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use foundry_proxy::config::Settings;
use foundry_proxy::emulator::{self, EmulatorConfig, RunningEmulator, identities as world};
use foundry_proxy::secret::Secret;
use foundry_proxy::server::{self, ServeError, ServeOptions};
use foundry_proxy::token::TokenPolicy;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What to change from the demo wiring.
#[derive(Debug, Default)]
pub(crate) struct Setup {
    /// The emulated world.
    pub(crate) emulator: EmulatorConfig,
    /// Settings laid over the demo settings (tenant, app, secret, endpoint, authority).
    pub(crate) settings: Settings,
    /// Token timing; tests may shorten the forced-refresh cooldown.
    pub(crate) policy: Option<TokenPolicy>,
    /// Environment seen by validation (only `SSL_CERT_FILE` is read from it).
    pub(crate) env: BTreeMap<String, String>,
    /// An Entra fault in place before the proxy's first token request.
    pub(crate) entra_fault: Option<foundry_proxy::emulator::EntraFault>,
    /// Limits on client connections (header and body read timeouts, head size, HTTP/2
    /// streams); `None` keeps the defaults.
    pub(crate) connection_limits: Option<foundry_proxy::server::ConnectionLimits>,
}

/// A running emulator and proxy.
#[derive(Debug)]
pub(crate) struct Harness {
    pub(crate) emulator: RunningEmulator,
    pub(crate) proxy: SocketAddr,
    pub(crate) client: reqwest::Client,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServeError>>,
}

/// The demo app's settings pointed at `emulator_url`.
pub(crate) fn demo_settings(emulator_url: &str) -> Settings {
    Settings {
        tenant_id: Some(world::TENANT_ID.into()),
        client_id: Some(world::CLIENT_ID.into()),
        client_secret: Some(Secret::new(world::CLIENT_SECRET)),
        authority_host: Some(emulator_url.into()),
        endpoint: Some(emulator_url.into()),
        api: Some("openai-v1".into()),
        ..Settings::default()
    }
}

/// A plain reqwest client (rustls needs a process-wide provider for its default setup).
pub(crate) fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

impl Harness {
    /// The demo world, unchanged.
    pub(crate) async fn start() -> Self {
        Self::start_with(Setup::default()).await
    }

    /// The demo world with changes.
    pub(crate) async fn start_with(mut setup: Setup) -> Self {
        let world = std::mem::take(&mut setup.emulator);
        let emulator = emulator::spawn(world).await.expect("emulator starts");
        Self::start_on(emulator, setup).await
    }

    /// A proxy for an emulator already running (`setup.emulator` is ignored).
    pub(crate) async fn start_on(emulator: RunningEmulator, setup: Setup) -> Self {
        emulator.emulator.set_entra_fault(setup.entra_fault);
        let url = emulator.url();
        let mut settings = demo_settings(&url).overlay(setup.settings);
        // An endpoint given as a path relative to the emulator ("/models") is completed here.
        if let Some(endpoint) = settings.endpoint.as_mut().filter(|e| e.starts_with('/')) {
            *endpoint = format!("{url}{endpoint}");
        }
        // Managed-identity endpoints name the emulator as "{emulator}".
        if let Some(credential) = settings.credential.as_mut() {
            for value in [
                &mut credential.imds_endpoint,
                &mut credential.identity_endpoint,
            ]
            .into_iter()
            .flatten()
            {
                *value = value.replace("{emulator}", &url);
            }
        }
        let config = settings.validate(&setup.env).expect("valid config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let proxy = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let options = ServeOptions {
            token_policy: setup.policy.unwrap_or_default(),
            connection_limits: setup.connection_limits.unwrap_or_default(),
        };
        let task = tokio::spawn(server::serve(config, listener, shutdown.clone(), options));
        Self {
            emulator,
            proxy,
            client: http_client(),
            shutdown,
            task,
        }
    }

    /// `http://127.0.0.1:PORT{path}` on the proxy.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// POSTs JSON to the proxy.
    pub(crate) async fn post_json(&self, path: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("proxy answers")
    }

    /// GETs `path` on the proxy (no key) and reads the JSON answer, whatever its status.
    pub(crate) async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("proxy answers");
        response.json().await.expect("a JSON answer")
    }

    /// GETs `path` on the proxy (no key) and reads the answer as text, whatever its status.
    pub(crate) async fn get_text(&self, path: &str) -> String {
        let response = self.client.get(self.url(path)).send().await;
        response
            .expect("proxy answers")
            .text()
            .await
            .expect("a text answer")
    }

    /// `GET /status` with `key` as a bearer token, as JSON.
    pub(crate) async fn status_with(&self, key: &str) -> serde_json::Value {
        self.client
            .get(self.url("/status"))
            .bearer_auth(key)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json")
    }

    /// The `/status` usage row of the key named `name`, asked for with `key`.
    pub(crate) async fn usage_row(&self, key: &str, name: &str) -> serde_json::Value {
        let status = self.status_with(key).await;
        status["usage"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["key"] == name))
            .cloned()
            .unwrap_or_else(|| panic!("no usage row for {name}: {status}"))
    }

    /// A one-message chat request body.
    pub(crate) fn chat(model: &str, text: &str) -> serde_json::Value {
        serde_json::json!({"model": model, "messages": [{"role": "user", "content": text}]})
    }

    /// Waits (bounded) until `/readyz` answers 200.
    pub(crate) async fn wait_ready(&self) {
        for _ in 0..200 {
            let response = self.client.get(self.url("/readyz")).send().await;
            if response.is_ok_and(|r| r.status() == 200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("proxy not ready within 5 s");
    }

    /// Starts the proxy's shutdown (what SIGTERM does in `serve`) without waiting for it.
    pub(crate) fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Stops the proxy (graceful) and the emulator.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "proxy stops cleanly: {result:?}"
        );
        self.emulator.shutdown().await;
    }
}

/// A header's value as a whole number (`retry-after`, `retry-after-ms`, …).
pub(crate) fn header_number(response: &reqwest::Response, name: &str) -> u64 {
    response.headers()[name]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not a number: {:?}", response.headers()[name]))
}

/// Reads an error body and returns its `error` object.
pub(crate) async fn error_of(response: reqwest::Response) -> serde_json::Value {
    let body: serde_json::Value = response.json().await.expect("json error body");
    body.get("error")
        .cloned()
        .unwrap_or_else(|| panic!("no error object in {body}"))
}

/// Polls `check` every 20 ms for up to `limit`; true once it holds.
pub(crate) async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Adds one access key (named `name`, no limits) in a fresh keys file to `setup`, so the proxy
/// authenticates its callers; returns the key. Send it with [`client_with_key`].
pub(crate) fn add_access_key(setup: &mut Setup, name: &str) -> String {
    add_access_key_with_role(setup, name, foundry_proxy::keys::Role::Member)
}

/// As [`add_access_key`], with `role` (an admin key reads the operator's `/status`).
pub(crate) fn add_access_key_with_role(
    setup: &mut Setup,
    name: &str,
    role: foundry_proxy::keys::Role,
) -> String {
    static FILES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("fp-test-keys-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("keys dir");
    let path = dir.join("keys.toml");
    let _ = std::fs::remove_file(&path);
    let mut entry =
        foundry_proxy::keys::KeyEntry::new(name, foundry_proxy::keys::Limits::default());
    entry.role = role;
    let key = foundry_proxy::keys::add_entry(&path, &entry).expect("key added");
    setup.settings.keys_file = Some(path);
    key
}

/// Like [`http_client`], sending `key` as a bearer token on every request.
pub(crate) fn client_with_key(key: &str) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).expect("key");
    value.set_sensitive(true);
    let headers = reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]);
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers)
        .build()
        .expect("client")
}
