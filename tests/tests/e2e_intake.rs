//! Durable intake over the real stack: a task that cannot be handled is redelivered with
//! backoff and, after `max_deliver`, kept in the dead-letter stream with its reason (never
//! dropped); a re-published task yields its one result again instead of running twice.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use mabeam_protocol::{
    codec::{decode, ContentType},
    subjects,
    telemetry::{EventKind, TelemetryEvent},
    Limits, Status,
};
use mabeam_testkit::metric_sample;
use mabeam_tests::{Fleet, Stack, StackOptions};
use serde_json::json;

/// Waits for the latest dead letter.
async fn dead_letter(stack: &Stack, timeout: Duration) -> jetstream::message::StreamMessage {
    let js = jetstream::new(stack.client.clone());
    let start = Instant::now();
    loop {
        if let Ok(stream) = js.get_stream(subjects::DEADLETTER_STREAM).await {
            if let Ok(m) = stream
                .get_last_raw_message_by_subject(subjects::TASKS_DEADLETTER)
                .await
            {
                return m;
            }
        }
        assert!(
            start.elapsed() < timeout,
            "no dead letter within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header<'a>(m: &'a jetstream::message::StreamMessage, name: &str) -> &'a str {
    m.headers
        .get(name)
        .unwrap_or_else(|| panic!("dead letter lacks {name}: {:?}", m.headers))
        .as_str()
}

async fn tasks_waiting(stack: &Stack) -> u64 {
    let js = jetstream::new(stack.client.clone());
    let mut stream = js.get_stream(subjects::TASKS_STREAM).await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_cannot_be_handled_ends_in_the_dead_letter_stream_with_its_reason() {
    let mut stack = Stack::start(
        StackOptions::new("intake-deadletter")
            .with("MABEAM_TASK_MAX_DELIVER", "3")
            .with("MABEAM_TASK_RETRY_BASE_MS", "100")
            .with("MABEAM_TASK_RETRY_MAX_MS", "400")
            .with("MABEAM_REGISTRY_TIMEOUT_MS", "200"),
    )
    .await;
    // Without the registry no participant can be resolved: the task is deferred each time.
    stack.registry.kill().await;
    let mut events = stack
        .client
        .subscribe("mabeam.events.coordinator.task_dead_lettered")
        .await
        .unwrap();
    let body = serde_json::to_vec(&json!({
        "task_id": "doomed-1", "algorithm": "majority", "proposal": "p",
        "options": ["a", "b"], "participants": {"all": true}
    }))
    .unwrap();
    let started = Instant::now();
    stack
        .submit_raw(body.clone(), Some(ContentType::Json.header_value()), None)
        .await;

    let letter = dead_letter(&stack, Duration::from_secs(20)).await;
    // Three deliveries with 100 ms and 200 ms of backoff between them.
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(letter.payload.as_ref(), body.as_slice(), "the body is kept");
    assert_eq!(header(&letter, "Content-Type"), "application/json");
    assert_eq!(
        header(&letter, subjects::DEADLETTER_TASK_HEADER),
        "doomed-1"
    );
    assert_eq!(header(&letter, subjects::DEADLETTER_DELIVERIES_HEADER), "3");
    let reason = header(&letter, subjects::DEADLETTER_REASON_HEADER);
    assert!(
        reason.starts_with("given up after 3 deliveries") && reason.contains("registry"),
        "{reason}"
    );

    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("a task_dead_lettered event")
        .unwrap();
    let event: TelemetryEvent =
        decode(ContentType::MsgPack, &event.payload, &Limits::default()).unwrap();
    match event.event {
        EventKind::TaskDeadLettered {
            task_id,
            deliveries,
            reason: why,
        } => {
            assert_eq!(task_id.unwrap().as_str(), "doomed-1");
            assert_eq!(deliveries, 3);
            assert_eq!(why, reason);
        }
        other => panic!("unexpected event {other:?}"),
    }
    // Moved, not copied: the work queue no longer holds it, and it never got a result.
    assert_eq!(tasks_waiting(&stack).await, 0);
    assert!(stack.session("doomed-1").await.is_err());
    let metrics = stack.coordinators[0].metrics();
    assert_eq!(
        metric_sample(
            &metrics,
            "mabeam_coordinator_tasks_dead_lettered_total",
            &[("path", "last_delivery")]
        )
        .unwrap_or(0.0),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sample(
            &metrics,
            "mabeam_coordinator_tasks_total",
            &[("outcome", "deferred")]
        )
        .unwrap_or(0.0),
        2.0,
        "{metrics}"
    );

    // Once the registry is back, an operator re-drives the dead letter: it runs normally
    // (no agent is registered here, so it is rejected, with a result this time).
    stack.registry.restart().await;
    let mut result = stack.watch("doomed-1").await;
    stack
        .submit_raw(
            letter.payload.to_vec(),
            Some(header(&letter, "Content-Type")),
            None,
        )
        .await;
    let result = Stack::result(&mut result, Duration::from_secs(10)).await;
    assert_eq!(result.status, Status::Rejected, "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_message_nobody_acknowledges_is_dead_lettered_from_the_advisory() {
    let mut stack = Stack::start(
        StackOptions::new("intake-advisory")
            .with("MABEAM_TASK_MAX_DELIVER", "2")
            .with("MABEAM_TASK_ACK_WAIT_MS", "1000"),
    )
    .await;
    // The coordinator has created the stream and its consumer; now it is gone, and the test
    // plays the replicas that take the task and die before acking it, twice.
    stack.coordinators[0]
        .terminate(Duration::from_secs(10))
        .await;
    let body = serde_json::to_vec(&json!({
        "task_id": "orphan-1", "algorithm": "majority", "proposal": "p",
        "options": ["a", "b"], "participants": {"all": true}
    }))
    .unwrap();
    stack
        .submit_raw(body.clone(), Some(ContentType::Json.header_value()), None)
        .await;
    let js = jetstream::new(stack.client.clone());
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(subjects::TASKS_STREAM)
        .await
        .unwrap()
        .get_consumer("mabeam-coordinator")
        .await
        .unwrap();
    for delivery in 1..=2 {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(3))
            .messages()
            .await
            .unwrap();
        let msg = batch
            .next()
            .await
            .unwrap_or_else(|| panic!("delivery {delivery} did not come"))
            .unwrap();
        assert_eq!(msg.info().unwrap().delivered, delivery);
        // Not acked: the ack wait (1 s) runs out.
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
    // A coordinator comes back; its pull makes JetStream notice the exhausted message and
    // announce it.
    stack.coordinators[0].restart().await;
    let letter = dead_letter(&stack, Duration::from_secs(20)).await;
    assert_eq!(letter.payload.as_ref(), body.as_slice());
    assert_eq!(
        header(&letter, subjects::DEADLETTER_TASK_HEADER),
        "orphan-1"
    );
    let reason = header(&letter, subjects::DEADLETTER_REASON_HEADER);
    assert!(
        reason.starts_with("not acknowledged after 2 deliveries"),
        "{reason}"
    );
    // Removed from the work queue, which would otherwise keep it forever.
    let start = Instant::now();
    while tasks_waiting(&stack).await != 0 {
        assert!(start.elapsed() < Duration::from_secs(5), "task not removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = stack.coordinators[0].metrics();
    assert_eq!(
        metric_sample(
            &metrics,
            "mabeam_coordinator_tasks_dead_lettered_total",
            &[("path", "advisory")]
        )
        .unwrap_or(0.0),
        1.0,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_task_yields_the_same_single_result() {
    let stack =
        Stack::start(StackOptions::new("intake-republish").fleet(Fleet::new("rep", 3))).await;
    let task = json!({
        "task_id": "dup-1", "algorithm": "majority", "proposal": "p",
        "options": ["a", "b"], "participants": {"all": true}
    });
    let mut results = stack.watch("dup-1").await;
    stack.submit(task.clone(), ContentType::Json).await;
    let first = Stack::result(&mut results, Duration::from_secs(15)).await;
    assert_eq!(first.status, Status::Decided, "{first:?}");

    // Published again without a dedup id (as after the dedup window), then with another
    // dedup id: JetStream takes both, the coordinator finds the stored result each time.
    stack.submit(task.clone(), ContentType::Json).await;
    let again = Stack::result(&mut results, Duration::from_secs(15)).await;
    stack
        .submit_raw(
            serde_json::to_vec(&task).unwrap(),
            Some(ContentType::Json.header_value()),
            Some("another-publisher-id"),
        )
        .await;
    let third = Stack::result(&mut results, Duration::from_secs(15)).await;
    for r in [&again, &third] {
        assert_eq!(r.session_id, first.session_id, "one session only");
        assert_eq!(r.outcome, first.outcome);
        assert_eq!(r.status, first.status);
        assert_eq!(r.timings, first.timings);
    }

    // One result in the results stream, one decision counted, nothing left queued.
    let js = jetstream::new(stack.client.clone());
    let results_stream = js.get_stream(subjects::RESULTS_STREAM).await.unwrap();
    let info = results_stream
        .info_with_subjects("mabeam.results.dup-1")
        .await
        .unwrap();
    let counts: Vec<_> = info.collect().await;
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(counts[0].as_ref().unwrap().1, 1, "{counts:?}");
    let metrics = stack.coordinators[0].metrics();
    assert_eq!(
        metric_sample(
            &metrics,
            "mabeam_coordinator_tasks_total",
            &[("outcome", "accepted")]
        )
        .unwrap_or(0.0),
        1.0
    );
    assert_eq!(
        metric_sample(
            &metrics,
            "mabeam_coordinator_tasks_total",
            &[("outcome", "duplicate")]
        )
        .unwrap_or(0.0),
        2.0
    );
    assert_eq!(tasks_waiting(&stack).await, 0);
}
