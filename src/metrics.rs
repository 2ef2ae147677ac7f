//! Prometheus metrics (`GET /metrics`, text format 0.0.4), fed by the same usage records as the ledger.
//!
//! Label values come from configuration only (catalog model names, provider names, outcomes), never from
//! what a caller typed: a model string that is not in the catalog is counted as `other`, so callers
//! cannot grow the number of series. Per-key series carry the ids of authenticated keys only (made by
//! admins, never typed by a caller), and at most [`MAX_KEY_SERIES`] of them; later keys share `other`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use crate::usage::{UsageRecord, UsageSink};

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 12] = [0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }
}

#[derive(Hash, PartialEq, Eq, Clone)]
struct RequestKey {
    model: Arc<str>,
    provider: Arc<str>,
    outcome: &'static str,
    status: u16,
}

#[derive(Default)]
struct ModelSeries {
    prompt_tokens: u64,
    completion_tokens: u64,
    cost_micros: i64,
    latency: Histogram,
    ttft: Histogram,
}

/// Keys with series of their own at most; the rest are summed under `key_id="other"`.
pub const MAX_KEY_SERIES: usize = 1000;

#[derive(Default)]
struct KeySeries {
    organization_id: String,
    requests: u64,
    cost_micros: i64,
}

#[derive(Default)]
struct Inner {
    requests: HashMap<RequestKey, u64>,
    models: HashMap<(Arc<str>, Arc<str>), ModelSeries>,
    keys: HashMap<String, KeySeries>,
}

/// Label values allowed as they are: catalog model names, provider names.
#[derive(Default, Clone)]
struct Known {
    models: HashMap<String, Arc<str>>,
    providers: HashMap<String, Arc<str>>,
}

pub struct Metrics {
    /// Grown by configuration reloads (never shrunk: a removed model's series stay).
    known: arc_swap::ArcSwap<Known>,
    /// For a value that is not configured, and for none at all.
    other: Arc<str>,
    none: Arc<str>,
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn new(models: impl IntoIterator<Item = String>, providers: impl IntoIterator<Item = String>) -> Self {
        let metrics = Self {
            known: arc_swap::ArcSwap::from_pointee(Known::default()),
            other: Arc::from("other"),
            none: Arc::from("none"),
            inner: Mutex::default(),
        };
        metrics.know(models, providers);
        metrics
    }

    /// The model and provider names that are label values as they are (at start, and each reload's).
    pub fn know(&self, models: impl IntoIterator<Item = String>, providers: impl IntoIterator<Item = String>) {
        let mut known = Known::clone(&self.known.load());
        for m in models {
            known.models.entry(m.clone()).or_insert_with(|| Arc::from(m));
        }
        for p in providers {
            known.providers.entry(p.clone()).or_insert_with(|| Arc::from(p));
        }
        self.known.store(Arc::new(known));
    }

    fn label(&self, known: &HashMap<String, Arc<str>>, value: Option<&str>) -> Arc<str> {
        match value {
            None => self.none.clone(),
            Some(v) => known.get(v).unwrap_or(&self.other).clone(),
        }
    }

    pub fn observe(&self, r: &UsageRecord) {
        let known = self.known.load();
        let model = self.label(&known.models, r.served_model.as_deref());
        let provider = self.label(&known.providers, r.provider.as_deref());
        drop(known);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = RequestKey {
            model: model.clone(),
            provider: provider.clone(),
            outcome: r.outcome.as_str(),
            status: r.status,
        };
        *inner.requests.entry(key).or_default() += 1;
        let series = inner.models.entry((model, provider)).or_default();
        series.prompt_tokens += r.prompt_tokens;
        series.completion_tokens += r.completion_tokens;
        series.cost_micros += r.cost_micros.unwrap_or(0);
        series.latency.observe(r.latency_ms as f64 / 1000.0);
        if let Some(t) = r.ttft_ms {
            series.ttft.observe(t as f64 / 1000.0);
        }
        if let Some(key) = &r.key_id {
            // Looked up by reference: a known key costs no allocation.
            let id = if inner.keys.contains_key(key.as_str()) || inner.keys.len() < MAX_KEY_SERIES {
                key.as_str()
            } else {
                "other"
            };
            if !inner.keys.contains_key(id) {
                let org = if id == "other" { "other" } else { r.organization_id.as_deref().unwrap_or("") };
                inner.keys.insert(id.to_owned(), KeySeries { organization_id: org.to_owned(), ..KeySeries::default() });
            }
            if let Some(k) = inner.keys.get_mut(id) {
                k.requests += 1;
                k.cost_micros += r.cost_micros.unwrap_or(0);
            }
        }
    }

