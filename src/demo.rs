//! `foundry-proxy demo`: the emulator and the proxy in one process, wired together, so a
//! new user sees the whole thing work without an Azure account.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ConfigError, Environment, Settings};
use crate::emulator::{self, EmulatorConfig, identities as world};
use crate::secret::Secret;
use crate::server::browser_guard::emulator_guard;
use crate::server::{self, ServeOptions};

/// The proxy configuration that points at a running emulator at `emulator_url`.
pub fn config_for_emulator(emulator_url: &str, listen: SocketAddr) -> Result<Config, ConfigError> {
    let settings = Settings {
        listen: Some(listen.to_string()),
        tenant_id: Some(world::TENANT_ID.to_owned()),
        client_id: Some(world::CLIENT_ID.to_owned()),
        client_secret: Some(Secret::new(world::CLIENT_SECRET)),
        authority_host: Some(emulator_url.to_owned()),
        endpoint: Some(emulator_url.to_owned()),
        api: Some("openai-v1".to_owned()),
        // The demo's identity is the emulator's and grants nothing real: it may listen on
        // any address (e.g. 0.0.0.0 in a container) without access keys.
        allow_anonymous: Some(true),
        ..Settings::default()
    };
    settings.validate(&BTreeMap::<String, String>::new())
}

/// Runs the demo until `shutdown` is cancelled. `listen` defaults to `FOUNDRY_PROXY_LISTEN`
/// or 127.0.0.1:8080.
pub async fn run(
    listen: Option<String>,
    env: &dyn Environment,
    shutdown: CancellationToken,
) -> Result<(), DemoError> {
    let listen_text = listen
        .or_else(|| env.var(config::ENV_LISTEN))
        .unwrap_or_else(|| config::DEFAULT_LISTEN.to_owned());
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        DemoError::Config(ConfigError {
            setting: "--listen".into(),
            problem: format!("'{listen_text}' is not an address with a port"),
            fix: "use IP:PORT, e.g. 127.0.0.1:8080".into(),
        })
    })?;
    let emulator_listener = TcpListener::bind(("127.0.0.1", 0))
        .await
        .map_err(DemoError::Io)?;
    let guard = emulator_guard(emulator_listener.local_addr().map_err(DemoError::Io)?, env)
        .map_err(DemoError::Config)?;
    let emulator =
        emulator::spawn_on_with(emulator_listener, EmulatorConfig::default(), |router| {
            router.layer(guard)
        })
        .await
        .map_err(DemoError::Io)?;
    let emulator_url = emulator.url();
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| DemoError::Bind(listen, e))?;
    let listening = listener.local_addr().map_err(DemoError::Io)?;
    let config = config_for_emulator(&emulator_url, listening).map_err(DemoError::Config)?;
    // In a container the demo listens on 0.0.0.0; the URL to use from the same host is loopback.
    let bound = if listening.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], listening.port()))
    } else {
        listening
    };

    println!(
        "emulator listening on {emulator_url}  (a local Entra ID and Foundry: no Azure account needed)"
    );
    println!("foundry-proxy listening on http://{bound}");
    println!();
    println!("Point any OpenAI SDK or tool at the proxy:");
    println!("  export OPENAI_BASE_URL=http://{bound}/v1");
    println!("  export OPENAI_API_KEY=unused   # the proxy adds the Entra token itself");
    println!();
    println!("Try it:");
    println!(
        "  curl -s http://{bound}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello!\"}}]}}'",
        world::CHAT_DEPLOYMENT
    );
    println!(
        "  curl -sN http://{bound}/v1/chat/completions -H 'content-type: application/json' -d '{{\"model\":\"{}\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Stream to me\"}}]}}'",
        world::CHAT_DEPLOYMENT
    );
    println!("See how a refusal is explained (the emulator plays a missing role assignment):");
    println!(
        "  curl -s http://{bound}/v1/chat/completions -H 'content-type: application/json' -H 'x-emulator-fault: permission-denied' -d '{{\"model\":\"{}\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hi\"}}]}}'",
        world::CHAT_DEPLOYMENT
    );
    println!("Press Ctrl-C to stop.");

    let result = server::serve(config, listener, shutdown, ServeOptions::default()).await;
    emulator.shutdown().await;
    result.map_err(DemoError::Serve)
}

/// What can stop the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Bad `--listen`.
    #[error("{0}")]
    Config(ConfigError),
    /// The address is taken or not allowed.
    #[error("cannot listen on {0}: {1} — pass --listen 127.0.0.1:PORT with a free port")]
    Bind(SocketAddr, std::io::Error),
    /// Other I/O.
    #[error("{0}")]
    Io(std::io::Error),
    /// The proxy failed.
    #[error("{0}")]
    Serve(server::ServeError),
}
