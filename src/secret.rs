//! A string that must never be printed: provider credentials, the master key, virtual keys.
//! `Debug` and `Display` print a redaction; the value is reachable only through [`Secret::expose`],
//! so every place that uses the real value is easy to find.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    value: String,
    /// SHA-256 of the value, computed once: the master key is compared on every request.
    digest: [u8; 32],
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        let digest = Sha256::digest(value.as_bytes()).into();
        Self { value, digest }
    }

    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Compares in time independent of where the inputs differ (hashing first also hides the length).
    pub fn matches(&self, candidate: &str) -> bool {
        let b = Sha256::digest(candidate.as_bytes());
        self.digest.as_slice().ct_eq(b.as_slice()).into()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(*****)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("*****")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_format_their_value() {
        let s = Secret::new("sk-live-canary-123");
        assert!(!format!("{s:?} {s}").contains("canary"));
        assert!(s.matches("sk-live-canary-123"));
        assert!(!s.matches("sk-live-canary-124"));
    }
}
