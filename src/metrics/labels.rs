//! Bounded label values: a caller chooses the `model` it sends, so a label taken from it
//! must not grow the number of series without limit.
//!
//! Each [`Bounded`] set admits the first `limit` distinct values it sees, each at most
//! [`MAX_LEN`] bytes and free of control characters; anything else is recorded as
//! [`OTHER`]. Admitted values are interned as `Arc<str>`, so the label structs built on the
//! hot path cost reference-count increments, not allocations.

use std::sync::{Arc, PoisonError, RwLock};

/// The value recorded for a label that is over the limit, too long or not printable.
pub const OTHER: &str = "other";
/// Longest label value kept as sent, in bytes.
pub const MAX_LEN: usize = 64;

/// A set of admitted label values, at most `limit` of them.
#[derive(Debug)]
pub(super) struct Bounded {
    /// Values admitted so far; written only while fewer than `limit` are held.
    seen: RwLock<foldhash::HashSet<Arc<str>>>,
    limit: usize,
    /// Shared `Arc` for the empty value's stand-in (`none`, `anonymous`).
    empty: Arc<str>,
    other: Arc<str>,
}

impl Bounded {
    /// A set admitting up to `limit` values; `""` is recorded as `empty`.
    pub(super) fn new(limit: usize, empty: &str) -> Self {
        Self {
            seen: RwLock::new(foldhash::HashSet::default()),
            limit,
            empty: Arc::from(empty),
            other: Arc::from(OTHER),
        }
    }

    /// The label value to record for `raw`.
    pub(super) fn get(&self, raw: &str) -> Arc<str> {
        if raw.is_empty() {
            return Arc::clone(&self.empty);
        }
        if raw.len() > MAX_LEN || raw.chars().any(char::is_control) {
            return Arc::clone(&self.other);
        }
        if let Some(found) = self
            .seen
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(raw)
        {
            return Arc::clone(found);
        }
        let mut seen = self.seen.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = seen.get(raw) {
            return Arc::clone(found);
        }
        if seen.len() >= self.limit {
            return Arc::clone(&self.other);
        }
        let value: Arc<str> = Arc::from(raw);
        seen.insert(Arc::clone(&value));
        value
    }
}

/// The route (the path after `/v1/`) as a metrics label: OpenAI API words kept, ids (`resp_…`, `file-…`, numbers)
/// collapsed to `:id`, so labels stay few.
pub fn route_label(rest: &str) -> std::borrow::Cow<'_, str> {
    const WORDS: &[&str] = &[
        "chat",
        "completions",
        "embeddings",
        "responses",
        "models",
        "audio",
        "images",
        "files",
        "batches",
        "transcriptions",
        "translations",
        "speech",
        "generations",
        "edits",
        "variations",
        "threads",
        "assistants",
        "runs",
        "messages",
        "steps",
        "vector_stores",
        "fine_tuning",
        "jobs",
        "uploads",
        "parts",
        "input_items",
        "cancel",
        "content",
        "moderations",
        "realtime",
        "sessions",
    ];
    // The common case (no ids in the path) borrows: no allocation per request.
    if rest.split('/').all(|segment| WORDS.contains(&segment)) {
        return std::borrow::Cow::Borrowed(rest);
    }
    let collapsed: Vec<&str> = rest
        .split('/')
        .map(|segment| {
            if WORDS.contains(&segment) {
                segment
            } else {
                ":id"
            }
        })
        .collect();
    std::borrow::Cow::Owned(collapsed.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first `limit` distinct values are kept; later new ones become `other`, while
    /// values already admitted keep their own label.
    #[test]
    fn admits_up_to_the_limit() {
        let bounded = Bounded::new(3, "none");
        for name in ["a", "b", "c"] {
            assert_eq!(&*bounded.get(name), name);
        }
        assert_eq!(&*bounded.get("d"), OTHER);
        assert_eq!(&*bounded.get("a"), "a", "admitted values stay");
        assert_eq!(&*bounded.get(""), "none");
    }

    /// Long or unprintable values never become labels, and do not use up the budget.
    #[test]
    fn long_and_control_values_are_other() {
        let bounded = Bounded::new(1, "none");
        assert_eq!(&*bounded.get(&"x".repeat(MAX_LEN + 1)), OTHER);
        assert_eq!(&*bounded.get("bad\nname"), OTHER);
        assert_eq!(&*bounded.get(&"y".repeat(MAX_LEN)), "y".repeat(MAX_LEN));
    }

    /// Ids in paths collapse so metrics labels stay bounded.
    #[test]
    fn routes_collapse_ids() {
        assert_eq!(route_label("chat/completions"), "chat/completions");
        assert_eq!(route_label("responses/resp_68af"), "responses/:id");
        assert_eq!(route_label("files/file-abc/content"), "files/:id/content");
    }
}
