//! Adaptive coordination over 50 agents: the same kind of high-stakes decision three times,
//! under worsening conditions, with the adaptive algorithm choosing how to decide.
//! 1. healthy: Byzantine agreement decides, no switch;
//! 2. failures: 12 % of the agents equivocate (failure trigger at 10 %): byzantine → weighted
//!    (and on to majority while the failure share stays above the trigger);
//! 3. time pressure: 40 % of the agents answer late, so the Byzantine quorum cannot form in
//!    time; at a quarter of the timeout the chain falls to simple majority.

use mabeam_protocol::{
    fault::{AgentBehaviour, FaultKind},
    AgentId,
};
use serde_json::json;

use super::{describe, opinion, task, Size};
use crate::{
    fleet::{Ctx, Run},
    report::ScenarioReport,
    ScenarioError,
};

const OPTIONS: [&str; 2] = ["approve", "reject"];

fn switches(run: &Run) -> String {
    if run.result.switches.is_empty() {
        return "no switch".into();
    }
    run.result
        .switches
        .iter()
        .map(|s| {
            format!(
                "{} → {} at {} ms ({})",
                s.from, s.to, s.elapsed_ms, s.reason
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub async fn run(ctx: &Ctx, size: Size, r: &mut ScenarioReport) -> Result<(), ScenarioError> {
    let n: usize = match size {
        Size::Full => 50,
        Size::Small => 10,
    };
    let agents = (0..n)
        .map(|i| {
            ctx.agent(&format!("adapt-{i:02}"), "risk-assessor")
                .capabilities(["risk"])
                .expertise(1.0 + (i % 3) as f64 * 0.5)
                .max_sessions(8)
                .decider(opinion(&["approve"], 0.9))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let fleet = ctx.spawn(agents).await?;
    let ids = &fleet.ids;
    r.note(format!("{n} agents, all preferring \"approve\""));
    let proposal = json!({"transaction_amount": 1_000_000, "risk_level": "high"});

    // 1. Healthy.
    let healthy = ctx
        .run_task(task(
            "adaptive",
            ids,
            &OPTIONS,
            json!({"failure_ratio": 0.1, "time_pressure": 0.8}),
            proposal.clone(),
            10_000,
        ))
        .await?;
    r.note(format!(
        "healthy: {}; {}",
        describe(&healthy),
        switches(&healthy)
    ));
    r.check(
        "healthy: byzantine agreement decides without switching",
        healthy.decided()
            && healthy.result.switches.is_empty()
            && healthy.choice() == Some("approve"),
        format!("{}; {}", describe(&healthy), switches(&healthy)),
    );
    r.figure("healthy_seconds", healthy.seconds());

    // 2. Failures: equivocators beyond the 10 % trigger.
    let bad: Vec<AgentId> = ids
        .iter()
        .rev()
        .take((n * 12).div_ceil(100).max(2))
        .cloned()
        .collect();
    let fault = ctx
        .inject(
            "adapt-equivocate",
            FaultKind::Agents {
                agents: bad.clone(),
                behaviour: AgentBehaviour::Equivocate,
            },
            None,
        )
        .await?;
    let failing = ctx
        .run_task(task(
            "adaptive",
            ids,
            &OPTIONS,
            json!({"failure_ratio": 0.1, "time_pressure": 0.8}),
            proposal.clone(),
            10_000,
        ))
        .await?;
    ctx.heal(&fault).await?;
    r.note(format!(
        "failures ({} equivocating): {}; {}",
        bad.len(),
        describe(&failing),
        switches(&failing)
    ));
    let first = failing.result.switches.first();
    r.check(
        "failures: leaves byzantine on the failure trigger, still decided",
        failing.decided()
            && failing.choice() == Some("approve")
            && first.is_some_and(|s| {
                s.from == "byzantine" && s.to == "weighted" && s.reason.starts_with("failure_ratio")
            }),
        switches(&failing),
    );
    if let Some(s) = first {
        r.figure("failure_switch_ms", s.elapsed_ms);
    }

    // 3. Time pressure: the slow agents keep the Byzantine quorum out of reach. Fresh slow
    // agents (the equivocators are quarantined now) are taken from the other end.
    let slow: Vec<AgentId> = ids.iter().take(n * 2 / 5).cloned().collect();
    let honest: Vec<AgentId> = ids.iter().filter(|a| !bad.contains(a)).cloned().collect();
    let fault = ctx
        .inject(
            "adapt-slow",
            FaultKind::Agents {
                agents: slow.clone(),
                behaviour: AgentBehaviour::Slow {
                    delay_ms: 4000,
                    jitter_ms: 0,
                },
            },
            None,
        )
        .await?;
    let pressed = ctx
        .run_task(task(
            "adaptive",
            &honest,
            &OPTIONS,
            json!({
                "chain": [{"algorithm": "byzantine"}, {"algorithm": "majority"}],
                "failure_ratio": 0.5,
                "time_pressure": 0.25,
            }),
            proposal,
            8_000,
        ))
        .await?;
    ctx.heal(&fault).await?;
    r.note(format!(
        "time pressure ({} of {} slow by 4 s): {}; {}",
        slow.len(),
        honest.len(),
        describe(&pressed),
        switches(&pressed)
    ));
    let switch = pressed.result.switches.first();
    r.check(
        "time pressure: byzantine → majority at 25 % of the timeout, decided",
        pressed.decided()
            && pressed.choice() == Some("approve")
            && switch.is_some_and(|s| s.to == "majority" && s.reason.starts_with("time_pressure")),
        switches(&pressed),
    );
    if let Some(s) = switch {
        r.figure("pressure_switch_ms", s.elapsed_ms);
        r.check(
            "switch decision is sub-second after its trigger",
            s.elapsed_ms < 2000 + 1000,
            format!("switched at {} ms; trigger due at 2000 ms", s.elapsed_ms),
        );
    }
    fleet.stop().await;
    Ok(())
}
