//! `foundry-proxy keys add | list | revoke`: the command line over [`super::file`].
//!
//! Exit codes: 0 done, 1 the edit failed (one line on stderr), 2 no keys file named.
//! `add` prints the key alone on stdout, so `KEY=$(foundry-proxy keys add alice)` works.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{ENV_KEYS_FILE, KeyEntry, Limits, Role, add_entry, list_keys, revoke_key};

/// The `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key: prints it once on stdout and stores only its SHA-256.
    Add {
        /// The key's name, shown in logs and usage (1-64 letters, digits, '-', '_', '.').
        name: String,
        /// Requests per minute allowed with this key [default: unlimited].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        rpm: Option<u32>,
        /// Tokens per minute allowed with this key [default: unlimited].
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        tpm: Option<u64>,
        /// Make it an admin key: it sees every key's usage, the identity and the configuration
        /// on /status, and /metrics on the main listener [default: member, which sees only its own].
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        rules: RuleArgs,
        #[command(flatten)]
        file: FileArg,
    },
    /// List the keys' names, roles, limits, budgets and rules; with the usage ledger, each
    /// budget's spend (used/limit) in the current day or month.
    List {
        /// The usage ledger to read spend from [env: FOUNDRY_PROXY_USAGE_DB].
        #[arg(long, value_name = "PATH")]
        db: Option<PathBuf>,
        #[command(flatten)]
        file: FileArg,
    },
    /// Remove a key; a running proxy refuses it within a second or two.
    Revoke {
        /// The key's name.
        name: String,
        #[command(flatten)]
        file: FileArg,
    },
}

/// The budgets and rules `keys add` takes (the keys file's fields of the same names).
#[derive(Debug, Args)]
pub struct RuleArgs {
    /// Tokens (prompt + completion) per UTC day [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    tokens_per_day: Option<u64>,
    /// Tokens per UTC calendar month [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    tokens_per_month: Option<u64>,
    /// US dollars per UTC calendar month, priced from [prices."MODEL"] in the config [default: unlimited].
    #[arg(long, value_name = "USD", value_parser = parse_dollars)]
    usd_per_month: Option<f64>,
    /// The models (deployments or aliases) the key may use, comma-separated or repeated [default: all].
    #[arg(long, value_name = "MODEL", value_delimiter = ',', num_args = 1..)]
    models: Vec<String>,
    /// When the key stops working, RFC 3339 (e.g. 2027-01-31T00:00:00Z) [default: never].
    #[arg(long, value_name = "WHEN", value_parser = super::Expiry::parse)]
    expires: Option<super::Expiry>,
    /// The most tokens a request may ask for; a request asking for more, or for no limit, gets this.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_tokens_cap: Option<u64>,
}

impl RuleArgs {
    fn rules(&self) -> super::Rules {
        let models: Vec<String> = self
            .models
            .iter()
            .map(|m| m.trim().to_owned())
            .filter(|m| !m.is_empty())
            .collect();
        super::Rules {
            tokens_per_day: self.tokens_per_day,
            tokens_per_month: self.tokens_per_month,
            usd_per_month: self.usd_per_month,
            models: (!models.is_empty()).then_some(models),
            expires: self.expires.clone(),
            max_tokens_cap: self.max_tokens_cap,
        }
    }
}

fn parse_dollars(text: &str) -> Result<f64, String> {
    match text.trim().trim_start_matches('$').parse::<f64>() {
        Ok(usd) if usd.is_finite() && usd > 0.0 => Ok(usd),
        _ => Err(format!(
            "{text:?} is not an amount above 0 (e.g. 50 or 12.5)"
        )),
    }
}

/// The keys file option shared by every subcommand.
#[derive(Debug, Args)]
pub struct FileArg {
    /// The keys file [env: FOUNDRY_PROXY_KEYS_FILE].
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,
}

impl KeysCommand {
    fn file(&self) -> &FileArg {
        match self {
            KeysCommand::Add { file, .. }
            | KeysCommand::List { file, .. }
            | KeysCommand::Revoke { file, .. } => file,
        }
    }
}

