//! The trace headers an upstream attempt sends (`traceparent`, `tracestate`): set by the caller of an
//! attempt around it ([`propagate`], from `otlp`'s request trace) and added by `providers::exec` to every
//! request the attempt makes. A task-local, so no door, `Call` or adapter carries them.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// What one attempt sends its provider.
#[derive(Debug, Clone)]
pub struct Upstream {
    traceparent: HeaderValue,
    tracestate: Option<HeaderValue>,
}

impl Upstream {
    pub fn new(traceparent: HeaderValue, tracestate: Option<HeaderValue>) -> Upstream {
        Upstream { traceparent, tracestate }
    }
}

tokio::task_local! {
    static UPSTREAM: Upstream;
}

/// Runs one attempt with `upstream`'s trace headers for every request it sends.
pub async fn propagate<F: Future>(upstream: Option<Upstream>, attempt: F) -> F::Output {
    match upstream {
        Some(u) => UPSTREAM.scope(u, attempt).await,
        None => attempt.await,
    }
}

/// Adds the current attempt's trace headers, if it has any, to an upstream request's headers.
pub fn insert_upstream(headers: &mut HeaderMap) {
    let _ = UPSTREAM.try_with(|u| {
        headers.insert(TRACEPARENT, u.traceparent.clone());
        if let Some(state) = &u.tracestate {
            headers.insert(TRACESTATE, state.clone());
        }
    });
}
