//! `setup`'s output: a text summary (steps, the refusal with its fix, the new secret shown
//! once, `check`'s report, the next command) or one JSON document.

use serde_json::{Value, json};

use super::Outcome;
use crate::check::report as check_report;

/// The text summary.
pub fn text(outcome: &Outcome) -> String {
    let mut out = String::new();
    if outcome.dry_run {
        out.push_str("Dry run: nothing was changed.\n");
    }
    for step in &outcome.steps.list {
        out.push_str(&format!(
            "{:<5}{:<18}{}\n",
            step.status.tag(),
            step.name,
            step.detail
        ));
    }
    if let Some(refusal) = &outcome.refusal {
        out.push_str(&format!(
            "\nStopped: {} ({})\n",
            refusal.cause, refusal.code
        ));
        if let Some(azure) = &refusal.azure {
            out.push_str(&format!(
                "Azure answered {} {}: {}\n",
                azure.status, azure.code, azure.message
            ));
        }
        out.push_str("Fix:\n");
        for (i, fix) in refusal.fix.iter().enumerate() {
            out.push_str(&format!("  {}. {fix}\n", i + 1));
        }
        out.push_str("Steps marked DONE stay done; running setup again continues from there.\n");
    }
    if let Some(secret) = &outcome.new_secret {
        let kept = if outcome.env_file.is_some() {
            "also in the env file"
        } else {
            "the env file was not written: keep it now"
        };
        out.push_str(&format!(
            "\nNew client secret (shown this once; {kept}): {}\n",
            secret.expose()
        ));
    }
    if let Some(report) = &outcome.check {
        out.push('\n');
        out.push_str(&check_report::text(report, check_report::Colour::Off));
    }
    if let Some(next) = &outcome.next
        && outcome.refusal.is_none()
    {
        out.push_str(&format!("\nNext: {next}\n"));
    }
    if !outcome.dry_run && outcome.refusal.is_none() && !outcome.steps.changed() {
        out.push_str("Everything was already in place: nothing changed.\n");
    }
    out
}

/// One JSON document: `dry_run`, `ok`, `changed`, `steps`, `resource`, `app`, `principal_id`,
/// `client_secret` (only when added in this run), `env_file`, `refusal`, `check`, `next`.
pub fn json(outcome: &Outcome) -> String {
    let check = outcome
        .check
        .as_ref()
        .and_then(|r| serde_json::from_str::<Value>(&check_report::json(r)).ok());
    let document = json!({
        "dry_run": outcome.dry_run,
        "ok": outcome.exit_code() == 0,
        "changed": outcome.steps.changed(),
        "steps": outcome.steps.list,
        "resource": outcome.resource,
        "app": outcome.app,
        "principal_id": outcome.principal_id,
        "client_secret": outcome.new_secret.as_ref().map(|s| s.expose().to_owned()),
        "env_file": outcome.env_file,
        "refusal": outcome.refusal,
        "check": check,
        "next": outcome.next,
    });
    serde_json::to_string_pretty(&document).unwrap_or_default()
}
