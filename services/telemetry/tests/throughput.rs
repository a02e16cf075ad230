//! Ingest throughput (a measurement, not a timed test; ignored by default):
//!
//! ```sh
//! cargo test -p mabeam-telemetry --release --test throughput -- --ignored --nocapture
//! ```
//!
//! Publishes `MABEAM_BENCH_EVENTS` (default 500,000) events from one client, as fast as it
//! can or at `MABEAM_BENCH_RATE` events/s, and reports how many telemetry decoded, counted
//! and appended to the audit stream, and how fast.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{event, metrics_text, sample, Telemetry};
use mabeam_protocol::{
    codec::{encode, ContentType},
    result::Status,
    subjects,
    telemetry::{EventKind, Service},
    SessionId, TaskId,
};
use mabeam_runtime::now_ms;
use mabeam_testkit::Infra;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run with --release --ignored"]
async fn ingest_throughput() {
    let total: u64 = std::env::var("MABEAM_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500_000);
    let infra = Infra::start();
    let telemetry = Telemetry::start(&infra, &[]).await;
    let http = telemetry.http();
    // A realistic mix, pre-encoded so the publisher costs as little as possible.
    let kinds = [
        EventKind::SessionFinished {
            task_id: TaskId::new("task-0123456789").unwrap(),
            session_id: SessionId::new("session-0123456789").unwrap(),
            algorithm: "weighted".into(),
            status: Status::Decided,
            rounds: 1,
            duration_ms: 3,
        },
        EventKind::TaskAccepted {
            task_id: TaskId::new("task-0123456789").unwrap(),
            algorithm: "weighted".into(),
        },
    ];
    let bodies: Vec<(String, Bytes)> = kinds
        .into_iter()
        .map(|kind| {
            let e = event(Service::Coordinator, now_ms(), kind);
            (
                subjects::event(e.service, e.event.name()),
                encode(ContentType::MsgPack, &e).unwrap().into(),
            )
        })
        .collect();

    // The publisher gets its own thread and runtime, as a separate service would, and
    // paces itself at MABEAM_BENCH_RATE events/s when set (open model: bursts of 1,000).
    let rate: Option<u64> = std::env::var("MABEAM_BENCH_RATE")
        .ok()
        .and_then(|v| v.parse().ok());
    let url = infra.nats.url();
    let start = Instant::now();
    let publisher = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let client = async_nats::connect(url).await.unwrap();
            let burst = 1_000;
            for i in 0..total {
                if let (Some(rate), 0) = (rate, i % burst) {
                    let due = Duration::from_secs_f64(i as f64 / rate as f64);
                    if let Some(wait) = due.checked_sub(start.elapsed()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                let (subject, body) = &bodies[(i % 2) as usize];
                client.publish(subject.clone(), body.clone()).await.unwrap();
            }
            client.flush().await.unwrap();
        });
        start.elapsed()
    });
    let published = publisher.join().unwrap();
    // Done when every event is accounted for, or when nothing moved for two seconds
    // (events lost before telemetry saw them: NATS slow-consumer drops).
    let mut last = (-1.0, Instant::now());
    let (received, written, dropped, slow) = loop {
        let text = metrics_text(http).await;
        let value =
            |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels).unwrap_or(0.0);
        let received: f64 = ["session_finished", "task_accepted"]
            .iter()
            .map(|k| {
                value(
                    "mabeam_telemetry_events_total",
                    &[("service", "coordinator"), ("kind", k)],
                )
            })
            .sum();
        let written = value("mabeam_telemetry_audit_written_total", &[]);
        let dropped = value(
            "mabeam_telemetry_events_dropped_total",
            &[("reason", "queue_full")],
        ) + value(
            "mabeam_telemetry_events_dropped_total",
            &[("reason", "redis_error")],
        );
        let slow = value("mabeam_nats_slow_consumer_total", &[]);
        let progress = written + dropped;
        if progress >= total as f64 || last.1.elapsed() > Duration::from_secs(2) {
            break (received, written, dropped, slow);
        }
        if progress > last.0 {
            last = (progress, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Up to the last progress, not the idle wait after it.
    let elapsed = last.1.duration_since(start);
    println!(
        "{total} events published in {published:?} ({:.0}/s); telemetry received {received}, \
         wrote {written} in {elapsed:?} ({:.0} events/s), dropped {dropped}; slow-consumer \
         events {slow}",
        total as f64 / published.as_secs_f64(),
        written / elapsed.as_secs_f64()
    );
    telemetry.stop().await;
}
