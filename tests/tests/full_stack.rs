//! The full-stack scenarios, each written once against `Stack` and run on both harnesses:
//! `<scenario>::processes` (child processes on loopback) and `<scenario>::containers`
//! (testcontainers on a private Docker network; skipped with a printed reason where no
//! Docker engine or images are available, a failure instead under MABEAM_REQUIRE_DOCKER=1).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures::StreamExt;
use mabeam_ctl::demo::catalogue;
use mabeam_protocol::{
    fault::AgentBehaviour,
    registry::{AgentList, AgentQuery, AgentStatus},
    subjects, ContentType, ErrorCode, Status, PROTOCOL_VERSION,
};
use mabeam_testkit::metric_sample;
use mabeam_tests::{Fleet, Harness, Stack, StackOptions};
use serde_json::json;

macro_rules! on_both_harnesses {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn processes() {
                super::$scenario(mabeam_tests::Harness::Processes).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn containers() {
                super::$scenario(mabeam_tests::Harness::Containers).await
            }
        }
    )*};
}

on_both_harnesses!(
    every_algorithm_is_decided_in_json_and_msgpack,
    registry_tracks_agents_through_heartbeat_loss_and_recovery,
    a_coordinator_killed_mid_session_loses_no_task_and_decides_once,
    a_redis_outage_shows_on_readyz_and_work_resumes_after_it,
    an_isolated_agent_within_f_does_not_stop_agreement,
);

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn every_algorithm_is_decided_in_json_and_msgpack(harness: Harness) {
    let Some(stack) = Stack::start_on(
        harness,
        StackOptions::new(&format!("every-algorithm-{}", harness.name()))
            .coordinators(2)
            .telemetry()
            .with("MABEAM_DYNAMIC_WEIGHTS", "true")
            .fleet(
                Fleet::new("agent", 7)
                    .with("MABEAM_SIM_PROFILE", "consensus")
                    .with("MABEAM_SIM_NOISE", "0"),
            ),
    )
    .await
    else {
        return;
    };
    let expertise_before: BTreeMap<String, f64> = stack
        .agents()
        .await
        .agents
        .into_iter()
        .map(|a| (a.agent_id.to_string(), a.expertise))
        .collect();
    let mut decided = 0;
    for (encoding, content_type) in [
        ("json", ContentType::Json),
        ("msgpack", ContentType::MsgPack),
    ] {
        let tasks = catalogue(&format!("e2e-{encoding}"), &json!({"all": true}));
        let mut watches = Vec::new();
        for (algorithm, task) in &tasks {
            let id = task["task_id"].as_str().unwrap().to_owned();
            watches.push((algorithm, id.clone(), stack.watch(&id).await));
            stack.submit(task.clone(), content_type).await;
        }
        for (algorithm, id, mut sub) in watches {
            let result = Stack::result(&mut sub, Duration::from_secs(30)).await;
            assert_eq!(
                result.status,
                Status::Decided,
                "{algorithm} ({encoding}) was not decided: {result:?}"
            );
            decided += 1;
            assert!(
                result.outcome.is_some(),
                "{algorithm}: decided without an outcome"
            );
            assert_eq!(
                result.participants.len(),
                7,
                "{algorithm}: every agent took part"
            );
            if *algorithm == "byzantine" {
                let cert = result
                    .certificate
                    .as_ref()
                    .expect("byzantine results carry a certificate");
                cert.verify(&Default::default())
                    .expect("the certificate verifies");
            }
            let stored = stack
                .stored_result(&id)
                .await
                .expect("result stored in Redis");
            assert_eq!(
                stored, result,
                "{algorithm}: Redis and the results subject agree"
            );
            let view = stack.session(&id).await.expect("sessions.get answers");
            assert_eq!(
                view.result.as_ref(),
                Some(&result),
                "{algorithm}: sessions.get returns the result"
            );
        }
    }
    // Every agent agreed with every decision, so the coordinators' agreement reports raised
    // each agent's expertise (dynamic weights are on in this stack).
    for agent in stack.agents().await.agents {
        let before = expertise_before[agent.agent_id.as_str()];
        assert!(
            agent.expertise > before,
            "{}: expertise {before} -> {} after agreeing with every decision",
            agent.agent_id,
            agent.expertise
        );
    }
    // Telemetry counted every decision from the coordinators' events.
    let telemetry = stack.telemetry.as_ref().unwrap();
    wait_until(
        "telemetry counts every decision",
        Duration::from_secs(10),
        || async {
            let metrics = telemetry.metrics();
            let counted: f64 = metrics
                .lines()
                .filter(|l| {
                    l.starts_with("mabeam_sessions_total{") && l.contains("status=\"decided\"")
                })
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum();
            counted >= f64::from(decided)
        },
    )
    .await;
}

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

