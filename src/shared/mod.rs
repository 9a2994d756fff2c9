//! State shared by replicas through Redis (`FOUNDRY_PROXY_REDIS_URL`): per-key request and
//! token limits, budgets, and usage per key, model and UTC day.
//!
//! - **Admission** is one server-side script per request of a limited or budgeted key
//!   ([`scripts::ADMIT`]): one round trip, checked and counted atomically, so replicas
//!   together admit exactly N in any 60 s.
//! - **Usage** (requests, errors, tokens, cost) and budget charges are sent in the background
//!   ([`writer`]): merged per key, model and day and written as one atomic script per batch,
//!   off the request path. A batch that cannot be written is kept and written when Redis
//!   answers again.
//! - **Unreachable Redis** (a command that errs or takes longer than [`COMMAND_TIMEOUT`]):
//!   the connection is dropped, logged once, `foundry_proxy_redis_up` turns 0 and one task
//!   reconnects in the background. Meanwhile requests never wait on Redis: with
//!   `FOUNDRY_PROXY_REDIS_FAILURE=open` each replica falls back to its own limiter and
//!   budgets, with `closed` they get 503 `redis_unavailable`.

pub mod reads;
pub mod scripts;
mod writer;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Script};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::budget::Budget;
use crate::config::redis::{RedisConfig, RedisFailure};
use crate::keys::KeyEntry;
use crate::limits::Exceeded;

pub use writer::Event;

/// Longest a request waits for Redis before it counts as unreachable.
pub const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// Longest a connection attempt takes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between reconnection attempts: first, and at most.
const RECONNECT_FIRST: Duration = Duration::from_millis(200);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Redis's verdict on one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted and counted.
    Allow,
    /// Over a per-minute limit: which, its value, seconds to wait.
    Limited {
        /// Requests or tokens.
        exceeded: Exceeded,
        /// The limit per minute.
        limit: u64,
        /// Until enough of the window has passed.
        retry_after: Duration,
    },
    /// A budget is spent.
    Spent(Budget),
}

/// Redis could not answer in time (or is known to be down): the caller fails open or closed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("Redis is unreachable")]
pub struct Unavailable;

/// A connection to the replicas' shared Redis, and what is known about it.
#[derive(Debug)]
pub struct Shared {
    client: Client,
    /// The live connection; `None` while Redis is unreachable (requests skip it at once).
    connection: ArcSwapOption<MultiplexedConnection>,
    /// The URL without credentials.
    shown: String,
    failure: RedisFailure,
    /// One reconnection task at a time.
    reconnecting: AtomicBool,
    /// Woken when a connection is made again (the writer waits for it).
    reconnected: Notify,
    admit: Script,
    used: Script,
    flush: Script,
    events: mpsc::UnboundedSender<Event>,
    shutdown: CancellationToken,
    /// When an error Redis answered with was last logged (Unix seconds).
    last_refusal_logged: AtomicI64,
    /// Names this replica's usage batches (with a counter), so a batch sent again after a
    /// lost answer is applied once.
    replica: String,
}

/// What a command is for: a slow read does not count as Redis being gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Request,
    Read,
}

/// Why a command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failed {
    /// No connection, or it was lost (dropped; reconnecting).
    Unreachable,
    /// Redis answered with an error (out of memory, a script error); the connection stays.
    Refused,
}

/// Why the Redis client could not be built (bad TLS material); unreachable servers are not an
/// error at start: the proxy serves and reconnects.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The extra CA file for `rediss://` could not be read.
    #[error("cannot read the CA file {path} for rediss:// ({source}) — fix SSL_CERT_FILE")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// redis-rs refused the URL or TLS settings.
    #[error(
        "FOUNDRY_PROXY_REDIS_URL ({shown}) cannot be used: {reason} — use redis://HOST:6379 or rediss://HOST:6380"
    )]
    Client {
        /// The URL without credentials.
        shown: String,
        /// Why (never holds the password).
        reason: String,
    },
}

