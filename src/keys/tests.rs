use super::*;
use http::{HeaderMap, HeaderValue};

fn entry(name: &str, key: &str, extra: &str) -> String {
    format!(
        "[[key]]\nname = \"{name}\"\nsha256 = \"{}\"\n{extra}",
        hex(&digest_of(key))
    )
}

/// A well-formed file parses into names, limits and working keys; digests in either case.
#[test]
fn parses_names_limits_and_digests() {
    let upper = entry("bob", "key-b", "").replace(
        &hex(&digest_of("key-b")),
        &hex(&digest_of("key-b")).to_uppercase(),
    );
    let text = format!(
        "# comment\n{}\n{upper}",
        entry(
            "alice",
            "key-a",
            "requests_per_minute = 60\ntokens_per_minute = 100000\n"
        )
    );
    let ring = KeyRing::parse(&text).expect("valid");
    assert_eq!(ring.len(), 2);
    let alice = ring.authenticate("key-a").expect("alice");
    assert_eq!(alice.name, "alice");
    assert_eq!(
        alice.limits,
        Limits {
            requests_per_minute: Some(60),
            tokens_per_minute: Some(100_000)
        }
    );
    assert_eq!(
        ring.authenticate("key-b").expect("bob").limits,
        Limits::default()
    );
    assert!(ring.authenticate("key-c").is_none());
    assert!(ring.authenticate("").is_none());
    assert!(KeyRing::parse("").expect("empty file").is_empty());
}

/// Every parse error names the line, and the entry once its name is known; the text is one
/// line with a fix.
#[test]
fn parse_errors_name_line_and_entry() {
    let cases: Vec<(String, usize, &str)> = vec![
        (
            format!("{}\n{}", entry("alice", "a", ""), entry("alice", "b", "")),
            6,
            "entry 2 (\"alice\") repeats the name of entry 1",
        ),
        (
            format!("{}\n{}", entry("alice", "a", ""), entry("bob", "a", "")),
            7,
            "entry 2 (\"bob\") has the same sha256 as entry 1 (\"alice\")",
        ),
        (
            "[[key]]\nname = \"carol\"\nsha256 = \"abc\"\n".to_owned(),
            3,
            "entry 1 (\"carol\"): sha256 is not 64 hex characters",
        ),
        (
            format!("\n{}", entry("has space", "a", "")),
            3,
            "entry 1: the name \"has space\" contains ' '",
        ),
        (
            entry("dave", "a", "requests_per_minute = 0\n"),
            4,
            "(\"dave\"): requests_per_minute is 0",
        ),
        (
            entry("erin", "a", "colour = \"blue\"\n"),
            4,
            "unknown field `colour`",
        ),
        (
            "[[key]]\nname = \"frank\"\n".to_owned(),
            1,
            "missing field `sha256`",
        ),
        (
            entry("gina", "a", "role = \"owner\"\n"),
            4,
            "(\"gina\"): role \"owner\" is not a role",
        ),
        ("[[key]\n".to_owned(), 1, "not a valid keys file"),
        (
            "[server]\nport = 1\n".to_owned(),
            1,
            "unknown field `server`",
        ),
    ];
    for (text, line, needle) in cases {
        let err = KeyRing::parse(&text).expect_err(needle);
        let shown = err.to_string();
        assert_eq!(err.line, Some(line), "{shown}");
        assert!(shown.contains(needle), "{shown} lacks {needle}");
        assert!(shown.contains(&format!("line {line}")), "{shown}");
        assert!(shown.contains(" — "), "a fix: {shown}");
        assert!(!shown.contains('\n'), "one line: {shown}");
    }
}

