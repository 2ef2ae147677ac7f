//! Probes for orchestrators. No authentication, no dependency calls on liveness.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::app::AppState;

/// 200 while the process runs.
pub async fn liveness() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

/// 200 while the gateway takes traffic; 503 from the moment shutdown begins, so load balancers drain it.
pub async fn readiness(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))).into_response();
    }
    if state.ledger.is_backlogged() {
        // Requests are still recorded (in the spool), but the database has been away too long.
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "ledger_backlogged", "spooled_bytes": state.ledger.spooled_bytes()})),
        )
            .into_response();
    }
    if !state.limiter.is_available() {
        // Virtual-key requests are refused until the shared counters are back (the master key still works).
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "limits_unavailable"}))).into_response();
    }
    let providers = &state.live().providers;
    let available = providers.iter().filter(|p| p.unavailable_reason().is_none()).count();
    Json(json!({"status": "ready", "providers_available": available, "providers_configured": providers.len()}))
        .into_response()
}

/// `GET /metrics` (master key): Prometheus text format. Request, token, cost and latency series come from
/// the usage records; breaker states and readiness are read at scrape time.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    use std::fmt::Write as _;
    let now = tokio::time::Instant::now();
    let mut gauges = String::new();
    let _ =
        writeln!(gauges, "# HELP switchyard_breaker_open Whether a model's circuit breaker is open (1) or not (0).");
    let _ = writeln!(gauges, "# TYPE switchyard_breaker_open gauge");
    for m in state.live().catalog.models() {
        let open = matches!(m.breaker.peek(now), crate::routing::breaker::Gate::Open { .. });
        let _ = writeln!(
            gauges,
            "switchyard_breaker_open{{model=\"{}\",provider=\"{}\"}} {}",
            crate::metrics::escape(&m.name),
            crate::metrics::escape(&m.provider.name),
            u8::from(open)
        );
    }
    let _ = writeln!(gauges, "# HELP switchyard_ready Whether the gateway takes traffic (0 while draining).");
    let _ = writeln!(gauges, "# TYPE switchyard_ready gauge");
    let ready =
        !state.draining.load(Ordering::Relaxed) && !state.ledger.is_backlogged() && state.limiter.is_available();
    let _ = writeln!(gauges, "switchyard_ready {}", u8::from(ready));
    let _ = writeln!(
        gauges,
        "# HELP switchyard_ledger_spool_bytes Usage records waiting in the local spool for the database."
    );
    let _ = writeln!(gauges, "# TYPE switchyard_ledger_spool_bytes gauge");
    let _ = writeln!(gauges, "switchyard_ledger_spool_bytes {}", state.ledger.spooled_bytes());
    let _ = writeln!(
        gauges,
        "# HELP switchyard_ledger_backlogged Whether more waits in the spool than ledger.spool_max_mb allows."
    );
    let _ = writeln!(gauges, "# TYPE switchyard_ledger_backlogged gauge");
    let _ = writeln!(gauges, "switchyard_ledger_backlogged {}", u8::from(state.ledger.is_backlogged()));
    if let Some(tracer) = &state.tracer {
        let c = &tracer.counters;
        for (name, help, value) in [
            ("exported", "Spans the trace collector took.", &c.exported),
            ("dropped", "Spans dropped because the export queue was full.", &c.dropped),
            ("failed", "Spans the collector refused or could not be sent after retries.", &c.failed),
        ] {
            let _ = writeln!(gauges, "# HELP switchyard_trace_spans_{name}_total {help}");
            let _ = writeln!(gauges, "# TYPE switchyard_trace_spans_{name}_total counter");
            let _ = writeln!(gauges, "switchyard_trace_spans_{name}_total {}", value.load(Ordering::Relaxed));
        }
    }
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render(&gauges))
        .into_response()
}
