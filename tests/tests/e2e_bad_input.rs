//! Bad input over the real stack: each gets a typed `rejected` result or error reply, a
//! metric, and never takes a service down or loses an accepted task.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mabeam_protocol::{ContentType, ErrorCode, Status, TaskResult};
use mabeam_tests::{Fleet, Stack, StackOptions};
use serde_json::json;

async fn rejected(
    stack: &Stack,
    id: &str,
    body: Vec<u8>,
    content_type: &str,
    msg_id: Option<&str>,
) -> TaskResult {
    let mut sub = stack.watch(id).await;
    stack.submit_raw(body, Some(content_type), msg_id).await;
    let result = Stack::result(&mut sub, Duration::from_secs(10)).await;
    assert_eq!(result.status, Status::Rejected, "{id}: {result:?}");
    result
}

fn code(result: &TaskResult) -> ErrorCode {
    result
        .error
        .as_ref()
        .expect("a rejected result names its error")
        .code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_task_gets_a_typed_rejection_and_the_stack_keeps_working() {
    let stack = Stack::start(
        StackOptions::new("bad-input")
            .with("MABEAM_MAX_MESSAGE_BYTES", "65536")
            .fleet(Fleet::new("agent", 4)),
    )
    .await;
    let json_ct = ContentType::Json.header_value();
    let msgpack_ct = ContentType::MsgPack.header_value();

    let r = rejected(
        &stack,
        "bad-json",
        b"{not json".to_vec(),
        json_ct,
        Some("bad-json"),
    )
    .await;
    assert_eq!(code(&r), ErrorCode::MalformedMessage);

    let r = rejected(
        &stack,
        "bad-msgpack",
        vec![0xc1, 0xff, 0x00],
        msgpack_ct,
        Some("bad-msgpack"),
    )
    .await;
    assert_eq!(code(&r), ErrorCode::MalformedMessage);

    let task =
        |id: &str, algorithm: &str, participants: serde_json::Value, params: serde_json::Value| {
            serde_json::to_vec(&json!({
                "task_id": id, "algorithm": algorithm, "proposal": {}, "options": ["a", "b"],
                "participants": participants, "params": params
            }))
            .unwrap()
        };
    let all = json!({"all": true});
    let r = rejected(
        &stack,
        "bad-algorithm",
        task("bad-algorithm", "telepathy", all.clone(), json!({})),
        json_ct,
        None,
    )
    .await;
    assert_eq!(code(&r), ErrorCode::UnknownAlgorithm);

    let r = rejected(
        &stack,
        "bad-params",
        task(
            "bad-params",
            "supermajority",
            all.clone(),
            json!({"threshold": 0.2}),
        ),
        json_ct,
        None,
    )
    .await;
    assert_eq!(code(&r), ErrorCode::InvalidParams);

    let r = rejected(
        &stack,
        "bad-f",
        task("bad-f", "byzantine", all.clone(), json!({"f": 3})),
        json_ct,
        None,
    )
    .await;
    assert_eq!(
        code(&r),
        ErrorCode::InsufficientParticipants,
        "4 agents cannot tolerate f=3"
    );

    let r = rejected(
        &stack,
        "empty-agents",
        task("empty-agents", "majority", json!({"agents": []}), json!({})),
        json_ct,
        None,
    )
    .await;
    assert_eq!(code(&r), ErrorCode::NoParticipants);

    let r = rejected(
        &stack,
        "unknown-agents",
        task(
            "unknown-agents",
            "majority",
            json!({"agents": ["ghost-1", "ghost-2"]}),
            json!({}),
        ),
        json_ct,
        None,
    )
    .await;
    assert_eq!(code(&r), ErrorCode::UnknownParticipants);
    assert!(r.error.as_ref().unwrap().message.contains("ghost-1"));

    let r = rejected(
        &stack,
        "no-capability",
        task(
            "no-capability",
            "majority",
            json!({"capability": "teleportation"}),
            json!({}),
        ),
        json_ct,
        None,
    )
    .await;
    assert_eq!(code(&r), ErrorCode::NoParticipants);

    let r = rejected(&stack, "bad-timeout", serde_json::to_vec(&json!({
        "task_id": "bad-timeout", "algorithm": "majority", "proposal": {}, "participants": all, "timeout_ms": 0
    })).unwrap(), json_ct, None).await;
    assert_eq!(code(&r), ErrorCode::InvalidParams);

    // Oversized: within NATS' payload limit, beyond the services' (64 KiB here): the stream
    // takes it and the coordinator refuses it with a typed error.
    let mut big =
        json!({"task_id": "too-big", "algorithm": "majority", "participants": all, "proposal": {}});
    big["proposal"]["blob"] = json!("x".repeat(100 * 1024));
    // An oversized body is not parsed at all, so its id comes from the publisher's
    // Nats-Msg-Id (or, absent that, the stream position: `task-<seq>`).
    let r = rejected(
        &stack,
        "too-big",
        serde_json::to_vec(&big).unwrap(),
        json_ct,
        Some("too-big"),
    )
    .await;
    assert_eq!(code(&r), ErrorCode::TooLarge);

    // Unknown task on sessions.get: a typed error reply.
    let err = stack
        .session("never-submitted")
        .await
        .expect_err("unknown task");
    assert_eq!(err.code, ErrorCode::UnknownTask);

    // Refusals are counted.
    let metrics = stack.coordinators[0].metrics();
    assert!(
        metrics.contains("mabeam_coordinator_tasks_rejected_total{code=\"unknown_algorithm\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "mabeam_requests_refused_total{endpoint=\"sessions_get\",code=\"unknown_task\"}"
        ),
        "{metrics}"
    );

    // After all of that, a good task is still decided.
    let result = stack
        .decide(
            json!({"task_id": "still-fine", "algorithm": "majority", "proposal": {}, "options": ["a", "b"], "participants": {"all": true}}),
            ContentType::Json,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(result.status, Status::Decided, "{result:?}");
}
