//! The `foundry-proxy` command line: parse arguments, load configuration, start logging,
//! run the chosen command. Exit codes: 0 success, 1 runtime failure, 2 bad configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use foundry_proxy::check::report;
use foundry_proxy::config::{self, ProcessEnv, Settings};
use foundry_proxy::emulator::{self, EmulatorConfig};
use foundry_proxy::healthcheck::{self, Probe};
use foundry_proxy::keys;
use foundry_proxy::server::{self, ServeOptions};
use foundry_proxy::{demo, status, telemetry};

/// mimalloc instead of the system allocator: a proxied request allocates a few dozen small
/// buffers (headers, futures, bodies), and glibc's malloc/free were 15% of the request path's
/// instructions (callgrind). Built without transparent huge pages (`no_thp`): with them an idle
/// proxy held 17 MiB instead of 10.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A local OpenAI-compatible proxy that adds an Entra ID token to every request to
/// Azure AI Foundry / Azure OpenAI, and explains every refusal.
#[derive(Debug, Parser)]
#[command(
    name = "foundry-proxy",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default command).
    Serve(ServeArgs),
    /// Walk the permission checklist for real: config, Entra token, claims, endpoint,
    /// inference. Exit code 0 only when all is well.
    Check {
        #[command(flatten)]
        settings: ServeArgs,
        /// A deployment to test with a one-token chat call (default: list models).
        #[arg(long, value_name = "DEPLOYMENT")]
        model: Option<String>,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the built-in emulator and the proxy together: no Azure account needed.
    Demo {
        /// Address for the proxy [default: FOUNDRY_PROXY_LISTEN or 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<String>,
    },
    /// Run the built-in Entra ID + Foundry emulator alone.
    Emulate {
        /// Address for the emulator.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
        /// Emulator world (apps, roles, deployments) as TOML.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the demo app's identity and chat deployment as KEY=VALUE lines
        /// (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, MODEL) and exit, for scripts
        /// that start a proxy against the emulator.
        #[arg(long, conflicts_with_all = ["listen", "config"])]
        print_env: bool,
    },
    /// Do the IAM steps with your Azure login: App Registration, credential, role assignment
    /// on the resource, an env file for `serve`, the wait for the role to apply, then `check`.
    Setup(foundry_proxy::setup::cli::SetupArgs),
    /// Manage the access keys clients must present (the FOUNDRY_PROXY_KEYS_FILE file).
    Keys {
        #[command(subcommand)]
        action: keys::cli::KeysCommand,
    },
    /// Usage per access key and model (requests, errors, tokens) from a running proxy's
    /// /status, or from the usage ledger file with --db. Exit code 1 with one line saying why
    /// when it cannot be read.
    Usage {
        /// The proxy's address [default: http:// + FOUNDRY_PROXY_LISTEN, 0.0.0.0 as 127.0.0.1].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Access key sent as a bearer token [env: FOUNDRY_PROXY_KEY].
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Print the rows as JSON instead of a table.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Read the usage ledger (FOUNDRY_PROXY_USAGE_DB) from this SQLite file instead of asking
        /// a running proxy.
        #[arg(long, value_name = "PATH", conflicts_with_all = ["url", "key"])]
        db: Option<std::path::PathBuf>,
        /// With --db: from this UTC day on (YYYY-MM-DD, or an RFC 3339 time).
        #[arg(long, value_name = "DAY", requires = "db")]
        since: Option<String>,
        /// With --db: up to this UTC day, inclusive.
        #[arg(long, value_name = "DAY", requires = "db")]
        until: Option<String>,
        /// With --db: what to sum by, comma-separated or repeated [default: key,model].
        #[arg(long, value_enum, value_delimiter = ',', requires = "db")]
        by: Vec<foundry_proxy::ledger::store::By>,
        /// With --db: print CSV instead of a table.
        #[arg(long, requires = "db")]
        csv: bool,
    },
    /// Ask a running proxy whether it is ready (GET /readyz): exit code 0 on 200, else 1
    /// with one line saying why. For container health checks (no shell or curl needed).
    Healthcheck {
        /// The proxy's address [default: http:// + FOUNDRY_PROXY_LISTEN, 0.0.0.0 as 127.0.0.1].
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Ask whether it is alive (GET /healthz) instead of ready.
        #[arg(long)]
        live: bool,
        /// Seconds to wait for the answer.
        #[arg(long, value_name = "SECS", default_value_t = healthcheck::DEFAULT_TIMEOUT.as_secs_f64())]
        timeout: f64,
    },
}

