//! Per-key budgets: tokens per UTC day, tokens per UTC calendar month, and US dollars per UTC
//! calendar month (`tokens_per_day`, `tokens_per_month`, `usd_per_month` in the keys file).
//!
//! Like tokens per minute ([`crate::limits`]), a budget is checked before a request and
//! charged after its answer, when Azure has said what it used: the request that crosses the
//! budget finishes, and the key's next requests are refused until the period resets (UTC
//! midnight, or the first of the next month). Spend is kept per key name, so it survives
//! reloads of the keys file; [`Budgets::seed`] restores it from the usage ledger at start.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use time::{Date, Month, OffsetDateTime};

use crate::keys::Rules;

const DAY: i64 = 86_400;

/// Which budget refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// `tokens_per_day`
    TokensPerDay,
    /// `tokens_per_month`
    TokensPerMonth,
    /// `usd_per_month`
    UsdPerMonth,
}

impl Budget {
    /// The keys-file field.
    pub fn field(self) -> &'static str {
        match self {
            Budget::TokensPerDay => "tokens_per_day",
            Budget::TokensPerMonth => "tokens_per_month",
            Budget::UsdPerMonth => "usd_per_month",
        }
    }

    /// The budget a keys-file field names.
    pub fn from_field(field: &str) -> Option<Self> {
        [
            Budget::TokensPerDay,
            Budget::TokensPerMonth,
            Budget::UsdPerMonth,
        ]
        .into_iter()
        .find(|b| b.field() == field)
    }

    /// The refusal for this budget of `rules`, spent at `now` (Unix seconds): its limit as
    /// text and the time until its period resets.
    pub fn exhausted(self, rules: &Rules, now: i64) -> Exhausted {
        let (limit, until) = match self {
            Budget::TokensPerDay => (
                format!("{} tokens per UTC day", rules.tokens_per_day.unwrap_or(0)),
                day_end(now),
            ),
            Budget::TokensPerMonth => (
                format!(
                    "{} tokens per UTC month",
                    rules.tokens_per_month.unwrap_or(0)
                ),
                month_end(now),
            ),
            Budget::UsdPerMonth => (
                format!("${:.2} per UTC month", rules.usd_per_month.unwrap_or(0.0)),
                month_end(now),
            ),
        };
        Exhausted {
            budget: self,
            limit,
            retry_after: Duration::from_secs(u64::try_from((until - now).max(1)).unwrap_or(1)),
        }
    }
}

/// A refusal: which budget, its limit as text, and how long until its period resets.
#[derive(Debug, Clone, PartialEq)]
pub struct Exhausted {
    /// The budget that is spent.
    pub budget: Budget,
    /// What it allows, for the message (`200000 tokens per UTC day`, `$50.00 per UTC month`).
    pub limit: String,
    /// Until the period resets.
    pub retry_after: Duration,
}

/// One budget as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Standing {
    /// The keys-file field (`tokens_per_day`, …).
    pub budget: &'static str,
    /// What the budget allows per period.
    pub limit: f64,
    /// What this period has used.
    pub used: f64,
    /// What is left (never below 0).
    pub left: f64,
    /// When the period resets, RFC 3339 UTC.
    pub resets_at: String,
    /// Seconds until then.
    pub resets_in_secs: i64,
}

/// One key's spend in the current day and month.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    /// Days since the Unix epoch (UTC) that `day_tokens` counts.
    day: i64,
    day_tokens: u64,
    /// `year * 12 + month0` that the month fields count.
    month: i64,
    month_tokens: u64,
    month_usd: f64,
}

impl Spend {
    /// Clears the periods that have ended by `now`.
    fn roll(&mut self, now: i64) {
        let (day, month) = (day_of(now), month_of(now));
        if self.day != day {
            self.day = day;
            self.day_tokens = 0;
        }
        if self.month != month {
            self.month = month;
            self.month_tokens = 0;
            self.month_usd = 0.0;
        }
    }
}

/// Every key's spend. Shared by the request path (check, charge) and `/status` (standing).
#[derive(Debug, Default)]
pub struct Budgets {
    spend: Mutex<HashMap<String, Spend>>,
}

