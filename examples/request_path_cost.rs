//! Measures what access keys and metrics add to each request (run with
//! `cargo run --release --example request_path_cost`): the key check (SHA-256 of the
//! presented key, constant-time comparison against every stored digest) and one metrics record.

use std::time::Instant;

use foundry_proxy::keys::KeyRing;
use foundry_proxy::metrics::{Metrics, RequestRecord};

fn main() {
    let mut text = String::new();
    let mut last_key = String::new();
    for i in 0..20 {
        let key = format!("fpk-example-key-number-{i:02}-0123456789abcdefghijklmnop");
        let digest: String = sha2_hex(&key);
        text.push_str(&format!(
            "[[key]]\nname = \"user{i}\"\nsha256 = \"{digest}\"\n"
        ));
        last_key = key;
    }
    let ring = KeyRing::parse(&text).expect("keys");
    let rounds = 200_000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        assert!(ring.authenticate(std::hint::black_box(&last_key)).is_some());
    }
    let per_key = started.elapsed() / rounds;

    let metrics = Metrics::new();
    let started = Instant::now();
    for i in 0..rounds {
        metrics.record_request(&RequestRecord {
            route: "chat/completions",
            status: 200,
            model: if i % 2 == 0 {
                "gpt-4o-mini"
            } else {
                "text-embedding-3-small"
            },
            key: "user19",
            upstream_latency: Some(std::time::Duration::from_millis(3)),
        });
        metrics.record_usage("user19", "gpt-4o-mini", 12, 30);
    }
    let per_record = started.elapsed() / rounds;
    println!("key check among 20 keys: {per_key:?} per request");
    println!("metrics (request + usage record): {per_record:?} per request");
}

fn sha2_hex(key: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
