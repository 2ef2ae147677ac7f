//! Circuit breakers, one per catalog model (a provider and a model id), and one per `provider/model`
//! pass-through target (`Catalog::ad_hoc`, bounded in number).
//!
//! Closed: requests flow, consecutive failures are counted. Open: the target is skipped without waiting on
//! it, until its cooldown ends (a 429's `retry-after` sets that cooldown directly). Half-open: one probe is
//! let through; success closes the breaker, failure opens it again for twice as long (up to five minutes).

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::providers::{ErrorKind, ProviderError};

const MAX_COOLDOWN: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
pub struct BreakerConfig {
    pub failures: u32,
    pub cooldown: Duration,
}

#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<State>,
}

#[derive(Debug, Default, Clone, Copy)]
struct State {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    probing: bool,
    /// How many times in a row the breaker opened; doubles the cooldown.
    openings: u32,
}

/// What the breaker says about sending a request now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Closed,
    /// Skip: open until then (or a probe is already out).
    Open {
        until: Instant,
    },
    /// Let this one request through as the probe.
    Probe,
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes over another breaker's state (a configuration reload keeps what the model's failures
    /// taught; a probe in flight on the old one is not carried).
    pub fn take_over(&self, from: &Breaker) {
        let state = State { probing: false, ..*from.lock() };
        *self.lock() = state;
    }

    /// Whether a request may go now, without taking the probe slot.
    pub fn peek(&self, now: Instant) -> Gate {
        let s = self.lock();
        match s.open_until {
            None => Gate::Closed,
            Some(until) if now < until || s.probing => Gate::Open { until: until.max(now) },
            Some(_) => Gate::Probe,
        }
    }

    /// Like [`Breaker::peek`], but a `Probe` answer claims the single probe slot.
    pub fn acquire(&self, now: Instant) -> Gate {
        let mut s = self.lock();
        match s.open_until {
            None => Gate::Closed,
            Some(until) if now < until || s.probing => Gate::Open { until: until.max(now) },
            Some(_) => {
                s.probing = true;
                Gate::Probe
            }
        }
    }

    pub fn record_success(&self) {
        let mut s = self.lock();
        if s.consecutive_failures != 0 || s.open_until.is_some() {
            *s = State::default();
        }
    }

    /// Counts a failure that says something about the target's health (not the caller's mistakes).
    pub fn record_failure(&self, e: &ProviderError, config: BreakerConfig, now: Instant) {
        let counts = matches!(
            e.kind,
            ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::ServerError
                | ErrorKind::Timeout(_)
                | ErrorKind::Connection
                | ErrorKind::StreamInterrupted
                | ErrorKind::InvalidResponse
        );
        if !counts {
            return;
        }
        let mut s = self.lock();
        s.consecutive_failures += 1;
        let retry_after = e.retry_after.filter(|_| e.kind == ErrorKind::RateLimited);
        if s.probing || s.consecutive_failures >= config.failures || retry_after.is_some() {
            let cooldown =
                retry_after.unwrap_or_else(|| config.cooldown.saturating_mul(1 << s.openings.min(8)).min(MAX_COOLDOWN));
            s.open_until = Some(now + cooldown);
            s.probing = false;
            s.openings += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error() -> ProviderError {
        ProviderError::new(ErrorKind::ServerError, "boom")
    }

    const CONFIG: BreakerConfig = BreakerConfig { failures: 3, cooldown: Duration::from_secs(10) };

    #[test]
    fn opens_after_consecutive_failures_then_lets_one_probe_through() {
        let b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..2 {
            b.record_failure(&server_error(), CONFIG, t0);
        }
        assert_eq!(b.acquire(t0), Gate::Closed);
        b.record_failure(&server_error(), CONFIG, t0);
        assert!(matches!(b.acquire(t0), Gate::Open { .. }));
        let later = t0 + Duration::from_secs(11);
        assert_eq!(b.acquire(later), Gate::Probe);
        assert!(matches!(b.acquire(later), Gate::Open { .. }), "only one probe at a time");
        b.record_failure(&server_error(), CONFIG, later);
        match b.peek(later) {
            Gate::Open { until } => assert_eq!(until - later, Duration::from_secs(20), "cooldown doubles"),
            other => panic!("{other:?}"),
        }
        let much_later = later + Duration::from_secs(21);
        assert_eq!(b.acquire(much_later), Gate::Probe);
        b.record_success();
        assert_eq!(b.acquire(much_later), Gate::Closed);
    }

    #[test]
    fn a_429_retry_after_sets_the_cooldown_and_client_errors_do_not_count() {
        let b = Breaker::default();
        let t0 = Instant::now();
        let mut e = ProviderError::new(ErrorKind::RateLimited, "slow down");
        e.retry_after = Some(Duration::from_secs(7));
        b.record_failure(&e, CONFIG, t0);
        assert_eq!(b.peek(t0), Gate::Open { until: t0 + Duration::from_secs(7) });
        let c = Breaker::default();
        for _ in 0..10 {
            c.record_failure(&ProviderError::new(ErrorKind::BadRequest, "bad"), CONFIG, t0);
        }
        assert_eq!(c.peek(t0), Gate::Closed);
    }
}
