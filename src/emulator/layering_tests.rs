//! The emulator stands alone: no file under `src/emulator` may use the proxy's modules.
//!
//! The emulator plays Entra ID and Foundry for the proxy's tests; if it borrowed the proxy's
//! code (its token parser, its `Secret`, its refusal catalog), a bug there would be mirrored on
//! both sides and the tests would pass against it. So every path a file names must stay inside
//! `crate::emulator`: `crate::X` and `foundry_proxy::X` only with `X` = `emulator`, and a run
//! of `super::` may climb at most to `emulator` itself (or to the crate root and back down
//! into `emulator`). Comments and string literals are not code and are skipped.
//!
//! This is a plain text scan, not a compiler pass: it reads every `crate::`, `foundry_proxy::`
//! and `super::` path (in `use` items, groups `{…}` and inline expressions alike) and knows how
//! deep each file and each inline `mod name { … }` sits.

use std::path::{Path, PathBuf};

/// A path in an emulator file that reaches outside the emulator.
#[derive(Debug, PartialEq, Eq)]
struct Escape {
    /// 1-based line where the path (or the item of a `{…}` group) starts.
    line: usize,
    /// The offending path as written, e.g. `crate::token::TokenCell` or `super::super::config`.
    path: String,
}

/// A character of an identifier or keyword.
fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// If a comment or a string or char literal starts at `i`: the range to blank (its text, the
/// quotes of a literal kept) and where code resumes after it.
fn non_code_at(s: &[char], i: usize) -> Option<(usize, usize, usize)> {
    let at = |k: usize| s.get(k).copied();
    let find = |from: usize, pred: &dyn Fn(usize) -> bool| (from..s.len()).find(|&k| pred(k));
    match (s[i], at(i + 1)) {
        ('/', Some('/')) => {
            let end = find(i, &|k| s[k] == '\n').unwrap_or(s.len());
            Some((i, end, end))
        }
        ('/', Some('*')) => {
            // Block comments nest in Rust.
            let (mut depth, mut k) = (1, i + 2);
            while k < s.len() && depth > 0 {
                match (s[k], at(k + 1)) {
                    ('/', Some('*')) => (depth, k) = (depth + 1, k + 2),
                    ('*', Some('/')) => (depth, k) = (depth - 1, k + 2),
                    _ => k += 1,
                }
            }
            Some((i, k, k))
        }
        ('r', Some('"' | '#')) if raw_string_prefix(s, i) => {
            // r"…", r#"…"# (or br…): it ends at a quote followed by as many hashes.
            let hashes = s[i + 1..].iter().take_while(|&&c| c == '#').count();
            let open = i + 1 + hashes;
            let closes =
                |k: usize| s[k] == '"' && s[k + 1..].iter().take(hashes).all(|&c| c == '#');
            let close = find(open + 1, &closes).unwrap_or(s.len());
            Some((open + 1, close, close + 1 + hashes))
        }
        ('"', _) => {
            let mut k = i + 1;
            while k < s.len() && s[k] != '"' {
                k += if s[k] == '\\' { 2 } else { 1 };
            }
            Some((i + 1, k, k + 1))
        }
        // A char literal ('x', '\'', '\u{..}'); otherwise a lifetime or a label ('a), left alone.
        // After a backslash the escaped character (which may be a quote) comes first.
        ('\'', Some('\\')) => find(i + 3, &|k| s[k] == '\'').map(|end| (i + 1, end, end + 1)),
        ('\'', _) if at(i + 2) == Some('\'') => Some((i + 1, i + 2, i + 3)),
        _ => None,
    }
}

/// Whether the `r` at `i` opens a raw string (`r"`, `r#"`, `br"`), not a raw identifier
/// (`r#type`) nor the end of a name (`for"`).
fn raw_string_prefix(s: &[char], i: usize) -> bool {
    let starts_token = |k: usize| k == 0 || !is_ident(s[k - 1]);
    let prefix_ok = starts_token(i) || (i > 0 && s[i - 1] == 'b' && starts_token(i - 1));
    prefix_ok && s[i + 1..].iter().find(|&&c| c != '#') == Some(&'"')
}

/// A file's text with comments and the contents of string and char literals blanked, every
/// newline kept so that positions still map to the same lines.
struct Code(Vec<char>);

impl Code {
    fn new(src: &str) -> Self {
        let s: Vec<char> = src.chars().collect();
        let mut out = s.clone();
        let mut i = 0;
        while i < s.len() {
            match non_code_at(&s, i) {
                Some((from, to, resume)) => {
                    let to = to.min(s.len());
                    for c in out[from.min(to)..to].iter_mut().filter(|c| **c != '\n') {
                        *c = ' ';
                    }
                    i = resume;
                }
                None => i += 1,
            }
        }
        Code(out)
    }

    fn word_at(&self, i: usize) -> String {
        self.0[i..].iter().take_while(|&&c| is_ident(c)).collect()
    }

