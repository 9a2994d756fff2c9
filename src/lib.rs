//! foundry-proxy: a local OpenAI-compatible proxy that puts an Entra ID token on every
//! request to Azure AI Foundry / Azure OpenAI, and explains every refusal.
//!
//! Modules, in the order a request meets them:
//! - [`config`]: defaults < TOML file < environment < flags, validated with clear errors.
//! - [`keys`]: inbound access keys (`FOUNDRY_PROXY_KEYS_FILE`), hot-reloaded, checked in constant time.
//! - [`server`]: the listener, router, `/healthz`, `/readyz`, graceful shutdown.
//! - [`request_id`]: the `x-request-id` of each request, taken or made.
//! - [`proxy`]: the forwarding handler (headers, streaming bodies, the 401 retry).
//! - [`pool`]: several upstreams (`[[upstream]]`): order by priority and weight, rest on 429,
//!   eject and restore after failures.
//! - [`upstream`]: API styles, the inbound-path → upstream-URL mapping, the outbound client.
//! - [`usage`]: token counts from the upstream's `usage`, read as answers and streams pass.
//! - [`token`]: the `ArcSwap` token cell and its refresher task.
//! - [`credential`]: where tokens come from (Entra ID client credentials).
//! - [`diagnose`]: Azure and Entra refusals → explanations with fix steps, from one catalog.
//! - [`check`]: `foundry-proxy check`, the permission checklist walked for real.
//! - [`error`]: the OpenAI-shaped error answer.
//! - [`budget`]: per-key token and dollar budgets per UTC day and month.
//! - [`limits`]: per-key requests and tokens per minute over a sliding window.
//! - [`shared`]: limits, budgets and usage shared by replicas through Redis.
//! - [`claims`]: reading the proxy's own token to explain refusals.
//! - [`clock`]: the wall clock in Unix seconds.
//! - [`secret`]: a string that cannot leak through `Debug`, `Display` or `Serialize`.
//! - [`tls`]: the shared TLS client configuration (`SSL_CERT_FILE`).
//! - [`telemetry`]: logging setup.
//! - [`ledger`]: the usage ledger in SQLite (`FOUNDRY_PROXY_USAGE_DB`) and `usage --db`.
//! - [`metrics`]: Prometheus metrics for `/metrics`, and usage per access key and model.
//! - [`setup`]: `foundry-proxy setup`: the App Registration, credential and role assignment
//!   made with the operator's Azure login, the env file, the wait, then `check`.
//! - [`status`]: the `/status` document, and reading it for `foundry-proxy usage`.
//! - `table`: plain-text tables for `keys list` and `usage`.
//! - [`healthcheck`]: `foundry-proxy healthcheck`, the container health probe.
//! - [`proxy_client`]: the one client for a running proxy, used by `healthcheck` and `usage`.
//! - [`emulator`]: the built-in Entra ID + Foundry emulator (tests, `demo`, users' CI).
//! - [`demo`]: the emulator and the proxy wired together in one process.

pub mod budget;
pub mod check;
pub mod claims;
pub mod clock;
pub mod config;
pub mod credential;
pub mod demo;
pub mod diagnose;
pub mod emulator;
pub mod error;
pub mod healthcheck;
pub mod keys;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod proxy_client;
pub mod request_id;
pub mod secret;
pub mod server;
pub mod setup;
pub mod shared;
pub mod status;
mod table;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod usage;
