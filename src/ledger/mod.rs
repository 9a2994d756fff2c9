//! The usage ledger (`FOUNDRY_PROXY_USAGE_DB=PATH`): usage per key, model and UTC day —
//! requests, errors, prompt, completion and cached tokens, and cost when prices are
//! configured — kept in a SQLite file so it survives restarts.
//!
//! The request path only sends events down a channel ([`Ledger::request`], [`Ledger::usage`]);
//! a writer thread (SQLite is blocking) adds them up in memory and writes them in one
//! transaction about every second ([`FLUSH_EVERY`]), so a crash loses at most that much, and
//! writes whatever is left when the proxy stops ([`Ledger::close`]). The file is in WAL mode,
//! so `foundry-proxy usage --db` reads it while the proxy writes.
//!
//! - [`store`]: schema, upserts and queries.
//! - [`report`]: `foundry-proxy usage --db` (table, JSON, CSV).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc::{self, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing::{info, warn};

pub mod report;
pub mod store;

use store::{Counts, KeySpend, RowKey};

/// How often the writer commits what it has gathered.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Longest model name recorded as it is; longer ones (clients choose them) are `other`.
const MAX_MODEL_LEN: usize = 64;

/// One thing to add to the ledger.
#[derive(Debug)]
struct Event {
    row: RowKey,
    counts: Counts,
}

/// The writer's handle, shared by the request path. Sending never blocks.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    /// `None` once closed: later events are dropped.
    tx: Mutex<Option<Sender<Event>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// The ledger could not be opened at start.
#[derive(Debug, thiserror::Error)]
#[error(
    "FOUNDRY_PROXY_USAGE_DB: {path}: {problem} — check the path and that its directory is writable"
)]
pub struct OpenError {
    path: String,
    problem: String,
}

impl Ledger {
    /// Opens (or creates) the file and starts the writer thread. Returns the ledger and each
    /// key's spend this month (to restore budgets), as of `now` (Unix seconds).
    pub fn open(path: &Path, now: i64) -> Result<(Ledger, HashMap<String, KeySpend>), OpenError> {
        let error = |problem: String| OpenError {
            path: path.display().to_string(),
            problem,
        };
        let mut conn = store::open_for_writing(path).map_err(error)?;
        let today = day(now);
        let month_start = format!("{}-01", &today[..7]);
        let spend =
            store::spend_by_key(&conn, &today, &month_start).map_err(|e| error(e.to_string()))?;
        let (tx, rx) = mpsc::channel::<Event>();
        let writer = std::thread::Builder::new()
            .name("usage-ledger".to_owned())
            .spawn(move || write_loop(&mut conn, &rx))
            .map_err(|e| error(e.to_string()))?;
        info!(file = %path.display(), keys = spend.len(), "usage ledger open");
        Ok((
            Ledger {
                path: path.to_path_buf(),
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(writer)),
            },
            spend,
        ))
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, key: &str, model: &str, counts: Counts) {
        let model = model_label(model);
        let event = Event {
            row: RowKey {
                key: if key.is_empty() { "anonymous" } else { key }.to_owned(),
                model: model.to_owned(),
                day: day(crate::clock::unix_now_signed()),
            },
            counts,
        };
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(tx) = tx.as_ref() {
            let _ = tx.send(event);
        }
    }

    /// One answered request of `key` with `model` (empty: none), an error when `status` is 400
    /// or more.
    pub fn request(&self, key: &str, model: &str, status: u16) {
        self.send(
            key,
            model,
            Counts {
                requests: 1,
                errors: u64::from(status >= 400),
                ..Counts::default()
            },
        );
    }

    /// The tokens an answer used, and their cost when the model has a price.
    pub fn usage(&self, key: &str, model: &str, usage: &crate::usage::Usage, cost: Option<f64>) {
        self.send(
            key,
            model,
            Counts {
                prompt_tokens: usage.prompt_tokens,
                completion_tokens: usage.completion_tokens,
                cached_tokens: usage.cached_tokens,
                cost_usd: cost.unwrap_or(0.0),
                ..Counts::default()
            },
        );
    }

    /// Stops taking events, writes what is pending and waits for the writer to finish.
    pub fn close(&self) {
        drop(
            self.tx
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            writer.thread().unpark();
            let _ = writer.join();
        }
    }
}

/// How a model is recorded: `none` when the request named none, `other` when the name is
/// longer than any deployment's (clients choose it), else as it is.
pub fn model_label(model: &str) -> &str {
    if model.is_empty() {
        "none"
    } else if model.len() > MAX_MODEL_LEN {
        "other"
    } else {
        model
    }
}

/// The UTC day of `now` (Unix seconds), `YYYY-MM-DD`.
pub fn day(now: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(now)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .date()
        .to_string()
}

/// Gathers events and commits them every [`FLUSH_EVERY`] until the channel closes, then
/// commits the rest. A failed commit keeps the batch for the next one and is logged once.
///
/// The thread sleeps between commits and takes what has queued when it wakes: a sender never
/// has to wake it (a blocked receiver would cost a futex wake-up per event on the request
/// path). [`Ledger::close`] unparks it to finish early.
fn write_loop(conn: &mut rusqlite::Connection, rx: &mpsc::Receiver<Event>) {
    let mut pending: HashMap<RowKey, Counts> = HashMap::new();
    let mut failing = false;
    loop {
        std::thread::park_timeout(FLUSH_EVERY);
        let closed = loop {
            match rx.try_recv() {
                Ok(event) => pending.entry(event.row).or_default().add(&event.counts),
                Err(TryRecvError::Empty) => break false,
                Err(TryRecvError::Disconnected) => break true,
            }
        };
        if !pending.is_empty() {
            match store::write_batch(conn, &pending) {
                Ok(()) => {
                    pending.clear();
                    if std::mem::take(&mut failing) {
                        info!("usage ledger writes again");
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    warn!(error = %e, "usage ledger write failed; keeping the rows to retry");
                }
                Err(_) => {}
            }
        }
        if closed {
            return;
        }
    }
}
