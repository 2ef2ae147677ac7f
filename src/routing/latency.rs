//! Time to first token per target, as this replica measures it: an exponentially weighted moving average
//! of streamed attempts' first content (`http::pipeline` records each one that answered), starting from
//! the model's speed class until the first measurement. `prefer: fast` orders a tier by it.
//!
//! Per replica and in memory on purpose: latency is a property of the path from this replica to the
//! provider, and a restart relearns it within a few requests. Only streams are measured: a whole answer's
//! time is mostly its length, not its provider's speed.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Weight of a new measurement, in 1/16ths (4/16 = 0.25: about the last eight requests count).
const NEW_WEIGHT: u64 = 4;

#[derive(Debug)]
pub struct Ttft {
    /// Microseconds; 0 until the first measurement.
    measured_us: AtomicU32,
    assumed_ms: u32,
}

impl Ttft {
    pub fn assuming(assumed_ms: u32) -> Ttft {
        Ttft { measured_us: AtomicU32::new(0), assumed_ms }
    }

    /// Takes over another measurement (a configuration reload keeps what was measured).
    pub fn take_over(&self, from: &Ttft) {
        self.measured_us.store(from.measured_us.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Folds in one attempt's time to its first content.
    pub fn record(&self, took: Duration) {
        let sample = u32::try_from(took.as_micros()).unwrap_or(u32::MAX).max(1);
        let _ = self.measured_us.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            Some(if old == 0 {
                sample
            } else {
                let mixed = (u64::from(old) * (16 - NEW_WEIGHT) + u64::from(sample) * NEW_WEIGHT) / 16;
                u32::try_from(mixed).unwrap_or(u32::MAX).max(1)
            })
        });
    }

    /// The measured average, if any attempt was measured.
    pub fn measured_ms(&self) -> Option<f64> {
        match self.measured_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(f64::from(us) / 1000.0),
        }
    }

    /// What `prefer: fast` ranks by: the measured average, else the speed class's assumption.
    pub fn estimate_ms(&self) -> f64 {
        self.measured_ms().unwrap_or(f64::from(self.assumed_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_from_the_class_then_follows_measurements() {
        let t = Ttft::assuming(800);
        assert_eq!(t.estimate_ms(), 800.0);
        t.record(Duration::from_millis(100));
        assert_eq!(t.estimate_ms(), 100.0, "the first measurement replaces the assumption");
        for _ in 0..30 {
            t.record(Duration::from_millis(500));
        }
        assert!((t.estimate_ms() - 500.0).abs() < 5.0, "{}", t.estimate_ms());
        t.record(Duration::from_millis(1500));
        assert!((t.estimate_ms() - 750.0).abs() < 5.0, "one slow answer moves it a quarter of the way");
    }
}
