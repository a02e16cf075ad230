//! A fraud-detection swarm, through the SDK's swarm helpers: five analysts share a
//! capability of their own; a supervisor broadcasts a case to them, asks them to agree with a
//! number of required votes, hands them transactions to review (round robin, then by load),
//! and has a deadlocked pair settled by a designated supervisor agent, at high priority.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mabeam_agent::swarm::{ConsensusRequest, Members, OnTie, Strategy, Swarm, WorkItem};
use mabeam_protocol::{task::Priority, AgentId, Outcome, Status, TaskResult};
use serde_json::json;

use super::{opinion, Size};
use crate::{fleet::Ctx, report::ScenarioReport, ScenarioError};

/// Each analyst's view of the case, and how loaded it is (of a capacity of 4).
const ANALYSTS: [(&str, &str, f64); 5] = [
    ("analyst-0", "block", 0.0),
    ("analyst-1", "block", 1.0),
    ("analyst-2", "block", 3.0),
    ("analyst-3", "allow", 2.0),
    ("analyst-4", "allow", 3.5),
];

fn verdict(result: &TaskResult) -> String {
    match result.outcome.as_ref().and_then(Outcome::choice) {
        Some(choice) => format!(
            "{} {choice:?} in {} round(s)",
            result.status.as_str(),
            result.rounds
        ),
        None => format!(
            "{}: {}",
            result.status.as_str(),
            result.reason.clone().unwrap_or_default()
        ),
    }
}

/// Items per agent, most first.
fn spread(assignments: &BTreeMap<String, AgentId>) -> Vec<(AgentId, usize)> {
    let mut per_agent: BTreeMap<AgentId, usize> = BTreeMap::new();
    for agent in assignments.values() {
        *per_agent.entry(agent.clone()).or_default() += 1;
    }
    let mut spread: Vec<_> = per_agent.into_iter().collect();
    spread.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    spread
}

/// Both sizes run the five analysts: it is small already.
pub async fn run(ctx: &Ctx, _size: Size, r: &mut ScenarioReport) -> Result<(), ScenarioError> {
    let capability = ctx.id("fraud-analysis");
    let heard: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let mut agents = Vec::new();
    let mut ids = Vec::new();
    for (name, view, load) in ANALYSTS {
        let id = ctx.id(name);
        ids.push(AgentId::new(id.clone()).map_err(|e| ScenarioError::Task(e.to_string()))?);
        let heard = heard.clone();
        agents.push(
            ctx.agent(name, "analyst")
                .capabilities([capability.clone()])
                .decider(mabeam_agent::Opinion {
                    load,
                    capacity: 4.0,
                    ..opinion(&[view], 0.9)
                })
                .on_message(move |_| {
                    if let Ok(mut heard) = heard.lock() {
                        *heard.entry(id.clone()).or_default() += 1;
                    }
                })
                .build()?,
        );
    }
    let group = ctx.spawn(agents).await?;
    let swarm = Swarm::new(
        ctx.tasks().clone(),
        "fraud-detection",
        Members::Capability(capability),
    )
    .task_timeout(Duration::from_secs(15));

    // Broadcast: every member hears the case once.
    let started = Instant::now();
    let sent = swarm
        .broadcast(
            "supervisor",
            "investigate",
            json!({"transaction": "T-12345", "risk_score": 0.87}),
        )
        .await?;
    let everyone_once = || {
        heard
            .lock()
            .map(|h| h.len() == ANALYSTS.len() && h.values().all(|&n| n == 1))
            .unwrap_or(false)
    };
    while !everyone_once() && started.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let heard_by = heard.lock().map(|h| h.len()).unwrap_or(0);
    r.check(
        "a broadcast reaches every member of the swarm exactly once",
        sent.len() == ANALYSTS.len() && everyone_once(),
        format!(
            "sent to {}, heard by {heard_by} in {:.0} ms",
            sent.len(),
            started.elapsed().as_secs_f64() * 1000.0
        ),
    );

    // Consensus with required votes: three of five would block.
    let question = || {
        ConsensusRequest::new(json!({"question": "Block account?", "transaction": "T-12345"}))
            .options(["block", "allow"])
    };
    let three = swarm
        .request_consensus(question().required_votes(3))
        .await?;
    r.note(format!("3 required votes: {}", verdict(&three)));
    r.check(
        "consensus with 3 required votes decides what 3 of 5 analysts say",
        three.status == Status::Decided
            && three.outcome.as_ref().and_then(Outcome::choice) == Some("block"),
        verdict(&three),
    );
    let four = swarm
        .request_consensus(question().required_votes(4))
        .await?;
    r.note(format!("4 required votes: {}", verdict(&four)));
    r.check(
        "4 required votes are not met by a 3–2 split: no decision",
        four.status == Status::NoDecision,
        verdict(&four),
    );

    // Work: ten transactions, round robin, then by load.
    let items = || -> Vec<WorkItem> { (0..10).map(|i| WorkItem::Id(format!("T-{i}"))).collect() };
    let round_robin = swarm.distribute_work(items(), Strategy::RoundRobin).await?;
    let even = spread(&round_robin);
    r.note(format!("round robin: {even:?}"));
    r.check(
        "round robin gives every member two of ten transactions",
        round_robin.len() == 10
            && even.len() == ANALYSTS.len()
            && even.iter().all(|(_, n)| *n == 2),
        format!("{} items over {} members", round_robin.len(), even.len()),
    );
    let by_load = swarm
        .distribute_work(items(), Strategy::LeastLoaded)
        .await?;
    let loaded = spread(&by_load);
    r.note(format!("least loaded: {loaded:?}"));
    let idle = &ids[0];
    let busiest = &ids[4];
    let count = |agent: &AgentId| by_load.values().filter(|a| *a == agent).count();
    r.check(
        "least loaded gives the idle analyst more than the busiest",
        by_load.len() == 10 && count(idle) > count(busiest),
        format!("idle {} items, busiest {}", count(idle), count(busiest)),
    );

    // A deadlocked pair at high priority: its supervisor settles the tie.
    let pair = Swarm::new(
        ctx.tasks().clone(),
        "review-pair",
        Members::Agents(vec![ids[0].clone(), ids[3].clone()]),
    )
    .priority(Priority::High)
    .task_timeout(Duration::from_secs(15));
    let settled = pair
        .request_consensus(question().on_tie(OnTie::Escalate {
            supervisor: ids[0].clone(),
        }))
        .await?;
    r.note(format!(
        "tie escalated to {}: {}",
        ids[0],
        verdict(&settled)
    ));
    r.check(
        "a 1–1 tie goes to the designated supervisor, whose vote decides",
        settled.status == Status::Decided
            && settled.rounds == 2
            && settled.outcome.as_ref().and_then(Outcome::choice) == Some("block"),
        verdict(&settled),
    );
    r.figure("broadcast_heard_by", heard_by);
    group.stop().await;
    Ok(())
}
