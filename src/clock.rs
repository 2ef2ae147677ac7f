//! Wall-clock time as Unix milliseconds, and the injectable clock that limits, retention and tests share.
//! A leaf: it imports nothing of ours.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; tests substitute their own (to cross midnight, or expire rows).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system's wall clock in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or_default()
}

/// The system clock as a [`Clock`].
pub fn system() -> Clock {
    Arc::new(now_ms)
}
