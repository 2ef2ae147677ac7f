//! Admission of a request against its key's limits, and the headers that tell the caller what is left.
//!
//! A request holds its worst case while it runs (one prompt, its tokens, its most expensive possible cost
//! over the targets it may be sent to) and settles to what it used when its usage record is emitted.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use super::GatewayError;
use crate::app::AppState;
use crate::limits::{AdmitError, Ask, Remaining, View};
use crate::routing::{RequestFeatures, RoutePlan};
use crate::tenancy::ActiveKey;
use crate::usage::{Outcome, UsageGuard};

/// What a request holds: one prompt (chat only), its estimated tokens (settled to the actual), and the
/// most it can cost on any target it may be sent to: an upper bound of the prompt plus the output asked
/// for (or the model's output limit), times the choices asked for.
pub fn ask(features: &RequestFeatures<'_>, plan: &RoutePlan, prompts: i64, choices: u32) -> Ask {
    let bound = features.prompt_token_bound();
    let choices = u64::from(choices.max(1));
    let cost = plan
        .targets
        .iter()
        .chain(&plan.content_policy_targets)
        .map(|t| {
            let output = match (features.max_output, t.max_output) {
                (Some(asked), Some(max)) => asked.min(max),
                (Some(asked), None) => asked,
                (None, Some(max)) => max,
                (None, None) => t.context_window.map_or(4_096, |w| w.saturating_sub(bound)),
            };
            t.prices().cost_micros(bound, 0, output.saturating_mul(choices)).unwrap_or(0)
        })
        .max()
        .unwrap_or(0);
    let tokens = features.prompt_token_estimate() + features.max_output.unwrap_or(0).saturating_mul(choices);
    Ask { prompts, tokens: i64::try_from(tokens).unwrap_or(i64::MAX), cost_micros: cost }
}

/// Takes what the request needs from its key's limits and hands the holds to its usage guard, which
/// settles them whatever happens to the request. Returns what is left, for the response headers. A
/// refusal is recorded in the ledger as `rejected`.
pub async fn admit(
    state: &AppState,
    key: Option<&Arc<ActiveKey>>,
    ask: Ask,
    mut usage: UsageGuard,
) -> Result<(UsageGuard, Option<View>), GatewayError> {
    let Some(key) = key else { return Ok((usage, None)) };
    match state.limiter.admit(&key.id, &key.limits, ask).await {
        Ok(admission) => {
            let view = admission.view.clone();
            usage.hold(state.limiter.clone(), admission);
            Ok((usage, Some(view)))
        }
        Err(e) => {
            let error = match e {
                AdmitError::Exceeded(e) => GatewayError::limit_exceeded(&e, state.limiter.now_ms()),
                AdmitError::Unavailable(why) => {
                    // Once a second at most: during an outage every virtual-key request lands here.
                    static LAST_LOGGED_S: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                    let now_s =
                        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                    if LAST_LOGGED_S.swap(now_s, std::sync::atomic::Ordering::Relaxed) != now_s {
                        tracing::error!(error = %why, "limits store unavailable; refusing requests with virtual keys");
                    }
                    GatewayError::limits_unavailable()
                }
            };
            usage.finish(Outcome::Rejected, error.status.as_u16(), error.code.as_deref().map(str::to_owned));
            Err(error)
        }
    }
}

/// OpenAI's rate-limit headers (which the SDKs and many clients read) and Switchyard's own for prompts
/// and budget.
pub fn headers(h: &mut HeaderMap, view: Option<&View>) {
    let Some(view) = view else { return };
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    // OpenAI reports its tightest request window here (per minute, or per day on some tiers): a key
    // without a per-minute limit reports its daily, else monthly, prompt quota.
    let requests = view.requests.or(view.prompts_day).or(view.prompts_month);
    let windows = [("requests", requests), ("tokens", view.tokens)];
    for (what, window) in windows {
        let Some(Remaining { limit, remaining, reset_ms }) = window else { continue };
        let (limit_h, remaining_h, reset_h) = match what {
            "requests" => {
                ("x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests")
            }
            _ => ("x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
        };
        put(limit_h, limit.to_string());
        put(remaining_h, remaining.to_string());
        put(reset_h, format!("{reset_ms}ms"));
    }
    let count = |v: Option<i64>| v.map_or_else(|| "unlimited".to_owned(), |v| v.to_string());
    put("x-switchyard-prompts-remaining-day", count(view.prompts_day.map(|r| r.remaining)));
    put("x-switchyard-prompts-remaining-month", count(view.prompts_month.map(|r| r.remaining)));
    if let Some((limit, remaining, period)) = view.budget {
        put("x-switchyard-budget-limit-usd", usd(limit));
        put("x-switchyard-budget-remaining-usd", usd(remaining));
        put("x-switchyard-budget-period", period.as_str().to_owned());
    }
}

/// Micro-USD as a decimal string, exact (no float on the way).
pub fn usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    format!("{sign}{}.{:06}", m / 1_000_000, m % 1_000_000)
}

#[cfg(test)]
mod tests {
    #[test]
    fn usd_is_exact() {
        assert_eq!(super::usd(1_500_000), "1.500000");
        assert_eq!(super::usd(7), "0.000007");
        assert_eq!(super::usd(-25), "-0.000025");
    }
}
