//! One SSE event's content: its `data` joined by the SSE rules, and byte-level reading of the
//! JSON inside without building it (is there a non-null `"usage"`? where is a top-level
//! `"usage":null` member?). JSON strings escape their quotes, so a quoted key followed by a
//! colon is never inside a string value.

use std::borrow::Cow;
use std::ops::Range;

/// An event's data, joined as the SSE rules say.
#[derive(Debug)]
pub(super) struct EventData<'a> {
    /// The `data` field values joined with `\n`; None when the event has no data line.
    pub(super) data: Option<Cow<'a, [u8]>>,
    /// Where the data starts in the event, when the event is a single `data:` line (the only
    /// shape rewritten in place).
    pub(super) single_line_at: Option<usize>,
}

pub(super) fn event_data(event: &[u8]) -> EventData<'_> {
    let mut data: Option<Cow<'_, [u8]>> = None;
    let mut first_value_at = 0;
    let mut lines = 0;
    let mut pos = 0;
    while pos < event.len() {
        let end = memchr::memchr2(b'\r', b'\n', &event[pos..]).map_or(event.len(), |n| pos + n);
        let line = &event[pos..end];
        let line_at = pos;
        pos = if event[end..].starts_with(b"\r\n") {
            end + 2
        } else {
            end + 1
        };
        if line.is_empty() {
            continue;
        }
        lines += 1;
        let (name, value_at) = match memchr::memchr(b':', line) {
            Some(colon) if line.get(colon + 1) == Some(&b' ') => (&line[..colon], colon + 2),
            Some(colon) => (&line[..colon], colon + 1),
            None => (line, line.len()),
        };
        if name != b"data" {
            continue;
        }
        let value = &line[value_at..];
        data = Some(match data {
            None => {
                first_value_at = line_at + value_at;
                Cow::Borrowed(value)
            }
            Some(joined) => {
                let mut joined = joined.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(value);
                Cow::Owned(joined)
            }
        });
    }
    let single_line_at = (lines == 1 && data.is_some()).then_some(first_value_at);
    EventData {
        data,
        single_line_at,
    }
}

fn skip_blanks(json: &[u8], mut i: usize) -> usize {
    while json
        .get(i)
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
    {
        i += 1;
    }
    i
}

/// Where a `"usage"` member starting at `at` has a null value: the end of the `null`.
fn usage_null_at(json: &[u8], at: usize) -> Option<usize> {
    let rest = json.get(at..)?.strip_prefix(b"\"usage\"")?;
    let colon = skip_blanks(json, json.len() - rest.len());
    if json.get(colon) != Some(&b':') {
        return None;
    }
    let value = skip_blanks(json, colon + 1);
    json[value..].starts_with(b"null").then_some(value + 4)
}

/// The quoted key searched for, with a searcher built once (building one per call cost more
/// than the search).
fn usage_key() -> &'static memchr::memmem::Finder<'static> {
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"usage\""));
    &FINDER
}

/// Where the first `"usage"` appears, if at all: most events (every content chunk) have no
/// such key, and need no closer look.
pub(super) fn first_usage_key(json: &[u8]) -> Option<usize> {
    usage_key().find(json)
}

/// Cheap pre-check before parsing: some `"usage"` key, from the one at `first` (found by
/// [`first_usage_key`], so the search before it is not repeated) on, has a value other than
/// `null`. (A quote inside a JSON string is escaped, so `"usage"` followed by a colon is always
/// a key.)
pub(super) fn may_carry_usage(json: &[u8], first: usize) -> bool {
    const KEY: &[u8] = b"\"usage\"";
    let mut at = first;
    loop {
        let colon = skip_blanks(json, at + KEY.len());
        if json.get(colon) == Some(&b':') {
            let value = skip_blanks(json, colon + 1);
            if value < json.len() && !json[value..].starts_with(b"null") {
                return true;
            }
        }
        match usage_key().find(&json[at + 1..]) {
            Some(found) => at += 1 + found,
            None => return false,
        }
    }
}

/// The byte range of a top-level `"usage": null` member in a JSON object, with the comma that
/// joins it to its neighbours, so that cutting it leaves the object without it.
pub(super) fn null_usage_member(json: &[u8]) -> Option<Range<usize>> {
    last_null_usage_member(json).or_else(|| scanned_null_usage_member(json))
}

/// JSON's blanks before `end`: where they begin.
fn skip_blanks_back(json: &[u8], mut end: usize) -> usize {
    while end > 0 && matches!(json[end - 1], b' ' | b'\t' | b'\r' | b'\n') {
        end -= 1;
    }
    end
}

