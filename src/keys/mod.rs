//! Inbound access keys: who may use the proxy, so a team can share one Entra credential.
//!
//! When `FOUNDRY_PROXY_KEYS_FILE` names a keys file, every client must present one of its
//! keys the way OpenAI SDKs do (`Authorization: Bearer …`, or `api-key: …`); the proxy
//! answers 401 `invalid_api_key` otherwise. The file holds only SHA-256 digests, never keys:
//!
//! ```toml
//! # foundry-proxy access keys: only SHA-256 digests are stored. Manage with `foundry-proxy keys`.
//! [[key]]
//! name = "alice"                # 1–64 of A–Z a–z 0–9 - _ . ; unique; the name logs show
//! sha256 = "<64 hex chars>"     # SHA-256 of the key, hex (either case); unique
//! requests_per_minute = 60      # optional, at least 1
//! tokens_per_minute = 100000    # optional, at least 1
//! role = "admin"                # optional: "member" (the default) or "admin"
//! # optional budgets and rules (see [`rules`]): tokens_per_day, tokens_per_month,
//! # usd_per_month, models, expires, max_tokens_cap
//! ```
//!
//! A member sees only their own standing on `/status`; an admin sees everything (identity,
//! configuration, every key's usage) and may read `/metrics` on the main listener.
//!
//! - [`KeyRing`]: one parsed version of the file; [`KeyRing::authenticate`] compares the
//!   presented key's digest with every stored digest in constant time.
//! - [`watch::KeyStore`]: the current [`KeyRing`] in an `ArcSwap`, reloaded by a polling
//!   watcher when the file changes; a broken edit keeps the previous keys.
//! - [`file`]: the edits behind `foundry-proxy keys add | list | revoke` (atomic writes);
//!   [`cli`] is that command line.
//!
//! Keys never reach logs, errors or `Debug` output: everything here names a key by its name.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::diagnose::RefusalCode;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use toml::Spanned;

pub mod cli;
pub mod file;
pub mod rules;
pub mod watch;

pub use file::{add_entry, add_key, list_keys, revoke_key};
pub use rules::{Expiry, Rules};
pub use watch::KeyStore;

/// The environment variable naming the keys file (defined with the other settings).
pub use crate::config::ENV_KEYS_FILE;

/// Longest key name accepted.
pub const MAX_NAME_LEN: usize = 64;

/// Per-key rate limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Requests allowed per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt + completion) allowed per minute.
    pub tokens_per_minute: Option<u64>,
}

/// What a key may see beyond the API: its own standing (member) or everything (admin).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// Sees only its own usage, limits and budgets on `/status`; no `/metrics`.
    #[default]
    Member,
    /// Sees everything on `/status` and `/metrics`, as an operator.
    Admin,
}

impl Role {
    /// The keys-file spelling: `member` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        match text {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// One key's identity as the request path sees it: its name, limits, role and rules, never
/// its digest.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEntry {
    /// The key's name: what logs and metrics show.
    pub name: String,
    /// Its rate limits.
    pub limits: Limits,
    /// What it may see: its own standing, or everything.
    pub role: Role,
    /// Budgets, expiry, allowed models and the token cap.
    pub rules: Rules,
}

impl KeyEntry {
    /// A member key named `name` with `limits`.
    pub fn new(name: impl Into<String>, limits: Limits) -> Self {
        Self {
            name: name.into(),
            limits,
            role: Role::Member,
            rules: Rules::default(),
        }
    }

