//! Admission: daily and monthly prompt quotas per key, reserved atomically before a request goes upstream.
//!
//! One mutex-guarded reserve per request (check and increment together, never check-then-act), so with R
//! prompts left and many more requests at once exactly R are admitted. Counts live in memory and are
//! rebuilt at start from the usage ledger, the source of truth; a reservation that served nothing is
//! refunded. Windows are calendar-aligned in UTC. Single replica: several replicas need the Redis counters
//! that the tenancy work adds (a Lua reserve script) — until then, run one replica per database.

use std::collections::HashMap;
use std::sync::Mutex;

mod redis_store;

use crate::store::Store;

const DAY_MS: i64 = 86_400_000;

pub use crate::clock::Clock;

/// Which calendar windows a moment falls in, and when they end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    pub day: i64,
    pub month: i64,
    pub day_ends_ms: i64,
    pub month_ends_ms: i64,
}

impl Windows {
    pub fn at(ms: i64) -> Windows {
        let day = ms.div_euclid(DAY_MS);
        let (y, m, _) = civil_from_days(day);
        let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Windows {
            day,
            month: y * 12 + i64::from(m) - 1,
            day_ends_ms: (day + 1) * DAY_MS,
            month_ends_ms: days_from_civil(ny, nm, 1) * DAY_MS,
        }
    }

    pub fn month_start_ms(&self) -> i64 {
        let (y, m) = (self.month.div_euclid(12), (self.month.rem_euclid(12) + 1) as u32);
        days_from_civil(y, m, 1) * DAY_MS
    }
}

/// The first and the end (exclusive) of a UTC calendar month, in Unix milliseconds.
pub fn month_bounds(year: i64, month: u32) -> Option<(i64, i64)> {
    if !(1..=12).contains(&month) || !(1970..=9999).contains(&year) {
        return None;
    }
    let (ny, nm) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
    Some((days_from_civil(year, month, 1) * DAY_MS, days_from_civil(ny, nm, 1) * DAY_MS))
}

/// `YYYY-MM` of the month a moment falls in.
pub fn month_string(ms: i64) -> String {
    let (y, m, _) = civil_from_days(ms.div_euclid(DAY_MS));
    format!("{y:04}-{m:02}")
}

