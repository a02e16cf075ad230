//! Faults injected through the fault-injector into real agent processes, and their
//! documented effects on real sessions.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mabeam_protocol::{
    fault::AgentBehaviour,
    registry::{AgentQuery, AgentStatus},
    result::FaultReason,
    subjects, AgentId, ContentType, Status, TaskResult, PROTOCOL_VERSION,
};
use mabeam_tests::{Fleet, Stack, StackOptions};
use serde_json::json;

async fn members(stack: &Stack, capability: &str) -> Vec<AgentId> {
    let list: mabeam_protocol::registry::AgentList = stack
        .request(
            subjects::REGISTRY_QUERY,
            &AgentQuery {
                v: PROTOCOL_VERSION,
                capability: Some(capability.into()),
                ..AgentQuery::default()
            },
        )
        .await
        .unwrap();
    let mut ids: Vec<AgentId> = list.agents.into_iter().map(|a| a.agent_id).collect();
    ids.sort();
    ids
}

async fn inject(stack: &Stack, id: &str, agents: &[AgentId], behaviour: AgentBehaviour) {
    let list = stack
        .inject_agent_fault(id, agents.to_vec(), behaviour)
        .await;
    assert_eq!(list.faults.len(), 1);
    // Fault commands travel on NATS; let them land before the next task.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn heal(stack: &Stack, id: &str) {
    stack.heal_fault(id).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
}

async fn run(
    stack: &Stack,
    id: &str,
    algorithm: &str,
    capability: &str,
    params: serde_json::Value,
) -> TaskResult {
    stack
        .decide(
            json!({
                "task_id": id, "algorithm": algorithm, "proposal": {"q": id},
                "options": ["deploy", "hold"], "participants": {"capability": capability},
                "params": params, "timeout_ms": 5000
            }),
            ContentType::MsgPack,
            Duration::from_secs(30),
        )
        .await
}