    /// True for an admin key.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// A stored key: the digest to compare and the entry to hand out on a match.
struct StoredKey {
    digest: [u8; 32],
    entry: Arc<KeyEntry>,
}

/// One version of the keys file, parsed and validated. Immutable; a reload builds a new one.
#[derive(Default)]
pub struct KeyRing {
    /// In file order.
    keys: Vec<StoredKey>,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field(
                "names",
                &self
                    .keys
                    .iter()
                    .map(|k| k.entry.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A keys-file problem: which file and line, what is wrong, and how to fix it. One line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct KeyFileError {
    /// The file, when known (`KeyRing::parse` has none).
    pub file: Option<PathBuf>,
    /// The 1-based line the problem is on, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

impl KeyFileError {
    pub(crate) fn new(problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            file: None,
            line: None,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    pub(crate) fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }

    /// Names the file (when not named yet).
    pub(crate) fn in_file(mut self, path: &Path) -> Self {
        if self.file.is_none() {
            self.file = Some(path.to_path_buf());
        }
        self
    }

    fn render(&self) -> String {
        let mut place = match &self.file {
            Some(path) => format!("keys file {}", path.display()),
            None => "keys file".to_owned(),
        };
        if let Some(line) = self.line {
            place.push_str(&format!(", line {line}"));
        }
        format!("{place}: {} — {}", self.problem, self.fix)
    }
}

/// The file as TOML sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    key: Vec<RawKey>,
}

/// One `[[key]]` entry as TOML sees it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: Spanned<String>,
    sha256: Spanned<String>,
    requests_per_minute: Option<Spanned<u32>>,
    tokens_per_minute: Option<Spanned<u64>>,
    role: Option<Spanned<String>>,
    tokens_per_day: Option<Spanned<u64>>,
    tokens_per_month: Option<Spanned<u64>>,
    usd_per_month: Option<Spanned<f64>>,
    models: Option<Spanned<Vec<String>>>,
    expires: Option<Spanned<String>>,
    max_tokens_cap: Option<Spanned<u64>>,
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text.get(..at).unwrap_or(text).matches('\n').count() + 1
}

/// Checks a key name: 1–64 characters of letters, digits, `-`, `_`, `.`.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".to_owned());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the name is {} characters long (at most {MAX_NAME_LEN})",
            name.len()
        ));
    }
    if name.starts_with(file::KEY_PREFIX) && name.len() == file::KEY_LEN {
        // Names reach logs; a key pasted as a name must not.
        return Err(format!(
            "the name starts with {:?} and looks like a key",
            file::KEY_PREFIX
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "the name {name:?} contains {bad:?} (only letters, digits, '-', '_' and '.' are allowed)"
        ));
    }
    Ok(())
}

/// The SHA-256 of `key`.
pub(crate) fn digest_of(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Lowercase hex of a digest.
pub(crate) fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex characters (either case).
fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16);
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let high = nibble(pair[0])?;
        let low = nibble(pair[1])?;
        out[i] = u8::try_from(high * 16 + low).ok()?;
    }
    Some(out)
}

