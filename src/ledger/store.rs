//! The SQLite file: schema (versioned with `PRAGMA user_version`), batched upserts, and the
//! queries behind `foundry-proxy usage --db` and the budgets restored at start.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::{Connection, OpenFlags, params};

/// The schema this build writes and reads.
pub const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS usage (
    key               TEXT    NOT NULL,
    model             TEXT    NOT NULL,
    day               TEXT    NOT NULL,  -- UTC, YYYY-MM-DD
    requests          INTEGER NOT NULL DEFAULT 0,
    errors            INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens     INTEGER NOT NULL DEFAULT 0,
    cost_usd          REAL    NOT NULL DEFAULT 0,
    PRIMARY KEY (key, model, day)
) WITHOUT ROWID;
";

/// Counts to add to one (key, model, day) row, or the sums of a report row.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Counts {
    /// Requests answered.
    pub requests: u64,
    /// Of which with a status of 400 or more.
    pub errors: u64,
    /// Input tokens (cached included).
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cached_tokens: u64,
    /// Cost in US dollars, when the model has a price.
    pub cost_usd: f64,
}

impl Counts {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &Counts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.cached_tokens += other.cached_tokens;
        self.cost_usd += other.cost_usd;
    }
}

/// A row's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RowKey {
    /// The access key's name (`anonymous` without keys).
    pub key: String,
    /// The model the client named (`none` without one).
    pub model: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
}

/// Opens (creating when absent) the ledger for writing: WAL mode, so readers never block the
/// writer and a crashed process loses nothing it committed; the schema created or checked.
pub fn open_for_writing(path: &Path) -> Result<Connection, String> {
    let conn = Connection::open(path).map_err(|e| e.to_string())?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("the file system does not allow WAL mode ({mode})"));
    }
    // NORMAL with WAL: a commit survives the process being killed; only a power loss can take
    // back the last commits.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(|e| e.to_string())?;
    let version = schema_version(&conn)?;
    if version == 0 {
        conn.execute_batch(SCHEMA).map_err(|e| e.to_string())?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| e.to_string())?;
    }
    Ok(conn)
}

/// Opens the ledger read-only, for reports; the file must exist and have a schema this build
/// reads.
pub fn open_for_reading(path: &Path) -> Result<Connection, String> {
    if !path.exists() {
        return Err(format!(
            "{} does not exist — point --db (or FOUNDRY_PROXY_USAGE_DB) at the proxy's ledger",
            path.display()
        ));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    match schema_version(&conn)? {
        0 => Err(format!(
            "{} is not a foundry-proxy usage ledger (no schema)",
            path.display()
        )),
        _ => Ok(conn),
    }
}

/// The file's schema version; an error for one newer than this build knows.
fn schema_version(conn: &Connection) -> Result<i64, String> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| format!("not a SQLite database ({e})"))?;
    if version > SCHEMA_VERSION {
        return Err(format!(
            "the ledger has schema version {version}, written by a newer foundry-proxy (this one reads {SCHEMA_VERSION}); upgrade, or use another file"
        ));
    }
    Ok(version)
}

/// Adds every row of `batch` in one transaction.
pub fn write_batch(conn: &mut Connection, batch: &HashMap<RowKey, Counts>) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO usage (key, model, day, requests, errors, prompt_tokens, completion_tokens, cached_tokens, cost_usd)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (key, model, day) DO UPDATE SET
               requests = requests + excluded.requests,
               errors = errors + excluded.errors,
               prompt_tokens = prompt_tokens + excluded.prompt_tokens,
               completion_tokens = completion_tokens + excluded.completion_tokens,
               cached_tokens = cached_tokens + excluded.cached_tokens,
               cost_usd = cost_usd + excluded.cost_usd",
        )?;
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for (row, counts) in batch {
            upsert.execute(params![
                row.key,
                row.model,
                row.day,
                n(counts.requests),
                n(counts.errors),
                n(counts.prompt_tokens),
                n(counts.completion_tokens),
                n(counts.cached_tokens),
                counts.cost_usd,
            ])?;
        }
    }
    tx.commit()
}

