//! The container image and the Compose example, run for real on the local Docker engine.
//!
//! Each test first asks `docker info`. Without a working engine it prints why and returns
//! (a pass with a reason, not a failure). Otherwise it builds the runtime image from a static
//! binary built on this machine (`scripts/container-image`, the Dockerfile's `prebuilt`
//! target) and a client image holding nothing but a static busybox (`busybox-static`).
//! Nothing is pulled and no port is published. Every container, network and image a test
//! creates is named after the test process's id and the test, and is removed when the test
//! ends, pass or fail.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use foundry_proxy::emulator::identities as world;

/// The image size target (bytes).
const SIZE_LIMIT: u64 = 20_000_000;
/// The image's user: uid and gid 65532, not root.
const IMAGE_USER: &str = "65532:65532";
/// `FOUNDRY_PROXY_SHUTDOWN_GRACE` in these tests (seconds).
const GRACE_SECS: u64 = 10;
/// What `docker stop` allows before SIGKILL: more than the grace period.
const STOP_SECS: u64 = 20;
/// The emulator's answer to the client's chat message.
const ANSWER: &str = "Hello from the foundry-proxy emulator. You said: ";
/// The health check command the image declares.
const HEALTHCHECK: &str = r#"["CMD","/usr/local/bin/foundry-proxy","healthcheck"]"#;

// ---- running commands ----------------------------------------------------------------

/// Runs `command` to completion within `limit`, capturing its output; panics past the limit.
fn run(command: &mut Command, limit: Duration) -> Output {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
    let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{description} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `docker ARGS` (at most two minutes).
fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args), Duration::from_secs(120))
}

/// Runs `docker ARGS`, asserts success, returns stdout without the final newline.
fn docker_ok(args: &[&str]) -> String {
    let output = docker(args);
    assert!(
        output.status.success(),
        "docker {args:?} failed ({}):\n{}{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout).trim_end().to_owned()
}

/// Why the Docker tests cannot run here, if they cannot.
fn docker_unavailable() -> Option<String> {
    let output = match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(e) => return Some(format!("cannot run `docker info`: {e}")),
    };
    if output.status.success() {
        None
    } else {
        let stderr = text(&output.stderr);
        let reason = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        Some(format!("`docker info` failed: {reason}"))
    }
}

/// Returns early, with the reason on stderr, when there is no Docker engine.
macro_rules! require_docker {
    () => {
        if let Some(reason) = docker_unavailable() {
            eprintln!("skipped: {reason}");
            return;
        }
    };
}

// ---- names and cleanup ---------------------------------------------------------------

/// A name unique to this process and test: `fpct-PID-TEST-PART`.
fn name(test: &str, part: &str) -> String {
    format!("fpct-{}-{test}-{part}", std::process::id())
}