    fn skip_ws(&self, mut i: usize) -> usize {
        while self.0.get(i).is_some_and(|c| c.is_whitespace()) {
            i += 1;
        }
        i
    }

    /// If a `::` follows `i` (whitespace allowed around it): the index of what comes after.
    fn after_colons(&self, i: usize) -> Option<usize> {
        let i = self.skip_ws(i);
        (self.0.get(i) == Some(&':') && self.0.get(i + 1) == Some(&':'))
            .then(|| self.skip_ws(i + 2))
    }

    fn line_of(&self, i: usize) -> usize {
        1 + self.0[..i].iter().filter(|&&c| c == '\n').count()
    }

    /// The path as written from `from`: segments joined by `::`, up to anything else
    /// (` as`, `{`, `(`, `;`, …).
    fn path_text(&self, from: usize) -> String {
        let (mut text, mut i) = (String::new(), from);
        loop {
            let segment = self.word_at(i);
            text.push_str(&segment);
            match self.after_colons(i + segment.len()) {
                Some(next) if self.0.get(next).copied().is_some_and(is_ident) => {
                    text.push_str("::");
                    i = next;
                }
                _ => return text,
            }
        }
    }

    /// Where each item of the `{…}` group opening at `open` starts.
    fn group_items(&self, open: usize) -> Vec<usize> {
        let (mut items, mut level, mut start) = (Vec::new(), 0usize, open + 1);
        for k in open + 1..self.0.len() {
            match self.0[k] {
                '{' => level += 1,
                '}' | ',' if level == 0 => {
                    let item = self.skip_ws(start);
                    if item < k {
                        items.push(item);
                    }
                    if self.0[k] == '}' {
                        break;
                    }
                    start = k + 1;
                }
                '}' => level -= 1,
                _ => {}
            }
        }
        items
    }

    /// For a path continuing at `at` from the crate root (after `crate::`): the first item
    /// (its start and text) that is not in `emulator`, a single path or each item of a group.
    fn leaving_root(&self, at: usize) -> Option<(usize, String)> {
        let items = if self.0.get(at) == Some(&'{') {
            self.group_items(at)
        } else {
            vec![at]
        };
        items
            .into_iter()
            .find(|&item| self.word_at(item) != "emulator")
            .map(|item| (item, self.path_text(item)))
    }
}

/// Every path in `src` (the text of a file whose module sits `depth` levels below `emulator`:
/// 0 for `emulator/mod.rs`, 1 for `emulator/state.rs` or `emulator/entra/mod.rs`, …) that
/// reaches outside the emulator.
fn escapes(src: &str, depth: usize) -> Vec<Escape> {
    let code = Code::new(src);
    let mut found = Vec::new();
    // Inline `mod name { … }` blocks, each by the brace depth of its body.
    let mut inline_mods: Vec<usize> = Vec::new();
    let (mut braces, mut after_mod) = (0usize, false);
    let mut i = 0;
    while i < code.0.len() {
        let c = code.0[i];
        match c {
            '{' => {
                braces += 1;
                if after_mod {
                    inline_mods.push(braces);
                }
            }
            '}' => {
                if inline_mods.last() == Some(&braces) {
                    inline_mods.pop();
                }
                braces = braces.saturating_sub(1);
            }
            _ => {}
        }
        if matches!(c, '{' | '}' | ';') {
            // `mod name;` declares a file module; `mod name {` has just been counted.
            after_mod = false;
        }
        if !is_ident(c) || (i > 0 && is_ident(code.0[i - 1])) {
            i += 1;
            continue;
        }
        let word = code.word_at(i);
        let after_path_colons = code.0[..i].iter().rev().find(|c| !c.is_whitespace()) == Some(&':');
        match word.as_str() {
            "mod" => after_mod = true,
            "crate" | "foundry_proxy" if !after_path_colons || word == "foundry_proxy" => {
                let leaving = code
                    .after_colons(i + word.len())
                    .and_then(|rest| code.leaving_root(rest));
                if let Some((at, item)) = leaving {
                    found.push(Escape {
                        line: code.line_of(at),
                        path: format!("{word}::{item}"),
                    });
                }
            }
            "super" if !after_path_colons => {
                // The run `super::super::…`: how far it climbs, and what follows it.
                let (mut supers, mut rest) = (0usize, i);
                while code.word_at(rest) == "super" {
                    let Some(next) = code.after_colons(rest + "super".len()) else {
                        break;
                    };
                    (supers, rest) = (supers + 1, next);
                }
                let here = depth + inline_mods.len();
                if supers > here + 1 {
                    found.push(Escape {
                        line: code.line_of(i),
                        path: code.path_text(i),
                    });
                } else if supers == here + 1 {
                    // At the crate root: only `emulator` leads back in.
                    if let Some((at, item)) = code.leaving_root(rest) {
                        let path = format!("{}{item}", "super::".repeat(supers));
                        found.push(Escape {
                            line: code.line_of(at),
                            path,
                        });
                    }
                }
                i = rest.max(i + word.len());
                continue;
            }
            _ => {}
        }
        i += word.len();
    }
    found
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}

