//! The least a hyper-based proxy can cost: the floor under foundry-proxy in `benches/peers.sh`.
//!
//! `hyper_floor --listen ADDR --upstream URL [--client pooled|same-task] [--ca PEM]` forwards
//! every request to `URL` + the request's path, with a fixed `Authorization: Bearer` header, and
//! passes the answer back as it comes. Nothing else: no token, no usage, no log line, no limits,
//! no error translation. It prints `floor listening on http://ADDR` once it accepts.
//!
//! - `pooled` (default) is foundry-proxy's own hyper stack: `hyper_util`'s server (HTTP/1.1 and
//!   HTTP/2, upgrades, the header read timeout on hyper's timer) and `hyper_util`'s pooled client
//!   over `hyper-rustls` (HTTP/2 where the upstream offers it), on a single-threaded runtime with
//!   mimalloc. The difference between foundry-proxy's row and this one is what foundry-proxy's
//!   own work costs; the difference between this row and nginx's is hyper's and tokio's.
//! - `same-task` answers the question of issue 19: what would a connection-level client save,
//!   one that drives the upstream connection on the client connection's own task instead of
//!   `hyper_util`'s task per upstream connection? Each client connection keeps one plain
//!   HTTP/1.1 upstream connection (`hyper::client::conn::http1`), polled from inside the
//!   request's future and the answer's body, so an event read from the upstream goes to the
//!   client without waking another task. Plain HTTP upstreams only.

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HOST, HeaderValue};
use http::uri::{PathAndQuery, Uri};
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BEARER: &str = "Bearer floor-token";

/// Which outbound client the floor uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ClientKind {
    Pooled,
    SameTask,
}

