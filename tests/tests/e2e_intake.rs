//! Durable intake over the real stack: a task that cannot be handled is redelivered with
//! backoff and, after `max_deliver`, kept in the dead-letter stream with its reason (never
//! dropped); a re-published task yields its one result again instead of running twice; high
//! priority tasks overtake the normal ones waiting.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use mabeam_protocol::{
    codec::{decode, ContentType},
    subjects,
    telemetry::{EventKind, TelemetryEvent},
    ErrorCode, Limits, Status, TaskResult,
};
use mabeam_testkit::metric_sample;
use mabeam_tests::{Fleet, Stack, StackOptions};
use serde_json::json;

/// Waits for the dead letter of `task`.
async fn dead_letter(
    stack: &Stack,
    task: &str,
    timeout: Duration,
) -> jetstream::message::StreamMessage {
    let js = jetstream::new(stack.client.clone());
    let start = Instant::now();
    loop {
        if let Ok(mut stream) = js.get_stream(subjects::DEADLETTER_STREAM).await {
            let last = stream.info().await.map_or(0, |i| i.state.last_sequence);
            for sequence in 1..=last {
                let Ok(m) = stream.get_raw_message(sequence).await else {
                    continue;
                };
                let of = m.headers.get(subjects::DEADLETTER_TASK_HEADER);
                if of.map(|v| v.as_str()) == Some(task) {
                    return m;
                }
            }
        }
        assert!(
            start.elapsed() < timeout,
            "no dead letter for {task} within {timeout:?}"
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

/// Task messages in both queues.
async fn tasks_waiting(stack: &Stack) -> u64 {
    let js = jetstream::new(stack.client.clone());
    let mut waiting = 0;
    for queue in [subjects::TASKS_STREAM, subjects::TASKS_HIGH_STREAM] {
        let mut stream = js.get_stream(queue).await.unwrap();
        waiting += stream.info().await.unwrap().state.messages;
    }
    waiting
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

    let letter = dead_letter(&stack, "doomed-1", Duration::from_secs(20)).await;
    // Three deliveries with 100 ms and 200 ms of backoff between them.
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(letter.payload.as_ref(), body.as_slice(), "the body is kept");
    assert_eq!(header(&letter, "Content-Type"), "application/json");
    assert_eq!(
        header(&letter, subjects::DEADLETTER_TASK_HEADER),
        "doomed-1"
    );
    assert_eq!(header(&letter, subjects::DEADLETTER_DELIVERIES_HEADER), "3");
    assert_eq!(
        header(&letter, subjects::DEADLETTER_STREAM_HEADER),
        subjects::TASKS_STREAM
    );
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
    // The high-priority queue gives up the same way, with a dead letter of its own even
    // though both messages are the first of their streams.
    let urgent = serde_json::to_vec(&json!({
        "task_id": "doomed-high", "algorithm": "majority", "proposal": "p",
        "options": ["a", "b"], "participants": {"all": true}, "priority": "high"
    }))
    .unwrap();
    stack
        .submit_raw_on(
            subjects::TASKS_SUBMIT_HIGH,
            urgent.clone(),
            Some(ContentType::Json.header_value()),
            None,
        )
        .await;
    let high = dead_letter(&stack, "doomed-high", Duration::from_secs(20)).await;
    assert_eq!(high.payload.as_ref(), urgent.as_slice());
    assert_eq!(
        header(&high, subjects::DEADLETTER_STREAM_HEADER),
        subjects::TASKS_HIGH_STREAM
    );
    assert_eq!(
        header(&high, subjects::DEADLETTER_SEQUENCE_HEADER),
        header(&letter, subjects::DEADLETTER_SEQUENCE_HEADER)
    );

    // Moved, not copied: the work queues no longer hold them, and they never got a result.
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
        2.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sample(
            &metrics,
            "mabeam_coordinator_tasks_total",
            &[("outcome", "deferred")]
        )
        .unwrap_or(0.0),
        4.0,
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
    let letter = dead_letter(&stack, "orphan-1", Duration::from_secs(20)).await;
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

/// Reads results off `mabeam.results.>` until `n` have come; their task ids in arrival order.
async fn results_in_order(
    results: &mut async_nats::Subscriber,
    n: usize,
    timeout: Duration,
) -> Vec<TaskResult> {
    let mut seen = Vec::new();
    while seen.len() < n {
        let message = tokio::time::timeout(timeout, results.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} results: {seen:?}", seen.len()))
            .unwrap();
        let ct = mabeam_runtime::reply::content_type(message.headers.as_ref()).unwrap();
        seen.push(decode::<TaskResult>(ct, &message.payload, &Limits::default()).unwrap());
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_tasks_overtake_the_normal_ones_waiting() {
    // One session at a time and agents that take 300 ms to answer: a queue forms.
    let stack = Stack::start(
        StackOptions::new("intake-priority")
            .service_with("coordinator-0", "MABEAM_MAX_SESSIONS", "1")
            .fleet(
                Fleet::new("pri", 3)
                    .with("MABEAM_SIM_BYZANTINE_SHARE", "1")
                    .with("MABEAM_SIM_BYZANTINE_BEHAVIOUR", "slow:300"),
            ),
    )
    .await;
    let task = |id: &str, priority: Option<&str>| {
        let mut task = json!({
            "task_id": id, "algorithm": "majority", "proposal": "p",
            "options": ["a", "b"], "participants": {"all": true}, "timeout_ms": 20000
        });
        if let Some(p) = priority {
            task["priority"] = p.into();
        }
        task
    };
    let mut results = stack.client.subscribe(subjects::RESULTS_ALL).await.unwrap();
    for i in 0..4 {
        stack
            .submit(task(&format!("normal-{i}"), None), ContentType::Json)
            .await;
    }
    // The first normal task holds the only slot; the others wait behind it.
    let started = Instant::now();
    while metric_sample(
        &stack.coordinators[0].metrics(),
        "mabeam_coordinator_sessions_active",
        &[],
    ) != Some(1.0)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no session ran"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stack
        .submit(task("urgent", Some("high")), ContentType::MsgPack)
        .await;
    let order: Vec<String> = results_in_order(&mut results, 5, Duration::from_secs(30))
        .await
        .into_iter()
        .map(|r| {
            assert_eq!(r.status, Status::Decided, "{r:?}");
            r.task_id.to_string()
        })
        .collect();
    assert_eq!(
        order,
        ["normal-0", "urgent", "normal-1", "normal-2", "normal-3"],
        "the high task runs as soon as the slot frees, ahead of every waiting normal one"
    );
    let metrics = stack.coordinators[0].metrics();
    let waited = |priority| {
        metric_sample(
            &metrics,
            "mabeam_coordinator_task_queue_wait_seconds_count",
            &[("priority", priority)],
        )
    };
    assert_eq!(waited("high"), Some(1.0), "{metrics}");
    assert_eq!(waited("normal"), Some(4.0), "{metrics}");

    // A task asking for high priority on the normal subject is told where it belongs.
    let misrouted = serde_json::to_vec(&task("misrouted", Some("high"))).unwrap();
    stack
        .submit_raw(misrouted, Some(ContentType::Json.header_value()), None)
        .await;
    let refused = results_in_order(&mut results, 1, Duration::from_secs(15)).await;
    let refused = &refused[0];
    assert_eq!(refused.task_id.as_str(), "misrouted");
    assert_eq!(refused.status, Status::Rejected, "{refused:?}");
    let error = refused.error.as_ref().unwrap();
    assert_eq!(error.code, ErrorCode::InvalidParams);
    assert!(
        error.message.contains(subjects::TASKS_SUBMIT_HIGH),
        "{}",
        error.message
    );

    // Without an id, a high task is named after its own queue: it cannot collide with the
    // normal queue's first task.
    let mut anonymous = task("x", None);
    anonymous.as_object_mut().unwrap().remove("task_id");
    stack
        .submit_raw_on(
            subjects::TASKS_SUBMIT_HIGH,
            serde_json::to_vec(&anonymous).unwrap(),
            Some(ContentType::Json.header_value()),
            None,
        )
        .await;
    let named = results_in_order(&mut results, 1, Duration::from_secs(15)).await;
    assert_eq!(named[0].task_id.as_str(), "task-high-2", "{:?}", named[0]);
    assert_eq!(named[0].status, Status::Decided, "{:?}", named[0]);
}
