//! The limiter's counters in Redis, shared by every replica: a reserve is one Lua script that checks every
//! limit of a key and takes from all of its counters, or from none (Redis runs a script atomically).
//! Counters are integers (`INCRBY`, never floats) that expire at the end of their window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::Counter;

/// KEYS are a key's counters, then its holds hash; ARGV holds, per counter, the amount to take, its limit
/// (-1: none) and the milliseconds until its window ends (relative, so the gateway's clock decides, not
/// Redis's), then the hold's field and what releasing it undoes (JSON). Returns `{-1, after...}` or
/// `{index, value}` of the first limit that would be passed.
const RESERVE: &str = r"
local n = #KEYS - 1
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
redis.call('HSET', KEYS[n + 1], ARGV[3 * n + 1], ARGV[3 * n + 2])
redis.call('PEXPIRE', KEYS[n + 1], 7200000)
return out
";

/// Settles a hold: KEYS are counters, then the holds hash; ARGV has, per counter, the change to make if
/// the hold is still there and the change if a sweeper already released it, then the hold's field.
/// Counters that no longer exist (their window ended) are left alone; none goes below 0.
const SETTLE: &str = r"
local n = #KEYS - 1
local held = redis.call('HDEL', KEYS[n + 1], ARGV[2 * n + 1])
for i = 1, n do
  local d = tonumber(ARGV[held == 1 and (2 * i - 1) or (2 * i)])
  if d ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
    local v = redis.call('INCRBY', KEYS[i], d)
    if v < 0 then
      redis.call('SET', KEYS[i], 0, 'KEEPTTL')
    end
  end
end
return held
";

/// Releases the hold of a replica that died: undoes what it holds (JSON pairs of counter and change) once.
/// The counters share the holds hash's slot (`{key id}`), so this also holds on a Redis Cluster.
const RELEASE: &str = r"
local spec = redis.call('HGET', KEYS[1], ARGV[1])
if not spec then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
for _, pair in ipairs(cjson.decode(spec)) do
  if redis.call('EXISTS', pair[1]) == 1 then
    local v = redis.call('INCRBY', pair[1], pair[2])
    if v < 0 then
      redis.call('SET', pair[1], 0, 'KEEPTTL')
    end
  end
end
return 1
";

/// How long a replica counts as alive after its last heartbeat.
const ALIVE_MS: u64 = 30_000;
/// How often a replica says it is alive and looks for holds of replicas that are not.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

pub struct RedisCounters {
    conn: ConnectionManager,
    reserve: Arc<redis::Script>,
    settle: Arc<redis::Script>,
    release: Arc<redis::Script>,
    /// This process's name among the replicas: holds are filed under it.
    replica: String,
    next_hold: AtomicU64,
    /// Settles still on their way to Redis; a graceful stop waits for them.
    settling: tokio_util::task::TaskTracker,
}

