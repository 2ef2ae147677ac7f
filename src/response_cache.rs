//! The response cache's entries (the policy, the key and the rendering are `http::cache`'s): kept in
//! this replica's memory, bounded in bytes (the oldest dropped first), each with its expiry, and, when
//! Redis is configured, in Redis too (`SET … PX`), so every replica answers from what any of them kept.
//! Losing an entry is harmless (the next request asks the provider), so nothing here is durable, a
//! write is never waited for, and a Redis read that does not answer within [`REDIS_WAIT`] is a miss.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;

/// The longest a request waits for Redis to say whether it holds an answer.
const REDIS_WAIT: Duration = Duration::from_millis(100);
/// Redis keys' prefix.
const PREFIX: &str = "switchyard:cache:";
/// What this replica keeps at most, in bytes.
const MEMORY_BYTES: usize = 64 << 20;
/// The largest answer kept.
const MAX_ENTRY: usize = 1 << 20;

/// The longest an entry lives in Redis, whatever its TTL: the Redis is shared with the limits' counters,
/// so the cache's footprint there stays bounded by recent traffic.
const REDIS_MAX_TTL: Duration = Duration::from_secs(3600);

/// The cache's entries.
#[derive(Default)]
pub struct ResponseCache {
    inner: Mutex<Memory>,
    redis: Option<ConnectionManager>,
}

/// A kept answer and when it was written (Unix ms).
#[derive(Debug, Clone)]
pub struct Kept {
    pub value: Bytes,
    pub written_at: i64,
}

struct Entry {
    value: Bytes,
    written_at: i64,
    expires: i64,
    /// Which write this is, so the eviction order's older mentions of its key do not remove it.
    generation: u64,
}

#[derive(Default)]
struct Memory {
    entries: HashMap<String, Entry>,
    /// Keys in the order they were written, oldest first, with the write's generation.
    order: VecDeque<(String, u64)>,
    next: u64,
    bytes: usize,
}

impl ResponseCache {
    /// A cache in memory, and in Redis when a connection is given.
    pub fn new(redis: Option<ConnectionManager>) -> Self {
        ResponseCache { inner: Mutex::default(), redis }
    }

    /// The answer kept under `key`, unless it expired: this replica's, else Redis's (whose value is the
    /// write time, 8 bytes big-endian, then the answer).
    pub async fn get(&self, key: &str) -> Option<Kept> {
        if let Some(kept) = self.local(key) {
            return Some(kept);
        }
        let mut conn = self.redis.clone()?;
        let mut get = redis::cmd("GET");
        get.arg(format!("{PREFIX}{key}"));
        let read = get.query_async::<Option<Vec<u8>>>(&mut conn);
        match tokio::time::timeout(REDIS_WAIT, read).await {
            Ok(Ok(Some(raw))) if raw.len() > 8 => {
                let (at, value) = raw.split_at(8);
                let written_at = i64::from_be_bytes(at.try_into().ok()?);
                Some(Kept { value: Bytes::copy_from_slice(value), written_at })
            }
            Ok(Ok(_)) => None,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the response cache's Redis read failed");
                None
            }
            Err(_) => None,
        }
    }

    fn local(&self, key: &str) -> Option<Kept> {
        let now = crate::clock::now_ms();
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner
            .entries
            .get(key)
            .filter(|e| e.expires > now)
            .map(|e| Kept { value: e.value.clone(), written_at: e.written_at })
    }

    /// Keeps `value` under `key` for `ttl` (in Redis without waiting, for at most [`REDIS_MAX_TTL`]),
    /// dropping this replica's oldest entries beyond the bound.
    pub fn put(&self, key: String, value: Bytes, ttl: Duration) {
        if value.len() > MAX_ENTRY {
            return;
        }
        let now = crate::clock::now_ms();
        if let Some(mut conn) = self.redis.clone() {
            let mut raw = Vec::with_capacity(8 + value.len());
            raw.extend_from_slice(&now.to_be_bytes());
            raw.extend_from_slice(&value);
            let (redis_key, ms) = (format!("{PREFIX}{key}"), ttl.min(REDIS_MAX_TTL).as_millis().max(1) as u64);
            tokio::spawn(async move {
                let set: Result<(), _> =
                    redis::cmd("SET").arg(redis_key).arg(raw).arg("PX").arg(ms).query_async(&mut conn).await;
                if let Err(e) = set {
                    tracing::debug!(error = %e, "the response cache's Redis write failed");
                }
            });
        }
        let expires = now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2);
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = inner.next;
        inner.next += 1;
        inner.bytes += value.len() + key.len();
        let entry = Entry { value, written_at: now, expires, generation };
        if let Some(old) = inner.entries.insert(key.clone(), entry) {
            inner.bytes -= old.value.len() + key.len();
        }
        inner.order.push_back((key, generation));
        // Over the bound, the oldest writes go; the order's mentions of rewritten keys are dropped as
        // they come up (and trimmed when they outnumber the entries), expired entries with them.
        while inner.bytes > MEMORY_BYTES || inner.order.len() > 4 * inner.entries.len().max(16) {
            let Some((oldest, generation)) = inner.order.pop_front() else { break };
            let (current, expired) = match inner.entries.get(&oldest) {
                Some(e) => (e.generation == generation, e.expires <= now),
                None => continue,
            };
            if expired || (current && inner.bytes > MEMORY_BYTES) {
                if let Some(old) = inner.entries.remove(&oldest) {
                    inner.bytes -= old.value.len() + oldest.len();
                }
            } else if current {
                inner.order.push_back((oldest, generation));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewritten_key_keeps_its_latest_answer_and_the_order_stays_bounded() {
        let cache = ResponseCache::new(None);
        for i in 0..1000 {
            cache.put("k".to_owned(), Bytes::from(format!("answer {i}")), Duration::from_secs(60));
        }
        assert_eq!(cache.local("k").unwrap().value, Bytes::from("answer 999"));
        let inner = cache.inner.lock().unwrap();
        assert!(inner.order.len() <= 64, "{}", inner.order.len());
        assert_eq!(inner.bytes, "answer 999".len() + 1);
    }

    #[test]
    fn past_the_bound_the_oldest_answers_go_first() {
        let cache = ResponseCache::new(None);
        let big = Bytes::from(vec![b'x'; MAX_ENTRY]);
        for i in 0..(MEMORY_BYTES / MAX_ENTRY + 8) {
            cache.put(format!("k{i}"), big.clone(), Duration::from_secs(60));
        }
        assert!(cache.local("k0").is_none(), "the oldest went");
        assert!(cache.local(&format!("k{}", MEMORY_BYTES / MAX_ENTRY + 7)).is_some(), "the newest stayed");
        assert!(cache.inner.lock().unwrap().bytes <= MEMORY_BYTES);
    }
}
