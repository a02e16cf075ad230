//! Hierarchical ML model selection in three levels, each fed by the one before:
//! 1. Byzantine agreement among 7 domain experts (f = 2) on the model family, 2 of them
//!    equivocating (fault-injector);
//! 2. weighted voting among 15 evaluators on the model of that family: 5 senior evaluators
//!    (expertise 3) outweigh 10 juniors (expertise 1) who prefer another model;
//! 3. iterative refinement among 20 agents of the minimum accuracy the model must reach,
//!    at most 5 rounds.

use std::{collections::BTreeSet, time::Instant};

use mabeam_protocol::fault::{AgentBehaviour, FaultKind};
use serde_json::json;

use super::{describe, numeric, opinion, task, Size};
use crate::{fleet::Ctx, report::ScenarioReport, ScenarioError};

const FAMILIES: [&str; 4] = ["transformer", "cnn", "rnn", "hybrid"];
const MODELS: [&str; 3] = ["vit-b16", "swin-t", "deit-s"];

pub async fn run(ctx: &Ctx, size: Size, r: &mut ScenarioReport) -> Result<(), ScenarioError> {
    let started = Instant::now();
    let rss_before = crate::fleet::own_rss_bytes();
    let (evaluators_senior, evaluators_junior, refiners) = match size {
        Size::Full => (5, 10, 20),
        Size::Small => (2, 3, 6),
    };

    // Level 1: 7 experts, the last 2 Byzantine.
    let experts = (0..7)
        .map(|i| {
            ctx.agent(&format!("hier-expert-{i}"), "domain-expert")
                .capabilities(["ml-expert"])
                .expertise(2.0)
                .decider(opinion(&["transformer", "hybrid"], 0.9))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let experts = ctx.spawn(experts).await?;
    let attackers = experts.ids[5..].to_vec();
    let fault = ctx
        .inject(
            "hier-byz",
            FaultKind::Agents {
                agents: attackers.clone(),
                behaviour: AgentBehaviour::Equivocate,
            },
            None,
        )
        .await?;
    r.note(format!(
        "level 1: {} experts, {} equivocating ({})",
        experts.len(),
        attackers.len(),
        attackers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let level1 = ctx
        .run_task(task(
            "byzantine",
            &experts.ids,
            &FAMILIES,
            json!({"f": 2, "max_rounds": 3, "round_timeout_ms": 3000}),
            json!({
                "decision": "model family for the vision service",
                "criteria": {"min_accuracy": 0.85, "max_latency_ms": 100, "max_memory_mb": 512},
            }),
            30_000,
        ))
        .await?;
    ctx.heal(&fault).await?;
    r.note(format!("level 1: {}", describe(&level1)));
    let family = level1.choice().unwrap_or_default().to_owned();
    let detected = level1.detected();
    let attackers_set: BTreeSet<_> = attackers.iter().cloned().collect();
    let honest_flagged = detected.difference(&attackers_set).count();
    r.check(
        "level 1: byzantine agreement despite 2 Byzantine experts",
        level1.decided() && family == "transformer" && level1.result.certificate.is_some(),
        format!(
            "{} (honest experts prefer \"transformer\")",
            describe(&level1)
        ),
    );
    r.check(
        "level 1: safety (no honest expert flagged, attackers detected)",
        honest_flagged == 0 && attackers_set.is_subset(&detected),
        format!(
            "{} of 2 attackers detected, {honest_flagged} honest flagged",
            attackers_set.intersection(&detected).count()
        ),
    );
    r.figure("byzantine_7_seconds", level1.seconds());
    experts.stop().await;

    // Level 2: weighted voting, seniors outweigh juniors.
    let mut evaluators = Vec::new();
    for i in 0..evaluators_senior {
        evaluators.push(
            ctx.agent(&format!("hier-senior-{i}"), "model-evaluator")
                .capabilities(["ml-eval"])
                .expertise(3.0)
                .decider(opinion(&["swin-t", "vit-b16"], 0.9))
                .build()?,
        );
    }
    for i in 0..evaluators_junior {
        evaluators.push(
            ctx.agent(&format!("hier-junior-{i}"), "model-evaluator")
                .capabilities(["ml-eval"])
                .expertise(1.0)
                .decider(opinion(&["vit-b16", "swin-t"], 0.8))
                .build()?,
        );
    }
    let evaluators = ctx.spawn(evaluators).await?;
    let senior_weight = evaluators_senior as f64 * 3.0 * 0.9;
    let junior_weight = evaluators_junior as f64 * 1.0 * 0.8;
    let expected_share = senior_weight / (senior_weight + junior_weight);
    let level2 = ctx
        .run_task(task(
            "weighted",
            &evaluators.ids,
            &MODELS,
            json!({"threshold": 0.5, "basis": "eligible"}),
            json!({"decision": "model to ship", "family": family, "from": level1.result.task_id}),
            20_000,
        ))
        .await?;
    r.note(format!(
        "level 2: {} evaluators ({} senior × 3.0, {} junior × 1.0): {}",
        evaluators.len(),
        evaluators_senior,
        evaluators_junior,
        describe(&level2)
    ));
    // Each option's tally must be a whole number of its voters' weights (expertise ×
    // confidence): nobody's vote counted more or less than its weight.
    let (support, tally) = match &level2.result.outcome {
        Some(mabeam_protocol::Outcome::Choice { support, tally, .. }) => (*support, tally.clone()),
        _ => (0.0, Default::default()),
    };
    let whole = |option: &str, each: f64| {
        let t = tally.get(option).copied().unwrap_or(0.0) / each;
        (t - t.round()).abs()
    };
    let fairness_error = whole("swin-t", 2.7).max(whole("vit-b16", 0.8));
    r.check(
        "level 2: weighted voting follows expertise, not head count",
        level2.decided() && level2.choice() == Some("swin-t") && fairness_error < 1e-6,
        format!(
            "{} seniors outweigh {} juniors (full share {expected_share:.3}): got {:?}, support {support:.3}, tally {tally:?}",
            evaluators_senior,
            evaluators_junior,
            level2.choice()
        ),
    );
    r.figure("weighted_fairness_error", fairness_error);
    evaluators.stop().await;

    // Level 3: iterative refinement of the accuracy bar, 0.80..0.95 spread.
    let refiners = (0..refiners)
        .map(|i| {
            let bar = 0.80 + 0.15 * (i as f64) / ((refiners - 1).max(1) as f64);
            ctx.agent(&format!("hier-refine-{i}"), "criteria-refiner")
                .capabilities(["ml-criteria"])
                .decider(numeric(bar, 0.6))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let refiners = ctx.spawn(refiners).await?;
    let level3 = ctx
        .run_task(task(
            "iterative",
            &refiners.ids,
            &[],
            json!({"max_rounds": 5, "convergence_threshold": 0.005, "round_timeout_ms": 3000}),
            json!({"decision": "minimum accuracy", "model": level2.choice()}),
            30_000,
        ))
        .await?;
    r.note(format!(
        "level 3: {} refiners: {}; dispersion by round {:?}",
        refiners.len(),
        describe(&level3),
        level3
            .result
            .history
            .iter()
            .filter_map(|h| h.dispersion)
            .map(|d| (d * 10_000.0).round() / 10_000.0)
            .collect::<Vec<_>>()
    ));
    let value = level3
        .value()
        .and_then(|v| v.first())
        .copied()
        .unwrap_or(f64::NAN);
    r.check(
        "level 3: iterative refinement converges within 5 rounds",
        level3.decided() && level3.result.rounds <= 5 && (0.80..=0.95).contains(&value),
        describe(&level3),
    );
    r.figure("iterative_rounds", level3.result.rounds);
    r.figure(
        "iterative_seconds_per_round",
        level3.seconds() / f64::from(level3.result.rounds.max(1)),
    );
    refiners.stop().await;

    let total = started.elapsed();
    r.check(
        "whole hierarchy within 2 minutes",
        total.as_secs() < 120,
        crate::report::secs(total),
    );
    if let (Some(before), Some(after)) = (rss_before, crate::fleet::own_rss_bytes()) {
        r.figure("agents_rss_growth_bytes", after.saturating_sub(before));
        r.note(format!(
            "agent process memory: {:.1} MB before, {:.1} MB after (agents stopped)",
            before as f64 / 1e6,
            after as f64 / 1e6
        ));
    }
    Ok(())
}
