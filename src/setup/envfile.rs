//! The env file `setup` writes: every variable `serve` needs, mode 0600 (it holds a secret),
//! replaced atomically; and reading one back (the previous run's, or for `serve` and `check`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use super::cloud::Cloud;
use super::identity::App;
use super::refusal::Refusal;
use super::resource::Resource;
use super::{CredentialKind, Principal, SetupOptions};

/// Every variable `serve` needs, in file order: tenant, client id, the credential's `vars`,
/// endpoint, and the authority when one is set.
pub fn settings(
    resource: &Resource,
    app: Option<&App>,
    vars: Vec<(&'static str, String)>,
    cloud: &Cloud,
) -> Vec<(&'static str, String)> {
    let mut all = vec![("AZURE_TENANT_ID", resource.tenant.clone())];
    if let Some(app) = app {
        all.push(("AZURE_CLIENT_ID", app.app_id.clone()));
    }
    all.extend(vars);
    all.push(("FOUNDRY_ENDPOINT", resource.endpoint.clone()));
    if let Some(authority) = &cloud.authority {
        all.push(("AZURE_AUTHORITY_HOST", authority.clone()));
    }
    all
}

/// The file's comment: what wrote it, that it is private, and what the user must add.
pub fn header(options: &SetupOptions, resource: &Resource) -> String {
    let mut header = format!(
        "foundry-proxy serve settings, written by `foundry-proxy setup` for {}.\nKeep this file private (mode 0600): it may hold a credential.",
        resource.id
    );
    match (&options.principal, options.credential) {
        (Principal::Assignee(oid), _) => header.push_str(&format!(
            "\nThe role went to {oid}: add its credential settings here (a managed identity: FOUNDRY_CREDENTIAL=managed-identity)."
        )),
        (_, CredentialKind::Federated) => header.push_str(
            "\nAdd AZURE_FEDERATED_TOKEN_FILE: where your platform writes the workload's token.",
        ),
        _ => {}
    }
    header
}

/// `KEY=VALUE` lines of an env file; comments and blank lines ignored, quotes around a
/// value removed. A missing file is empty.
pub fn read(path: &Path) -> BTreeMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeMap::new();
    };
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let (key, value) = line.split_once('=')?;
            let value = value.trim();
            let value = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(value);
            Some((key.trim().to_owned(), value.to_owned()))
        })
        .collect()
}

/// The file's text for these variables, in a stable order, so a re-run with the same values
/// writes the same bytes.
pub fn render(header: &str, vars: &[(&str, String)]) -> String {
    let mut text = String::new();
    for line in header.lines() {
        text.push_str("# ");
        text.push_str(line);
        text.push('\n');
    }
    for (key, value) in vars {
        text.push_str(key);
        text.push('=');
        text.push_str(&shell_value(value));
        text.push('\n');
    }
    text
}

/// A value as `sh` reads it back unchanged: bare when it holds only characters the shell leaves
/// alone (so `docker --env-file`, which keeps quotes, reads it too; secrets and URLs are such),
/// else in single quotes.
fn shell_value(value: &str) -> String {
    let plain = !value.is_empty()
        && !value.starts_with('~')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._~:/@%+=,-".contains(c));
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

/// Writes `text` to `path` with mode 0600 (a temporary file renamed over it). Returns false
/// when the file already held exactly this text (nothing written).
pub fn write(path: &Path, text: &str) -> Result<bool, Refusal> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    let refused = |e: std::io::Error| {
        Refusal::new(
            "env_file_unwritable",
            format!("Cannot write {}: {e}", path.display()),
            &[
                "Pass --env-file PATH in a directory you can write to; the Azure changes are made already, and a re-run keeps them.",
            ],
        )
    };
    let tmp = path.with_extension("tmp-setup");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(refused)?;
    file.write_all(text.as_bytes()).map_err(refused)?;
    file.sync_all().map_err(refused)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(refused)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(refused)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_unchanged_rewrite() {
        let dir = std::env::temp_dir().join(format!("setup-env-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("foundry-proxy.env");
        let text = render(
            "made by a test",
            &[
                ("A", "1".to_owned()),
                ("B", "x=y".to_owned()),
                ("C", "/a dir/cert.pem".to_owned()),
            ],
        );
        assert!(text.contains("C='/a dir/cert.pem'\n"), "{text}");
        assert!(write(&path, &text).expect("written"));
        assert!(!write(&path, &text).expect("unchanged"));
        let vars = read(&path);
        assert_eq!(vars.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(vars.get("C").map(String::as_str), Some("/a dir/cert.pem"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
