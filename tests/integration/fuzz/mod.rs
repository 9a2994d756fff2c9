//! Property and fuzz tests for every function that reads untrusted bytes: arbitrary and
//! structured-hostile inputs never panic, and each function's invariants hold.
//!
//! Inputs come in three kinds: arbitrary bytes; byte soup built from the tokens the parser
//! looks for (`{`, `"usage"`, `data:`, `\r`…); and well-formed documents rendered with random
//! whitespace, member order and `\u` escapes, then sometimes mutated. Where a function has a
//! reference meaning (a full `serde_json` parse, a header set, a URL prefix), the property
//! compares against it.
//!
//! Case counts: by default each property runs `DEFAULT_CASES / weight` cases, its weight being
//! about its cost per case, so the whole module takes a few seconds. `PROPTEST_CASES=N` (proptest's
//! own rule) runs N cases of every property instead, except `managed_identity_answers` (a socket
//! round trip per attempt), which runs N / 100. The long run,
//! `PROPTEST_CASES=100000 cargo nextest run -E 'test(/^fuzz::/)'`, takes about ten minutes on
//! two busy cores. Failures are not persisted to files: the minimal failing input is printed,
//! and belongs in a unit test once fixed. `PROPTEST_RNG_SEED=N` makes a run repeatable.
//!
//! One file per kind of input, after the shared generators (`generators`): request bodies,
//! answers, headers, upstream routing, refusals, tokens, configuration, access keys, and JWT
//! claims with the `/status` document.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::body::Body;
use base64::Engine;
use bytes::Bytes;
use foundry_proxy::claims::TokenClaims;
use foundry_proxy::config::credential::{IdentitySelector, ManagedIdentityEndpoint};
use foundry_proxy::config::{self, Settings};
use foundry_proxy::credential::entra::parse_token_response;
use foundry_proxy::credential::managed_identity::ManagedIdentityCredential;
use foundry_proxy::credential::{AccessToken, Credential, CredentialError, TokenFuture};
use foundry_proxy::diagnose::{self, DiagnosisContext, RequestFacts};
use foundry_proxy::keys::{self, KeyRing, Limits};
use foundry_proxy::proxy::headers::{prepare_request_headers, strip_hop_by_hop};
use foundry_proxy::proxy::model::{BodyFacts, json_facts, read_facts, with_model};
use foundry_proxy::secret::Secret;
use foundry_proxy::token::{TokenCell, TokenPolicy, spawn_refresher};
use foundry_proxy::upstream::{ApiStyle, Target};
use foundry_proxy::usage::{self, BodyKind, Ending, Usage};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::string::RegexGeneratorStrategy;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use url::Url;

/// The default run's budget: each property runs `DEFAULT_CASES / weight` cases, a few seconds
/// for the whole file (`PROPTEST_CASES`, when set, replaces every count: see the module docs).
const DEFAULT_CASES: u32 = 4096;

/// The configuration of a property whose cases cost about `weight` units of 0.05 ms (debug
/// build). The `proptest!` macro then applies the `PROPTEST_*` environment variables over it.
fn config(weight: u32) -> ProptestConfig {
    let defaults = ProptestConfig::default();
    ProptestConfig {
        cases: (DEFAULT_CASES / weight).max(1),
        failure_persistence: None,
        // Unless `PROPTEST_RNG_ALGORITHM` says otherwise: every `prop_oneof!` seeds a generator
        // per arm, and ChaCha seeding (in an unoptimised build) was most of the run time.
        rng_algorithm: if std::env::var_os("PROPTEST_RNG_ALGORITHM").is_some() {
            defaults.rng_algorithm
        } else {
            RngAlgorithm::XorShift
        },
        ..defaults
    }
}

/// Runs a future on this thread's runtime (one per test thread, reused across cases).
fn block_on<F: Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
    }
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "foundry-proxy-fuzz-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("temp dir");
        Self(path)
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write temp file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

mod access_keys;
mod answers;
mod claims;
mod configuration;
mod generators;
mod headers;
mod refusals;
mod request_bodies;
mod tokens;
mod upstream;