/// What a test created, removed on drop (also when the test panics).
#[derive(Debug, Default)]
struct Cleanup {
    /// Compose projects to take down.
    compose: Vec<Compose>,
    containers: Vec<String>,
    images: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for project in &self.compose {
            let _ = project
                .command()
                .args(["down", "--volumes", "--remove-orphans", "--timeout", "5"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for container in self.containers.iter().rev() {
            let _ = docker(&["rm", "--force", "--volumes", container]);
        }
        for image in &self.images {
            let _ = docker(&["image", "rm", "--force", image]);
        }
        for dir in &self.dirs {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

// ---- images --------------------------------------------------------------------------

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the runtime image `tag` from a static binary built here (scripts/container-image).
fn build_proxy_image(tag: &str, cleanup: &mut Cleanup) {
    cleanup.images.push(tag.to_owned());
    let started = Instant::now();
    // A cold static build compiles every dependency once: allow it time on a small machine.
    let output = run(
        Command::new(repo_root().join("scripts/container-image")).arg(tag),
        Duration::from_secs(25 * 60),
    );
    assert!(
        output.status.success(),
        "scripts/container-image failed ({}):\n{}",
        output.status,
        text(&output.stderr)
    );
    eprintln!(
        "image {tag} built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// True when the ELF file asks for a dynamic loader (so it cannot run in an empty image).
fn is_dynamic(elf: &[u8]) -> bool {
    // 64-bit little-endian ELF: program headers at e_phoff (32..40), e_phentsize (54),
    // e_phnum (56). PT_INTERP (3) names the dynamic loader.
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |at: usize| usize::from(u16::from_le_bytes([elf[at], elf[at + 1]]));
    let Ok(offset) = usize::try_from(u64::from_le_bytes(elf[32..40].try_into().expect("8 bytes")))
    else {
        return false;
    };
    (0..u16_at(56)).any(|i| {
        let at = offset + i * u16_at(54);
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().expect("4 bytes")) == 3)
    })
}

/// Builds `tag`: an empty image with a static busybox as its entrypoint, the client that
/// sends requests from the proxy's network namespace.
fn build_client_image(tag: &str, cleanup: &mut Cleanup) {
    let busybox = std::env::var_os("FOUNDRY_PROXY_TEST_BUSYBOX")
        .map_or_else(|| PathBuf::from("/bin/busybox"), PathBuf::from);
    let bytes = std::fs::read(&busybox).unwrap_or_else(|e| {
        panic!(
            "the client container needs a static busybox at {} ({e}): \
             scripts/test fetches one; or apt-get install busybox-static, or set FOUNDRY_PROXY_TEST_BUSYBOX",
            busybox.display()
        )
    });
    assert!(
        !is_dynamic(&bytes),
        "{} is dynamically linked: install busybox-static (not busybox), or set FOUNDRY_PROXY_TEST_BUSYBOX",
        busybox.display()
    );
    let dir = std::env::temp_dir().join(format!("{tag}-context").replace(':', "-"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("context dir");
    cleanup.dirs.push(dir.clone());
    std::fs::write(dir.join("busybox"), &bytes).expect("copy busybox");
    std::fs::set_permissions(
        dir.join("busybox"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nUSER 65532:65532\nENTRYPOINT [\"/bin/busybox\"]\n",
    )
    .expect("Dockerfile");
    cleanup.images.push(tag.to_owned());
    docker_ok(&["build", "--quiet", "--tag", tag, &dir.to_string_lossy()]);
}

/// Checks what the image promises: a non-root user, the size target, no shell, the health check.
fn assert_image_is_hardened(tag: &str) {
    let user = docker_ok(&["image", "inspect", "--format", "{{.Config.User}}", tag]);
    assert_eq!(user, IMAGE_USER, "the image's user");
    let size: u64 = docker_ok(&["image", "inspect", "--format", "{{.Size}}", tag])
        .parse()
        .expect("size");
    eprintln!("image {tag}: {size} bytes");
    assert!(
        size < SIZE_LIMIT,
        "the image is {size} bytes, over the {SIZE_LIMIT}-byte target"
    );
    let healthcheck = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Healthcheck.Test}}",
        tag,
    ]);
    assert_eq!(healthcheck, HEALTHCHECK);
    let shell = docker(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--entrypoint",
        "/bin/sh",
        tag,
        "-c",
        "true",
    ]);
    assert!(!shell.status.success(), "the image has a shell");
}

// ---- containers ----------------------------------------------------------------------

fn inspect(container: &str, format: &str) -> String {
    docker_ok(&["inspect", "--format", format, container])
}

/// Waits until Docker reports `container` healthy; panics with its logs if it turns
/// unhealthy or stops, or after `limit`.
fn wait_healthy(container: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let state = inspect(container, "{{.State.Status}} {{.State.Health.Status}}");
        match state.as_str() {
            "running healthy" => return,
            "running starting" if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(250));
            }
            _ => {
                let health = inspect(container, "{{json .State.Health}}");
                let logs = docker(&["logs", container]);
                panic!(
                    "{container} is not healthy ({state}) after {limit:?}: {health}\n{}{}",
                    text(&logs.stdout),
                    text(&logs.stderr)
                );
            }
        }
    }
}

/// The uid of the container's main process, as the host sees it.
fn process_uid(container: &str) -> String {
    let top = docker_ok(&["top", container, "-o", "pid,uid"]);
    let row = top.lines().nth(1).unwrap_or_default();
    row.split_whitespace().nth(1).unwrap_or_default().to_owned()
}

/// `wget` arguments that POST a chat completion through the proxy on 127.0.0.1:8080.
fn chat_request(content: &str, stream: bool) -> Vec<String> {
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": content}],
    });
    [
        "wget",
        "-q",
        "-O",
        "-",
        "--header",
        "Content-Type: application/json",
        // The caller's key is dropped: the proxy sends its own Entra ID token.
        "--header",
        "Authorization: Bearer sk-not-a-real-key",
        // The emulator sends each stream chunk 250 ms apart: long enough to be in flight
        // when the proxy is stopped.
        "--header",
        "x-emulator-chunk-delay-ms: 250",
        "--post-data",
        &body.to_string(),
        "http://127.0.0.1:8080/v1/chat/completions",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Stdout log lines of the proxy that are JSON objects with a `message`.
fn json_messages(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("message").is_some())
        .collect()
}

