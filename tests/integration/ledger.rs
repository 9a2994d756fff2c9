//! The usage ledger (`FOUNDRY_PROXY_USAGE_DB`): the real binary killed with SIGKILL keeps every
//! request older than a second, a restart continues the same file and the budgets where they
//! were, and `foundry-proxy usage --db` reports it per key, model or day as a table, JSON or CSV.

use crate::common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use foundry_proxy::emulator::{self, EmulatorConfig, identities as world};
use foundry_proxy::keys::{KeyEntry, Limits, Rules, add_entry};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_foundry-proxy");

/// A `foundry-proxy serve` child, killed if the test ends first.
struct Proxy {
    child: Child,
    url: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Proxy {
    /// Starts the binary against the emulator at `emulator` with `keys` and the ledger `db`;
    /// returns once it prints its address.
    fn start(emulator: &str, keys: &Path, db: &Path) -> Proxy {
        let mut child = common::serve_binary::serve(
            emulator,
            &[
                ("FOUNDRY_PROXY_KEYS_FILE", &keys.to_string_lossy()),
                ("FOUNDRY_PROXY_USAGE_DB", &db.to_string_lossy()),
                ("RUST_LOG", "warn"),
            ],
        )
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
        let url = common::serve_binary::listening_url(&mut child);
        Proxy { child, url }
    }

    fn signal(&mut self, signal: &str) {
        let sent = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(sent.success());
        let _ = self.child.wait();
    }

    async fn chat(&self, key: &str) -> (u16, Value) {
        let response = common::client_with_key(key)
            .post(format!("{}/v1/chat/completions", self.url))
            .json(&common::Harness::chat(world::CHAT_DEPLOYMENT, "ledger me"))
            .send()
            .await
            .expect("answer");
        let status = response.status().as_u16();
        (status, response.json().await.expect("json"))
    }

    /// Waits (bounded) until the proxy holds a token.
    async fn wait_ready(&self) {
        let client = common::http_client();
        for _ in 0..200 {
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the proxy never became ready");
    }
}

/// `foundry-proxy usage --db DB ARGS`: its stdout, after checking it succeeded.
fn usage(db: &Path, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["usage", "--db"])
        .arg(db)
        .args(args)
        .env_clear()
        .output()
        .expect("run usage");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn rows(db: &Path, args: &[&str]) -> Vec<Value> {
    serde_json::from_str(&usage(db, &[&["--json"], args].concat())).expect("json rows")
}

fn row<'a>(rows: &'a [Value], key: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no row for {key}: {rows:?}"))
}

/// Requests, errors and tokens reach the file within about a second: after SIGKILL the ledger
/// holds every request answered more than a second before, with the tokens Azure reported. A
/// restart on the same file adds to it, and a key's spent daily budget stays spent; a SIGTERM
/// writes what is pending. The report groups per key, model or day, filters by day, and
/// prints JSON, CSV or a table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_sigkill_and_restart() {
    let running = emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator starts");
    let dir = std::env::temp_dir().join(format!("fp-ledger-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let (keys, db) = (dir.join("keys.toml"), dir.join("usage.db"));
    let alice = add_entry(&keys, &KeyEntry::new("alice", Limits::default())).expect("key");
    let mut bounded = KeyEntry::new("bounded", Limits::default());
    bounded.rules = Rules {
        tokens_per_day: Some(30),
        ..Rules::default()
    };
    let bounded = add_entry(&keys, &bounded).expect("key");

    let mut proxy = Proxy::start(&running.url(), &keys, &db);
    proxy.wait_ready().await;
    let mut tokens = (0, 0);
    for _ in 0..5 {
        let (status, answer) = proxy.chat(&alice).await;
        assert_eq!(status, 200);
        tokens.0 += answer["usage"]["prompt_tokens"].as_u64().expect("prompt");
        tokens.1 += answer["usage"]["completion_tokens"]
            .as_u64()
            .expect("completion");
    }
    let mut admitted = 0;
    while proxy.chat(&bounded).await.0 == 200 {
        admitted += 1;
        assert!(admitted < 30, "the budget never ran out");
    }
    // Everything above is more than a second old once this has passed.
    tokio::time::sleep(foundry_proxy::ledger::FLUSH_EVERY * 2 + Duration::from_millis(500)).await;
    proxy.signal("-KILL");

    let by_key = rows(&db, &["--by", "key"]);
    let a = row(&by_key, "alice");
    assert_eq!(a["requests"], 5, "{a}");
    assert_eq!(a["errors"], 0);
    assert_eq!(a["prompt_tokens"], tokens.0, "{a}");
    assert_eq!(a["completion_tokens"], tokens.1, "{a}");
    let b = row(&by_key, "bounded");
    assert_eq!(b["requests"], admitted + 1, "the refusal counts too: {b}");
    assert_eq!(b["errors"], 1, "{b}");

    let mut proxy = Proxy::start(&running.url(), &keys, &db);
    proxy.wait_ready().await;
    let (status, error) = proxy.chat(&bounded).await;
    assert_eq!(
        status, 429,
        "the day's budget is still spent after a restart: {error}"
    );
    assert_eq!(error["error"]["code"], "budget_exhausted");
    for _ in 0..2 {
        assert_eq!(proxy.chat(&alice).await.0, 200);
    }
    proxy.signal("-TERM");
    let by_key = rows(&db, &["--by", "key"]);
    assert_eq!(row(&by_key, "alice")["requests"], 7, "{by_key:?}");
    assert_eq!(row(&by_key, "bounded")["errors"], 2, "{by_key:?}");

    let listed = Command::new(BIN)
        .args(["keys", "list", "--file"])
        .arg(&keys)
        .arg("--db")
        .arg(&db)
        .env_clear()
        .output()
        .expect("keys list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let spent =
        b["prompt_tokens"].as_u64().unwrap_or(0) + b["completion_tokens"].as_u64().unwrap_or(0);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("bounded") && l.contains(&format!(" {spent}/30 "))),
        "keys list shows the day's spend against the budget: {listed}"
    );

    let today = foundry_proxy::ledger::day(foundry_proxy::clock::unix_now_signed());
    let by_day = rows(&db, &["--by", "day", "--since", &today, "--until", &today]);
    assert_eq!(by_day.len(), 1, "{by_day:?}");
    assert_eq!(by_day[0]["day"], today.as_str());
    assert_eq!(by_day[0]["requests"], 7 + admitted + 2);
    assert!(rows(&db, &["--since", "2999-01-01"]).is_empty());
    let by_model = rows(&db, &["--by", "model"]);
    assert_eq!(by_model[0]["model"], world::CHAT_DEPLOYMENT, "{by_model:?}");

    let csv = usage(&db, &["--csv", "--by", "key,model"]);
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("key,model,requests,errors,prompt,completion,cached,total,cost_usd")
    );
    assert!(
        lines.any(|l| l.starts_with(&format!("alice,{},7,0,", world::CHAT_DEPLOYMENT))),
        "{csv}"
    );
    let table = usage(&db, &[]);
    assert!(table.starts_with("KEY"), "{table}");
    assert!(
        table.lines().last().is_some_and(|l| l.starts_with("total")),
        "{table}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `usage --db` on a file that is not there, or not a ledger, fails with one line.
#[test]
fn report_errors_are_one_line() {
    let dir = std::env::temp_dir().join(format!("fp-ledger-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let not_a_db = dir.join("notes.txt");
    std::fs::write(&not_a_db, "hello").expect("write");
    for (path, needle) in [
        (dir.join("missing.db"), "does not exist"),
        (not_a_db, "not a SQLite database"),
    ] {
        let out = Command::new(BIN)
            .args(["usage", "--db"])
            .arg(&path)
            .env_clear()
            .output()
            .expect("run usage");
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle) && err.lines().count() == 1, "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