/// A file written before roles existed loads with every key a member (and no admin); `role`
/// reads either way, and an admin key is written back with its role.
#[test]
fn roles_default_to_member() {
    let old = format!(
        "{}\n{}",
        entry("alice", "a", ""),
        entry("bob", "b", "requests_per_minute = 5\n")
    );
    let ring = KeyRing::parse(&old).expect("an old file loads");
    assert!(ring.entries().all(|e| e.role == Role::Member));
    assert!(!ring.has_admin());
    let mixed = format!(
        "{}\n{}",
        entry("alice", "a", "role = \"member\"\n"),
        entry("ops", "b", "role = \"admin\"\n")
    );
    let ring = KeyRing::parse(&mixed).expect("valid");
    assert!(ring.has_admin());
    assert!(ring.authenticate("b").expect("ops").is_admin());
    assert!(!ring.authenticate("a").expect("alice").is_admin());

    let dir = std::env::temp_dir().join(format!("fp-keys-roles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("keys.toml");
    let _ = std::fs::remove_file(&path);
    let mut ops = KeyEntry::new("ops", Limits::default());
    ops.role = Role::Admin;
    let key = add_entry(&path, &ops).expect("added");
    add_key(&path, "member", Limits::default()).expect("added");
    let ring = KeyRing::load(&path).expect("reads back");
    assert!(ring.authenticate(&key).expect("ops").is_admin());
    assert_eq!(ring.get("member").expect("member").role, Role::Member);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Names: 1-64 of letters, digits, '-', '_', '.'.
#[test]
fn name_rules() {
    for good in ["a", "alice.smith", "ci_bot-2", &"x".repeat(64)] {
        assert!(validate_name(good).is_ok(), "{good}");
    }
    for bad in ["", "a b", "é", "a/b", "a\"b", &"x".repeat(65)] {
        assert!(validate_name(bad).is_err(), "{bad}");
    }
    let key = file::generate_key().expect("key");
    let err = validate_name(&key).expect_err("a key is not a name");
    assert!(!err.contains(&key), "{err}");
    assert!(validate_name("fpk-bot").is_ok());
}

/// The constant-time scan (no early exit) still returns the one right entry, wherever it
/// sits among many, and nothing for near misses.
#[test]
fn finds_the_right_key_among_many() {
    let text: String = (0..300)
        .map(|i| entry(&format!("user{i}"), &format!("key-{i}"), "") + "\n")
        .collect();
    let ring = KeyRing::parse(&text).expect("valid");
    for i in [0, 1, 150, 298, 299] {
        let found = ring.authenticate(&format!("key-{i}")).expect("found");
        assert_eq!(found.name, format!("user{i}"));
    }
    assert!(ring.authenticate("key-300").is_none());
    assert!(ring.authenticate("key-1 ").is_none());
    assert!(KeyRing::default().authenticate("key-0").is_none());
}

/// Debug output and errors show names, never digests.
#[test]
fn debug_shows_names_only() {
    let text = entry("alice", "key-a", "");
    let ring = KeyRing::parse(&text).expect("valid");
    let shown = format!("{ring:?} {:?}", ring.authenticate("key-a"));
    assert!(shown.contains("alice"), "{shown}");
    let digest = hex(&digest_of("key-a"));
    assert!(!shown.contains(&digest[..16]), "{shown}");
    let dup = format!("{text}\n{}", entry("bob", "key-a", ""));
    let err = KeyRing::parse(&dup).expect_err("duplicate");
    assert!(!err.to_string().contains(&digest[..16]), "{err}");
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_static(value));
    }
    map
}

/// Keys come from `Authorization: Bearer` (scheme in any case), `api-key` or `x-api-key`
/// (Anthropic clients), in that order; empty values
/// and other schemes count as no key.
#[test]
fn presented_key_from_headers() {
    type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>);
    let cases: &[Case] = &[
        (&[("authorization", "Bearer fpk-abc")], Some("fpk-abc")),
        (&[("authorization", "bearer fpk-abc")], Some("fpk-abc")),
        (&[("authorization", "BEARER   fpk-abc  ")], Some("fpk-abc")),
        (&[("api-key", "fpk-xyz")], Some("fpk-xyz")),
        (&[("api-key", " fpk-xyz ")], Some("fpk-xyz")),
        (
            &[("authorization", "Bearer a"), ("api-key", "b")],
            Some("a"),
        ),
        (&[("authorization", "Bearer "), ("api-key", "b")], Some("b")),
        (
            &[("authorization", "Basic dXNlcjpwdw=="), ("api-key", "b")],
            Some("b"),
        ),
        (&[("authorization", "Bearer")], None),
        (&[("authorization", "Bearer    ")], None),
        (&[("authorization", "Basic dXNlcjpwdw==")], None),
        (&[("authorization", "fpk-abc")], None),
        (&[("api-key", "")], None),
        (&[("api-key", "   ")], None),
        (&[("x-api-key", "fpk-ant")], Some("fpk-ant")),
        (&[("x-api-key", "fpk-ant"), ("api-key", "b")], Some("b")),
        (&[("x-api-key", " ")], None),
        (&[], None),
    ];
    for (pairs, expected) in cases {
        let map = headers(pairs);
        assert_eq!(presented_key(&map), *expected, "{pairs:?}");
    }
}