/// How many levels below `emulator` the module of a file sits, from its path `relative` to
/// `src/emulator` (`mod.rs` is its folder's module; `x.rs` is one level below it).
fn module_depth(relative: &Path) -> usize {
    let dirs = relative.components().count() - 1;
    if relative.file_name().is_some_and(|name| name == "mod.rs") {
        dirs
    } else {
        dirs + 1
    }
}

/// The rule itself, over the real tree.
#[test]
fn the_emulator_uses_nothing_from_the_proxy() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/emulator");
    let files = rust_files(&root);
    assert!(
        files.len() > 20,
        "only {} files under {}",
        files.len(),
        root.display()
    );
    let mut report = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        let relative = file.strip_prefix(&root).expect("under src/emulator");
        for escape in escapes(&text, module_depth(relative)) {
            report.push(format!(
                "src/emulator/{}:{}: `{}` reaches outside the emulator",
                relative.display(),
                escape.line,
                escape.path
            ));
        }
    }
    assert!(
        report.is_empty(),
        "the emulator must stand alone (it imports nothing from the proxy's modules; see \
         src/emulator/mod.rs): copy the small helper it needs into src/emulator instead.\n{}",
        report.join("\n")
    );
}

/// The paths found in `src` at `depth`, as (line, path).
fn scan(src: &str, depth: usize) -> Vec<(usize, String)> {
    escapes(src, depth)
        .into_iter()
        .map(|e| (e.line, e.path))
        .collect()
}

/// `use` items, groups and inline paths that leave the emulator are each found, with their line.
#[test]
fn the_scanner_finds_every_way_out() {
    let src = r#"
use crate::token::X;
use crate::emulator::state::Emulator;
fn f() {
    let s = crate::secret::Secret::new(String::new());
    let e = crate::emulator::util::uuid();
}
use crate::{emulator::a, config::b};
use crate::{
    emulator::{c, d},
    keys::{Limits, KeyRing},
};
use foundry_proxy::diagnose::explain;
use foundry_proxy::emulator::identities;
use crate :: limits :: Window as W;
pub(in crate::proxy) fn g() {}
"#;
    assert_eq!(
        scan(src, 1),
        vec![
            (2, "crate::token::X".to_owned()),
            (5, "crate::secret::Secret::new".to_owned()),
            (8, "crate::config::b".to_owned()),
            (11, "crate::keys".to_owned()),
            (13, "foundry_proxy::diagnose::explain".to_owned()),
            (15, "crate::limits::Window".to_owned()),
            (16, "crate::proxy".to_owned()),
        ]
    );
}

/// `super::` is fine up to `emulator`; beyond it, only a path back into `emulator` is.
#[test]
fn super_may_climb_only_to_the_emulator() {
    // In `emulator/entra/jwt.rs` (depth 2): two levels up is `emulator`, three is the crate.
    let src = "use super::aadsts;\nuse super::super::util::uuid;\nuse super::super::super::token::X;\n\
               use super::super::super::emulator::config;\nfn f() { super::super::super::secret::Secret::new(); }\n";
    assert_eq!(
        scan(src, 2),
        vec![
            (3, "super::super::super::token::X".to_owned()),
            (5, "super::super::super::secret::Secret::new".to_owned()),
        ]
    );
    // In `emulator/mod.rs` (depth 0), `super` is already the crate root.
    assert_eq!(
        scan("use super::metrics::Metrics;", 0),
        vec![(1, "super::metrics::Metrics".to_owned())]
    );
    assert_eq!(scan("use super::emulator::util;", 0), vec![]);
    // An inline `mod tests { … }` is one level deeper: its `super::super` is still inside.
    let src = "mod a;\n#[cfg(test)]\nmod tests {\n    use super::super::config::X;\n}\nuse super::super::config::Y;\n";
    assert_eq!(
        scan(src, 1),
        vec![(6, "super::super::config::Y".to_owned())]
    );
}

/// Comments, doc comments and literals may mention the proxy's paths: they are not code.
#[test]
fn comments_and_literals_are_not_code() {
    let src = r###"
// crate::token::X in a comment
/// [`Secret`](crate::secret::Secret) in a doc comment
/* crate::keys /* nested */ crate::limits */
const A: &str = "crate::token::X";
const B: &str = r#"crate::secret::Secret "quoted" "#;
const C: char = '"';
const F: (char, &str) = ('\'', "crate::token::Z");
fn f<'a>(x: &'a str) -> &'a str { let _ = crate::token::Y; x }
const D: &[u8] = b"foundry_proxy::proxy";
const E: &str = "escaped \" crate::config::X";
"###;
    assert_eq!(scan(src, 1), vec![(9, "crate::token::Y".to_owned())]);
}
