//! The fault matrix (`make chaos`): every agent fault × every voting algorithm, within and
//! beyond the algorithm's tolerance, each cell a real session on a real stack with the fault
//! injected through the fault-injector; coordinator replicas killed -9 and restarted while
//! the cells run; every task submitted twice; and the whole history checked afterwards
//! ([`history::check`]).
//!
//! Each cell gets its own fresh agents (quarantine after equivocation is sticky, crashed
//! agents age out of the registry), taken from one large simulated fleet.

pub mod history;
mod report;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use mabeam_protocol::{
    codec::decode,
    fault::{AgentBehaviour, FaultKind, FaultSpec},
    subjects, AgentId, Limits, Outcome, Status, TaskId, TaskResult, PROTOCOL_VERSION,
};
use mabeam_runtime::reply;
use serde::Serialize;
use serde_json::json;

pub use history::{Check, Event, Source, Violation};
pub use report::Report;

use crate::{Fleet, Stack, StackOptions};

/// Agents in every cell's electorate: n = 7 tolerates f = 2 Byzantine agents.
pub const ELECTORATE: usize = 7;
/// The option every honest agent prefers (profile `consensus`, no noise).
const HONEST: &str = "deploy";
/// The option coalitions push.
const ATTACKED: &str = "hold";
/// Session lease of the matrix's coordinators: short enough for the brief's failover target
/// (≤ 1 s p99; the product default of 1500 ms bounds failover near 1.7 s instead).
pub const LEASE_MS: u64 = 600;
/// Honest agents' number for iterative refinement.
const CENTRE: f64 = 50.0;

/// The voting algorithms the matrix covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    Majority,
    Weighted,
    RankedChoice,
    Byzantine,
    Iterative,
    Adaptive,
}

impl Algorithm {
    pub const ALL: [Self; 6] = [
        Self::Majority,
        Self::Weighted,
        Self::RankedChoice,
        Self::Byzantine,
        Self::Iterative,
        Self::Adaptive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Majority => "majority",
            Self::Weighted => "weighted",
            Self::RankedChoice => "ranked_choice",
            Self::Byzantine => "byzantine",
            Self::Iterative => "iterative",
            Self::Adaptive => "adaptive",
        }
    }

    /// Faulty agents (of [`ELECTORATE`]) the algorithm promises to decide correctly with: f
    /// for the Byzantine protocols (n ≥ 3f+1), a minority for the others.
    pub fn tolerance(self) -> usize {
        match self {
            Self::Byzantine | Self::Adaptive => (ELECTORATE - 1) / 3,
            _ => (ELECTORATE - 1) / 2,
        }
    }

    /// Whether the algorithm promises never to decide against the honest agents, however
    /// many are faulty (safety over liveness). The others count ballots: a coalition that is
    /// a majority of them wins, which is what majority voting means.
    pub fn byzantine_safe(self) -> bool {
        matches!(self, Self::Byzantine)
    }

    fn task(self, task_id: &str, agents: &[AgentId]) -> serde_json::Value {
        let rounds = json!({"max_rounds": 3, "round_timeout_ms": 1500});
        let (options, params) = match self {
            Self::Majority => (json!([HONEST, ATTACKED]), json!({"basis": "eligible"})),
            Self::Weighted => (json!([HONEST, ATTACKED]), json!({"threshold": 0.5})),
            Self::RankedChoice => (json!([HONEST, ATTACKED, "rollback"]), json!({})),
            Self::Byzantine => (json!([HONEST, ATTACKED]), rounds),
            Self::Iterative => (
                json!([]),
                json!({"max_rounds": 5, "convergence_threshold": 1.0, "round_timeout_ms": 1500}),
            ),
            Self::Adaptive => (json!([HONEST, ATTACKED]), json!({})),
        };
        json!({
            "task_id": task_id,
            "algorithm": self.as_str(),
            "proposal": {"chaos": task_id},
            "options": options,
            "participants": {"agents": agents},
            "params": params,
            "timeout_ms": 8000,
        })
    }

    /// Whether an outcome is what the honest agents want.
    fn honest(self, outcome: &Outcome) -> bool {
        match outcome {
            Outcome::Choice { choice, .. } => choice == HONEST,
            // Honest agents all hold CENTRE; within 10 % is their value.
            Outcome::Value { value, .. } => value
                .first()
                .is_some_and(|v| (v - CENTRE).abs() <= 0.1 * CENTRE),
            _ => false,
        }
    }
}

