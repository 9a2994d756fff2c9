//! The edits behind `foundry-proxy keys add | list | revoke`.
//!
//! Edits keep the file's text (comments, order, layout) and only add or cut one `[[key]]`
//! block; when the file is laid out in a way the line-based cut cannot follow (inline
//! tables, say), the file is rewritten from its parsed entries instead. Every new text is
//! parsed and checked before it is written, and written atomically: a temporary file in the
//! same directory, fsync, rename. A new file is created with mode 0600; an existing file
//! keeps its mode. A running proxy's watcher therefore sees either the old or the new file,
//! never half of one.
//!
//! Two CLI edits racing on the same file may lose one of them (last rename wins); the
//! watcher never sees a broken file either way.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore;

use std::sync::Arc;

use super::{
    KeyEntry, KeyFileError, KeyRing, Limits, Role, digest_of, hex, read_error, read_file,
    validate_name,
};

/// What a generated key starts with, so scanners and people recognise it.
pub const KEY_PREFIX: &str = "fpk-";

/// A generated key's length: the prefix and 43 characters of base64.
pub const KEY_LEN: usize = KEY_PREFIX.len() + 43;

/// The comment block `keys add` writes at the top of a new file.
pub const FILE_HEADER: &str = "\
# foundry-proxy access keys: only SHA-256 digests are stored. Manage with `foundry-proxy keys`.
# Each entry:
#   [[key]]
#   name = \"alice\"                # 1-64 letters, digits, '-', '_', '.'; unique; shown in logs
#   sha256 = \"<64 hex chars>\"     # SHA-256 of the key (the key itself is never stored)
#   requests_per_minute = 60      # optional
#   tokens_per_minute = 100000    # optional
#   role = \"admin\"                # optional: \"member\" (default, sees only its own usage) or \"admin\"
#   tokens_per_day = 200000       # optional budgets: per UTC day, per UTC month, dollars per
#   tokens_per_month = 3000000    #   UTC month (priced from [prices.\"MODEL\"] in the config)
#   usd_per_month = 50.0
#   models = [\"fast\", \"gpt-4o\"]  # optional allow-list (aliases and deployments)
#   expires = \"2027-01-31T00:00:00Z\"  # optional, RFC 3339
#   max_tokens_cap = 4096         # optional: the most tokens a request may ask for
# The proxy reloads this file within a second of a change; a broken edit keeps the previous keys.
";

/// Adds a member key named `name` with `limits`: [`add_entry`] for the common case.
pub fn add_key(path: &Path, name: &str, limits: Limits) -> Result<String, KeyFileError> {
    add_entry(path, &KeyEntry::new(name, limits))
}