impl Command {
    /// Whether stdout is free for JSON logs (services) or holds the command's answer (tools).
    fn log_role(&self) -> telemetry::Role {
        match self {
            Command::Check { .. }
            | Command::Emulate {
                print_env: true, ..
            }
            | Command::Healthcheck { .. }
            | Command::Usage { .. }
            | Command::Keys { .. }
            | Command::Setup(_) => telemetry::Role::Tool,
            Command::Serve(_) | Command::Demo { .. } | Command::Emulate { .. } => {
                telemetry::Role::Service
            }
        }
    }
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// TOML config file [env: FOUNDRY_PROXY_CONFIG].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address [env: FOUNDRY_PROXY_LISTEN; default 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Foundry / Azure OpenAI endpoint [env: FOUNDRY_ENDPOINT].
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// API style: openai-v1, deployments, models, passthrough [env: FOUNDRY_API].
    #[arg(long, value_name = "STYLE")]
    api: Option<String>,
    /// api-version sent upstream [env: FOUNDRY_API_VERSION].
    #[arg(long, value_name = "VERSION")]
    api_version: Option<String>,
}

impl ServeArgs {
    fn flags(&self) -> Settings {
        Settings {
            listen: self.listen.clone(),
            endpoint: self.endpoint.clone(),
            api: self.api.clone(),
            api_version: self.api_version.clone(),
            ..Settings::default()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(
        cli.command
            .as_ref()
            .map_or(telemetry::Role::Service, Command::log_role),
    );
    // On one core (a pinned sidecar, a container limited to one CPU) a single-threaded runtime
    // does the same work without paying for cross-thread scheduling.
    let one_core = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_core {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("foundry-proxy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    match cli.command {
        None => serve(cli.serve, shutdown).await,
        Some(Command::Serve(args)) => serve(args, shutdown).await,
        Some(Command::Demo { listen }) => match demo::run(listen, &ProcessEnv, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(demo::DemoError::Config(e)) => fail(2, &e),
            Err(e) => fail(1, &e),
        },
        Some(Command::Emulate {
            print_env: true, ..
        }) => {
            print!("{}", demo_env());
            ExitCode::SUCCESS
        }
        Some(Command::Emulate { listen, config, .. }) => emulate(&listen, config, shutdown).await,
        Some(Command::Check {
            settings,
            model,
            json,
        }) => check(&settings, model, json).await,
        Some(Command::Setup(args)) => ExitCode::from(
            foundry_proxy::setup::cli::run(&args, &ProcessEnv, std::path::Path::new("az")).await,
        ),
        Some(Command::Keys { action }) => ExitCode::from(keys::cli::run(&action)),
        Some(Command::Usage {
            db: Some(db),
            since,
            until,
            by,
            json,
            csv,
            ..
        }) => usage_from_ledger(&db, &by, since.as_deref(), until.as_deref(), json, csv),
        Some(Command::Usage { url, key, json, .. }) => usage(url, key, json).await,
        Some(Command::Healthcheck { url, live, timeout }) => {
            health(url.as_deref(), live, timeout).await
        }
    }
}

async fn health(url: Option<&str>, live: bool, timeout_secs: f64) -> ExitCode {
    let listen = std::env::var(foundry_proxy::config::ENV_LISTEN).ok();
    let target = match healthcheck::target(url, listen.as_deref()) {
        Ok(target) => target,
        // Not 2: Docker reserves exit code 2 in health checks.
        Err(e) => return fail(1, &e),
    };
    let timeout = std::time::Duration::try_from_secs_f64(timeout_secs)
        .unwrap_or(healthcheck::DEFAULT_TIMEOUT);
    let probe = if live { Probe::Alive } else { Probe::Ready };
    match healthcheck::run(&target, probe, timeout).await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e),
    }
}

fn usage_from_ledger(
    db: &std::path::Path,
    by: &[foundry_proxy::ledger::store::By],
    since: Option<&str>,
    until: Option<&str>,
    json: bool,
    csv: bool,
) -> ExitCode {
    use foundry_proxy::ledger::report::{self, Format};
    use foundry_proxy::ledger::store::By;
    let by = if by.is_empty() {
        vec![By::Key, By::Model]
    } else {
        by.to_vec()
    };
    let format = match (json, csv) {
        (true, _) => Format::Json,
        (_, true) => Format::Csv,
        _ => Format::Table,
    };
    match report::render(db, &by, since, until, format) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e),
    }
}

