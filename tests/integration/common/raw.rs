//! Raw HTTP/1.1 and HTTP/2 clients, for what a well-behaved client library will not send:
//! bytes written by hand, frames built by hand, and answers read as text or frames until the
//! server closes. Every wait is bounded.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest any single wait of these clients may take.
const BOUND: Duration = Duration::from_secs(10);

// ---- Raw HTTP/1.1 ----

/// Sends raw bytes and reads until the server closes (or [`BOUND`] passes). The server may
/// answer, and close, before it has read everything: write errors are expected. The write side
/// stays open while reading, so the server never sees the client leave.
pub(crate) async fn raw(addr: SocketAddr, request: Vec<u8>) -> String {
    let socket = TcpStream::connect(addr).await.expect("connect");
    let (mut reader, mut writer) = socket.into_split();
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await;
        writer
    });
    let answer = read_until_closed(&mut reader, BOUND).await;
    writing.abort();
    answer
}

/// Everything read until EOF, an error or `limit`.
pub(crate) async fn read_until_closed(
    reader: &mut (impl AsyncRead + Unpin),
    limit: Duration,
) -> String {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, reader.read(&mut buffer)).await {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of a raw HTTP/1.1 answer (0 when it has no status line).
pub(crate) fn status_of(answer: &str) -> u16 {
    answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The value of header `name` in a raw answer's head, if there is one.
pub(crate) fn header_of<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The JSON body of a raw answer (de-chunked), or `Null`.
pub(crate) fn json_of(answer: &str) -> Value {
    let Some((_, body)) = answer.split_once("\r\n\r\n") else {
        return Value::Null;
    };
    let body = if header_of(answer, "transfer-encoding").is_some_and(|te| te.contains("chunked")) {
        let mut data = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if size == 0 || after.len() < size {
                break;
            }
            data.push_str(&after[..size]);
            rest = after[size..].trim_start_matches("\r\n");
        }
        data
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// A proxy refusal in the OpenAI error shape: status, code, a message with no raw control
/// characters.
pub(crate) fn assert_refusal(answer: &str, status: u16, code: &str, label: &str) {
    assert_eq!(status_of(answer), status, "{label}: {answer}");
    let body = json_of(answer);
    assert_eq!(body["error"]["code"], code, "{label}: {answer}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{label}: {answer}");
    assert!(
        !message.chars().any(char::is_control),
        "{label}: raw control characters in the message: {message:?}"
    );
}

// ---- HTTP/2 ----

/// An HTTP/2 (prior knowledge) client connection.
pub(crate) async fn h2_connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Sends one request over HTTP/2 and reads the answer: status and body.
pub(crate) async fn h2_send(
    client: &h2::client::SendRequest<Bytes>,
    request: http::Request<()>,
    body: Option<Bytes>,
) -> (u16, Bytes) {
    let mut client = tokio::time::timeout(BOUND, client.clone().ready())
        .await
        .expect("stream capacity in time")
        .expect("connection usable");
    let (response, mut stream) = client
        .send_request(request, body.is_none())
        .expect("request sent");
    if let Some(body) = body {
        stream.send_data(body, true).expect("body sent");
    }
    let response = tokio::time::timeout(BOUND, response)
        .await
        .expect("answered in time")
        .expect("answered");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = tokio::time::timeout(BOUND, body.data())
        .await
        .expect("body in time")
    {
        let chunk = chunk.expect("body chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    (status, bytes.into())
}

/// HTTP/2 frames written by hand, for what a well-behaved client library refuses to send.
pub(crate) mod frames {
    use tokio::io::{AsyncRead, AsyncReadExt};

    pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    pub(crate) const HEADERS: u8 = 0x1;
    pub(crate) const RST_STREAM: u8 = 0x3;
    pub(crate) const SETTINGS: u8 = 0x4;
    pub(crate) const PING: u8 = 0x6;
    pub(crate) const GOAWAY: u8 = 0x7;
    pub(crate) const CONTINUATION: u8 = 0x9;
    pub(crate) const END_STREAM: u8 = 0x1;
    pub(crate) const END_HEADERS: u8 = 0x4;
    pub(crate) const CANCEL: u32 = 0x8;
    pub(crate) const REFUSED_STREAM: u32 = 0x7;

    /// One frame: the 9-byte header (RFC 9113 §4.1), then `payload`.
    pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// An HPACK integer with a `prefix`-bit prefix (RFC 7541 §5.1).
    fn integer(out: &mut Vec<u8>, prefix: u32, mut value: usize) {
        let max = (1usize << prefix) - 1;
        if value < max {
            out.push(value as u8);
            return;
        }
        out.push(max as u8);
        value -= max;
        while value >= 128 {
            out.push((value % 128 + 128) as u8);
            value /= 128;
        }
        out.push(value as u8);
    }

    /// A literal header field without indexing, with a new name (RFC 7541 §6.2.2).
    pub(crate) fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
        out.push(0);
        integer(out, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        integer(out, 7, value.len());
        out.extend_from_slice(value);
    }

    /// A request's header block.
    pub(crate) fn request(method: &str, path: &str) -> Vec<u8> {
        let mut block = Vec::new();
        field(&mut block, ":method", method.as_bytes());
        field(&mut block, ":scheme", b"http");
        field(&mut block, ":path", path.as_bytes());
        field(&mut block, ":authority", b"localhost");
        block
    }

    /// A RST_STREAM frame for `stream` with error `code`.
    pub(crate) fn rst(stream: u32, code: u32) -> Vec<u8> {
        frame(RST_STREAM, 0, stream, &code.to_be_bytes())
    }

    /// A frame read from the server.
    #[derive(Debug)]
    pub(crate) struct Frame {
        pub(crate) kind: u8,
        pub(crate) flags: u8,
        pub(crate) stream: u32,
        pub(crate) payload: Vec<u8>,
    }

    impl Frame {
        /// The error code of a RST_STREAM or GOAWAY frame.
        pub(crate) fn code(&self) -> Option<u32> {
            let at = match self.kind {
                RST_STREAM => 0,
                GOAWAY => 4,
                _ => return None,
            };
            let bytes = self.payload.get(at..at + 4)?;
            Some(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
        }
    }

    /// The next frame, or `None` once the connection is closed.
    pub(crate) async fn read(reader: &mut (impl AsyncRead + Unpin)) -> Option<Frame> {
        let mut head = [0u8; 9];
        reader.read_exact(&mut head).await.ok()?;
        let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        reader.read_exact(&mut payload).await.ok()?;
        Some(Frame {
            kind: head[3],
            flags: head[4],
            stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
            payload,
        })
    }
}

/// What a raw HTTP/2 connection received until it closed or `limit` passed.
#[derive(Debug, Default)]
pub(crate) struct Received {
    pub(crate) ping_acks: usize,
    pub(crate) settings_acks: usize,
    /// Streams reset by the server, with their codes.
    pub(crate) resets: Vec<(u32, u32)>,
    /// Streams the server answered (a HEADERS frame).
    pub(crate) answered: Vec<u32>,
    pub(crate) goaway: Option<u32>,
    /// SETTINGS_MAX_CONCURRENT_STREAMS the server announced.
    pub(crate) max_streams: Option<u32>,
    /// The server closed the connection.
    pub(crate) closed: bool,
}

impl Received {
    fn note(&mut self, frame: &frames::Frame) {
        match frame.kind {
            frames::PING if frame.flags & 1 == 1 => self.ping_acks += 1,
            frames::SETTINGS if frame.flags & 1 == 1 => self.settings_acks += 1,
            frames::SETTINGS => {
                for setting in frame.payload.chunks_exact(6) {
                    if setting[..2] == [0, 3] {
                        self.max_streams = Some(u32::from_be_bytes([
                            setting[2], setting[3], setting[4], setting[5],
                        ]));
                    }
                }
            }
            frames::RST_STREAM => self.resets.push((frame.stream, frame.code().unwrap_or(0))),
            frames::HEADERS => self.answered.push(frame.stream),
            frames::GOAWAY => self.goaway = frame.code(),
            _ => {}
        }
    }
}

/// Reads frames until the server closes, `done` says enough, or `limit` passes.
pub(crate) async fn receive(
    reader: &mut (impl AsyncRead + Unpin),
    limit: Duration,
    done: impl Fn(&Received) -> bool,
) -> Received {
    let mut received = Received::default();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, frames::read(reader)).await {
            Ok(Some(frame)) => {
                received.note(&frame);
                if done(&received) {
                    break;
                }
            }
            Ok(None) => {
                received.closed = true;
                break;
            }
            Err(_) => break,
        }
    }
    received
}
