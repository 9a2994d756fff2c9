//! Small helpers shared by the Entra and Foundry halves: clocks, random ids, form decoding.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::Rng;
use rand::distr::Alphanumeric;

/// Time since the Unix epoch on the real clock: the one place the emulator reads it. "Now" in
/// seconds is [`Emulator::now_secs`](super::Emulator::now_secs), this plus the clock offset.
pub(crate) fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Milliseconds since the Unix epoch on the real clock (never shifted), for the arrival times
/// in the records, which tests compare with each other.
pub(crate) fn now_millis() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

/// `now` moved by `offset_secs`, saturating at the epoch and at `u64::MAX`.
pub(crate) fn shifted(now: u64, offset_secs: i64) -> u64 {
    now.saturating_add_signed(offset_secs)
}

/// Formats epoch seconds as Entra does inside AADSTS700024: `YYYY-MM-DDTHH:MM:SS.0000000Z`.
pub(crate) fn iso_timestamp(secs: u64) -> String {
    // Same calendar as `entra_timestamp`, with the `T` and the seven fraction digits Entra prints.
    let plain = entra_timestamp(secs);
    format!(
        "{}.0000000Z",
        plain.replacen(' ', "T", 1).trim_end_matches('Z')
    )
}

/// Formats epoch seconds the way Entra does in error bodies: `YYYY-MM-DD HH:MM:SSZ`.
pub(crate) fn entra_timestamp(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm, for days since 1970-01-01 (no date crate needed).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// A random string of ASCII letters and digits.
pub(crate) fn random_alnum(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A random v4 UUID in its usual hyphenated form.
pub(crate) fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Decodes an `application/x-www-form-urlencoded` body into ordered pairs.
pub(crate) fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut parts = pair.splitn(2, |b| *b == b'=');
            let key = percent_decode(parts.next().unwrap_or_default());
            let value = percent_decode(parts.next().unwrap_or_default());
            (key, value)
        })
        .collect()
}

/// Percent-decodes one form component (`+` is a space); invalid escapes are kept literally.
pub(crate) fn percent_decode(input: &[u8]) -> String {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < input.len() => match (hex(input[i + 1]), hex(input[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_entra_format() {
        assert_eq!(entra_timestamp(0), "1970-01-01 00:00:00Z");
        assert_eq!(entra_timestamp(1_709_251_199), "2024-02-29 23:59:59Z");
        assert_eq!(iso_timestamp(1_709_251_199), "2024-02-29T23:59:59.0000000Z");
    }

    #[test]
    fn shifted_clock_saturates() {
        assert_eq!(shifted(100, -30), 70);
        assert_eq!(shifted(100, 30), 130);
        assert_eq!(shifted(10, -30), 0);
    }

    #[test]
    fn form_decoding_handles_escapes() {
        let pairs = parse_form(b"scope=https%3A%2F%2Fx%2F.default&a=b+c&bad=%zz&e=");
        assert_eq!(pairs[0], ("scope".into(), "https://x/.default".into()));
        assert_eq!(pairs[1], ("a".into(), "b c".into()));
        assert_eq!(pairs[2], ("bad".into(), "%zz".into()));
        assert_eq!(pairs[3], ("e".into(), String::new()));
    }
}
