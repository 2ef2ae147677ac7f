//! The response cache's entries (the policy, the key and the rendering are `http::cache`'s): kept in
//! this replica's memory, bounded in bytes (the oldest dropped first), each with its expiry. Losing an
//! entry is harmless (the next request asks the provider), so nothing here is durable.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

/// What this replica keeps at most, in bytes.
const MEMORY_BYTES: usize = 64 << 20;
/// The largest answer kept.
const MAX_ENTRY: usize = 1 << 20;

/// The cache's entries on this replica.
#[derive(Default)]
pub struct ResponseCache {
    inner: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    /// By key: the answer and when it expires (Unix ms).
    entries: HashMap<String, (Bytes, i64)>,
    /// Keys in the order they were written, oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

impl ResponseCache {
    /// The answer kept under `key`, unless it expired.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        let now = crate::clock::now_ms();
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.entries.get(key).filter(|(_, expires)| *expires > now).map(|(value, _)| value.clone())
    }

    /// Keeps `value` under `key` for `ttl`, dropping the oldest entries beyond the bound.
    pub fn put(&self, key: String, value: Bytes, ttl: Duration) {
        if value.len() > MAX_ENTRY {
            return;
        }
        let expires = crate::clock::now_ms() + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.bytes += value.len() + key.len();
        if let Some((old, _)) = inner.entries.insert(key.clone(), (value, expires)) {
            inner.bytes -= old.len() + key.len();
        } else {
            inner.order.push_back(key);
        }
        while inner.bytes > MEMORY_BYTES {
            let Some(oldest) = inner.order.pop_front() else { break };
            if let Some((old, _)) = inner.entries.remove(&oldest) {
                inner.bytes -= old.len() + oldest.len();
            }
        }
    }
}
