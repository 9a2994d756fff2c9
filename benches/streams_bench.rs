//! The two halves of `benches/streams.sh`: a slow SSE upstream and a load generator that holds
//! many concurrent streams open.
//!
//! `upstream --listen ADDR --cert-out DIR`: an HTTPS server (ALPN `h2` and `http/1.1`, a private
//! CA written to `DIR/ca.pem` for `SSL_CERT_FILE`, HTTP/2 `max_concurrent_streams` 50 000 so a
//! proxy can multiplex every stream over one connection). Any POST answers `text/event-stream`
//! shaped like Chat Completions: a role chunk at once, one content chunk a second for
//! `?seconds=K` seconds (default 10; `?interval_ms=` changes the pace), a `finish_reason` chunk,
//! the usage chunk when the request asked for `stream_options.include_usage`, and `data: [DONE]`.
//! `GET /stats` answers counters (connections by protocol, streams active and peak).
//!
//! `load --url URL --streams N [--seconds K] [--tls-ca PEM] [--open-concurrency C]
//! [--rate R] [--ready-file PATH] [--out PATH] [--label L] [--timeout S]`: N concurrent
//! streaming chat requests, each on its own HTTP/1.1 connection (plain for `http://`, TLS with
//! ALPN `http/1.1` for `https://`). At most C streams are opening (connected but no body byte
//! yet) at a time and at most R start per second, so the listen backlog is never overrun. Time
//! to first byte runs from writing the request on an established connection (after the TLS
//! handshake) to the first body byte. When every stream has opened (or failed), the ready file is
//! written: that is the plateau. A stream completes when it saw `data: [DONE]` and exactly K + 2
//! data events (role, K contents, finish), and no `"usage"` member (the proxy asks for usage
//! itself and must take it out again). Each stream's longest wait between two events is kept,
//! overall and counting only waits that began on the plateau. Results go to stdout and, as
//! `key=value` lines, to the out file; the exit status is 1 when any stream failed.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::error::Error;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn Error + Send + Sync>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench --bench streams_bench` passes `--bench` alone: this program needs a proxy
    // and its peers started around it, so it says what runs it instead of failing.
    if args == ["--bench"] {
        println!("streams_bench is driven by benches/streams.sh (it starts the proxy around it)");
        return;
    }
    let Some((command, rest)) = args.split_first() else {
        usage();
    };
    let options = match Options::parse(rest) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("streams_bench: {message}");
            usage();
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match command.as_str() {
        "upstream" => runtime.block_on(upstream(&options)),
        "load" => runtime.block_on(load(&options)),
        _ => usage(),
    };
    match result {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(error) => {
            eprintln!("streams_bench {command}: {error}");
            std::process::exit(2);
        }
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: streams_bench upstream --listen ADDR --cert-out DIR\n       \
         streams_bench load --url URL --streams N [--seconds K] [--tls-ca PEM] \
         [--open-concurrency C] [--rate R] [--ready-file PATH] [--out PATH] [--label L] \
         [--timeout S]"
    );
    std::process::exit(2);
}

/// `--name value` pairs.
struct Options(HashMap<String, String>);

