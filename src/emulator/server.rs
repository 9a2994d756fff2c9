//! The router and a running emulator server with an owner-held shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::config::EmulatorConfig;
use super::control;
use super::entra::{msi, token};
use super::foundry::{handler, media};
use super::state::Emulator;

/// How long `shutdown` lets open connections (e.g. streams) finish before cutting them.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

impl Emulator {
    /// Everything on one router: Entra's token endpoint, the managed identity endpoints (IMDS and
    /// App Service), the Foundry surfaces and `/_emulator`.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token::token))
            .route("/metadata/identity/oauth2/token", get(msi::imds))
            .route("/msi/token", get(msi::app_service))
            .route("/_emulator/state", get(control::state))
            .route("/_emulator/federated-token", post(control::federated_token))
            .route("/_emulator/config", post(control::config))
            .route("/_emulator/reset", post(control::reset))
            .route("/_emulator/images/{file}", get(media::image_file))
            .merge(super::graph::routes())
            .merge(super::arm::routes())
            .fallback(handler::handle)
            .with_state(Arc::clone(self))
    }
}

/// An emulator serving on a socket. Dropping it stops the server, like [`RunningEmulator::shutdown`]
/// without waiting.
#[derive(Debug)]
pub struct RunningEmulator {
    /// The bound address.
    pub addr: SocketAddr,
    /// The emulator, for controls and observations.
    pub emulator: Arc<Emulator>,
    /// Dropping or sending stops accepting connections.
    stop: oneshot::Sender<()>,
    /// The server task.
    task: JoinHandle<()>,
}

impl RunningEmulator {
    /// `http://127.0.0.1:PORT`: both the Entra authority host and the Foundry endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server, giving open connections a few seconds to finish.
    pub async fn shutdown(self) {
        let RunningEmulator { stop, mut task, .. } = self;
        let _ = stop.send(());
        if tokio::time::timeout(DRAIN_LIMIT, &mut task).await.is_err() {
            tracing::warn!("emulator drain timed out");
            task.abort();
        }
    }
}

/// Starts an emulator on `127.0.0.1` with a free port.
pub async fn spawn(config: EmulatorConfig) -> std::io::Result<RunningEmulator> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    spawn_on(listener, config).await
}

/// Starts an emulator on an already bound listener.
pub async fn spawn_on(
    listener: TcpListener,
    config: EmulatorConfig,
) -> std::io::Result<RunningEmulator> {
    spawn_on_with(listener, config, |router| router).await
}

/// Starts an emulator on an already bound listener, its router passed through `wrap` first:
/// the commands put the same outer layers in front of it as in front of the proxy (the Host
/// and Origin checks), without the emulator knowing the proxy's modules.
pub async fn spawn_on_with(
    listener: TcpListener,
    config: EmulatorConfig,
    wrap: impl FnOnce(Router) -> Router,
) -> std::io::Result<RunningEmulator> {
    let addr = listener.local_addr()?;
    let emulator = Emulator::new(config);
    let app = wrap(emulator.router());
    let (stop, stopped) = oneshot::channel::<()>();
    // No Nagle delay: streamed chunks must leave as soon as they are written.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set tcp_nodelay");
        }
    });
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "emulator server failed");
        }
    });
    tracing::info!(%addr, "emulator listening");
    Ok(RunningEmulator {
        addr,
        emulator,
        stop,
        task,
    })
}