/// Runs a `keys` subcommand against the process's stdout, stderr and environment; returns
/// the exit code.
pub fn run(command: &KeysCommand) -> u8 {
    run_with(
        command,
        std::env::var_os(ENV_KEYS_FILE),
        std::env::var_os(crate::config::ENV_USAGE_DB),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// [`run`] with the environment's keys file and the output streams passed in.
pub fn run_with(
    command: &KeysCommand,
    env_file: Option<OsString>,
    env_db: Option<OsString>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let env_file = env_file.filter(|v| !v.is_empty()).map(PathBuf::from);
    let Some(path) = command.file().file.clone().or(env_file) else {
        let _ = writeln!(
            err,
            "foundry-proxy: {ENV_KEYS_FILE}: not set — pass --file PATH or set it"
        );
        return 2;
    };
    let done = match command {
        KeysCommand::Add {
            name,
            rpm,
            tpm,
            admin,
            rules,
            ..
        } => {
            let mut entry = KeyEntry::new(
                name.as_str(),
                Limits {
                    requests_per_minute: *rpm,
                    tokens_per_minute: *tpm,
                },
            );
            if *admin {
                entry.role = Role::Admin;
            }
            entry.rules = rules.rules();
            add_entry(&path, &entry).map(|key| {
                let _ = writeln!(out, "{key}");
                let _ = writeln!(
                    err,
                    "foundry-proxy: key {name:?} added to {}; store it now: it cannot be shown again",
                    path.display()
                );
            })
        }
        KeysCommand::List { db, .. } => list_keys(&path).and_then(|keys| {
            let db = db
                .clone()
                .or(env_db.filter(|v| !v.is_empty()).map(PathBuf::from));
            let spend = match db {
                Some(db) => Some(spend(&db).map_err(|problem| {
                    super::KeyFileError::new(
                        format!("the usage ledger {}: {problem}", db.display()),
                        "point --db (or FOUNDRY_PROXY_USAGE_DB) at the proxy's ledger, or leave it out",
                    )
                })?),
                None => None,
            };
            let _ = out.write_all(table(&keys, spend.as_ref()).as_bytes());
            if keys.is_empty() {
                let _ = writeln!(
                    err,
                    "foundry-proxy: no keys in {} — add one with `foundry-proxy keys add NAME`",
                    path.display()
                );
            } else if !keys.iter().any(|k| k.is_admin()) {
                let _ = writeln!(err, "foundry-proxy: {NO_ADMIN}");
            }
            Ok(())
        }),
        KeysCommand::Revoke { name, .. } => revoke_key(&path, name).map(|()| {
            let _ = writeln!(out, "revoked {name}");
        }),
    };
    match done {
        Ok(()) => 0,
        Err(e) => {
            let _ = writeln!(err, "foundry-proxy: {e}");
            1
        }
    }
}

/// What `keys list` (and the proxy's start-up log) says when no key is an admin.
pub const NO_ADMIN: &str = "no admin key: /metrics on the main listener and the full /status are refused to every key — add one with `foundry-proxy keys add NAME --admin`";

/// Each key's spend this UTC day and month, from the usage ledger.
type Spend = std::collections::HashMap<String, crate::ledger::store::KeySpend>;

fn spend(db: &std::path::Path) -> Result<Spend, String> {
    let conn = crate::ledger::store::open_for_reading(db)?;
    let today = crate::ledger::day(crate::clock::unix_now_signed());
    let month_start = format!("{}-01", &today[..7]);
    crate::ledger::store::spend_by_key(&conn, &today, &month_start).map_err(|e| e.to_string())
}

/// Names, roles, limits, budgets and rules as an aligned table, `-` for none; with `spend`, each
/// budget as `used/limit`.
fn table(keys: &[std::sync::Arc<KeyEntry>], spend: Option<&Spend>) -> String {
    const HEADER: [&str; 10] = [
        "NAME",
        "ROLE",
        "REQUESTS/MIN",
        "TOKENS/MIN",
        "TOKENS/DAY",
        "TOKENS/MONTH",
        "USD/MONTH",
        "MAX_TOKENS",
        "EXPIRES",
        "MODELS",
    ];
    let show = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let rows: Vec<[String; 10]> = std::iter::once(HEADER.map(str::to_owned))
        .chain(keys.iter().map(|key| {
            let rules = &key.rules;
            let spent = spend.map(|s| s.get(&key.name).copied().unwrap_or_default());
            let budget = |limit: Option<String>, used: Option<String>| {
                limit.map(|limit| match used {
                    Some(used) => format!("{used}/{limit}"),
                    None => limit,
                })
            };
            [
                key.name.clone(),
                key.role.as_str().to_owned(),
                show(key.limits.requests_per_minute.map(|n| n.to_string())),
                show(key.limits.tokens_per_minute.map(|n| n.to_string())),
                show(budget(
                    rules.tokens_per_day.map(|n| n.to_string()),
                    spent.map(|s| s.day_tokens.to_string()),
                )),
                show(budget(
                    rules.tokens_per_month.map(|n| n.to_string()),
                    spent.map(|s| s.month_tokens.to_string()),
                )),
                show(budget(
                    rules.usd_per_month.map(|usd| format!("{usd:.2}")),
                    spent.map(|s| format!("{:.2}", s.month_usd)),
                )),
                show(rules.max_tokens_cap.map(|n| n.to_string())),
                show(rules.expires.as_ref().map(|e| e.text.clone())),
                show(rules.models.as_ref().map(|m| m.join(","))),
            ]
        }))
        .collect();
    crate::table::aligned(&rows, &[0, 1, 8, 9])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table aligns names of any length and shows `-` for no limit.
    #[test]
    fn table_layout() {
        let mut admin = KeyEntry::new(
            "longer-name",
            Limits {
                requests_per_minute: Some(60),
                tokens_per_minute: Some(100_000),
            },
        );
        admin.role = Role::Admin;
        let shown = table(
            &[
                std::sync::Arc::new(KeyEntry::new("a", Limits::default())),
                std::sync::Arc::new(admin),
            ],
            None,
        );
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NAME         ROLE  "), "{shown}");
        assert!(lines[1].starts_with("a            member"), "{shown}");
        assert!(lines[2].contains(" admin "), "{shown}");
        assert!(
            lines[1].starts_with("a   ") && lines[1].ends_with('-'),
            "{shown}"
        );
        assert!(lines[2].contains("      100000  "), "{shown}");
        // Every column lines up; only the last (MODELS, left-aligned) may end early.
        let models_at = lines[0].find("MODELS").expect("a MODELS column");
        assert!(
            lines[1..].iter().all(|l| l.len() == models_at + 1),
            "{shown}"
        );
    }

    /// Without --file or the environment variable, the command is a usage error.
    #[test]
    fn missing_file_is_a_usage_error() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let command = KeysCommand::List {
            db: None,
            file: FileArg { file: None },
        };
        assert_eq!(
            run_with(&command, Some(OsString::new()), None, &mut out, &mut err),
            2
        );
        assert_eq!(
            String::from_utf8_lossy(&err),
            "foundry-proxy: FOUNDRY_PROXY_KEYS_FILE: not set — pass --file PATH or set it\n"
        );
        assert!(out.is_empty());
    }
}
