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

/// Whether `"usage"` appears at all: most events (every content chunk) have no such key, and
/// need no closer look.
pub(super) fn mentions_usage(json: &[u8]) -> bool {
    usage_key().find(json).is_some()
}

/// Cheap pre-check before parsing: some `"usage"` key has a value other than `null`. (A quote
/// inside a JSON string is escaped, so `"usage"` followed by a colon is always a key.)
pub(super) fn may_carry_usage(json: &[u8]) -> bool {
    const KEY: &[u8] = b"\"usage\"";
    let mut from = 0;
    while let Some(found) = usage_key().find(&json[from..]) {
        let at = from + found;
        let colon = skip_blanks(json, at + KEY.len());
        if json.get(colon) == Some(&b':') {
            let value = skip_blanks(json, colon + 1);
            if value < json.len() && !json[value..].starts_with(b"null") {
                return true;
            }
        }
        from = at + 1;
    }
    false
}

/// The byte range of a top-level `"usage": null` member in a JSON object, with the comma that
/// joins it to its neighbours, so that cutting it leaves the object without it.
pub(super) fn null_usage_member(json: &[u8]) -> Option<Range<usize>> {
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
}
