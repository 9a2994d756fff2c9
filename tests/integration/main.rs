//! The integration tests: one test crate, one module per area, all against the real emulator
//! and the real proxy (or the built binary) over sockets on 127.0.0.1.
//!
//! One crate rather than a binary per file: the shared harness (`common`) is compiled once and
//! the tests link once. Run one area with a filter on its module, e.g.
//! `cargo nextest run -E 'test(/^faults::/)'` or `cargo test --test integration faults::`.
//!
//! nextest (`scripts/test`) runs every test in its own process. A few areas read state that
//! belongs to the whole process — the captured trace logs (`faults`, `hostile`) and its open
//! file descriptors and memory (`faults`) — so under plain `cargo test`, where the tests are
//! threads of one process, those two run apart, one at a time (see `scripts/test`).

mod common;

mod anthropic;
mod azure_cli;
mod bad_input;
mod browser_guard;
mod budgets;
mod catalog;
mod check;
mod cli;
mod container;
mod credentials;
mod dialects;
mod emulator_claude;
mod emulator_entra;
mod emulator_foundry;
mod emulator_identity;
mod emulator_media;
mod emulator_project;
mod explanations;
mod faults;
mod forwarding;
mod fuzz;
mod hostile;
mod keys;
mod ledger;
mod managed_identity;
mod observability;
mod readme;
mod redis;
mod roles;
mod setup;
mod streaming;
mod team;
mod tls;
mod token_lifecycle;
mod upstreams;
mod usage;
mod websocket;