/// The runtime image, built from the host's binary, runs as a hardened sidecar: non-root,
/// under the size target, healthy by its own `HEALTHCHECK` once it holds a token from the
/// emulator, reachable on loopback from a second container in its network namespace, JSON
/// logs on stdout, and on `docker stop` it drains an open stream and exits 0 in time.
///
/// The proxy container owns the network namespace and has no network but loopback
/// (`--network none`), like a pod's sidecar. The emulator plays Azure from inside that
/// namespace on 127.0.0.1:8081, reached by the name `localhost`: plain HTTP upstreams are
/// allowed only on loopback, and the name goes through the static binary's resolver
/// (`/etc/hosts`). It starts after the proxy, so the proxy is first unready (no Entra) and
/// then becomes healthy.
#[test]
fn image_runs_as_a_sidecar_and_drains_on_stop() {
    require_docker!();
    let mut cleanup = Cleanup::default();
    let image = format!("foundry-proxy-test:{}-sidecar", std::process::id());
    let client = format!("foundry-proxy-test-client:{}-sidecar", std::process::id());
    build_proxy_image(&image, &mut cleanup);
    build_client_image(&client, &mut cleanup);
    assert_image_is_hardened(&image);

    let proxy = name("sidecar", "proxy");
    let emulator = name("sidecar", "emulator");
    let stream = name("sidecar", "stream");
    cleanup
        .containers
        .extend([proxy.clone(), emulator.clone(), stream.clone()]);
    let grace = GRACE_SECS.to_string();
    let env = [
        ("FOUNDRY_PROXY_LISTEN", "127.0.0.1:8080"),
        ("FOUNDRY_PROXY_LOG_FORMAT", "json"),
        ("FOUNDRY_PROXY_SHUTDOWN_GRACE", grace.as_str()),
        ("AZURE_AUTHORITY_HOST", "http://localhost:8081"),
        ("FOUNDRY_ENDPOINT", "http://localhost:8081"),
        ("AZURE_TENANT_ID", world::TENANT_ID),
        ("AZURE_CLIENT_ID", world::CLIENT_ID),
        ("AZURE_CLIENT_SECRET", world::CLIENT_SECRET),
    ]
    .map(|(k, v)| format!("{k}={v}"));
    let mut args = vec![
        "run",
        "--detach",
        "--pull",
        "never",
        "--name",
        &proxy,
        "--network",
        "none",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--health-interval",
        "1s",
    ];
    for e in &env {
        args.extend(["--env", e]);
    }
    args.push(&image);
    docker_ok(&args);
    let namespace = format!("container:{proxy}");
    docker_ok(&[
        "run",
        "--detach",
        "--pull",
        "never",
        "--name",
        &emulator,
        "--network",
        &namespace,
        "--no-healthcheck",
        &image,
        "emulate",
        "--listen",
        "127.0.0.1:8081",
    ]);

    wait_healthy(&proxy, Duration::from_secs(60));
    let health = inspect(&proxy, "{{json .State.Health.Log}}");
    assert!(
        health.contains("ok: http://127.0.0.1:8080/readyz answered 200"),
        "the HEALTHCHECK is `foundry-proxy healthcheck`: {health}"
    );
    assert_eq!(process_uid(&proxy), "65532", "the proxy runs as non-root");

    // A chat completion from a second container sharing the proxy's network namespace.
    let mut request = vec![
        "run".to_owned(),
        "--rm".into(),
        "--pull".into(),
        "never".into(),
        "--network".into(),
        namespace.clone(),
        client.clone(),
    ];
    request.extend(chat_request("Hello from a sidecar", false));
    let answer = docker_ok(&request.iter().map(String::as_str).collect::<Vec<_>>());
    let answer: serde_json::Value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("not a JSON answer ({e}): {answer}"));
    assert_eq!(
        answer["choices"][0]["message"]["content"],
        format!("{ANSWER}Hello from a sidecar")
    );

    // A slow stream, in flight when the proxy is told to stop.
    let mut streaming = vec![
        "run".to_owned(),
        "--detach".into(),
        "--pull".into(),
        "never".into(),
        "--name".into(),
        stream.clone(),
        "--network".into(),
        namespace.clone(),
        client.clone(),
    ];
    streaming.extend(chat_request("one two three four five six", true));
    docker_ok(&streaming.iter().map(String::as_str).collect::<Vec<_>>());
    // The proxy logs a request when the upstream's headers arrive: then the stream is open.
    let deadline = Instant::now() + Duration::from_secs(20);
    while json_messages(&docker_ok(&["logs", &proxy]))
        .iter()
        .filter(|m| m["message"] == "request")
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "the stream never reached the proxy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let stopping = Instant::now();
    docker_ok(&["stop", "--time", &STOP_SECS.to_string(), &proxy]);
    let stopped_in = stopping.elapsed();
    eprintln!("docker stop took {:.1} s", stopped_in.as_secs_f64());
    assert!(
        stopped_in < Duration::from_secs(STOP_SECS),
        "the proxy needed SIGKILL ({stopped_in:?})"
    );
    assert_eq!(
        inspect(&proxy, "{{.State.ExitCode}} {{.State.OOMKilled}}"),
        "0 false",
        "a clean exit"
    );
    assert_eq!(docker_ok(&["wait", &stream]), "0", "the stream's client");
    let streamed = docker_ok(&["logs", &stream]);
    assert!(
        streamed.trim_end().ends_with("data: [DONE]"),
        "the open stream was drained to its end: {streamed}"
    );

    // Logs: the listening line, then JSON objects, all on stdout.
    let logs = docker(&["logs", &proxy]);
    let stdout = text(&logs.stdout);
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("foundry-proxy listening on http://127.0.0.1:8080")
    );
    for line in lines {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            value["level"].is_string() && value["message"].is_string(),
            "{line}"
        );
    }
    assert_eq!(text(&logs.stderr), "", "no log lines on stderr");
    let messages: Vec<String> = json_messages(&stdout)
        .iter()
        .map(|m| m["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    for expected in [
        "token acquired",
        "shutting down: draining in-flight requests",
        "foundry-proxy stopped",
    ] {
        assert!(
            messages.iter().any(|m| m == expected),
            "no '{expected}' log: {messages:?}"
        );
    }
    assert!(
        !messages.iter().any(|m| m.starts_with("grace period over")),
        "the stream ended within the grace period: {messages:?}"
    );
}

