//! Printing a [`Report`]: one line per step with a pass/fail mark, or one JSON document.
//! Colours only on a terminal, and never when `NO_COLOR` is set.

use std::fmt::Write as _;

use super::{Report, Status};

/// Whether to colour the text output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Colour {
    /// ANSI colours.
    On,
    /// Plain text.
    Off,
}

impl Colour {
    /// On only when stdout is a terminal and `NO_COLOR` is unset or empty.
    pub fn detect() -> Self {
        use std::io::IsTerminal;
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if std::io::stdout().is_terminal() && !no_color {
            Self::On
        } else {
            Self::Off
        }
    }
}

/// The report as text.
pub fn text(report: &Report, colour: Colour) -> String {
    let paint = |code: &str, text: &str| match colour {
        Colour::On => format!("\x1b[{code}m{text}\x1b[0m"),
        Colour::Off => text.to_owned(),
    };
    let mut out = String::from("foundry-proxy check\n");
    for step in &report.steps {
        let mark = match step.status {
            Status::Pass => paint("32", "PASS"),
            Status::Warn => paint("33", "WARN"),
            Status::Fail => paint("31", "FAIL"),
            Status::Skip => paint("2", "SKIP"),
        };
        let code = step
            .code
            .as_deref()
            .map(|c| format!(" [{c}]"))
            .unwrap_or_default();
        let _ = writeln!(out, "  {mark}  {:<13} {}{code}", step.name, step.summary);
        for detail in &step.details {
            let _ = writeln!(out, "        {:<13} {detail}", "");
        }
        if step.status == Status::Warn {
            for fix in &step.fix {
                let _ = writeln!(out, "        {:<13} → {fix}", "");
            }
        }
    }
    if let Some(id) = &report.identity {
        let _ = writeln!(
            out,
            "\nIdentity: object id {}, app {}, tenant {}",
            id.object_id.as_deref().unwrap_or("?"),
            id.app_id.as_deref().unwrap_or("?"),
            id.tenant.as_deref().unwrap_or("?")
        );
    }
    if report.ok {
        let _ = writeln!(
            out,
            "\n{}",
            paint(
                "32",
                "All checks passed: the proxy will work with this configuration."
            )
        );
    } else {
        let _ = writeln!(out, "\n{}", paint("31", "To fix:"));
        for (number, step) in report.fix.iter().enumerate() {
            let _ = writeln!(out, "  {}. {step}", number + 1);
        }
    }
    out
}

/// The report as one JSON document.
pub fn json(report: &Report) -> String {
    serde_json::to_string_pretty(report)
        .unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"{e}\"}}"))
}
