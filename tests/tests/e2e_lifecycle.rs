//! Liveness and failover over real processes: the registry follows heartbeat loss, and a
//! coordinator killed mid-session loses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use mabeam_protocol::{registry::AgentStatus, ContentType, Status};
use mabeam_tests::{Fleet, Stack, StackOptions};
use serde_json::json;

async fn wait_status(stack: &Stack, status: AgentStatus, n: usize, timeout: Duration) {
    let start = Instant::now();
    loop {
        let list = stack.agents().await;
        let count = list.agents.iter().filter(|a| a.status == status).count();
        if count >= n {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{count} of {n} agents {status:?} after {timeout:?}: {:?}",
            list.agents
                .iter()
                .map(|a| (a.agent_id.to_string(), a.status))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_tracks_agents_through_heartbeat_loss_and_recovery() {
    let mut stack = Stack::start(
        StackOptions::new("lifecycle")
            .telemetry()
            .fleet(Fleet::new("hb", 5)),
    )
    .await;
    wait_status(&stack, AgentStatus::Active, 5, Duration::from_secs(10)).await;
    let mut events = stack
        .client
        .subscribe("mabeam.events.registry.agent_status_changed")
        .await
        .unwrap();

    stack.fleets[0].kill();
    wait_status(&stack, AgentStatus::Suspect, 5, Duration::from_secs(10)).await;
    wait_status(&stack, AgentStatus::Failed, 5, Duration::from_secs(10)).await;
    stack.fleets[0].restart();
    wait_status(&stack, AgentStatus::Recovered, 1, Duration::from_secs(10)).await;
    wait_status(&stack, AgentStatus::Active, 5, Duration::from_secs(10)).await;

    // Every transition was announced.
    let mut seen = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(200), events.next()).await {
        seen += 1;
    }
    assert!(
        seen >= 20,
        "5 agents × (suspect, failed, recovered, active) events, saw {seen}"
    );
    let metrics = stack.telemetry.as_ref().unwrap().metrics();
    assert!(
        metrics.contains("mabeam_agents{status=\"active\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_killed_mid_session_loses_no_task_and_decides_once() {
    let mut stack = Stack::start(
        StackOptions::new("failover")
            .coordinators(2)
            .fault_injector()
            .fleet(Fleet::new("fo", 5).with("MABEAM_SIM_PROFILE", "consensus")),
    )
    .await;
    // Iterative refinement over several rounds with slowed agents keeps the session running
    // long enough to kill its owner in the middle.
    let agents: Vec<_> = stack
        .agents()
        .await
        .agents
        .into_iter()
        .map(|a| a.agent_id)
        .collect();
    let spec = mabeam_protocol::fault::FaultSpec {
        v: mabeam_protocol::PROTOCOL_VERSION,
        id: Some("slow-all".into()),
        fault: mabeam_protocol::fault::FaultKind::Agents {
            agents,
            behaviour: mabeam_protocol::fault::AgentBehaviour::Slow {
                delay_ms: 400,
                jitter_ms: 0,
            },
        },
        start_after_ms: 0,
        duration_ms: None,
    };
    let _: mabeam_protocol::fault::FaultList = stack
        .request(mabeam_protocol::subjects::FAULTS_INJECT, &spec)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let id = "failover-1";
    let mut results = stack.watch(id).await;
    stack
        .submit(
            json!({
                "task_id": id, "algorithm": "iterative", "proposal": {"estimate": "latency"},
                "participants": {"all": true},
                "params": {"max_rounds": 5, "convergence_threshold": 0.0001, "require_convergence": false, "round_timeout_ms": 3000},
                "timeout_ms": 30000
            }),
            ContentType::Json,
        )
        .await;
    // Find the owner and kill it -9 once the session is past its first round.
    let start = Instant::now();
    let owner = loop {
        if let Ok(view) = stack.session(id).await {
            if let Some(live) = view.live {
                if live.round >= 2 {
                    break live.owner;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "session never reached round 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let victim = stack
        .coordinators
        .iter_mut()
        .find(|c| c.name == owner)
        .expect("owner is one of ours");
    victim.kill();
    let killed_at = Instant::now();

    let result = Stack::result(&mut results, Duration::from_secs(30)).await;
    assert!(
        matches!(result.status, Status::Decided | Status::NoDecision),
        "the surviving replica finished the session: {result:?}"
    );
    assert!(
        result.rounds >= 2,
        "resumed, not restarted from scratch: {result:?}"
    );
    assert_eq!(stack.stored_result(id).await.as_ref(), Some(&result));
    // Exactly one result: nothing else arrives.
    let again = tokio::time::timeout(Duration::from_secs(2), results.next()).await;
    assert!(again.is_err(), "a second result was published: {again:?}");
    let survivor = stack.coordinators.iter().find(|c| c.name != owner).unwrap();
    let metrics = survivor.metrics();
    assert!(
        metrics.contains("mabeam_coordinator_sessions_resumed_total 1"),
        "{metrics}"
    );
    eprintln!(
        "failover: result {:?} {:.2} s after the kill",
        result.status,
        killed_at.elapsed().as_secs_f64()
    );
}
