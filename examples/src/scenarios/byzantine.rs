//! Byzantine behaviour: 10 agents, 3 of them attackers (f = 3, the most 10 tolerate), one
//! attack pattern at a time through the fault-injector — silent, equivocation, timing,
//! invalid signatures, replay, coalition, adaptive. Per pattern: a warm-up task (so replay
//! has old ballots to replay), the attacked task, then a recovery task over whoever is still
//! eligible after the heal. Reported: consensus, detection time, false positives and
//! negatives, safety (never a value the honest agents did not propose), liveness (decided
//! within the timeout), recovery. Then f + 1 = 4 equivocators: no decision rather than a
//! wrong one.

use std::{collections::BTreeSet, time::Duration};

use mabeam_protocol::{
    fault::{AgentBehaviour, FaultKind},
    AgentId,
};
use serde_json::json;

use super::{describe, opinion, task, Size};
use crate::{fleet::Ctx, report::ScenarioReport, ScenarioError};

const OPTIONS: [&str; 2] = ["deploy-2.1.0", "stay-2.0.9"];
const HONEST_VALUE: &str = "deploy-2.1.0";
const TIMEOUT_MS: u64 = 15_000;

/// The patterns, and whether the attack leaves evidence the coordinator must catch (a
/// coalition vote or a silent agent is indistinguishable from an honest disagreement or a
/// slow one, so it is not required to be flagged).
const PATTERNS: [(&str, bool); 7] = [
    ("silent", false),
    ("equivocation", true),
    ("timing", false),
    ("invalid_signatures", true),
    ("replay", true),
    ("coalition", false),
    ("adaptive", false),
];

fn behaviour(pattern: &str) -> AgentBehaviour {
    match pattern {
        "silent" => AgentBehaviour::Silent,
        "equivocation" => AgentBehaviour::Equivocate,
        "timing" => AgentBehaviour::TimingAttack,
        "invalid_signatures" => AgentBehaviour::InvalidSignature,
        "replay" => AgentBehaviour::Replay,
        "coalition" => AgentBehaviour::Coalition {
            value: "stay-2.0.9".into(),
        },
        _ => AgentBehaviour::Adaptive,
    }
}

fn bft_task(agents: &[AgentId], what: &str) -> serde_json::Value {
    task(
        "byzantine",
        agents,
        &OPTIONS,
        json!({"max_rounds": 3, "round_timeout_ms": 3000}),
        json!({"decision": "critical system update", "version": "2.1.0", "rollback": "automatic", "step": what}),
        TIMEOUT_MS,
    )
}

