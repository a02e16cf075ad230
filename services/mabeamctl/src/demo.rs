//! `mabeamctl demo`: one task of every algorithm against a running stack, with faults injected,
//! and a table of the outcomes. `make run` runs it; the end-to-end tests reuse its catalogue.

use std::{collections::BTreeMap, io::Write, time::Duration};

use futures::StreamExt as _;
use mabeam_agent::tasks::TaskClient;
use mabeam_protocol::{
    fault::{AgentBehaviour, FaultHeal, FaultKind, FaultList, FaultSpec},
    registry::{AgentList, AgentQuery},
    subjects,
    task::TaskSubmission,
    AgentId, ContentType, Limits, Status, TaskResult, PROTOCOL_VERSION,
};
use mabeam_runtime::reply;
use serde_json::{json, Value};

use crate::{
    client::{self, Global},
    error::exit,
    render, submit, CtlError,
};

/// One task per algorithm over `participants` (a participant selector), ids prefixed with
/// `prefix`. Every task is decidable by an electorate of honest agents that mostly prefer the
/// first option, with up to a third of them faulty.
pub fn catalogue(prefix: &str, participants: &Value) -> Vec<(&'static str, Value)> {
    let task = |algorithm: &'static str, options: &[&str], params: Value| {
        (
            algorithm,
            json!({
                "task_id": format!("{prefix}-{}", algorithm.replace('_', "-")),
                "algorithm": algorithm,
                "proposal": {"question": format!("demo: {algorithm}")},
                "options": options,
                "participants": participants,
                "params": params,
                "timeout_ms": 20000,
            }),
        )
    };
    let choice = ["deploy", "hold"];
    vec![
        task("majority", &choice, json!({})),
        task("supermajority", &choice, json!({"threshold": 0.6})),
        task("unanimous", &choice, json!({"basis": "cast"})),
        task("plurality", &["deploy", "hold", "rollback"], json!({})),
        task("weighted", &choice, json!({"threshold": 0.5})),
        task("ranked_choice", &["deploy", "hold", "rollback"], json!({})),
        task(
            "byzantine",
            &choice,
            json!({"max_rounds": 3, "round_timeout_ms": 2000}),
        ),
        task(
            "iterative",
            &[],
            json!({"max_rounds": 5, "convergence_threshold": 5.0, "round_timeout_ms": 2000}),
        ),
        task(
            "negotiation",
            &[],
            json!({"min": 0.0, "max": 100.0, "max_rounds": 5, "round_timeout_ms": 2000}),
        ),
        task("auction", &[], json!({"pricing": "second_price"})),
        task(
            "leader_election",
            &[],
            json!({"method": "highest_expertise"}),
        ),
        task(
            "work_distribution",
            &[],
            json!({"items": ["shard-1", "shard-2", "shard-3", "shard-4", "shard-5", "shard-6"], "strategy": "least_loaded"}),
        ),
        task("adaptive", &choice, json!({})),
        task(
            "pipeline",
            &choice,
            json!({"stages": [
                {"algorithm": "weighted", "params": {"threshold": 0.5}, "options": ["deploy", "hold"]},
                {"algorithm": "majority", "options": ["accept", "reject"]}
            ]}),
        ),
    ]
}

/// Waits for every result of the demo at most this long by default.
const DEFAULT_WAIT: &str = "60s";
/// Slow agents injected for the demo: within every algorithm's tolerance.
const SLOW: AgentBehaviour = AgentBehaviour::Slow {
    delay_ms: 50,
    jitter_ms: 25,
};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How long to wait for all the results.
    #[arg(long, default_value = DEFAULT_WAIT, value_parser = client::parse_duration, value_name = "DURATION")]
    pub wait: Duration,
    /// Wait (up to --wait) until at least this many agents are eligible before starting.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub min_agents: usize,
}

