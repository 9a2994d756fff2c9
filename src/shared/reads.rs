//! What `/status` reads back from Redis: a key's spend this day and month, and the team's
//! usage per key and model over a range of UTC days.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{Shared, Unavailable, scripts};
use crate::metrics::UsageRow;

/// A key's spend this UTC day and month, across replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spend {
    /// Tokens this UTC day.
    pub day_tokens: u64,
    /// Tokens this UTC month.
    pub month_tokens: u64,
    /// Dollars this UTC month.
    pub month_usd: f64,
}

impl Shared {
    /// `key`'s spend on the UTC day and month of `now` (Unix seconds).
    pub async fn spend(self: &Arc<Self>, key: &str, now: i64) -> Result<Spend, Unavailable> {
        let day = crate::ledger::day(now);
        let mut pipe = redis::pipe();
        pipe.hget(scripts::day_spend(key, &day), "tokens")
            .hget(scripts::month_spend(key, &day[..7]), "tokens")
            .hget(scripts::month_spend(key, &day[..7]), "usd");
        let (day_tokens, month_tokens, month_usd): (Option<u64>, Option<u64>, Option<f64>) = self
            .read(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await?;
        Ok(Spend {
            day_tokens: day_tokens.unwrap_or(0),
            month_tokens: month_tokens.unwrap_or(0),
            month_usd: month_usd.unwrap_or(0.0),
        })
    }

    /// Usage per key and model summed over `days` (`YYYY-MM-DD`), sorted by key then model;
    /// only `key`'s rows when given.
    pub async fn usage(
        self: &Arc<Self>,
        days: &[String],
        key: Option<&str>,
    ) -> Result<Vec<UsageRow>, Unavailable> {
        let mut pipe = redis::pipe();
        for day in days {
            pipe.hgetall(scripts::usage_day(day));
        }
        let hashes: Vec<HashMap<String, f64>> = self
            .read(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await?;
        let mut rows: BTreeMap<(String, String), UsageRow> = BTreeMap::new();
        for (field, value) in hashes.iter().flatten() {
            let mut parts = field.splitn(3, scripts::FIELD_SEPARATOR);
            let (Some(metric), Some(name), Some(model)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if key.is_some_and(|k| k != name) {
                continue;
            }
            let row = rows
                .entry((name.to_owned(), model.to_owned()))
                .or_insert_with(|| UsageRow {
                    key: name.to_owned(),
                    model: model.to_owned(),
                    requests: 0,
                    errors: 0,
                    prompt_tokens: 0,
                    completion_tokens: 0,
                });
            // Counters are integers in Redis; the cost field is the only fraction and is not
            // part of these rows.
            let count = *value as u64;
            match metric {
                "requests" => row.requests += count,
                "errors" => row.errors += count,
                "prompt_tokens" => row.prompt_tokens += count,
                "completion_tokens" => row.completion_tokens += count,
                _ => {}
            }
        }
        Ok(rows.into_values().collect())
    }
}

/// The UTC days from the first of `now`'s month to `now`'s day, `YYYY-MM-DD`.
pub fn month_to_date(now: i64) -> Vec<String> {
    let today = crate::ledger::day(now);
    let mut days = Vec::new();
    let mut at = now;
    loop {
        let day = crate::ledger::day(at);
        if day[..7] != today[..7] {
            break;
        }
        days.push(day);
        at -= 86_400;
    }
    days.reverse();
    days
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-04T12:00:00Z holds four days of December; the first of a month holds one.
    #[test]
    fn month_to_date_days() {
        let days = month_to_date(1_796_385_600);
        assert_eq!(
            days,
            ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04"]
        );
        assert_eq!(month_to_date(1_796_086_800), ["2026-12-01"]);
    }
}