/// `YYYY-MM-DD` for a day number (days since 1970-01-01).
pub fn date_string(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A moment (Unix milliseconds) as RFC 3339 in UTC: `2027-01-01T00:00:00Z`, with `.mmm` when the
/// milliseconds are not zero.
pub fn rfc3339(ms: i64) -> String {
    let (day, in_day) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
    let (y, m, d) = civil_from_days(day);
    let (h, min, sec, milli) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    if milli == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{sec:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{sec:02}.{milli:03}Z")
    }
}

/// An RFC 3339 date-time (`2027-01-01T00:00:00Z`, `…T09:30:00.5+02:00`; `t` and a space for `T`
/// accepted, as the RFC allows) or a bare date (`2027-01-01`, midnight UTC) as Unix milliseconds.
/// Fractions beyond milliseconds are cut; years 1970 to 9999 only.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let days_in = [
        31,
        if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if y < 1970 || !(1..=12).contains(&mo) || d < 1 || d > days_in[(mo - 1) as usize] {
        return None;
    }
    let day_ms = days_from_civil(y, mo as u32, d as u32) * DAY_MS;
    if b.len() == 10 {
        return Some(day_ms);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 20 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, sec) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if h > 23 || mi > 59 || sec > 60 || (sec == 60 && mi != 59) {
        return None;
    }
    let mut i = 19;
    let mut milli = 0;
    if b[i] == b'.' {
        let start = i + 1;
        i = start;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &s[start..i];
        milli = format!("{:0<3}", &frac[..frac.len().min(3)]).parse::<i64>().ok()?;
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (digits(i + 1..i + 3)?, digits(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = (oh * 60 + om) * 60_000;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    // A leap second is the last millisecond's neighbour: counted as :59.999.
    let sec_ms = if sec == 60 { 59_999 } else { sec * 1000 + milli };
    Some(day_ms + h * 3_600_000 + mi * 60_000 + sec_ms - offset).filter(|ms| *ms >= 0)
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The calendar period of a USD budget, aligned in UTC (weeks start on Monday).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    #[default]
    Month,
}

impl Period {
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "day" | "daily" => Some(Period::Day),
            "week" | "weekly" => Some(Period::Week),
            "month" | "monthly" => Some(Period::Month),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// A key's limits (its own settings over its plan's); `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub daily: Option<i64>,
    pub monthly: Option<i64>,
    /// Requests per minute (a fixed window aligned to the UTC minute).
    pub rpm: Option<i64>,
    /// Tokens per minute: prompt and completion, held at admission and settled to the actual.
    pub tpm: Option<i64>,
    pub max_parallel: Option<i64>,
    pub budget_micros: Option<i64>,
    pub budget_period: Period,
    /// Tokens a month included in the plan; more is metered as overage, never refused.
    pub monthly_token_allowance: Option<i64>,
}

/// What one request holds while it runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ask {
    /// 1 for a chat prompt; 0 for requests that use no prompt quota (embeddings, moderations).
    pub prompts: i64,
    /// Held against tokens per minute: the prompt estimate plus the output asked for.
    pub tokens: i64,
    /// The worst-case cost in micro-USD, held against the budget.
    pub cost_micros: i64,
}

/// What a request used in the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Used {
    /// Whether it used its prompt (a provider took it on); otherwise the prompt is given back.
    pub prompt_counted: bool,
    pub tokens: i64,
    pub cost_micros: i64,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Parallel,
    Rpm,
    Tpm,
    DailyPrompts,
    MonthlyPrompts,
    Budget(Period),
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub limit: Limit,
    /// The limit's value.
    pub max: i64,
    /// What was in use when the request came.
    pub used: i64,
    /// What the request asked for.
    pub asked: i64,
    /// When the window ends (`None` for max parallel, which frees up as requests finish).
    pub resets_at_ms: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    #[error("limit reached")]
    Exceeded(Exceeded),
    /// The shared counters (Redis) could not be reached; limits are not waived, so the request is refused.
    #[error("the limits store is unavailable: {0}")]
    Unavailable(String),
}

// One request touches these counters of its key, in this order (the order limits are checked in).
const PAR: usize = 0;
const RPM: usize = 1;
const TPM: usize = 2;
const PROMPTS_DAY: usize = 3;
const PROMPTS_MONTH: usize = 4;
const SPEND_DAY: usize = 5;
const SPEND_WEEK: usize = 6;
const SPEND_MONTH: usize = 7;
const TOKENS_MONTH: usize = 8;
pub(crate) const COUNTERS: usize = 9;

/// How long an in-flight counter outlives its last use in a shared store, so slots held by a replica
/// that died come back on their own.
const PARALLEL_TTL_MS: i64 = 3_600_000;

/// One counter of one reservation: its name, the amount taken, the limit (`None`: count only) and when the
/// counter's window ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Counter {
    pub name: String,
    pub amount: i64,
    pub limit: Option<i64>,
    pub expires_at_ms: i64,
}

/// A key's counters at one moment: names carry their window, so a new window starts from nothing.
fn counters(key_id: &str, now: i64, limits: &Limits, ask: Ask) -> (Vec<Counter>, Windows) {
    let w = Windows::at(now);
    let minute = now.div_euclid(60_000);
    let week = (w.day + 3).div_euclid(7); // 1970-01-01 was a Thursday; weeks start on Monday.
    let week_ends_ms = (week * 7 - 3 + 7) * DAY_MS;
    let budget = |p: Period| limits.budget_micros.filter(|_| limits.budget_period == p);
    // `{id}` is a Redis Cluster hash tag: all of a key's counters live in one slot, so one script sees them.
    let c = |kind: &str, window: i64, amount: i64, limit: Option<i64>, expires_at_ms: i64| Counter {
        name: format!("sy:{{{key_id}}}:{kind}:{window}"),
        amount,
        limit,
        expires_at_ms,
    };
    let minute_ends = (minute + 1) * 60_000;
    let list = vec![
        c("par", 0, 1, limits.max_parallel, now + PARALLEL_TTL_MS),
        c("rpm", minute, 1, limits.rpm, minute_ends),
        c("tpm", minute, ask.tokens, limits.tpm, minute_ends),
        c("pd", w.day, ask.prompts, limits.daily, w.day_ends_ms),
        c("pm", w.month, ask.prompts, limits.monthly, w.month_ends_ms),
        c("sd", w.day, ask.cost_micros, budget(Period::Day), w.day_ends_ms),
        c("sw", week, ask.cost_micros, budget(Period::Week), week_ends_ms),
        c("sm", w.month, ask.cost_micros, budget(Period::Month), w.month_ends_ms),
        c("tk", w.month, 0, None, w.month_ends_ms),
    ];
    (list, w)
}