impl Options {
    fn parse(args: &[String]) -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut iter = args.iter();
        while let Some(name) = iter.next() {
            let Some(name) = name.strip_prefix("--") else {
                return Err(format!("unexpected argument '{name}'"));
            };
            let value = iter
                .next()
                .ok_or_else(|| format!("--{name} needs a value"))?;
            map.insert(name.to_owned(), value.clone());
        }
        Ok(Self(map))
    }

    fn text(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str, BoxError> {
        self.text(name)
            .ok_or_else(|| format!("--{name} is required").into())
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, BoxError> {
        match self.text(name) {
            None => Ok(default),
            Some(text) => text
                .parse()
                .map_err(|_| format!("--{name}: '{text}' is not a number").into()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// upstream
// ---------------------------------------------------------------------------------------------

/// What `GET /stats` reports.
#[derive(Default)]
struct UpstreamStats {
    connections_h2: AtomicU64,
    connections_http1: AtomicU64,
    connections_h2_open: AtomicU64,
    tls_failures: AtomicU64,
    streams_started: AtomicU64,
    streams_finished: AtomicU64,
    streams_active: AtomicU64,
    streams_peak: AtomicU64,
}

impl UpstreamStats {
    fn text(&self) -> String {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "connections_h2={}\nconnections_http1={}\nconnections_h2_open={}\ntls_failures={}\n\
             streams_started={}\nstreams_finished={}\nstreams_active={}\nstreams_peak={}\n",
            get(&self.connections_h2),
            get(&self.connections_http1),
            get(&self.connections_h2_open),
            get(&self.tls_failures),
            get(&self.streams_started),
            get(&self.streams_finished),
            get(&self.streams_active),
            get(&self.streams_peak),
        )
    }
}

async fn upstream(options: &Options) -> Result<bool, BoxError> {
    let listen: SocketAddr = options.required("listen")?.parse()?;
    let cert_dir = std::path::PathBuf::from(options.required("cert-out")?);
    let _ = rustls::crypto::ring::default_provider().install_default();

    // A private CA (what SSL_CERT_FILE trusts) and a leaf for 127.0.0.1 and localhost.
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "streams-bench CA");
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate()?;
    let leaf_params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;
    std::fs::create_dir_all(&cert_dir)?;
    std::fs::write(cert_dir.join("ca.pem"), ca_cert.pem())?;

    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

    let listener = TcpListener::bind(listen).await?;
    let local = listener.local_addr()?;
    println!("upstream listening on https://{local}");
    std::io::stdout().flush()?;

    let stats = Arc::new(UpstreamStats::default());
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(50_000);
    let builder = Arc::new(builder);
    let started = Instant::now();
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: wait instead of spinning.
                eprintln!("upstream: accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = Arc::clone(&builder);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(error) => {
                    stats.tls_failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("upstream: TLS handshake failed: {error}");
                    return;
                }
            };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let serial = if h2 {
                stats.connections_h2.fetch_add(1, Ordering::Relaxed)
            } else {
                stats.connections_http1.fetch_add(1, Ordering::Relaxed)
            };
            if h2 {
                // Few (a proxy multiplexes): worth a line each, with the streams served so far.
                println!(
                    "upstream: h2 connection {} from {peer} after {:.3} s ({} streams started so far)",
                    serial + 1,
                    started.elapsed().as_secs_f64(),
                    stats.streams_started.load(Ordering::Relaxed)
                );
            }
            if h2 {
                stats.connections_h2_open.fetch_add(1, Ordering::Relaxed);
            }
            let service_stats = Arc::clone(&stats);
            let service = hyper::service::service_fn(move |request| {
                respond(request, Arc::clone(&service_stats))
            });
            if let Err(error) = builder.serve_connection(TokioIo::new(tls), service).await {
                eprintln!("upstream: connection ended with an error: {error}");
            }
            if h2 {
                stats.connections_h2_open.fetch_sub(1, Ordering::Relaxed);
            }
        });
    }
}

/// The upstream's answer body: either fixed bytes or the slow event stream.
enum UpstreamBody {
    Fixed(Option<Bytes>),
    Sse(Box<SlowSse>),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Fixed(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Sse(sse) => sse.poll_next(cx),
        }
    }
}

