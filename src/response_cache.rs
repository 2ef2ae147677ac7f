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

/// The cache's entries.
#[derive(Default)]
pub struct ResponseCache {
    inner: Mutex<Memory>,
    redis: Option<ConnectionManager>,
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
    /// A cache in memory, and in Redis when a connection is given.
    pub fn new(redis: Option<ConnectionManager>) -> Self {
        ResponseCache { inner: Mutex::default(), redis }
    }

    /// The answer kept under `key`, unless it expired: this replica's, else Redis's.
    pub async fn get(&self, key: &str) -> Option<Bytes> {
        if let Some(value) = self.local(key) {
            return Some(value);
        }
        let mut conn = self.redis.clone()?;
        let mut get = redis::cmd("GET");
        get.arg(format!("{PREFIX}{key}"));
        let read = get.query_async::<Option<Vec<u8>>>(&mut conn);
        match tokio::time::timeout(REDIS_WAIT, read).await {
            Ok(Ok(value)) => value.map(Bytes::from),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the response cache's Redis read failed");
                None
            }
            Err(_) => None,
        }
    }

    fn local(&self, key: &str) -> Option<Bytes> {
        let now = crate::clock::now_ms();
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.entries.get(key).filter(|(_, expires)| *expires > now).map(|(value, _)| value.clone())
    }

    /// Keeps `value` under `key` for `ttl` (in Redis without waiting), dropping this replica's oldest
    /// entries beyond the bound.
    pub fn put(&self, key: String, value: Bytes, ttl: Duration) {
        if value.len() > MAX_ENTRY {
            return;
        }
        if let Some(mut conn) = self.redis.clone() {
            let (redis_key, value, ms) = (format!("{PREFIX}{key}"), value.clone(), ttl.as_millis().max(1) as u64);
            tokio::spawn(async move {
                let set: Result<(), _> =
                    redis::cmd("SET").arg(redis_key).arg(value.as_ref()).arg("PX").arg(ms).query_async(&mut conn).await;
                if let Err(e) = set {
                    tracing::debug!(error = %e, "the response cache's Redis write failed");
                }
            });
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
