//! Logging: `tracing`, filtered by `RUST_LOG` (default `info`), as text or as one JSON object
//! per line (`FOUNDRY_PROXY_LOG_FORMAT=json`).
//!
//! Where the lines go depends on the format and on what the command's stdout is for:
//! - text logs go to stderr, for people at a terminal;
//! - JSON logs of the long-running commands (`serve`, `demo`, `emulate`) go to stdout, where
//!   container log collectors expect structured logs (stderr often reads as "error");
//! - JSON logs of the tools whose stdout is their answer (`check`, `healthcheck`) stay on
//!   stderr, so `check --json` still prints one document.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The environment variable that selects the log format.
pub const ENV_LOG_FORMAT: &str = "FOUNDRY_PROXY_LOG_FORMAT";

/// What the running command uses stdout for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A long-running service: stdout is free for JSON logs.
    Service,
    /// A tool whose stdout is its answer: logs never go there.
    Tool,
}

/// The log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// From the value of `FOUNDRY_PROXY_LOG_FORMAT`: `json` (any case) or anything else for text.
    pub fn from_env_value(value: Option<&str>) -> Self {
        if value.is_some_and(|v| v.trim().eq_ignore_ascii_case("json")) {
            Format::Json
        } else {
            Format::Text
        }
    }
}

/// Where log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The process's standard output.
    Stdout,
    /// The process's standard error.
    Stderr,
}

/// The stream for `format` logs of a command with `role`.
pub fn stream(format: Format, role: Role) -> Stream {
    match (format, role) {
        (Format::Json, Role::Service) => Stream::Stdout,
        _ => Stream::Stderr,
    }
}

/// Installs the global subscriber. Safe to call once per process.
pub fn init(role: Role) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = Format::from_env_value(std::env::var(ENV_LOG_FORMAT).ok().as_deref());
    // Colour codes only for a person at a terminal: in files and log collectors they are noise
    // (and formatting them costs time on every request's line).
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_target(false);
    let _ = match (format, stream(format, role)) {
        (Format::Json, Stream::Stdout) => builder
            .json()
            .flatten_event(true)
            .with_writer(std::io::stdout)
            .try_init(),
        (Format::Json, Stream::Stderr) => builder
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .try_init(),
        (Format::Text, _) => builder.with_writer(std::io::stderr).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// JSON logs of a service go to stdout; text logs and any log of a tool go to stderr.
    #[test]
    fn where_logs_go() {
        assert_eq!(stream(Format::Json, Role::Service), Stream::Stdout);
        assert_eq!(stream(Format::Json, Role::Tool), Stream::Stderr);
        assert_eq!(stream(Format::Text, Role::Service), Stream::Stderr);
        assert_eq!(stream(Format::Text, Role::Tool), Stream::Stderr);
    }

    /// Only `json` selects JSON; unset, empty or unknown values mean text.
    #[test]
    fn format_from_env() {
        assert_eq!(Format::from_env_value(Some("json")), Format::Json);
        assert_eq!(Format::from_env_value(Some(" JSON ")), Format::Json);
        assert_eq!(Format::from_env_value(Some("")), Format::Text);
        assert_eq!(Format::from_env_value(Some("text")), Format::Text);
        assert_eq!(Format::from_env_value(None), Format::Text);
    }
}
