//! The README's troubleshooting table is generated from the diagnosis catalog, never written
//! by hand.

use std::path::PathBuf;

use foundry_proxy::diagnose::catalog::markdown_table;

const BEGIN: &str = "<!-- catalog:begin -->\n";
const END: &str = "<!-- catalog:end -->";

/// The README's troubleshooting table (between `<!-- catalog:begin -->` and
/// `<!-- catalog:end -->`) is exactly `catalog::markdown_table()`, so every code, status, cause
/// and fix users read in the README is what the proxy and `foundry-proxy check` answer.
///
/// With `UPDATE_README=1` the test rewrites that part of README.md from the catalog instead of
/// failing: `UPDATE_README=1 cargo test --test integration readme::`.
#[test]
fn readme_troubleshooting_table_is_the_catalog() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
    let readme = std::fs::read_to_string(&path).expect("README.md is readable");
    let start = readme
        .find(BEGIN)
        .map(|at| at + BEGIN.len())
        .expect("README.md has a `<!-- catalog:begin -->` line");
    let end = start
        + readme[start..]
            .find(END)
            .expect("README.md has a `<!-- catalog:end -->` line after the begin marker");
    let table = markdown_table();
    if std::env::var("UPDATE_README").is_ok_and(|v| v == "1") {
        let updated = format!("{}{}{}", &readme[..start], table, &readme[end..]);
        if updated != readme {
            std::fs::write(&path, updated).expect("README.md is writable");
        }
        return;
    }
    let current = &readme[start..end];
    if current != table {
        let first_difference = current
            .lines()
            .zip(table.lines())
            .find(|(readme_line, catalog_line)| readme_line != catalog_line)
            .map(|(readme_line, catalog_line)| {
                format!("README:  {readme_line}\ncatalog: {catalog_line}")
            })
            .unwrap_or_else(|| {
                format!(
                    "README has {} lines, the catalog {}",
                    current.lines().count(),
                    table.lines().count()
                )
            });
        panic!(
            "README.md's troubleshooting table differs from the catalog (src/diagnose/catalog.rs); \
             regenerate it with: UPDATE_README=1 cargo test --test integration readme::\nfirst difference:\n{first_difference}"
        );
    }
}