impl Shared {
    /// Connects (or, when Redis does not answer, starts reconnecting in the background) and
    /// starts the usage writer; `extra_ca`, when set, is trusted for `rediss://` instead of the
    /// public roots (as `SSL_CERT_FILE` does for OpenSSL).
    /// The writer ends, after a last write, once `shutdown` is cancelled; await the handle.
    pub async fn start(
        config: &RedisConfig,
        extra_ca: Option<&Path>,
        shutdown: CancellationToken,
    ) -> Result<(Arc<Self>, JoinHandle<()>), StartError> {
        let client = client(config, extra_ca)?;
        let (events, queue) = mpsc::unbounded_channel();
        let shared = Arc::new(Self {
            client,
            connection: ArcSwapOption::empty(),
            shown: config.shown.clone(),
            failure: config.failure,
            reconnecting: AtomicBool::new(true),
            reconnected: Notify::new(),
            admit: Script::new(scripts::ADMIT),
            used: Script::new(scripts::USED),
            flush: Script::new(scripts::FLUSH),
            events,
            shutdown: shutdown.clone(),
            last_refusal_logged: AtomicI64::new(i64::MIN / 2),
            replica: uuid::Uuid::new_v4().simple().to_string(),
        });
        match shared.connect().await {
            Ok(connection) => {
                shared.reconnecting.store(false, Ordering::Release);
                shared.connection.store(Some(Arc::new(connection)));
                info!(redis = %shared.shown, failure = shared.failure.as_str(), "limits, budgets and usage shared through Redis");
            }
            Err(e) => {
                warn!(redis = %shared.shown, failure = shared.failure.as_str(), error = %describe(&e), "Redis does not answer; {}, reconnecting in the background", shared.fallback());
                tokio::spawn(Arc::clone(&shared).reconnect());
            }
        }
        let writer = tokio::spawn(writer::run(Arc::clone(&shared), queue, shutdown));
        Ok((shared, writer))
    }

    /// The URL without credentials.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Fail open or closed.
    pub fn failure(&self) -> RedisFailure {
        self.failure
    }

    /// True while a connection is held.
    pub fn is_up(&self) -> bool {
        self.connection.load().is_some()
    }

    /// Queues usage or a charge for the writer (never waits).
    pub fn send(&self, event: Event) {
        let _ = self.events.send(event);
    }

    /// Checks `key`'s budgets and per-minute limits and counts the request, at `now` (Unix
    /// seconds, for the budget periods' names).
    pub async fn admit(self: &Arc<Self>, key: &KeyEntry, now: i64) -> Result<Verdict, Unavailable> {
        let day = crate::ledger::day(now);
        let month = &day[..7];
        let setting = |value: Option<String>| value.unwrap_or_default();
        let rules = &key.rules;
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .key(scripts::requests_window(&key.name))
            .key(scripts::tokens_window(&key.name))
            .key(scripts::day_spend(&key.name, &day))
            .key(scripts::month_spend(&key.name, month))
            .arg(setting(
                key.limits.requests_per_minute.map(|n| n.to_string()),
            ))
            .arg(setting(key.limits.tokens_per_minute.map(|n| n.to_string())))
            .arg(setting(rules.tokens_per_day.map(|n| n.to_string())))
            .arg(setting(rules.tokens_per_month.map(|n| n.to_string())))
            .arg(setting(rules.usd_per_month.map(|n| n.to_string())));
        let answer: Vec<String> = self
            .run(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await?;
        Ok(verdict(&answer, key))
    }

    /// What `key` used in the last 60 seconds across replicas: (requests, tokens).
    pub async fn used(self: &Arc<Self>, key: &str) -> Result<(u64, u64), Unavailable> {
        let mut invocation = self.used.prepare_invoke();
        invocation
            .key(scripts::requests_window(key))
            .key(scripts::tokens_window(key));
        self.read(|mut connection| async move { invocation.invoke_async(&mut connection).await })
            .await
    }

    /// Runs `command` on the live connection within [`COMMAND_TIMEOUT`]. A lost connection
    /// (I/O error, timeout, a server that is loading or read-only) is dropped and
    /// reconnected; an error Redis answers with (out of memory, a script error) keeps it.
    async fn run<T, F, Fut>(self: &Arc<Self>, command: F) -> Result<T, Unavailable>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.run_as(Purpose::Request, command)
            .await
            .map_err(|_| Unavailable)
    }