/// The shape the upstream writes into every chunk when usage is asked for, found from the end
/// without scanning the object: `"usage":null` as its last member (`{…,"usage":null}`). The
/// `}` that ends the data closes the outermost object, so a member just before it is a top-level
/// one, and `"usage"` followed by a colon is a key, never text inside a string (a string's
/// quotes are escaped). The byte-by-byte scan ([`scanned_null_usage_member`]) cost more than
/// the rest of an event's path through the proxy.
fn last_null_usage_member(json: &[u8]) -> Option<Range<usize>> {
    const KEY: &[u8] = b"\"usage\"";
    let close = skip_blanks_back(json, json.len()).checked_sub(1)?;
    if json[close] != b'}' {
        return None;
    }
    let end = skip_blanks_back(json, close);
    let null_at = end.checked_sub(4)?;
    if &json[null_at..end] != b"null" {
        return None;
    }
    let colon = skip_blanks_back(json, null_at).checked_sub(1)?;
    if json[colon] != b':' {
        return None;
    }
    let key_at = skip_blanks_back(json, colon).checked_sub(KEY.len())?;
    if &json[key_at..key_at + KEY.len()] != KEY {
        return None;
    }
    let comma = skip_blanks_back(json, key_at).checked_sub(1)?;
    (json[comma] == b',').then_some(comma..end)
}

/// [`null_usage_member`] by a structural scan of the whole object, for any other shape (the
/// member first, or followed by others).
fn scanned_null_usage_member(json: &[u8]) -> Option<Range<usize>> {
    let mut depth = 0_usize;
    let mut in_string = false;
    let mut escaped = false;
    // The last comma between top-level members; None right after the opening brace.
    let mut separator = None;
    for (i, byte) in json.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if *byte == b'\\' {
                escaped = true;
            } else if *byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => {
                if depth == 1
                    && let Some(end) = usage_null_at(json, i)
                {
                    if let Some(comma) = separator {
                        return Some(comma..end);
                    }
                    // The first member: take the comma after it and the blanks after that.
                    let next = skip_blanks(json, end);
                    return Some(if json.get(next) == Some(&b',') {
                        i..skip_blanks(json, next + 1)
                    } else {
                        i..end
                    });
                }
                in_string = true;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => separator = Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `"usage":null` member is cut wherever it sits, only at the top level.
    #[test]
    fn null_member() {
        let cut = |json: &str| {
            null_usage_member(json.as_bytes()).map(|r| {
                let mut s = json.to_owned();
                s.replace_range(r, "");
                s
            })
        };
        assert_eq!(
            cut(r#"{"a":1,"usage":null}"#).as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert_eq!(
            cut(r#"{"usage":null,"a":1}"#).as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert_eq!(
            cut(r#"{"usage" : null , "a":1}"#).as_deref(),
            Some(r#"{"a":1}"#)
        );
        assert_eq!(cut(r#"{"usage":null}"#).as_deref(), Some("{}"));
        assert_eq!(
            cut(r#"{"a":[1,2],"usage":null,"b":{"c":2}}"#).as_deref(),
            Some(r#"{"a":[1,2],"b":{"c":2}}"#)
        );
        assert_eq!(cut(r#"{"a":{"usage":null}}"#), None);
        assert_eq!(cut(r#"{"a":"\",\"usage\":null"}"#), None);
        assert_eq!(cut(r#"{"usage":{"prompt_tokens":1}}"#), None);
        assert_eq!(cut("[DONE]"), None);
    }

    /// Wherever the quick look from the end answers, it answers as the full scan does; where it
    /// does not (the member not last, nested, or the only one), the scan still finds it.
    #[test]
    fn last_member_agrees_with_the_scan() {
        for json in [
            r#"{"a":1,"usage":null}"#,
            r#"{"a":1 , "usage" : null }  "#,
            r#"{"a":"}","b":[{"c":null}],"usage":null}"#,
            r#"{"x":"a\\","usage":null}"#,
            r#"{"a":{"b":1,"usage":null}}"#,
            r#"{"a":[1,{"usage":null}]}"#,
            r#"{"usage":null}"#,
            r#"{"usage":null,"a":1}"#,
            r#"{"a":1,"usage":null,"b":2}"#,
            r#"{"a":1,"usage":{"prompt_tokens":1}}"#,
            r#"{"a":"\"usage\":null}"}"#,
            "null}",
            "}",
            "",
        ] {
            let scanned = scanned_null_usage_member(json.as_bytes());
            if let Some(quick) = last_null_usage_member(json.as_bytes()) {
                assert_eq!(Some(quick), scanned, "{json}");
            }
            assert_eq!(null_usage_member(json.as_bytes()), scanned, "{json}");
        }
    }

    /// `may_carry_usage` looks at every `"usage"` from the first one found.
    #[test]
    fn carries_usage() {
        let carries = |json: &str| {
            first_usage_key(json.as_bytes())
                .is_some_and(|first| may_carry_usage(json.as_bytes(), first))
        };
        assert!(!carries(r#"{"a":1}"#));
        assert!(!carries(r#"{"a":1,"usage":null}"#));
        assert!(carries(
            r#"{"usage":null,"response":{"usage":{"input_tokens":1}}}"#
        ));
        assert!(carries(r#"{"usage" : {"prompt_tokens":1}}"#));
        assert!(!carries(r#"{"a":"\"usage\"","usage":null}"#));
    }
}
