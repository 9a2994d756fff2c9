//! A wrapper for secret strings (client secrets, access tokens) that cannot leak by accident.
//!
//! `Secret` has a redacting `Debug`, no `Display` and no `Serialize`: the only way to read
//! the value is [`Secret::expose`], which makes every use easy to find in review.

use std::fmt;

/// A secret string: its `Debug` prints `Secret(<redacted>)` and it never serializes.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into_boxed_str())
    }

    /// The secret value itself. Call only where the value must be sent somewhere.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret is empty or only whitespace.
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debug output must never contain the value.
    #[test]
    fn debug_is_redacted() {
        let secret = Secret::new("abc~super-secret-value");
        let shown = format!("{secret:?} {:?}", Some(&secret));
        assert!(!shown.contains("super-secret"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
