//! The SDK's swarm helpers against the real stack: a broadcast reaches the handler of every
//! member and of nobody else, consensus with required votes decides only when the winner has
//! that many ballots, work is spread over the members by a strategy, a capability group is
//! looked up in the registry, and a swarm can run its tasks at high priority with a tie
//! escalated to a supervisor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use mabeam_agent::{
    swarm::{ConsensusRequest, Members, OnTie, Strategy, Swarm, SwarmError, WorkItem},
    tasks::TaskClient,
    Agent, Opinion,
};
use mabeam_protocol::{group::GroupMessage, task::Priority, AgentId, ErrorCode, Outcome, Status};
use mabeam_testkit::metric_sample;
use mabeam_tests::{Stack, StackOptions};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn id(name: &str) -> AgentId {
    AgentId::new(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_broadcasts_agrees_with_required_votes_and_distributes_work() {
    let stack = Stack::start(StackOptions::new("swarm")).await;
    // Three analysts (two would block, one would allow) and a bystander outside the group,
    // all SDK agents in this process, each telling the test what its handler received.
    let shutdown = CancellationToken::new();
    let (heard, mut received) = tokio::sync::mpsc::unbounded_channel::<(String, GroupMessage)>();
    for (name, view, capability) in [
        ("analyst-1", "block", "fraud"),
        ("analyst-2", "block", "fraud"),
        ("analyst-3", "allow", "fraud"),
        ("bystander", "allow", "payments"),
    ] {
        let heard = heard.clone();
        let agent = Agent::builder(name, "analyst")
            .capabilities([capability])
            .heartbeat_interval(Duration::from_millis(300))
            .decider(Opinion {
                ranking: vec![view.to_owned()],
                ..Opinion::default()
            })
            .on_message(move |m| {
                let _ = heard.send((name.to_owned(), m.clone()));
            })
            .build()
            .unwrap();
        tokio::spawn(agent.run(stack.client.clone(), shutdown.clone()));
    }
    stack.wait_agents(4, Duration::from_secs(20)).await;
    let analysts: BTreeSet<AgentId> = ["analyst-1", "analyst-2", "analyst-3"]
        .into_iter()
        .map(id)
        .collect();

    let swarm = Swarm::new(
        TaskClient::new(stack.client.clone()),
        "fraud-detection",
        Members::Capability("fraud".into()),
    )
    .task_timeout(Duration::from_secs(10));
    let members: BTreeSet<AgentId> = swarm.members().await.unwrap().into_iter().collect();
    assert_eq!(
        members, analysts,
        "the registry's agents with the capability"
    );

    // Broadcast: each member's handler gets the message once; the bystander's never does.
    let sent = swarm
        .broadcast(
            "supervisor",
            "investigate",
            json!({"transaction": "T-12345"}),
        )
        .await
        .unwrap();
    assert_eq!(sent.into_iter().collect::<BTreeSet<_>>(), analysts);
    let mut got = BTreeMap::new();
    while got.len() < 3 {
        let (who, message) = tokio::time::timeout(Duration::from_secs(5), received.recv())
            .await
            .unwrap_or_else(|_| panic!("only {got:?} heard the broadcast"))
            .unwrap();
        assert!(got.insert(who, message).is_none(), "heard twice");
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), received.recv())
            .await
            .is_err(),
        "someone outside the group heard it"
    );
    for (who, message) in &got {
        assert!(analysts.contains(&id(who)), "{who}");
        assert_eq!(
            (
                message.group.as_str(),
                message.from.as_str(),
                message.topic.as_str()
            ),
            ("fraud-detection", "supervisor", "investigate")
        );
        assert_eq!(message.body, json!({"transaction": "T-12345"}));
    }

    // Consensus: two of three would block, so two required votes decide and three do not.
    let question = || ConsensusRequest::new("Block account?").options(["block", "allow"]);
    let verdict = swarm
        .request_consensus(question().required_votes(2))
        .await
        .unwrap();
    assert_eq!(verdict.status, Status::Decided, "{verdict:?}");
    assert_eq!(
        verdict.outcome.as_ref().and_then(Outcome::choice),
        Some("block")
    );
    assert_eq!(
        verdict
            .participants
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>(),
        analysts
    );
    let strict = swarm
        .request_consensus(question().required_votes(3))
        .await
        .unwrap();
    assert_eq!(strict.status, Status::NoDecision, "{strict:?}");
    let reason = strict.reason.unwrap_or_default();
    assert!(reason.contains("min_votes needs 3"), "{reason}");
    match swarm.request_consensus(question().required_votes(4)).await {
        Err(SwarmError::TooFewMembers {
            members: 3,
            required: 4,
            ..
        }) => {}
        other => panic!("four votes from three members: {other:?}"),
    }

    // Work: nine items round-robin over three members, three each.
    let items = (0..9).map(|i| WorkItem::Id(format!("T-{i}"))).collect();
    let assignments = swarm
        .distribute_work(items, Strategy::RoundRobin)
        .await
        .unwrap();
    assert_eq!(assignments.len(), 9, "{assignments:?}");
    let mut per_agent: BTreeMap<&AgentId, usize> = BTreeMap::new();
    for agent in assignments.values() {
        assert!(analysts.contains(agent), "{agent} is not a member");
        *per_agent.entry(agent).or_default() += 1;
    }
    assert!(per_agent.values().all(|&n| n == 3), "{per_agent:?}");

    // A fixed pair at high priority: its 1–1 tie goes to analyst-3, who settles it alone.
    let pair = Swarm::new(
        TaskClient::new(stack.client.clone()),
        "pair",
        Members::Agents(vec![id("analyst-1"), id("analyst-3")]),
    )
    .priority(Priority::High)
    .task_timeout(Duration::from_secs(10));
    let settled = pair
        .request_consensus(question().required_votes(1).on_tie(OnTie::Escalate {
            supervisor: id("analyst-3"),
        }))
        .await
        .unwrap();
    assert_eq!(settled.status, Status::Decided, "{settled:?}");
    assert_eq!(
        settled.outcome.as_ref().and_then(Outcome::choice),
        Some("allow")
    );
    assert_eq!(settled.rounds, 2);
    let metrics = stack.coordinators[0].metrics();
    assert_eq!(
        metric_sample(
            &metrics,
            "mabeam_coordinator_task_queue_wait_seconds_count",
            &[("priority", "high")]
        ),
        Some(1.0),
        "the pair's task went through the high queue: {metrics}"
    );

    // An empty group is an error, not an empty task.
    let nobody = Swarm::new(
        TaskClient::new(stack.client.clone()),
        "nobody",
        Members::Capability("astrology".into()),
    );
    match nobody.broadcast("supervisor", "hello", json!(null)).await {
        Err(SwarmError::NoMembers { capability, .. }) => {
            assert_eq!(capability.as_deref(), Some("astrology"))
        }
        other => panic!("{other:?}"),
    }
    // A member the coordinator does not know makes the task rejected, with the reason.
    let ghost = Swarm::new(
        TaskClient::new(stack.client.clone()),
        "ghost",
        Members::Agents(vec![id("analyst-1"), id("ghost-9")]),
    );
    let rejected = ghost.request_consensus(question()).await.unwrap();
    assert_eq!(rejected.status, Status::Rejected, "{rejected:?}");
    assert_eq!(
        rejected.error.map(|e| e.code),
        Some(ErrorCode::UnknownParticipants)
    );
    shutdown.cancel();
}
