//! Admin and member keys: who sees what on `/status`, `/metrics` and `foundry-proxy usage`,
//! and a role change picked up by a running proxy — over real sockets against the emulator.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Harness, Setup};
use foundry_proxy::config::Settings;
use foundry_proxy::emulator::identities as world;
use foundry_proxy::keys::{KeyEntry, Limits, Role, add_entry};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_foundry-proxy");

fn keys_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fp-roles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn add(path: &Path, name: &str, role: Role) -> String {
    let mut entry = KeyEntry::new(
        name,
        Limits {
            requests_per_minute: Some(100),
            tokens_per_minute: None,
        },
    );
    entry.role = role;
    add_entry(path, &entry).expect("key added")
}

fn with_keys(path: &Path) -> Setup {
    Setup {
        settings: Settings {
            keys_file: Some(path.to_path_buf()),
            ..Settings::default()
        },
        ..Setup::default()
    }
}

async fn chat(harness: &Harness, key: &str) {
    let response = harness
        .client
        .post(harness.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&Harness::chat(world::CHAT_DEPLOYMENT, "hi"))
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
}

async fn get(harness: &Harness, path: &str, key: &str) -> reqwest::Response {
    harness
        .client
        .get(harness.url(path))
        .bearer_auth(key)
        .send()
        .await
        .expect("answer")
}

/// A member's `/status` holds its own name, limits and usage and whether the proxy is ready —
/// never another key's name or numbers, the identity or the upstream; an admin's holds
/// everything. `/metrics` on the main listener is refused to a member (403
/// `admin_key_required`, explained) and served to an admin.
#[tokio::test]
async fn member_and_admin_views() {
    let path = keys_file("views.toml");
    let alice = add(&path, "alice", Role::Member);
    let bob = add(&path, "bob", Role::Member);
    let ops = add(&path, "ops", Role::Admin);
    let harness = Harness::start_with(with_keys(&path)).await;
    harness.wait_ready().await;
    chat(&harness, &alice).await;
    for _ in 0..3 {
        chat(&harness, &bob).await;
    }

    let mine = get(&harness, "/status", &alice).await;
    assert_eq!(mine.status(), 200);
    let text = mine.text().await.expect("text");
    let mine: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(mine["key"]["name"], "alice", "{mine}");
    assert_eq!(mine["key"]["role"], "member", "{mine}");
    assert_eq!(mine["ready"], true, "{mine}");
    assert_eq!(
        mine["limits"]["requests_per_minute"]["limit"], 100,
        "{mine}"
    );
    assert_eq!(mine["limits"]["requests_per_minute"]["left"], 99, "{mine}");
    let rows = mine["usage"].as_array().expect("usage rows");
    assert_eq!(rows.len(), 1, "{mine}");
    assert_eq!(
        (&rows[0]["key"], &rows[0]["requests"]),
        (&"alice".into(), &1.into())
    );
    for hidden in [
        "bob",
        "ops",
        world::TENANT_ID,
        "endpoint",
        "identity",
        "credential",
    ] {
        assert!(!text.contains(hidden), "a member sees {hidden:?}: {text}");
    }

    let all: Value = get(&harness, "/status", &ops)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(all["key"]["role"], "admin");
    assert_eq!(all["token"]["valid"], true, "{all}");
    assert!(all["upstream"]["endpoint"].is_string(), "{all}");
    let names: Vec<&str> = all["usage"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["key"].as_str())
        .collect();
    assert!(names.contains(&"alice") && names.contains(&"bob"), "{all}");

    let refused = get(&harness, "/metrics", &bob).await;
    assert_eq!(refused.status(), 403);
    let error = common::error_of(refused).await;
    assert_eq!(error["code"], "admin_key_required");
    assert_eq!(error["type"], "permission_error");
    let message = error["message"].as_str().expect("message");
    assert!(
        message.contains("'bob'") && message.contains("/metrics"),
        "{message}"
    );
    assert!(error["fix"].to_string().contains("--admin"), "{error}");

    let metrics = get(&harness, "/metrics", &ops).await;
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await.expect("text");
    assert!(metrics.contains("key=\"bob\""), "{metrics}");
    harness.stop().await;
}

/// `foundry-proxy usage` with a member key prints that member's rows only; with an admin key,
/// everyone's.
#[tokio::test]
async fn usage_command_per_role() {
    let path = keys_file("usage.toml");
    let alice = add(&path, "alice", Role::Member);
    let bob = add(&path, "bob", Role::Member);
    let ops = add(&path, "ops", Role::Admin);
    let harness = Harness::start_with(with_keys(&path)).await;
    chat(&harness, &alice).await;
    chat(&harness, &bob).await;
    let url = harness.url("");
    let run = |key: String| {
        let url = url.clone();
        async move {
            let out = tokio::process::Command::new(BIN)
                .args(["usage", "--json", "--url", &url])
                .env_clear()
                .env("FOUNDRY_PROXY_KEY", key)
                .output()
                .await
                .expect("run foundry-proxy usage");
            assert!(out.status.success(), "{out:?}");
            let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json rows");
            rows.iter()
                .map(|r| r["key"].as_str().unwrap_or_default().to_owned())
                .collect::<Vec<String>>()
        }
    };
    assert_eq!(run(alice.clone()).await, ["alice"]);
    assert_eq!(run(bob).await, ["bob"]);
    let everyone = run(ops).await;
    assert!(
        everyone.contains(&"alice".to_owned()) && everyone.contains(&"bob".to_owned()),
        "{everyone:?}"
    );
    harness.stop().await;
}

/// A role changed in the keys file applies to the running proxy within seconds: a member
/// refused `/metrics` becomes an admin who reads it, and back.
#[tokio::test]
async fn role_change_is_hot_reloaded() {
    let path = keys_file("reload.toml");
    let carol = add(&path, "carol", Role::Member);
    let harness = Harness::start_with(with_keys(&path)).await;
    assert_eq!(get(&harness, "/metrics", &carol).await.status(), 403);
    let member = std::fs::read_to_string(&path).expect("read");
    let admin = member.replace("name = \"carol\"\n", "name = \"carol\"\nrole = \"admin\"\n");
    assert_ne!(admin, member);
    for (text, expected) in [(&admin, 200), (&member, 403)] {
        std::fs::write(&path, text).expect("write");
        let mut seen = 0;
        for _ in 0..100 {
            seen = get(&harness, "/metrics", &carol).await.status().as_u16();
            if seen == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(seen, expected, "within 10 s of the edit");
    }
    harness.stop().await;
}
