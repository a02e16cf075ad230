//! The scale ladder (the seed's massive-scale example: one weighted session over 10 … 1000
//! agents, with duration, messages and memory per agent) and the concurrency test (many
//! sessions open at once, with the coordinator's RSS).

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use futures::{stream, StreamExt as _};
use mabeam_protocol::{
    codec::{decode, encode, ContentType},
    fault::AgentBehaviour,
    subjects,
    task::Priority,
    Limits, Status, TaskId, TaskResult,
};
use mabeam_runtime::reply;
use serde::Serialize;
use serde_json::json;

use super::{
    procfs::{self, Watched},
    scenario::{Fault, Scenario, Selection},
    stack::{self, Fleets, Target},
};

pub const LADDER: [usize; 7] = [10, 25, 50, 100, 200, 500, 1000];

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rung {
    pub agents: usize,
    pub sessions: usize,
    pub decided: usize,
    /// Submit → result, median and max over the sessions.
    pub duration_ms_median: f64,
    pub duration_ms_max: f64,
    /// Session start → end as the coordinator timed it (median).
    pub session_ms_median: f64,
    /// NATS messages on `mabeam.>` per session (heartbeats excluded).
    pub messages_per_session: f64,
    /// agent-sim RSS after the sessions, divided by the agents.
    pub fleet_rss_bytes_per_agent: f64,
    pub fleet_rss_bytes: u64,
    pub coordinator_rss_bytes: u64,
    /// Time until every agent was registered and eligible.
    pub registration_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Concurrency {
    pub sessions: usize,
    pub submit_seconds: f64,
    /// Highest `mabeam_coordinator_sessions_active` seen (all replicas).
    pub peak_active: u64,
    pub coordinator_rss_before_bytes: u64,
    pub coordinator_rss_peak_bytes: u64,
    pub results: u64,
    pub missing: u64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

fn rss_of(watched: &[Watched], needle: &str) -> u64 {
    watched
        .iter()
        .filter(|w| w.name.contains(needle))
        .filter_map(|w| procfs::rss_bytes(w.pid))
        .sum()
}

/// Counts messages on `mabeam.>` other than heartbeats.
async fn message_counter(client: &async_nats::Client) -> anyhow::Result<Arc<AtomicU64>> {
    let mut sub = client.subscribe("mabeam.>").await?;
    client.flush().await?;
    let n = Arc::new(AtomicU64::new(0));
    let counter = n.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if !m.subject.as_str().starts_with(subjects::REGISTRY_HEARTBEAT) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    Ok(n)
}

async fn decide(
    target: &Target,
    scenario: &Scenario,
    id: &str,
    timeout: Duration,
) -> anyhow::Result<TaskResult> {
    let task_id = TaskId::new(id)?;
    let mut sub = target.client.subscribe(subjects::results(&task_id)).await?;
    target.client.flush().await?;
    let body = encode(ContentType::MsgPack, &scenario.task(task_id)?)?;
    let js = async_nats::jetstream::new(target.client.clone());
    let mut headers = reply::headers_for(ContentType::MsgPack);
    headers.insert("Nats-Msg-Id", id);
    js.publish_with_headers(subjects::TASKS_SUBMIT, headers, body.into())
        .await?
        .await
        .map_err(|e| anyhow::anyhow!("task not stored: {e}"))?;
    let msg = tokio::time::timeout(timeout, sub.next())
        .await
        .with_context(|| format!("no result for {id} within {timeout:?}"))?
        .context("subscription closed")?;
    let ct = reply::content_type(msg.headers.as_ref())?;
    Ok(decode(ct, &msg.payload, &Limits::default())?)
}

/// One rung: a fresh fleet of `agents`, `sessions` weighted sessions one after another.
pub async fn rung(
    target: &Target,
    agents: usize,
    sessions: usize,
    run: &str,
    logs: &Path,
) -> anyhow::Result<Rung> {
    let scenario = Scenario {
        name: format!("scale-{run}-{agents}"),
        algorithm: "weighted",
        agents,
        // The seed's example: weighted consensus, threshold 0.8.
        params: json!({ "threshold": 0.8 }),
        options: vec!["train".into(), "wait".into()],
        selection: Selection::Explicit,
        fault: None,
        base_rate: 0.0,
        noise: 0.0,
        timeout_ms: 60_000,
        priority: Priority::Normal,
    };
    let mut fleets = Fleets::default();
    let registering = Instant::now();
    fleets.spawn(target, &scenario, 2000, logs)?;
    stack::wait_agents(target, &mut fleets, &scenario, Duration::from_secs(180)).await?;
    let registration_ms = registering.elapsed().as_secs_f64() * 1000.0;
    let counter = message_counter(&target.client).await?;
    let mut durations = Vec::new();
    let mut session_ms = Vec::new();
    let mut decided = 0;
    let mut messages = 0u64;
    for i in 0..sessions {
        let before = counter.load(Ordering::Relaxed);
        let t = Instant::now();
        let result = decide(
            target,
            &scenario,
            &format!("{}-{i}", scenario.name),
            Duration::from_secs(90),
        )
        .await?;
        durations.push(t.elapsed().as_secs_f64() * 1000.0);
        session_ms.push(result.timings.duration_ms as f64);
        if result.status == Status::Decided {
            decided += 1;
        }
        // Let the session's last messages (closing notices, events) land in this count.
        tokio::time::sleep(Duration::from_millis(200)).await;
        messages += counter.load(Ordering::Relaxed) - before;
    }
    let fleet_rss: u64 = fleets
        .watched()
        .iter()
        .filter_map(|w| procfs::rss_bytes(w.pid))
        .sum();
    let out = Rung {
        agents,
        sessions,
        decided,
        duration_ms_median: median(durations.clone()),
        duration_ms_max: durations.iter().copied().fold(0.0, f64::max),
        session_ms_median: median(session_ms),
        messages_per_session: messages as f64 / sessions.max(1) as f64,
        fleet_rss_bytes_per_agent: fleet_rss as f64 / agents as f64,
        fleet_rss_bytes: fleet_rss,
        coordinator_rss_bytes: rss_of(&target.watched, "coordina"),
        registration_ms,
    };
    fleets.stop();
    Ok(out)
}

/// `mabeam_coordinator_sessions_active` summed over the coordinators (blocking HTTP).
fn active_sessions(coordinators: &[std::net::SocketAddr]) -> u64 {
    coordinators
        .iter()
        .filter_map(|a| mabeam_tests::http_get(*a, "/metrics"))
        .filter_map(|(_, body)| {
            body.lines()
                .find(|l| l.starts_with("mabeam_coordinator_sessions_active"))
                .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        })
        .map(|x| x as u64)
        .sum()
}

/// `sessions` sessions over 5 agents that never vote, each open until its `hold` timeout:
/// how many the coordinators hold at once and what that costs in RSS.
pub async fn concurrency(
    target: &Target,
    sessions: usize,
    hold: Duration,
    run: &str,
    logs: &Path,
) -> anyhow::Result<Concurrency> {
    let scenario = Scenario {
        name: format!("hold-{run}"),
        algorithm: "majority",
        agents: 5,
        params: json!({}),
        options: vec!["a".into(), "b".into()],
        selection: Selection::Capability,
        fault: Some(Fault {
            agents: 5,
            behaviour: AgentBehaviour::Silent,
        }),
        base_rate: 0.0,
        noise: 0.0,
        timeout_ms: u64::try_from(hold.as_millis()).unwrap_or(u64::MAX),
        priority: Priority::Normal,
    };
    let mut fleets = Fleets::default();
    fleets.spawn(target, &scenario, 2000, logs)?;
    stack::wait_agents(target, &mut fleets, &scenario, Duration::from_secs(60)).await?;
    stack::inject_fault(target, &scenario).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let coordinator_rss_before_bytes = rss_of(&target.watched, "coordina");
    let mut results_sub = target.client.subscribe(subjects::RESULTS_ALL).await?;
    target.client.flush().await?;
    let prefix = format!(
        "{}.{}-",
        subjects::RESULTS_ALL.trim_end_matches(".>"),
        scenario.name
    );
    let results = Arc::new(AtomicU64::new(0));
    let counted = results.clone();
    let collector = tokio::spawn(async move {
        while let Some(m) = results_sub.next().await {
            if m.subject.as_str().starts_with(&prefix) {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let js = async_nats::jetstream::new(target.client.clone());
    let start = Instant::now();
    let published: Vec<anyhow::Result<()>> = stream::iter(0..sessions)
        .map(|i| {
            let js = js.clone();
            let scenario = &scenario;
            async move {
                let id = format!("{}-{i}", scenario.name);
                let body = encode(ContentType::MsgPack, &scenario.task(TaskId::new(&id)?)?)?;
                let mut headers = reply::headers_for(ContentType::MsgPack);
                headers.insert("Nats-Msg-Id", id.as_str());
                js.publish_with_headers(subjects::TASKS_SUBMIT, headers, body.into())
                    .await?
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(())
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let submit_seconds = start.elapsed().as_secs_f64();
    let failed = published.iter().filter(|r| r.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {sessions} tasks were not stored");
    }
    let mut peak_active = 0;
    let mut coordinator_rss_peak_bytes = coordinator_rss_before_bytes;
    let deadline = start + hold + Duration::from_secs(60);
    while Instant::now() < deadline && (results.load(Ordering::Relaxed) as usize) < sessions {
        let addrs = target.coordinator_http.clone();
        let active = tokio::task::spawn_blocking(move || active_sessions(&addrs))
            .await
            .unwrap_or(0);
        peak_active = peak_active.max(active);
        coordinator_rss_peak_bytes =
            coordinator_rss_peak_bytes.max(rss_of(&target.watched, "coordina"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    collector.abort();
    let got = results.load(Ordering::Relaxed);
    fleets.stop();
    Ok(Concurrency {
        sessions,
        submit_seconds,
        peak_active,
        coordinator_rss_before_bytes,
        coordinator_rss_peak_bytes,
        results: got,
        missing: (sessions as u64).saturating_sub(got),
    })
}
