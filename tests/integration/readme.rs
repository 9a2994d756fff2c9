//! The troubleshooting table of `docs/troubleshooting.md` is generated from the diagnosis
//! catalog, never written by hand.

use std::path::PathBuf;

use foundry_proxy::diagnose::catalog::markdown_table;

const BEGIN: &str = "<!-- catalog:begin -->\n";
const END: &str = "<!-- catalog:end -->";
/// The page that holds the table.
const PAGE: &str = "docs/troubleshooting.md";

/// Whether the test should rewrite the table instead of failing: `UPDATE_DOCS=1`, or
/// `UPDATE_README=1`, its name from when the table lived in the README.
fn update_requested() -> bool {
    ["UPDATE_DOCS", "UPDATE_README"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| v == "1"))
}

/// The troubleshooting table of `docs/troubleshooting.md` (between `<!-- catalog:begin -->`
/// and `<!-- catalog:end -->`) is exactly `catalog::markdown_table()`, so every code, status,
/// cause and fix users read in the docs is what the proxy and `foundry-proxy check` answer.
///
/// With `UPDATE_DOCS=1` the test rewrites that part of the page from the catalog instead of
/// failing: `UPDATE_DOCS=1 cargo test --test integration readme::`.
#[test]
fn troubleshooting_table_is_the_catalog() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(PAGE);
    let page = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{PAGE}: {e}"));
    let start = page
        .find(BEGIN)
        .map(|at| at + BEGIN.len())
        .unwrap_or_else(|| panic!("{PAGE} has no `<!-- catalog:begin -->` line"));
    let end = start
        + page[start..].find(END).unwrap_or_else(|| {
            panic!("{PAGE} has no `<!-- catalog:end -->` line after the begin marker")
        });
    let table = markdown_table();
    if update_requested() {
        let updated = format!("{}{}{}", &page[..start], table, &page[end..]);
        if updated != page {
            std::fs::write(&path, updated).unwrap_or_else(|e| panic!("{PAGE}: {e}"));
        }
        return;
    }
    let current = &page[start..end];
    if current != table {
        let first_difference = current
            .lines()
            .zip(table.lines())
            .find(|(page_line, catalog_line)| page_line != catalog_line)
            .map(|(page_line, catalog_line)| {
                format!("page:    {page_line}\ncatalog: {catalog_line}")
            })
            .unwrap_or_else(|| {
                format!(
                    "the page's table has {} lines, the catalog {}",
                    current.lines().count(),
                    table.lines().count()
                )
            });
        panic!(
            "{PAGE}'s troubleshooting table differs from the catalog (src/diagnose/catalog.rs); \
             regenerate it with: UPDATE_DOCS=1 cargo test --test integration readme::\nfirst difference:\n{first_difference}"
        );
    }
}