/// A fault the matrix injects into a cell's faulty agents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Nemesis {
    pub name: &'static str,
    #[serde(skip)]
    fault: NemesisFault,
}

#[derive(Debug, Clone, PartialEq)]
enum NemesisFault {
    Behaviour(AgentBehaviour),
    /// The faulty agents in a group of their own, cut off from the coordinators.
    Partition,
}

impl Nemesis {
    /// Every agent behaviour of the fault model, and minority isolation.
    pub fn all() -> Vec<Self> {
        use AgentBehaviour as B;
        let b = |name, behaviour| Self {
            name,
            fault: NemesisFault::Behaviour(behaviour),
        };
        vec![
            b("crash", B::Crash),
            b("silent", B::Silent),
            b(
                "slow",
                B::Slow {
                    delay_ms: 300,
                    jitter_ms: 100,
                },
            ),
            b("drop", B::Drop { percent: 60.0 }),
            b("corrupt", B::Corrupt),
            b("equivocate", B::Equivocate),
            b("invalid_signature", B::InvalidSignature),
            b("replay", B::Replay),
            b("timing_attack", B::TimingAttack),
            b(
                "coalition",
                B::Coalition {
                    value: ATTACKED.into(),
                },
            ),
            b("adaptive", B::Adaptive),
            Self {
                name: "partition",
                fault: NemesisFault::Partition,
            },
        ]
    }

    fn spec(&self, id: &str, honest: &[AgentId], faulty: &[AgentId]) -> FaultSpec {
        let fault = match &self.fault {
            NemesisFault::Behaviour(behaviour) => FaultKind::Agents {
                agents: faulty.to_vec(),
                behaviour: behaviour.clone(),
            },
            NemesisFault::Partition => FaultKind::Partition {
                groups: vec![honest.to_vec(), faulty.to_vec()],
                flap_ms: None,
            },
        };
        FaultSpec {
            v: PROTOCOL_VERSION,
            id: Some(id.into()),
            fault,
            start_after_ms: 0,
            duration_ms: None,
        }
    }
}

/// Within the algorithm's tolerance, or one faulty agent beyond it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    WithinF,
    BeyondF,
}

/// How a cell ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Decided what the honest agents wanted.
    Correct,
    /// Ended without a decision (`no_decision` or `failed`).
    NoDecision,
    /// Beyond its tolerance a ballot-counting algorithm decided the faulty majority's value:
    /// that is its documented semantics, not a safety violation.
    Outvoted,
    /// A decision the algorithm promises never to make.
    Unsafe,
    /// No result within the wait (a lost task; the history check says so too).
    NoResult,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Correct => "correct",
            Self::NoDecision => "no decision",
            Self::Outvoted => "outvoted",
            Self::Unsafe => "UNSAFE",
            Self::NoResult => "NO RESULT",
        }
    }
}

/// One cell of the matrix.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub algorithm: Algorithm,
    pub nemesis: &'static str,
    pub load: Load,
    pub faulty: usize,
    pub task_id: String,
    pub verdict: Verdict,
    pub status: Option<Status>,
    /// The decided choice or value, as text.
    pub decided: Option<String>,
    pub reason: Option<String>,
    /// Faulty agents the result names.
    pub detected: usize,
    /// Honest agents the result names as faulty.
    pub false_positives: usize,
    /// From submission to the result arriving at the client.
    pub time_to_result_ms: Option<u64>,
    pub rounds: u32,
}

impl Cell {
    fn judge(
        algorithm: Algorithm,
        load: Load,
        faulty: &[AgentId],
        result: Option<&TaskResult>,
    ) -> (Verdict, usize, usize) {
        let Some(result) = result else {
            return (Verdict::NoResult, 0, 0);
        };
        let detected = result
            .faulty_detected
            .iter()
            .filter(|f| faulty.contains(&f.agent_id))
            .count();
        let false_positives = result.faulty_detected.len() - detected;
        let verdict = match (&result.status, &result.outcome) {
            (Status::Decided, Some(outcome)) if algorithm.honest(outcome) => Verdict::Correct,
            (Status::Decided, _) if load == Load::BeyondF && !algorithm.byzantine_safe() => {
                Verdict::Outvoted
            }
            (Status::Decided, _) => Verdict::Unsafe,
            _ => Verdict::NoDecision,
        };
        (verdict, detected, false_positives)
    }

