//! The live keys: a [`KeyRing`] in an `ArcSwap`, and the watcher that reloads it.
//!
//! The watcher polls the file's metadata (modification and change times, length, device,
//! inode) rather than using inotify: Kubernetes ConfigMap and Secret volumes replace files by
//! swapping a symlink, editors replace files by renaming, and polling sees both on every
//! filesystem. `std::fs::metadata` follows symlinks, so a swapped link shows as a new inode.
//! A changed file is re-read; a valid one replaces the keys, a broken or missing one leaves
//! the previous keys in place and says why in a warning (once per change). An empty file
//! counts as broken: a writer that truncates before writing would otherwise lock everyone
//! out for a poll interval.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::{ArcSwap, Guard};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, warn};

use super::{KeyFileError, KeyRing};

/// The shortest polling interval the watcher accepts.
const MIN_POLL: Duration = Duration::from_millis(10);

/// The keys file's current keys, shared by the request path (readers) and the watcher
/// (the only writer).
pub struct KeyStore {
    /// The keys file, as configured (possibly a symlink).
    path: PathBuf,
    /// The current keys. Request handlers `load()` lock-free; only [`KeyStore::poll`] stores.
    ring: ArcSwap<KeyRing>,
    /// The file's metadata when it was last read; `None` once its absence has been reported.
    /// Only [`KeyStore::poll`] touches it (the lock just makes `poll(&self)` sound).
    seen: Mutex<Option<Stamp>>,
    /// Changes that replaced the keys.
    reloads: AtomicU64,
    /// Changes that kept the previous keys (broken, unreadable or missing file).
    rejected: AtomicU64,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("path", &self.path)
            .field("keys", &self.ring.load().len())
            .field("reloads", &self.reloads())
            .field("rejected_reloads", &self.rejected_reloads())
            .finish()
    }
}

/// What one look at the file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    /// Nothing changed (or the file is still missing, already reported).
    Unchanged,
    /// The file changed and its keys replaced the previous ones.
    Reloaded {
        /// How many keys it holds now.
        keys: usize,
    },
    /// The file changed but does not parse; the previous keys stay.
    Rejected,
    /// The file is gone or unreadable; the previous keys stay.
    Missing,
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    #[cfg(unix)]
    device: u64,
    #[cfg(unix)]
    inode: u64,
    #[cfg(unix)]
    changed: (i64, i64),
}

fn stamp(path: &Path) -> io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    #[cfg(unix)]
    use std::os::unix::fs::MetadataExt;
    Ok(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        #[cfg(unix)]
        device: meta.dev(),
        #[cfg(unix)]
        inode: meta.ino(),
        #[cfg(unix)]
        changed: (meta.ctime(), meta.ctime_nsec()),
    })
}

impl KeyStore {
    /// Loads the keys file. It must exist and parse: a broken file at start is a
    /// configuration error, not something to run without.
    pub fn open(path: PathBuf) -> Result<Arc<KeyStore>, KeyFileError> {
        let before = stamp(&path).ok();
        let ring = KeyRing::load(&path)?;
        Ok(Arc::new(KeyStore {
            path,
            ring: ArcSwap::from_pointee(ring),
            seen: Mutex::new(before),
            reloads: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        }))
    }

    /// The current keys: a lock-free load for the request path. Do not hold it across
    /// `.await`; clone the `Arc` (`Guard::into_inner`) if it must live longer.
    pub fn current(&self) -> Guard<Arc<KeyRing>> {
        self.ring.load()
    }

