//! Infrastructure faults on a whole stack (process harness: nats-server is killed -9 and
//! started again on its port): services notice, say so on `/readyz`, reconnect, and the work
//! in flight ends with a result — decided, or an explicit failure — never silence.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use mabeam_protocol::{fault::AgentBehaviour, ContentType, Status};
use mabeam_tests::{Fleet, Stack, StackOptions};
use serde_json::json;

async fn until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unix_ms() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

fn majority(id: &str) -> serde_json::Value {
    json!({
        "task_id": id, "algorithm": "majority", "proposal": "ship?",
        "options": ["yes", "no"], "participants": {"all": true}, "timeout_ms": 20000
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_restart_shows_on_readyz_and_work_in_flight_still_gets_a_result() {
    let mut stack = Stack::start(
        StackOptions::new("nats-restart")
            .telemetry()
            .fault_injector()
            .fleet(
                Fleet::new("agent", 5)
                    .with("MABEAM_SIM_PROFILE", "consensus")
                    .with("MABEAM_SIM_NOISE", "0"),
            ),
    )
    .await;
    let before = stack
        .decide(
            majority("before-nats-restart"),
            ContentType::Json,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(before.status, Status::Decided, "{before:?}");

    // Every agent answers 1.5 s late, so the next session is certainly running when NATS
    // dies half a second in.
    let agents = stack
        .agents()
        .await
        .agents
        .into_iter()
        .map(|a| a.agent_id)
        .collect();
    stack
        .inject_agent_fault(
            "slow-everyone",
            agents,
            AgentBehaviour::Slow {
                delay_ms: 1500,
                jitter_ms: 0,
            },
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack
        .submit(
            json!({
                "task_id": "across-nats-restart", "algorithm": "iterative",
                "proposal": {"estimate": "latency"}, "participants": {"all": true},
                "params": {"max_rounds": 3, "convergence_threshold": 0.0001,
                           "require_convergence": false, "round_timeout_ms": 3000},
                "timeout_ms": 30000
            }),
            ContentType::Json,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_ms = unix_ms();
    stack.kill_nats();
    until(
        "every service reports NATS unreachable on /readyz",
        Duration::from_secs(15),
        || stack.services().all(|s| !s.is_ready()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stack.start_nats();
    until("every service ready again", Duration::from_secs(30), || {
        stack.services().all(mabeam_tests::Service::is_ready)
    })
    .await;

    // The session that straddled the outage ends with a result, stored once.
    let start = Instant::now();
    let straddled = loop {
        if let Some(r) = stack.stored_result("across-nats-restart").await {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(45),
            "the session in flight during the NATS restart never ended"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        straddled.timings.finished_ms.unwrap_or(0) > killed_ms,
        "the session was still running when NATS died: {straddled:?}"
    );
    // Its ballots were lost with the server; what counts is that it ended explicitly —
    // decided, or no decision / failed with the reason — and was not left hanging.
    assert!(
        straddled.status == Status::Decided || straddled.reason.is_some(),
        "an undecided end says why: {straddled:?}"
    );

    // New work flows again, through the restarted server (the fault-injector restored the
    // slow fault from Redis after its own reconnect; healing it goes through NATS too).
    stack.heal_fault("slow-everyone").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = stack
        .decide(
            majority("after-nats-restart"),
            ContentType::Json,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(after.status, Status::Decided, "{after:?}");

    // Nobody panicked on the way.
    for service in stack.services() {
        let log = std::fs::read_to_string(service.log_path()).unwrap_or_default();
        assert!(
            !log.contains("panicked"),
            "{} panicked: see {}",
            service.name(),
            service.log_path().display()
        );
    }
}
