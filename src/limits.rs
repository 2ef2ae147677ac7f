//! Admission: daily and monthly prompt quotas per key, reserved atomically before a request goes upstream.
//!
//! One mutex-guarded reserve per request (check and increment together, never check-then-act), so with R
//! prompts left and many more requests at once exactly R are admitted. Counts live in memory and are
//! rebuilt at start from the usage ledger, the source of truth; a reservation that served nothing is
//! refunded. Windows are calendar-aligned in UTC. Single replica: several replicas need the Redis counters
//! that the tenancy work adds (a Lua reserve script) — until then, run one replica per database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::store::{Store, StoreError};

const DAY_MS: i64 = 86_400_000;

/// Milliseconds since the Unix epoch; injectable so tests can cross midnight and month ends.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

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

/// `YYYY-MM-DD` for a day number (days since 1970-01-01).
pub fn date_string(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
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

/// A key's prompt limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptLimits {
    pub daily: Option<i64>,
    pub monthly: Option<i64>,
    /// Requests per minute (a fixed window aligned to the UTC minute).
    pub rpm: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    day: i64,
    day_used: i64,
    month: i64,
    month_used: i64,
    minute: i64,
    minute_used: i64,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    pub window: &'static str,
    pub limit: i64,
    pub resets_at_ms: i64,
}

/// A prompt taken from a key's quotas; give it back with [`Quotas::refund`] if nothing was served.
#[derive(Debug, Clone)]
pub struct Reservation {
    pub key_id: String,
    pub windows: Windows,
    /// What is left after this reservation (for headers).
    pub remaining_day: Option<i64>,
    pub remaining_month: Option<i64>,
    /// The request-rate window: limit, remaining, and milliseconds until it resets.
    pub rate: Option<(i64, i64, i64)>,
}

pub struct Quotas {
    counts: Mutex<HashMap<String, Counts>>,
    clock: Clock,
}

impl Quotas {
    pub fn new(clock: Clock) -> Quotas {
        Quotas { counts: Mutex::default(), clock }
    }