    /// The exposition text; `gauges` are extra lines computed at scrape time.
    pub fn render(&self, gauges: &str) -> String {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::with_capacity(4096);
        let _ = writeln!(out, "# HELP switchyard_build_info The running version.");
        let _ = writeln!(out, "# TYPE switchyard_build_info gauge");
        let _ = writeln!(out, "switchyard_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));

        let _ =
            writeln!(out, "# HELP switchyard_requests_total Requests served, by the model and provider that answered.");
        let _ = writeln!(out, "# TYPE switchyard_requests_total counter");
        let mut requests: Vec<_> = inner.requests.iter().collect();
        requests.sort_by(|a, b| {
            (&*a.0.model, &*a.0.provider, a.0.outcome, a.0.status).cmp(&(
                &*b.0.model,
                &*b.0.provider,
                b.0.outcome,
                b.0.status,
            ))
        });
        for (k, n) in requests {
            let _ = writeln!(
                out,
                "switchyard_requests_total{{model=\"{}\",provider=\"{}\",outcome=\"{}\",status=\"{}\"}} {n}",
                escape(&k.model),
                escape(&k.provider),
                k.outcome,
                k.status
            );
        }

        let mut models: Vec<_> = inner.models.iter().collect();
        models.sort_by(|a, b| a.0.cmp(b.0));
        let labels = |(m, p): &(Arc<str>, Arc<str>)| format!("model=\"{}\",provider=\"{}\"", escape(m), escape(p));
        let _ = writeln!(out, "# HELP switchyard_tokens_total Tokens billed, by kind.");
        let _ = writeln!(out, "# TYPE switchyard_tokens_total counter");
        for (k, s) in &models {
            let l = labels(k);
            let _ = writeln!(out, "switchyard_tokens_total{{{l},kind=\"prompt\"}} {}", s.prompt_tokens);
            let _ = writeln!(out, "switchyard_tokens_total{{{l},kind=\"completion\"}} {}", s.completion_tokens);
        }
        let _ = writeln!(out, "# HELP switchyard_cost_usd_total Spend at catalog prices.");
        let _ = writeln!(out, "# TYPE switchyard_cost_usd_total counter");
        for (k, s) in &models {
            let _ = writeln!(out, "switchyard_cost_usd_total{{{}}} {}", labels(k), s.cost_micros as f64 / 1e6);
        }
        for (name, help, pick) in [
            (
                "switchyard_request_duration_seconds",
                "Time from request to its end (whole response, or end of stream).",
                (|s: &ModelSeries| &s.latency) as fn(&ModelSeries) -> &Histogram,
            ),
            ("switchyard_time_to_first_token_seconds", "Time from request to its first streamed content.", |s| &s.ttft),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} histogram");
            for (k, s) in &models {
                let h = pick(s);
                if h.count == 0 {
                    continue;
                }
                let l = labels(k);
                let mut cumulative = 0;
                for (bound, n) in BUCKETS.iter().zip(h.counts) {
                    cumulative += n;
                    let _ = writeln!(out, "{name}_bucket{{{l},le=\"{bound}\"}} {cumulative}");
                }
                let _ = writeln!(out, "{name}_bucket{{{l},le=\"+Inf\"}} {}", h.count);
                let _ = writeln!(out, "{name}_sum{{{l}}} {}", h.sum);
                let _ = writeln!(out, "{name}_count{{{l}}} {}", h.count);
            }
        }
        let mut keys: Vec<_> = inner.keys.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        let _ = writeln!(out, "# HELP switchyard_key_requests_total Requests made with each virtual key.");
        let _ = writeln!(out, "# TYPE switchyard_key_requests_total counter");
        for (id, k) in &keys {
            let _ = writeln!(
                out,
                "switchyard_key_requests_total{{key_id=\"{}\",organization_id=\"{}\"}} {}",
                escape(id),
                escape(&k.organization_id),
                k.requests
            );
        }
        let _ = writeln!(out, "# HELP switchyard_key_spend_usd_total Spend of each virtual key at catalog prices.");
        let _ = writeln!(out, "# TYPE switchyard_key_spend_usd_total counter");
        for (id, k) in &keys {
            let _ = writeln!(
                out,
                "switchyard_key_spend_usd_total{{key_id=\"{}\",organization_id=\"{}\"}} {}",
                escape(id),
                escape(&k.organization_id),
                k.cost_micros as f64 / 1e6
            );
        }
        out.push_str(gauges);
        out
    }
}

/// A label value in the exposition format: backslash, double quote and newline escaped.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Feeds every usage record to the metrics, then hands it on (no copy).
pub struct Metered {
    pub metrics: Arc<Metrics>,
    pub inner: Arc<dyn UsageSink>,
}

impl UsageSink for Metered {
    fn begin(&self, if_lost: &UsageRecord) {
        self.inner.begin(if_lost);
    }

    fn record(&self, record: UsageRecord) {
        self.metrics.observe(&record);
        self.inner.record(record);
    }
}

#[cfg(test)]
mod key_series_tests {
    use super::*;
    use crate::store::ledger::{Outcome, UsageSource};

    fn record(key: &str, cost: i64) -> UsageRecord {
        UsageRecord {
            request_id: key.to_owned(),
            client_request_id: None,
            created_at: 0,
            organization_id: Some("org".into()),
            key_id: Some(key.to_owned()),
            attempts: 1,
            cost_micros: Some(cost),
            prompt_counted: true,
            requested_model: "m".into(),
            served_model: Some("m".into()),
            provider: Some("p".into()),
            streamed: false,
            outcome: Outcome::Completed,
            status: 200,
            prompt_tokens: 1,
            completion_tokens: 1,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            usage_source: UsageSource::Provider,
            latency_ms: 1,
            ttft_ms: None,
            error: None,
            continued_from: Vec::new(),
        }
    }

    #[test]
    fn keys_past_the_cap_share_one_series_and_nothing_is_lost() {
        let m = Metrics::new(["m".to_owned()], ["p".to_owned()]);
        for i in 0..MAX_KEY_SERIES + 50 {
            m.observe(&record(&format!("key-{i:05}"), 1_000_000));
        }
        let text = m.render("");
        let spend: Vec<&str> = text.lines().filter(|l| l.starts_with("switchyard_key_spend_usd_total{")).collect();
        assert_eq!(spend.len(), MAX_KEY_SERIES + 1, "the cap, plus `other`");
        let other = spend.iter().find(|l| l.contains("key_id=\"other\"")).expect("an other series");
        assert!(other.ends_with(" 50"), "{other}");
        let total: f64 = spend.iter().map(|l| l.rsplit(' ').next().unwrap_or("0").parse::<f64>().unwrap_or(0.0)).sum();
        assert_eq!(total, (MAX_KEY_SERIES + 50) as f64);
    }
}