async fn registry_tracks_agents_through_heartbeat_loss_and_recovery(harness: Harness) {
    let Some(mut stack) = Stack::start_on(
        harness,
        StackOptions::new(&format!("lifecycle-{}", harness.name()))
            .telemetry()
            .fleet(Fleet::new("hb", 5)),
    )
    .await
    else {
        return;
    };
    wait_status(&stack, AgentStatus::Active, 5, Duration::from_secs(10)).await;
    let mut events = stack
        .client
        .subscribe("mabeam.events.registry.agent_status_changed")
        .await
        .unwrap();

    stack.fleets[0].kill().await;
    wait_status(&stack, AgentStatus::Suspect, 5, Duration::from_secs(10)).await;
    wait_status(&stack, AgentStatus::Failed, 5, Duration::from_secs(10)).await;
    stack.fleets[0].restart().await;
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
    let telemetry = stack.telemetry.as_ref().unwrap();
    wait_until(
        "telemetry shows active agents",
        Duration::from_secs(10),
        || async {
            metric_sample(
                &telemetry.metrics(),
                "mabeam_agents",
                &[("status", "active")],
            ) == Some(5.0)
        },
    )
    .await;
}

async fn slow_every_agent(stack: &Stack, delay_ms: u64) {
    let agents = stack
        .agents()
        .await
        .agents
        .into_iter()
        .map(|a| a.agent_id)
        .collect();
    let behaviour = AgentBehaviour::Slow {
        delay_ms,
        jitter_ms: 0,
    };
    stack
        .inject_agent_fault("slow-all", agents, behaviour)
        .await;
}

async fn a_coordinator_killed_mid_session_loses_no_task_and_decides_once(harness: Harness) {
    let Some(mut stack) = Stack::start_on(
        harness,
        StackOptions::new(&format!("failover-{}", harness.name()))
            .coordinators(2)
            .fault_injector()
            .fleet(Fleet::new("fo", 5).with("MABEAM_SIM_PROFILE", "consensus")),
    )
    .await
    else {
        return;
    };
    // Iterative refinement over several rounds with slowed agents keeps the session running
    // long enough to kill its owner in the middle.
    slow_every_agent(&stack, 400).await;
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
        .find(|c| c.name() == owner)
        .expect("owner is one of ours");
    victim.kill().await;
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
    let survivor = stack
        .coordinators
        .iter()
        .find(|c| c.name() != owner)
        .unwrap();
    let metrics = survivor.metrics();
    assert_eq!(
        metric_sample(&metrics, "mabeam_coordinator_sessions_resumed_total", &[]),
        Some(1.0),
        "{metrics}"
    );
    eprintln!(
        "failover ({}): result {:?} {:.2} s after the kill",
        harness.name(),
        result.status,
        killed_at.elapsed().as_secs_f64()
    );
}

