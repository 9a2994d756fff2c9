//! Per-key limits: requests per minute and tokens per minute, over a sliding window of
//! sixty one-second buckets.
//!
//! A request is admitted while the last 60 seconds hold fewer requests (and fewer tokens)
//! than the key's limit, so a limit of N admits exactly N requests in any minute. Tokens are
//! only known once the upstream reports `usage`, so they are added after the answer; a key
//! over its token budget is refused until enough of the window has passed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::keys::Limits;

/// Window length.
const WINDOW_SECS: u64 = 60;

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
}

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Admitted (and counted).
    Allow,
    /// Refused: which limit, its value, and when to retry.
    Deny {
        /// The limit that was reached.
        exceeded: Exceeded,
        /// Its value per minute.
        limit: u64,
        /// When enough of the window will have passed.
        retry_after: Duration,
    },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// The absolute second this bucket holds (since the limiter's epoch).
    second: u64,
    requests: u64,
    tokens: u64,
}

/// One key's sliding window.
#[derive(Debug)]
struct Window {
    buckets: [Bucket; WINDOW_SECS as usize],
}

impl Window {
    fn new() -> Self {
        Self {
            buckets: [Bucket::default(); WINDOW_SECS as usize],
        }
    }

    /// The bucket for `second`, cleared if it held an older second.
    fn bucket(&mut self, second: u64) -> &mut Bucket {
        let slot = &mut self.buckets[(second % WINDOW_SECS) as usize];
        if slot.second != second {
            *slot = Bucket {
                second,
                requests: 0,
                tokens: 0,
            };
        }
        slot
    }

    /// Live buckets: those within the last 60 seconds of `now`.
    fn live(&self, now: u64) -> impl Iterator<Item = &Bucket> {
        self.buckets
            .iter()
            .filter(move |b| b.second + WINDOW_SECS > now && b.second <= now)
    }

    /// Seconds until the window holds less than `limit` of what `measure` counts.
    fn wait_until_below(&self, now: u64, limit: u64, measure: impl Fn(&Bucket) -> u64) -> u64 {
        let mut live: Vec<&Bucket> = self.live(now).filter(|b| measure(b) > 0).collect();
        live.sort_by_key(|b| b.second);
        let mut total: u64 = live.iter().map(|b| measure(b)).sum();
        for bucket in live {
            total -= measure(bucket);
            if total < limit {
                return bucket.second + WINDOW_SECS - now;
            }
        }
        1
    }
}

/// Limits state for every key, kept across key-file reloads (keyed by key name).
#[derive(Debug)]
pub struct Limiter {
    epoch: Instant,
    windows: Mutex<HashMap<String, Arc<Mutex<Window>>>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            windows: Mutex::new(HashMap::new()),
        }
    }
}