    /// As [`Shared::run`], for `/status`: a read that takes too long fails alone.
    async fn read<T, F, Fut>(self: &Arc<Self>, command: F) -> Result<T, Unavailable>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        self.run_as(Purpose::Read, command)
            .await
            .map_err(|_| Unavailable)
    }

    async fn run_as<T, F, Fut>(self: &Arc<Self>, purpose: Purpose, command: F) -> Result<T, Failed>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let Some(connection) = self.connection.load_full() else {
            return Err(Failed::Unreachable);
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, command((*connection).clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) if connection_lost(&e) => {
                self.lost(&connection, &describe(&e));
                Err(Failed::Unreachable)
            }
            Ok(Err(e)) => {
                self.refused(&describe(&e));
                Err(Failed::Refused)
            }
            // A read for /status may be slow on its own (a month of usage); only the request
            // path and the writer take a timeout as Redis being gone.
            Err(_) if purpose == Purpose::Read => Err(Failed::Unreachable),
            Err(_) => {
                self.lost(
                    &connection,
                    &format!("no answer within {} ms", COMMAND_TIMEOUT.as_millis()),
                );
                Err(Failed::Unreachable)
            }
        }
    }

    /// Logs an error Redis answered with, at most once a minute.
    fn refused(&self, why: &str) {
        let now = crate::clock::unix_now_signed();
        let last = self.last_refusal_logged.load(Ordering::Relaxed);
        if now - last >= 60
            && self
                .last_refusal_logged
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            warn!(redis = %self.shown, failure = self.failure.as_str(), error = %why, "Redis refused a command; {}", self.fallback());
        }
    }

    /// Drops `connection` (unless a newer one replaced it already), logs the outage once and
    /// starts the one reconnection task.
    fn lost(self: &Arc<Self>, connection: &Arc<MultiplexedConnection>, why: &str) {
        let previous = self
            .connection
            .compare_and_swap(&Some(Arc::clone(connection)), None);
        let was_current = previous
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, connection));
        if was_current && !self.reconnecting.swap(true, Ordering::AcqRel) {
            warn!(redis = %self.shown, failure = self.failure.as_str(), error = %why, "Redis unreachable; {}, reconnecting in the background", self.fallback());
            tokio::spawn(Arc::clone(self).reconnect());
        }
    }

    /// What requests get while Redis is away, for the log.
    fn fallback(&self) -> &'static str {
        match self.failure {
            RedisFailure::Open => {
                "each replica counts limits and budgets on its own meanwhile (FOUNDRY_PROXY_REDIS_FAILURE=open)"
            }
            RedisFailure::Closed => {
                "limited and budgeted keys get 503 redis_unavailable meanwhile (FOUNDRY_PROXY_REDIS_FAILURE=closed)"
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, RedisError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT));
        let mut connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        // Loaded now so a batch's EVALSHA does not meet NOSCRIPT after a Redis restart.
        for script in [&self.admit, &self.used, &self.flush] {
            script.prepare_invoke().load_async(&mut connection).await?;
        }
        Ok(connection)
    }

    /// Tries to connect until it succeeds or the proxy stops.
    async fn reconnect(self: Arc<Self>) {
        let mut pause = RECONNECT_FIRST;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            match self.connect().await {
                Ok(connection) => {
                    // The flag first: a command failing on the new connection at once must
                    // be able to start the next reconnection.
                    self.reconnecting.store(false, Ordering::Release);
                    self.connection.store(Some(Arc::new(connection)));
                    self.reconnected.notify_waiters();
                    info!(redis = %self.shown, "Redis answers again; limits, budgets and usage are shared again");
                    return;
                }
                Err(_) => pause = (pause * 2).min(RECONNECT_MAX),
            }
        }
    }

    /// `foundry_proxy_redis_up`, in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP foundry_proxy_redis_up 1 while the shared Redis (FOUNDRY_PROXY_REDIS_URL) answers, else 0.\n# TYPE foundry_proxy_redis_up gauge\nfoundry_proxy_redis_up {}",
            u8::from(self.is_up())
        );
    }
}

/// The admission script's answer as a verdict.
fn verdict(answer: &[String], key: &KeyEntry) -> Verdict {
    let wait = |text: Option<&String>| {
        Duration::from_secs(text.and_then(|t| t.parse().ok()).unwrap_or(1).max(1))
    };
    match answer.first().map(String::as_str) {
        Some("requests") => Verdict::Limited {
            exceeded: Exceeded::Requests,
            limit: key.limits.requests_per_minute.map_or(0, u64::from),
            retry_after: wait(answer.get(1)),
        },
        Some("tokens") => Verdict::Limited {
            exceeded: Exceeded::Tokens,
            limit: key.limits.tokens_per_minute.unwrap_or(0),
            retry_after: wait(answer.get(1)),
        },
        Some("budget") => answer
            .get(1)
            .and_then(|field| Budget::from_field(field))
            .map_or(Verdict::Allow, Verdict::Spent),
        _ => Verdict::Allow,
    }
}

/// True when `error` means the connection is gone or unusable for now (reconnect), rather
/// than Redis refusing this one command.
fn connection_lost(error: &RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::ReadOnly
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
            )
        )
}

/// A Redis error in one line; redis-rs never puts the URL's password in its errors.
fn describe(error: &RedisError) -> String {
    error.to_string().replace('\n', " ")
}

fn client(config: &RedisConfig, extra_ca: Option<&Path>) -> Result<Client, StartError> {
    let refused = |e: RedisError| StartError::Client {
        shown: config.shown.clone(),
        reason: describe(&e),
    };
    let url = config.url.expose();
    match extra_ca.filter(|_| config.tls) {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| StartError::CaFile {
                path: path.display().to_string(),
                source,
            })?;
            Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                },
            )
            .map_err(refused)
        }
        None => Client::open(url).map_err(refused),
    }
}
