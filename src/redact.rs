//! A wrapper for client secrets and tokens whose `Debug` and `Display` never show the value.

use std::fmt;

use sha2::{Digest, Sha256};

/// A sensitive string: a client secret or an access token. Formatting prints `[REDACTED]`;
/// only [`Sensitive::expose`] gives the value, so every use is visible in review.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Sensitive(String);

impl Sensitive {
    pub fn new(value: impl Into<String>) -> Self {
        Sensitive(value.into())
    }

    /// The secret value itself. Call only where it is sent or stored, never to format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// First 12 hex digits of the value's SHA-256: enough to see a rotation, useless to an attacker.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..6])
    }

    /// Replaces every occurrence of this value in `text`, for messages that may quote a
    /// server's answer.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 {
            return text.to_string();
        }
        text.replace(&self.0, "[REDACTED]")
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl fmt::Display for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[REDACTED]")
    }
}

impl From<String> for Sensitive {
    fn from(s: String) -> Self {
        Sensitive(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_never_shows_the_value() {
        let s = Sensitive::new("hunter2-very-secret");
        assert_eq!(format!("{s}"), "[REDACTED]");
        assert_eq!(format!("{s:?}"), "[REDACTED]");
        assert_eq!(format!("{s:#?}"), "[REDACTED]");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            secret: Sensitive,
        }
        let held = format!("{:?}", Holder { secret: s.clone() });
        assert!(!held.contains("hunter2"), "{held}");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn fingerprint_is_a_short_stable_prefix() {
        let s = Sensitive::new("token");
        assert_eq!(s.fingerprint().len(), 12);
        assert_eq!(s.fingerprint(), Sensitive::new("token").fingerprint());
        assert_ne!(s.fingerprint(), Sensitive::new("token2").fingerprint());
    }

    #[test]
    fn scrub_removes_every_occurrence() {
        let s = Sensitive::new("abc123secret");
        assert_eq!(s.scrub("x abc123secret y abc123secret"), "x [REDACTED] y [REDACTED]");
    }
}