async fn a_redis_outage_shows_on_readyz_and_work_resumes_after_it(harness: Harness) {
    let Some(mut stack) = Stack::start_on(
        harness,
        StackOptions::new(&format!("redis-outage-{}", harness.name()))
            .fleet(Fleet::new("ro", 4).with("MABEAM_SIM_PROFILE", "consensus")),
    )
    .await
    else {
        return;
    };
    let majority = |id: &str| {
        json!({
            "task_id": id, "algorithm": "majority", "proposal": "ship?",
            "options": ["yes", "no"], "participants": {"all": true}, "timeout_ms": 20000
        })
    };
    let before = stack
        .decide(
            majority("before-outage"),
            ContentType::Json,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(before.status, Status::Decided, "{before:?}");

    stack.pause_redis().await;
    // Every service that keeps state in Redis says it is not ready.
    wait_until(
        "registry and coordinator report not ready",
        Duration::from_secs(15),
        || async { !stack.registry.is_ready() && !stack.coordinators[0].is_ready() },
    )
    .await;
    // A request that needs Redis gets a clear, typed error, not silence.
    let refused: Result<AgentList, _> = stack
        .request(
            subjects::REGISTRY_QUERY,
            &AgentQuery {
                v: PROTOCOL_VERSION,
                ..AgentQuery::default()
            },
        )
        .await;
    let error = refused.expect_err("the registry cannot answer from a stalled Redis");
    assert_eq!(error.code, ErrorCode::Unavailable, "{error:?}");
    // A task submitted during the outage is kept by JetStream, not lost.
    let mut during = stack.watch("during-outage").await;
    stack
        .submit(majority("during-outage"), ContentType::Json)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    stack.resume_redis().await;
    wait_until(
        "every service ready again",
        Duration::from_secs(20),
        || async { stack.services().all(|s| s.is_ready()) },
    )
    .await;
    let result = Stack::result(&mut during, Duration::from_secs(40)).await;
    assert_eq!(
        result.status,
        Status::Decided,
        "the task submitted during the outage was decided after it: {result:?}"
    );
    let after = stack
        .decide(
            majority("after-outage"),
            ContentType::Json,
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(after.status, Status::Decided, "{after:?}");
}

async fn an_isolated_agent_within_f_does_not_stop_agreement(harness: Harness) {
    // Four agents tolerate f = 1: three in one fleet, one alone in another, which is cut off.
    let Some(mut stack) = Stack::start_on(
        harness,
        StackOptions::new(&format!("partition-{}", harness.name()))
            .telemetry()
            .fleet(Fleet::new("main", 3).with("MABEAM_SIM_PROFILE", "consensus"))
            .fleet(Fleet::new("lone", 1).with("MABEAM_SIM_PROFILE", "consensus")),
    )
    .await
    else {
        return;
    };
    let members: Vec<String> = stack
        .agents()
        .await
        .agents
        .iter()
        .map(|a| a.agent_id.to_string())
        .collect();
    assert_eq!(members.len(), 4, "{members:?}");
    let lone = members
        .iter()
        .find(|a| a.starts_with("lone"))
        .unwrap()
        .clone();

    stack.fleets[1].isolate().await;
    let result = stack
        .decide(
            json!({
                "task_id": "partitioned-1", "algorithm": "byzantine", "proposal": "commit block 7?",
                "options": ["commit", "abort"], "participants": {"agents": members},
                "params": {"round_timeout_ms": 2000}, "timeout_ms": 20000
            }),
            ContentType::Json,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        result.status,
        Status::Decided,
        "3 of 4 signed commits are a quorum with f = 1: {result:?}"
    );
    let cert = result.certificate.as_ref().expect("certificate");
    cert.verify(&Default::default())
        .expect("certificate verifies");
    assert_eq!((cert.fault_tolerance, cert.quorum), (1, 3), "{cert:?}");
    assert!(
        cert.commits.iter().all(|c| c.sender.as_str() != lone),
        "the cut-off agent cannot have committed"
    );

    // The cut is real: the registry stops hearing the agent's heartbeats.
    wait_until(
        "the isolated agent is suspected",
        Duration::from_secs(15),
        || async {
            stack.agents().await.agents.iter().any(|a| {
                a.agent_id.as_str() == lone
                    && matches!(a.status, AgentStatus::Suspect | AgentStatus::Failed)
            })
        },
    )
    .await;

    stack.fleets[1].rejoin().await;
    wait_until(
        "the isolated agent is active again",
        Duration::from_secs(30),
        || async {
            stack
                .agents()
                .await
                .agents
                .iter()
                .any(|a| a.agent_id.as_str() == lone && a.status == AgentStatus::Active)
        },
    )
    .await;
    let telemetry = stack.telemetry.as_ref().unwrap();
    wait_until(
        "telemetry counted the byzantine decision",
        Duration::from_secs(10),
        || async {
            metric_sample(
                &telemetry.metrics(),
                "mabeam_sessions_total",
                &[("algorithm", "byzantine"), ("status", "decided")],
            )
            .is_some_and(|v| v >= 1.0)
        },
    )
    .await;
}
