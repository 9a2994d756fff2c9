//! Access keys end to end: the `foundry-proxy keys` command line over a real file, and the
//! watcher reloading a live `KeyStore` while requests authenticate against it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use foundry_proxy::keys::{KeyRing, KeyStore, Limits, add_key, list_keys, revoke_key};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

/// A fresh path under the temp directory, unique to this process and test.
fn temp_file(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("foundry-proxy-keys-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("keys.toml")
}

fn keys_cli(args: &[&str], file: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_foundry-proxy"));
    command
        .arg("keys")
        .args(args)
        .env_remove("FOUNDRY_PROXY_KEYS_FILE");
    if let Some(file) = file {
        command.env("FOUNDRY_PROXY_KEYS_FILE", file);
    }
    command.output().expect("run foundry-proxy")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Asserts a failed command exited with `code` and one line on stderr, nothing on stdout.
fn assert_one_line_failure(output: &Output, code: i32, needle: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(needle), "{stderr} lacks {needle}");
}

/// `keys add` creates the file (mode 0600, header comment) and prints the key once, alone on
/// stdout; the file holds only its digest; `list` shows names and limits; `revoke` removes
/// the key; duplicate and unknown names fail with one line.
#[test]
fn cli_add_list_revoke() {
    let path = temp_file("cli");
    let file_arg = path.to_str().expect("utf-8 path");

    let added = keys_cli(
        &["add", "alice", "--rpm", "60", "--tpm", "100000"],
        Some(&path),
    );
    assert_eq!(added.status.code(), Some(0), "{}", text(&added.stderr));
    let alice = text(&added.stdout);
    assert!(
        alice.ends_with('\n') && alice.lines().count() == 1,
        "{alice:?}"
    );
    let alice = alice.trim_end();
    assert!(alice.starts_with("fpk-") && alice.len() == 47, "{alice}");
    let note = text(&added.stderr);
    assert!(
        note.contains("store it now: it cannot be shown again"),
        "{note}"
    );
    assert!(!note.contains(alice), "the key goes to stdout only: {note}");

    let stored = std::fs::read_to_string(&path).expect("file");
    assert!(
        stored.starts_with("# foundry-proxy access keys"),
        "{stored}"
    );
    assert!(!stored.contains(alice), "the key itself is never stored");
    assert!(!stored.contains(&alice[4..]), "not even without its prefix");
    assert!(stored.contains(&sha256_hex(alice)), "{stored}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    // --file wins over the environment; bob has no limits.
    let bob = keys_cli(&["add", "bob", "--file", file_arg], None);
    assert_eq!(bob.status.code(), Some(0), "{}", text(&bob.stderr));
    let bob = text(&bob.stdout).trim_end().to_owned();
    assert_ne!(alice, bob);

    let ring = KeyRing::load(&path).expect("valid file");
    assert_eq!(ring.authenticate(alice).expect("alice").name, "alice");
    assert_eq!(ring.authenticate(&bob).expect("bob").name, "bob");

    let listed = keys_cli(&["list"], Some(&path));
    assert_eq!(listed.status.code(), Some(0), "{}", text(&listed.stderr));
    let table = text(&listed.stdout);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        vec![
            vec![
                "NAME",
                "ROLE",
                "REQUESTS/MIN",
                "TOKENS/MIN",
                "TOKENS/DAY",
                "TOKENS/MONTH",
                "USD/MONTH",
                "MAX_TOKENS",
                "EXPIRES",
                "MODELS"
            ],
            vec![
                "alice", "member", "60", "100000", "-", "-", "-", "-", "-", "-"
            ],
            vec!["bob", "member", "-", "-", "-", "-", "-", "-", "-", "-"],
        ],
        "{table}"
    );
    assert!(
        text(&listed.stderr).contains("no admin key") && text(&listed.stderr).contains("--admin"),
        "a file without an admin key is pointed out: {}",
        text(&listed.stderr)
    );
    let ops = keys_cli(
        &[
            "add",
            "ops",
            "--admin",
            "--tokens-per-day",
            "1000",
            "--tokens-per-month",
            "20000",
            "--usd-per-month",
            "12.5",
            "--models",
            "fast,gpt-4o",
            "--expires",
            "2027-01-31T00:00:00Z",
            "--max-tokens-cap",
            "512",
        ],
        Some(&path),
    );
    assert_eq!(ops.status.code(), Some(0), "{}", text(&ops.stderr));
    let ops = text(&ops.stdout).trim_end().to_owned();
    assert!(
        KeyRing::load(&path)
            .expect("valid file")
            .authenticate(&ops)
            .expect("ops")
            .is_admin()
    );
    let listed = keys_cli(&["list"], Some(&path));
    let table = text(&listed.stdout);
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "ops",
                    "admin",
                    "-",
                    "-",
                    "1000",
                    "20000",
                    "12.50",
                    "512",
                    "2027-01-31T00:00:00Z",
                    "fast,gpt-4o"
                ]),
        "{table}"
    );
    assert!(text(&listed.stderr).is_empty(), "{}", text(&listed.stderr));
    for (flags, problem) in [
        (&["--expires", "tomorrow"][..], "not an RFC 3339 date"),
        (&["--usd-per-month=-3"][..], "not an amount above 0"),
        (&["--tokens-per-day", "0"][..], "0 is not in 1.."),
    ] {
        let refused = keys_cli(&[&["add", "nope"][..], flags].concat(), Some(&path));
        assert_eq!(refused.status.code(), Some(2), "{flags:?}");
        assert!(
            text(&refused.stderr).contains(problem),
            "{}",
            text(&refused.stderr)
        );
    }
    assert!(
        !table.contains(alice) && !table.contains(&sha256_hex(alice)),
        "{table}"
    );

    let duplicate = keys_cli(&["add", "alice"], Some(&path));
    assert_one_line_failure(&duplicate, 1, "a key named \"alice\" already exists");

    let revoked = keys_cli(&["revoke", "alice"], Some(&path));
    assert_eq!(revoked.status.code(), Some(0), "{}", text(&revoked.stderr));
    let ring = KeyRing::load(&path).expect("valid file");
    assert!(ring.authenticate(alice).is_none());
    assert!(ring.authenticate(&bob).is_some());
    assert!(
        std::fs::read_to_string(&path)
            .expect("file")
            .starts_with("# foundry-proxy access keys")
    );

    let unknown = keys_cli(&["revoke", "alice"], Some(&path));
    assert_one_line_failure(&unknown, 1, "no key named \"alice\" (keys: bob, ops)");

    let bad_name = keys_cli(&["add", "no spaces"], Some(&path));
    assert_one_line_failure(&bad_name, 1, "contains ' '");

    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

