//! Logging: `tracing`, filtered by `RUST_LOG` (default `info`), as text or as one JSON object
//! per line (`FOUNDRY_PROXY_LOG_FORMAT=json`).
//!
//! Where the lines go depends on the format and on what the command's stdout is for:
//! - text logs go to stderr, for people at a terminal;
//! - JSON logs of the long-running commands (`serve`, `demo`, `emulate`) go to stdout, where
//!   container log collectors expect structured logs (stderr often reads as "error");
//! - JSON logs of the tools whose stdout is their answer (`check`, `healthcheck`) stay on
//!   stderr, so `check --json` still prints one document.

mod log_time;

use std::fmt::{self, Write as _};
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::Writer;

pub use log_time::LogTime;

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
        .with_timer(LogTime)
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
        (Format::Text, _) => builder
            .fmt_fields(TextFields)
            .with_writer(std::io::stderr)
            .try_init(),
    };
}

/// Text log fields, as tracing-subscriber's default writes them without colour: the message,
/// then `name=value` separated by spaces, strings quoted. Written straight to the line: the
/// default formatter paints every field name (colour or not) and goes through `Debug` for every
/// value, which made the per-request line a seventh of the request path's instructions.
///
/// Control characters, line separators and bidi overrides in any value are escaped (`\u{1b}`),
/// so no value — a model name or a path from a client — can forge a line, disguise one or drive
/// the terminal.
#[derive(Debug, Clone, Copy, Default)]
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = TextVisitor {
            writer,
            result: Ok(()),
            first: true,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'writer> {
    writer: Writer<'writer>,
    result: fmt::Result,
    first: bool,
}

impl TextVisitor<'_> {
    /// Writes the separator and `name=` (nothing for the message); false after an error.
    fn begin(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        if !self.first {
            self.result = self.writer.write_char(' ');
        }
        self.first = false;
        let name = field.name();
        if name != "message" && self.result.is_ok() {
            let name = name.strip_prefix("r#").unwrap_or(name);
            self.result = self
                .writer
                .write_str(name)
                .and_then(|()| self.writer.write_char('='));
        }
        self.result.is_ok()
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if !self.begin(field) {
            return;
        }
        self.result = if field.name() == "message" {
            Escaped(&mut self.writer).write_str(value)
        } else {
            write_quoted(&mut self.writer, value)
        };
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.begin(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.begin(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.begin(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.begin(field) {
            self.result = write!(Escaped(&mut self.writer), "{value:?}");
        }
    }
}

/// `value` in double quotes, with `"`, `\\` and control characters escaped as `Debug` does.
fn write_quoted(out: &mut impl fmt::Write, value: &str) -> fmt::Result {
    out.write_char('"')?;
    if value
        .bytes()
        .all(|b| is_plain(b) && b != b'"' && b != b'\\')
    {
        out.write_str(value)?;
    } else {
        for c in value.chars() {
            match c {
                '"' | '\\' => {
                    out.write_char('\\')?;
                    out.write_char(c)?;
                }
                c if needs_escape(c) => write!(out, "{}", c.escape_unicode())?,
                c => out.write_char(c)?,
            }
        }
    }
    out.write_char('"')
}

/// Characters that could forge or disguise a line: controls (C0, DEL, C1), line and paragraph
/// separators, and bidirectional overrides and isolates.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// Printable ASCII: needs no look at the characters.
fn is_plain(byte: u8) -> bool {
    (0x20..0x7f).contains(&byte)
}

/// A writer that escapes control characters (ESC, CR, LF, C1 controls) on their way through.
struct Escaped<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        if text.bytes().all(is_plain) {
            return self.0.write_str(text);
        }
        for c in text.chars() {
            if needs_escape(c) {
                write!(self.0, "{}", c.escape_unicode())?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// A request path as logged: a non-ASCII path (Unicode may carry control, line-separator or bidi
/// characters) is escaped, so no path can forge or reorder a log line.
pub fn loggable(path: &str) -> std::borrow::Cow<'_, str> {
    if path.is_ascii() {
        std::borrow::Cow::Borrowed(path)
    } else {
        std::borrow::Cow::Owned(path.escape_debug().to_string())
    }
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

    /// Text fields read as the default formatter's (without colour), and no value can carry a
    /// control character into the line.
    #[test]
    fn text_fields() {
        use tracing_subscriber::layer::SubscriberExt;

        #[derive(Clone, Default)]
        struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("lock").extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let sink = lines.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .fmt_fields(TextFields)
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .with_writer(move || sink.clone()),
        );
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                method = %"POST",
                status = 200u64,
                delta = -3i64,
                ok = true,
                model = "gpt-4o \"mini\"\n\u{1b}[31m\u{202e}\u{2028}",
                path = %"/v1/x\r\ny",
                "request {}",
                "\u{1b}]0;title"
            );
        });
        let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(
            text,
            " INFO request \\u{1b}]0;title method=POST status=200 delta=-3 ok=true model=\"gpt-4o \\\"mini\\\"\\u{a}\\u{1b}[31m\\u{202e}\\u{2028}\" path=/v1/x\\u{d}\\u{a}y\n"
        );
    }
}
