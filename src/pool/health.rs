//! The health of each target (an upstream and a deployment): resting after a 429 for as long
//! as Azure asks, ejected with a growing backoff after repeated failures, restored by the
//! first request that gets through once the wait is over.
//!
//! The waits are pure functions ([`rest_from_headers`], [`ejection`]) with unit tests; the
//! state is one small map per upstream behind a `std` mutex, held for a look-up and never
//! across an `.await`. A target that never failed has no entry, so the usual case is a look-up
//! in an empty map.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::HeaderMap;
use tokio::time::Instant;

/// Longest rest a 429 can ask for: a daily quota's "retry after 86400 seconds" still has the
/// target tried again every minute (docs/azure-facts.md §5, §7).
pub const MAX_REST: Duration = Duration::from_secs(60);
/// Rest after a 429 that says nothing about when to come back.
pub const DEFAULT_REST: Duration = Duration::from_secs(5);
/// Consecutive failures (5xx, refused or reset connections, timeouts) that eject a target.
pub const EJECT_AFTER: u32 = 2;
/// The first ejection; each further one doubles it, up to [`MAX_EJECTION`].
pub const FIRST_EJECTION: Duration = Duration::from_secs(1);
/// Longest ejection.
pub const MAX_EJECTION: Duration = Duration::from_secs(60);
/// Entries kept per upstream before those with nothing left to say are dropped (clients can
/// send any model name, and each is a target of its own).
const MAX_ENTRIES: usize = 256;

/// Why a target rests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// Azure answered 429 (the status, and the wait it asked for, in milliseconds).
    RateLimited {
        /// The wait Azure asked for, before the cap; `None` when it named none.
        asked_ms: Option<u64>,
    },
    /// Repeated failures: the last one, in a few words.
    Ejected {
        /// The last failure (`503`, `connection refused`, …).
        last: String,
        /// Consecutive failures so far.
        failures: u32,
    },
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::RateLimited { asked_ms: Some(ms) } => write!(f, "429, asked to wait {ms} ms"),
            Why::RateLimited { asked_ms: None } => f.write_str("429 without a retry-after"),
            Why::Ejected { last, failures } => {
                write!(
                    f,
                    "ejected after {failures} failures in a row (last: {last})"
                )
            }
        }
    }
}

/// One target's state; absent means healthy.
#[derive(Debug, Clone)]
struct Entry {
    /// Not tried before this instant.
    until: Option<Instant>,
    why: Option<Why>,
    /// Consecutive failures (reset by a success).
    failures: u32,
    /// Ejections in a row (reset by a success): the backoff's exponent.
    ejections: u32,
}

/// A target's state as `/status` and explanations show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resting {
    /// The deployment (or model name) of the target.
    pub deployment: String,
    /// Time left.
    pub left: Duration,
    /// Why.
    pub why: Why,
}

/// The health of one upstream's targets.
#[derive(Debug, Default)]
pub struct Health {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Health {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long `deployment` still rests; `None` when it may be tried now.
    pub fn resting(&self, deployment: &str, now: Instant) -> Option<Duration> {
        let entries = self.entries();
        if entries.is_empty() {
            return None;
        }
        let until = entries.get(deployment)?.until?;
        (until > now).then(|| until - now)
    }

    /// A 429: rest for `wait` (already capped).
    pub fn rate_limited(
        &self,
        deployment: &str,
        wait: Duration,
        asked_ms: Option<u64>,
        now: Instant,
    ) {
        let mut entries = self.entries();
        prune(&mut entries, now);
        let entry = entries.entry(deployment.to_owned()).or_insert(Entry {
            until: None,
            why: None,
            failures: 0,
            ejections: 0,
        });
        entry.until = Some(now + wait);
        entry.why = Some(Why::RateLimited { asked_ms });
    }

    /// A failure (5xx, connection, timeout); returns the ejection it caused, if any.
    pub fn failed(&self, deployment: &str, last: &str, now: Instant) -> Option<Duration> {
        let mut entries = self.entries();
        prune(&mut entries, now);
        let entry = entries.entry(deployment.to_owned()).or_insert(Entry {
            until: None,
            why: None,
            failures: 0,
            ejections: 0,
        });
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures < EJECT_AFTER {
            return None;
        }
        let wait = ejection(entry.ejections);
        entry.ejections = entry.ejections.saturating_add(1);
        entry.until = Some(now + wait);
        entry.why = Some(Why::Ejected {
            last: last.to_owned(),
            failures: entry.failures,
        });
        Some(wait)
    }

    /// An answer that was not a failure: the target is healthy again. Returns true when it had
    /// been resting or failing (it is restored).
    pub fn succeeded(&self, deployment: &str) -> bool {
        let mut entries = self.entries();
        !entries.is_empty() && entries.remove(deployment).is_some()
    }

    /// Every target that rests now, for `/status`.
    pub fn resting_now(&self, now: Instant) -> Vec<Resting> {
        let entries = self.entries();
        let mut list: Vec<Resting> = entries
            .iter()
            .filter_map(|(deployment, entry)| {
                let until = entry.until.filter(|until| *until > now)?;
                Some(Resting {
                    deployment: deployment.clone(),
                    left: until - now,
                    why: entry.why.clone()?,
                })
            })
            .collect();
        list.sort_by(|a, b| a.deployment.cmp(&b.deployment));
        list
    }

