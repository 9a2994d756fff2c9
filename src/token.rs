//! The token cell and its refresher.
//!
//! [`TokenCell`] holds the current [`TokenState`] in an `ArcSwap`: request handlers only
//! `load()` it (lock-free) and only the refresher task stores into it. The refresher renews
//! at half the token's lifetime, backs off with jitter on failure while the old token stays
//! in use, and serves at most one forced refresh per cooldown however many requests ask.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use rand::Rng;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::claims::TokenClaims;
use crate::credential::{AccessToken, Credential, CredentialError};

/// Timing rules of the refresher. The defaults are the product's policy; tests shorten them.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// Shortest wait between two scheduled refreshes, whatever `expires_in` says.
    pub min_refresh_delay: Duration,
    /// First retry delay after a failure; doubles with each failure.
    pub backoff_base: Duration,
    /// Longest retry delay after failures.
    pub backoff_cap: Duration,
    /// A forced refresh (after a 401) happens at most once per this interval.
    pub forced_refresh_cooldown: Duration,
    /// How long a request waits for a forced refresh before giving up on it.
    pub forced_refresh_wait: Duration,
    /// How long a request waits for the very first token at start-up.
    pub first_token_wait: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            min_refresh_delay: Duration::from_secs(1),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
            forced_refresh_cooldown: Duration::from_secs(5),
            forced_refresh_wait: Duration::from_secs(25),
            first_token_wait: Duration::from_secs(25),
        }
    }
}

/// When to renew a token of `lifetime`: at half of it, never sooner than the policy's minimum.
pub fn refresh_delay(lifetime: Duration, policy: &TokenPolicy) -> Duration {
    (lifetime / 2).max(policy.min_refresh_delay)
}

/// How long to wait after the `failures`-th consecutive failure: exponential, capped,
/// with jitter in [half, full] so a fleet of proxies does not retry in lockstep.
pub fn backoff_delay(failures: u32, policy: &TokenPolicy, rng: &mut impl Rng) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    let full = policy
        .backoff_base
        .saturating_mul(1 << exponent)
        .min(policy.backoff_cap);
    let jitter = rng.random_range(0.5..=1.0);
    full.mul_f64(jitter).max(Duration::from_millis(10))
}

/// The longest lifetime a token is taken to have, whatever its `expires_in` says.
const MAX_LIFETIME: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// A token the proxy holds, with its `Authorization` header value prebuilt.
#[derive(Debug)]
pub struct HeldToken {
    /// `Bearer …`, marked sensitive so it is never printed by `Debug`.
    pub header: HeaderValue,
    /// When it expires (monotonic clock).
    pub expires_at: Instant,
    /// When it expires, seconds since the epoch (for display).
    pub expires_at_unix: i64,
    /// The lifetime Entra gave it.
    pub lifetime: Duration,
    /// Its claims, read once when stored.
    pub claims: Option<TokenClaims>,
    /// Increases with every token stored; lets a request tell whether a newer token exists.
    pub serial: u64,
}

impl HeldToken {
    /// True while the token can still be sent.
    pub fn is_valid(&self, now: Instant) -> bool {
        now < self.expires_at
    }

    fn new(token: AccessToken, serial: u64, obtained: Instant) -> Result<Self, CredentialError> {
        // A broken or hostile endpoint may grant any `expires_in` (`1e300` reads as
        // `u64::MAX` seconds): past a year it would overflow the clock arithmetic here and in
        // the refresher, killing it, so it counts as a year.
        let lifetime = token.expires_in.min(MAX_LIFETIME);
        let claims = TokenClaims::decode(token.token.expose());
        let mut header = HeaderValue::try_from(format!("Bearer {}", token.token.expose()))
            .map_err(|_| {
                CredentialError::Unavailable(
                    "the access token has characters not allowed in a header".into(),
                )
            })?;
        header.set_sensitive(true);
        let now_unix = crate::clock::unix_now();
        Ok(Self {
            header,
            expires_at: obtained + lifetime,
            expires_at_unix: i64::try_from(now_unix.saturating_add(lifetime.as_secs()))
                .unwrap_or(i64::MAX),
            lifetime,
            claims,
            serial,
        })
    }
}

