//! This test process's own logs at trace level, captured so a test can check that nothing
//! secret (client secret, certificate key, assertion, access token, access key) is written.
//! nextest runs each test in its own process (and `scripts/test` runs these tests so without
//! nextest too), so each test sees only its own lines.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

/// The captured lines of this process.
#[derive(Debug, Clone)]
pub(crate) struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Everything logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    /// Fails the test if any of `secrets` (or a long enough piece of one) was logged. Pieces
    /// catch a secret cut into a log line or shown as a prefix.
    pub(crate) fn assert_free_of(&self, secrets: &[&str]) {
        let text = self.text();
        assert!(
            !text.is_empty(),
            "nothing was logged: is the capture installed before the proxy starts?"
        );
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            let piece = &secret[..secret.len().min(16)];
            assert!(
                !(text.contains(secret) || (secret.len() >= 16 && text.contains(piece))),
                "a secret (starting {:?}) appears in the trace logs",
                &secret[..secret.len().min(4)]
            );
        }
    }
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per process) a global subscriber that records every event at trace level,
/// and returns the capture. Call it before starting the proxy.
pub(crate) fn capture() -> CapturedLogs {
    static CAPTURE: OnceLock<CapturedLogs> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            let sink = Sink(Arc::clone(&buffer));
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .with_writer(move || sink.clone())
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other global subscriber in this test process");
            CapturedLogs(buffer)
        })
        .clone()
}
