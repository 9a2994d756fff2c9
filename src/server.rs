//! The listener: router, layers, `/healthz` and `/readyz`, and graceful shutdown.
//!
//! Layers, outermost first, as [`serve`] and `router` build them:
//! 1. the connection (`server::connections`): HTTP/1.1 and HTTP/2, header and body read timeouts,
//!    head size, HTTP/2 stream limits, graceful drain;
//! 2. the browser guard ([`browser_guard`]): the Host allow-list and the Origin check, so a
//!    web page cannot borrow the identity; refused requests go no further;
//! 3. CORS, only when origins are configured (preflights from allowed origins are answered here);
//! 4. the router. Its own endpoints (`/healthz`, `/readyz`, `/metrics`, `/status`) sit behind
//!    tower-http's request-id layers (`x-request-id` set when absent, then echoed back); every
//!    other request falls back to the forwarding handler, which sets and echoes its request id
//!    itself. Body limits and inbound errors are handled in the forwarding handler, so every
//!    refusal has the OpenAI error shape.

use std::sync::Arc;
use tokio::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{MethodRouter, get};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, Cors, CorsLayer};
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::{info, warn};

pub mod browser_guard;
mod connections;
mod dispatch;
pub mod error_shape;
mod head;

pub use connections::{BodyReadTimeout, ConnectionLimits};

use browser_guard::{BrowserGuard, BrowserGuardLayer};

use crate::config::Config;
use crate::diagnose::{self, DiagnosisContext};
use crate::error::ApiError;
use crate::keys::KeyStore;
use crate::limits::Limiter;
use crate::metrics::Metrics;
use crate::proxy::ProxyState;
use crate::request_id;
use crate::status::StatusInfo;
use crate::token::{self, TokenCell, TokenPolicy};
use crate::upstream::{self, Target};