    /// A safety violation: a decision the algorithm promises not to make.
    pub fn unsafe_(&self) -> bool {
        self.verdict == Verdict::Unsafe
    }

    /// Within tolerance and still not decided correctly: a liveness miss.
    pub fn missed(&self) -> bool {
        self.load == Load::WithinF && self.verdict != Verdict::Correct
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub algorithms: Vec<Algorithm>,
    pub nemeses: Vec<Nemesis>,
    /// Cells run at once (each on its own agents).
    pub parallel: usize,
    /// Kill -9 one coordinator replica during every batch and restart it after.
    pub kill_coordinators: bool,
    pub stack_name: String,
}

impl Plan {
    pub fn full() -> Self {
        Self {
            algorithms: Algorithm::ALL.to_vec(),
            nemeses: Nemesis::all(),
            parallel: 12,
            kill_coordinators: true,
            stack_name: "chaos".into(),
        }
    }

    fn cells(&self) -> Vec<(Algorithm, Nemesis, Load)> {
        let mut cells = Vec::new();
        for &algorithm in &self.algorithms {
            for load in [Load::WithinF, Load::BeyondF] {
                for nemesis in &self.nemeses {
                    cells.push((algorithm, nemesis.clone(), load));
                }
            }
        }
        cells
    }

    fn agents(&self) -> usize {
        self.cells().len() * ELECTORATE
    }
}

/// Appends every result published on `mabeam.results.>` to the history, from a subscription
/// the server has confirmed (so no result of a later submission can slip past it).
async fn record_results(
    client: &async_nats::Client,
    history: Arc<Mutex<Vec<Event>>>,
    started: Instant,
) -> tokio::task::JoinHandle<()> {
    let mut sub = client
        .subscribe(subjects::RESULTS_ALL)
        .await
        .expect("subscribe to every result");
    mabeam_runtime::nats::confirm_subscriptions(client, Duration::from_secs(5))
        .await
        .expect("results subscription confirmed");
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Ok(ct) = reply::content_type(msg.headers.as_ref()) else {
                continue;
            };
            if let Ok(result) = decode::<TaskResult>(ct, &msg.payload, &Limits::default()) {
                history.lock().expect("history").push(Event::Result {
                    source: Source::Published,
                    at_ms: elapsed_ms(started),
                    result: Box::new(result),
                });
            }
        }
    })
}

/// When each `session_resumed` event arrived: a surviving replica took over a session.
async fn record_resumptions(
    client: &async_nats::Client,
) -> (Arc<Mutex<Vec<Instant>>>, tokio::task::JoinHandle<()>) {
    let mut sub = client
        .subscribe(subjects::event(
            mabeam_protocol::telemetry::Service::Coordinator,
            "session_resumed",
        ))
        .await
        .expect("subscribe to resumptions");
    mabeam_runtime::nats::confirm_subscriptions(client, Duration::from_secs(5))
        .await
        .expect("resumption subscription confirmed");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let task = tokio::spawn(async move {
        while sub.next().await.is_some() {
            sink.lock().expect("resumptions").push(Instant::now());
        }
    });
    (seen, task)
}

/// Coordinator failover, measured from outside: from each kill -9 to every session a
/// survivor resumed after it (before the next kill).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Failover {
    pub sessions_resumed: usize,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
    pub max_ms: Option<u64>,
}

