//! API keys: the virtual-key format, its checksum and hash, and finding the key a request carries.
//!
//! A virtual key is `sk-sy-` + 40 random base62 characters + a 6-character checksum. The checksum lets a
//! malformed or mistyped key be refused without any lookup; the key itself is stored only as its SHA-256
//! hash plus a short display prefix. Callers may send their key the way their SDK does: `Authorization:
//! Bearer` (OpenAI), `x-api-key` (Anthropic), `x-goog-api-key` (Gemini) or `api-key` (Azure).

use http::HeaderMap;
use rand::RngExt;
use sha2::{Digest, Sha256};

use crate::secret::Secret;

pub const PREFIX: &str = "sk-sy-";
const BODY_LEN: usize = 40;
const CHECK_LEN: usize = 6;
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Headers a key may arrive in, in the order they are read.
const KEY_HEADERS: [&str; 3] = ["x-api-key", "x-goog-api-key", "api-key"];

/// A newly made key: the secret (shown once), its hash and its display prefix (stored).
pub struct NewKey {
    pub secret: Secret,
    pub hash: String,
    pub display_prefix: String,
}

pub fn generate() -> NewKey {
    generate_with(PREFIX)
}

/// An organisation's management key: the virtual-key shape under its own prefix, so neither can pass
/// for the other.
pub const MANAGEMENT_PREFIX: &str = "sk-sy-mgmt-";

pub fn generate_management() -> NewKey {
    generate_with(MANAGEMENT_PREFIX)
}

fn generate_with(prefix: &str) -> NewKey {
    let mut rng = rand::rng();
    let body: String = (0..BODY_LEN).map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())])).collect();
    let key = format!("{prefix}{body}{}", checksum(&body));
    let shown = key.chars().take(prefix.len() + 6).collect();
    NewKey { hash: hash(&key), display_prefix: shown, secret: Secret::new(key) }
}

/// A random token for sessions and CSRF: 32 bytes, URL-safe base62.
pub fn random_token() -> String {
    let mut rng = rand::rng();
    (0..43).map(|_| char::from(BASE62[rng.random_range(0..BASE62.len())])).collect()
}

fn checksum(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    let mut n =
        u64::from_be_bytes([digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7]]);
    (0..CHECK_LEN)
        .map(|_| {
            let c = BASE62[(n % 62) as usize];
            n /= 62;
            char::from(c)
        })
        .collect()
}

/// Whether `key` has the virtual-key shape and a valid checksum (no lookup needed to refuse it).
pub fn is_well_formed(key: &str) -> bool {
    well_formed_with(key, PREFIX)
}

/// [`is_well_formed`] for a management key.
pub fn is_management_key(key: &str) -> bool {
    well_formed_with(key, MANAGEMENT_PREFIX)
}

fn well_formed_with(key: &str, prefix: &str) -> bool {
    let Some(rest) = key.strip_prefix(prefix) else { return false };
    if rest.len() != BODY_LEN + CHECK_LEN || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (body, check) = rest.split_at(BODY_LEN);
    checksum(body) == check
}

/// The stored form of a key: hex SHA-256. Keys are long and random, so a fast hash is enough.
pub fn hash(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What admins see of a key: enough to recognise it, too little to use it.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(PREFIX.len() + 6).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// Two headers carry two different keys.
    Conflicting,
    /// One credential header is given more than once (whatever its values): which one a proxy in front
    /// read cannot be known, so neither is.
    Repeated(&'static str),
}

/// The key a request carries, from whichever header its SDK uses. The same key in headers of different
/// kinds is fine; two different keys, or one kind of header given twice, are refused rather than
/// guessed between.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<&str>, KeyError> {
    for name in std::iter::once("authorization").chain(KEY_HEADERS) {
        let mut values = headers.get_all(name).iter();
        if values.next().is_some() && values.next().is_some() {
            return Err(KeyError::Repeated(name));
        }
    }
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let others = KEY_HEADERS.iter().filter_map(|h| headers.get(*h)).filter_map(|v| v.to_str().ok()).map(str::trim);
    let mut found: Option<&str> = None;
    for key in bearer.into_iter().chain(others).filter(|k| !k.is_empty()) {
        match found {
            Some(existing) if existing != key => return Err(KeyError::Conflicting),
            _ => found = Some(key),
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn generated_keys_are_well_formed_and_a_changed_character_is_caught() {
        for _ in 0..100 {
            let k = generate();
            let key = k.secret.expose();
            assert!(is_well_formed(key), "{key}");
            assert!(key.len() >= PREFIX.len() + 32);
            assert_eq!(k.hash, hash(key));
            assert!(key.starts_with(&k.display_prefix) && k.display_prefix.len() < 16);
            let mut tampered = key.to_owned().into_bytes();
            let i = PREFIX.len() + 3;
            tampered[i] = if tampered[i] == b'a' { b'b' } else { b'a' };
            assert!(!is_well_formed(&String::from_utf8(tampered).unwrap()));
        }
        assert!(!is_well_formed("sk-sy-short"));
        assert!(!is_well_formed("sk-proj-0123456789012345678901234567890123456789012345"));
    }

    #[test]
    fn the_key_is_found_in_any_sdk_header_and_two_different_keys_are_refused() {
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h), Ok(None));
        h.insert("x-api-key", HeaderValue::from_static("k1"));
        assert_eq!(from_headers(&h), Ok(Some("k1")));
        h.insert("authorization", HeaderValue::from_static("Bearer k1"));
        assert_eq!(from_headers(&h), Ok(Some("k1")), "the same key twice is fine");
        h.insert("api-key", HeaderValue::from_static("k2"));
        assert_eq!(from_headers(&h), Err(KeyError::Conflicting));
        let mut g = HeaderMap::new();
        g.insert("x-goog-api-key", HeaderValue::from_static("g"));
        g.insert("authorization", HeaderValue::from_static("Basic abc"));
        assert_eq!(from_headers(&g), Ok(Some("g")), "a non-bearer Authorization is not a key");
        for name in ["authorization", "x-api-key", "x-goog-api-key", "api-key"] {
            let mut twice = HeaderMap::new();
            twice.append(name, HeaderValue::from_static("Bearer k1"));
            twice.append(name, HeaderValue::from_static("Bearer k1"));
            assert_eq!(from_headers(&twice), Err(KeyError::Repeated(name)), "{name} twice, even the same value");
        }
    }
}
