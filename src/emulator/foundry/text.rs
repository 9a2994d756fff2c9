//! The deterministic content the emulator answers with, and its token accounting.

use serde_json::{Value, json};

use crate::emulator::util::random_alnum;

/// What every chat-like answer starts with.
pub(crate) const GREETING: &str = "Hello from the foundry-proxy emulator.";

/// The answer to a prompt: a greeting that echoes the last user text.
pub(crate) fn answer(last_user: &str) -> String {
    let said = last_user.split_whitespace().collect::<Vec<_>>().join(" ");
    if said.is_empty() {
        GREETING.to_owned()
    } else {
        format!("{GREETING} You said: {said}")
    }
}

/// Splits an answer into stream chunks, one per word; with `count`, exactly that many chunks
/// (words are grouped, or the text is repeated, to fit). Joining the chunks gives the full text.
pub(crate) fn chunks(text: &str, count: Option<usize>) -> Vec<String> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let words = if words.is_empty() {
        vec![GREETING]
    } else {
        words
    };
    let n = count.unwrap_or(words.len()).max(1);
    let mut out = Vec::with_capacity(n);
    if n <= words.len() {
        for i in 0..n {
            let group = &words[i * words.len() / n..(i + 1) * words.len() / n];
            out.push(group.join(" "));
        }
    } else {
        out.extend((0..n).map(|i| words[i % words.len()].to_owned()));
    }
    let last = out.len() - 1;
    for chunk in &mut out[..last] {
        chunk.push(' ');
    }
    out
}

/// Approximate token count of some text: its words (at least one).
pub(crate) fn token_count(text: &str) -> u64 {
    (text.split_whitespace().count() as u64).max(1)
}

/// Text of a message `content`: a string, or an array of parts with `text` (Chat and Responses).
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// `(last user text, all input text)` of a list of chat messages.
pub(crate) fn from_messages(messages: Option<&Value>) -> (String, String) {
    let messages = messages
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let all = messages
        .iter()
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .collect::<Vec<_>>()
        .join(" ");
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    (last_user, all)
}

/// A `chatcmpl-…`-style id.
pub(crate) fn id(prefix: &str) -> String {
    format!("{prefix}{}", random_alnum(29))
}

/// The `system_fingerprint` Azure reports for the emulated models.
pub(crate) const SYSTEM_FINGERPRINT: &str = "fp_efad92c60b";

/// Azure's per-choice content filter verdict: everything safe.
pub(crate) fn content_filter_results() -> Value {
    let safe = json!({"filtered": false, "severity": "safe"});
    json!({"hate": safe, "self_harm": safe, "sexual": safe, "violence": safe})
}

/// Azure's `prompt_filter_results` for one prompt: everything safe, no jailbreak.
pub(crate) fn prompt_filter_results() -> Value {
    let mut results = content_filter_results();
    results["jailbreak"] = json!({"filtered": false, "detected": false});
    json!([{"prompt_index": 0, "content_filter_results": results}])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_rejoin_to_the_text() {
        let text = answer("ping  pong");
        assert_eq!(chunks(&text, None).concat(), text);
        assert_eq!(chunks(&text, Some(2)).concat(), text);
        assert_eq!(chunks(&text, Some(2)).len(), 2);
        assert_eq!(chunks(&text, Some(40)).len(), 40);
        assert_eq!(chunks("", Some(1)).len(), 1);
    }
}