impl Failover {
    fn measure(kills: &[Instant], resumed: &[Instant]) -> Self {
        let mut gaps: Vec<u64> =
            resumed
                .iter()
                .filter_map(|r| {
                    kills.iter().rev().find(|k| *k <= r).map(|k| {
                        u64::try_from(r.duration_since(*k).as_millis()).unwrap_or(u64::MAX)
                    })
                })
                .collect();
        gaps.sort_unstable();
        let at = |q: f64| {
            (!gaps.is_empty()).then(|| {
                let i = ((q * gaps.len() as f64).ceil() as usize).clamp(1, gaps.len()) - 1;
                gaps[i]
            })
        };
        Self {
            sessions_resumed: gaps.len(),
            p50_ms: at(0.5),
            p99_ms: at(0.99),
            max_ms: gaps.last().copied(),
        }
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The stack a plan runs on: one large fleet of honest, noiseless agents (every cell takes
/// its own), two coordinator replicas, the fault-injector.
pub fn stack_options(plan: &Plan) -> StackOptions {
    StackOptions::new(&plan.stack_name)
        .coordinators(2)
        .fault_injector()
        // A thousand agents heartbeat on one connection: keep that traffic moderate.
        .with("MABEAM_HEARTBEAT_INTERVAL_MS", "1000")
        .with("MABEAM_SUSPECT_AFTER_MS", "4000")
        .with("MABEAM_FAILED_AFTER_MS", "8000")
        .with("MABEAM_LEASE_MS", &LEASE_MS.to_string())
        .with("MABEAM_RESUME_SCAN_MS", "100")
        .fleet(
            Fleet::new("chaos", plan.agents())
                .with("MABEAM_SIM_PROFILE", "consensus")
                .with("MABEAM_SIM_NOISE", "0")
                .with("MABEAM_SIM_CENTRE", &CENTRE.to_string()),
        )
}

/// Runs the plan on a stack started with [`stack_options`]; the cells and the checked
/// history.
pub async fn run(stack: &mut Stack, plan: &Plan, progress: &mut dyn std::io::Write) -> Report {
    let started = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    let recorder = record_results(&stack.client, history.clone(), started).await;
    let registry = stack.agents().await;
    let mut pool: Vec<AgentId> = registry.agents.iter().map(|a| a.agent_id.clone()).collect();
    pool.sort();
    let keys: BTreeMap<AgentId, mabeam_protocol::PublicKey> = registry
        .agents
        .iter()
        .map(|a| (a.agent_id.clone(), a.public_key))
        .collect();
    let cells = plan.cells();
    assert!(
        pool.len() >= cells.len() * ELECTORATE,
        "{} agents registered, the plan needs {}",
        pool.len(),
        cells.len() * ELECTORATE
    );
    let mut electorates = pool.chunks(ELECTORATE);
    let mut planned = Vec::new();
    for (i, (algorithm, nemesis, load)) in cells.into_iter().enumerate() {
        let agents = electorates.next().expect("enough agents").to_vec();
        let faulty = match load {
            Load::WithinF => algorithm.tolerance(),
            Load::BeyondF => algorithm.tolerance() + 1,
        };
        let task_id = format!(
            "chaos-{i:03}-{}-{}-{}",
            algorithm.as_str().replace('_', "-"),
            nemesis.name.replace('_', "-"),
            if load == Load::WithinF {
                "within"
            } else {
                "beyond"
            }
        );
        planned.push((algorithm, nemesis, load, faulty, task_id, agents));
    }

    let resumed = record_resumptions(&stack.client).await;
    let mut cells = Vec::new();
    let mut kills = Vec::new();
    let batches: Vec<_> = planned
        .chunks(plan.parallel.max(1))
        .map(<[_]>::to_vec)
        .collect();
    for (b, batch) in batches.iter().enumerate() {
        let _ = writeln!(
            progress,
            "batch {}/{}: {} cells{}",
            b + 1,
            batches.len(),
            batch.len(),
            if plan.kill_coordinators {
                ", one coordinator killed -9 mid-batch"
            } else {
                ""
            }
        );
        let runs = batch
            .iter()
            .map(|(algorithm, nemesis, load, faulty, task_id, agents)| {
                run_cell(
                    stack, &history, started, *algorithm, nemesis, *load, *faulty, task_id, agents,
                )
            });
        let victim = b % stack.coordinators.len().max(1);
        let victim_pid = stack.coordinators.get(victim).and_then(crate::Service::pid);
        let kill = async {
            match victim_pid {
                Some(pid) if plan.kill_coordinators => {
                    // Mid-batch: its sessions are running and the survivor must resume them.
                    tokio::time::sleep(Duration::from_millis(700)).await;
                    let at = Instant::now();
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", &pid.to_string()])
                        .status();
                    Some(at)
                }
                _ => None,
            }
        };
        let (done, killed) = tokio::join!(futures::future::join_all(runs), kill);
        cells.extend(done);
        if let Some(at) = killed {
            // Back before the next batch, so every batch starts with two replicas.
            stack.coordinators[victim].restart().await;
            kills.push(at);
        }
    }
    // Every task once more, as a client retrying would: the answer must be the same result.
    for (algorithm, _, _, _, task_id, agents) in &planned {
        submit(stack, &history, started, task_id, *algorithm, agents).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for cell in &cells {
        if let Some(result) = stack.stored_result(&cell.task_id).await {
            history.lock().expect("history").push(Event::Result {
                source: Source::Stored,
                at_ms: elapsed_ms(started),
                result: Box::new(result),
            });
        }
    }
    recorder.abort();
    resumed.1.abort();
    let failover = Failover::measure(&kills, &resumed.0.lock().expect("resumptions"));
    let events = std::mem::take(&mut *history.lock().expect("history"));
    let check = history::check(&events, &keys);
    Report {
        cells,
        check,
        coordinator_kills: kills.len(),
        failover,
        duration_s: started.elapsed().as_secs_f64(),
        events,
    }
}

/// Publishes a task and records it as accepted once the stream acknowledged it.
async fn submit(
    stack: &Stack,
    history: &Mutex<Vec<Event>>,
    started: Instant,
    task_id: &str,
    algorithm: Algorithm,
    agents: &[AgentId],
) {
    let task = algorithm.task(task_id, agents);
    let body = serde_json::to_vec(&task).expect("json");
    stack.submit_raw(body, Some("application/json"), None).await;
    history.lock().expect("history").push(Event::Submitted {
        task_id: TaskId::new(task_id).expect("task id"),
        algorithm: algorithm.as_str().into(),
        at_ms: elapsed_ms(started),
    });
}

#[allow(clippy::too_many_arguments)]
async fn run_cell(
    stack: &Stack,
    history: &Mutex<Vec<Event>>,
    started: Instant,
    algorithm: Algorithm,
    nemesis: &Nemesis,
    load: Load,
    faulty_count: usize,
    task_id: &str,
    agents: &[AgentId],
) -> Cell {
    // The faulty agents are the last ones of the electorate.
    let (honest, faulty) = agents.split_at(agents.len() - faulty_count);
    let fault_id = format!("{task_id}-fault");
    let spec = nemesis.spec(&fault_id, honest, faulty);
    let injected: Result<mabeam_protocol::fault::FaultList, _> =
        stack.request(subjects::FAULTS_INJECT, &spec).await;
    injected.unwrap_or_else(|e| panic!("{task_id}: fault not injected: {e:?}"));
    // Fault commands travel on NATS to the agents; let them land first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut watch = stack.watch(task_id).await;
    let sent = Instant::now();
    submit(stack, history, started, task_id, algorithm, agents).await;
    let result = tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .ok()
        .flatten()
        .and_then(|msg| {
            let ct = reply::content_type(msg.headers.as_ref()).ok()?;
            decode::<TaskResult>(ct, &msg.payload, &Limits::default()).ok()
        });
    let time_to_result_ms = result.as_ref().map(|_| elapsed_ms(sent));
    let healed: Result<mabeam_protocol::fault::FaultList, _> = stack
        .request(
            subjects::FAULTS_HEAL,
            &mabeam_protocol::fault::FaultHeal {
                v: PROTOCOL_VERSION,
                id: Some(fault_id.clone()),
            },
        )
        .await;
    healed.unwrap_or_else(|e| panic!("{task_id}: fault not healed: {e:?}"));
    let (verdict, detected, false_positives) =
        Cell::judge(algorithm, load, faulty, result.as_ref());
    Cell {
        algorithm,
        nemesis: nemesis.name,
        load,
        faulty: faulty_count,
        task_id: task_id.into(),
        verdict,
        status: result.as_ref().map(|r| r.status),
        decided: result
            .as_ref()
            .and_then(|r| r.outcome.as_ref())
            .map(describe),
        reason: result.as_ref().and_then(|r| r.reason.clone()),
        detected,
        false_positives,
        time_to_result_ms,
        rounds: result.as_ref().map_or(0, |r| r.rounds),
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Choice { choice, .. } => choice.clone(),
        Outcome::Value { value, .. } => value
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect::<Vec<_>>()
            .join(","),
        other => format!("{other:?}"),
    }
}
