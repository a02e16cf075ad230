//! LLM ensemble reasoning: 13 reasoning agents in 5 specialisations (3 mathematical, 3
//! logical, 2 creative, 3 scientific, 2 common-sense) design an island's renewable power
//! system. Each specialisation first reaches its own weighted consensus on its aspect of
//! the problem; then all 13 decide across groups, with the groups' conclusions in the
//! proposal.
//!
//! Every agent decides with the SDK's `LlmDecider` when `MABEAM_LLM_URL` names an endpoint,
//! and by its specialisation's rules otherwise (or whenever the model fails); the report
//! counts the answers of each kind.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use mabeam_agent::{llm::LlmDecider, Decider, Opinion, Round, Vote};
use serde_json::{json, Value};

use super::{describe, opinion, task, Size};
use crate::{fleet::Ctx, report::ScenarioReport, ScenarioError};

const OPTIONS: [&str; 4] = [
    "hybrid-solar-wind-battery",
    "solar-battery",
    "wind-battery",
    "tidal-diesel-backup",
];

const PROBLEM: &str = "Design a renewable power system for a remote island of 500 residents: \
    reliable 24/7 power, renewables only, a $2M budget, maintainable by local technicians, \
    and able to survive hurricanes.";

struct Specialisation {
    name: &'static str,
    count: usize,
    persona: &'static str,
    aspect: &'static str,
    ranking: [&'static str; 2],
}

const SPECIALISATIONS: [Specialisation; 5] = [
    Specialisation {
        name: "math",
        count: 3,
        persona: "a mathematician who checks power budgets and costs",
        aspect: "power and cost calculations",
        ranking: ["hybrid-solar-wind-battery", "solar-battery"],
    },
    Specialisation {
        name: "logic",
        count: 3,
        persona: "a systems engineer who reasons about failure modes and redundancy",
        aspect: "system design logic and redundancy",
        ranking: ["hybrid-solar-wind-battery", "wind-battery"],
    },
    Specialisation {
        name: "creative",
        count: 2,
        persona: "an inventive designer looking for unconventional solutions",
        aspect: "innovative options",
        ranking: ["wind-battery", "tidal-diesel-backup"],
    },
    Specialisation {
        name: "science",
        count: 3,
        persona: "a physicist assessing technical feasibility and storm resilience",
        aspect: "technical feasibility and weather resilience",
        ranking: ["hybrid-solar-wind-battery", "solar-battery"],
    },
    Specialisation {
        name: "commonsense",
        count: 2,
        persona: "a practical field technician who will maintain the system",
        aspect: "practical maintenance and local skills",
        ranking: ["solar-battery", "hybrid-solar-wind-battery"],
    },
];

/// The rules a specialist follows without a model: its own ranking, or across groups the
/// option most groups concluded (ties: its own preference among them).
#[derive(Debug, Clone)]
struct Rules {
    opinion: Opinion,
}

impl Decider for Rules {
    async fn decide(&self, round: &Round<'_>) -> Vote {
        let Some(results) = round
            .proposal
            .proposal
            .get("group_results")
            .and_then(Value::as_object)
        else {
            return self
                .opinion
                .answer(round)
                .with_reasoning("my specialisation's preference");
        };
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for choice in results.values().filter_map(Value::as_str) {
            *counts.entry(choice).or_default() += 1;
        }
        let best = counts.values().copied().max().unwrap_or(0);
        let ranked = self.opinion.rank(&round.proposal.options);
        match ranked
            .iter()
            .find(|o| counts.get(o.as_str()) == Some(&best))
        {
            Some(choice) => Vote::choice(choice.clone())
                .with_confidence(0.8)
                .with_reasoning(format!("{best} of {} groups concluded it", results.len())),
            None => self.opinion.answer(round),
        }
    }
}

/// Counts answers from the model and from the rules.
#[derive(Debug)]
struct Counted<D> {
    inner: D,
    llm: Arc<AtomicU64>,
    rules: Arc<AtomicU64>,
}

impl<D: Decider> Decider for Counted<D> {
    async fn decide(&self, round: &Round<'_>) -> Vote {
        let vote = self.inner.decide(round).await;
        let from_llm = vote
            .reasoning
            .as_deref()
            .is_some_and(|r| r.starts_with("llm:"));
        let counter = if from_llm { &self.llm } else { &self.rules };
        counter.fetch_add(1, Ordering::Relaxed);
        vote
    }
}

/// Both sizes run the 13 agents: it is small already.
pub async fn run(ctx: &Ctx, _size: Size, r: &mut ScenarioReport) -> Result<(), ScenarioError> {
    let llm = Arc::new(AtomicU64::new(0));
    let rules = Arc::new(AtomicU64::new(0));
    r.note(match &ctx.llm {
        Some(c) => format!(
            "deciders: LLM at {} (model {}), rules as fallback",
            c.config().endpoint,
            c.config().model
        ),
        None => "deciders: rules (set MABEAM_LLM_URL to ask a model)".into(),
    });
    let mut agents = Vec::new();
    let mut members: BTreeMap<&str, Vec<mabeam_protocol::AgentId>> = BTreeMap::new();
    for s in &SPECIALISATIONS {
        for i in 0..s.count {
            let name = format!("llm-{}-{i}", s.name);
            members.entry(s.name).or_default().push(
                mabeam_protocol::AgentId::new(ctx.id(&name))
                    .map_err(|e| ScenarioError::Task(e.to_string()))?,
            );
            let decider = Counted {
                inner: LlmDecider::new(
                    ctx.llm.clone(),
                    s.persona,
                    Rules {
                        opinion: opinion(&s.ranking, 0.9),
                    },
                ),
                llm: llm.clone(),
                rules: rules.clone(),
            };
            agents.push(
                ctx.agent(&name, "llm")
                    .capabilities(["reasoning", s.name])
                    .expertise(1.0 + i as f64 * 0.25)
                    .decider(decider)
                    .build()?,
            );
        }
    }
    let group = ctx.spawn(agents).await?;
    // A model may take a while: rounds get a minute.
    let timeout = if ctx.llm.is_some() { 120_000 } else { 15_000 };

    // Per specialisation, in parallel.
    let per_group = futures::future::join_all(SPECIALISATIONS.iter().map(|s| {
        ctx.run_task(task(
            "weighted",
            &members[s.name],
            &OPTIONS,
            json!({"threshold": 0.5}),
            json!({"problem": PROBLEM, "focus": s.aspect}),
            timeout,
        ))
    }))
    .await;
    let mut conclusions = serde_json::Map::new();
    for (s, run) in SPECIALISATIONS.iter().zip(per_group) {
        let run = run?;
        r.note(format!(
            "{:<12} ({} agents): {}",
            s.name,
            s.count,
            describe(&run)
        ));
        if let Some(choice) = run.choice() {
            conclusions.insert(s.name.to_owned(), choice.into());
        }
    }
    r.check(
        "every specialisation reached its own consensus",
        conclusions.len() == SPECIALISATIONS.len(),
        format!(
            "{}/{} groups decided",
            conclusions.len(),
            SPECIALISATIONS.len()
        ),
    );

    // Across groups.
    let cross = ctx
        .run_task(task(
            "weighted",
            &group.ids,
            &OPTIONS,
            json!({"threshold": 0.5}),
            json!({"problem": PROBLEM, "group_results": conclusions.clone()}),
            timeout,
        ))
        .await?;
    r.note(format!(
        "cross-group ({} agents): {}",
        group.len(),
        describe(&cross)
    ));
    let concluded: Vec<&str> = conclusions.values().filter_map(Value::as_str).collect();
    r.check(
        "cross-group consensus on one of the groups' conclusions",
        cross.decided() && cross.choice().is_some_and(|c| concluded.contains(&c)),
        describe(&cross),
    );
    let (from_llm, from_rules) = (llm.load(Ordering::Relaxed), rules.load(Ordering::Relaxed));
    r.note(format!(
        "answers: {from_llm} from the model, {from_rules} from the rules"
    ));
    r.figure("llm_answers", from_llm);
    r.figure("rule_answers", from_rules);
    r.figure("llm_configured", ctx.llm.is_some());
    if ctx.llm.is_none() {
        r.check(
            "without a model every agent answered by its rules",
            from_llm == 0 && from_rules > 0,
            format!("{from_rules} rule-based answers"),
        );
    }
    group.stop().await;
    Ok(())
}