/// What one key has spent: tokens today and this month, dollars this month.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KeySpend {
    /// Tokens (prompt + completion) on `today`.
    pub day_tokens: u64,
    /// Tokens since `month_start`.
    pub month_tokens: u64,
    /// Dollars since `month_start`.
    pub month_usd: f64,
}

/// Each key's spend from `month_start` (`YYYY-MM-01`) on, with `today` apart.
pub fn spend_by_key(
    conn: &Connection,
    today: &str,
    month_start: &str,
) -> rusqlite::Result<HashMap<String, KeySpend>> {
    let mut query = conn.prepare(
        "SELECT key,
                SUM(CASE WHEN day = ?1 THEN prompt_tokens + completion_tokens ELSE 0 END),
                SUM(prompt_tokens + completion_tokens),
                SUM(cost_usd)
         FROM usage WHERE day >= ?2 GROUP BY key",
    )?;
    let rows = query.query_map(params![today, month_start], |row| {
        let count = |i: usize| row.get::<_, i64>(i).map(|v| u64::try_from(v).unwrap_or(0));
        Ok((
            row.get::<_, String>(0)?,
            KeySpend {
                day_tokens: count(1)?,
                month_tokens: count(2)?,
                month_usd: row.get(3)?,
            },
        ))
    })?;
    rows.collect()
}

/// A report row: the grouping columns (absent when not grouped by) and the sums.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ReportRow {
    /// The key, when grouped by key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The model, when grouped by model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The day, when grouped by day.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// The sums.
    #[serde(flatten)]
    pub counts: Counts,
}

/// What a report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum By {
    /// Per access key.
    Key,
    /// Per model.
    Model,
    /// Per UTC day.
    Day,
}

impl By {
    fn column(self) -> &'static str {
        match self {
            By::Key => "key",
            By::Model => "model",
            By::Day => "day",
        }
    }
}

/// The sums per `by` group for days from `since` to `until` (inclusive, `YYYY-MM-DD`), ordered
/// by the grouping columns.
pub fn report(
    conn: &Connection,
    by: &[By],
    since: Option<&str>,
    until: Option<&str>,
) -> rusqlite::Result<Vec<ReportRow>> {
    let columns: Vec<&str> = by.iter().map(|b| b.column()).collect();
    let select = columns.iter().map(|c| format!("{c}, ")).collect::<String>();
    let group = if columns.is_empty() {
        String::new()
    } else {
        format!("GROUP BY {0} ORDER BY {0}", columns.join(", "))
    };
    // The column names come from `By`, never from the caller's text.
    let sql = format!(
        "SELECT {select} SUM(requests), SUM(errors), SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(cost_usd)
         FROM usage WHERE (?1 IS NULL OR day >= ?1) AND (?2 IS NULL OR day <= ?2) {group}"
    );
    let mut query = conn.prepare(&sql)?;
    let rows = query.query_map(params![since, until], |row| {
        let mut out = ReportRow::default();
        for (i, b) in by.iter().enumerate() {
            let value: String = row.get(i)?;
            match b {
                By::Key => out.key = Some(value),
                By::Model => out.model = Some(value),
                By::Day => out.day = Some(value),
            }
        }
        let at = by.len();
        let count = |i: usize| {
            row.get::<_, Option<i64>>(at + i)
                .map(|v| u64::try_from(v.unwrap_or(0)).unwrap_or(0))
        };
        out.counts = Counts {
            requests: count(0)?,
            errors: count(1)?,
            prompt_tokens: count(2)?,
            completion_tokens: count(3)?,
            cached_tokens: count(4)?,
            cost_usd: row.get::<_, Option<f64>>(at + 5)?.unwrap_or(0.0),
        };
        Ok(out)
    })?;
    let rows: Vec<ReportRow> = rows.collect::<rusqlite::Result<_>>()?;
    // Without grouping, SQLite answers one row of NULL sums even for an empty range.
    Ok(rows
        .into_iter()
        .filter(|r| r.counts.requests > 0 || !by.is_empty())
        .collect())
}