fn refusal(index: usize, counter: &Counter, used: i64, limits: &Limits) -> Exceeded {
    let limit = match index {
        PAR => Limit::Parallel,
        RPM => Limit::Rpm,
        TPM => Limit::Tpm,
        PROMPTS_DAY => Limit::DailyPrompts,
        PROMPTS_MONTH => Limit::MonthlyPrompts,
        _ => Limit::Budget(limits.budget_period),
    };
    Exceeded {
        limit,
        max: counter.limit.unwrap_or_default(),
        used,
        asked: counter.amount,
        resets_at_ms: (index != PAR).then_some(counter.expires_at_ms),
    }
}

/// A window's limit, what is left of it, and milliseconds until it resets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Remaining {
    pub limit: i64,
    pub remaining: i64,
    pub reset_ms: i64,
}

/// What a key has left after admitting a request (for response headers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub requests: Option<Remaining>,
    pub tokens: Option<Remaining>,
    pub prompts_day: Option<Remaining>,
    pub prompts_month: Option<Remaining>,
    /// The budget and what is left of it, in micro-USD, with the worst case of running requests held.
    pub budget: Option<(i64, i64, Period)>,
}

/// What one admitted request holds; hand it back with [`Limiter::settle`].
#[derive(Debug)]
pub struct Admission {
    names: Vec<String>,
    ask: Ask,
    /// Where the hold is filed in Redis, so a crash of this replica can be cleaned up by another.
    hold: Option<redis_store::Hold>,
    pub view: View,
}

/// Usage of one key in the current windows, without taking anything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub in_flight: i64,
    pub prompts_day: i64,
    pub prompts_month: i64,
    pub spend_day_micros: i64,
    pub spend_week_micros: i64,
    pub spend_month_micros: i64,
    pub tokens_month: i64,
}

/// Where counters live: this process, or Redis when several replicas share the limits.
enum Backend {
    Memory(Memory),
    Redis(redis_store::RedisCounters),
}

/// Admission control for every limit of a key: one atomic reserve of all its counters (checked and taken
/// together, or not at all) and a settle that turns the holds into what was actually used.
pub struct Limiter {
    backend: Backend,
    clock: Clock,
}

impl Limiter {
    /// Counters in this process (one replica).
    pub fn in_memory(clock: Clock) -> Limiter {
        Limiter { backend: Backend::Memory(Memory::default()), clock }
    }

    /// Counters in Redis, shared by every replica that uses the same Redis.
    pub async fn redis(url: &str, clock: Clock) -> Result<Limiter, String> {
        Ok(Limiter { backend: Backend::Redis(redis_store::RedisCounters::connect(url).await?), clock })
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }

    /// Seeds the counters of the current windows from the ledger, the source of truth: in memory they are
    /// rebuilt (so reservations of a process that stopped are settled: they were never written). In Redis
    /// they are live and owned by the running replicas: they are rebuilt only when Redis has none (its
    /// marker is missing: a fresh, restarted or flushed Redis), by one replica, the others waiting.
    pub async fn load(&self, store: &Store) -> Result<(), String> {
        match &self.backend {
            Backend::Memory(m) => {
                m.seed(&ledger_seeds(store, self.now_ms()).await?);
                Ok(())
            }
            Backend::Redis(r) => {
                let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
                loop {
                    r.check(self.now_ms(), async || {
                        let now = self.now_ms();
                        Ok((ledger_seeds(store, now).await?, now))
                    })
                    .await?;
                    if r.is_ready() {
                        break;
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(
                            "another replica took the lock to rebuild the counters in Redis and never finished".into(),
                        );
                    }
                    tokio::time::sleep(redis_store::HEALTH).await;
                }
                // Holds left behind by replicas that stopped without settling are released now.
                let released = r.sweep().await?;
                if released > 0 {
                    tracing::info!(released, "released holds of replicas that stopped without settling");
                }
                Ok(())
            }
        }
    }

    /// Whether limits can be checked now: always in memory; with Redis, while it answers and its counters
    /// are seeded (readiness says so).
    pub fn is_available(&self) -> bool {
        match &self.backend {
            Backend::Memory(_) => true,
            Backend::Redis(r) => r.is_ready(),
        }
    }