// ---- compose -------------------------------------------------------------------------

/// `docker compose` (v2) or `docker-compose` (v1), whichever works.
fn compose_program() -> Option<Vec<String>> {
    let works = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works("docker", &["compose", "version"]) {
        Some(vec!["docker".into(), "compose".into()])
    } else if works("docker-compose", &["version"]) {
        Some(vec!["docker-compose".into()])
    } else {
        None
    }
}

/// A compose project: the program, its leading arguments, and its environment.
#[derive(Debug, Clone)]
struct Compose {
    base: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Compose {
    /// The compose command, ready for a subcommand.
    fn command(&self) -> Command {
        let mut command = Command::new(&self.base[0]);
        command
            .args(&self.base[1..])
            .envs(self.envs.iter().map(|(k, v)| (k, v)));
        command
    }

    fn run(&self, args: &[&str], limit: Duration) -> Output {
        run(self.command().args(args), limit)
    }

    fn ok(&self, args: &[&str], limit: Duration) -> String {
        let output = self.run(args, limit);
        assert!(
            output.status.success(),
            "{:?} {args:?} failed ({}):\n{}{}",
            self.base,
            output.status,
            text(&output.stdout),
            text(&output.stderr)
        );
        text(&output.stdout)
    }
}

/// The one container of `service` in compose project `project` (running or not).
fn compose_container(project: &str, service: &str) -> String {
    let ids = docker_ok(&[
        "ps",
        "--all",
        "--quiet",
        "--no-trunc",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ]);
    let mut ids = ids.lines();
    let id = ids
        .next()
        .unwrap_or_else(|| panic!("no container for {service}"));
    assert!(ids.next().is_none(), "one container for {service}");
    id.to_owned()
}

/// docker-compose.yml is valid as users run it (`config`, both profiles), and
/// `--profile demo up` runs the demo proxy (emulator and proxy in one process) with an app
/// in its network namespace that gets the emulator's answer through
/// http://127.0.0.1:8080/v1. The proxy becomes healthy, runs as non-root on a read-only root,
/// and stops with exit code 0 within the grace period. The app is the busybox client (the
/// Python image cannot be pulled here): tests/container/compose.demo-test.yml.
#[test]
fn compose_demo_profile_runs_the_app_beside_the_proxy() {
    require_docker!();
    let Some(program) = compose_program() else {
        eprintln!("skipped: neither `docker compose` nor `docker-compose` works");
        return;
    };
    let mut cleanup = Cleanup::default();
    let image = format!("foundry-proxy-test:{}-compose", std::process::id());
    let client = format!("foundry-proxy-test-client:{}-compose", std::process::id());
    let project = name("compose", "demo").replace('-', "");
    let root = repo_root();
    // An empty env file, so a developer's .env does not change the test.
    let env_dir = std::env::temp_dir().join(format!("{project}-env"));
    std::fs::create_dir_all(&env_dir).expect("env dir");
    cleanup.dirs.push(env_dir.clone());
    let env_file = env_dir.join("empty.env");
    std::fs::write(&env_file, "").expect("env file");
    let path = |p: &Path| p.to_string_lossy().into_owned();

    // The user-facing file alone.
    let mut base = program.clone();
    base.extend([
        "--env-file".into(),
        path(&env_file),
        "--file".into(),
        path(&root.join("docker-compose.yml")),
    ]);
    let plain = Compose {
        base: base.clone(),
        envs: Vec::new(),
    };
    plain.ok(&["config", "--quiet"], Duration::from_secs(60));
    for profile in ["demo", "azure"] {
        plain.ok(
            &["--profile", profile, "config", "--quiet"],
            Duration::from_secs(60),
        );
    }

    build_proxy_image(&image, &mut cleanup);
    build_client_image(&client, &mut cleanup);

    // The demo profile, with the test's app.
    base.extend([
        "--file".into(),
        path(&root.join("tests/container/compose.demo-test.yml")),
        "--project-name".into(),
        project.clone(),
    ]);
    let demo = Compose {
        base,
        envs: vec![
            ("FOUNDRY_PROXY_IMAGE".to_owned(), image.clone()),
            ("FOUNDRY_PROXY_TEST_CLIENT_IMAGE".to_owned(), client.clone()),
        ],
    };
    cleanup.compose.push(demo.clone());
    demo.ok(
        &["--profile", "demo", "up", "--detach", "--no-build"],
        Duration::from_secs(180),
    );

    let proxy = compose_container(&project, "demo-proxy");
    let app = compose_container(&project, "demo-app");
    let all = docker_ok(&[
        "ps",
        "--all",
        "--quiet",
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
    ]);
    assert_eq!(
        all.lines().count(),
        2,
        "the demo profile starts demo-proxy and demo-app only, not the Azure services"
    );
    let app_exit = run(
        Command::new("docker").args(["wait", &app]),
        Duration::from_secs(60),
    );
    let app_logs = docker(&["logs", &app]);
    assert_eq!(
        text(&app_exit.stdout).trim(),
        "0",
        "the app's exit code; its output:\n{}{}",
        text(&app_logs.stdout),
        text(&app_logs.stderr)
    );
    assert!(
        text(&app_logs.stdout).contains(&format!("{ANSWER}Hello from the app container!")),
        "the app got the emulator's answer: {}",
        text(&app_logs.stdout)
    );
    assert_eq!(
        inspect(&app, "{{.HostConfig.NetworkMode}}"),
        format!("container:{proxy}"),
        "the app shares the proxy's network namespace"
    );

    wait_healthy(&proxy, Duration::from_secs(60));
    assert_eq!(process_uid(&proxy), "65532", "the proxy runs as non-root");
    assert_eq!(
        inspect(
            &proxy,
            "{{.HostConfig.ReadonlyRootfs}} {{.HostConfig.CapDrop}}"
        ),
        "true [ALL]"
    );

    let stopping = Instant::now();
    demo.ok(
        &[
            "--profile",
            "demo",
            "stop",
            "--timeout",
            &STOP_SECS.to_string(),
        ],
        Duration::from_secs(STOP_SECS + 30),
    );
    let stopped_in = stopping.elapsed();
    assert!(
        stopped_in < Duration::from_secs(STOP_SECS),
        "the proxy needed SIGKILL ({stopped_in:?})"
    );
    assert_eq!(
        inspect(&proxy, "{{.State.ExitCode}}"),
        "0",
        "the proxy's exit code"
    );
}

/// The ELF check that keeps a dynamically linked busybox out of the empty client image.
#[test]
fn elf_interpreter_detection() {
    let exe = std::fs::read(std::env::current_exe().expect("exe")).expect("read");
    // The test binary itself is linked like the host's default: dynamic on glibc.
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        assert!(is_dynamic(&exe));
    }
    assert!(!is_dynamic(b"#!/bin/sh\n"));
    assert!(!is_dynamic(&[]));
}
