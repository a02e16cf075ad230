//! The process-wide Prometheus recorder. Histograms get explicit buckets so they render as
//! real histograms (aggregatable across pods with `histogram_quantile`), not summaries.

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::RuntimeError;

/// Buckets for every `*_seconds` histogram: 100 µs to 60 s.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Buckets for counts (`*_rounds`, `*_agents`, batch sizes).
pub const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 10000.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the recorder once per process (services started in one test process share it)
/// and starts its upkeep.
pub fn install() -> Result<PrometheusHandle, RuntimeError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rounds".into()), COUNT_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_agents".into()), COUNT_BUCKETS))
        .map_err(|e| RuntimeError::Metrics(e.to_string()))?;
    let handle = match builder.install_recorder() {
        Ok(h) => h,
        // Lost a race with another service in this process: use the winner's.
        Err(e) => {
            return HANDLE
                .get()
                .cloned()
                .ok_or(RuntimeError::Metrics(e.to_string()))
        }
    };
    let handle = HANDLE.get_or_init(|| handle).clone();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}