    /// Takes what `ask` needs from every counter of the key at once, or nothing if any limit would be passed.
    pub async fn admit(&self, key_id: &str, limits: &Limits, ask: Ask) -> Result<Admission, AdmitError> {
        let now = self.now_ms();
        let (list, _) = counters(key_id, now, limits, ask);
        let (result, hold) = match &self.backend {
            Backend::Memory(m) => (Ok(m.reserve(&list, now)), None),
            Backend::Redis(r) => {
                // What another replica undoes if this one dies holding the request: the slot, the held
                // tokens and the worst-case spend. The prompt stays used (it may well have been served).
                let mut release = vec![0i64; COUNTERS];
                release[PAR] = -1;
                release[TPM] = -ask.tokens;
                for i in [SPEND_DAY, SPEND_WEEK, SPEND_MONTH] {
                    release[i] = -ask.cost_micros;
                }
                let hold = r.hold(key_id, release);
                (r.reserve(&list, now, &hold).await, Some(hold))
            }
        };
        let after = match result.map_err(AdmitError::Unavailable)? {
            Ok(after) => after,
            Err((index, used)) => return Err(AdmitError::Exceeded(refusal(index, &list[index], used, limits))),
        };
        let window = |i: usize| {
            list[i].limit.map(|l| Remaining {
                limit: l,
                remaining: (l - after[i]).max(0),
                reset_ms: (list[i].expires_at_ms - now).max(0),
            })
        };
        let budget_index = match limits.budget_period {
            Period::Day => SPEND_DAY,
            Period::Week => SPEND_WEEK,
            Period::Month => SPEND_MONTH,
        };
        let view = View {
            requests: window(RPM),
            tokens: window(TPM),
            prompts_day: window(PROMPTS_DAY),
            prompts_month: window(PROMPTS_MONTH),
            budget: limits.budget_micros.map(|b| (b, (b - after[budget_index]).max(0), limits.budget_period)),
        };
        Ok(Admission { names: list.into_iter().map(|c| c.name).collect(), ask, hold, view })
    }

    /// Turns a request's holds into what it used: frees its parallel slot, gives back an unused prompt and
    /// moves tokens and spend from the worst case to the actual. Never blocks (Redis work is spawned).
    /// Counters of windows that have ended are left alone.
    pub fn settle(&self, admission: Admission, used: Used) {
        let Admission { names, ask, hold, .. } = admission;
        let mut deltas = [0i64; COUNTERS];
        deltas[PAR] = -1;
        deltas[TPM] = used.tokens - ask.tokens;
        if !used.prompt_counted {
            deltas[PROMPTS_DAY] = -ask.prompts;
            deltas[PROMPTS_MONTH] = -ask.prompts;
        }
        for i in [SPEND_DAY, SPEND_WEEK, SPEND_MONTH] {
            deltas[i] = used.cost_micros - ask.cost_micros;
        }
        deltas[TOKENS_MONTH] = used.tokens;
        match (&self.backend, hold) {
            (Backend::Redis(r), Some(hold)) => r.settle(names, deltas.to_vec(), hold),
            (Backend::Memory(m), _) => {
                let changes: Vec<(String, i64)> = names.into_iter().zip(deltas).filter(|(_, d)| *d != 0).collect();
                m.adjust(&changes);
            }
            (Backend::Redis(_), None) => {}
        }
    }

    /// With Redis: checks every half second that Redis answers with its counters seeded (rebuilding them
    /// from `store`'s ledger when Redis lost them), says this replica is alive every few seconds and
    /// releases the holds of replicas that died holding requests. Runs until the task is aborted. In
    /// memory there is nothing to do.
    pub async fn maintain(&self, store: &Store) {
        let Backend::Redis(r) = &self.backend else { return };
        let mut tick = tokio::time::interval(redis_store::HEALTH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_beat = tokio::time::Instant::now();
        let mut last_sweep = tokio::time::Instant::now();
        let mut failing = false;
        loop {
            tick.tick().await;
            let checked = r
                .check(self.now_ms(), async || {
                    let now = self.now_ms();
                    Ok((ledger_seeds(store, now).await?, now))
                })
                .await;
            match checked {
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "checking the counters in Redis failed");
                }
                Err(_) => {}
                Ok(()) => failing = false,
            }
            if last_beat.elapsed() >= redis_store::HEARTBEAT {
                last_beat = tokio::time::Instant::now();
                if let Err(e) = r.heartbeat().await {
                    tracing::warn!(error = %e, "Redis heartbeat failed");
                }
            }
            // A sweep scans every counter key, so it runs once a minute, not at every heartbeat.
            if last_sweep.elapsed() >= std::time::Duration::from_secs(60) {
                last_sweep = tokio::time::Instant::now();
                match r.sweep().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(released = n, "released holds of replicas that stopped without settling"),
                    Err(e) => tracing::warn!(error = %e, "sweeping holds failed"),
                }
            }
        }
    }

    #[cfg(test)]
    async fn mark_seeded(&self) {
        if let Backend::Redis(r) = &self.backend {
            r.mark_seeded().await;
        }
    }

    /// After a graceful stop: this replica holds nothing any more.
    pub async fn retire(&self) {
        if let Backend::Redis(r) = &self.backend {
            r.retire().await;
        }
    }

    /// Releases the holds of replicas that died (Redis only); how many were released.
    pub async fn sweep(&self) -> Result<usize, String> {
        match &self.backend {
            Backend::Redis(r) => r.sweep().await,
            Backend::Memory(_) => Ok(0),
        }
    }

    /// A key's use of its current windows.
    pub async fn snapshot(&self, key_id: &str) -> Result<Snapshot, String> {
        let (list, _) = counters(key_id, self.now_ms(), &Limits::default(), Ask::default());
        let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
        let v = match &self.backend {
            Backend::Memory(m) => m.values(&names),
            Backend::Redis(r) => r.values(&names).await?,
        };
        Ok(Snapshot {
            in_flight: v[PAR],
            prompts_day: v[PROMPTS_DAY],
            prompts_month: v[PROMPTS_MONTH],
            spend_day_micros: v[SPEND_DAY],
            spend_week_micros: v[SPEND_WEEK],
            spend_month_micros: v[SPEND_MONTH],
            tokens_month: v[TOKENS_MONTH],
        })
    }
}

