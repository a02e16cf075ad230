//! Distributed ML training coordination over 44 heterogeneous compute agents: 4 GPU servers
//! (8 GPUs), 8 GPU workstations (2 GPUs), 12 CPU servers, 20 edge devices. Expertise is the
//! agent's compute capacity, so the few big machines outweigh the many small ones.
//! 1. characterisation: a weighted vote on the workload's profile;
//! 2. strategy: iterative refinement of the learning rate (log10), at most 5 rounds;
//! 3. resource allocation: a weighted vote on the parallelism, capacity-weighted — with a GPU
//!    server crashing (fault-injector) just before;
//! 4. shard assignment: work distribution by load and capacity; the crashed server gets none.

use std::collections::BTreeMap;

use mabeam_agent::Opinion;
use mabeam_protocol::{
    fault::{AgentBehaviour, FaultKind},
    AgentId, Outcome,
};
use serde_json::json;

use super::{describe, opinion, task, Size};
use crate::{fleet::Ctx, report::ScenarioReport, ScenarioError};

struct Class {
    kind: &'static str,
    count: usize,
    /// Relative compute capacity: the agent's expertise and its work capacity.
    capacity: f64,
    profile: &'static str,
    parallelism: &'static str,
    /// log10 of the learning rate it proposes.
    log_lr: f64,
}

const CLASSES: [Class; 4] = [
    Class {
        kind: "gpu-server",
        count: 4,
        capacity: 16.0,
        profile: "compute-bound",
        parallelism: "data-parallel",
        log_lr: -3.0,
    },
    Class {
        kind: "gpu-workstation",
        count: 8,
        capacity: 4.0,
        profile: "compute-bound",
        parallelism: "data-parallel",
        log_lr: -3.3,
    },
    Class {
        kind: "cpu-server",
        count: 12,
        capacity: 1.5,
        profile: "memory-bound",
        parallelism: "pipeline-parallel",
        log_lr: -3.6,
    },
    Class {
        kind: "edge-device",
        count: 20,
        capacity: 0.25,
        profile: "io-bound",
        parallelism: "federated",
        log_lr: -2.5,
    },
];