    /// Rebuilds today's and this month's counts from the ledger.
    pub async fn load(&self, store: &Store) -> Result<(), StoreError> {
        let w = Windows::at((self.clock)());
        let monthly = store.prompts_since(w.month_start_ms()).await?;
        let daily: HashMap<String, i64> = store.prompts_since(w.day * DAY_MS).await?.into_iter().collect();
        let mut counts = self.lock();
        for (key, month_used) in monthly {
            let day_used = daily.get(&key).copied().unwrap_or(0);
            counts.insert(key, Counts { day: w.day, day_used, month: w.month, month_used, ..Counts::default() });
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Counts>> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one prompt from both windows at once, or neither.
    pub fn reserve(&self, key_id: &str, limits: PromptLimits) -> Result<Reservation, QuotaExceeded> {
        let w = Windows::at((self.clock)());
        let mut counts = self.lock();
        let c = counts.entry(key_id.to_owned()).or_default();
        if c.day != w.day {
            c.day = w.day;
            c.day_used = 0;
        }
        if c.month != w.month {
            c.month = w.month;
            c.month_used = 0;
        }
        let now = (self.clock)();
        let minute = now.div_euclid(60_000);
        if c.minute != minute {
            c.minute = minute;
            c.minute_used = 0;
        }
        if let Some(limit) = limits.rpm
            && c.minute_used >= limit
        {
            return Err(QuotaExceeded { window: "per-minute", limit, resets_at_ms: (minute + 1) * 60_000 });
        }
        if let Some(limit) = limits.daily
            && c.day_used >= limit
        {
            return Err(QuotaExceeded { window: "daily", limit, resets_at_ms: w.day_ends_ms });
        }
        if let Some(limit) = limits.monthly
            && c.month_used >= limit
        {
            return Err(QuotaExceeded { window: "monthly", limit, resets_at_ms: w.month_ends_ms });
        }
        c.day_used += 1;
        c.month_used += 1;
        c.minute_used += 1;
        Ok(Reservation {
            key_id: key_id.to_owned(),
            windows: w,
            remaining_day: limits.daily.map(|l| l - c.day_used),
            remaining_month: limits.monthly.map(|l| l - c.month_used),
            rate: limits.rpm.map(|l| (l, l - c.minute_used, (minute + 1) * 60_000 - now)),
        })
    }

    /// Gives a prompt back (the request was never served), if its windows are still current.
    pub fn refund(&self, r: &Reservation) {
        let mut counts = self.lock();
        if let Some(c) = counts.get_mut(&r.key_id) {
            if c.day == r.windows.day && c.day_used > 0 {
                c.day_used -= 1;
            }
            if c.month == r.windows.month && c.month_used > 0 {
                c.month_used -= 1;
            }
        }
    }

    /// Prompts used today and this month (without taking one).
    pub fn used(&self, key_id: &str) -> (i64, i64) {
        let w = Windows::at((self.clock)());
        let counts = self.lock();
        counts.get(key_id).map_or((0, 0), |c| {
            (if c.day == w.day { c.day_used } else { 0 }, if c.month == w.month { c.month_used } else { 0 })
        })
    }

    pub fn now_ms(&self) -> i64 {
        (self.clock)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    #[test]
    fn quotas_reset_at_utc_day_and_month_boundaries() {
        let now = Arc::new(AtomicI64::new(ms(2026, 11, 30, 22)));
        let clock = now.clone();
        let q = Quotas::new(Arc::new(move || clock.load(Ordering::SeqCst)));
        let limits = PromptLimits { daily: Some(2), monthly: Some(3), rpm: None };
        assert!(q.reserve("k", limits).is_ok());
        assert!(q.reserve("k", limits).is_ok());
        let e = q.reserve("k", limits).unwrap_err();
        assert_eq!((e.window, e.limit, e.resets_at_ms), ("daily", 2, ms(2026, 12, 1, 0)));
        // Past midnight UTC, on a new month too: both windows start over.
        now.store(ms(2026, 12, 1, 0) + 1, Ordering::SeqCst);
        let r = q.reserve("k", limits).unwrap();
        assert_eq!((r.remaining_day, r.remaining_month), (Some(1), Some(2)));
        q.refund(&r);
        assert_eq!(q.reserve("k", limits).unwrap().remaining_day, Some(1), "a refund gives the prompt back");
        q.reserve("k", limits).unwrap();
        now.store(ms(2026, 12, 2, 9), Ordering::SeqCst);
        q.reserve("k", limits).unwrap();
        let e = q.reserve("k", limits).unwrap_err();
        assert_eq!(e.window, "monthly", "a new day does not reset the month");
    }

    #[test]
    fn a_per_minute_limit_resets_with_the_minute() {
        let now = Arc::new(AtomicI64::new(ms(2026, 11, 22, 12) + 59_000));
        let clock = now.clone();
        let q = Quotas::new(Arc::new(move || clock.load(Ordering::SeqCst)));
        let limits = PromptLimits { daily: None, monthly: None, rpm: Some(2) };
        let r = q.reserve("k", limits).unwrap();
        assert_eq!(r.rate, Some((2, 1, 1000)));
        q.reserve("k", limits).unwrap();
        let e = q.reserve("k", limits).unwrap_err();
        assert_eq!((e.window, e.resets_at_ms - now.load(Ordering::SeqCst)), ("per-minute", 1000));
        now.fetch_add(1000, Ordering::SeqCst);
        assert!(q.reserve("k", limits).is_ok());
    }

    #[test]
    fn with_r_prompts_left_exactly_r_of_many_concurrent_requests_are_admitted() {
        let q = Arc::new(Quotas::new(Arc::new(|| ms(2026, 11, 22, 12))));
        let limits = PromptLimits { daily: Some(50), monthly: None, rpm: None };
        let admitted = Arc::new(AtomicI64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (q, admitted) = (q.clone(), admitted.clone());
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        if q.reserve("k", limits).is_ok() {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::SeqCst), 50, "200 attempts, 50 prompts");
    }
}