/// Runs the demo against a running stack (at least 4 eligible agents); exit status 0 when
/// every task was decided, 1 otherwise.
pub async fn run(global: &Global, args: &DemoArgs, out: &mut dyn Write) -> Result<u8, CtlError> {
    let client = client::connect(global).await?;
    let everyone = AgentQuery {
        v: PROTOCOL_VERSION,
        ..AgentQuery::default()
    };
    // A fleet that just started may still be registering.
    let wanted = args.min_agents.max(4);
    let patience = tokio::time::Instant::now() + args.wait;
    let (agents, eligible) = loop {
        let agents: AgentList =
            client::request(&client, subjects::REGISTRY_QUERY, &everyone, global.timeout).await?;
        let eligible: Vec<AgentId> = agents
            .agents
            .iter()
            .filter(|a| a.status.is_eligible())
            .map(|a| a.agent_id.clone())
            .collect();
        if eligible.len() >= wanted || tokio::time::Instant::now() >= patience {
            break (agents, eligible);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if eligible.len() < wanted {
        return Err(CtlError::Demo(format!(
            "the demo needs at least {wanted} eligible agents, found {}",
            eligible.len()
        )));
    }
    let mut progress = std::io::stderr();
    let _ = writeln!(
        progress,
        "{} agents registered ({} eligible)",
        agents.agents.len(),
        eligible.len()
    );

    // Faults for the whole demo: two slow agents.
    let slow: Vec<AgentId> = eligible.iter().rev().take(2).cloned().collect();
    let spec = FaultSpec {
        v: PROTOCOL_VERSION,
        id: Some(format!("demo-slow-{}", mabeam_runtime::now_ms())),
        fault: FaultKind::Agents {
            agents: slow.clone(),
            behaviour: SLOW,
        },
        start_after_ms: 0,
        duration_ms: Some(120_000),
    };
    let injected = match client::request::<_, FaultList>(
        &client,
        subjects::FAULTS_INJECT,
        &spec,
        global.timeout,
    )
    .await
    {
        Ok(list) => {
            for fault in &list.faults {
                let _ = writeln!(
                    progress,
                    "fault injected: {}",
                    mabeam_fault_injector::spec::describe(&fault.fault)
                );
            }
            spec.id.clone()
        }
        Err(e) => {
            let _ = writeln!(
                progress,
                "fault injector unavailable ({e}); running without injected faults"
            );
            None
        }
    };

    let prefix = format!("demo-{}", mabeam_runtime::now_ms());
    let tasks = catalogue(&prefix, &json!({"all": true}));
    let submitter = TaskClient::with_request_timeout(client.clone(), global.timeout);
    // Subject wildcards match whole tokens only, so take every result and keep the demo's.
    let results_subject = subjects::RESULTS_ALL.to_owned();
    let mut results = client
        .subscribe(results_subject.clone())
        .await
        .map_err(|e| CtlError::Nats {
            subject: results_subject,
            message: e.to_string(),
        })?;
    let started = std::time::Instant::now();
    for (_, task) in &tasks {
        let typed: TaskSubmission =
            serde_json::from_value(task.clone()).map_err(|e| CtlError::Demo(e.to_string()))?;
        submitter
            .submit(&typed, ContentType::MsgPack)
            .await
            .map_err(submit::task_error)?;
    }
    let mut got: BTreeMap<String, TaskResult> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + args.wait;
    while got.len() < tasks.len() {
        let Ok(Some(message)) = tokio::time::timeout_at(deadline, results.next()).await else {
            break;
        };
        if let Ok((result, _)) = reply::decode_message::<TaskResult>(
            message.headers.as_ref(),
            &message.payload,
            &Limits::default(),
        ) {
            if result.task_id.as_str().starts_with(&prefix) {
                got.insert(result.task_id.to_string(), result);
            }
        }
    }
    if let Some(id) = injected {
        let heal = FaultHeal {
            v: PROTOCOL_VERSION,
            id: Some(id),
        };
        let _ =
            client::request::<_, FaultList>(&client, subjects::FAULTS_HEAL, &heal, global.timeout)
                .await;
    }

    let decided = got.values().filter(|r| r.status == Status::Decided).count();
    let all_decided = decided == tasks.len();
    if global.json {
        let report = json!({
            "decided": decided,
            "tasks": tasks.len(),
            "results": got.values().collect::<Vec<_>>(),
        });
        writeln!(out, "{report}")?;
    } else {
        let rows: Vec<Vec<String>> = tasks
            .iter()
            .map(|(algorithm, task)| {
                let id = task["task_id"].as_str().unwrap_or_default();
                match got.get(id) {
                    Some(r) => vec![
                        (*algorithm).to_owned(),
                        r.status.as_str().to_owned(),
                        r.rounds.to_string(),
                        r.participants.len().to_string(),
                        r.faulty_detected.len().to_string(),
                        r.timings.duration_ms.to_string(),
                        summary(r),
                    ],
                    None => vec![(*algorithm).to_owned(), "no result".to_owned()],
                }
            })
            .collect();
        write!(
            out,
            "{}",
            render::table(
                &[
                    "ALGORITHM",
                    "STATUS",
                    "ROUNDS",
                    "AGENTS",
                    "FAULTY",
                    "MS",
                    "OUTCOME"
                ],
                &rows
            )
        )?;
        writeln!(
            out,
            "\n{decided} of {} decided in {:.1} s",
            tasks.len(),
            started.elapsed().as_secs_f64()
        )?;
    }
    Ok(if all_decided { exit::OK } else { exit::ERROR })
}

/// The outcome (or why there is none) in at most 60 characters.
fn summary(result: &TaskResult) -> String {
    let mut text = match (&result.outcome, &result.reason) {
        (Some(outcome), _) => render::outcome(outcome),
        (None, Some(reason)) => reason.clone(),
        (None, None) => "-".to_owned(),
    };
    if text.chars().count() > 60 {
        text = text.chars().take(57).collect::<String>() + "...";
    }
    text
}