async fn respond(
    request: Request<Incoming>,
    stats: Arc<UpstreamStats>,
) -> Result<Response<UpstreamBody>, Infallible> {
    let fixed = |status: StatusCode, text: String| {
        let mut response = Response::new(UpstreamBody::Fixed(Some(Bytes::from(text))));
        *response.status_mut() = status;
        response
            .headers_mut()
            .insert("content-type", "text/plain".parse().expect("header"));
        Ok(response)
    };
    if request.method() == hyper::Method::GET && request.uri().path() == "/stats" {
        return fixed(StatusCode::OK, stats.text());
    }
    if request.method() != hyper::Method::POST {
        return fixed(StatusCode::METHOD_NOT_ALLOWED, "POST only\n".into());
    }
    let query: HashMap<&str, &str> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .collect();
    let seconds: u32 = query
        .get("seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .min(3600);
    let interval_ms: u64 = query
        .get("interval_ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
        .clamp(1, 60_000);
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => {
            return fixed(
                StatusCode::BAD_REQUEST,
                format!("unreadable body: {error}\n"),
            );
        }
    };
    let include_usage = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.pointer("/stream_options/include_usage").cloned())
        == Some(serde_json::Value::Bool(true));
    let serial = stats.streams_started.fetch_add(1, Ordering::Relaxed);
    let active = stats.streams_active.fetch_add(1, Ordering::Relaxed) + 1;
    stats.streams_peak.fetch_max(active, Ordering::Relaxed);
    let sse = SlowSse {
        id: format!("chatcmpl-bench{serial:08}"),
        next: 0,
        contents: seconds,
        include_usage,
        interval: Duration::from_millis(interval_ms),
        started: Instant::now(),
        sleep: None,
        done: false,
        stats,
    };
    let mut response = Response::new(UpstreamBody::Sse(Box::new(sse)));
    let headers = response.headers_mut();
    headers.insert("content-type", "text/event-stream".parse().expect("header"));
    headers.insert("cache-control", "no-cache".parse().expect("header"));
    headers.insert("x-request-id", "streams-bench".parse().expect("header"));
    Ok(response)
}

/// One slow Chat Completions stream: chunk 0 (role) at once, chunk i (content) at i intervals,
/// then the finish chunk, the usage chunk if asked, and `[DONE]` right after the last content.
struct SlowSse {
    id: String,
    /// The next chunk to send: 0 is the role chunk, 1..=contents are contents.
    next: u32,
    contents: u32,
    include_usage: bool,
    interval: Duration,
    started: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    done: bool,
    stats: Arc<UpstreamStats>,
}

impl SlowSse {
    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.next > 0 {
            let deadline = self.started + self.interval * self.next;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            if sleep.deadline() != deadline {
                sleep.as_mut().reset(deadline);
            }
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        let usage_null = if self.include_usage {
            ",\"usage\":null"
        } else {
            ""
        };
        let delta = if self.next == 0 {
            "{\"role\":\"assistant\",\"content\":\"\"}".to_owned()
        } else {
            format!("{{\"content\":\" token{}\"}}", self.next)
        };
        let mut text = self.chunk(&format!(
            "[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":null}}]"
        ));
        text.insert_str(text.len() - 3, usage_null);
        if self.next == self.contents {
            let mut finish = self
                .chunk("[{\"index\":0,\"delta\":{},\"logprobs\":null,\"finish_reason\":\"stop\"}]");
            finish.insert_str(finish.len() - 3, usage_null);
            text.push_str(&finish);
            if self.include_usage {
                let mut usage = self.chunk("[]");
                let completion = self.contents;
                usage.insert_str(
                    usage.len() - 3,
                    &format!(
                        ",\"usage\":{{\"prompt_tokens\":12,\"completion_tokens\":{completion},\
                         \"total_tokens\":{}}}",
                        completion + 12
                    ),
                );
                text.push_str(&usage);
            }
            text.push_str("data: [DONE]\n\n");
            self.done = true;
        } else {
            self.next += 1;
        }
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(text)))))
    }

    /// `data: {...chunk with these choices...}\n\n` (ends with `}\n\n`, so members can be added
    /// three bytes from the end).
    fn chunk(&self, choices: &str) -> String {
        format!(
            "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\
             \"model\":\"gpt-4o-mini-2024-07-18\",\"system_fingerprint\":\"fp_bench\",\
             \"choices\":{choices}}}\n\n",
            self.id
        )
    }
}

