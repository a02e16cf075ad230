//! The load driver behind `make load-test`, `make scale` and `make bench-floor`
//! (`benches/src/bin/mabeam-load.rs`).
//!
//! It drives a whole stack with an **open model**: tasks are sent at their scheduled (intended)
//! times whatever the stack is doing, and latency is measured from that intended time to the
//! result, so a stall shows as latency instead of silently lowering the offered rate
//! (coordinated omission). Latencies go into HdrHistograms per scenario.

pub mod floor;
pub mod growth;
pub mod procfs;
pub mod profile;
pub mod report;
pub mod run;
pub mod scale;
pub mod scenario;
pub mod stack;
pub mod thresholds;

use std::time::Duration;

/// A histogram of microseconds, 3 significant digits, up to ten minutes.
pub fn histogram() -> hdrhistogram::Histogram<u64> {
    // Bounds are constants that `new_with_bounds` accepts; a failure is a programming error.
    #[allow(clippy::expect_used)]
    hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Records `d` in a microsecond histogram, saturating at its highest trackable value.
pub fn record(h: &mut hdrhistogram::Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// Milliseconds of a microsecond quantile.
pub fn ms(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    h.value_at_quantile(q) as f64 / 1000.0
}