/// The latest failed refresh.
#[derive(Debug)]
pub struct RefreshFailure {
    /// What went wrong.
    pub error: CredentialError,
    /// Consecutive failures so far.
    pub failures: u32,
    /// When the next attempt is due.
    pub next_attempt: Instant,
}

/// Everything the refresher publishes; replaced whole on every attempt.
#[derive(Debug, Default)]
pub struct TokenState {
    /// The newest token obtained (possibly expired).
    pub token: Option<Arc<HeldToken>>,
    /// The last failure, cleared by the next success.
    pub failure: Option<Arc<RefreshFailure>>,
    /// Attempts finished so far.
    pub attempts: u64,
    /// When the last attempt finished.
    pub last_attempt: Option<Instant>,
    /// When the next scheduled attempt is due.
    pub next_refresh: Option<Instant>,
}

impl TokenState {
    /// Why this state has no valid token to send (meaningful when it has none).
    pub fn unusable(&self) -> Unusable {
        match (&self.failure, self.attempts) {
            (Some(failure), _) => Unusable::Failed(Arc::clone(failure)),
            (None, 0) => Unusable::Starting,
            (None, _) => Unusable::Expired,
        }
    }
}

/// Why no token can be sent right now.
#[derive(Debug, Clone)]
pub enum Unusable {
    /// No attempt has finished yet (start-up took longer than the wait).
    Starting,
    /// The last attempt succeeded but its token has already expired (absurdly short lifetime).
    Expired,
    /// The refresher is failing and no valid token is left.
    Failed(Arc<RefreshFailure>),
}

/// The shared token cell. Handlers read; the refresher writes.
pub struct TokenCell {
    state: ArcSwap<TokenState>,
    /// Wakes the refresher for a forced refresh; one stored permit coalesces many callers.
    kick: Notify,
    /// Publishes the attempt count so waiters learn when an attempt has finished.
    attempts: watch::Sender<u64>,
    policy: TokenPolicy,
    kind: &'static str,
    /// Told the outcome of every attempt (metrics); set once at start.
    observer: std::sync::OnceLock<Box<dyn Fn(bool) + Send + Sync>>,
}

impl std::fmt::Debug for TokenCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCell")
            .field("kind", &self.kind)
            .field("state", &self.state.load())
            .finish_non_exhaustive()
    }
}

impl TokenCell {
    /// An empty cell for a credential of `kind`.
    pub fn new(policy: TokenPolicy, kind: &'static str) -> Arc<Self> {
        Arc::new(Self {
            state: ArcSwap::from_pointee(TokenState::default()),
            kick: Notify::new(),
            attempts: watch::Sender::new(0),
            policy,
            kind,
            observer: std::sync::OnceLock::new(),
        })
    }

    /// The current state (lock-free).
    pub fn load(&self) -> Arc<TokenState> {
        self.state.load_full()
    }

    /// The credential kind, for status output.
    pub fn credential_kind(&self) -> &'static str {
        self.kind
    }

    /// The token to send now. Waits for the first attempt at start-up; never waits otherwise.
    pub async fn usable_token(&self) -> Result<Arc<HeldToken>, Unusable> {
        let now = Instant::now();
        {
            let state = self.state.load();
            if let Some(token) = state.token.as_ref().filter(|t| t.is_valid(now)) {
                return Ok(Arc::clone(token));
            }
            if state.attempts > 0 {
                return Err(state.unusable());
            }
        }
        let mut attempts = self.attempts.subscribe();
        let _ =
            tokio::time::timeout(self.policy.first_token_wait, attempts.wait_for(|n| *n > 0)).await;
        let state = self.state.load();
        match state.token.as_ref().filter(|t| t.is_valid(Instant::now())) {
            Some(token) => Ok(Arc::clone(token)),
            None => Err(state.unusable()),
        }
    }

    /// A token newer than `serial`, forcing one refresh if allowed; `None` when no newer
    /// token can be had (cooldown, or the refresh failed).
    pub async fn refreshed_after(&self, serial: u64) -> Option<Arc<HeldToken>> {
        let seen_attempts = {
            let state = self.state.load();
            let now = Instant::now();
            if let Some(token) = state
                .token
                .as_ref()
                .filter(|t| t.serial > serial && t.is_valid(now))
            {
                return Some(Arc::clone(token));
            }
            if state
                .last_attempt
                .is_some_and(|at| now.duration_since(at) < self.policy.forced_refresh_cooldown)
            {
                return None;
            }
            state.attempts
        };
        let mut attempts = self.attempts.subscribe();
        self.kick.notify_one();
        let _ = tokio::time::timeout(
            self.policy.forced_refresh_wait,
            attempts.wait_for(|n| *n > seen_attempts),
        )
        .await;
        let state = self.state.load();
        state
            .token
            .as_ref()
            .filter(|t| t.serial > serial && t.is_valid(Instant::now()))
            .cloned()
    }

    /// Registers the function told the outcome of every refresh attempt (`true` = success).
    pub fn observe_attempts(&self, observer: impl Fn(bool) + Send + Sync + 'static) {
        let _ = self.observer.set(Box::new(observer));
    }

    fn publish(&self, state: TokenState) {
        if let Some(observer) = self.observer.get() {
            observer(state.failure.is_none());
        }
        let attempts = state.attempts;
        self.state.store(Arc::new(state));
        self.attempts.send_replace(attempts);
    }
}