/// Adds a key described by `new` (name, limits, role), creating the file (with
/// [`FILE_HEADER`]) if it does not exist. Returns the new key: it is stored nowhere, so show
/// it once.
pub fn add_entry(path: &Path, new: &KeyEntry) -> Result<String, KeyFileError> {
    let (name, limits) = (new.name.as_str(), new.limits);
    validate_name(name).map_err(|problem| {
        KeyFileError::new(problem, "use 1-64 letters, digits, '-', '_' or '.'").in_file(path)
    })?;
    if limits.requests_per_minute == Some(0) || limits.tokens_per_minute == Some(0) {
        return Err(KeyFileError::new(
            "a limit of 0 would refuse every request",
            "use at least 1, or leave the limit out for none",
        )
        .in_file(path));
    }
    let (text, ring) = match fs::read_to_string(path) {
        Ok(text) => {
            let ring = KeyRing::parse(&text).map_err(|e| refuse_to_edit(e, path))?;
            (text, ring)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            (FILE_HEADER.to_owned(), KeyRing::default())
        }
        Err(e) => return Err(read_error(path, &e)),
    };
    if ring.get(name).is_some() {
        return Err(KeyFileError::new(
            format!("a key named {name:?} already exists"),
            format!(
                "choose another name, or revoke it first with `foundry-proxy keys revoke {name}`"
            ),
        )
        .in_file(path));
    }
    let key = generate_key()?;
    let digest = digest_of(&key);
    let mut appended = text;
    if !appended.is_empty() && !appended.ends_with('\n') {
        appended.push('\n');
    }
    if !appended.is_empty() && !appended.ends_with("\n\n") {
        appended.push('\n');
    }
    appended.push_str(&entry_text(new, &digest));
    let reads_back = |text: &str| {
        KeyRing::parse(text).is_ok_and(|added| {
            added.len() == ring.len() + 1
                && added.authenticate(&key).is_some_and(|e| e.name == name)
        })
    };
    // A layout the appended `[[key]]` block cannot join (an inline `key = [...]` array) is
    // rewritten from its entries instead, as `revoke_key` does.
    let new_text = if reads_back(&appended) {
        appended
    } else {
        let mut keys: Vec<super::StoredKey> = ring
            .keys
            .iter()
            .map(|k| super::StoredKey {
                digest: k.digest,
                entry: k.entry.clone(),
            })
            .collect();
        keys.push(super::StoredKey {
            digest,
            entry: Arc::new(new.clone()),
        });
        render(&KeyRing { keys })
    };
    // The new text must parse to exactly the old keys plus this one.
    let added = KeyRing::parse(&new_text).map_err(|e| e.in_file(path))?;
    let found = added.authenticate(&key);
    if added.len() != ring.len() + 1 || found.is_none_or(|e| e.name != name) {
        return Err(KeyFileError::new(
            "the new entry did not read back as written",
            "check the file for stray text, then try again",
        )
        .in_file(path));
    }
    write_atomic(path, &new_text)?;
    Ok(key)
}

/// Removes the key named `name`. An unknown name is an error that lists the names there are.
pub fn revoke_key(path: &Path, name: &str) -> Result<(), KeyFileError> {
    let text = read_file(path)?;
    let ring = KeyRing::parse(&text).map_err(|e| refuse_to_edit(e, path))?;
    let Some(index) = ring.entries().position(|e| e.name == name) else {
        let names: Vec<&str> = ring.entries().map(|e| e.name.as_str()).collect();
        let problem = if names.is_empty() {
            format!("no key named {name:?}: the file has no keys")
        } else {
            format!("no key named {name:?} (keys: {})", names.join(", "))
        };
        return Err(KeyFileError::new(
            problem,
            "use one of the names `foundry-proxy keys list` shows",
        )
        .in_file(path));
    };
    let expected = KeyRing {
        keys: ring
            .keys
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != index)
            .map(|(_, k)| super::StoredKey {
                digest: k.digest,
                entry: k.entry.clone(),
            })
            .collect(),
    };
    let new_text = cut_entry(&text, index, ring.len())
        .filter(|cut| KeyRing::parse(cut).is_ok_and(|r| same_keys(&r, &expected)))
        .unwrap_or_else(|| render(&expected));
    write_atomic(path, &new_text)
}

/// The keys' entries (name, limits, role), in file order.
pub fn list_keys(path: &Path) -> Result<Vec<Arc<KeyEntry>>, KeyFileError> {
    Ok(KeyRing::load(path)?.entries().cloned().collect())
}

