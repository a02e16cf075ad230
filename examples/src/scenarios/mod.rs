//! The scenarios. Each starts its own agents in this process (SDK) under the context's id
//! prefix, drives the running stack over NATS, checks its requirements and reports figures.

pub mod adaptive;
pub mod byzantine;
pub mod ensemble;
pub mod hierarchical;
pub mod partitions;
pub mod scale;
pub mod swarm;
pub mod training;

use std::time::Instant;

use mabeam_agent::Opinion;
use mabeam_protocol::AgentId;
use serde_json::{json, Value};

use crate::{fleet::Ctx, report::ScenarioReport, ScenarioError};

/// Agent counts: `Full` as the seed specifies, `Small` for the fast subset `make test` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    Full,
    Small,
}

/// Every scenario, in the order `all` runs them.
pub const NAMES: &[(&str, &str)] = &[
    (
        "hierarchical",
        "ML model selection: byzantine experts → weighted evaluators → iterative refinement",
    ),
    (
        "adaptive",
        "adaptive coordination: byzantine → weighted → majority under failures and time pressure",
    ),
    (
        "scale",
        "scale ladder 10 → 1000 agents, byzantine 13/100, 100 concurrent sessions, endurance",
    ),
    (
        "byzantine",
        "10 agents, 3 attackers: every attack pattern, detection, safety, liveness, recovery",
    ),
    (
        "partitions",
        "network partitions: clean split 6/6, minority 12/3, fragments 8/6/4, intermittent 5/5",
    ),
    (
        "training",
        "distributed ML training: 44 heterogeneous agents, a GPU server failing mid-way",
    ),
    (
        "ensemble",
        "LLM ensemble reasoning: 13 agents in 5 specialisations, per-group then cross-group",
    ),
    (
        "swarm",
        "fraud-detection swarm: broadcast, required votes, work by strategy, a tie escalated",
    ),
];

/// Runs scenario `name`; a scenario that cannot run reports a failed "scenario ran" check.
pub async fn run(ctx: &Ctx, name: &str, size: Size) -> Result<ScenarioReport, ScenarioError> {
    let started = Instant::now();
    let mut report = ScenarioReport::new(name);
    let outcome = match name {
        "hierarchical" => hierarchical::run(ctx, size, &mut report).await,
        "adaptive" => adaptive::run(ctx, size, &mut report).await,
        "scale" => scale::run(ctx, size, &mut report).await,
        "byzantine" => byzantine::run(ctx, size, &mut report).await,
        "partitions" => partitions::run(ctx, size, &mut report).await,
        "training" => training::run(ctx, size, &mut report).await,
        "ensemble" => ensemble::run(ctx, size, &mut report).await,
        "swarm" => swarm::run(ctx, size, &mut report).await,
        other => return Err(ScenarioError::Unknown(other.to_owned())),
    };
    if let Err(e) = outcome {
        report.error = Some(e.to_string());
        report.check("scenario ran", false, e.to_string());
    }
    report.duration_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A task over exactly `agents`.
pub fn task(
    algorithm: &str,
    agents: &[AgentId],
    options: &[&str],
    params: Value,
    proposal: Value,
    timeout_ms: u64,
) -> Value {
    json!({
        "algorithm": algorithm,
        "proposal": proposal,
        "options": options,
        "participants": {"agents": agents},
        "params": params,
        "timeout_ms": timeout_ms,
    })
}

/// An honest opinion preferring `ranking` in order, with `confidence`.
pub fn opinion(ranking: &[&str], confidence: f64) -> Opinion {
    Opinion {
        ranking: ranking.iter().map(|o| (*o).to_owned()).collect(),
        confidence,
        ..Opinion::default()
    }
}

/// An opinion for iterative refinement: `number`, moving `step` toward the aggregate.
pub fn numeric(number: f64, step: f64) -> Opinion {
    Opinion {
        number,
        step,
        ..Opinion::default()
    }
}

/// `part` of `ids` (the first `n`).
pub fn first(ids: &[AgentId], n: usize) -> Vec<AgentId> {
    ids.iter().take(n).cloned().collect()
}

/// A short description of a result: status, outcome, rounds, time.
pub fn describe(run: &crate::fleet::Run) -> String {
    let outcome = match (&run.choice(), run.value()) {
        (Some(c), _) => format!("{c:?}"),
        (None, Some(v)) => format!("{v:.4?}"),
        _ => run.result.reason.clone().unwrap_or_default(),
    };
    format!(
        "{} {} in {} round(s), {:.2} s",
        run.result.status.as_str(),
        outcome,
        run.result.rounds,
        run.seconds()
    )
}