#[derive(Debug)]
struct Args {
    listen: SocketAddr,
    upstream: Uri,
    client: ClientKind,
    ca: Option<PathBuf>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` runs every bench target with `--bench`: nothing to measure on its own.
    if args == ["--bench"] {
        return;
    }
    let args = match parse(&args) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("hyper_floor: {message}");
            eprintln!(
                "usage: hyper_floor --listen ADDR --upstream URL [--client pooled|same-task] [--ca PEM]"
            );
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    if let Err(message) = local.block_on(&runtime, serve(args)) {
        eprintln!("hyper_floor: {message}");
        std::process::exit(1);
    }
}

fn parse(args: &[String]) -> Result<Args, String> {
    let (mut listen, mut upstream, mut client, mut ca) = (None, None, ClientKind::Pooled, None);
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let value = iter.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value.parse().map_err(|e| format!("--listen: {e}"))?),
            "--upstream" => {
                let uri: Uri = value.parse().map_err(|e| format!("--upstream: {e}"))?;
                if uri.scheme().is_none() || uri.authority().is_none() {
                    return Err("--upstream must be an absolute http(s) URL".into());
                }
                upstream = Some(uri);
            }
            "--client" => {
                client = match value.as_str() {
                    "pooled" => ClientKind::Pooled,
                    "same-task" => ClientKind::SameTask,
                    other => return Err(format!("--client: pooled or same-task, not {other}")),
                }
            }
            "--ca" => ca = Some(PathBuf::from(value)),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let upstream = upstream.ok_or("--upstream is required")?;
    if client == ClientKind::SameTask && upstream.scheme_str() != Some("http") {
        return Err("--client same-task speaks plain HTTP/1.1 upstream only".into());
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        upstream,
        client,
        ca,
    })
}

/// The answer body both kinds return.
enum Answer {
    Passed(Incoming),
    Driven(Driven),
    Refused(Option<Bytes>),
}

impl Body for Answer {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Passed(body) => Pin::new(body).poll_frame(cx),
            Self::Driven(body) => Pin::new(body).poll_frame(cx),
            Self::Refused(text) => Poll::Ready(text.take().map(|text| Ok(Frame::data(text)))),
        }
    }
}

async fn serve(args: Args) -> Result<(), String> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    println!("floor listening on http://{local}");
    let pooled = match args.client {
        ClientKind::Pooled => {
            let tls =
                foundry_proxy::tls::client_config(args.ca.as_deref()).map_err(|e| e.to_string())?;
            Some(foundry_proxy::upstream::build_client(tls))
        }
        ClientKind::SameTask => None,
    };
    let upstream = args.upstream;
    let mut server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(15));
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // Out of file descriptors, most likely: wait rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let base = upstream.clone();
        match &pooled {
            Some(client) => {
                let client = client.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let uri = target(&base, request.uri());
                    let client = client.clone();
                    async move {
                        let (mut parts, body) = request.into_parts();
                        parts.uri = uri;
                        parts.headers.remove(HOST);
                        parts
                            .headers
                            .insert(AUTHORIZATION, HeaderValue::from_static(BEARER));
                        let body = axum::body::Body::new(body);
                        let answer = match client.request(Request::from_parts(parts, body)).await {
                            Ok(answer) => answer.map(Answer::Passed),
                            Err(_) => bad_gateway(),
                        };
                        Ok::<_, Infallible>(answer)
                    }
                });
                let connection = server
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                tokio::task::spawn_local(connection);
            }
            None => {
                let slot: Slot = Arc::new(Mutex::new(None));
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    same_task(base.clone(), Arc::clone(&slot), request)
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(15))
                    .serve_connection(TokioIo::new(stream), service);
                tokio::task::spawn_local(connection);
            }
        }
    }
}

/// `base` + the request's path and query.
fn target(base: &Uri, request: &Uri) -> Uri {
    let prefix = base.path().trim_end_matches('/');
    let rest = request.path_and_query().map_or("/", PathAndQuery::as_str);
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(
        format!("{prefix}{rest}")
            .parse()
            .expect("a path from two valid paths"),
    );
    Uri::from_parts(parts).expect("a URI from valid parts")
}

fn bad_gateway() -> Response<Answer> {
    let mut answer = Response::new(Answer::Refused(Some(Bytes::from_static(b"bad gateway\n"))));
    *answer.status_mut() = StatusCode::BAD_GATEWAY;
    answer
}

// ------------------------------------------------------------------ same-task client

/// One upstream HTTP/1.1 connection: the handle that sends and the connection itself, which
/// is polled only by whoever holds it (never spawned).
struct Upstream {
    send: http1::SendRequest<Incoming>,
    connection: http1::Connection<TokioIo<TcpStream>, Incoming>,
}

/// The client connection's idle upstream connection, between two of its requests.
type Slot = Arc<Mutex<Option<Upstream>>>;

impl Upstream {
    async fn open(base: &Uri) -> Option<Self> {
        let authority = base.authority()?;
        let stream = TcpStream::connect((authority.host(), authority.port_u16().unwrap_or(80)))
            .await
            .ok()?;
        let _ = stream.set_nodelay(true);
        let (send, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        Some(Self { send, connection })
    }

    /// Whether a request can be sent now (driving the connection while it gets ready).
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            if !self.drive(cx) {
                return Poll::Ready(false);
            }
            self.send.poll_ready(cx).map(|ready| ready.is_ok())
        })
        .await
    }

    /// Polls the connection (reading and writing whatever it can); false once it is finished.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        matches!(self.connection.poll_without_shutdown(cx), Poll::Pending)
    }
}

async fn same_task(
    base: Uri,
    slot: Slot,
    request: Request<Incoming>,
) -> Result<Response<Answer>, Infallible> {
    let idle = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    // An idle connection the upstream has closed meanwhile is replaced, once.
    let mut upstream = match idle {
        Some(mut upstream) if upstream.ready().await => upstream,
        _ => match Upstream::open(&base).await {
            Some(mut upstream) if upstream.ready().await => upstream,
            _ => return Ok(bad_gateway()),
        },
    };
    let (mut parts, body) = request.into_parts();
    parts.uri = target(&base, &parts.uri).path_and_query().map_or_else(
        || Uri::from_static("/"),
        |path| {
            Uri::from_maybe_shared(Bytes::copy_from_slice(path.as_str().as_bytes()))
                .expect("a path is a URI")
        },
    );
    if let Some(authority) = base.authority()
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(HOST, host);
    }
    parts
        .headers
        .insert(AUTHORIZATION, HeaderValue::from_static(BEARER));
    let mut sending = std::pin::pin!(upstream.send.send_request(Request::from_parts(parts, body)));
    let answer = poll_fn(|cx| {
        if let Poll::Ready(answer) = sending.as_mut().poll(cx) {
            return Poll::Ready(answer.ok());
        }
        if upstream.drive(cx) {
            Poll::Pending
        } else {
            // The connection ended; the request's future says how on its next poll.
            sending.as_mut().poll(cx).map(Result::ok)
        }
    })
    .await;
    let Some(answer) = answer else {
        return Ok(bad_gateway());
    };
    Ok(answer.map(|body| {
        Answer::Driven(Driven {
            body,
            upstream: Some(upstream),
            slot,
        })
    }))
}

/// An answer body that drives its upstream connection as it is read, and gives the connection
/// back to the client connection's slot once the answer has ended.
struct Driven {
    body: Incoming,
    upstream: Option<Upstream>,
    slot: Slot,
}

impl Drop for Driven {
    /// hyper stops reading a body once it says it has ended, without waiting for the last
    /// `None`: a finished answer gives its connection back here; an unfinished one (the client
    /// went away) closes it, which cancels the upstream request.
    fn drop(&mut self) {
        if let Some(upstream) = self.upstream.take()
            && self.body.is_end_stream()
        {
            *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(upstream);
        }
    }
}

impl Body for Driven {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(upstream) = &mut this.upstream
            && !upstream.drive(cx)
        {
            this.upstream = None;
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame
            && let Some(upstream) = this.upstream.take()
        {
            *this.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(upstream);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}
