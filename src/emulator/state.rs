//! The shared emulator: its world, its runtime controls and what it has observed.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::config::{AppSpec, EmulatorConfig, ImdsFault, ResourceKind};
use super::entra::certificate::Certificate;
use super::entra::jwt::{AccessTokenClaims, Keys};
use super::records::{InferenceRecord, TokenRequestRecord};

/// A failure injected at the token endpoint (only there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntraFault {
    /// Answer with this status and an Entra-shaped `temporarily_unavailable` body (AADSTS90033).
    Status(u16),
    /// Wait this long, then answer normally.
    Stall(Duration),
    /// Answer 200 with a body that is not JSON (an HTML error page, as a broken proxy would send).
    Garbage,
    /// Answer with this AADSTS error exactly as Entra does (status, `error`, message with the
    /// request's client id, tenant and scope). Only the codes in [`EntraFault::AADSTS_CODES`].
    Aadsts(u32),
}

impl EntraFault {
    /// The AADSTS codes [`EntraFault::Aadsts`] can play.
    pub const AADSTS_CODES: &'static [u32] = super::entra::aadsts::CODES;
}

impl fmt::Display for EntraFault {
    /// The control notation, which `FromStr` parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntraFault::Status(status) => write!(f, "{status}"),
            EntraFault::Stall(delay) => write!(f, "stall:{}", delay.as_millis()),
            EntraFault::Garbage => f.write_str("garbage"),
            EntraFault::Aadsts(code) => write!(f, "aadsts:{code}"),
        }
    }
}

impl std::str::FromStr for EntraFault {
    type Err = String;

    /// Parses the control notation: a status (`"503"`), `"stall:MS"`, `"garbage"` or
    /// `"aadsts:N"` for a code in [`EntraFault::AADSTS_CODES`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        super::control::parse_fault(text).ok_or_else(|| super::control::fault_help(text))
    }
}

/// How many issued access tokens [`Emulator::issued_tokens`] keeps.
const ISSUED_TOKENS_KEPT: usize = 1000;

/// The emulator: one per running server, shared by every handler through an `Arc`.
///
/// Locks are held only for short, synchronous reads and writes, never across `.await`.
pub struct Emulator {
    /// The world as configured; immutable after start except for the controls in `Controls`.
    pub(crate) config: EmulatorConfig,
    /// Signing and verifying keys, parsed once.
    pub(crate) keys: Keys,
    /// Runtime controls and observations, written by handlers and by tests.
    inner: Mutex<Inner>,
    /// Count of access tokens issued.
    tokens_issued: AtomicU64,
    /// Streams whose body task started.
    pub(crate) streams_started: AtomicU64,
    /// Streams that sent their last event.
    pub(crate) streams_completed: AtomicU64,
    /// Streams whose client went away before the end.
    pub(crate) streams_cancelled: AtomicU64,
    /// Streams the emulator cut on purpose (`x-emulator-reset-after`).
    pub(crate) streams_reset: AtomicU64,
    /// Seconds added to the real clock wherever the emulator reads "now".
    clock_offset_secs: AtomicI64,
    /// Certificates registered on apps, parsed once: `(client_id, certificate)`.
    certificates: Vec<(String, Certificate)>,
    /// Requests to the IMDS token endpoint, faulted ones included.
    imds_requests: AtomicU64,
    /// Requests to the App Service / Container Apps token endpoint.
    app_service_requests: AtomicU64,
    /// Apps, service principals and role assignments made through Graph and ARM.
    pub(crate) directory: super::directory::Directory,
}

/// The mutable half of the emulator.
#[derive(Debug)]
struct Inner {
    entra_fault: Option<EntraFault>,
    token_lifetime_secs: u64,
    expires_in_as_string: bool,
    /// Decides Foundry's 401 text and whether it has projects; starts from the config.
    resource_kind: ResourceKind,
    /// Role display names by client id; starts from the config, changed by `set_roles`.
    roles: HashMap<String, Vec<String>>,
    /// `uti` of every token issued and not yet revoked.
    issued_utis: Vec<String>,
    /// Tokens Foundry now refuses, as after a signing-key rollover.
    revoked_utis: std::collections::HashSet<String>,
    /// The last [`ISSUED_TOKENS_KEPT`] access tokens issued, oldest first.
    issued_tokens: std::collections::VecDeque<String>,
    /// Token requests with an id, so a stalled request can fill in its status later.
    token_requests: Vec<(u64, TokenRequestRecord)>,
    next_token_request_id: u64,
    inference_requests: Vec<InferenceRecord>,
    /// What the next IMDS requests get; `times` counts down to zero, then IMDS answers normally.
    imds_fault: Option<ImdsFault>,
    /// Faults set at run time and quota windows of the named resources.
    resources: super::resources::ResourceState,
}

