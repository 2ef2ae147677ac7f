//! The limiter's counters in Redis, shared by every replica: a reserve is one Lua script that checks every
//! limit of a key and takes from all of its counters, or from none (Redis runs a script atomically).
//! Counters are integers (`INCRBY`, never floats) that expire at the end of their window.
//!
//! Redis is not the source of truth (the ledger is), so the counters survive Redis's own troubles:
//! - **A restart or flush empties them.** [`EPOCH`] marks counters seeded from the ledger; every reserve
//!   checks it in the same script, so no request is admitted against empty counters. Each replica reads
//!   the marker every [`HEALTH`]; when it is gone, every replica puts back the holds of its requests still
//!   running ([`RedisCounters::restore_live`], idempotent), one of them (a lock) waits [`SEED_WAIT`] for
//!   the others to notice and for usage rows to reach the database, adds the ledger's totals and sets a new
//!   marker. Requests wait out the rebuild with 503 `limits_unavailable`, and readiness fails meanwhile.
//!   A request that ends within that second may be counted twice (as a hold and as a ledger row), never
//!   not at all.
//! - **A stall past the reply deadline** (the script may still run when Redis wakes): the gateway answers
//!   503 and files a cancel, retried until Redis answers, that undoes the reservation if it ran, or leaves
//!   a tombstone the late reservation finds and obeys if it has not.
//! - **A settle that fails** is retried (for up to [`SETTLE_RETRY_FOR`]) in a form that applies only while
//!   the hold still stands, so a settle that did land the first time is not applied twice.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;

use super::Counter;

/// KEYS are a key's counters, then its holds hash, the hold's tombstone and [`EPOCH`]; ARGV holds, per
/// counter, the amount to take, its limit (-1: none) and the milliseconds until its window ends (relative,
/// so the gateway's clock decides, not Redis's), then the hold's field and what releasing it undoes
/// (JSON). Returns `{-1, after...}`, `{index, value}` of the first limit that would be passed, `{-2}`
/// when the counters are not seeded, `{-3}` when the gateway already gave this reservation up.
const RESERVE: &str = r"
local n = #KEYS - 3
if redis.call('EXISTS', KEYS[n + 3]) == 0 then
  return {-2}
end
if redis.call('DEL', KEYS[n + 2]) == 1 then
  return {-3}
end
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
/// the hold is still there and the change if a sweeper already released it, then the hold's field and
/// whether to apply only while the hold stands (1 on a retry: the first try may have landed).
/// Counters that no longer exist (their window ended) are left alone; none goes below 0.
const SETTLE: &str = r"
local n = #KEYS - 1
local held = redis.call('HDEL', KEYS[n + 1], ARGV[2 * n + 1])
if held == 0 and ARGV[2 * n + 2] == '1' then
  return 0
end
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

/// Gives up a reservation whose reply did not come in time: KEYS are its counters, the holds hash and the
/// tombstone; ARGV the hold's field, then per counter the amount that was taken. If the reservation ran,
/// it is undone (its hold is there); if not, a tombstone tells it not to run when it arrives.
const CANCEL: &str = r"
local n = #KEYS - 2
if redis.call('HDEL', KEYS[n + 1], ARGV[1]) == 1 then
  for i = 1, n do
    local a = tonumber(ARGV[i + 1])
    if a ~= 0 and redis.call('EXISTS', KEYS[i]) == 1 then
      local v = redis.call('DECRBY', KEYS[i], a)
      if v < 0 then
        redis.call('SET', KEYS[i], 0, 'KEEPTTL')
      end
    end
  end
  return 1
end
redis.call('SET', KEYS[n + 2], 1, 'PX', 120000)
return 0
";

/// Puts back the hold of a request still running after Redis lost it: KEYS are its counters and the holds
/// hash; ARGV per counter the amount it took and the milliseconds its window has left (0: ended), then the
/// hold's field and its release. Does nothing if the hold is there already.
const RESTORE: &str = r"
local n = #KEYS - 1
if redis.call('HSETNX', KEYS[n + 1], ARGV[2 * n + 1], ARGV[2 * n + 2]) == 0 then
  return 0
end
redis.call('PEXPIRE', KEYS[n + 1], 7200000)
for i = 1, n do
  local ttl = tonumber(ARGV[2 * i])
  if ttl > 0 then
    redis.call('INCRBY', KEYS[i], ARGV[2 * i - 1])
    if redis.call('PTTL', KEYS[i]) < 0 then
      redis.call('PEXPIRE', KEYS[i], ttl)
    end
  end