/// Starts the refresher task; it stops when `shutdown` is cancelled.
pub fn spawn_refresher(
    cell: Arc<TokenCell>,
    credential: Arc<dyn Credential>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let span = tracing::info_span!("token_refresher", credential = credential.kind());
    tokio::spawn(tracing::Instrument::instrument(
        refresh_loop(cell, credential, shutdown),
        span,
    ))
}

async fn refresh_loop(
    cell: Arc<TokenCell>,
    credential: Arc<dyn Credential>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    let mut serial: u64 = 0;
    loop {
        let outcome = tokio::select! {
            outcome = credential.get_token() => outcome,
            () = shutdown.cancelled() => return,
        };
        let finished = Instant::now();
        let previous = cell.load();
        let outcome = outcome.and_then(|token| HeldToken::new(token, serial + 1, finished));
        let delay = match outcome {
            Ok(held) => {
                failures = 0;
                serial += 1;
                let delay = refresh_delay(held.lifetime, &cell.policy);
                info!(
                    expires_in_secs = held.lifetime.as_secs(),
                    refresh_in_secs = delay.as_secs(),
                    "token acquired"
                );
                cell.publish(TokenState {
                    token: Some(Arc::new(held)),
                    failure: None,
                    attempts: previous.attempts + 1,
                    last_attempt: Some(finished),
                    next_refresh: Some(finished + delay),
                });
                delay
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = backoff_delay(failures, &cell.policy, &mut rand::rng());
                let still_valid = previous
                    .token
                    .as_ref()
                    .is_some_and(|t| t.is_valid(finished));
                warn!(error = %error, failures, retry_in_ms = delay.as_millis() as u64, serving_previous_token = still_valid, "token refresh failed");
                cell.publish(TokenState {
                    token: previous.token.clone(),
                    failure: Some(Arc::new(RefreshFailure {
                        error,
                        failures,
                        next_attempt: finished + delay,
                    })),
                    attempts: previous.attempts + 1,
                    last_attempt: Some(finished),
                    next_refresh: Some(finished + delay),
                });
                delay
            }
        };
        let wake_at = finished + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(wake_at) => break,
                () = cell.kick.notified() => {
                    if finished.elapsed() >= cell.policy.forced_refresh_cooldown {
                        info!("forced token refresh");
                        break;
                    }
                }
                () = shutdown.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::TokenFuture;
    use crate::secret::Secret;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Refresh happens at half the lifetime, and never in a hot loop.
    #[test]
    fn refresh_at_half_lifetime() {
        let policy = TokenPolicy::default();
        assert_eq!(
            refresh_delay(Duration::from_secs(3599), &policy),
            Duration::from_millis(1_799_500)
        );
        assert_eq!(
            refresh_delay(Duration::from_secs(10), &policy),
            Duration::from_secs(5)
        );
        assert_eq!(
            refresh_delay(Duration::ZERO, &policy),
            policy.min_refresh_delay
        );
    }

    /// Backoff doubles, is capped, and stays within its jitter band.
    #[test]
    fn backoff_grows_and_caps() {
        let policy = TokenPolicy::default();
        let mut rng = rand::rng();
        for failures in 1..40 {
            let delay = backoff_delay(failures, &policy, &mut rng);
            let full = policy
                .backoff_base
                .saturating_mul(1 << (failures - 1).min(16))
                .min(policy.backoff_cap);
            assert!(delay <= full && delay >= full / 2, "{failures}: {delay:?}");
        }
    }

    #[derive(Debug)]
    struct FakeCredential {
        calls: AtomicU32,
        fail_from: u32,
        lifetime: Duration,
    }

    impl Credential for FakeCredential {
        fn get_token(&self) -> TokenFuture<'_> {
            Box::pin(async move {
                let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                if call >= self.fail_from {
                    return Err(CredentialError::Unreachable("down".into()));
                }
                Ok(AccessToken {
                    token: Secret::new(format!("token-{call}")),
                    expires_in: self.lifetime,
                })
            })
        }
        fn kind(&self) -> &'static str {
            "fake"
        }
    }

    fn fake(fail_from: u32, lifetime_secs: u64) -> Arc<FakeCredential> {
        Arc::new(FakeCredential {
            calls: AtomicU32::new(0),
            fail_from,
            lifetime: Duration::from_secs(lifetime_secs),
        })
    }

    /// A 10-second token is renewed every 5 seconds; the token in use stays valid throughout.
    #[tokio::test(start_paused = true)]
    async fn short_tokens_renewed_before_expiry() {
        let cell = TokenCell::new(TokenPolicy::default(), "fake");
        let credential = fake(u32::MAX, 10);
        let shutdown = CancellationToken::new();
        spawn_refresher(Arc::clone(&cell), credential.clone(), shutdown.clone());
        let first = cell.usable_token().await.expect("first token");
        for _ in 0..60 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let token = cell.usable_token().await.expect("always a valid token");
            assert!(token.is_valid(Instant::now()));
        }
        assert!(cell.load().token.as_ref().expect("token").serial > first.serial + 4);
        let calls = credential.calls.load(Ordering::SeqCst);
        assert!(
            (6..=8).contains(&calls),
            "30 s of 10 s tokens needs about 7 calls, got {calls}"
        );
        shutdown.cancel();
    }

    /// When refreshes fail, the old token keeps serving until it expires, with backoff.
    #[tokio::test(start_paused = true)]
    async fn failures_keep_previous_token_and_back_off() {
        let cell = TokenCell::new(TokenPolicy::default(), "fake");
        let credential = fake(2, 60);
        let shutdown = CancellationToken::new();
        spawn_refresher(Arc::clone(&cell), credential.clone(), shutdown.clone());
        cell.usable_token().await.expect("first token");
        tokio::time::sleep(Duration::from_secs(45)).await;
        assert!(cell.usable_token().await.is_ok(), "still valid at 45 s");
        assert!(cell.load().failure.is_some());
        let calls = credential.calls.load(Ordering::SeqCst);
        assert!(
            calls <= 8,
            "backoff, not a hot loop: {calls} calls in 15 s of failures"
        );
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert!(matches!(
            cell.usable_token().await,
            Err(Unusable::Failed(_))
        ));
        shutdown.cancel();
    }

    /// Many requests asking for a forced refresh at once cause exactly one token request.
    #[tokio::test(start_paused = true)]
    async fn forced_refresh_is_single_flight() {
        let cell = TokenCell::new(TokenPolicy::default(), "fake");
        let credential = fake(u32::MAX, 3600);
        let shutdown = CancellationToken::new();
        spawn_refresher(Arc::clone(&cell), credential.clone(), shutdown.clone());
        let first = cell.usable_token().await.expect("first token").serial;
        let immediate = cell.refreshed_after(first).await;
        assert!(
            immediate.is_none(),
            "inside the cooldown no refresh is forced"
        );
        tokio::time::sleep(Duration::from_secs(6)).await;
        let waiters: Vec<_> = (0..50)
            .map(|_| {
                let cell = Arc::clone(&cell);
                tokio::spawn(async move { cell.refreshed_after(first).await.map(|t| t.serial) })
            })
            .collect();
        for waiter in waiters {
            assert_eq!(waiter.await.expect("join"), Some(first + 1));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(credential.calls.load(Ordering::SeqCst), 2);
        shutdown.cancel();
    }
}