/// Without --file or FOUNDRY_PROXY_KEYS_FILE every subcommand is a usage error (exit 2) with
/// the documented line; a missing file for `list` is exit 1 naming the file.
#[test]
fn cli_needs_a_file() {
    for args in [&["add", "x"][..], &["list"], &["revoke", "x"]] {
        let output = keys_cli(args, None);
        assert_one_line_failure(
            &output,
            2,
            "FOUNDRY_PROXY_KEYS_FILE: not set — pass --file PATH or set it",
        );
    }
    let path = temp_file("absent");
    let output = keys_cli(&["list"], Some(&path));
    assert_one_line_failure(&output, 1, &path.display().to_string());
}

/// Replaces the file's contents atomically (temporary file, rename), as careful editors do.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Polls `done` every 10 ms until it holds, failing after five seconds.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The watcher picks up a new key; a broken edit keeps the previous keys and counts as
/// rejected; fixing the file reloads it; stopping the watcher ends its task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_reloads_and_survives_broken_edits() {
    let path = temp_file("watch");
    let alice = add_key(&path, "alice", Limits::default()).expect("add");
    let store = KeyStore::open(path.clone()).expect("open");
    let shutdown = CancellationToken::new();
    let watcher = store.spawn_watcher(Duration::from_millis(50), shutdown.clone());

    let bob = add_key(&path, "bob", Limits::default()).expect("add");
    eventually("bob accepted", || {
        store.current().authenticate(&bob).is_some()
    })
    .await;
    assert_eq!(store.reloads(), 1);

    let good = std::fs::read_to_string(&path).expect("read");
    replace(
        &path,
        &format!("{good}\n[[key]]\nname = \"broken\nsha256 = 12\n"),
    );
    eventually("broken file rejected", || store.rejected_reloads() == 1).await;
    let ring = store.current();
    assert_eq!(ring.authenticate(&alice).expect("alice kept").name, "alice");
    assert!(ring.authenticate(&bob).is_some(), "bob kept");
    drop(ring);

    replace(&path, &good);
    revoke_key(&path, "alice").expect("revoke");
    eventually("alice refused", || {
        store.current().authenticate(&alice).is_none()
    })
    .await;
    assert!(store.current().authenticate(&bob).is_some());
    assert_eq!(list_keys(&path).expect("list").len(), 1);
    assert_eq!(store.rejected_reloads(), 1);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("watcher stops on shutdown")
        .expect("watcher did not panic");
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}

/// Under load (several tasks authenticating in a loop) while the file is rewritten 20 times,
/// a key present in every version never fails, and every rewrite is picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_lookup_fails_during_reloads() {
    let path = temp_file("load");
    let stable = add_key(&path, "stable", Limits::default()).expect("add");
    let store = KeyStore::open(path.clone()).expect("open");
    let shutdown = CancellationToken::new();
    let watcher = store.spawn_watcher(Duration::from_millis(50), shutdown.clone());

    let stop = Arc::new(AtomicBool::new(false));
    let lookups = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (store, stop, lookups, key) = (
                Arc::clone(&store),
                Arc::clone(&stop),
                Arc::clone(&lookups),
                stable.clone(),
            );
            tokio::spawn(async move {
                let mut failures = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if store.current().authenticate(&key).is_none() {
                        failures += 1;
                    }
                    lookups.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
                failures
            })
        })
        .collect();

    for round in 0..20 {
        let name = format!("temp{round}");
        let key = add_key(&path, &name, Limits::default()).expect("add");
        eventually("rewrite picked up", || {
            store.current().authenticate(&key).is_some()
        })
        .await;
        if round % 2 == 1 {
            revoke_key(&path, &format!("temp{}", round - 1)).expect("revoke");
        }
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert_eq!(
            reader.await.expect("reader"),
            0,
            "a lookup of the stable key failed"
        );
    }
    assert!(lookups.load(Ordering::Relaxed) > 0);
    assert!(store.reloads() >= 20, "reloads: {}", store.reloads());
    assert_eq!(store.rejected_reloads(), 0);

    shutdown.cancel();
    watcher.await.expect("watcher");
    let _ = std::fs::remove_dir_all(path.parent().expect("dir"));
}