impl Budgets {
    /// No spend yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, key: &str, now: i64, f: impl FnOnce(&mut Spend) -> T) -> T {
        let mut spend = self
            .spend
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = spend.entry(key.to_owned()).or_default();
        entry.roll(now);
        f(entry)
    }

    /// `Ok` when every budget of `rules` has room at `now` (Unix seconds), else the first
    /// spent one.
    pub fn check(&self, key: &str, rules: &Rules, now: i64) -> Result<(), Exhausted> {
        if !rules.has_budget() {
            return Ok(());
        }
        let spend = self.with(key, now, |s| *s);
        spent(spend.day_tokens, spend.month_tokens, spend.month_usd, rules)
            .map_or(Ok(()), |budget| Err(budget.exhausted(rules, now)))
    }

    /// Adds an answer's tokens and cost to `key`'s spend.
    pub fn charge(&self, key: &str, tokens: u64, usd: Option<f64>, now: i64) {
        if tokens == 0 && usd.is_none_or(|usd| usd <= 0.0) {
            return;
        }
        self.with(key, now, |spend| {
            spend.day_tokens = spend.day_tokens.saturating_add(tokens);
            spend.month_tokens = spend.month_tokens.saturating_add(tokens);
            spend.month_usd += usd.unwrap_or(0.0);
        });
    }

    /// Restores spend recorded before a restart: `day_tokens` of today, and the month's tokens
    /// and dollars (from the usage ledger).
    pub fn seed(&self, key: &str, day_tokens: u64, month_tokens: u64, month_usd: f64, now: i64) {
        self.with(key, now, |spend| {
            spend.day_tokens = spend.day_tokens.max(day_tokens);
            spend.month_tokens = spend.month_tokens.max(month_tokens);
            spend.month_usd = spend.month_usd.max(month_usd);
        });
    }

    /// Each budget `rules` sets, with what is used and left and when it resets.
    pub fn standing(&self, key: &str, rules: &Rules, now: i64) -> Vec<Standing> {
        let spend = self.with(key, now, |s| *s);
        standing(
            spend.day_tokens,
            spend.month_tokens,
            spend.month_usd,
            rules,
            now,
        )
    }
}

/// The first budget of `rules` that this UTC day's tokens or this UTC month's tokens or
/// dollars have reached, if any.
pub fn spent(day_tokens: u64, month_tokens: u64, month_usd: f64, rules: &Rules) -> Option<Budget> {
    if rules.tokens_per_day.is_some_and(|l| day_tokens >= l) {
        Some(Budget::TokensPerDay)
    } else if rules.tokens_per_month.is_some_and(|l| month_tokens >= l) {
        Some(Budget::TokensPerMonth)
    } else if rules.usd_per_month.is_some_and(|l| month_usd >= l) {
        Some(Budget::UsdPerMonth)
    } else {
        None
    }
}

/// Each budget `rules` sets, given this UTC day's tokens and this UTC month's tokens and
/// dollars: what is used and left and when it resets.
pub fn standing(
    day_tokens: u64,
    month_tokens: u64,
    month_usd: f64,
    rules: &Rules,
    now: i64,
) -> Vec<Standing> {
    let row = |budget: Budget, limit: f64, used: f64, resets: i64| Standing {
        budget: budget.field(),
        limit,
        used,
        left: (limit - used).max(0.0),
        resets_at: rfc3339(resets),
        resets_in_secs: resets - now,
    };
    let mut rows = Vec::new();
    if let Some(limit) = rules.tokens_per_day {
        rows.push(row(
            Budget::TokensPerDay,
            limit as f64,
            day_tokens as f64,
            day_end(now),
        ));
    }
    if let Some(limit) = rules.tokens_per_month {
        rows.push(row(
            Budget::TokensPerMonth,
            limit as f64,
            month_tokens as f64,
            month_end(now),
        ));
    }
    if let Some(limit) = rules.usd_per_month {
        rows.push(row(Budget::UsdPerMonth, limit, month_usd, month_end(now)));
    }
    rows
}

fn day_of(now: i64) -> i64 {
    now.div_euclid(DAY)
}