impl Drop for SlowSse {
    fn drop(&mut self) {
        self.stats.streams_active.fetch_sub(1, Ordering::Relaxed);
        if self.done {
            self.stats.streams_finished.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// load
// ---------------------------------------------------------------------------------------------

/// Where the streams go.
struct Target {
    addr: SocketAddr,
    host_header: String,
    path_and_query: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    body: Bytes,
    expected_events: u32,
    timeout: Duration,
}

/// Progress shared by the stream tasks.
struct Progress {
    streams: usize,
    started: Instant,
    /// Opened (first body byte seen) or failed before that.
    settled: AtomicUsize,
    opened: AtomicUsize,
    /// Open and not yet ended.
    active: AtomicUsize,
    peak_active: AtomicUsize,
    ready_file: Option<String>,
    ready_at: Mutex<Option<(Duration, usize)>>,
    /// When every stream had settled: gaps that begin after it are plateau gaps.
    ready_instant: std::sync::OnceLock<Instant>,
}

impl Progress {
    /// Counts a stream as settled; the last one writes the ready file.
    fn settle(&self) {
        if self.settled.fetch_add(1, Ordering::AcqRel) + 1 != self.streams {
            return;
        }
        let elapsed = self.started.elapsed();
        let active = self.active.load(Ordering::Acquire);
        let opened = self.opened.load(Ordering::Acquire);
        *self.ready_at.lock().expect("lock") = Some((elapsed, active));
        let _ = self.ready_instant.set(self.started + elapsed);
        println!(
            "all {} streams settled after {:.2} s: {opened} opened, {active} open now",
            self.streams,
            elapsed.as_secs_f64()
        );
        if let Some(path) = &self.ready_file {
            let text = format!("opened={opened}\nactive={active}\n");
            if let Err(error) = std::fs::write(path, text) {
                eprintln!("cannot write {path}: {error}");
            }
        }
    }
}

/// What one stream measured.
#[derive(Default)]
struct StreamReport {
    ttfb: Option<Duration>,
    /// Longest wait between two data events.
    max_gap: Option<Duration>,
    /// Longest wait between two data events, counting only waits that began once every
    /// stream was open (the plateau, without the ramp's own load).
    max_plateau_gap: Option<Duration>,
    duration: Option<Duration>,
    failure: Option<String>,
}

async fn load(options: &Options) -> Result<bool, BoxError> {
    let url: hyper::Uri = options.required("url")?.parse()?;
    let streams: usize = options.number("streams", 100)?;
    let seconds: u32 = options.number("seconds", 10)?;
    let open_concurrency: usize = options.number("open-concurrency", 64)?;
    let rate: f64 = options.number("rate", 0.0)?;
    let timeout_secs: u64 = options.number("timeout", u64::from(seconds) + 120)?;
    let label = options.text("label").unwrap_or("load").to_owned();

    let https = match url.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("--url must be http:// or https://".into()),
    };
    let host = url.host().ok_or("--url has no host")?.to_owned();
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or("--url host does not resolve")?;
    let mut path_and_query = url.path().to_owned();
    match url.query() {
        Some(query) => path_and_query.push_str(&format!("?{query}&seconds={seconds}")),
        None => path_and_query.push_str(&format!("?seconds={seconds}")),
    }
    let tls = if https {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut roots = rustls::RootCertStore::empty();
        if let Some(path) = options.text("tls-ca") {
            for cert in CertificateDer::pem_file_iter(path)? {
                roots.add(cert?)?;
            }
        }
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let name = ServerName::try_from(host.clone())?;
        Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    } else {
        None
    };
    let target = Arc::new(Target {
        addr,
        host_header: format!("{host}:{port}"),
        path_and_query,
        tls,
        body: Bytes::from_static(
            br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Stream slowly, please."}]}"#,
        ),
        expected_events: seconds + 2,
        timeout: Duration::from_secs(timeout_secs),
    });
    let progress = Arc::new(Progress {
        streams,
        started: Instant::now(),
        settled: AtomicUsize::new(0),
        opened: AtomicUsize::new(0),
        active: AtomicUsize::new(0),
        peak_active: AtomicUsize::new(0),
        ready_file: options.text("ready-file").map(str::to_owned),
        ready_at: Mutex::new(None),
        ready_instant: std::sync::OnceLock::new(),
    });
    println!(
        "{label}: {streams} streams to {url} ({}), {seconds} s each, at most {open_concurrency} \
         opening at once{}",
        if https {
            "HTTPS, HTTP/1.1, one connection per stream"
        } else {
            "HTTP/1.1, one connection per stream"
        },
        if rate > 0.0 {
            format!(", {rate} started per second")
        } else {
            String::new()
        }
    );

    let opening = Arc::new(Semaphore::new(open_concurrency.max(1)));
    let mut tasks = Vec::with_capacity(streams);
    for index in 0..streams {
        if rate > 0.0 {
            let due = progress.started + Duration::from_secs_f64(index as f64 / rate);
            tokio::time::sleep_until(due).await;
        }
        let permit = Arc::clone(&opening).acquire_owned().await?;
        let target = Arc::clone(&target);
        let progress = Arc::clone(&progress);
        tasks.push(tokio::spawn(async move {
            let deadline = target.timeout;
            let mut report = StreamReport::default();
            let mut permit = Some(permit);
            let outcome = tokio::time::timeout(
                deadline,
                one_stream(&target, &progress, &mut report, &mut permit),
            )
            .await;
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error),
                Err(_) => Some(format!(
                    "timed out after {} s ({})",
                    deadline.as_secs(),
                    if report.ttfb.is_some() {
                        "after the first byte"
                    } else {
                        "before the first byte"
                    }
                )),
            };
            if report.ttfb.is_none() {
                // Never opened: it settles by failing.
                progress.settle();
            } else {
                progress.active.fetch_sub(1, Ordering::AcqRel);
            }
            drop(permit);
            report.failure = failure;
            report
        }));
    }
    let mut reports = Vec::with_capacity(streams);
    for task in tasks {
        reports.push(task.await?);
    }
    let total = progress.started.elapsed();
    Ok(summarize(&label, options, &progress, &reports, total))
}

