//! Scale: a weighted vote over 10 → 25 → 50 → 100 → 200 → 500 → 1000 agents (duration,
//! messages on the bus, memory per step, a scaling summary), Byzantine agreement over 13 and
//! 100 agents, 100 concurrent sessions (stack memory), and an endurance run of 1000 tasks and
//! at least `MABEAM_ENDURANCE_S` seconds (60) (success rate, latency drift from the first to
//! the last tenth, memory growth).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use mabeam_agent::Opinion;
use serde_json::json;

use super::{describe, opinion, task, Size};
use crate::{
    fleet::{own_rss_bytes, Ctx, Group},
    report::{quantile, ScenarioReport},
    ScenarioError,
};

const OPTIONS: [&str; 3] = ["data-parallel", "model-parallel", "pipeline-parallel"];

/// Counts messages on the session and inbox subjects while it lives.
struct Wiretap {
    count: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Wiretap {
    async fn start(ctx: &Ctx) -> Result<Self, ScenarioError> {
        let count = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for subject in ["mabeam.sessions.*.votes.*", "mabeam.agents.*.inbox"] {
            let mut sub = ctx
                .client
                .subscribe(subject)
                .await
                .map_err(|e| ScenarioError::Nats(e.to_string()))?;
            let c = count.clone();
            tasks.push(tokio::spawn(async move {
                while sub.next().await.is_some() {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        // The subscriptions reach the server before anything is published.
        ctx.client
            .flush()
            .await
            .map_err(|e| ScenarioError::Nats(e.to_string()))?;
        Ok(Self { count, tasks })
    }

    fn read(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }
}

impl Drop for Wiretap {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Agents of five kinds (GPU, CPU, memory, network, general) in the seed's proportions,
/// mostly preferring data parallelism.
async fn fleet(ctx: &Ctx, name: &str, n: usize) -> Result<Group, ScenarioError> {
    let kinds = [
        ("gpu-powerhouse", 3.0),
        ("cpu-optimizer", 1.0),
        ("cpu-optimizer", 1.0),
        ("memory-specialist", 1.5),
        ("general-purpose", 1.0),
    ];
    let agents = (0..n)
        .map(|i| {
            let (kind, expertise) = kinds[i % kinds.len()];
            let ranking: &[&str] = if i % 4 == 3 {
                &["model-parallel", "data-parallel"]
            } else {
                &["data-parallel", "model-parallel"]
            };
            ctx.agent(&format!("{name}-{i:04}"), kind)
                .capabilities(["scale"])
                .expertise(expertise)
                .max_sessions(256)
                .decider(Opinion {
                    acceptable: 2,
                    ..opinion(ranking, 0.9)
                })
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    ctx.spawn(agents).await
}

pub async fn run(ctx: &Ctx, size: Size, r: &mut ScenarioReport) -> Result<(), ScenarioError> {
    let (ladder, byzantine, concurrent, endurance): (&[usize], &[usize], usize, usize) = match size
    {
        Size::Full => (&[10, 25, 50, 100, 200, 500, 1000], &[13, 100], 100, 200),
        Size::Small => (&[5, 10, 25], &[4, 13], 20, 20),
    };

    // The ladder.
    let mut rows = Vec::new();
    for &n in ladder {
        let rss_before = own_rss_bytes().unwrap_or(0);
        let spawn_started = Instant::now();
        let group = fleet(ctx, &format!("scale{n}"), n).await?;
        let spawn = spawn_started.elapsed();
        let rss_agents = own_rss_bytes().unwrap_or(0);
        let tap = Wiretap::start(ctx).await?;
        let run = ctx
            .run_task(task(
                "weighted",
                &group.ids,
                &OPTIONS,
                json!({"threshold": 0.5}),
                json!({"task": "distributed training", "total_gpus": n * 2, "budget": n * 10}),
                60_000,
            ))
            .await?;
        // Ballots still in flight after an early close are part of the step's traffic.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let messages = tap.read();
        drop(tap);
        let stack_mb = ctx.stack_rss().values().sum::<u64>() as f64 / 1e6;
        let per_agent_kb = rss_agents.saturating_sub(rss_before) as f64 / n as f64 / 1024.0;
        r.note(format!(
            "{n:>5} agents: {} | spawn+register {:.2} s | {messages} messages | agents {per_agent_kb:.0} KiB each | stack {stack_mb:.0} MB",
            describe(&run),
            spawn.as_secs_f64()
        ));
        r.check(
            format!("weighted vote over {n} agents decided"),
            run.decided() && run.choice() == Some("data-parallel"),
            describe(&run),
        );
        r.figure(&format!("weighted_{n}_seconds"), run.seconds());
        r.figure(&format!("weighted_{n}_messages"), messages);
        rows.push((n, run.seconds(), messages, per_agent_kb));
        group.stop().await;
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let agents_x = last.0 as f64 / first.0 as f64;
        let time_x = last.1 / first.1.max(1e-3);
        let msg_per_agent: Vec<String> = rows
            .iter()
            .map(|(n, _, m, _)| format!("{n}: {:.1}", *m as f64 / *n as f64))
            .collect();
        r.note(format!(
            "scaling: {agents_x:.0}× the agents took {time_x:.1}× the time; messages per agent {}",
            msg_per_agent.join(", ")
        ));
        r.figure("scaling_time_factor", time_x);
        r.figure("scaling_agent_factor", agents_x);
    }

    // Byzantine agreement at 13 and 100 agents (the performance criteria's sizes).
    for &n in byzantine {
        let group = fleet(ctx, &format!("bft{n}"), n).await?;
        let run = ctx
            .run_task(task(
                "byzantine",
                &group.ids,
                &OPTIONS[..2],
                json!({"max_rounds": 3, "round_timeout_ms": 10_000}),
                json!({"task": "model checkpoint to promote"}),
                60_000,
            ))
            .await?;
        r.note(format!("byzantine over {n} agents: {}", describe(&run)));
        r.check(
            format!("byzantine agreement over {n} agents decided"),
            run.decided(),
            describe(&run),
        );
        r.figure(&format!("byzantine_{n}_seconds"), run.seconds());
        group.stop().await;
    }

    // Concurrent sessions: stack memory with `concurrent` sessions open at once.
    let group = fleet(ctx, "conc", 10).await?;
    let stack_before: u64 = ctx.stack_rss().values().sum();
    let started = Instant::now();
    let runs = futures::future::join_all((0..concurrent).map(|i| {
        ctx.run_task(task(
            "weighted",
            &group.ids,
            &OPTIONS,
            json!({"threshold": 0.5}),
            json!({"concurrent": i}),
            60_000,
        ))
    }))
    .await;
    let stack_after: u64 = ctx.stack_rss().values().sum();
    let decided = runs
        .iter()
        .filter(|r| r.as_ref().is_ok_and(|r| r.decided()))
        .count();
    r.note(format!(
        "{concurrent} concurrent sessions: {decided} decided in {:.2} s; stack memory {:.0} MB → {:.0} MB",
        started.elapsed().as_secs_f64(),
        stack_before as f64 / 1e6,
        stack_after as f64 / 1e6
    ));
    r.check(
        format!("{concurrent} concurrent sessions all decided"),
        decided == concurrent,
        format!("{decided}/{concurrent}"),
    );
    if stack_after > 0 {
        r.figure("concurrent_sessions", concurrent);
        r.figure("concurrent_stack_rss_bytes", stack_after.max(stack_before));
    }

    // Endurance: sequential batches of 10 until `endurance` tasks ran and (full size) at least
    // MABEAM_ENDURANCE_S seconds passed; success rate, latency drift, memory growth.
    let min_duration = match size {
        Size::Full => Duration::from_secs(
            std::env::var("MABEAM_ENDURANCE_S")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(60),
        ),
        Size::Small => Duration::ZERO,
    };
    let started = Instant::now();
    let rss_start = own_rss_bytes().unwrap_or(0);
    let stack_start: u64 = ctx.stack_rss().values().sum();
    let mut latencies = Vec::new();
    let mut ok = 0usize;
    let mut batch = 0;
    while latencies.len() < endurance || started.elapsed() < min_duration {
        let runs = futures::future::join_all((0..10).map(|i| {
            ctx.run_task(task(
                "weighted",
                &group.ids,
                &OPTIONS,
                json!({"threshold": 0.5}),
                json!({"endurance": batch * 10 + i}),
                30_000,
            ))
        }))
        .await;
        for run in runs {
            if run.as_ref().is_ok_and(|r| r.decided()) {
                ok += 1;
            }
            latencies.push(run.map_or(f64::INFINITY, |r| r.seconds()));
        }
        batch += 1;
    }
    let endurance = latencies.len();
    let stack_end: u64 = ctx.stack_rss().values().sum();
    let tenth = (latencies.len() / 10).max(1);
    let first = quantile(&latencies[..tenth], 0.5).unwrap_or(0.0);
    let last = quantile(&latencies[latencies.len() - tenth..], 0.5).unwrap_or(0.0);
    // No drift figure at all when the first tenth has no latency to compare against.
    let drift = (first > 0.0).then(|| (last - first) / first);
    let rate = ok as f64 / endurance as f64;
    let rss_growth = own_rss_bytes().unwrap_or(0).saturating_sub(rss_start);
    r.note(format!(
        "endurance: {ok}/{endurance} decided over {:.1} s; median latency first tenth {:.1} ms, last tenth {:.1} ms ({}); p99 {:.1} ms; agent memory +{:.1} MB",
        started.elapsed().as_secs_f64(),
        first * 1e3,
        last * 1e3,
        drift.map_or("drift not measurable".to_owned(), |d| format!("{:+.1} %", d * 100.0)),
        quantile(&latencies, 0.99).unwrap_or(0.0) * 1e3,
        rss_growth as f64 / 1e6
    ));
    r.check(
        "endurance: every task decided",
        ok == endurance,
        format!("{ok}/{endurance}"),
    );
    r.figure("endurance_tasks", endurance);
    r.figure("endurance_success_rate", rate);
    if let Some(drift) = drift {
        r.figure("endurance_latency_drift", drift);
    }
    r.figure("endurance_seconds", started.elapsed().as_secs_f64());
    r.figure("endurance_agent_rss_growth_bytes", rss_growth);
    if stack_start > 0 {
        r.figure("endurance_stack_rss_start_bytes", stack_start);
        r.figure("endurance_stack_rss_end_bytes", stack_end);
    }
    group.stop().await;
    Ok(())
}
