//! Redis outage: events are dropped and counted (never buffered without bound), `/readyz`
//! turns false, and the audit trail resumes once Redis is back. One test in this binary:
//! it reads process-wide drop counters.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{
    audit_nats, connect, event, eventually, http_get, metrics_text, publish, sample, Telemetry,
};
use mabeam_protocol::{
    telemetry::{AuditQuery, EventKind, Service},
    ContentType, TaskId, PROTOCOL_VERSION,
};
use mabeam_runtime::now_ms;
use mabeam_testkit::Infra;

const WAIT: Duration = Duration::from_secs(20);

fn accepted(task: &str) -> EventKind {
    EventKind::TaskAccepted {
        task_id: TaskId::new(task).unwrap(),
        algorithm: "majority".into(),
    }
}

fn by_task(task: &str) -> AuditQuery {
    AuditQuery {
        v: PROTOCOL_VERSION,
        task_id: Some(TaskId::new(task).unwrap()),
        ..AuditQuery::default()
    }
}

fn dropped(text: &str) -> f64 {
    ["queue_full", "redis_error"]
        .iter()
        .filter_map(|reason| {
            sample(
                text,
                "mabeam_telemetry_events_dropped_total",
                &[("reason", reason)],
            )
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_drops_and_counts_events_and_recovers() {
    let mut infra = Infra::start();
    let telemetry = Telemetry::start(
        &infra,
        &[("MABEAM_AUDIT_QUEUE", "50"), ("MABEAM_AUDIT_BATCH", "10")],
    )
    .await;
    let http = telemetry.http();
    let client = connect(&infra).await;

    publish(
        &client,
        &event(Service::Coordinator, now_ms(), accepted("before")),
    )
    .await;
    eventually(WAIT, "the first event stored", || async {
        let page = audit_nats(&client, &by_task("before"), ContentType::MsgPack)
            .await
            .unwrap();
        (page.records.len() == 1).then_some(())
    })
    .await;
    assert_eq!(http_get(http, "/readyz").await.0, 200);
    assert_eq!(dropped(&metrics_text(http).await), 0.0);

    infra.redis.stop();
    eventually(WAIT, "/readyz false", || async {
        let (status, body) = http_get(http, "/readyz").await;
        (status == 503 && body.contains("\"redis\":false")).then_some(())
    })
    .await;
    for i in 0..1_000 {
        publish(
            &client,
            &event(
                Service::Coordinator,
                now_ms(),
                accepted(&format!("lost-{i}")),
            ),
        )
        .await;
    }
    // The queue holds 50; nearly everything else is dropped and counted.
    let text = eventually(WAIT, "drops counted", || async {
        let text = metrics_text(http).await;
        (sample(
            &text,
            "mabeam_telemetry_events_total",
            &[("service", "coordinator"), ("kind", "task_accepted")],
        ) == Some(1_001.0)
            && dropped(&text) >= 900.0)
            .then_some(text)
    })
    .await;
    assert!(
        sample(
            &text,
            "mabeam_telemetry_events_dropped_total",
            &[("reason", "queue_full")]
        )
        .unwrap()
            > 0.0
    );
    // Audit queries say Redis is unavailable.
    let err = audit_nats(&client, &by_task("before"), ContentType::MsgPack)
        .await
        .unwrap_err();
    assert_eq!(err.code, mabeam_protocol::ErrorCode::Unavailable);
    let (status, _) = http_get(http, "/audit").await;
    assert_eq!(status, 503);

    infra.redis.start_again();
    eventually(WAIT, "/readyz true again", || async {
        (http_get(http, "/readyz").await.0 == 200).then_some(())
    })
    .await;
    publish(
        &client,
        &event(Service::Coordinator, now_ms(), accepted("after")),
    )
    .await;
    eventually(WAIT, "events stored again after the restart", || async {
        let page = audit_nats(&client, &by_task("after"), ContentType::MsgPack).await;
        page.is_ok_and(|p| p.records.len() == 1).then_some(())
    })
    .await;
    telemetry.stop().await;
}