/// A new key: [`KEY_PREFIX`] + 43 characters of URL-safe base64 of 32 bytes from the OS RNG.
pub fn generate_key() -> Result<String, KeyFileError> {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).map_err(|e| {
        KeyFileError::new(
            format!("the operating system's random generator failed: {e}"),
            "try again; if it persists, the system has no usable entropy source",
        )
    })?;
    Ok(format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

fn refuse_to_edit(mut error: KeyFileError, path: &Path) -> KeyFileError {
    error.fix = format!("{} (the file is left as it is until it parses)", error.fix);
    error.in_file(path)
}

/// One `[[key]]` block, ending with a newline.
fn entry_text(entry: &KeyEntry, digest: &[u8; 32]) -> String {
    let (name, limits) = (&entry.name, entry.limits);
    // `name` is validated (letters, digits, - _ .), so it needs no escaping.
    let mut block = format!("[[key]]\nname = \"{name}\"\nsha256 = \"{}\"\n", hex(digest));
    if let Some(rpm) = limits.requests_per_minute {
        block.push_str(&format!("requests_per_minute = {rpm}\n"));
    }
    if let Some(tpm) = limits.tokens_per_minute {
        block.push_str(&format!("tokens_per_minute = {tpm}\n"));
    }
    if entry.role != Role::Member {
        block.push_str(&format!("role = \"{}\"\n", entry.role.as_str()));
    }
    block.push_str(&rules_text(&entry.rules));
    block
}

/// The rules' lines of a `[[key]]` block, in the documented order; nothing for no rule.
fn rules_text(rules: &super::Rules) -> String {
    let mut lines = String::new();
    let mut line = |field: &str, value: toml::Value| {
        lines.push_str(&format!("{field} = {value}\n"));
    };
    let count = |n: u64| toml::Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
    if let Some(n) = rules.tokens_per_day {
        line("tokens_per_day", count(n));
    }
    if let Some(n) = rules.tokens_per_month {
        line("tokens_per_month", count(n));
    }
    if let Some(usd) = rules.usd_per_month {
        line("usd_per_month", toml::Value::Float(usd));
    }
    if let Some(models) = &rules.models {
        let list = models.iter().cloned().map(toml::Value::String).collect();
        line("models", toml::Value::Array(list));
    }
    if let Some(expiry) = &rules.expires {
        line("expires", toml::Value::String(expiry.text.clone()));
    }
    if let Some(n) = rules.max_tokens_cap {
        line("max_tokens_cap", count(n));
    }
    lines
}

/// The whole file written from scratch: the header and every entry.
fn render(ring: &KeyRing) -> String {
    let mut text = FILE_HEADER.to_owned();
    for key in &ring.keys {
        text.push('\n');
        text.push_str(&entry_text(&key.entry, &key.digest));
    }
    text
}

/// Same names, digests and limits, in the same order.
fn same_keys(a: &KeyRing, b: &KeyRing) -> bool {
    a.keys.len() == b.keys.len()
        && a.keys
            .iter()
            .zip(&b.keys)
            .all(|(x, y)| x.digest == y.digest && x.entry == y.entry)
}

fn is_header(line: &str) -> bool {
    let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
    compact.starts_with("[[key]]")
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with('#')
}

/// `text` without the `index`th of `count` `[[key]]` blocks: from its header (with the
/// comment lines directly above it, except for the first entry, whose comments are the
/// file's preamble) up to the comment lines directly above the next header. `None` when
/// the headers cannot be matched to the entries one to one.
fn cut_entry(text: &str, index: usize, count: usize) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let headers: Vec<usize> = (0..lines.len()).filter(|&i| is_header(lines[i])).collect();
    if headers.len() != count {
        return None;
    }
    let own = *headers.get(index)?;
    let mut start = own;
    if index > 0 {
        while start > 0 && is_comment(lines[start - 1]) {
            start -= 1;
        }
    }
    let mut end = headers.get(index + 1).copied().unwrap_or(lines.len());
    if index + 1 < count {
        while end > own + 1 && is_comment(lines[end - 1]) {
            end -= 1;
        }
    }
    let mut kept: String = lines[..start].concat();
    kept.push_str(&lines[end..].concat());
    let trimmed = kept.trim_end();
    Some(if trimmed.is_empty() {
        String::new()
    } else {
        format!("{trimmed}\n")
    })
}

/// Writes `text` to `path` atomically: a temporary file beside it, fsync, rename, then an
/// fsync of the directory. Follows a symlink to the file it names.
fn write_atomic(path: &Path, text: &str) -> Result<(), KeyFileError> {
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    write_replacing(&target, text).map_err(|e| {
        KeyFileError::new(
            format!("cannot write it: {e}"),
            "check that its directory is writable",
        )
        .in_file(path)
    })
}

