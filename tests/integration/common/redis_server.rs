//! A real `redis-server` (Debian's package; `scripts/test` installs it) per test, on a free
//! port of 127.0.0.1, with an append-only file (synced on every write when durable, so that
//! killing it and starting it again on the same port loses nothing, as a persistent Redis
//! would). Stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running (or killed) redis-server.
#[derive(Debug)]
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// TLS only (`--tls-port`), with a certificate for localhost signed by `ca.pem` in `dir`.
    tls: bool,
    /// `requirepass`, when set.
    password: Option<String>,
    /// fsync the append-only file on every write (`always`), so a SIGKILL loses nothing;
    /// else every second, which keeps a loaded machine's disk out of the 500 ms timeout.
    durable: bool,
}

/// The redis-server binary: `FOUNDRY_PROXY_REDIS_SERVER`, else `redis-server` on PATH.
fn binary() -> String {
    std::env::var("FOUNDRY_PROXY_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_owned())
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers PING.
    pub(crate) fn start() -> Self {
        Self::start_with(false, None, false)
    }

    /// As [`RedisServer::start`], syncing every write, for tests that SIGKILL it and count
    /// what it kept.
    pub(crate) fn start_durable() -> Self {
        Self::start_with(false, None, true)
    }

    /// Starts one that speaks only TLS (its CA in [`RedisServer::ca_file`]) and requires
    /// `password`.
    pub(crate) fn start_tls(password: &str) -> Self {
        Self::start_with(true, Some(password.to_owned()), false)
    }

    fn start_with(tls: bool, password: Option<String>, durable: bool) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = std::env::temp_dir().join(format!("fp-redis-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("redis dir");
        if tls {
            write_pki(&dir);
        }
        let mut server = Self {
            child: None,
            port,
            dir,
            tls,
            password,
            durable,
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://:PASSWORD@localhost:PORT`.
    pub(crate) fn url(&self) -> String {
        let password = self
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        if self.tls {
            format!("rediss://{password}localhost:{}", self.port)
        } else {
            format!("redis://{password}127.0.0.1:{}", self.port)
        }
    }

    /// The CA that signed a TLS server's certificate (PEM).
    pub(crate) fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// SIGKILL, as a crashed or evicted Redis.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`): a Redis that hangs, with its connections open.
    pub(crate) fn freeze(&self, frozen: bool) {
        let child = self.child.as_ref().expect("running");
        let signal = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {signal}");
    }

    /// Starts it (again) on the same port and data directory; waits until it answers.
    pub(crate) fn restart(&mut self) {
        self.kill();
        let mut command = Command::new(binary());
        if self.tls {
            command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(self.dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(self.dir.join("server.key"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            command.args(["--port", &self.port.to_string()]);
        }
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .args([
                "--appendfsync",
                if self.durable { "always" } else { "everysec" },
            ])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--daemonize", "no"])
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): install Debian's redis-server (scripts/test does) or set FOUNDRY_PROXY_REDIS_SERVER",
                    binary()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // A TLS or password-protected server is taken as up once it accepts connections.
            let up = if self.tls || self.password.is_some() {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            } else {
                self.command(&["PING"])
                    .is_some_and(|a| a.starts_with("+PONG"))
            };
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer within 10 s: {}",
            self.port,
            std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
        );
    }

    /// Sends one command (RESP) and returns the raw answer, or `None` when it does not answer.
    pub(crate) fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = vec![0u8; 64 * 1024];
        let n = stream.read(&mut answer).ok()?;
        (n > 0).then(|| String::from_utf8_lossy(&answer[..n]).into_owned())
    }
}

/// A private CA (`ca.pem`) and a certificate for localhost and 127.0.0.1 it signed
/// (`server.pem`, `server.key`), written to `dir`.
fn write_pki(dir: &std::path::Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server cert");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("ca.pem");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("server.pem");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("server.key");
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.freeze(false);
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