async fn usage(url: Option<String>, key: Option<String>, json: bool) -> ExitCode {
    let listen = std::env::var(config::ENV_LISTEN).ok();
    let address =
        match foundry_proxy::proxy_client::Address::resolve(url.as_deref(), listen.as_deref()) {
            Ok(address) => address,
            Err(e) => return fail(1, &e),
        };
    let key = key
        .or_else(|| std::env::var(status::ENV_KEY).ok())
        .filter(|k| !k.is_empty());
    let document = status::fetch_status(&address, key.as_deref()).await;
    let rows = document
        .as_ref()
        .map_err(Clone::clone)
        .and_then(status::usage_rows);
    match rows {
        Ok(rows) if json => match serde_json::to_string_pretty(&rows) {
            Ok(text) => {
                println!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, &e),
        },
        Ok(rows) => {
            // On stderr, so the table on stdout stays the same to read for scripts.
            if let Some(scope) = document.as_ref().ok().and_then(status::usage_scope_line) {
                eprintln!("{scope}");
            }
            print!("{}", status::usage_table(&rows));
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e),
    }
}

async fn serve(args: ServeArgs, shutdown: CancellationToken) -> ExitCode {
    let config = match config::load(args.config.as_deref(), &ProcessEnv, args.flags()) {
        Ok(config) => config,
        Err(e) => return fail(2, &e),
    };
    let listener = match TcpListener::bind(config.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            return fail(
                1,
                &format!(
                    "cannot listen on {}: {e} — set FOUNDRY_PROXY_LISTEN (or --listen) to a free address",
                    config.listen
                ),
            );
        }
    };
    if let Ok(addr) = listener.local_addr() {
        println!("foundry-proxy listening on http://{addr}");
    }
    match server::serve(config, listener, shutdown, ServeOptions::default()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ server::ServeError::Keys(_)) => fail(2, &e),
        Err(e) => fail(1, &e),
    }
}

async fn check(args: &ServeArgs, model: Option<String>, json: bool) -> ExitCode {
    let loaded = config::load(args.config.as_deref(), &ProcessEnv, args.flags());
    let report =
        foundry_proxy::check::run(loaded, &foundry_proxy::check::CheckOptions { model }).await;
    if json {
        println!("{}", report::json(&report));
    } else {
        print!("{}", report::text(&report, report::Colour::detect()));
    }
    ExitCode::from(report.exit_code())
}

async fn emulate(listen: &str, config: Option<PathBuf>, shutdown: CancellationToken) -> ExitCode {
    let world = match config {
        Some(path) => match emulator::load_config(&path) {
            Ok(world) => world,
            Err(e) => return fail(2, &format!("--config: {e}")),
        },
        None => EmulatorConfig::default(),
    };
    let addr: SocketAddr = match listen.parse() {
        Ok(addr) => addr,
        Err(_) => {
            return fail(
                2,
                &format!(
                    "--listen: '{listen}' is not an address with a port — use IP:PORT, e.g. 127.0.0.1:8081"
                ),
            );
        }
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            return fail(
                1,
                &format!("cannot listen on {addr}: {e} — pass --listen with a free address"),
            );
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    let guard = match foundry_proxy::server::browser_guard::emulator_guard(bound, &ProcessEnv) {
        Ok(guard) => guard,
        Err(e) => return fail(2, &e),
    };
    let running = match emulator::spawn_on_with(listener, world, |router| router.layer(guard)).await
    {
        Ok(running) => running,
        Err(e) => return fail(1, &e),
    };
    let url = running.url();
    println!("emulator listening on {url}");
    println!("Point a proxy at it with:");
    println!(
        "  AZURE_AUTHORITY_HOST={url} FOUNDRY_ENDPOINT={url} AZURE_TENANT_ID={} AZURE_CLIENT_ID={} AZURE_CLIENT_SECRET=<the demo secret in docs/development.md>",
        emulator::identities::TENANT_ID,
        emulator::identities::CLIENT_ID
    );
    shutdown.cancelled().await;
    running.shutdown().await;
    ExitCode::SUCCESS
}

/// `emulate --print-env`: the demo app's identity and chat deployment, one `KEY=VALUE` line
/// each, so scripts take them from the binary rather than from the source.
fn demo_env() -> String {
    format!(
        "AZURE_TENANT_ID={}\nAZURE_CLIENT_ID={}\nAZURE_CLIENT_SECRET={}\nMODEL={}\n",
        emulator::identities::TENANT_ID,
        emulator::identities::CLIENT_ID,
        emulator::identities::CLIENT_SECRET,
        emulator::identities::CHAT_DEPLOYMENT
    )
}

fn fail(code: u8, error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("foundry-proxy: {error}");
    ExitCode::from(code)
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        () = terminate => {}
    }
    shutdown.cancel();
}
