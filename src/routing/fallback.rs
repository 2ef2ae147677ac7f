//! Walking a plan's targets: which one next, whether a failure moves on, and what the caller is told.
//!
//! Handlers drive the loop (`while let Some(t) = fallback.next().await { … }`) because only they know how
//! to make the call (whole or streamed); this module owns every decision around it:
//! - open circuit breakers are skipped without waiting; when every target's breaker is open, the one that
//!   recovers soonest is tried rather than failing blind;
//! - 429, 5xx, Anthropic 529, connection errors and timeouts move on; client errors stop, except a
//!   context overflow (on to a target with a larger window) and a content-policy refusal when the alias
//!   names a content-policy chain;
//! - a `retry-after` is waited out (within the deadline and a cap) only when no other target is left;
//! - attempts are capped per request, and retries draw on a process-wide budget so an outage does not
//!   multiply upstream traffic.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::breaker::{BreakerConfig, Gate};
use super::catalog::ModelEntry;
use super::plan::RoutePlan;
use crate::config::RouterConfig;
use crate::providers::{ErrorKind, ProviderError};

/// Router settings at run time, and the shared retry budget.
#[derive(Debug)]
pub struct Router {
    pub max_attempts: u32,
    pub request_timeout: Duration,
    pub breaker: BreakerConfig,
    pub max_retry_after_wait: Duration,
    /// Routing headers also under the product pages' names.
    pub seed_headers: bool,
    budget: RetryBudget,
}

impl Router {
    pub fn new(config: &RouterConfig) -> Router {
        Router {
            max_attempts: config.max_attempts,
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            breaker: BreakerConfig {
                failures: config.breaker_failures,
                cooldown: Duration::from_millis(config.breaker_cooldown_ms),
            },
            max_retry_after_wait: Duration::from_millis(config.max_retry_after_wait_ms),
            seed_headers: config.seed_headers,
            budget: RetryBudget::new(config.retry_budget_ratio, config.retry_budget_per_second),
        }
    }

    /// After a configuration reload: the retry budget keeps what it earned and spent this second, so a
    /// reload during an incident hands out no fresh burst of retries (its ratio and rate may change).
    pub fn take_over(&self, previous: &Router) {
        let old = *previous.budget.lock();
        *self.budget.lock() = old;
    }
}

/// Retries may add `ratio` of the request rate plus `per_second` a second (Envoy's and Linkerd's model).
#[derive(Debug)]
struct RetryBudget {
    ratio: f64,
    per_second: u32,
    state: Mutex<BudgetState>,
}

#[derive(Debug, Clone, Copy)]
struct BudgetState {
    /// Retries earned by first attempts, capped so a quiet period does not bank an avalanche.
    balance: f64,
    window_start: Instant,
    free_used: u32,
}