end
return 1
";

/// Set when the counters hold the ledger's totals; gone after a Redis restart or flush.
pub const EPOCH: &str = "sy:epoch";
/// The lock of the replica that rebuilds the counters.
const SEEDING: &str = "sy:seeding";
/// How often each replica reads [`EPOCH`] (also its health check of Redis).
pub const HEALTH: Duration = Duration::from_millis(500);
/// How long the rebuilding replica waits before reading the ledger: every replica notices within
/// [`HEALTH`] and puts its running requests back, and usage rows on their way reach the database.
const SEED_WAIT: Duration = Duration::from_secs(1);
/// How long a failed settle or a cancel is retried.
const SETTLE_RETRY_FOR: Duration = Duration::from_secs(120);
/// At most this many cancels wait for Redis at once (beyond, a given-up slot is freed by its expiry).
const MAX_PENDING_CANCELS: usize = 10_000;

/// How long a replica counts as alive after its last heartbeat.
const ALIVE_MS: u64 = 30_000;
/// How often a replica says it is alive and looks for holds of replicas that are not.
pub const HEARTBEAT: Duration = Duration::from_secs(10);

pub struct RedisCounters {
    conn: ConnectionManager,
    reserve: Arc<redis::Script>,
    settle: Arc<redis::Script>,
    release: Arc<redis::Script>,
    cancel: Arc<redis::Script>,
    restore: redis::Script,
    /// This process's name among the replicas: holds are filed under it.
    replica: String,
    next_hold: AtomicU64,
    /// Settles still on their way to Redis; a graceful stop waits for them.
    settling: tokio_util::task::TaskTracker,
    /// The holds of this replica's requests still running, by field: what to put back if Redis loses them.
    live: Arc<Mutex<HashMap<String, Live>>>,
    /// Settles take it shared, a restore exclusively: a request settles either before its hold is put
    /// back (and is not put back) or after (and finds it).
    restoring: Arc<tokio::sync::RwLock<()>>,
    /// The [`EPOCH`] this replica last saw.
    epoch: Mutex<Option<String>>,
    /// Redis answers and its counters are seeded.
    ready: AtomicBool,
    pending_cancels: Arc<AtomicUsize>,
}

/// A running request's hold, as it was taken.
#[derive(Clone)]
struct Live {
    hash: String,
    /// Each counter's name, the amount taken and when its window ends (Unix ms).
    counters: Vec<(String, i64, i64)>,
    release: String,
}

/// A hold in Redis: where it is filed, its tombstone if given up, and what releasing it would undo.
#[derive(Debug)]
pub struct Hold {
    pub hash: String,
    pub field: String,
    pub tombstone: String,
    pub release: Vec<i64>,
}