    /// The keys file, as configured.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many changes replaced the keys since [`KeyStore::open`].
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// How many changes kept the previous keys (broken, unreadable or missing file).
    pub fn rejected_reloads(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Looks at the file once and reloads it if it changed. Blocking filesystem calls:
    /// the watcher runs this on the blocking pool.
    pub fn poll(&self) -> Poll {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = match stamp(&self.path) {
            Ok(now) => now,
            Err(e) => {
                if seen.take().is_none() {
                    return Poll::Unchanged;
                }
                self.rejected.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "keys file unreadable; keeping the previous keys");
                return Poll::Missing;
            }
        };
        if *seen == Some(now) {
            return Poll::Unchanged;
        }
        // Remember the version stamped before reading: a write racing with the read
        // changes the stamp again, so the next poll reads the file once more.
        *seen = Some(now);
        match self.read() {
            Ok(ring) => {
                let keys = ring.len();
                let had_admin = self.ring.load().has_admin();
                let has_admin = ring.has_admin();
                self.ring.store(Arc::new(ring));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                info!(keys, "keys reloaded");
                if had_admin && !has_admin {
                    warn!("{}", super::cli::NO_ADMIN);
                }
                Poll::Reloaded { keys }
            }
            Err(e) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, "keys file rejected; keeping the previous keys");
                Poll::Rejected
            }
        }
    }

    /// Reads the changed file. An empty file is refused: it is far more likely a write
    /// caught between truncating and writing than a wish to refuse every client (revoking
    /// every key leaves the header comment, which is not empty).
    fn read(&self) -> Result<KeyRing, KeyFileError> {
        let text = super::read_file(&self.path)?;
        if text.trim().is_empty() {
            return Err(KeyFileError::new(
                "the file is empty (perhaps caught mid-write)",
                "write it whole (to a temporary file, then rename), or leave a comment in it to refuse every key",
            )
            .in_file(&self.path));
        }
        KeyRing::parse(&text).map_err(|e| e.in_file(&self.path))
    }

    /// Polls the file every `every` (1 s in production; at least 10 ms) until `shutdown`
    /// is cancelled. The task carries a `keys_watcher` span naming the file.
    pub fn spawn_watcher(
        self: &Arc<Self>,
        every: Duration,
        shutdown: CancellationToken,
    ) -> JoinHandle<()> {
        let store = Arc::clone(self);
        let span = tracing::info_span!("keys_watcher", file = %self.path.display());
        tokio::spawn(
            async move {
                let mut ticks = tokio::time::interval(every.max(MIN_POLL));
                ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
                ticks.tick().await; // the first tick is immediate; the file was just read
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        _ = ticks.tick() => {}
                    }
                    let store = Arc::clone(&store);
                    // Filesystem calls can block (network filesystems): off the async workers.
                    if let Err(e) = tokio::task::spawn_blocking(move || store.poll()).await {
                        warn!(error = %e, "keys file check failed");
                    }
                }
                debug!("keys watcher stopped");
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Limits, add_key};

    fn temp_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!(
            "foundry-proxy-keys-watch-{tag}-{}.toml",
            std::process::id()
        ))
    }

    /// One poll sees each kind of change once: a new key, a broken file, a missing file,
    /// and nothing at all.
    #[test]
    fn poll_outcomes() {
        let path = temp_path("poll");
        let _ = std::fs::remove_file(&path);
        let alice = add_key(&path, "alice", Limits::default()).expect("add");
        let store = KeyStore::open(path.clone()).expect("open");
        assert_eq!(store.poll(), Poll::Unchanged);

        let bob = add_key(&path, "bob", Limits::default()).expect("add");
        assert_eq!(store.poll(), Poll::Reloaded { keys: 2 });
        assert!(store.current().authenticate(&bob).is_some());

        std::fs::write(&path, "").expect("truncate");
        assert_eq!(store.poll(), Poll::Rejected, "an empty file keeps the keys");
        std::fs::write(&path, "[[key]\nname = ").expect("write");
        assert_eq!(store.poll(), Poll::Rejected);
        assert_eq!(
            store.poll(),
            Poll::Unchanged,
            "a rejection is reported once"
        );
        assert!(store.current().authenticate(&alice).is_some());

        std::fs::remove_file(&path).expect("remove");
        assert_eq!(store.poll(), Poll::Missing);
        assert_eq!(store.poll(), Poll::Unchanged, "absence is reported once");
        assert!(store.current().authenticate(&alice).is_some());
        assert_eq!((store.reloads(), store.rejected_reloads()), (1, 3));

        let carol = add_key(&path, "carol", Limits::default()).expect("add");
        assert_eq!(store.poll(), Poll::Reloaded { keys: 1 });
        assert!(store.current().authenticate(&carol).is_some());
        assert!(store.current().authenticate(&alice).is_none());
        let _ = std::fs::remove_file(&path);
    }

    /// A broken file at start is an error, not an empty key ring.
    #[test]
    fn open_requires_a_valid_file() {
        let path = temp_path("open");
        std::fs::write(&path, "[[key]]\nname = \"a\"\n").expect("write");
        let err = KeyStore::open(path.clone()).expect_err("missing sha256");
        assert!(err.to_string().contains("sha256"), "{err}");
        let _ = std::fs::remove_file(&path);
        assert!(KeyStore::open(path).is_err());
    }
}