impl RetryBudget {
    fn new(ratio: f64, per_second: u32) -> Self {
        Self {
            ratio,
            per_second,
            state: Mutex::new(BudgetState { balance: 0.0, window_start: Instant::now(), free_used: 0 }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BudgetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deposit(&self) {
        if self.ratio > 0.0 {
            let mut s = self.lock();
            s.balance = (s.balance + self.ratio).min(1000.0);
        }
    }

    fn withdraw(&self, now: Instant) -> bool {
        let mut s = self.lock();
        if now.duration_since(s.window_start) >= Duration::from_secs(1) {
            s.window_start = now;
            s.free_used = 0;
        }
        if s.free_used < self.per_second {
            s.free_used += 1;
            return true;
        }
        if s.balance >= 1.0 {
            s.balance -= 1.0;
            return true;
        }
        false
    }
}

/// One upstream attempt, as reported in headers and recorded with the request.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub model: String,
    pub provider: String,
    /// `ok`, or the failure's label (`429`, `timeout_first_byte`, `circuit_open`, …).
    pub outcome: String,
}

pub struct Fallback<'a> {
    router: &'a Router,
    queue: VecDeque<Arc<ModelEntry>>,
    content_policy: Vec<Arc<ModelEntry>>,
    attempts: Vec<Attempt>,
    upstream_attempts: u32,
    last_error: Option<ProviderError>,
    deadline: Instant,
    /// Set when the next attempt must wait for a `retry-after`.
    wait_until: Option<Instant>,
    waited_once: bool,
    budget_exhausted: bool,
}

impl<'a> Fallback<'a> {
    pub fn new(plan: &RoutePlan, router: &'a Router, started: Instant) -> Fallback<'a> {
        router.budget.deposit();
        // Entries of a `models` list that could not be tried are named in the attempts header.
        let attempts = match plan.resolution {
            super::plan::Resolution::ModelList => plan
                .skipped
                .iter()
                .filter_map(|s| {
                    let outcome = match s.kind {
                        super::plan::SkipKind::Unknown => "unknown_model",
                        super::plan::SkipKind::NotAllowed => "not_allowed",
                        _ => return None,
                    };
                    Some(Attempt { model: s.model.clone(), provider: String::new(), outcome: outcome.to_owned() })
                })
                .collect(),
            _ => Vec::new(),
        };
        Fallback {
            router,
            queue: plan.targets.iter().cloned().collect(),
            content_policy: plan.content_policy_targets.clone(),
            attempts,
            upstream_attempts: 0,
            last_error: None,
            deadline: started + router.request_timeout,
            wait_until: None,
            waited_once: false,
            budget_exhausted: false,
        }
    }

    /// The request's deadline across all attempts.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The deadline for one attempt on `target`.
    pub fn attempt_deadline(&self, target: &ModelEntry) -> Instant {
        (Instant::now() + target.timeouts.total).min(self.deadline)
    }

    /// The next target to try, or `None` when the request must end with [`Fallback::failure`].
    pub async fn next(&mut self) -> Option<Arc<ModelEntry>> {
        if let Some(at) = self.wait_until.take() {
            tokio::time::sleep_until(at).await;
        }
        {
            let now = Instant::now();
            if self.queue.is_empty() || now >= self.deadline || self.upstream_attempts >= self.router.max_attempts {
                return None;
            }
            if self.upstream_attempts > 0 && !self.router.budget.withdraw(now) {
                self.budget_exhausted = true;
                return None;
            }
            // The first target whose breaker lets a request through; else the one that recovers soonest.
            let open_until = |t: &Arc<ModelEntry>| match t.breaker.peek(now) {
                Gate::Open { until } => Some(until),
                Gate::Closed | Gate::Probe => None,
            };
            let index = match self.queue.iter().position(|t| open_until(t).is_none()) {
                Some(i) => i,
                None => (0..self.queue.len()).min_by_key(|&i| open_until(&self.queue[i])).unwrap_or(0),
            };
            // Targets passed over because their breaker is open are skipped for this request.
            for skipped in self.queue.drain(..index).collect::<Vec<_>>() {
                self.attempts.push(Attempt {
                    model: skipped.name.clone(),
                    provider: skipped.provider.name.clone(),
                    outcome: "circuit_open".to_owned(),
                });
            }
            let target = self.queue.pop_front()?;
            let _ = target.breaker.acquire(now);
            self.upstream_attempts += 1;
            Some(target)
        }
    }

    pub fn succeeded(&mut self, target: &ModelEntry) {
        target.breaker.record_success();
        self.attempts.push(Attempt {
            model: target.name.clone(),
            provider: target.provider.name.clone(),
            outcome: "ok".to_owned(),
        });
    }

    /// Records a failed attempt; `true` when the request should go on to another target.
    pub fn failed(&mut self, target: &Arc<ModelEntry>, e: ProviderError) -> bool {
        let now = Instant::now();
        target.breaker.record_failure(&e, self.router.breaker, now);
        self.attempts.push(Attempt {
            model: target.name.clone(),
            provider: target.provider.name.clone(),
            outcome: e.label(),
        });
        let go_on = match e.kind {
            ErrorKind::ContextTooLong => {
                // Only a larger window can help.
                let window = target.context_window.unwrap_or(0);
                self.queue.retain(|t| t.context_window.is_none_or(|w| w > window));
                !self.queue.is_empty()
            }
            ErrorKind::ContentPolicy if !self.content_policy.is_empty() => {
                self.queue = std::mem::take(&mut self.content_policy).into();
                self.queue.retain(|t| !Arc::ptr_eq(t, target));
                true
            }
            _ => e.should_fallback(),
        };
        // The last target asked us to come back later: wait, if that fits, rather than fail.
        if go_on
            && self.queue.is_empty()
            && e.kind == ErrorKind::RateLimited
            && !self.waited_once
            && let Some(after) = e.retry_after
            && after <= self.router.max_retry_after_wait
            && now + after < self.deadline
        {
            self.waited_once = true;
            self.wait_until = Some(now + after);
            self.queue.push_back(target.clone());
        }
        self.last_error = Some(e);
        go_on
    }

    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// How many upstream calls were made.
    pub fn upstream_attempts(&self) -> u32 {
        self.upstream_attempts
    }

    /// Why the request failed: the last provider error, with every attempt listed when there were several.
    pub fn failure(&self) -> ProviderError {
        let Some(last) = self.last_error.clone() else {
            let why = if self.budget_exhausted { "the retry budget is exhausted" } else { "no target could be tried" };
            let mut e = ProviderError::new(ErrorKind::Unavailable, format!("No provider answered: {why}."));
            e.status = Some(503);
            return e;
        };
        let failures: Vec<&Attempt> = self.attempts.iter().filter(|a| a.outcome != "ok").collect();
        if failures.len() <= 1 {
            return last;
        }
        let mut e = last;
        let list: Vec<String> =
            failures.iter().map(|a| format!("{} ({}): {}", a.model, a.provider, a.outcome)).collect();
        e.message = format!("All {} attempts failed: {}. Last error: {}", failures.len(), list.join("; "), e.message);
        e
    }

    /// The compact form for the `x-switchyard-attempts` header: `3; a=429, b=timeout_first_byte`.
    pub fn header_value(&self) -> String {
        let failed: Vec<String> =
            self.attempts.iter().filter(|a| a.outcome != "ok").map(|a| format!("{}={}", a.model, a.outcome)).collect();
        if failed.is_empty() {
            self.upstream_attempts.to_string()
        } else {
            format!("{}; {}", self.upstream_attempts, failed.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reloaded_router_keeps_the_retry_budget_spent_and_earned() {
        let config = RouterConfig { retry_budget_ratio: 0.5, retry_budget_per_second: 1, ..RouterConfig::default() };
        let old = Router::new(&config);
        let now = Instant::now();
        assert!(old.budget.withdraw(now), "the free retry of this second");
        for _ in 0..4 {
            old.budget.deposit(); // two retries earned
        }
        let new = Router::new(&config);
        new.take_over(&old);
        // A fresh budget would give one free retry and nothing banked; the carried one, two earned.
        assert!(new.budget.withdraw(now) && new.budget.withdraw(now), "the earned retries came along");
        assert!(!new.budget.withdraw(now), "and the free one was already spent this second");
    }

    #[test]
    fn the_retry_budget_allows_a_few_free_retries_a_second_plus_a_share_of_traffic() {
        let budget = RetryBudget::new(0.5, 2);
        let t0 = Instant::now();
        assert!(budget.withdraw(t0) && budget.withdraw(t0), "two free retries this second");
        assert!(!budget.withdraw(t0), "then nothing is banked yet");
        for _ in 0..4 {
            budget.deposit(); // four requests earn two retries at 50%
        }
        assert!(budget.withdraw(t0) && budget.withdraw(t0));
        assert!(!budget.withdraw(t0));
        assert!(budget.withdraw(t0 + Duration::from_secs(1)), "a new second brings new free retries");
    }
}