/// Why the proxy could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// TLS configuration (e.g. `SSL_CERT_FILE`) is unusable.
    #[error("SSL_CERT_FILE: {0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The Entra client could not be built.
    #[error("{0}")]
    Credential(#[from] crate::credential::CredentialError),
    /// The access keys file is unusable at start.
    #[error("FOUNDRY_PROXY_KEYS_FILE: {0}")]
    Keys(String),
    /// The usage ledger cannot be opened.
    #[error("{0}")]
    Ledger(#[from] crate::ledger::OpenError),
    /// The Redis client could not be built.
    #[error("{0}")]
    Redis(#[from] crate::shared::StartError),
    /// The listener failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// Knobs that are not user configuration (tests shorten the token policy and timeouts).
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Refresh timing.
    pub token_policy: TokenPolicy,
    /// What one client connection may do.
    pub connection_limits: ConnectionLimits,
}

/// Everything the routes share.
#[derive(Debug)]
struct AppState {
    proxy: Arc<ProxyState>,
    started: Instant,
    status: StatusInfo,
    /// True on the separate metrics listener, where `/metrics` needs no access key.
    open_metrics: bool,
}

/// How often the keys file is checked for changes.
const KEYS_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs the proxy on `listener` until `shutdown` is cancelled, then drains in-flight requests
/// for at most the configured grace period.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> Result<(), ServeError> {
    let tls = crate::tls::client_config(config.extra_ca_file.as_deref())?;
    let credential = crate::credential::build(&config, Arc::clone(&tls))?;
    info!(credential = credential.kind(), reason = %config.credential_reason, "credential chosen");
    let tokens = TokenCell::new(options.token_policy.clone(), credential.kind());
    let metrics = Metrics::new();
    metrics.set_info(credential.kind(), config.api.as_str());
    let observed = Arc::clone(&metrics);
    tokens.observe_attempts(move |ok| observed.token_refresh(ok));
    let background = CancellationToken::new();
    let keys = match &config.keys_file {
        Some(path) => {
            let store =
                KeyStore::open(path.clone()).map_err(|e| ServeError::Keys(e.to_string()))?;
            info!(keys = store.current().len(), file = %path.display(), "access keys loaded");
            if !store.current().has_admin() {
                warn!(file = %path.display(), "{}", crate::keys::cli::NO_ADMIN);
            }
            store.spawn_watcher(KEYS_POLL, background.clone());
            Some(store)
        }
        None => {
            if !config.listen.ip().is_loopback() {
                warn!(listen = %config.listen, "no access keys: anyone who can reach this address uses the App Registration (FOUNDRY_PROXY_ALLOW_ANONYMOUS=true)");
            }
            None
        }
    };
    let budgets = Arc::new(crate::budget::Budgets::new());
    let ledger = match &config.usage_db {
        Some(path) => {
            let now = crate::clock::unix_now_signed();
            let (ledger, spend) = crate::ledger::Ledger::open(path, now)?;
            // Budgets pick up where the last run left them.
            for (key, spent) in spend {
                budgets.seed(
                    &key,
                    spent.day_tokens,
                    spent.month_tokens,
                    spent.month_usd,
                    now,
                );
            }
            Some(Arc::new(ledger))
        }
        None => None,
    };
    // Stopped after the HTTP drain, so the last answers' usage reaches Redis (and by the
    // guard if start-up fails after this point).
    let shared_stop = CancellationToken::new();
    let shared_guard = shared_stop.clone().drop_guard();
    let shared = match &config.redis {
        Some(redis) => Some(
            crate::shared::Shared::start(
                redis,
                config.extra_ca_file.as_deref(),
                shared_stop.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let status_info = StatusInfo::from_config(&config, credential.kind());
    let refresher_stop = CancellationToken::new();
    let refresher = token::spawn_refresher(Arc::clone(&tokens), credential, refresher_stop.clone());

    // Several upstreams: a token per distinct scope, each with its own refresher.
    let scoped = crate::pool::ScopedTokens::start(
        &config,
        &tls,
        &tokens,
        &options.token_policy,
        &refresher_stop,
    )?;
    let pool = crate::pool::Pool::from_config(&config, |scope| scoped.cell(scope)).map(Arc::new);
    let target = Target::from_config(&config);
    info!(
        listen = %listener.local_addr()?,
        endpoint = target.base(),
        api = %target.style(),
        api_version = target.api_version().unwrap_or("none"),
        anthropic = target.anthropic_base(),
        "foundry-proxy starting"
    );
    let proxy = Arc::new(ProxyState {
        target,
        tokens,
        client: upstream::build_client(Arc::clone(&tls)),
        diagnosis: DiagnosisContext::from_config(&config),
        max_body: config.max_body,
        upstream_timeout: config.upstream_timeout,
        keys,
        limiter: Limiter::new(),
        budgets,
        prices: Arc::new(config.prices.clone()),
        ledger: ledger.clone(),
        shared: shared.as_ref().map(|(shared, _)| Arc::clone(shared)),
        metrics,
        websockets: crate::proxy::websocket::Sockets::new(
            tls,
            config.ws_max_message,
            config.ws_idle_timeout,
            config.upstream_timeout,
            shutdown.clone(),
        ),
        pool,
    });
    let sockets_owner = Arc::clone(&proxy);
    if let Some(address) = config.metrics_listen {
        let metrics_listener = TcpListener::bind(address).await?;
        info!(listen = %address, "metrics listening");
        let metrics_app = Router::new()
            .route("/metrics", get(metrics_text))
            .with_state(Arc::new(AppState {
                proxy: Arc::clone(&proxy),
                started: Instant::now(),
                status: status_info.clone(),
                open_metrics: true,
            }))
            .layer(BrowserGuardLayer::new(BrowserGuard::new(
                metrics_listener.local_addr()?,
                config.allowed_hosts.clone(),
                &config.cors_origins,
            )));
        let stop = background.clone();
        tokio::spawn(async move {
            let _ = axum::serve(metrics_listener, metrics_app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }
    let guard = BrowserGuard::new(
        listener.local_addr()?,
        config.allowed_hosts.clone(),
        &config.cors_origins,
    );
    if guard.any_host() {
        warn!(
            "FOUNDRY_PROXY_ALLOWED_HOSTS=*: requests naming any host are served, so a web page can reach the proxy by DNS rebinding; list the names instead"
        );
    }
    let app = app(
        Arc::new(AppState {
            proxy,
            started: Instant::now(),
            status: status_info,
            open_metrics: false,
        }),
        guard,
        &config.cors_origins,
    );

    // Upgraded connections leave hyper's drain: their relays close both sides with 1001 when
    // `shutdown` is cancelled, and are waited for alongside the HTTP drain, within one grace.
    let sockets_drained = async {
        shutdown.cancelled().await;
        sockets_owner
            .websockets
            .drained(config.shutdown_grace)
            .await;
    };
    tokio::join!(
        connections::run(
            listener,
            app,
            options.connection_limits,
            shutdown.clone(),
            config.shutdown_grace,
        ),
        sockets_drained
    );
    refresher_stop.cancel();
    background.cancel();
    drop(shared_guard);
    if let Some((_, writer)) = shared {
        let _ = writer.await;
    }
    if let Some(ledger) = &ledger {
        // Blocking for at most one commit: the writer finishes what it has.
        let ledger = Arc::clone(ledger);
        let _ = tokio::task::spawn_blocking(move || ledger.close()).await;
    }
    let _ = refresher.await;
    for extra in scoped.refreshers {
        let _ = extra.await;
    }
    info!("foundry-proxy stopped");
    Ok(())
}

/// What every connection serves: the browser guard, CORS when origins are listed, then
/// [`dispatch::Dispatch`] between the proxy's own endpoints and forwarding.
type App =
    browser_guard::Guarded<tower::util::Either<Cors<dispatch::Dispatch>, dispatch::Dispatch>>;

fn app(state: Arc<AppState>, guard: BrowserGuard, cors_origins: &[String]) -> App {
    // The proxy's own endpoints get request ids from tower-http's layers; every other request
    // goes to the forwarding handler, which handles its id itself and answers paths outside
    // the dialects with 404.
    let proxy_state = Arc::clone(&state.proxy);
    // In the order of `dispatch::OWN_PATHS`, the only paths dispatch sends here (the length is
    // checked by the compiler).
    let handlers: [MethodRouter<Arc<AppState>>; dispatch::OWN_PATHS.len()] =
        [get(healthz), get(readyz), get(metrics_text), get(status)];
    let own = dispatch::OWN_PATHS
        .into_iter()
        .zip(handlers)
        .fold(Router::new(), |router, (path, handler)| {
            router.route(path, handler)
        })
        .route_layer(PropagateRequestIdLayer::new(request_id::HEADER))
        .route_layer(SetRequestIdLayer::new(
            request_id::HEADER,
            request_id::RandomRequestId,
        ))
        .with_state(state);
    // Outermost: a request a web page must not send is refused before anything else runs.
    // (The error shape for the route is chosen outside, around each connection's service:
    // `connections::run`.)
    tower::ServiceBuilder::new()
        .layer(BrowserGuardLayer::new(guard))
        .option_layer(cors_layer(cors_origins))
        .service(dispatch::Dispatch::new(own, proxy_state))
}

/// CORS for browser tools that call the proxy directly, only for the listed origins.
/// Preflights are answered here and never reach Azure or need an access key.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let exposed = [
        "x-request-id",
        "apim-request-id",
        "retry-after",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-remaining-tokens",
    ];
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(AllowMethods::list([
                Method::GET,
                Method::POST,
                Method::DELETE,
                Method::OPTIONS,
            ]))
            .allow_headers(AllowHeaders::mirror_request())
            .expose_headers(exposed.map(HeaderName::from_static))
            .max_age(std::time::Duration::from_secs(600))
            // Chrome asks before a public page reaches a private address; only allowed origins
            // get here (the browser guard refuses the others).
            .allow_private_network(true),
    )
}

async fn healthz(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    Json(json!({"status": "alive", "uptime_secs": state.started.elapsed().as_secs()}))
}

/// 200 while a valid token is held; 503 with the reason otherwise.
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let tokens = &state.proxy.tokens;
    let snapshot = tokens.load();
    let now = Instant::now();
    let common = json!({
        "credential": tokens.credential_kind(),
        "endpoint": state.proxy.target.base(),
        "api": state.proxy.target.style().as_str(),
    });
    if let Some(token) = snapshot.token.as_ref().filter(|t| t.is_valid(now)) {
        let mut body = json!({
            "status": "ready",
            "token_expires_in_secs": token.expires_at.saturating_duration_since(now).as_secs(),
            "next_refresh_in_secs": snapshot.next_refresh.map(|at| at.saturating_duration_since(now).as_secs()),
            "identity": token.claims.as_ref().map(crate::claims::TokenClaims::identity),
            "last_refresh_error": snapshot.failure.as_ref().map(|f| f.error.to_string()),
        });
        merge(&mut body, common);
        return (StatusCode::OK, Json(body)).into_response();
    }
    let problem: ApiError = diagnose::no_token(&state.proxy.diagnosis, &snapshot.unusable());
    let mut body = json!({
        "status": "not_ready",
        "reason": problem.message,
        "code": problem.code,
        "fix": problem.fix,
        "upstream": problem.upstream,
    });
    merge(&mut body, common);
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    if let Some(seconds) = problem.retry_after {
        let headers = response.headers_mut();
        headers.insert(axum::http::header::RETRY_AFTER, seconds.into());
        headers.insert(
            HeaderName::from_static("retry-after-ms"),
            seconds.saturating_mul(1000).into(),
        );
    }
    response
}

fn merge(into: &mut serde_json::Value, from: serde_json::Value) {
    if let (Some(target), serde_json::Value::Object(source)) = (into.as_object_mut(), from) {
        target.extend(source);
    }
}

/// `/metrics` (Prometheus text). With access keys configured it needs an admin key on the main
/// listener (it names every key and its usage); the separate metrics listener is open.
async fn metrics_text(
    State(state): State<Arc<AppState>>,
    headers: axum::http::HeaderMap,
) -> Response {
    if !state.open_metrics {
        match caller(&state, &headers) {
            Err(refused) => return refused.into_response(),
            Ok(Some(key)) if !key.is_admin() => {
                return admin_required(&key, "/metrics on the main listener").into_response();
            }
            Ok(_) => {}
        }
    }
    let mut text = state.proxy.metrics.render(&state.proxy.tokens.load());
    if let Some(pool) = &state.proxy.pool {
        pool.render_metrics(&mut text);
    }
    if let Some(shared) = &state.proxy.shared {
        shared.render_metrics(&mut text);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response()
}

/// `/status`: for an admin key (or without keys) the credential, token, last refresh error
/// (explained), upstream and every key's usage; for a member key only its own standing.
async fn status(State(state): State<Arc<AppState>>, headers: axum::http::HeaderMap) -> Response {
    let key = match caller(&state, &headers) {
        Ok(key) => key,
        Err(refused) => return refused.into_response(),
    };
    let proxy = &state.proxy;
    let tokens = proxy.tokens.load();
    if let Some(key) = key.as_ref().filter(|k| !k.is_admin()) {
        let ready = tokens
            .token
            .as_ref()
            .is_some_and(|t| t.is_valid(Instant::now()));
        let now = crate::clock::unix_now_signed();
        let days = crate::shared::reads::month_to_date(now);
        let shared = team_standing(proxy, key, &days, now).await;
        let (used, budgets, usage, scope) = match shared {
            Some((used, budgets, usage)) => {
                (used, budgets, usage, crate::status::team_scope(&days))
            }
            None => (
                proxy.limiter.used(&key.name, Instant::now()),
                proxy.budgets.standing(&key.name, &key.rules, now),
                crate::status::own_usage(&proxy.metrics, &key.name),
                crate::status::process_scope(state.status.started),
            ),
        };
        return Json(crate::status::member_status_json(
            key, ready, used, &budgets, usage, scope,
        ))
        .into_response();
    }
    let mut document =
        crate::status::status_json(&state.status, &tokens, &proxy.diagnosis, &proxy.metrics);
    if let Some(key) = key {
        merge(&mut document, json!({"key": crate::status::key_json(&key)}));
    }
    if let (Some(pool), Some(object)) = (&proxy.pool, document.as_object_mut()) {
        object.insert("upstreams".to_owned(), pool.status_json());
    }
    if let Some(shared) = &proxy.shared {
        let now = crate::clock::unix_now_signed();
        let days = crate::shared::reads::month_to_date(now);
        let team = shared.usage(&days, None).await;
        merge(
            &mut document,
            crate::status::redis_json(shared, team.ok(), &days),
        );
    }
    Json(document).into_response()
}

/// A member key's limits (last 60 s), budgets and usage this month across replicas, from
/// Redis; `None` without Redis or while it does not answer (this replica's own view then).
async fn team_standing(
    proxy: &crate::proxy::ProxyState,
    key: &crate::keys::KeyEntry,
    days: &[String],
    now: i64,
) -> Option<(
    (u64, u64),
    Vec<crate::budget::Standing>,
    Vec<crate::metrics::UsageRow>,
)> {
    let shared = proxy.shared.as_ref()?;
    let (used, spend, usage) = tokio::join!(
        shared.used(&key.name),
        shared.spend(&key.name, now),
        shared.usage(days, Some(&key.name))
    );
    let spend = spend.ok()?;
    let budgets = crate::budget::standing(
        spend.day_tokens,
        spend.month_tokens,
        spend.month_usd,
        &key.rules,
        now,
    );
    Some((used.ok()?, budgets, usage.ok()?))
}

/// The caller's key (`None` without keys configured), or the 401 refusal.
fn caller(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Option<Arc<crate::keys::KeyEntry>>, ApiError> {
    crate::keys::authenticate(state.proxy.keys.as_deref(), headers)
}

/// 403 `admin_key_required`: `what` is for admin keys only.
fn admin_required(key: &crate::keys::KeyEntry, what: &str) -> ApiError {
    let vars = diagnose::catalog::Vars::new()
        .set("detail", key.name.clone())
        .set("what", what);
    diagnose::proxy_refusal(diagnose::RefusalCode::AdminKeyRequired, &vars)
}