fn month_of(now: i64) -> i64 {
    let date = date_of(now);
    i64::from(date.year()) * 12 + i64::from(u8::from(date.month())) - 1
}

fn date_of(now: i64) -> Date {
    OffsetDateTime::from_unix_timestamp(now)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
        .date()
}

/// The next UTC midnight after `now`.
pub fn day_end(now: i64) -> i64 {
    (day_of(now) + 1) * DAY
}

/// The first instant of the next UTC calendar month after `now`.
pub fn month_end(now: i64) -> i64 {
    let date = date_of(now);
    let (year, month) = match date.month() {
        Month::December => (date.year() + 1, Month::January),
        month => (date.year(), month.next()),
    };
    Date::from_calendar_date(year, month, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(now + 31 * DAY)
}

/// Unix seconds as RFC 3339 UTC.
pub fn rfc3339(at: i64) -> String {
    OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-31T23:59:00Z.
    const NEW_YEARS_EVE: i64 = 1_798_761_540;

    fn rules(day: Option<u64>, month: Option<u64>, usd: Option<f64>) -> Rules {
        Rules {
            tokens_per_day: day,
            tokens_per_month: month,
            usd_per_month: usd,
            ..Rules::default()
        }
    }

    /// Periods end at UTC midnight and on the first of the next month, across a year's end.
    #[test]
    fn period_ends() {
        assert_eq!(rfc3339(NEW_YEARS_EVE), "2026-12-31T23:59:00Z");
        assert_eq!(rfc3339(day_end(NEW_YEARS_EVE)), "2027-01-01T00:00:00Z");
        assert_eq!(rfc3339(month_end(NEW_YEARS_EVE)), "2027-01-01T00:00:00Z");
        let mid_feb = NEW_YEARS_EVE + 45 * DAY;
        assert_eq!(rfc3339(month_end(mid_feb)), "2027-03-01T00:00:00Z");
    }

    /// A budget admits while spend is below it, refuses once reached with retry-after until the
    /// reset, and the next period starts from zero.
    #[test]
    fn checked_before_charged_after() {
        let budgets = Budgets::new();
        let daily = rules(Some(100), None, None);
        assert!(budgets.check("a", &daily, NEW_YEARS_EVE).is_ok());
        budgets.charge("a", 99, None, NEW_YEARS_EVE);
        assert!(budgets.check("a", &daily, NEW_YEARS_EVE).is_ok());
        budgets.charge("a", 5, None, NEW_YEARS_EVE);
        let refused = budgets
            .check("a", &daily, NEW_YEARS_EVE)
            .expect_err("spent");
        assert_eq!(refused.budget, Budget::TokensPerDay);
        assert_eq!(refused.retry_after, Duration::from_secs(60));
        assert!(budgets.check("b", &daily, NEW_YEARS_EVE).is_ok(), "per key");
        assert!(
            budgets.check("a", &daily, NEW_YEARS_EVE + 60).is_ok(),
            "a new day"
        );
        let standing = budgets.standing("a", &daily, NEW_YEARS_EVE + 60);
        assert_eq!(standing[0].used, 0.0);
        assert_eq!(standing[0].left, 100.0);
    }

    /// Dollars add up per month; the refusal names the amount.
    #[test]
    fn dollars_per_month() {
        let budgets = Budgets::new();
        let monthly = rules(None, Some(1_000_000), Some(1.0));
        budgets.charge("a", 10, Some(0.6), NEW_YEARS_EVE - 10 * DAY);
        budgets.charge("a", 10, Some(0.5), NEW_YEARS_EVE);
        let refused = budgets
            .check("a", &monthly, NEW_YEARS_EVE)
            .expect_err("spent");
        assert_eq!(refused.budget, Budget::UsdPerMonth);
        assert_eq!(refused.limit, "$1.00 per UTC month");
        let standing = budgets.standing("a", &monthly, NEW_YEARS_EVE);
        assert_eq!(standing.len(), 2);
        assert_eq!(standing[0].used, 20.0);
        assert_eq!(standing[1].resets_at, "2027-01-01T00:00:00Z");
    }
}