impl KeyRing {
    /// Parses and validates a keys file's text. Unknown keys are errors; every error names
    /// the line and, once the entry's name is known, the entry.
    pub fn parse(text: &str) -> Result<KeyRing, KeyFileError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            // The message names the field, never the source text (which holds no keys anyway).
            let detail = e.message().trim().replace('\n', " ");
            let error = KeyFileError::new(
                format!("not a valid keys file: {detail}"),
                "each entry is [[key]] with name, sha256 and optional requests_per_minute, tokens_per_minute, role, tokens_per_day, tokens_per_month, usd_per_month, models, expires, max_tokens_cap",
            );
            match e.span() {
                Some(span) => error.at_line(line_of(text, span.start)),
                None => error,
            }
        })?;
        let mut keys: Vec<StoredKey> = Vec::with_capacity(raw.key.len());
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let mut by_digest: HashMap<[u8; 32], usize> = HashMap::new();
        for (index, raw) in raw.key.into_iter().enumerate() {
            let name_line = line_of(text, raw.name.span().start);
            let name = raw.name.into_inner();
            let which = format!("entry {} ({name:?})", index + 1);
            validate_name(&name).map_err(|problem| {
                KeyFileError::new(
                    format!("entry {}: {problem}", index + 1),
                    "use 1-64 letters, digits, '-', '_' or '.'",
                )
                .at_line(name_line)
            })?;
            if let Some(first) = by_name.get(&name) {
                return Err(KeyFileError::new(
                    format!("{which} repeats the name of entry {}", first + 1),
                    "give every key its own name",
                )
                .at_line(name_line));
            }
            let digest_line = line_of(text, raw.sha256.span().start);
            let digest = parse_hex(raw.sha256.get_ref().trim()).ok_or_else(|| {
                KeyFileError::new(
                    format!("{which}: sha256 is not 64 hex characters"),
                    "store the key's SHA-256 in hex (`foundry-proxy keys add` does it for you)",
                )
                .at_line(digest_line)
            })?;
            if let Some(&first) = by_digest.get(&digest) {
                return Err(KeyFileError::new(
                    format!(
                        "{which} has the same sha256 as entry {} ({:?})",
                        first + 1,
                        keys[first].entry.name
                    ),
                    "give every person or tool its own key",
                )
                .at_line(digest_line));
            }
            let limits = Limits {
                requests_per_minute: positive(
                    raw.requests_per_minute,
                    text,
                    &which,
                    "requests_per_minute",
                )?,
                tokens_per_minute: positive(
                    raw.tokens_per_minute,
                    text,
                    &which,
                    "tokens_per_minute",
                )?,
            };
            let role = match raw.role {
                None => Role::Member,
                Some(role) => Role::parse(role.get_ref()).ok_or_else(|| {
                    KeyFileError::new(
                        format!("{which}: role {:?} is not a role", role.get_ref()),
                        "use role = \"member\" (the default) or role = \"admin\"",
                    )
                    .at_line(line_of(text, role.span().start))
                })?,
            };
            let rules = Rules {
                tokens_per_day: positive(raw.tokens_per_day, text, &which, "tokens_per_day")?,
                tokens_per_month: positive(
                    raw.tokens_per_month,
                    text,
                    &which,
                    "tokens_per_month",
                )?,
                usd_per_month: dollars(raw.usd_per_month, text, &which)?,
                models: model_list(raw.models, text, &which)?,
                expires: raw
                    .expires
                    .map(|at| {
                        Expiry::parse(at.get_ref()).map_err(|problem| {
                            KeyFileError::new(
                                format!("{which}: {problem}"),
                                "write it as expires = \"2027-01-31T00:00:00Z\" (UTC) or with an offset",
                            )
                            .at_line(line_of(text, at.span().start))
                        })
                    })
                    .transpose()?,
                max_tokens_cap: positive(raw.max_tokens_cap, text, &which, "max_tokens_cap")?,
            };
            by_name.insert(name.clone(), index);
            by_digest.insert(digest, index);
            keys.push(StoredKey {
                digest,
                entry: Arc::new(KeyEntry {
                    name,
                    limits,
                    role,
                    rules,
                }),
            });
        }
        Ok(KeyRing { keys })
    }

    /// Reads and parses a keys file; errors name the file.
    pub fn load(path: &Path) -> Result<KeyRing, KeyFileError> {
        let text = read_file(path)?;
        KeyRing::parse(&text).map_err(|e| e.in_file(path))
    }

    /// The entry whose key is `presented`, if any. The presented key is hashed and its
    /// digest compared with every stored digest in constant time, with no early exit, so
    /// the time taken says nothing about which key (if any) matched or how closely.
    pub fn authenticate(&self, presented: &str) -> Option<Arc<KeyEntry>> {
        let digest = digest_of(presented);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u64;
        for (i, stored) in (0u64..).zip(&self.keys) {
            let equal = stored.digest.ct_eq(&digest);
            index.conditional_assign(&i, equal);
            found |= equal;
        }
        if bool::from(found) {
            let index = usize::try_from(index).ok()?;
            self.keys.get(index).map(|k| Arc::clone(&k.entry))
        } else {
            None
        }
    }

    /// The entries, in file order.
    pub fn entries(&self) -> impl Iterator<Item = &Arc<KeyEntry>> {
        self.keys.iter().map(|k| &k.entry)
    }

    /// The entry named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Arc<KeyEntry>> {
        self.entries().find(|e| e.name == name)
    }

    /// True when at least one key is an admin key (otherwise nobody may read `/metrics` on
    /// the main listener or the full `/status`).
    pub fn has_admin(&self) -> bool {
        self.entries().any(|e| e.is_admin())
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the file has no keys (every request is refused).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// An optional limit that, when present, must be at least 1.
fn positive<T>(
    value: Option<Spanned<T>>,
    text: &str,
    which: &str,
    field: &str,
) -> Result<Option<T>, KeyFileError>
where
    T: PartialEq + Default,
{
    match value {
        None => Ok(None),
        Some(v) if *v.get_ref() == T::default() => Err(KeyFileError::new(
            format!("{which}: {field} is 0"),
            format!("use at least 1, or remove {field} for no limit"),
        )
        .at_line(line_of(text, v.span().start))),
        Some(v) => Ok(Some(v.into_inner())),
    }
}

/// `usd_per_month`, when present: a finite amount above 0.
fn dollars(
    value: Option<Spanned<f64>>,
    text: &str,
    which: &str,
) -> Result<Option<f64>, KeyFileError> {
    match value {
        None => Ok(None),
        Some(v) if v.get_ref().is_finite() && *v.get_ref() > 0.0 => Ok(Some(v.into_inner())),
        Some(v) => Err(KeyFileError::new(
            format!("{which}: usd_per_month is {}", v.get_ref()),
            "use an amount above 0 such as 50.0, or remove usd_per_month for no budget",
        )
        .at_line(line_of(text, v.span().start))),
    }
}

/// `models`, when present: a non-empty list of non-empty names.
fn model_list(
    value: Option<Spanned<Vec<String>>>,
    text: &str,
    which: &str,
) -> Result<Option<Vec<String>>, KeyFileError> {
    let Some(value) = value else {
        return Ok(None);
    };
    let line = line_of(text, value.span().start);
    let models: Vec<String> = value
        .into_inner()
        .into_iter()
        .map(|m| m.trim().to_owned())
        .collect();
    if models.is_empty() || models.iter().any(String::is_empty) {
        return Err(KeyFileError::new(
            format!("{which}: models has an empty list or an empty name"),
            "list the models (deployments or aliases) this key may use, or remove models to allow every model",
        )
        .at_line(line));
    }
    Ok(Some(models))
}

/// Reads a keys file's text, with an error that names the file and says what to do.
pub(crate) fn read_file(path: &Path) -> Result<String, KeyFileError> {
    std::fs::read_to_string(path).map_err(|e| read_error(path, &e))
}

/// A failed read of the keys file, with what to do about it.
pub(crate) fn read_error(path: &Path, e: &std::io::Error) -> KeyFileError {
    let fix = if e.kind() == std::io::ErrorKind::NotFound {
        "create it with `foundry-proxy keys add NAME`, or point FOUNDRY_PROXY_KEYS_FILE at the right file"
    } else {
        "check the path and its permissions"
    };
    KeyFileError::new(format!("cannot read it: {e}"), fix).in_file(path)
}

/// The caller's key, from `Authorization: Bearer …` (scheme case-insensitive) or, failing
/// that, `api-key` (what Azure OpenAI SDKs send) or `x-api-key` (what Anthropic SDKs and
/// Claude Code send, from `ANTHROPIC_API_KEY`). Empty or non-ASCII values count as absent.
pub fn presented_key(headers: &http::HeaderMap) -> Option<&str> {
    let bearer = headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let v = v.trim();
            let (scheme, rest) = v.split_once([' ', '\t'])?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|k| !k.is_empty());
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
    };
    bearer
        .or_else(|| header("api-key"))
        .or_else(|| header("x-api-key"))
}

/// The caller's access key when keys are configured (`store` is `Some`): a missing or
/// unknown key is refused 401 `invalid_api_key`. Without keys every caller is let in, as `None`.
pub fn authenticate(
    store: Option<&KeyStore>,
    headers: &http::HeaderMap,
) -> Result<Option<Arc<KeyEntry>>, crate::error::ApiError> {
    authenticate_presented(store, presented_key(headers))
}

/// [`authenticate`] for a key read elsewhere than the usual headers (a WebSocket upgrade's
/// `openai-insecure-api-key.KEY` subprotocol): `presented` is the key, if any.
pub fn authenticate_presented(
    store: Option<&KeyStore>,
    presented: Option<&str>,
) -> Result<Option<Arc<KeyEntry>>, crate::error::ApiError> {
    let Some(store) = store else {
        return Ok(None);
    };
    match presented.and_then(|presented| store.current().authenticate(presented)) {
        Some(entry) => Ok(Some(entry)),
        None => Err(crate::diagnose::proxy_refusal(
            RefusalCode::InvalidApiKey,
            &crate::diagnose::catalog::Vars::new(),
        )),
    }
}

#[cfg(test)]
mod tests;