/// The ledger's totals for the current windows of every key, as counters (the source of truth that
/// counters are rebuilt from).
async fn ledger_seeds(store: &Store, now: i64) -> Result<Vec<Counter>, String> {
    let w = Windows::at(now);
    let week_start = ((w.day + 3).div_euclid(7) * 7 - 3) * DAY_MS;
    let mut seeds: Vec<Counter> = Vec::new();
    let monthly = store.ledger_totals_since(w.month_start_ms()).await.map_err(|e| e.to_string())?;
    let weekly: HashMap<String, crate::store::LedgerTotals> =
        store.ledger_totals_since(week_start).await.map_err(|e| e.to_string())?.into_iter().collect();
    let daily: HashMap<String, crate::store::LedgerTotals> =
        store.ledger_totals_since(w.day * DAY_MS).await.map_err(|e| e.to_string())?.into_iter().collect();
    for (key, m) in monthly {
        let (list, _) = counters(&key, now, &Limits::default(), Ask::default());
        let d = daily.get(&key).copied().unwrap_or_default();
        let wk = weekly.get(&key).copied().unwrap_or_default();
        for (i, value) in [
            (PROMPTS_DAY, d.prompts),
            (PROMPTS_MONTH, m.prompts),
            (SPEND_DAY, d.cost_micros),
            (SPEND_WEEK, wk.cost_micros),
            (SPEND_MONTH, m.cost_micros),
            (TOKENS_MONTH, m.tokens),
        ] {
            if value != 0 {
                seeds.push(Counter { amount: value, ..list[i].clone() });
            }
        }
    }
    Ok(seeds)
}

