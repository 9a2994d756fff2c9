//! Replicas sharing limits, budgets and usage through a real `redis-server` (issue 18): two
//! `foundry-proxy serve` processes against one emulator and one Redis, each test with its own
//! Redis on a free port of 127.0.0.1.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::RedisServer;
use common::serve_binary;
use foundry_proxy::emulator::{self, EmulatorConfig, RunningEmulator, identities as world};
use foundry_proxy::keys::{KeyEntry, Limits, Role, Rules, add_entry};
use serde_json::{Value, json};

/// A `foundry-proxy serve` process; its log goes to a file (read by the tests), and it is
/// killed when dropped.
struct Replica {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Replica {
    fn start(emulator: &RunningEmulator, extra: &[(&str, &str)]) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!("fp-replica-{}-{n}.log", std::process::id()));
        let file = std::fs::File::create(&log).expect("log file");
        let mut child = serve_binary::serve(&emulator.url(), extra)
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start foundry-proxy");
        let url = serve_binary::listening_url(&mut child);
        Self { child, url, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A keys file in a directory of its own, removed when dropped.
struct KeysFile(PathBuf);

impl std::ops::Deref for KeysFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for KeysFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn keys_file(name: &str) -> KeysFile {
    let dir = std::env::temp_dir().join(format!("fp-redis-keys-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    KeysFile(path)
}

fn add(path: &Path, name: &str, role: Role, limits: Limits, rules: Rules) -> String {
    let mut entry = KeyEntry::new(name, limits);
    entry.role = role;
    entry.rules = rules;
    add_entry(path, &entry).expect("key added")
}

fn rpm(n: u32) -> Limits {
    Limits {
        requests_per_minute: Some(n),
        tokens_per_minute: None,
    }
}

/// Two replicas sharing `redis` and the keys file at `keys`, ready to forward.
async fn replicas(
    emulator: &RunningEmulator,
    redis: &str,
    keys: &Path,
    extra: &[(&str, &str)],
) -> (Replica, Replica) {
    let keys = keys.display().to_string();
    let mut env = vec![
        ("FOUNDRY_PROXY_REDIS_URL", redis),
        ("FOUNDRY_PROXY_KEYS_FILE", keys.as_str()),
    ];
    env.extend_from_slice(extra);
    let a = Replica::start(emulator, &env);
    let b = Replica::start(emulator, &env);
    let client = common::http_client();
    for replica in [&a, &b] {
        let ready = until(Duration::from_secs(15), || async {
            client
                .get(format!("{}/readyz", replica.url))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        assert!(
            ready,
            "replica at {} not ready: {}",
            replica.url,
            replica.log()
        );
    }
    (a, b)
}

async fn chat(client: &reqwest::Client, replica: &Replica, key: &str) -> reqwest::Response {
    client
        .post(format!("{}/v1/chat/completions", replica.url))
        .bearer_auth(key)
        .json(&json!({"model": world::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "hello"}]}))
        .send()
        .await
        .expect("answer")
}

async fn get(client: &reqwest::Client, replica: &Replica, path: &str, key: &str) -> Value {
    let answer = client
        .get(format!("{}{path}", replica.url))
        .bearer_auth(key)
        .send()
        .await
        .expect("answer");
    assert_eq!(answer.status(), 200, "{path}");
    answer.json().await.expect("json")
}

async fn metric(client: &reqwest::Client, replica: &Replica, admin: &str, name: &str) -> String {
    let text = client
        .get(format!("{}/metrics", replica.url))
        .bearer_auth(admin)
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        .unwrap_or_default()
}

async fn emulator() -> RunningEmulator {
    emulator::spawn(EmulatorConfig::default())
        .await
        .expect("emulator")
}

/// Two proxy processes sharing a key with a limit of N requests per minute admit exactly N
/// between them, however the requests are spread and however they race; the others get 429
/// `rate_limit_exceeded` with `retry-after`, from either replica.
#[tokio::test]
async fn two_replicas_admit_exactly_n() {
    let redis = RedisServer::start();
    let emulator = emulator().await;
    let path = keys_file("exact.toml");
    let key = add(&path, "team", Role::Member, rpm(12), Rules::default());
    let (a, b) = replicas(&emulator, &redis.url(), &path, &[]).await;
    let client = common::http_client();
    let answers = futures_util::future::join_all((0..40).map(|i| {
        let replica = if i % 2 == 0 { &a } else { &b };
        chat(&client, replica, &key)
    }))
    .await;
    let mut admitted = 0;
    for answer in answers {
        match answer.status().as_u16() {
            200 => admitted += 1,
            429 => {
                assert!(common::header_number(&answer, "retry-after") >= 1);
                let error = common::error_of(answer).await;
                assert_eq!(error["code"], "rate_limit_exceeded", "{error}");
            }
            other => panic!(
                "unexpected {other}: {}",
                answer.text().await.unwrap_or_default()
            ),
        }
    }
    assert_eq!(admitted, 12, "exactly N across both replicas");
    // Alone, each replica would still have admitted 12 of its own 20.
    assert_eq!(chat(&client, &a, &key).await.status(), 429);
    assert_eq!(chat(&client, &b, &key).await.status(), 429);
    // The member's /status, on either replica, shows the shared window.
    for replica in [&a, &b] {
        let status = get(&client, replica, "/status", &key).await;
        assert_eq!(
            status["limits"]["requests_per_minute"]["used"], 12,
            "{status}"
        );
        assert_eq!(status["usage_scope"]["replicas"], "all", "{status}");
    }
}

/// A daily token budget is spent by the two replicas together: once their answers' tokens
/// reach it, both refuse with `budget_exhausted` until UTC midnight, and each shows the
/// team's spend.
#[tokio::test]
async fn token_budget_exhausted_across_replicas() {
    let redis = RedisServer::start();
    let emulator = emulator().await;
    let path = keys_file("budget.toml");
    let budget = 100;
    let key = add(
        &path,
        "team",
        Role::Member,
        Limits::default(),
        Rules {
            tokens_per_day: Some(budget),
            ..Rules::default()
        },
    );
    let (a, b) = replicas(&emulator, &redis.url(), &path, &[]).await;
    let client = common::http_client();
    let mut spent = 0;
    let mut refused = None;
    for i in 0..200 {
        let replica = if i % 2 == 0 { &a } else { &b };
        let answer = chat(&client, replica, &key).await;
        if answer.status() == 429 {
            refused = Some((
                i,
                common::header_number(&answer, "retry-after"),
                common::error_of(answer).await,
            ));
            break;
        }
        assert_eq!(answer.status(), 200);
        let body: Value = answer.json().await.expect("json");
        spent += body["usage"]["total_tokens"].as_u64().expect("usage");
        // Charged in the background: wait until the other replica sees it, as a later request
        // a moment after this one would.
        let other = if i % 2 == 0 { &b } else { &a };
        let seen = until(Duration::from_secs(5), || async {
            budget_used(&client, other, &key).await == Some(spent as f64)
        })
        .await;
        assert!(seen, "the other replica sees {spent} tokens spent");
    }
    let (at, retry_after, error) = refused.expect("the budget runs out");
    assert!(spent >= budget, "refused only once {spent} >= {budget}");
    assert!(at >= 2, "both replicas served before the budget ran out");
    assert_eq!(error["code"], "budget_exhausted", "{error}");
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    for replica in [&a, &b] {
        let answer = chat(&client, replica, &key).await;
        assert_eq!(answer.status(), 429);
        assert_eq!(common::error_of(answer).await["code"], "budget_exhausted");
        let status = get(&client, replica, "/status", &key).await;
        assert_eq!(status["budgets"][0]["used"], spent as f64, "{status}");
        assert_eq!(status["budgets"][0]["left"], 0.0, "{status}");
    }
}

/// `replica`'s `/status` as `key` sees it, or `None` when it cannot be read.
async fn status_of(client: &reqwest::Client, replica: &Replica, key: &str) -> Option<Value> {
    client
        .get(format!("{}/status", replica.url))
        .bearer_auth(key)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// The `budgets[0].used` a member's `/status` shows on `replica`.
async fn budget_used(client: &reqwest::Client, replica: &Replica, key: &str) -> Option<f64> {
    status_of(client, replica, key).await?["budgets"][0]["used"].as_f64()
}

/// Polls `check` every 20 ms until it holds or `limit` passes.
async fn until<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check().await
}

/// Total `requests` in the team's usage an admin's `/status` shows (all replicas, this month).
async fn team_requests(client: &reqwest::Client, replica: &Replica, admin: &str) -> Option<u64> {
    let status = status_of(client, replica, admin).await?;
    (status["usage_scope"]["replicas"] == "all").then_some(())?;
    Some(
        status["usage"]
            .as_array()?
            .iter()
            .filter_map(|row| row["requests"].as_u64())
            .sum(),
    )
}

/// Redis killed under load, failing open: not one request fails (each replica counts on its
/// own meanwhile), `foundry_proxy_redis_up` drops to 0 and the outage is logged once; when
/// Redis is back the replicas reconnect by themselves, and the usage kept meanwhile is
/// written, so the team's totals count every request.
#[tokio::test]
async fn redis_killed_under_load_fails_open_and_recovers() {
    let mut redis = RedisServer::start_durable();
    let emulator = emulator().await;
    let path = keys_file("open.toml");
    let key = add(&path, "ops", Role::Admin, rpm(100_000), Rules::default());
    let (a, b) = replicas(&emulator, &redis.url(), &path, &[]).await;
    let client = common::http_client();
    let stop = tokio_util::sync::CancellationToken::new();
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    let load = |replica: &std::sync::Arc<Replica>| {
        let (client, key, stop) = (client.clone(), key.clone(), stop.clone());
        let replica = std::sync::Arc::clone(replica);
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            while !stop.is_cancelled() {
                let answer = chat(&client, &replica, &key).await;
                match answer.status().as_u16() {
                    200 => ok += 1,
                    status => failed.push(format!(
                        "{status} {}",
                        answer.text().await.unwrap_or_default()
                    )),
                }
            }
            (ok, failed)
        })
    };
    let workers: Vec<_> = [&a, &b, &a, &b].into_iter().map(load).collect();
    let (a, b) = (a.as_ref(), b.as_ref());
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.kill();
    let down = until(Duration::from_secs(5), || async {
        metric(&client, a, &key, "foundry_proxy_redis_up").await == "0"
            && metric(&client, b, &key, "foundry_proxy_redis_up").await == "0"
    })
    .await;
    assert!(down, "foundry_proxy_redis_up 0 on both replicas");
    tokio::time::sleep(Duration::from_millis(700)).await;
    redis.restart();
    let up = until(Duration::from_secs(10), || async {
        metric(&client, a, &key, "foundry_proxy_redis_up").await == "1"
            && metric(&client, b, &key, "foundry_proxy_redis_up").await == "1"
    })
    .await;
    assert!(up, "both replicas reconnect by themselves");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let mut total = 0;
    for worker in workers {
        let (ok, failed) = worker.await.expect("load task");
        assert!(
            failed.is_empty(),
            "failed requests while failing open: {failed:?}"
        );
        total += ok;
    }
    assert!(total > 20, "the load ran ({total} requests)");
    let counted = until(Duration::from_secs(10), || async {
        team_requests(&client, a, &key).await == Some(total)
    })
    .await;
    assert!(
        counted,
        "the team's usage counts all {total} requests, those of the outage included: {:?}",
        team_requests(&client, a, &key).await
    );
    for replica in [a, b] {
        let log = replica.log();
        assert_eq!(
            log.matches("Redis unreachable").count(),
            1,
            "logged once: {log}"
        );
        assert!(log.contains("Redis answers again"), "{log}");
    }
}

/// Redis killed, failing closed: a limited key gets 503 `redis_unavailable`, explained, with
/// `retry-after`, while a key without limits or budgets (which never needs Redis) is served;
/// once Redis is back the limited key is served again.
#[tokio::test]
async fn redis_down_fails_closed_with_an_explanation_and_recovers() {
    let mut redis = RedisServer::start();
    let emulator = emulator().await;
    let path = keys_file("closed.toml");
    let limited = add(&path, "limited", Role::Member, rpm(1_000), Rules::default());
    let free = add(
        &path,
        "free",
        Role::Member,
        Limits::default(),
        Rules::default(),
    );
    let (a, b) = replicas(
        &emulator,
        &redis.url(),
        &path,
        &[("FOUNDRY_PROXY_REDIS_FAILURE", "closed")],
    )
    .await;
    let client = common::http_client();
    assert_eq!(chat(&client, &a, &limited).await.status(), 200);
    redis.kill();
    for replica in [&a, &b] {
        // The first request may be the one that finds Redis gone; every one is refused.
        for _ in 0..3 {
            let answer = chat(&client, replica, &limited).await;
            assert_eq!(answer.status(), 503);
            assert!(common::header_number(&answer, "retry-after") >= 1);
            let error = common::error_of(answer).await;
            assert_eq!(error["code"], "redis_unavailable", "{error}");
            let message = error["message"].as_str().unwrap_or_default();
            assert!(
                message.contains("FOUNDRY_PROXY_REDIS_FAILURE=closed"),
                "{message}"
            );
            assert!(message.contains(&redis.url()), "{message}");
        }
        assert_eq!(chat(&client, replica, &free).await.status(), 200);
    }
    redis.restart();
    for replica in [&a, &b] {
        let back = until(Duration::from_secs(10), || async {
            chat(&client, replica, &limited).await.status() == 200
        })
        .await;
        assert!(back, "served again once Redis is back: {}", replica.log());
    }
}

/// A Redis URL the proxy cannot use stops it at start with one line naming the setting and the
/// fix, without the password.
#[tokio::test]
async fn bad_redis_settings_stop_the_start_with_one_line() {
    let emulator = emulator().await;
    for (name, value) in [
        ("FOUNDRY_PROXY_REDIS_URL", "http://:hunter2@cache:6379"),
        ("FOUNDRY_PROXY_REDIS_FAILURE", "sometimes"),
    ] {
        let out = serve_binary::serve(&emulator.url(), &[(name, value)])
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

/// `rediss://` with a password: the replicas share the limit over TLS (the server's CA from
/// `SSL_CERT_FILE`), and the password shows nowhere: not in the log, not in `/status`.
#[tokio::test]
async fn rediss_with_a_password() {
    let password = "s3cret-redis-pass";
    let redis = RedisServer::start_tls(password);
    let emulator = emulator().await;
    let path = keys_file("tls.toml");
    let key = add(&path, "ops", Role::Admin, rpm(3), Rules::default());
    let ca = redis.ca_file().display().to_string();
    let (a, b) = replicas(&emulator, &redis.url(), &path, &[("SSL_CERT_FILE", &ca)]).await;
    let client = common::http_client();
    let mut admitted = 0;
    for i in 0..6 {
        let replica = if i % 2 == 0 { &a } else { &b };
        if chat(&client, replica, &key).await.status() == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "exactly N over TLS: {}", a.log());
    let status = get(&client, &a, "/status", &key).await;
    assert_eq!(status["redis"]["up"], true, "{status}");
    assert_eq!(
        status["redis"]["url"],
        format!(
            "rediss://localhost:{}",
            redis.url().rsplit(':').next().unwrap_or_default()
        ),
        "{status}"
    );
    for text in [status.to_string(), a.log(), b.log()] {
        assert!(!text.contains(password), "{text}");
    }
}

/// A wrong password is an outage like any other: logged once with Redis's own reason (never
/// the password), `foundry_proxy_redis_up 0`, and, failing open, requests are served.
#[tokio::test]
async fn wrong_password_is_logged_once_and_fails_open() {
    let redis = RedisServer::start_tls("the-right-one");
    let emulator = emulator().await;
    let path = keys_file("wrong.toml");
    let key = add(&path, "ops", Role::Admin, rpm(100), Rules::default());
    let ca = redis.ca_file().display().to_string();
    let wrong = redis.url().replace("the-right-one", "not-the-password");
    let (a, _b) = replicas(&emulator, &wrong, &path, &[("SSL_CERT_FILE", &ca)]).await;
    let client = common::http_client();
    for _ in 0..3 {
        assert_eq!(chat(&client, &a, &key).await.status(), 200);
    }
    assert_eq!(
        metric(&client, &a, &key, "foundry_proxy_redis_up").await,
        "0"
    );
    let log = a.log();
    assert_eq!(log.matches("Redis does not answer").count(), 1, "{log}");
    assert!(
        log.contains("WRONGPASS") || log.contains("invalid") || log.contains("auth"),
        "{log}"
    );
    assert!(!log.contains("not-the-password"), "{log}");
}

/// A Redis that hangs (SIGSTOP: connections open, no answer) never hangs requests: the one
/// that finds it out waits at most the command timeout, later ones skip Redis at once, all are
/// served (failing open); once it answers again the replica reconnects.
#[tokio::test]
async fn hung_redis_never_hangs_requests() {
    let redis = RedisServer::start();
    let emulator = emulator().await;
    let path = keys_file("hung.toml");
    let key = add(&path, "ops", Role::Admin, rpm(1_000), Rules::default());
    let (a, _b) = replicas(&emulator, &redis.url(), &path, &[]).await;
    // The bound is the client's, far above the proxy's 500 ms command timeout: a request
    // waiting on a hung Redis would never end.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    assert_eq!(chat(&client, &a, &key).await.status(), 200);
    redis.freeze(true);
    for _ in 0..5 {
        let answer = client
            .post(format!("{}/v1/chat/completions", a.url))
            .bearer_auth(&key)
            .json(&json!({"model": world::CHAT_DEPLOYMENT, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("answered, not hung");
        assert_eq!(answer.status(), 200);
    }
    assert_eq!(
        metric(&client, &a, &key, "foundry_proxy_redis_up").await,
        "0"
    );
    redis.freeze(false);
    let up = until(Duration::from_secs(10), || async {
        metric(&client, &a, &key, "foundry_proxy_redis_up").await == "1"
    })
    .await;
    assert!(up, "reconnected: {}", a.log());
}

/// Tokens per minute are shared too: once the answers of both replicas reach the limit, both
/// refuse with `token_limit_exceeded`; a member's `/status` shows the shared tokens.
#[tokio::test]
async fn tokens_per_minute_shared_by_replicas() {
    let redis = RedisServer::start();
    let emulator = emulator().await;
    let path = keys_file("tpm.toml");
    let limit = 60;
    let key = add(
        &path,
        "team",
        Role::Member,
        Limits {
            requests_per_minute: None,
            tokens_per_minute: Some(limit),
        },
        Rules::default(),
    );
    let (a, b) = replicas(&emulator, &redis.url(), &path, &[]).await;
    let client = common::http_client();
    let mut spent = 0;
    let mut refused = None;
    for i in 0..100 {
        let (replica, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        let answer = chat(&client, replica, &key).await;
        if answer.status() == 429 {
            refused = Some(common::error_of(answer).await);
            break;
        }
        let body: Value = answer.json().await.expect("json");
        spent += body["usage"]["total_tokens"].as_u64().expect("usage");
        let seen = until(Duration::from_secs(5), || async {
            let status = get(&client, other, "/status", &key).await;
            status["limits"]["tokens_per_minute"]["used"].as_u64() == Some(spent)
        })
        .await;
        assert!(seen, "the other replica's window holds {spent} tokens");
    }
    let error = refused.expect("the limit is reached");
    assert_eq!(error["code"], "token_limit_exceeded", "{error}");
    assert!(spent >= limit, "refused only once {spent} >= {limit}");
    for replica in [&a, &b] {
        assert_eq!(chat(&client, replica, &key).await.status(), 429);
    }
}