/// Ten agents are already small: both sizes run every pattern.
pub async fn run(ctx: &Ctx, _size: Size, r: &mut ScenarioReport) -> Result<(), ScenarioError> {
    let mut safe_all = true;
    let mut live_all = true;
    let mut false_positives = 0usize;
    let mut detection_ms = Vec::new();
    for (pattern, evidence) in PATTERNS {
        let agents = (0..10)
            .map(|i| {
                ctx.agent(&format!("byz-{pattern}-{i}"), "validator")
                    .capabilities(["release"])
                    .decider(opinion(&[HONEST_VALUE], 1.0))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let group = ctx.spawn(agents).await?;
        let attackers: Vec<AgentId> = group.ids[7..].to_vec();
        let attacker_set: BTreeSet<AgentId> = attackers.iter().cloned().collect();

        let warm = ctx.run_task(bft_task(&group.ids, "warm-up")).await?;
        let fault = ctx
            .inject(
                &format!("byz-{pattern}"),
                FaultKind::Agents {
                    agents: attackers.clone(),
                    behaviour: behaviour(pattern),
                },
                None,
            )
            .await?;
        let attacked = ctx.run_task(bft_task(&group.ids, "under attack")).await?;
        ctx.heal(&fault).await?;

        let detected = attacked.detected();
        let fp = detected.difference(&attacker_set).count();
        let found = detected.intersection(&attacker_set).count();
        let fneg = attackers.len() - found;
        let detection = ctx
            .first_detection(attacked.submitted, &attacker_set)
            .or_else(|| (found > 0).then_some(attacked.elapsed));
        // Safety: a decision is the honest agents' value; liveness: it came in time.
        let safe = !attacked.decided() || attacked.choice() == Some(HONEST_VALUE);
        let live = attacked.decided() && attacked.elapsed < Duration::from_millis(TIMEOUT_MS);

        // Recovery: whoever is still eligible (equivocators are quarantined) decides again.
        // The registry quarantines on the coordinator's evidence, asynchronously: wait until
        // every proven equivocator's quarantine has landed (bounded) before choosing.
        let proven: BTreeSet<String> = attacked
            .result
            .faulty_detected
            .iter()
            .filter(|f| f.reason == mabeam_protocol::result::FaultReason::Equivocation)
            .map(|f| f.agent_id.to_string())
            .collect();
        let patience = tokio::time::Instant::now() + Duration::from_secs(5);
        let eligible_missing: BTreeSet<String> = loop {
            let missing: BTreeSet<String> =
                ctx.not_eligible(&group.ids).await?.into_iter().collect();
            if proven.is_subset(&missing) || tokio::time::Instant::now() >= patience {
                break missing;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let remaining: Vec<AgentId> = group
            .ids
            .iter()
            .filter(|a| !eligible_missing.contains(a.as_str()))
            .cloned()
            .collect();
        let recovery = ctx.run_task(bft_task(&remaining, "recovery")).await?;

        r.note(format!(
            "{pattern:<18} warm-up {} | attacked {} | detected {found}/3 (false +{fp}, false -{fneg}){} | recovery over {} agents: {}",
            warm.result.status.as_str(),
            describe(&attacked),
            detection.map(|d| format!(" after {:.0} ms", d.as_secs_f64() * 1e3)).unwrap_or_default(),
            remaining.len(),
            describe(&recovery),
        ));
        r.check(
            format!("{pattern}: consensus reached, safe and live"),
            safe && live,
            describe(&attacked),
        );
        r.check(
            format!("{pattern}: no honest agent flagged"),
            fp == 0,
            format!("{fp} false positives"),
        );
        if evidence {
            r.check(
                format!("{pattern}: every attacker detected"),
                fneg == 0,
                format!(
                    "{found}/3{}",
                    detection
                        .map(|d| format!(" (first after {:.0} ms)", d.as_secs_f64() * 1e3))
                        .unwrap_or_default()
                ),
            );
        }
        r.check(
            format!("{pattern}: recovered after isolation"),
            recovery.decided() && recovery.choice() == Some(HONEST_VALUE),
            describe(&recovery),
        );
        r.figure(&format!("{pattern}_seconds"), attacked.seconds());
        r.figure(&format!("{pattern}_false_negatives"), fneg);
        if let Some(d) = detection {
            r.figure(&format!("{pattern}_detection_ms"), d.as_secs_f64() * 1e3);
            detection_ms.push(d.as_secs_f64() * 1e3);
        }
        safe_all &= safe;
        live_all &= live;
        false_positives += fp;
        group.stop().await;
    }

    // Beyond the bound: 4 equivocators among 10 (f = 3): no decision, never a wrong one.
    let agents = (0..10)
        .map(|i| {
            ctx.agent(&format!("byz-beyond-{i}"), "validator")
                .decider(opinion(&[HONEST_VALUE], 1.0))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let group = ctx.spawn(agents).await?;
    let fault = ctx
        .inject(
            "byz-beyond",
            FaultKind::Agents {
                agents: group.ids[6..].to_vec(),
                behaviour: AgentBehaviour::Equivocate,
            },
            None,
        )
        .await?;
    let beyond = ctx.run_task(bft_task(&group.ids, "f+1 attackers")).await?;
    ctx.heal(&fault).await?;
    let safe = !beyond.decided() || beyond.choice() == Some(HONEST_VALUE);
    r.note(format!(
        "4 equivocators of 10 (beyond f = 3): {}",
        describe(&beyond)
    ));
    r.check(
        "beyond f: safety over liveness (no wrong decision)",
        safe,
        describe(&beyond),
    );
    safe_all &= safe;
    group.stop().await;

    r.figure("safety_all", safe_all);
    r.figure("liveness_all", live_all);
    r.figure("false_positives", false_positives);
    if let Some(max) = detection_ms.iter().copied().reduce(f64::max) {
        r.figure("max_detection_ms", max);
    }
    Ok(())
}
