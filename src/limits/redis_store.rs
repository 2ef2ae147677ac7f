//! The limiter's counters in Redis, shared by every replica: a reserve is one Lua script that checks every
//! limit of a key and takes from all of its counters, or from none (Redis runs a script atomically).
//! Counters are integers (`INCRBY`, never floats) that expire at the end of their window.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::Counter;

/// KEYS are a key's counters; ARGV holds, per counter, the amount to take, its limit (-1: none) and the
/// milliseconds until its window ends (relative, so the gateway's clock decides, not Redis's). Returns `{-1, after...}` or `{index, value}` of the first
/// limit that would be passed.
const RESERVE: &str = r"
local n = #KEYS
for i = 1, n do
  local amount = tonumber(ARGV[3 * i - 2])
  local limit = tonumber(ARGV[3 * i - 1])
  if limit >= 0 and amount > 0 then
    local v = tonumber(redis.call('GET', KEYS[i]) or '0')
    if v + amount > limit then
      return {i - 1, v}
    end
  end
end
local out = {-1}
for i = 1, n do
  out[i + 1] = redis.call('INCRBY', KEYS[i], ARGV[3 * i - 2])
  redis.call('PEXPIRE', KEYS[i], ARGV[3 * i])
end
return out
";

/// Applies settle deltas to counters that still exist (a window that ended is left alone), never below 0.
const ADJUST: &str = r"
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local v = redis.call('INCRBY', KEYS[i], ARGV[i])
    if v < 0 then
      redis.call('SET', KEYS[i], 0, 'KEEPTTL')
    end
  end
end
return 0
";

pub struct RedisCounters {
    conn: ConnectionManager,
    reserve: Arc<redis::Script>,
    adjust: Arc<redis::Script>,
}

impl RedisCounters {
    pub async fn connect(url: &str) -> Result<RedisCounters, String> {
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(2);
        let mut conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| format!("cannot connect to Redis: {e}"))?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| format!("Redis PING: {e}"))?;
        Ok(RedisCounters {
            conn,
            reserve: Arc::new(redis::Script::new(RESERVE)),
            adjust: Arc::new(redis::Script::new(ADJUST)),
        })
    }

    /// `Ok(Ok(after))`, `Ok(Err((index, value)))` when a limit would be passed, `Err` when Redis failed.
    pub async fn reserve(&self, list: &[Counter], now_ms: i64) -> Result<Result<Vec<i64>, (usize, i64)>, String> {
        let mut inv = self.reserve.prepare_invoke();
        for c in list {
            inv.key(&c.name).arg(c.amount).arg(c.limit.unwrap_or(-1)).arg((c.expires_at_ms - now_ms).max(1));
        }
        let out: Vec<i64> = inv.invoke_async(&mut self.conn.clone()).await.map_err(|e| e.to_string())?;
        match out.as_slice() {
            [-1, after @ ..] if after.len() == list.len() => Ok(Ok(after.to_vec())),
            [index, value] if *index >= 0 && (*index as usize) < list.len() => Ok(Err((*index as usize, *value))),
            _ => Err(format!("unexpected reply from the reserve script: {out:?}")),
        }
    }

    /// Settles in the background: the request is over, nobody waits for this.
    pub fn adjust(&self, changes: Vec<(String, i64)>) {
        if changes.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("cannot settle limits outside the runtime");
            return;
        };
        let (script, mut conn) = (self.adjust.clone(), self.conn.clone());
        runtime.spawn(async move {
            let mut inv = script.prepare_invoke();
            for (name, delta) in &changes {
                inv.key(name).arg(*delta);
            }
            if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
                tracing::error!(error = %e, "settling limits in Redis failed; holds stay until their window ends");
            }
        });
    }

    /// Writes counters that do not exist yet (a fresh or flushed Redis), from the ledger.
    pub async fn seed(&self, seeds: &[Counter], now_ms: i64) -> Result<(), String> {
        if seeds.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for c in seeds {
            pipe.cmd("SET")
                .arg(&c.name)
                .arg(c.amount)
                .arg("NX")
                .arg("PX")
                .arg((c.expires_at_ms - now_ms).max(1))
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn.clone()).await.map_err(|e| format!("seeding Redis counters: {e}"))
    }

    pub async fn values(&self, names: &[&str]) -> Result<Vec<i64>, String> {
        let values: Vec<Option<i64>> = redis::cmd("MGET")
            .arg(names)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| format!("reading Redis counters: {e}"))?;
        Ok(values.into_iter().map(Option::unwrap_or_default).collect())
    }
}
