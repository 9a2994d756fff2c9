//! Access keys: the keys file, its edits.

use super::configuration::toml_string;
use super::generators::*;
use super::*;

/// One generated entry: its name, its key (the digest is stored), its limits.
#[derive(Debug, Clone)]
struct KeySpec {
    name: String,
    key: String,
    requests: Option<u32>,
    tokens: Option<u64>,
}

/// How a keys file is laid out.
#[derive(Debug, Clone, Copy)]
struct Layout {
    seed: u64,
    crlf: bool,
    inline: bool,
}

fn key_spec() -> BoxedStrategy<KeySpec> {
    (
        prop_oneof![
            6 => re("[a-zA-Z0-9._-]{1,12}"),
            1 => prop::sample::select(&["", "a b", "é", "fpk-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"][..])
                .prop_map(str::to_owned),
            1 => re("[a-z]{65,70}"),
        ],
        re("[a-zA-Z0-9]{1,16}"),
        proptest::option::of(prop_oneof![4 => 1u32..1000, 1 => Just(0u32)]),
        proptest::option::of(prop_oneof![4 => 1u64..1_000_000, 1 => Just(0u64)]),
    )
        .prop_map(|(name, key, requests, tokens)| KeySpec {
            name,
            key,
            requests,
            tokens,
        })
    .boxed()
}

fn sha256_hex(key: &str, upper: bool) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    if upper { hex.to_ascii_uppercase() } else { hex }
}

fn keys_file(specs: &[KeySpec], layout: Layout) -> String {
    let mut dice = Dice(layout.seed);
    let nl = if layout.crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    if dice.chance(50) {
        out.push_str(&format!("# access keys{nl}{nl}"));
    }
    if layout.inline {
        out.push_str("key = [");
        for (i, spec) in specs.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let mut fields = vec![
                format!("name = {}", toml_string(&spec.name)),
                format!("sha256 = \"{}\"", sha256_hex(&spec.key, dice.chance(20))),
            ];
            if let Some(n) = spec.requests {
                fields.push(format!("requests_per_minute = {n}"));
            }
            if let Some(n) = spec.tokens {
                fields.push(format!("tokens_per_minute = {n}"));
            }
            out.push_str(&format!("{{ {} }}", fields.join(", ")));
        }
        out.push_str(&format!("]{nl}"));
        return out;
    }
    for spec in specs {
        if dice.chance(40) {
            out.push_str(&format!(
                "# {} runs CI{nl}",
                spec.name.replace(['\r', '\n'], "")
            ));
        }
        let header = ["[[key]]", "[[ key ]]", "[[key]] # entry"][dice.below(3)];
        out.push_str(&format!("{header}{nl}"));
        let name = if dice.chance(20) && !spec.name.contains('\'') && !spec.name.contains('\n') {
            format!("'{}'", spec.name)
        } else {
            toml_string(&spec.name)
        };
        let mut fields = vec![
            format!("name = {name}"),
            format!("sha256 = \"{}\"", sha256_hex(&spec.key, dice.chance(20))),
        ];
        if let Some(n) = spec.requests {
            fields.push(format!("requests_per_minute = {n}"));
        }
        if let Some(n) = spec.tokens {
            fields.push(format!("tokens_per_minute = {n}"));
        }
        for i in (1..fields.len()).rev() {
            fields.swap(i, dice.below(i + 1));
        }
        for field in fields {
            out.push_str(&field);
            if dice.chance(15) {
                out.push_str(" # note");
            }
            out.push_str(nl);
        }
        if dice.chance(50) {
            out.push_str(nl);
        }
    }
    out
}

/// Whether the generated entries make a valid keys file.
fn valid_specs(specs: &[KeySpec]) -> bool {
    let names: BTreeSet<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    let keys: BTreeSet<&str> = specs.iter().map(|s| s.key.as_str()).collect();
    names.len() == specs.len()
        && keys.len() == specs.len()
        && specs.iter().all(|s| {
            keys::validate_name(&s.name).is_ok() && s.requests != Some(0) && s.tokens != Some(0)
        })
}

/// The ring holds exactly `specs`, in order, each found by its key.
fn check_ring(ring: &KeyRing, specs: &[KeySpec]) -> Result<(), TestCaseError> {
    let names: Vec<&str> = ring.entries().map(|e| e.name.as_str()).collect();
    let expected: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    prop_assert_eq!(names, expected);
    for spec in specs {
        let entry = ring.authenticate(&spec.key);
        prop_assert_eq!(
            entry.as_ref().map(|e| e.name.as_str()),
            Some(spec.name.as_str())
        );
        let entry = entry.expect("entry");
        prop_assert_eq!(
            entry.limits,
            Limits {
                requests_per_minute: spec.requests,
                tokens_per_minute: spec.tokens,
            }
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(5))]

    /// `KeyRing::parse` on any text never panics; an error's line is inside the text.
    #[test]
    fn keys_parse_any_text(
        text in prop_oneof![
            1 => re("\\PC{0,200}"),
            1 => (prop::collection::vec(key_spec(), 0..4), any::<u64>(), any::<bool>(), any::<bool>(), edits())
                .prop_map(|(specs, seed, crlf, inline, e)| {
                    let text = keys_file(&specs, Layout { seed, crlf, inline });
                    String::from_utf8_lossy(&apply(text.into_bytes(), &e)).into_owned()
                }),
        ],
    ) {
        if let Err(e) = KeyRing::parse(&text) {
            let lines = text.matches('\n').count() + 1;
            prop_assert!(e.line.is_none_or(|line| (1..=lines).contains(&line)), "{:?}", e);
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

proptest! {
    #![proptest_config(config(22))]

    /// Generated keys files in many layouts: valid entries parse to exactly those keys (each
    /// found by its key, with its limits), invalid ones are refused; revoking one entry and
    /// adding one leave exactly the expected keys, whatever the layout.
    #[test]
    fn keys_files_and_edits(
        specs in prop::collection::vec(key_spec(), 0..5),
        seed in any::<u64>(),
        crlf in any::<bool>(),
        inline in prop_oneof![5 => Just(false), 1 => Just(true)],
        revoke in any::<usize>(),
    ) {
        let text = keys_file(&specs, Layout { seed, crlf, inline });
        let parsed = KeyRing::parse(&text);
        let valid = valid_specs(&specs);
        prop_assert_eq!(parsed.is_ok(), valid, "{}\n{:?}", text, parsed.as_ref().err());
        let Ok(ring) = parsed else {
            return Ok(());
        };
        check_ring(&ring, &specs)?;

        let dir = TempDir::new();
        let path = dir.file("keys.toml", text.as_bytes());
        let mut remaining = specs.clone();
        if !specs.is_empty() {
            let gone = remaining.remove(revoke % specs.len());
            keys::revoke_key(&path, &gone.name).expect("revoke");
            let after = KeyRing::load(&path).expect("the edited file parses");
            check_ring(&after, &remaining)?;
            prop_assert!(after.authenticate(&gone.key).is_none());
        }
        let name = format!("new{}", seed % 1000);
        let added = keys::add_key(&path, &name, Limits::default());
        if remaining.iter().any(|s| s.name == name) {
            prop_assert!(added.is_err());
        } else {
            let key = added.expect("add");
            remaining.push(KeySpec { name, key, requests: None, tokens: None });
            check_ring(&KeyRing::load(&path).expect("the edited file parses"), &remaining)?;
        }
    }
}
