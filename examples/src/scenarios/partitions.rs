//! Network partitions through the fault-injector (agents of different groups stop hearing
//! each other; groups other than the first lose the coordinators): clean split 6/6, minority
//! isolation 12/3, fragmentation 8/6/4, intermittent 5/5 (flapping every second).
//!
//! For each: a Byzantine task during the partition — decided only when the coordinators' side
//! alone holds a quorum, otherwise no decision (never two) — then the heal and a task over
//! everyone, with the recovery time from the heal to the decision. The intermittent one runs
//! a single task through the flapping.

use std::time::{Duration, Instant};

use mabeam_fault_injector::partition;
use mabeam_protocol::{fault::FaultKind, result::byzantine_quorum, AgentId};
use serde_json::json;

use super::{describe, opinion, task, Size};
use crate::{fleet::Ctx, report::ScenarioReport, ScenarioError};

const OPTIONS: [&str; 2] = ["commit-batch-17", "abort-batch-17"];
const HONEST_VALUE: &str = "commit-batch-17";

#[derive(Debug, Clone, Copy)]
enum Shape {
    CleanSplit,
    Minority(usize),
    Fragments(&'static [usize]),
    Intermittent,
}

fn groups(shape: Shape, ids: &[AgentId]) -> Result<Vec<Vec<AgentId>>, ScenarioError> {
    match shape {
        Shape::CleanSplit | Shape::Intermittent => partition::clean_split(ids),
        Shape::Minority(k) => partition::minority_isolation(ids, k),
        Shape::Fragments(sizes) => partition::fragmentation(ids, sizes),
    }
    .map_err(|e| ScenarioError::Task(e.to_string()))
}

pub async fn run(ctx: &Ctx, size: Size, r: &mut ScenarioReport) -> Result<(), ScenarioError> {
    let round_ms: u64 = match size {
        Size::Full => 1500,
        Size::Small => 800,
    };
    let shapes: [(&str, usize, Shape); 4] = [
        ("clean split 6/6", 12, Shape::CleanSplit),
        ("minority isolation 12/3", 15, Shape::Minority(3)),
        ("fragmentation 8/6/4", 18, Shape::Fragments(&[8, 6, 4])),
        ("intermittent 5/5", 10, Shape::Intermittent),
    ];
    let mut recoveries = Vec::new();
    for (index, (name, n, shape)) in shapes.into_iter().enumerate() {
        let agents = (0..n)
            .map(|i| {
                ctx.agent(&format!("part{index}-{i:02}"), "storage-node")
                    .capabilities(["storage"])
                    .decider(opinion(&[HONEST_VALUE], 1.0))
                    .build()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let group = ctx.spawn(agents).await?;
        let parts = groups(shape, &group.ids)?;
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        let f = (n as u32 - 1) / 3;
        let quorum = byzantine_quorum(n, f) as usize;
        let flap = matches!(shape, Shape::Intermittent).then_some(1000);
        let fault = ctx
            .inject(
                &format!("part{index}"),
                FaultKind::Partition {
                    groups: parts.clone(),
                    flap_ms: flap,
                },
                None,
            )
            .await?;
        // The commands travel to the agents asynchronously.
        tokio::time::sleep(Duration::from_millis(300)).await;

        if flap.is_some() {
            let run = ctx
                .run_task(task(
                    "byzantine",
                    &group.ids,
                    &OPTIONS,
                    json!({"max_rounds": 8, "round_timeout_ms": round_ms}),
                    json!({"decision": "commit the batch", "phase": "flapping"}),
                    30_000,
                ))
                .await?;
            ctx.heal(&fault).await?;
            r.note(format!(
                "{name}: groups {sizes:?}, quorum {quorum}, flapping every 1 s: {}",
                describe(&run)
            ));
            r.check(
                format!("{name}: decided through the flapping, safely"),
                run.decided() && run.choice() == Some(HONEST_VALUE),
                describe(&run),
            );
            r.figure("intermittent_seconds", run.seconds());
            group.stop().await;
            continue;
        }

        let during = ctx
            .run_task(task(
                "byzantine",
                &group.ids,
                &OPTIONS,
                json!({"max_rounds": 2, "round_timeout_ms": round_ms}),
                json!({"decision": "commit the batch", "phase": "partitioned"}),
                10_000,
            ))
            .await?;
        let majority_side = parts[0].len() >= quorum;
        let behaved = if majority_side {
            during.decided() && during.choice() == Some(HONEST_VALUE)
        } else {
            !during.decided()
        };
        let healed_at = Instant::now();
        ctx.heal(&fault).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let after = ctx
            .run_task(task(
                "byzantine",
                &group.ids,
                &OPTIONS,
                json!({"max_rounds": 3, "round_timeout_ms": round_ms * 2}),
                json!({"decision": "commit the batch", "phase": "healed"}),
                20_000,
            ))
            .await?;
        let recovery = healed_at.elapsed();
        r.note(format!(
            "{name}: groups {sizes:?}, quorum {quorum} ({}): during {} | after heal {} | recovered {:.2} s after the heal",
            if majority_side { "coordinators' side has it" } else { "no side has it" },
            describe(&during),
            describe(&after),
            recovery.as_secs_f64()
        ));
        r.check(
            format!(
                "{name}: during the partition {}",
                if majority_side {
                    "the quorum side decides"
                } else {
                    "no decision without a quorum"
                }
            ),
            behaved,
            describe(&during),
        );
        r.check(
            format!("{name}: decided after healing"),
            after.decided() && after.choice() == Some(HONEST_VALUE),
            format!(
                "{} ({:.2} s after the heal)",
                describe(&after),
                recovery.as_secs_f64()
            ),
        );
        recoveries.push(recovery.as_secs_f64());
        r.figure(
            &format!(
                "recovery_{}_seconds",
                name.split(' ').next().unwrap_or(name)
            ),
            recovery.as_secs_f64(),
        );
        group.stop().await;
    }
    if let Some(max) = recoveries.iter().copied().reduce(f64::max) {
        r.figure("max_recovery_seconds", max);
    }
    Ok(())
}