/// Counters in this process: one mutex around check-and-take, so concurrent requests never both see the
/// last unit free.
#[derive(Default)]
struct Memory {
    inner: Mutex<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    values: HashMap<String, (i64, i64)>,
    next_sweep_ms: i64,
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Ok(values after)` or `Err((index of the limit that would be passed, its value))`.
    fn reserve(&self, list: &[Counter], now: i64) -> Result<Vec<i64>, (usize, i64)> {
        let mut inner = self.lock();
        if now >= inner.next_sweep_ms {
            inner.values.retain(|_, (v, expires)| *expires > now && (*expires != i64::MAX || *v != 0));
            inner.next_sweep_ms = now + 60_000;
        }
        let current = |inner: &MemoryInner, c: &Counter| {
            inner.values.get(&c.name).filter(|(_, expires)| *expires > now).map_or(0, |(v, _)| *v)
        };
        for (i, c) in list.iter().enumerate() {
            if let Some(limit) = c.limit {
                let v = current(&inner, c);
                if c.amount > 0 && v + c.amount > limit {
                    return Err((i, v));
                }
            }
        }
        let mut after = Vec::with_capacity(list.len());
        for c in list {
            // In-flight counts have no window here: the process that holds them is the one that frees them.
            let expires = if c.name.contains(":par:") { i64::MAX } else { c.expires_at_ms };
            let v = match inner.values.get_mut(&c.name) {
                Some(entry) => {
                    let base = if entry.1 > now { entry.0 } else { 0 };
                    *entry = (base + c.amount, expires);
                    entry.0
                }
                None => {
                    inner.values.insert(c.name.clone(), (c.amount, expires));
                    c.amount
                }
            };
            after.push(v);
        }
        Ok(after)
    }

    fn adjust(&self, changes: &[(String, i64)]) {
        let mut inner = self.lock();
        for (name, delta) in changes {
            if let Some((v, _)) = inner.values.get_mut(name) {
                *v = (*v + delta).max(0);
            }
        }
    }

    fn seed(&self, seeds: &[Counter]) {
        let mut inner = self.lock();
        for c in seeds {
            inner.values.insert(c.name.clone(), (c.amount, c.expires_at_ms));
        }
    }

    fn values(&self, names: &[&str]) -> Vec<i64> {
        let inner = self.lock();
        names.iter().map(|n| inner.values.get(*n).map_or(0, |(v, _)| *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_reads_what_admins_write() {
        assert_eq!(parse_rfc3339("2027-01-01T00:00:00Z"), Some(1_798_761_600_000));
        assert_eq!(parse_rfc3339("2027-01-01"), Some(1_798_761_600_000));
        assert_eq!(parse_rfc3339("2027-01-01T02:00:00+02:00"), Some(1_798_761_600_000));
        assert_eq!(parse_rfc3339("2027-01-01T00:00:00.5Z"), Some(1_798_761_600_500));
        assert_eq!(rfc3339(1_798_761_600_500), "2027-01-01T00:00:00.500Z");
        for bad in [
            "2027-02-30",
            "2027-13-01",
            "2027-01-01T24:00:00Z",
            "2027-01-01T00:00:00",
            "tomorrow",
            "",
            "2027-01-01T00:00:00+2:00",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_round_trips(ms in 0i64..253_402_300_799_999) {
            proptest::prop_assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }

        #[test]
        fn rfc3339_never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
        }
    }
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    fn ms(y: i64, m: u32, d: u32, hour: i64) -> i64 {
        days_from_civil(y, m, d) * DAY_MS + hour * 3_600_000
    }

    #[test]
    fn calendar_windows_are_utc_days_and_months() {
        let w = Windows::at(ms(2026, 11, 30, 23));
        assert_eq!(w.day_ends_ms, ms(2026, 12, 1, 0));
        assert_eq!(w.month_ends_ms, ms(2026, 12, 1, 0));
        assert_eq!(w.month_start_ms(), ms(2026, 11, 1, 0));
        assert_eq!(Windows::at(ms(2028, 2, 29, 12)).month_ends_ms, ms(2028, 3, 1, 0), "leap year");
        assert_eq!(Windows::at(ms(2026, 12, 31, 1)).month_ends_ms, ms(2027, 1, 1, 0));
        for day in [-1000, 0, 19_000, 20_779, 100_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    type Now = Arc<AtomicI64>;

    /// The limiters to test: in memory always, and Redis too when `REDIS_URL` is set (CI sets it).
    async fn limiters(at: i64) -> Vec<(Limiter, Now)> {
        let mut out = Vec::new();
        let now: Now = Arc::new(AtomicI64::new(at));
        let clock = now.clone();
        out.push((Limiter::in_memory(Arc::new(move || clock.load(Ordering::SeqCst))), now));
        if let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
            let now: Now = Arc::new(AtomicI64::new(at));
            let clock = now.clone();
            let limiter = Limiter::redis(&url, Arc::new(move || clock.load(Ordering::SeqCst))).await.unwrap();
            limiter.mark_seeded().await;
            out.push((limiter, now));
        }
        out
    }

    /// A key id no earlier run has used (Redis outlives test runs).
    fn fresh_key() -> String {
        crate::tenancy::new_id()
    }

    const PROMPT: Ask = Ask { prompts: 1, tokens: 0, cost_micros: 0 };

    fn exceeded(r: Result<Admission, AdmitError>) -> Exceeded {
        match r {
            Err(AdmitError::Exceeded(e)) => e,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("admitted"),
        }
    }

    /// Settles happen in the background with Redis; this waits until `check` holds.
    async fn eventually(mut check: impl AsyncFnMut() -> bool) {
        for _ in 0..200 {
            if check().await {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("condition never held");
    }

    #[tokio::test]
    async fn quotas_reset_at_utc_day_and_month_boundaries() {
        for (q, now) in limiters(ms(2026, 11, 30, 22)).await {
            let key = fresh_key();
            let limits = Limits { daily: Some(2), monthly: Some(3), ..Limits::default() };
            q.admit(&key, &limits, PROMPT).await.unwrap();
            q.admit(&key, &limits, PROMPT).await.unwrap();
            let e = exceeded(q.admit(&key, &limits, PROMPT).await);
            assert_eq!((e.limit, e.max, e.resets_at_ms), (Limit::DailyPrompts, 2, Some(ms(2026, 12, 1, 0))));
            // Past midnight UTC, on a new month too: both windows start over.
            now.store(ms(2026, 12, 1, 0) + 1, Ordering::SeqCst);
            let a = q.admit(&key, &limits, PROMPT).await.unwrap();
            let left = |r: Option<Remaining>| r.map(|r| r.remaining);
            assert_eq!((left(a.view.prompts_day), left(a.view.prompts_month)), (Some(1), Some(2)));
            q.settle(a, Used::default());
            eventually(async || q.snapshot(&key).await.unwrap().prompts_day == 0).await;
            let a = q.admit(&key, &limits, PROMPT).await.unwrap();
            assert_eq!(left(a.view.prompts_day), Some(1), "a prompt nothing served is given back");
            q.admit(&key, &limits, PROMPT).await.unwrap();
            now.store(ms(2026, 12, 2, 9), Ordering::SeqCst);
            q.admit(&key, &limits, PROMPT).await.unwrap();
            let e = exceeded(q.admit(&key, &limits, PROMPT).await);
            assert_eq!(e.limit, Limit::MonthlyPrompts, "a new day does not reset the month");
        }
    }

    #[tokio::test]
    async fn a_per_minute_limit_resets_with_the_minute() {
        for (q, now) in limiters(ms(2026, 11, 22, 12) + 59_000).await {
            let key = fresh_key();
            let limits = Limits { rpm: Some(2), ..Limits::default() };
            let a = q.admit(&key, &limits, PROMPT).await.unwrap();
            assert_eq!(a.view.requests, Some(Remaining { limit: 2, remaining: 1, reset_ms: 1000 }));
            q.admit(&key, &limits, PROMPT).await.unwrap();
            let e = exceeded(q.admit(&key, &limits, PROMPT).await);
            assert_eq!((e.limit, e.resets_at_ms.unwrap() - now.load(Ordering::SeqCst)), (Limit::Rpm, 1000));
            now.fetch_add(1000, Ordering::SeqCst);
            assert!(q.admit(&key, &limits, PROMPT).await.is_ok());
        }
    }

    #[tokio::test]
    async fn tokens_per_minute_hold_the_estimate_and_settle_to_the_actual() {
        for (q, _) in limiters(ms(2026, 11, 22, 12)).await {
            let key = fresh_key();
            let limits = Limits { tpm: Some(1000), ..Limits::default() };
            let ask = Ask { prompts: 1, tokens: 600, cost_micros: 0 };
            let a = q.admit(&key, &limits, ask).await.unwrap();
            assert_eq!(a.view.tokens.map(|t| t.remaining), Some(400));
            let e = exceeded(q.admit(&key, &limits, ask).await);
            assert_eq!((e.limit, e.used, e.asked), (Limit::Tpm, 600, 600));
            // It used 100 tokens in the end: 900 are free again.
            q.settle(a, Used { prompt_counted: true, tokens: 100, cost_micros: 0 });
            let b = loop {
                if let Ok(b) = q.admit(&key, &limits, ask).await {
                    break b;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            };
            assert_eq!(b.view.tokens.map(|t| t.remaining), Some(300));
            let too_big = exceeded(q.admit(&key, &limits, Ask { tokens: 5000, ..ask }).await);
            assert_eq!((too_big.limit, too_big.asked), (Limit::Tpm, 5000));
        }
    }

    #[tokio::test]
    async fn max_parallel_frees_a_slot_when_a_request_ends() {
        for (q, _) in limiters(ms(2026, 11, 22, 12)).await {
            let key = fresh_key();
            let limits = Limits { max_parallel: Some(2), ..Limits::default() };
            let a = q.admit(&key, &limits, PROMPT).await.unwrap();
            let _b = q.admit(&key, &limits, PROMPT).await.unwrap();
            let e = exceeded(q.admit(&key, &limits, PROMPT).await);
            assert_eq!((e.limit, e.max, e.resets_at_ms), (Limit::Parallel, 2, None));
            q.settle(a, Used { prompt_counted: true, tokens: 10, cost_micros: 0 });
            eventually(async || q.snapshot(&key).await.unwrap().in_flight == 1).await;
            assert!(q.admit(&key, &limits, PROMPT).await.is_ok());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_budget_is_never_passed_by_concurrent_requests_and_settles_to_the_actual_cost() {
        for (q, _) in limiters(ms(2026, 11, 25, 12)).await {
            let q = Arc::new(q);
            let key = fresh_key();
            let limits = Limits { budget_micros: Some(1_000), budget_period: Period::Week, ..Limits::default() };
            let ask = Ask { prompts: 1, tokens: 10, cost_micros: 100 };
            let tries: Vec<_> = (0..50)
                .map(|_| {
                    let (q, key) = (q.clone(), key.clone());
                    tokio::spawn(async move { q.admit(&key, &limits, ask).await })
                })
                .collect();
            let mut admitted = Vec::new();
            for t in tries {
                match t.await.unwrap() {
                    Ok(a) => admitted.push(a),
                    Err(AdmitError::Exceeded(e)) => assert_eq!(e.limit, Limit::Budget(Period::Week)),
                    Err(e) => panic!("{e}"),
                }
            }
            assert_eq!(admitted.len(), 10, "$0.001 of budget holds ten worst cases of $0.0001");
            for a in admitted {
                q.settle(a, Used { prompt_counted: true, tokens: 5, cost_micros: 60 });
            }
            eventually(async || q.snapshot(&key).await.unwrap().spend_week_micros == 600).await;
            let mut n = 0;
            while q.admit(&key, &limits, ask).await.is_ok() {
                n += 1;
            }
            assert_eq!(n, 4, "$0.0004 left after settling: four more worst cases");
        }
    }

    #[tokio::test]
    async fn holds_of_a_replica_that_died_are_released_by_another_but_a_live_ones_are_kept() {
        let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
            eprintln!("skipped: needs REDIS_URL (CI sets it)");
            return;
        };
        let clock: Clock = Arc::new(|| ms(2026, 11, 22, 12));
        let (a, b) = (Limiter::redis(&url, clock.clone()).await.unwrap(), Limiter::redis(&url, clock).await.unwrap());
        a.mark_seeded().await;
        b.mark_seeded().await;
        let key = fresh_key();
        let limits = Limits { max_parallel: Some(1), budget_micros: Some(1_000), ..Limits::default() };
        let ask = Ask { prompts: 1, tokens: 50, cost_micros: 600 };
        let held = a.admit(&key, &limits, ask).await.unwrap();
        assert_eq!(exceeded(b.admit(&key, &limits, ask).await).limit, Limit::Parallel);
        b.sweep().await.unwrap();
        assert_eq!(
            exceeded(b.admit(&key, &limits, ask).await).limit,
            Limit::Parallel,
            "a live replica keeps its holds"
        );

        a.retire().await; // As if it had died: its heartbeat is gone and its request never settles.
        b.sweep().await.unwrap();
        let mine = b.admit(&key, &limits, ask).await.expect("the dead replica's slot and spend came back");
        let s = b.snapshot(&key).await.unwrap();
        assert_eq!((s.in_flight, s.spend_month_micros, s.prompts_day), (1, 600, 2), "the prompt stays used");

        // If the replica was only slow, its late settle still lands exactly once.
        a.settle(held, Used { prompt_counted: true, tokens: 40, cost_micros: 100 });
        eventually(async || b.snapshot(&key).await.unwrap().spend_month_micros == 700).await;
        assert_eq!(b.snapshot(&key).await.unwrap().in_flight, 1);
        b.settle(mine, Used { prompt_counted: true, tokens: 40, cost_micros: 100 });
        eventually(async || b.snapshot(&key).await.unwrap().spend_month_micros == 200).await;
        assert_eq!(b.snapshot(&key).await.unwrap().in_flight, 0);
    }

    #[test]
    fn weeks_start_on_monday_utc() {
        let key = "k";
        // 2026-11-22 is a Sunday; 2026-11-23 a Monday.
        let (sunday, _) = counters(key, ms(2026, 11, 22, 23), &Limits::default(), Ask::default());
        let (monday, _) = counters(key, ms(2026, 11, 23, 0), &Limits::default(), Ask::default());
        let (friday, _) = counters(key, ms(2026, 11, 27, 12), &Limits::default(), Ask::default());
        assert_eq!(sunday[SPEND_WEEK].expires_at_ms, ms(2026, 11, 23, 0));
        assert_ne!(sunday[SPEND_WEEK].name, monday[SPEND_WEEK].name);
        assert_eq!(monday[SPEND_WEEK].name, friday[SPEND_WEEK].name);
        assert_eq!(friday[SPEND_WEEK].expires_at_ms, ms(2026, 11, 30, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn with_r_prompts_left_exactly_r_of_many_concurrent_requests_are_admitted() {
        for (q, _) in limiters(ms(2026, 11, 22, 12)).await {
            let q = Arc::new(q);
            let key = fresh_key();
            let limits = Limits { daily: Some(50), ..Limits::default() };
            let tries: Vec<_> = (0..200)
                .map(|_| {
                    let (q, key) = (q.clone(), key.clone());
                    tokio::spawn(async move { q.admit(&key, &limits, PROMPT).await.is_ok() })
                })
                .collect();
            let mut admitted = 0;
            for t in tries {
                admitted += i32::from(t.await.unwrap());
            }
            assert_eq!(admitted, 50, "200 attempts, 50 prompts ({})", q.backend_name());
        }
    }
}