fn faulty(result: &TaskResult, reason: FaultReason) -> Vec<AgentId> {
    let mut ids: Vec<AgentId> = result
        .faulty_detected
        .iter()
        .filter(|f| f.reason == reason)
        .map(|f| f.agent_id.clone())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byzantine_tolerates_f_equivocators_detects_them_and_refuses_to_decide_beyond_f() {
    let stack = Stack::start(
        StackOptions::new("byzantine-faults")
            .fault_injector()
            .fleet(
                Fleet::new("eq", 7)
                    .with("MABEAM_SIM_CAPABILITIES", "eq")
                    .with("MABEAM_SIM_PROFILE", "consensus"),
            )
            .fleet(
                Fleet::new("co", 7)
                    .with("MABEAM_SIM_CAPABILITIES", "co")
                    .with("MABEAM_SIM_PROFILE", "consensus"),
            ),
    )
    .await;
    // n = 7 tolerates f = 2.
    let eq = members(&stack, "eq").await;
    assert_eq!(eq.len(), 7);
    let attackers = eq[..2].to_vec();
    inject(
        &stack,
        "equivocators",
        &attackers,
        AgentBehaviour::Equivocate,
    )
    .await;
    let result = run(&stack, "byz-within-f", "byzantine", "eq", json!({"f": 2})).await;
    assert_eq!(result.status, Status::Decided, "{result:?}");
    let cert = result.certificate.as_ref().expect("certificate");
    cert.verify(&Default::default())
        .expect("certificate verifies");
    assert_eq!(
        faulty(&result, FaultReason::Equivocation),
        attackers,
        "both equivocators detected"
    );
    // The registry quarantines them on the coordinator's evidence.
    let start = std::time::Instant::now();
    loop {
        let list = stack.agents().await;
        let quarantined: Vec<_> = list
            .agents
            .iter()
            .filter(|a| a.status == AgentStatus::Quarantined)
            .map(|a| a.agent_id.clone())
            .collect();
        if quarantined.len() == 2 {
            let mut q = quarantined;
            q.sort();
            assert_eq!(q, attackers);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "equivocators not quarantined: {quarantined:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    heal(&stack, "equivocators").await;

    // f + 1 = 3 proven equivocators are more than the session can tolerate: it ends without a
    // decision — never a wrong one.
    let co = members(&stack, "co").await;
    inject(&stack, "beyond-f", &co[..3], AgentBehaviour::Equivocate).await;
    let result = run(
        &stack,
        "byz-beyond-f",
        "byzantine",
        "co",
        json!({"f": 2, "max_rounds": 2, "round_timeout_ms": 1500}),
    )
    .await;
    assert_eq!(result.status, Status::NoDecision, "{result:?}");
    assert!(result.certificate.is_none());
    heal(&stack, "beyond-f").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_faults_have_their_documented_effects_on_majority_sessions() {
    let stack = Stack::start(
        StackOptions::new("agent-faults").fault_injector().fleet(
            Fleet::new("ag", 7)
                .with("MABEAM_SIM_CAPABILITIES", "ag")
                .with("MABEAM_SIM_PROFILE", "consensus"),
        ),
    )
    .await;
    let ids = members(&stack, "ag").await;
    let victim = ids[..1].to_vec();
    let params = json!({});
    // A healthy session first, so the replaying victim has envelopes of its own to re-send.
    let baseline = run(&stack, "fault-baseline", "majority", "ag", params.clone()).await;
    assert_eq!(baseline.status, Status::Decided, "{baseline:?}");
    // Each fault is shown twice. Alone (an electorate of just the victim, which waits until
    // its deadline) the victim's misbehaviour has its documented effect, deterministically.
    // Among seven agents it is tolerated: the six honest ones decide (such sessions close as
    // soon as the remaining ballots cannot change the outcome, so there the victim's ballot
    // may arrive after the close and go unreported).
    let cases: Vec<(&str, AgentBehaviour, Status, Option<FaultReason>)> = vec![
        (
            "replay",
            AgentBehaviour::Replay,
            Status::NoDecision,
            Some(FaultReason::Replay),
        ),
        (
            "silent",
            AgentBehaviour::Silent,
            Status::NoDecision,
            Some(FaultReason::Silent),
        ),
        (
            "crash",
            AgentBehaviour::Crash,
            Status::NoDecision,
            Some(FaultReason::Silent),
        ),
        (
            "drop",
            AgentBehaviour::Drop { percent: 100.0 },
            Status::NoDecision,
            Some(FaultReason::Silent),
        ),
        (
            "invalid-signature",
            AgentBehaviour::InvalidSignature,
            Status::NoDecision,
            Some(FaultReason::InvalidSignature),
        ),
        (
            "corrupt",
            AgentBehaviour::Corrupt,
            Status::NoDecision,
            Some(FaultReason::MalformedBallot),
        ),
        (
            "slow",
            AgentBehaviour::Slow {
                delay_ms: 200,
                jitter_ms: 50,
            },
            Status::Decided,
            None,
        ),
    ];
    for (name, behaviour, alone_status, alone_reason) in cases {
        inject(&stack, name, &victim, behaviour).await;
        let alone = stack
            .decide(
                json!({
                    "task_id": format!("fault-{name}-alone"), "algorithm": "majority",
                    "proposal": {}, "options": ["deploy", "hold"],
                    "participants": {"agents": victim}, "timeout_ms": 1500
                }),
                ContentType::MsgPack,
                Duration::from_secs(10),
            )
            .await;
        assert_eq!(alone.status, alone_status, "{name} alone: {alone:?}");
        match alone_reason {
            Some(reason) => assert_eq!(faulty(&alone, reason), victim, "{name} alone: {alone:?}"),
            None => assert!(
                alone.timings.duration_ms >= 150,
                "{name}: the answer was delayed: {alone:?}"
            ),
        }
        let result = run(
            &stack,
            &format!("fault-{name}"),
            "majority",
            "ag",
            params.clone(),
        )
        .await;
        assert_eq!(
            result.status,
            Status::Decided,
            "{name}: six honest agents still decide: {result:?}"
        );
        assert!(
            result
                .faulty_detected
                .iter()
                .all(|f| f.agent_id == victim[0]),
            "{name}: only the victim may be reported: {result:?}"
        );
        heal(&stack, name).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tied_vote_follows_the_tasks_tie_policy() {
    let stack = Stack::start(
        StackOptions::new("tie-policy").fault_injector().fleet(
            Fleet::new("tie", 4)
                .with("MABEAM_SIM_CAPABILITIES", "tie")
                .with("MABEAM_SIM_NOISE", "0"),
        ),
    )
    .await;
    let ids = members(&stack, "tie").await;
    assert_eq!(ids.len(), 4);
    // Two agents vote "hold" against the other two's "deploy": a 2–2 tie.
    inject(
        &stack,
        "holders",
        &ids[..2],
        AgentBehaviour::Coalition {
            value: "hold".into(),
        },
    )
    .await;

    let fail = run(&stack, "tie-fail", "plurality", "tie", json!(null)).await;
    assert_eq!(fail.status, Status::NoDecision, "{fail:?}");
    assert!(
        fail.reason.as_deref().unwrap_or_default().contains("tie"),
        "{fail:?}"
    );

    let revote = json!({"on_tie": {"policy": "revote", "max_revotes": 2}});
    let revoted = run(&stack, "tie-revote", "plurality", "tie", revote).await;
    assert_eq!(revoted.status, Status::NoDecision, "{revoted:?}");
    assert_eq!(
        revoted.rounds, 3,
        "two re-votes, each tied again: {revoted:?}"
    );

    // The supervisor alone settles it: the result is whatever that agent votes.
    for (task, supervisor, expected) in [
        ("tie-escalate-deploy", &ids[3], "deploy"),
        ("tie-escalate-hold", &ids[0], "hold"),
    ] {
        let params = json!({"on_tie": {"policy": "escalate", "supervisor": supervisor}});
        let result = run(&stack, task, "plurality", "tie", params).await;
        assert_eq!(result.status, Status::Decided, "{result:?}");
        assert_eq!(
            result.outcome.as_ref().and_then(|o| o.choice()),
            Some(expected),
            "{result:?}"
        );
        assert_eq!(result.rounds, 2, "{result:?}");
    }

    let outsider = json!({"on_tie": {"policy": "escalate", "supervisor": "not-in-the-fleet"}});
    let refused = run(&stack, "tie-outsider", "plurality", "tie", outsider).await;
    assert_eq!(refused.status, Status::Rejected, "{refused:?}");
    heal(&stack, "holders").await;
}