/// A reply did not come: the command may or may not have run (a refused connection means it was not sent).
fn ambiguous(e: &redis::RedisError) -> bool {
    !e.is_connection_refusal()
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
            cancel: Arc::new(redis::Script::new(CANCEL)),
            restore: redis::Script::new(RESTORE),
            replica: uuid::Uuid::now_v7().simple().to_string(),
            next_hold: AtomicU64::new(0),
            settling: tokio_util::task::TaskTracker::new(),
            live: Arc::default(),
            restoring: Arc::default(),
            epoch: Mutex::new(None),
            ready: AtomicBool::new(false),
            pending_cancels: Arc::default(),
        };
        counters.heartbeat().await?;
        Ok(counters)
    }

    /// A new hold for one of `key_id`'s requests; `release` is, per counter, what releasing it undoes.
    pub fn hold(&self, key_id: &str, release: Vec<i64>) -> Hold {
        let n = self.next_hold.fetch_add(1, Ordering::Relaxed);
        let field = format!("{}:{n}", self.replica);
        Hold {
            hash: format!("sy:{{{key_id}}}:holds"),
            tombstone: format!("sy:{{{key_id}}}:void:{field}"),
            field,
            release,
        }
    }

    /// Redis answers and its counters are seeded (readiness says so).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn set_ready(&self, ready: bool, why: &str) {
        if self.ready.swap(ready, Ordering::Relaxed) != ready {
            if ready {
                tracing::info!("the limits in Redis are available again");
            } else {
                tracing::warn!(
                    why,
                    "the limits in Redis are unavailable; virtual-key requests get 503 until they are back"
                );
            }
        }
    }

    /// Reads [`EPOCH`]. When it is gone (Redis restarted or was flushed), puts this replica's running
    /// requests back and, if this replica wins the lock, rebuilds the counters from `seeds` (the ledger's
    /// totals and the time they were read for) and sets a new marker; when it changed (another replica
    /// rebuilt while this one could not reach Redis), puts the running requests back.
    pub async fn check(
        &self,
        now_ms: i64,
        seeds: impl AsyncFnOnce() -> Result<(Vec<Counter>, i64), String>,
    ) -> Result<(), String> {
        let mut conn = self.conn.clone();
        let marker: Option<String> = match redis::cmd("GET").arg(EPOCH).query_async(&mut conn).await {
            Ok(m) => m,
            Err(e) => {
                self.set_ready(false, "Redis does not answer");
                return Err(format!("reading the counters' marker: {e}"));
            }
        };
        let known = self.epoch.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match marker {
            Some(m) if known.as_ref() == Some(&m) => {}
            Some(m) => {
                if known.is_some() {
                    self.heartbeat().await?;
                    self.restore_live(now_ms).await?;
                }
                *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) = Some(m);
            }
            None => {
                self.set_ready(false, "the counters are gone (a Redis restart or flush); rebuilding them");
                // Alive and holding what runs here before anyone sweeps or seeds.
                self.heartbeat().await?;
                self.restore_live(now_ms).await?;
                let won: Option<String> = redis::cmd("SET")
                    .arg(SEEDING)
                    .arg(&self.replica)
                    .arg("NX")
                    .arg("PX")
                    .arg(15_000)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| format!("taking the rebuild lock: {e}"))?;
                if won.is_none() {
                    return Ok(()); // Another replica rebuilds; the next check sees its marker.
                }
                tokio::time::sleep(SEED_WAIT).await;
                let rebuilt = async {
                    let (seeds, now_ms) = seeds().await?;
                    self.add(&seeds, now_ms).await?;
                    let m = uuid::Uuid::now_v7().simple().to_string();
                    redis::cmd("SET")
                        .arg(EPOCH)
                        .arg(&m)
                        .query_async::<()>(&mut conn)
                        .await
                        .map_err(|e| format!("setting the counters' marker: {e}"))?;
                    tracing::info!(counters = seeds.len(), "rebuilt the counters in Redis from the ledger");
                    Ok::<_, String>(m)
                }
                .await;
                let _: Result<i64, _> = redis::cmd("DEL").arg(SEEDING).query_async(&mut conn).await;
                *self.epoch.lock().unwrap_or_else(|p| p.into_inner()) = Some(rebuilt?);
            }
        }
        self.set_ready(true, "");
        Ok(())
    }

    /// Puts back the holds of this replica's running requests that Redis lost (idempotent).
    async fn restore_live(&self, now_ms: i64) -> Result<(), String> {
        let _exclusive = self.restoring.write().await;
        let live: Vec<(String, Live)> = {
            let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            live.iter().map(|(f, l)| (f.clone(), l.clone())).collect()
        };
        let mut conn = self.conn.clone();
        let mut restored = 0;
        for (field, l) in &live {
            let mut inv = self.restore.prepare_invoke();
            for (name, amount, ends) in &l.counters {
                inv.key(name).arg(*amount).arg((*ends - now_ms).max(0));
            }
            inv.key(&l.hash).arg(field).arg(&l.release);
            restored += inv.invoke_async::<i64>(&mut conn).await.map_err(|e| format!("restoring holds: {e}"))?;
        }
        if restored > 0 {
            tracing::info!(restored, "put back the holds of running requests that Redis lost");
        }
        Ok(())
    }

    /// Adds the ledger's totals to the counters (which hold only restored holds after a rebuild).
    async fn add(&self, seeds: &[Counter], now_ms: i64) -> Result<(), String> {
        for chunk in seeds.chunks(1000) {
            let mut pipe = redis::pipe();
            for c in chunk {
                pipe.cmd("INCRBY").arg(&c.name).arg(c.amount).ignore();
                pipe.cmd("PEXPIRE").arg(&c.name).arg((c.expires_at_ms - now_ms).max(1)).ignore();
            }
            pipe.query_async::<()>(&mut self.conn.clone()).await.map_err(|e| format!("seeding Redis counters: {e}"))?;
        }
        Ok(())
    }

    /// For tests that use the counters without a ledger: marks them seeded.
    #[cfg(test)]
    pub async fn mark_seeded(&self) {
        let _: () =
            redis::cmd("SET").arg(EPOCH).arg("test").arg("NX").query_async(&mut self.conn.clone()).await.unwrap();
        self.check(0, async || Ok((Vec::new(), 0))).await.unwrap();
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

    /// `Ok(Ok(after))`, `Ok(Err((index, value)))` when a limit would be passed, `Err` when Redis failed or
    /// its counters are being rebuilt. A reservation whose reply did not come is given up (see [`CANCEL`]).
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
        inv.key(&hold.hash).key(&hold.tombstone).key(EPOCH).arg(&hold.field).arg(&release);
        let out: Vec<i64> = match inv.invoke_async(&mut self.conn.clone()).await {
            Ok(out) => out,
            Err(e) => {
                if ambiguous(&e) {
                    self.give_up(list, hold);
                }
                return Err(e.to_string());
            }
        };
        match out.as_slice() {
            [-1, after @ ..] if after.len() == list.len() => {
                let live = Live {
                    hash: hold.hash.clone(),
                    counters: list.iter().map(|c| (c.name.clone(), c.amount, c.expires_at_ms)).collect(),
                    release,
                };
                self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(hold.field.clone(), live);
                Ok(Ok(after.to_vec()))
            }
            [index, value] if *index >= 0 && (*index as usize) < list.len() => Ok(Err((*index as usize, *value))),
            [-2] => {
                self.set_ready(false, "the counters are gone (a Redis restart or flush); rebuilding them");
                Err("the counters in Redis are being rebuilt from the ledger".into())
            }
            [-3] => Err("the reservation was given up before it ran".into()),
            _ => Err(format!("unexpected reply from the reserve script: {out:?}")),
        }
    }

    /// Files the cancel of a reservation whose reply did not come, retried until Redis answers.
    fn give_up(&self, list: &[Counter], hold: &Hold) {
        if self.pending_cancels.fetch_add(1, Ordering::Relaxed) >= MAX_PENDING_CANCELS {
            self.pending_cancels.fetch_sub(1, Ordering::Relaxed);
            tracing::error!("too many reservations wait to be given up; this one's slot is freed when it expires");
            return;
        }
        let (script, mut conn, pending) = (self.cancel.clone(), self.conn.clone(), self.pending_cancels.clone());
        let counters: Vec<(String, i64)> = list.iter().map(|c| (c.name.clone(), c.amount)).collect();
        let (hash, tombstone, field) = (hold.hash.clone(), hold.tombstone.clone(), hold.field.clone());
        self.settling.spawn(async move {
            let started = tokio::time::Instant::now();
            let mut delay = Duration::from_millis(100);
            loop {
                let mut inv = script.prepare_invoke();
                for (name, _) in &counters {
                    inv.key(name);
                }
                inv.key(&hash).key(&tombstone).arg(&field);
                for (_, amount) in &counters {
                    inv.arg(*amount);
                }
                match inv.invoke_async::<i64>(&mut conn).await {
                    Ok(_) => break,
                    Err(e) if started.elapsed() >= SETTLE_RETRY_FOR => {
                        tracing::error!(error = %e, "could not give up a reservation in Redis; its slot is freed when it expires");
                        break;
                    }
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
            pending.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Settles in the background: the request is over, nobody waits for this. `deltas` are the changes
    /// to make while the hold stands; if a sweeper released it meanwhile, the release is taken out. A
    /// failed settle is retried, applied only if the hold still stands.
    pub fn settle(&self, names: Vec<String>, deltas: Vec<i64>, hold: Hold) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::error!("cannot settle limits outside the runtime");
            return;
        };
        let (script, mut conn) = (self.settle.clone(), self.conn.clone());
        let (live, restoring) = (self.live.clone(), self.restoring.clone());
        self.settling.spawn_on(
            async move {
                let _shared = restoring.read().await;
                live.lock().unwrap_or_else(|p| p.into_inner()).remove(&hold.field);
                let started = tokio::time::Instant::now();
                let mut delay = Duration::from_millis(100);
                for attempt in 0u32.. {
                    let mut inv = script.prepare_invoke();
                    for ((name, delta), release) in names.iter().zip(&deltas).zip(&hold.release) {
                        inv.key(name).arg(*delta).arg(*delta - *release);
                    }
                    inv.key(&hold.hash).arg(&hold.field).arg(u8::from(attempt > 0));
                    match inv.invoke_async::<i64>(&mut conn).await {
                        Ok(_) => return,
                        Err(e) if started.elapsed() >= SETTLE_RETRY_FOR => {
                            tracing::error!(error = %e, "settling limits in Redis failed; the hold is released when it expires");
                            return;
                        }
                        Err(_) => {
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            },
            &runtime,
        );
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
