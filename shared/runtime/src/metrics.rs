//! The process-wide Prometheus recorder. Histograms get explicit buckets so they render as
//! real histograms (aggregatable across pods with `histogram_quantile`), not summaries.

use std::{
    sync::{Mutex, OnceLock},
    time::Duration,
};

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
/// Serialises installation: services starting together in one process must not race between
/// installing the recorder and publishing its handle.
static INSTALLING: Mutex<()> = Mutex::new(());

/// A metric's kind, name and help text: every metric a process exports gets a `# HELP` line
/// (`promtool check metrics` and Grafana's metric browser rely on it).
#[derive(Debug, Clone, Copy)]
pub enum Described {
    Counter(&'static str, &'static str),
    Gauge(&'static str, &'static str),
    Histogram(&'static str, &'static str),
}

/// Registers help texts with the installed recorder (call after [`install`]).
pub fn describe(metrics: &[Described]) {
    for metric in metrics {
        match *metric {
            Described::Counter(name, help) => metrics::describe_counter!(name, help),
            Described::Gauge(name, help) => metrics::describe_gauge!(name, help),
            Described::Histogram(name, help) => metrics::describe_histogram!(name, help),
        }
    }
}

/// The metrics of the runtime itself (readiness, NATS connection, events, refusals).
pub const METRICS: &[Described] = &[
    Described::Gauge(
        "mabeam_dependency_up",
        "Whether this process reaches the dependency (1) or not (0).",
    ),
    Described::Counter(
        "mabeam_nats_slow_consumer_total",
        "Times the NATS server reported this client as a slow consumer.",
    ),
    Described::Counter(
        "mabeam_nats_errors_total",
        "NATS connection errors by kind (server, client).",
    ),
    Described::Counter(
        "mabeam_events_emitted_total",
        "Telemetry events published by kind.",
    ),
    Described::Counter(
        "mabeam_events_dropped_total",
        "Telemetry events that could not be published, by kind.",
    ),
    Described::Counter(
        "mabeam_requests_refused_total",
        "Requests answered with an error, by endpoint and error code.",
    ),
];

/// Installs the recorder once per process (services started in one test process share it)
/// and starts its upkeep.
pub fn install() -> Result<PrometheusHandle, RuntimeError> {
    let _installing = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS_SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rounds".into()), COUNT_BUCKETS))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_agents".into()), COUNT_BUCKETS))
        .map_err(|e| RuntimeError::Metrics(e.to_string()))?;
    let handle = builder
        .install_recorder()
        .map_err(|e| RuntimeError::Metrics(e.to_string()))?;
    let handle = HANDLE.get_or_init(|| handle).clone();
    describe(METRICS);
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