/// A hold in Redis: where it is filed and what releasing it would undo.
#[derive(Debug)]
pub struct Hold {
    pub hash: String,
    pub field: String,
    pub release: Vec<i64>,
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
        let counters = RedisCounters {
            conn,
            reserve: Arc::new(redis::Script::new(RESERVE)),
            settle: Arc::new(redis::Script::new(SETTLE)),
            release: Arc::new(redis::Script::new(RELEASE)),
            replica: uuid::Uuid::now_v7().simple().to_string(),
            next_hold: AtomicU64::new(0),
            settling: tokio_util::task::TaskTracker::new(),
        };
        counters.heartbeat().await?;
        Ok(counters)
    }

    /// A new hold for one of `key_id`'s requests; `release` is, per counter, what releasing it undoes.
    pub fn hold(&self, key_id: &str, release: Vec<i64>) -> Hold {
        let n = self.next_hold.fetch_add(1, Ordering::Relaxed);
        Hold { hash: format!("sy:{{{key_id}}}:holds"), field: format!("{}:{n}", self.replica), release }
    }

    /// Says this replica is alive (its holds are its own to settle).
    pub async fn heartbeat(&self) -> Result<(), String> {
        redis::cmd("SET")
            .arg(format!("sy:replica:{}", self.replica))
            .arg(1)
            .arg("PX")
            .arg(ALIVE_MS)
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| format!("Redis heartbeat: {e}"))
    }

    /// Says this replica is gone, once its last settles are written: after a graceful stop it holds
    /// nothing; after a crash, others sweep what it held.
    pub async fn retire(&self) {
        self.settling.close();
        if tokio::time::timeout(Duration::from_secs(5), self.settling.wait()).await.is_err() {
            tracing::warn!("some settles did not reach Redis; other replicas will release those holds");
        }
        let gone: Result<i64, _> =
            redis::cmd("DEL").arg(format!("sy:replica:{}", self.replica)).query_async(&mut self.conn.clone()).await;
        if let Err(e) = gone {
            tracing::warn!(error = %e, "could not retire this replica in Redis; its heartbeat expires on its own");
        }
    }

    /// Releases every hold of replicas that stopped without settling (a crash, a kill): their parallel slots,
    /// held tokens and worst-case spend come back. Returns how many holds were released.
    pub async fn sweep(&self) -> Result<usize, String> {
        let mut conn = self.conn.clone();
        let err = |e: redis::RedisError| format!("sweeping holds: {e}");
        let mut hashes: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg("sy:{*}:holds")
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await
                .map_err(err)?;
            hashes.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut alive: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
        let mut released = 0;
        for hash in hashes {
            let fields: Vec<String> = redis::cmd("HKEYS").arg(&hash).query_async(&mut conn).await.map_err(err)?;
            for field in fields {
                let Some((replica, _)) = field.split_once(':') else { continue };
                let live = match alive.get(replica) {
                    Some(live) => *live,
                    None => {
                        let live: bool = redis::cmd("EXISTS")
                            .arg(format!("sy:replica:{replica}"))
                            .query_async(&mut conn)
                            .await
                            .map_err(err)?;
                        alive.insert(replica.to_owned(), live);
                        live
                    }
                };
                if !live {
                    let n: i64 = self.release.key(&hash).arg(&field).invoke_async(&mut conn).await.map_err(err)?;
                    released += n as usize;
                }
            }
        }
        Ok(released)
    }

    /// `Ok(Ok(after))`, `Ok(Err((index, value)))` when a limit would be passed, `Err` when Redis failed.
    pub async fn reserve(
        &self,
        list: &[Counter],
        now_ms: i64,
        hold: &Hold,
    ) -> Result<Result<Vec<i64>, (usize, i64)>, String> {
        let mut inv = self.reserve.prepare_invoke();
        for c in list {
            inv.key(&c.name).arg(c.amount).arg(c.limit.unwrap_or(-1)).arg((c.expires_at_ms - now_ms).max(1));
        }
        let release: Vec<(&str, i64)> =
            list.iter().zip(&hold.release).filter(|(_, d)| **d != 0).map(|(c, d)| (c.name.as_str(), *d)).collect();
        let release = serde_json::to_string(&release).map_err(|e| e.to_string())?;
        inv.key(&hold.hash).arg(&hold.field).arg(release);
        let out: Vec<i64> = inv.invoke_async(&mut self.conn.clone()).await.map_err(|e| e.to_string())?;
        match out.as_slice() {
            [-1, after @ ..] if after.len() == list.len() => Ok(Ok(after.to_vec())),
            [index, value] if *index >= 0 && (*index as usize) < list.len() => Ok(Err((*index as usize, *value))),
            _ => Err(format!("unexpected reply from the reserve script: {out:?}")),
        }
    }

    /// Settles in the background: the request is over, nobody waits for this. `deltas` are the changes
    /// to make while the hold stands; if a sweeper released it meanwhile, the release is taken out.
    pub fn settle(&self, names: Vec<String>, deltas: Vec<i64>, hold: Hold) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("cannot settle limits outside the runtime");
            return;
        };
        let (script, mut conn) = (self.settle.clone(), self.conn.clone());
        self.settling.spawn_on(async move {
            let mut inv = script.prepare_invoke();
            for ((name, delta), release) in names.iter().zip(&deltas).zip(&hold.release) {
                inv.key(name).arg(*delta).arg(*delta - *release);
            }
            inv.key(&hold.hash).arg(&hold.field);
            if let Err(e) = inv.invoke_async::<i64>(&mut conn).await {
                tracing::error!(error = %e, "settling limits in Redis failed; the hold is released when it expires");
            }
        }, &runtime);
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