fn write_replacing(target: &Path, text: &str) -> io::Result<()> {
    let existing = fs::metadata(target).ok().map(|m| m.permissions());
    let dir = match target.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if existing.is_none() {
        fs::create_dir_all(&dir)?;
    }
    let file_name = target
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut nonce = [0u8; 4];
    rand::rngs::OsRng
        .try_fill_bytes(&mut nonce)
        .map_err(io::Error::other)?;
    let tmp = dir.join(format!(
        ".{}.{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        u32::from_le_bytes(nonce)
    ));
    let written = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(text.as_bytes())?;
        if let Some(permissions) = existing {
            file.set_permissions(permissions)?;
        }
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, target)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    #[cfg(unix)]
    if let Ok(dir) = fs::File::open(&dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "[[key]]\nname = \"alice\"\nsha256 = \"";

    fn digest_line(key: &str) -> String {
        hex(&digest_of(key))
    }

    fn two_keys() -> String {
        format!(
            "# my keys\n\n{ALICE}{}\"\n\n# bob runs CI\n[[key]]\nname = \"bob\"\nsha256 = \"{}\"\nrequests_per_minute = 5\n",
            digest_line("a"),
            digest_line("b")
        )
    }

    /// Cutting an entry keeps the other entries' comments and the file's preamble.
    #[test]
    fn cut_keeps_comments() {
        let text = two_keys();
        let without_alice = cut_entry(&text, 0, 2).expect("cut");
        assert!(
            without_alice.starts_with("# my keys\n\n# bob runs CI\n[[key]]"),
            "{without_alice}"
        );
        let without_bob = cut_entry(&text, 1, 2).expect("cut");
        assert!(!without_bob.contains("bob"), "{without_bob}");
        assert!(without_bob.starts_with("# my keys\n"), "{without_bob}");
        let ring = KeyRing::parse(&without_bob).expect("parses");
        assert_eq!(ring.len(), 1);
        assert!(ring.authenticate("a").is_some());
    }

    /// A layout the line-based cut cannot follow (an inline array) is detected, so revoke
    /// falls back to rewriting the file.
    #[test]
    fn cut_refuses_inline_tables() {
        let text = format!(
            "key = [{{ name = \"a\", sha256 = \"{}\" }}]\n",
            digest_line("a")
        );
        assert_eq!(KeyRing::parse(&text).expect("valid").len(), 1);
        assert!(cut_entry(&text, 0, 1).is_none());
    }

    /// A key added to a file in the inline-array layout (found by `tests/integration/fuzz/`): the file is
    /// rewritten from its entries, since a `[[key]]` block cannot follow `key = [...]`.
    #[test]
    fn add_to_inline_file() {
        let dir = std::env::temp_dir().join(format!("fp-keys-inline-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("keys.toml");
        for inline in [
            "key = []\n".to_owned(),
            format!(
                "key = [{{ name = \"a\", sha256 = \"{}\" }}]\n",
                digest_line("a")
            ),
        ] {
            fs::write(&path, &inline).expect("write");
            let before = KeyRing::parse(&inline).expect("valid").len();
            let key = add_key(&path, "new", Limits::default()).expect("added");
            let ring = KeyRing::load(&path).expect("parses");
            assert_eq!(ring.len(), before + 1);
            assert_eq!(
                ring.authenticate(&key).map(|e| e.name.clone()).as_deref(),
                Some("new")
            );
            assert_eq!(before == 1, ring.authenticate("a").is_some());
        }
        let _ = fs::remove_dir_all(&dir);
    }

    /// Generated keys have the documented shape and differ each time.
    #[test]
    fn generated_key_shape() {
        let a = generate_key().expect("key");
        let b = generate_key().expect("key");
        assert_ne!(a, b);
        assert!(a.starts_with(KEY_PREFIX));
        let body = &a[KEY_PREFIX.len()..];
        assert_eq!((a.len(), body.len()), (KEY_LEN, 43));
        assert!(
            body.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
    }

    /// The header written into new files is itself a valid (empty) keys file.
    #[test]
    fn header_is_valid() {
        assert!(KeyRing::parse(FILE_HEADER).expect("valid").is_empty());
    }
}