async fn one_stream(
    target: &Target,
    progress: &Progress,
    report: &mut StreamReport,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<(), String> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    match &target.tls {
        None => exchange(tcp, target, progress, report, permit).await,
        Some((connector, name)) => {
            let tls = connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            exchange(tls, target, progress, report, permit).await
        }
    }
}

async fn exchange<T>(
    io: T,
    target: &Target,
    progress: &Progress,
    report: &mut StreamReport,
    permit: &mut Option<tokio::sync::OwnedSemaphorePermit>,
) -> Result<(), String>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::post(target.path_and_query.as_str())
        .header("host", target.host_header.as_str())
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .body(Full::new(target.body.clone()))
        .map_err(|e| format!("request: {e}"))?;
    let sent = Instant::now();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let mut body = response.into_body();
    if status != StatusCode::OK {
        let text = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&text[..text.len().min(300)]).into_owned();
        return Err(format!("status {}: {}", status.as_u16(), text.trim()));
    }
    let mut line = Vec::with_capacity(512);
    let mut events = 0u32;
    let mut done = false;
    let mut usage_seen = false;
    let mut last_event: Option<Instant> = None;
    let mut max_gap = Duration::ZERO;
    let mut max_plateau_gap: Option<Duration> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            format!(
                "body error after {events} events: {e}{}",
                e.source().map(|s| format!(": {s}")).unwrap_or_default()
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let now = Instant::now();
        if report.ttfb.is_none() {
            report.ttfb = Some(now - sent);
            *permit = None;
            progress.opened.fetch_add(1, Ordering::AcqRel);
            let active = progress.active.fetch_add(1, Ordering::AcqRel) + 1;
            progress.peak_active.fetch_max(active, Ordering::AcqRel);
            progress.settle();
        }
        for &byte in data.iter() {
            if byte != b'\n' {
                line.push(byte);
                continue;
            }
            if let Some(payload) = line.strip_prefix(b"data: ") {
                if done {
                    return Err("data after [DONE]".into());
                }
                if payload == b"[DONE]" {
                    done = true;
                } else {
                    events += 1;
                    if payload.windows(7).any(|w| w == b"\"usage\"") {
                        usage_seen = true;
                    }
                }
                if let Some(previous) = last_event {
                    max_gap = max_gap.max(now - previous);
                    if progress
                        .ready_instant
                        .get()
                        .is_some_and(|ready| previous >= *ready)
                    {
                        let longest = max_plateau_gap.get_or_insert(Duration::ZERO);
                        *longest = (*longest).max(now - previous);
                    }
                }
                last_event = Some(now);
            }
            line.clear();
        }
    }
    report.duration = Some(sent.elapsed());
    report.max_gap = Some(max_gap);
    report.max_plateau_gap = max_plateau_gap;
    if !done {
        return Err(format!("ended without [DONE] after {events} events"));
    }
    if events != target.expected_events {
        return Err(format!(
            "{events} data events, expected {}",
            target.expected_events
        ));
    }
    if usage_seen {
        return Err("a \"usage\" member reached the client, which did not ask for it".into());
    }
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn summarize(
    label: &str,
    options: &Options,
    progress: &Progress,
    reports: &[StreamReport],
    total: Duration,
) -> bool {
    let mut ttfb: Vec<Duration> = reports.iter().filter_map(|r| r.ttfb).collect();
    ttfb.sort();
    let mut gaps: Vec<Duration> = reports
        .iter()
        .filter(|r| r.failure.is_none())
        .filter_map(|r| r.max_gap)
        .collect();
    gaps.sort();
    let mut plateau_gaps: Vec<Duration> = reports
        .iter()
        .filter(|r| r.failure.is_none())
        .filter_map(|r| r.max_plateau_gap)
        .collect();
    plateau_gaps.sort();
    let mut durations: Vec<Duration> = reports
        .iter()
        .filter(|r| r.failure.is_none())
        .filter_map(|r| r.duration)
        .collect();
    durations.sort();
    let failed = reports.iter().filter(|r| r.failure.is_some()).count();
    let completed = reports.len() - failed;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for failure in reports.iter().filter_map(|r| r.failure.as_ref()) {
        // Group by the message without digits, keep the first wording.
        let key: String = failure.chars().filter(|c| !c.is_ascii_digit()).collect();
        *reasons.entry(key).or_default() += 1;
    }
    let (ready_secs, active_at_ready) = progress
        .ready_at
        .lock()
        .expect("lock")
        .map_or((f64::NAN, 0), |(d, a)| (d.as_secs_f64(), a));
    let mut lines = vec![
        format!("label={label}"),
        format!("streams={}", reports.len()),
        format!("completed={completed}"),
        format!("failed={failed}"),
        format!("opened={}", progress.opened.load(Ordering::Acquire)),
        format!("ramp_secs={ready_secs:.2}"),
        format!("active_at_ready={active_at_ready}"),
        format!(
            "peak_active={}",
            progress.peak_active.load(Ordering::Acquire)
        ),
        format!("ttfb_min_ms={}", ms(percentile(&ttfb, 0.0))),
        format!("ttfb_p50_ms={}", ms(percentile(&ttfb, 0.50))),
        format!("ttfb_p90_ms={}", ms(percentile(&ttfb, 0.90))),
        format!("ttfb_p99_ms={}", ms(percentile(&ttfb, 0.99))),
        format!("ttfb_max_ms={}", ms(percentile(&ttfb, 1.0))),
        format!("gap_p50_ms={}", ms(percentile(&gaps, 0.50))),
        format!("gap_p99_ms={}", ms(percentile(&gaps, 0.99))),
        format!("gap_max_ms={}", ms(percentile(&gaps, 1.0))),
        format!("plateau_gap_streams={}", plateau_gaps.len()),
        format!("plateau_gap_p50_ms={}", ms(percentile(&plateau_gaps, 0.50))),
        format!("plateau_gap_p99_ms={}", ms(percentile(&plateau_gaps, 0.99))),
        format!("plateau_gap_max_ms={}", ms(percentile(&plateau_gaps, 1.0))),
        format!(
            "duration_max_s={:.2}",
            percentile(&durations, 1.0).as_secs_f64()
        ),
        format!("total_s={:.2}", total.as_secs_f64()),
    ];
    for (index, (reason, count)) in reasons.iter().enumerate() {
        let example = reports
            .iter()
            .filter_map(|r| r.failure.as_ref())
            .find(|f| {
                f.chars()
                    .filter(|c| !c.is_ascii_digit())
                    .collect::<String>()
                    == *reason
            })
            .map(|f| f.replace('\n', " "))
            .unwrap_or_default();
        lines.push(format!("failure_{index}={count} x {example}"));
    }
    let text = lines.join("\n") + "\n";
    print!("{text}");
    if let Some(path) = options.text("out")
        && let Err(error) = std::fs::write(path, &text)
    {
        eprintln!("cannot write {path}: {error}");
    }
    failed == 0
}