impl fmt::Debug for Emulator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Emulator")
            .field("config", &self.config)
            .field("tokens_issued", &self.tokens_issued())
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Creates an emulator for this world.
    pub fn new(config: EmulatorConfig) -> Arc<Emulator> {
        // Managed identities hold roles like apps: Foundry looks roles up by the token's `appid`.
        let roles = config
            .apps
            .iter()
            .map(|a| (a.client_id.clone(), a.roles.clone()))
            .chain(
                config
                    .managed_identities
                    .iter()
                    .map(|m| (m.client_id.clone(), m.roles.clone())),
            )
            .collect();
        let mut certificates = Vec::new();
        for app in &config.apps {
            for pem in &app.certificates {
                match Certificate::from_pem(pem) {
                    Ok(cert) => certificates.push((app.client_id.clone(), cert)),
                    // `validate` refuses these for config files; a struct built in code just
                    // loses the certificate, and its assertions get AADSTS700027.
                    Err(e) => {
                        tracing::warn!(client_id = %app.client_id, error = %e, "unusable certificate")
                    }
                }
            }
        }
        let inner = Inner {
            entra_fault: None,
            token_lifetime_secs: config.token_lifetime_secs,
            expires_in_as_string: config.expires_in_as_string,
            resource_kind: config.resource_kind,
            roles,
            issued_utis: Vec::new(),
            revoked_utis: std::collections::HashSet::new(),
            issued_tokens: std::collections::VecDeque::new(),
            token_requests: Vec::new(),
            next_token_request_id: 0,
            inference_requests: Vec::new(),
            imds_fault: config.imds_fault.filter(|f| f.times > 0),
            resources: super::resources::ResourceState::default(),
        };
        Arc::new(Emulator {
            keys: Keys::embedded(),
            inner: Mutex::new(inner),
            tokens_issued: AtomicU64::new(0),
            streams_started: AtomicU64::new(0),
            streams_completed: AtomicU64::new(0),
            streams_cancelled: AtomicU64::new(0),
            streams_reset: AtomicU64::new(0),
            clock_offset_secs: AtomicI64::new(config.clock_offset_secs),
            certificates,
            imds_requests: AtomicU64::new(0),
            app_service_requests: AtomicU64::new(0),
            directory: super::directory::Directory::seeded(&config.apps, &config.resource_tenant),
            config,
        })
    }

    /// The world this emulator was started with.
    pub fn config(&self) -> &EmulatorConfig {
        &self.config
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere must not turn every later request into a panic too.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Injects (or clears, with `None`) a token-endpoint fault.
    pub fn set_entra_fault(&self, fault: Option<EntraFault>) {
        self.inner().entra_fault = fault;
    }

    /// Sets `expires_in` (and the `exp` claim) of tokens issued from now on.
    pub fn set_token_lifetime(&self, secs: u64) {
        self.inner().token_lifetime_secs = secs;
    }

    /// Sends `expires_in` as a JSON string from now on (or a number, with `false`).
    pub fn set_expires_in_as_string(&self, yes: bool) {
        self.inner().expires_in_as_string = yes;
    }

    /// Switches the kind of resource Foundry plays (its 401 text and whether it has projects), at once.
    pub fn set_resource_kind(&self, kind: ResourceKind) {
        self.inner().resource_kind = kind;
    }

    /// The kind of resource Foundry currently plays.
    pub fn resource_kind(&self) -> ResourceKind {
        self.inner().resource_kind
    }

    /// Shifts the emulator's clock by `secs` from the real one (negative: behind). Token
    /// `iat`/`nbf`/`exp`, Entra's timestamps, generated `created` values and Foundry's expiry
    /// check all follow, so the client's real clock looks wrong relative to "Azure".
    pub fn set_clock_offset(&self, secs: i64) {
        self.clock_offset_secs.store(secs, Ordering::SeqCst);
    }

    /// The current clock offset in seconds.
    pub fn clock_offset(&self) -> i64 {
        self.clock_offset_secs.load(Ordering::SeqCst)
    }

    /// The emulator's "now" in epoch seconds: the real clock plus the offset.
    pub fn now_secs(&self) -> u64 {
        super::util::shifted(super::util::since_epoch().as_secs(), self.clock_offset())
    }

    /// Current role assignments by client id, as `set_roles` and the config left them.
    pub fn roles(&self) -> HashMap<String, Vec<String>> {
        self.inner().roles.clone()
    }

    /// Makes Foundry refuse every token issued so far (as after a key rollover or a
    /// revoked session), so clients must fetch a new one.
    pub fn revoke_issued_tokens(&self) {
        let mut inner = self.inner();
        let issued = std::mem::take(&mut inner.issued_utis);
        inner.revoked_utis.extend(issued);
    }

    /// Replaces an app's role assignments; takes effect on its next request, whatever token it holds.
    pub fn set_roles(&self, client_id: &str, roles: Vec<String>) {
        self.inner().roles.insert(client_id.to_owned(), roles);
    }

    /// Every token-endpoint request so far, oldest first.
    pub fn token_requests(&self) -> Vec<TokenRequestRecord> {
        self.inner()
            .token_requests
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// Every Foundry request so far, oldest first.
    pub fn inference_requests(&self) -> Vec<InferenceRecord> {
        self.inner().inference_requests.clone()
    }

    /// The access tokens issued (token endpoint and managed identity endpoints), oldest first;
    /// the last 1 000 are kept. Tests look for them where they must not be, such as logs.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.inner().issued_tokens.iter().cloned().collect()
    }

    /// Access tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.tokens_issued.load(Ordering::SeqCst)
    }

    /// Streaming responses started so far.
    pub fn streams_started(&self) -> u64 {
        self.streams_started.load(Ordering::SeqCst)
    }

    /// Streaming responses that sent their final event.
    pub fn streams_completed(&self) -> u64 {
        self.streams_completed.load(Ordering::SeqCst)
    }

    /// Streaming responses whose client went away mid-stream.
    pub fn streams_cancelled(&self) -> u64 {
        self.streams_cancelled.load(Ordering::SeqCst)
    }

    /// Streaming responses cut by `x-emulator-reset-after`.
    pub fn streams_reset(&self) -> u64 {
        self.streams_reset.load(Ordering::SeqCst)
    }

    /// Forgets recorded requests (counters and controls are kept).
    pub fn clear_records(&self) {
        let mut inner = self.inner();
        inner.token_requests.clear();
        inner.inference_requests.clear();
    }

    /// Claims the emulator would put in a token for this app and audience, issued at the
    /// emulator's now (see [`Emulator::set_clock_offset`]) with the
    /// given lifetime; `None` if the app is unknown. With [`Emulator::sign_token`], lets tests
    /// make expired, wrong-audience or otherwise odd tokens without the token endpoint.
    pub fn token_claims(
        &self,
        client_id: &str,
        aud: &str,
        lifetime_secs: u64,
    ) -> Option<AccessTokenClaims> {
        let app = self.app(client_id)?;
        Some(AccessTokenClaims::issued_at(
            self.now_secs(),
            &app.tenant,
            &app.client_id,
            &app.object_id,
            aud,
            lifetime_secs,
        ))
    }

    /// Signs claims with the emulator's key, exactly as the token endpoint does.
    pub fn sign_token(
        &self,
        claims: &AccessTokenClaims,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.keys.sign(claims)
    }

    /// Makes the next `fault.times` IMDS requests answer `fault.status` (or clears, with `None`).
    pub fn set_imds_fault(&self, fault: Option<ImdsFault>) {
        self.inner().imds_fault = fault.filter(|f| f.times > 0);
    }

    /// The IMDS fault still pending, with the requests it has left.
    pub fn imds_fault(&self) -> Option<ImdsFault> {
        self.inner().imds_fault
    }

    /// Requests to the IMDS token endpoint so far (faulted and refused ones included).
    pub fn imds_requests(&self) -> u64 {
        self.imds_requests.load(Ordering::SeqCst)
    }

    /// Requests to the App Service / Container Apps token endpoint so far.
    pub fn app_service_requests(&self) -> u64 {
        self.app_service_requests.load(Ordering::SeqCst)
    }

    /// A token from the emulator's external OIDC issuer (`config.federation_issuer`), as a
    /// kubelet projects it for workload identity: `aud` is a one-element array, times follow the
    /// emulator's clock. Write it where `AZURE_FEDERATED_TOKEN_FILE` points.
    pub fn federated_token(&self, subject: &str, audience: &str, lifetime_secs: u64) -> String {
        let now = self.now_secs();
        let claims = serde_json::json!({
            "iss": self.config.federation_issuer,
            "sub": subject,
            "aud": [audience],
            "iat": now,
            "nbf": now,
            "exp": now.saturating_add(lifetime_secs),
            "jti": super::util::uuid(),
        });
        // Signing JSON with the embedded, unit-tested key cannot fail; if it did, that is a
        // build defect, as in `Keys::embedded`.
        #[allow(clippy::expect_used)]
        self.keys
            .sign_value(&claims)
            .expect("the embedded key signs any JSON claims")
    }

    // ---- crate-internal accessors used by the handlers ----

    /// Certificates registered on this app (configured, or added through Graph).
    pub(crate) fn certificates_of(&self, client_id: &str) -> Vec<Certificate> {
        let mut certificates: Vec<Certificate> = self
            .certificates
            .iter()
            .filter(|(id, _)| id.eq_ignore_ascii_case(client_id))
            .map(|(_, cert)| cert.clone())
            .collect();
        certificates.extend(self.directory_certificates(client_id));
        certificates
    }

    /// Counts an IMDS request and returns the status it must fail with, if a fault is pending.
    pub(crate) fn next_imds_request(&self) -> Option<u16> {
        self.imds_requests.fetch_add(1, Ordering::SeqCst);
        let mut inner = self.inner();
        let fault = inner.imds_fault.as_mut()?;
        let status = fault.status;
        fault.times = fault.times.saturating_sub(1);
        if fault.times == 0 {
            inner.imds_fault = None;
        }
        Some(status)
    }

    /// Counts an App Service request.
    pub(crate) fn count_app_service_request(&self) {
        self.app_service_requests.fetch_add(1, Ordering::SeqCst);
    }

    /// A configured app, or one created through Graph (with its service principal).
    pub(crate) fn app(&self, client_id: &str) -> Option<AppSpec> {
        match self
            .config
            .apps
            .iter()
            .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
        {
            // Federated credentials added through Graph count too.
            Some(app) => {
                let mut app = app.clone();
                app.federated_credentials
                    .extend(self.directory_federated(client_id));
                Some(app)
            }
            None => self.directory_app(client_id),
        }
    }

    /// Whether `secret` is a current secret of `app`.
    pub(crate) fn secret_matches(&self, app: &AppSpec, secret: &str) -> bool {
        (!app.client_secret.is_empty() && secret == app.client_secret)
            || self.directory_secret_matches(&app.client_id, secret)
    }

    /// Roles set by config or `set_roles`, plus those granted by propagated ARM assignments.
    pub(crate) fn roles_of(&self, client_id: &str) -> Vec<String> {
        let mut roles = self
            .inner()
            .roles
            .get(client_id)
            .cloned()
            .unwrap_or_default();
        roles.extend(self.directory_roles(client_id));
        roles
    }

    pub(crate) fn entra_fault(&self) -> Option<EntraFault> {
        self.inner().entra_fault.clone()
    }

    /// Current `(lifetime, expires_in_as_string)` for a token being issued.
    pub(crate) fn token_settings(&self) -> (u64, bool) {
        let inner = self.inner();
        (inner.token_lifetime_secs, inner.expires_in_as_string)
    }

    pub(crate) fn count_token_issued(&self, uti: &str, token: &str) {
        self.tokens_issued.fetch_add(1, Ordering::SeqCst);
        let mut inner = self.inner();
        inner.issued_utis.push(uti.to_owned());
        if inner.issued_tokens.len() == ISSUED_TOKENS_KEPT {
            inner.issued_tokens.pop_front();
        }
        inner.issued_tokens.push_back(token.to_owned());
    }

    /// True when the token with this `uti` was revoked by [`Emulator::revoke_issued_tokens`].
    pub(crate) fn is_revoked(&self, uti: &str) -> bool {
        self.inner().revoked_utis.contains(uti)
    }

    /// Records a token request (status 0 = pending) and returns its id for `finish_token_request`.
    pub(crate) fn record_token_request(&self, record: TokenRequestRecord) -> u64 {
        let mut inner = self.inner();
        let id = inner.next_token_request_id;
        inner.next_token_request_id += 1;
        inner.token_requests.push((id, record));
        id
    }

    /// Fills in the outcome of a recorded token request (unless records were cleared meanwhile).
    pub(crate) fn finish_token_request(&self, id: u64, status: u16, aadsts: Option<u32>) {
        let mut inner = self.inner();
        if let Some((_, r)) = inner.token_requests.iter_mut().find(|(i, _)| *i == id) {
            r.status = status;
            r.aadsts = aadsts;
        }
    }

    pub(crate) fn record_inference(&self, record: InferenceRecord) {
        self.inner().inference_requests.push(record);
    }

    /// Sets (or with `None` clears) the fault every request to the named resource gets.
    pub fn set_resource_fault(
        &self,
        resource: &str,
        fault: Option<super::resources::ResourceFault>,
    ) {
        self.inner().resources.set_fault(resource, fault);
    }

    /// The named resource's fault in force.
    pub(crate) fn resource_fault(
        &self,
        spec: &super::resources::ResourceSpec,
    ) -> Option<super::resources::ResourceFault> {
        self.inner().resources.fault(spec)
    }

    /// Charges a request to a resource deployment's quota window.
    pub(crate) fn charge_quota(
        &self,
        spec: &super::resources::ResourceSpec,
        deployment: &str,
        tokens: u64,
    ) -> Result<(), super::resources::Spent> {
        self.inner()
            .resources
            .charge(spec, deployment, tokens, std::time::Instant::now())
    }

    /// Clears the resources' run-time faults and quota windows.
    pub fn reset_resources(&self) {
        self.inner().resources.reset();
    }
}