    /// Why `deployment` rests, if it does.
    pub fn why(&self, deployment: &str) -> Option<Why> {
        self.entries().get(deployment).and_then(|e| e.why.clone())
    }
}

/// Drops entries with nothing left to say once the map is large.
fn prune(entries: &mut HashMap<String, Entry>, now: Instant) {
    if entries.len() >= MAX_ENTRIES {
        entries.retain(|_, e| e.until.is_some_and(|until| until > now) || e.failures > 0);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
    }
}

/// The `n`-th ejection in a row (from 0): [`FIRST_EJECTION`] doubled `n` times, capped.
pub fn ejection(n: u32) -> Duration {
    FIRST_EJECTION
        .checked_mul(1u32.checked_shl(n.min(16)).unwrap_or(u32::MAX))
        .unwrap_or(MAX_EJECTION)
        .min(MAX_EJECTION)
}

/// The wait a 429 asks for, in the order OpenAI's and Azure's SDKs read it: `retry-after-ms`,
/// `x-ms-retry-after-ms`, `retry-after` (seconds), then the later of
/// `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` (`1s`, `6m0s`, `20ms`, or plain
/// seconds) (docs/azure-facts.md §4, §7). `None` when none is readable.
pub fn rest_from_headers(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let millis = |name: &str| {
        text(name)
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|ms| ms.is_finite() && *ms >= 0.0)
            .map(|ms| Duration::from_secs_f64(ms.min(1e9) / 1000.0))
    };
    millis("retry-after-ms")
        .or_else(|| millis("x-ms-retry-after-ms"))
        .or_else(|| {
            text("retry-after")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Duration::from_secs_f64(s.min(1e6)))
        })
        .or_else(|| {
            let requests = text("x-ratelimit-reset-requests").and_then(go_duration);
            let tokens = text("x-ratelimit-reset-tokens").and_then(go_duration);
            requests.max(tokens)
        })
}

/// A duration as OpenAI writes its reset headers (`1s`, `6m0s`, `1h2m3.5s`, `20ms`), or plain
/// seconds.
fn go_duration(text: &str) -> Option<Duration> {
    if let Ok(secs) = text.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e6)));
    }
    let mut total = 0.0_f64;
    let mut rest = text;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .filter(|at| *at > 0)?;
        let (number, after) = rest.split_at(split);
        let number: f64 = number.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        total += number * scale;
        rest = next;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total.min(1e6)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("value"));
        }
        map
    }

    /// The millisecond form wins, then Azure's, then seconds, then the reset headers.
    #[test]
    fn upstreams_rest_follows_the_headers() {
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            rest_from_headers(&headers(&[
                ("retry-after", "45"),
                ("retry-after-ms", "1500")
            ])),
            ms(1500)
        );
        assert_eq!(
            rest_from_headers(&headers(&[
                ("x-ms-retry-after-ms", "250"),
                ("retry-after", "3")
            ])),
            ms(250)
        );
        assert_eq!(
            rest_from_headers(&headers(&[("retry-after", "3")])),
            ms(3000)
        );
        assert_eq!(
            rest_from_headers(&headers(&[
                ("x-ratelimit-reset-requests", "1s"),
                ("x-ratelimit-reset-tokens", "6m0s")
            ])),
            ms(360_000)
        );
        assert_eq!(
            rest_from_headers(&headers(&[("x-ratelimit-reset-tokens", "20ms")])),
            ms(20)
        );
        assert_eq!(
            rest_from_headers(&headers(&[("retry-after", "soon")])),
            None
        );
        assert_eq!(
            rest_from_headers(&headers(&[("retry-after-ms", "-5")])),
            None
        );
        assert_eq!(rest_from_headers(&HeaderMap::new()), None);
    }

    /// Ejections double from one second and stop at a minute.
    #[test]
    fn upstreams_ejection_grows_and_is_capped() {
        assert_eq!(ejection(0), Duration::from_secs(1));
        assert_eq!(ejection(1), Duration::from_secs(2));
        assert_eq!(ejection(3), Duration::from_secs(8));
        assert_eq!(ejection(6), MAX_EJECTION);
        assert_eq!(ejection(u32::MAX), MAX_EJECTION);
    }

    /// One failure is forgiven, the second ejects, each further one ejects for longer, and a
    /// success restores the target.
    #[test]
    fn upstreams_health_ejects_and_restores() {
        let health = Health::default();
        let now = Instant::now();
        assert_eq!(health.failed("d", "503", now), None);
        assert_eq!(health.resting("d", now), None);
        assert_eq!(health.failed("d", "503", now), Some(Duration::from_secs(1)));
        assert_eq!(health.resting("d", now), Some(Duration::from_secs(1)));
        let later = now + Duration::from_secs(2);
        assert_eq!(health.resting("d", later), None);
        assert_eq!(
            health.failed("d", "503", later),
            Some(Duration::from_secs(2))
        );
        assert!(health.succeeded("d"));
        assert_eq!(health.resting("d", later), None);
        assert!(!health.succeeded("d"));
        health.rate_limited("e", Duration::from_millis(700), Some(700), now);
        let resting = health.resting_now(now);
        assert_eq!(resting.len(), 1);
        assert_eq!(
            resting[0].why,
            Why::RateLimited {
                asked_ms: Some(700)
            }
        );
    }
}
