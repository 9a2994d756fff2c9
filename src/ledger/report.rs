//! `foundry-proxy usage --db PATH`: the ledger read straight from its file, summed per key,
//! model or day over a range of UTC days, as a table, JSON or CSV.

use std::path::Path;

use super::store::{self, By, ReportRow};

/// How the report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An aligned table with a totals line.
    Table,
    /// A JSON array of rows.
    Json,
    /// CSV with a header line.
    Csv,
}

/// Reads `db` and renders the rows grouped `by`, for UTC days from `since` to `until`
/// (inclusive; `YYYY-MM-DD`, or an RFC 3339 time whose UTC day is taken). Errors are one line.
pub fn render(
    db: &Path,
    by: &[By],
    since: Option<&str>,
    until: Option<&str>,
    format: Format,
) -> Result<String, String> {
    let since = since.map(|d| utc_day(d, "--since")).transpose()?;
    let until = until.map(|d| utc_day(d, "--until")).transpose()?;
    let conn = store::open_for_reading(db)?;
    let rows = store::report(&conn, by, since.as_deref(), until.as_deref())
        .map_err(|e| format!("{}: {e}", db.display()))?;
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())? + "\n",
        Format::Csv => csv(by, &rows),
        Format::Table => table(by, &rows),
    })
}

/// A day as `YYYY-MM-DD`, from that form or from RFC 3339 (in UTC).
fn utc_day(text: &str, flag: &str) -> Result<String, String> {
    let text = text.trim();
    let date_only = time::macros::format_description!("[year]-[month]-[day]");
    if let Ok(date) = time::Date::parse(text, date_only) {
        return Ok(date.to_string());
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|at| super::day(at.unix_timestamp()))
        .map_err(|_| {
            format!("{flag} {text:?}: use a UTC day such as 2026-12-01, or an RFC 3339 time")
        })
}

fn header(by: &[By]) -> Vec<String> {
    by.iter()
        .map(|b| match b {
            By::Key => "KEY",
            By::Model => "MODEL",
            By::Day => "DAY",
        })
        .chain([
            "REQUESTS",
            "ERRORS",
            "PROMPT",
            "COMPLETION",
            "CACHED",
            "TOTAL",
            "COST_USD",
        ])
        .map(str::to_owned)
        .collect()
}

fn cells(by: &[By], row: &ReportRow) -> Vec<String> {
    let n = &row.counts;
    by.iter()
        .map(|b| {
            match b {
                By::Key => &row.key,
                By::Model => &row.model,
                By::Day => &row.day,
            }
            .clone()
            .unwrap_or_default()
        })
        .chain([
            n.requests.to_string(),
            n.errors.to_string(),
            n.prompt_tokens.to_string(),
            n.completion_tokens.to_string(),
            n.cached_tokens.to_string(),
            n.prompt_tokens
                .saturating_add(n.completion_tokens)
                .to_string(),
            format!("{:.4}", n.cost_usd),
        ])
        .collect()
}

fn table(by: &[By], rows: &[ReportRow]) -> String {
    let mut total = ReportRow::default();
    for row in rows {
        total.counts.add(&row.counts);
    }
    let mut lines: Vec<Vec<String>> = vec![header(by)];
    lines.extend(rows.iter().map(|r| cells(by, r)));
    let mut last = cells(by, &total);
    if let Some(first) = last.first_mut().filter(|_| !by.is_empty()) {
        "total".clone_into(first);
    }
    lines.push(last);
    let left: Vec<usize> = (0..by.len()).collect();
    crate::table::aligned(&lines, &left)
}

fn csv(by: &[By], rows: &[ReportRow]) -> String {
    let field = |cell: &str| {
        if cell.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", cell.replace('"', "\"\""))
        } else {
            cell.to_owned()
        }
    };
    let mut out = String::new();
    let header: Vec<String> = header(by).iter().map(|h| h.to_ascii_lowercase()).collect();
    for line in std::iter::once(header).chain(rows.iter().map(|r| cells(by, r))) {
        let line: Vec<String> = line.iter().map(|c| field(c)).collect();
        out.push_str(&line.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Days are taken as written or from RFC 3339 in UTC; anything else names the flag.
    #[test]
    fn days() {
        assert_eq!(
            utc_day("2026-12-01", "--since").as_deref(),
            Ok("2026-12-01")
        );
        assert_eq!(
            utc_day("2026-12-01T23:30:00-02:00", "--since").as_deref(),
            Ok("2026-12-02")
        );
        let error = utc_day("yesterday", "--until").expect_err("not a day");
        assert!(error.starts_with("--until \"yesterday\""), "{error}");
    }

    /// CSV quotes what needs quoting; the header is lowercase.
    #[test]
    fn csv_quoting() {
        let row = ReportRow {
            model: Some("odd,\"name\"".to_owned()),
            counts: super::super::store::Counts {
                requests: 2,
                ..Default::default()
            },
            ..ReportRow::default()
        };
        let text = csv(&[By::Model], &[row]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("model,requests,errors"), "{text}");
        assert!(lines[1].starts_with("\"odd,\"\"name\"\"\",2,"), "{text}");
    }
}