pub async fn run(ctx: &Ctx, size: Size, r: &mut ScenarioReport) -> Result<(), ScenarioError> {
    let scale = |count: usize| match size {
        Size::Full => count,
        Size::Small => count.div_ceil(4),
    };
    let mut agents = Vec::new();
    let mut capacity_of = BTreeMap::new();
    let mut weight_by_profile: BTreeMap<&str, f64> = BTreeMap::new();
    for class in &CLASSES {
        for i in 0..scale(class.count) {
            let name = format!("train-{}-{i:02}", class.kind);
            capacity_of.insert(ctx.id(&name), class.capacity);
            *weight_by_profile.entry(class.profile).or_default() += class.capacity;
            agents.push(
                ctx.agent(&name, class.kind)
                    .capabilities(["ml-train", class.kind])
                    .expertise(class.capacity)
                    .load(0.0, class.capacity)
                    .decider(Opinion {
                        number: class.log_lr,
                        step: 0.6,
                        load: 0.0,
                        capacity: class.capacity,
                        ..opinion(&[class.profile, class.parallelism], 1.0)
                    })
                    .build()?,
            );
        }
    }
    let group = ctx.spawn(agents).await?;
    let ids = &group.ids;
    let by_kind =
        |kind: &str| -> usize { ids.iter().filter(|a| a.as_str().contains(kind)).count() };
    r.note(format!(
        "{} agents: {} GPU servers, {} workstations, {} CPU servers, {} edge devices",
        ids.len(),
        by_kind("gpu-server"),
        by_kind("gpu-workstation"),
        by_kind("cpu-server"),
        by_kind("edge-device")
    ));

    // 1. Characterisation.
    let expected = weight_by_profile
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(p, _)| *p)
        .unwrap_or_default();
    let profile = ctx
        .run_task(task(
            "weighted",
            ids,
            &["compute-bound", "memory-bound", "io-bound"],
            json!({"threshold": 0.5, "basis": "eligible"}),
            json!({"task": "agent characterisation", "benchmark_suite": "ml-training"}),
            30_000,
        ))
        .await?;
    r.note(format!(
        "characterisation: {} (capacity by profile {weight_by_profile:?})",
        describe(&profile)
    ));
    r.check(
        "characterisation: capacity-weighted profile decided",
        profile.decided() && profile.choice() == Some(expected),
        format!(
            "{} (expected {expected:?}; edge devices are the most numerous)",
            describe(&profile)
        ),
    );

    // 2. Strategy: learning rate by iterative refinement.
    let strategy = ctx
        .run_task(task(
            "iterative",
            ids,
            &[],
            json!({"max_rounds": 5, "convergence_threshold": 0.05, "round_timeout_ms": 3000}),
            json!({"task": "training strategy", "parameter": "log10 learning rate", "optimizer": "adamw", "schedule": "cosine"}),
            60_000,
        ))
        .await?;
    let log_lr = strategy
        .value()
        .and_then(|v| v.first())
        .copied()
        .unwrap_or(f64::NAN);
    r.note(format!(
        "strategy: {} → learning rate {:.2e}",
        describe(&strategy),
        10f64.powf(log_lr)
    ));
    r.check(
        "strategy: iterative refinement converged within 5 rounds",
        strategy.decided() && strategy.result.rounds <= 5 && (-3.6..=-2.5).contains(&log_lr),
        describe(&strategy),
    );
    r.figure("strategy_rounds", strategy.result.rounds);

    // 3. A GPU server crashes; allocation goes on without it.
    let crashed: AgentId = ids
        .iter()
        .find(|a| a.as_str().contains("gpu-server"))
        .cloned()
        .ok_or_else(|| ScenarioError::Task("no GPU server".into()))?;
    let fault = ctx
        .inject(
            "train-crash",
            FaultKind::Agents {
                agents: vec![crashed.clone()],
                behaviour: AgentBehaviour::Crash,
            },
            None,
        )
        .await?;
    r.note(format!("{crashed} crashed (fault-injector)"));
    let allocation = ctx
        .run_task(task(
            "weighted",
            ids,
            &["data-parallel", "pipeline-parallel", "federated"],
            json!({"threshold": 0.5}),
            json!({"task": "resource allocation", "profile": profile.choice(), "log10_lr": log_lr}),
            20_000,
        ))
        .await?;
    r.note(format!("allocation: {}", describe(&allocation)));
    r.check(
        "allocation: capacity-weighted vote decided despite the failure",
        allocation.decided() && allocation.choice() == Some("data-parallel"),
        describe(&allocation),
    );

    // 4. Shards by load and capacity.
    // The fleet as the registry sees it now: the crashed server is still listed until its
    // heartbeats are overdue, and must then get no shard because it cannot answer.
    let missing = ctx.not_eligible(ids).await?;
    let listed: Vec<AgentId> = ids
        .iter()
        .filter(|a| !missing.iter().any(|m| m == a.as_str()))
        .cloned()
        .collect();
    r.note(format!(
        "{} agents eligible for shards (crashed server {})",
        listed.len(),
        if listed.contains(&crashed) {
            "still listed"
        } else {
            "already dropped by the registry"
        }
    ));
    let shards: Vec<String> = (0..16).map(|i| format!("shard-{i:02}")).collect();
    let work = ctx
        .run_task(json!({
            "algorithm": "work_distribution",
            "proposal": {"task": "assign training shards"},
            "participants": {"agents": listed},
            "params": {"items": shards, "strategy": "least_loaded"},
            "timeout_ms": 5_000,
        }))
        .await?;
    ctx.heal(&fault).await?;
    let assignments = match &work.result.outcome {
        Some(Outcome::Assignment { assignments }) => assignments.clone(),
        _ => BTreeMap::new(),
    };
    let to_crashed = assignments.values().filter(|a| **a == crashed).count();
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for agent in assignments.values() {
        let kind = CLASSES
            .iter()
            .find(|c| agent.as_str().contains(c.kind))
            .map_or("?", |c| c.kind);
        *per_kind.entry(kind).or_default() += 1;
    }
    r.note(format!("shards: {} → {per_kind:?}", describe(&work)));
    r.check(
        "shards: every shard assigned, none to the crashed server",
        work.decided() && assignments.len() == shards.len() && to_crashed == 0,
        format!("{} assigned, {to_crashed} to {crashed}", assignments.len()),
    );
    let silent_reported = allocation.detected().contains(&crashed);
    r.figure("failure_reported", silent_reported);
    group.stop().await;
    Ok(())
}