impl Limiter {
    /// An empty limiter.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn window(&self, key: &str) -> Arc<Mutex<Window>> {
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            windows
                .entry(key.to_owned())
                .or_insert_with(|| Arc::new(Mutex::new(Window::new()))),
        )
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    /// Admits and counts a request of `key`, or says which limit refuses it.
    pub fn admit(&self, key: &str, limits: Limits, now: Instant) -> Decision {
        if limits.requests_per_minute.is_none() && limits.tokens_per_minute.is_none() {
            return Decision::Allow;
        }
        let window = self.window(key);
        let mut window = window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let second = self.second(now);
        if let Some(limit) = limits.requests_per_minute.map(u64::from) {
            let used: u64 = window.live(second).map(|b| b.requests).sum();
            if used >= limit {
                let wait = window.wait_until_below(second, limit, |b| b.requests);
                return Decision::Deny {
                    exceeded: Exceeded::Requests,
                    limit,
                    retry_after: Duration::from_secs(wait),
                };
            }
        }
        if let Some(limit) = limits.tokens_per_minute {
            let used: u64 = window.live(second).map(|b| b.tokens).sum();
            if used >= limit {
                let wait = window.wait_until_below(second, limit, |b| b.tokens);
                return Decision::Deny {
                    exceeded: Exceeded::Tokens,
                    limit,
                    retry_after: Duration::from_secs(wait),
                };
            }
        }
        window.bucket(second).requests += 1;
        Decision::Allow
    }

    /// Counts a request of `key` that shared state (Redis) admitted, so that this replica's
    /// own window is warm if it has to fall back to it.
    pub fn count(&self, key: &str, limits: Limits, now: Instant) {
        if limits.requests_per_minute.is_none() {
            return;
        }
        self.with_bucket(key, now, |bucket| bucket.requests += 1);
    }

    /// What `key` used in the last 60 seconds: (requests, tokens). A key never seen has used
    /// nothing (and gets no window).
    pub fn used(&self, key: &str, now: Instant) -> (u64, u64) {
        let window = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .cloned();
        let Some(window) = window else {
            return (0, 0);
        };
        let window = window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let second = self.second(now);
        window
            .live(second)
            .fold((0, 0), |(r, t), b| (r + b.requests, t + b.tokens))
    }

    /// Adds the tokens an answer used to `key`'s window.
    pub fn add_tokens(&self, key: &str, tokens: u64, now: Instant) {
        if tokens == 0 {
            return;
        }
        self.with_bucket(key, now, |bucket| bucket.tokens += tokens);
    }

    /// Runs `change` on the bucket of `key`'s window for the second of `now`.
    fn with_bucket(&self, key: &str, now: Instant, change: impl FnOnce(&mut Bucket)) {
        let window = self.window(key);
        let mut window = window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(window.bucket(self.second(now)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpm(n: u32) -> Limits {
        Limits {
            requests_per_minute: Some(n),
            tokens_per_minute: None,
        }
    }

    /// A limit of N admits exactly N requests in a minute, and the N+1th learns when to retry.
    #[test]
    fn requests_exactly_at_the_boundary() {
        let limiter = Limiter::new();
        let start = limiter.epoch;
        for i in 0..5 {
            assert_eq!(
                limiter.admit("alice", rpm(5), start + Duration::from_millis(i * 100)),
                Decision::Allow,
                "request {i}"
            );
        }
        match limiter.admit("alice", rpm(5), start + Duration::from_secs(1)) {
            Decision::Deny {
                exceeded: Exceeded::Requests,
                limit: 5,
                retry_after,
            } => assert_eq!(retry_after, Duration::from_secs(59)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            limiter.admit("bob", rpm(5), start),
            Decision::Allow,
            "keys are independent"
        );
        assert!(matches!(
            limiter.admit("alice", rpm(5), start + Duration::from_secs(59)),
            Decision::Deny { .. }
        ));
        assert_eq!(
            limiter.admit("alice", rpm(5), start + Duration::from_secs(60)),
            Decision::Allow,
            "the window has slid"
        );
    }

    /// Spread requests free their slots one by one as they leave the window.
    #[test]
    fn sliding_not_fixed() {
        let limiter = Limiter::new();
        let start = limiter.epoch;
        for second in [0, 20, 40] {
            assert_eq!(
                limiter.admit("k", rpm(3), start + Duration::from_secs(second)),
                Decision::Allow
            );
        }
        match limiter.admit("k", rpm(3), start + Duration::from_secs(50)) {
            Decision::Deny { retry_after, .. } => assert_eq!(retry_after, Duration::from_secs(10)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            limiter.admit("k", rpm(3), start + Duration::from_secs(60)),
            Decision::Allow
        );
        assert!(matches!(
            limiter.admit("k", rpm(3), start + Duration::from_secs(61)),
            Decision::Deny { .. }
        ));
    }

    /// Tokens count once reported; a key at its budget waits until the tokens age out.
    #[test]
    fn tokens_per_minute() {
        let limiter = Limiter::new();
        let start = limiter.epoch;
        let tpm = Limits {
            requests_per_minute: None,
            tokens_per_minute: Some(1000),
        };
        assert_eq!(limiter.admit("k", tpm, start), Decision::Allow);
        limiter.add_tokens("k", 600, start);
        assert_eq!(
            limiter.admit("k", tpm, start + Duration::from_secs(10)),
            Decision::Allow,
            "600 < 1000"
        );
        limiter.add_tokens("k", 400, start + Duration::from_secs(10));
        match limiter.admit("k", tpm, start + Duration::from_secs(20)) {
            Decision::Deny {
                exceeded: Exceeded::Tokens,
                limit: 1000,
                retry_after,
            } => assert_eq!(retry_after, Duration::from_secs(40)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            limiter.admit("k", tpm, start + Duration::from_secs(60)),
            Decision::Allow,
            "the first 600 aged out"
        );
    }

    /// Unlimited keys are never counted or refused.
    #[test]
    fn unlimited() {
        let limiter = Limiter::new();
        for _ in 0..10_000 {
            assert_eq!(
                limiter.admit("free", Limits::default(), limiter.epoch),
                Decision::Allow
            );
        }
        assert!(limiter.windows.lock().expect("lock").is_empty());
    }
}
