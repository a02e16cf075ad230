//! What every scenario needs from a running stack: in-process agents (SDK) under a unique id
//! prefix, tasks submitted through JetStream and their results, faults through the
//! fault-injector, and the events services publish.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use async_nats::Client;
use futures::StreamExt as _;
use mabeam_agent::{llm::LlmClient, tasks::TaskClient, Agent, AgentBuilder, AgentError, Decider};
use mabeam_ctl::client;
use mabeam_protocol::{
    fault::{FaultHeal, FaultKind, FaultList, FaultSpec},
    registry::{AgentList, AgentQuery},
    subjects,
    task::TaskSubmission,
    telemetry::{EventKind, TelemetryEvent},
    AgentId, ContentType, Limits, TaskResult, PROTOCOL_VERSION,
};
use mabeam_runtime::reply;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ScenarioError;

/// Events kept for the checks (the oldest are dropped beyond this).
const MAX_EVENTS: usize = 200_000;
/// Extra wait for a result beyond the task's own timeout.
const RESULT_MARGIN: Duration = Duration::from_secs(10);

/// One telemetry event as seen by the scenario, with the local time it arrived.
#[derive(Debug, Clone)]
pub struct SeenEvent {
    pub at: Instant,
    pub event: TelemetryEvent,
}

/// Connection to a running stack plus what the scenarios share.
#[derive(Debug)]
pub struct Ctx {
    pub client: Client,
    tasks: TaskClient,
    /// Unique per run: every agent id, task id and fault id starts with it.
    pub prefix: String,
    /// Heartbeat interval of the agents the scenarios start (below the registry's suspect TTL).
    pub heartbeat: Duration,
    pub request_timeout: Duration,
    /// The LLM endpoint, when one is configured (`MABEAM_LLM_URL`).
    pub llm: Option<Arc<LlmClient>>,
    events: Arc<Mutex<Vec<SeenEvent>>>,
    event_counts: Arc<Mutex<BTreeMap<(String, String), u64>>>,
    listener: JoinHandle<()>,
    next_task: AtomicU64,
    /// The stack's processes, when known (the test harness): memory is read from them
    /// instead of from every process on the host with a stack name.
    pub stack_pids: Option<Vec<u32>>,
    /// When the context started following events.
    pub started: Instant,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Ctx {
    /// Uses `client` (already connected); starts following `mabeam.events.>`.
    pub async fn new(client: Client, heartbeat: Duration) -> Result<Self, ScenarioError> {
        let suffix: u32 = rand::random();
        let prefix = format!(
            "scn{:x}{:04x}",
            mabeam_runtime::now_ms() % 0xffff_ffff,
            suffix & 0xffff
        );
        let mut sub = client
            .subscribe(subjects::EVENTS_ALL)
            .await
            .map_err(|e| ScenarioError::Nats(e.to_string()))?;
        let events = Arc::new(Mutex::new(Vec::new()));
        let counts = Arc::new(Mutex::new(BTreeMap::new()));
        let (ev, co) = (events.clone(), counts.clone());
        let listener = tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let Ok((event, _)) = reply::decode_message::<TelemetryEvent>(
                    m.headers.as_ref(),
                    &m.payload,
                    &Limits::default(),
                ) else {
                    continue;
                };
                let key = (
                    event.service.as_str().to_owned(),
                    event.event.name().to_owned(),
                );
                *lock(&co).entry(key).or_insert(0) += 1;
                let mut list = lock(&ev);
                if list.len() >= MAX_EVENTS {
                    list.drain(..MAX_EVENTS / 2);
                }
                list.push(SeenEvent {
                    at: Instant::now(),
                    event,
                });
            }
        });
        let request_timeout = Duration::from_secs(5);
        Ok(Self {
            tasks: TaskClient::with_request_timeout(client.clone(), request_timeout),
            client,
            prefix,
            heartbeat,
            request_timeout,
            llm: None,
            events,
            event_counts: counts,
            listener,
            next_task: AtomicU64::new(0),
            stack_pids: None,
            started: Instant::now(),
        })
    }

    /// Connects to `MABEAM_NATS_URL` (default `nats://127.0.0.1:4222`) and reads the LLM
    /// settings; agents heartbeat every `MABEAM_HEARTBEAT_INTERVAL_MS` (default 2000).
    pub async fn from_env() -> Result<Self, ScenarioError> {
        let url =
            std::env::var("MABEAM_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
        let global = client::Global {
            nats_url: url,
            timeout: Duration::from_secs(5),
            json: false,
            nats_creds: std::env::var_os("MABEAM_NATS_CREDS").map(Into::into),
            nats_token: std::env::var("MABEAM_NATS_TOKEN").ok(),
            nats_user: std::env::var("MABEAM_NATS_USER").ok(),
            nats_password: std::env::var("MABEAM_NATS_PASSWORD").ok(),
            nats_tls_ca: std::env::var_os("MABEAM_NATS_TLS_CA").map(Into::into),
            nats_tls_cert: std::env::var_os("MABEAM_NATS_TLS_CERT").map(Into::into),
            nats_tls_key: std::env::var_os("MABEAM_NATS_TLS_KEY").map(Into::into),
            nats_inbox_prefix: std::env::var("MABEAM_NATS_INBOX_PREFIX")
                .unwrap_or_else(|_| "_INBOX".into()),
        };
        let client = client::connect(&global).await?;
        let heartbeat = std::env::var("MABEAM_HEARTBEAT_INTERVAL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(Duration::from_secs(2), Duration::from_millis);
        let mut ctx = Self::new(client, heartbeat).await?;
        let llm = mabeam_agent::llm::LlmConfig::from_process_env()
            .map_err(|e| ScenarioError::Task(e.to_string()))?;
        ctx.llm = match llm {
            Some(config) => Some(Arc::new(
                LlmClient::new(config).map_err(|e| ScenarioError::Task(e.to_string()))?,
            )),
            None => None,
        };
        Ok(ctx)
    }

    /// The task client on this connection.
    pub fn tasks(&self) -> &TaskClient {
        &self.tasks
    }

    /// `<prefix>-<name>`.
    pub fn id(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// An agent builder for `<prefix>-<name>` with the scenario's heartbeat.
    pub fn agent(&self, name: &str, kind: &str) -> AgentBuilder<()> {
        Agent::builder(self.id(name), kind)
            .heartbeat_interval(self.heartbeat)
            .seed(crate::report::stable_hash(name))
    }

    /// Runs `agents` on this connection and waits until the registry lists them all as
    /// eligible.
    pub async fn spawn<D: Decider>(&self, agents: Vec<Agent<D>>) -> Result<Group, ScenarioError> {
        let token = CancellationToken::new();
        let ids: Vec<AgentId> = agents.iter().map(|a| a.id().clone()).collect();
        let handles = agents
            .into_iter()
            .map(|a| tokio::spawn(a.run(self.client.clone(), token.clone())))
            .collect();
        let group = Group {
            ids,
            token,
            handles,
        };
        self.wait_eligible(&group.ids, Duration::from_secs(60))
            .await?;
        Ok(group)
    }

    /// Polls the registry until every agent of `ids` is eligible.
    pub async fn wait_eligible(
        &self,
        ids: &[AgentId],
        patience: Duration,
    ) -> Result<(), ScenarioError> {
        let started = Instant::now();
        loop {
            let missing = self.not_eligible(ids).await?;
            if missing.is_empty() {
                return Ok(());
            }
            if started.elapsed() >= patience {
                return Err(ScenarioError::NotEligible {
                    missing: missing.into_iter().take(10).collect(),
                    waited_ms: patience.as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The agents of `ids` the registry does not list as eligible.
    pub async fn not_eligible(&self, ids: &[AgentId]) -> Result<Vec<String>, ScenarioError> {
        let mut eligible = BTreeSet::new();
        // Bounded queries keep each reply well under the message size limit.
        for chunk in ids.chunks(500) {
            let query = AgentQuery {
                agent_ids: chunk.to_vec(),
                ..AgentQuery::default()
            };
            let list: AgentList = client::request(
                &self.client,
                subjects::REGISTRY_QUERY,
                &query,
                self.request_timeout,
            )
            .await?;
            eligible.extend(
                list.agents
                    .into_iter()
                    .filter(|a| a.status.is_eligible())
                    .map(|a| a.agent_id.to_string()),
            );
        }
        Ok(ids
            .iter()
            .map(ToString::to_string)
            .filter(|id| !eligible.contains(id))
            .collect())
    }

    /// Submits `task` (a `TaskSubmission` as JSON; `task_id` defaults to
    /// `<prefix>-t<n>`) and waits for its result.
    pub async fn run_task(&self, mut task: serde_json::Value) -> Result<Run, ScenarioError> {
        if task.get("task_id").is_none() {
            let n = self.next_task.fetch_add(1, Ordering::Relaxed);
            task["task_id"] = self.id(&format!("t{n}")).into();
        }
        let task: TaskSubmission =
            serde_json::from_value(task).map_err(|e| ScenarioError::Task(e.to_string()))?;
        let started = Instant::now();
        let waited = Duration::from_millis(task.timeout_ms.unwrap_or(30_000)) + RESULT_MARGIN;
        let result = self
            .tasks
            .decide(task, ContentType::MsgPack, waited)
            .await?;
        Ok(Run {
            result,
            elapsed: started.elapsed(),
            submitted: started,
        })
    }

    /// Injects a fault with id `<prefix>-<name>`; healed after `duration_ms` when given.
    pub async fn inject(
        &self,
        name: &str,
        fault: FaultKind,
        duration_ms: Option<u64>,
    ) -> Result<String, ScenarioError> {
        let id = self.id(name);
        let spec = FaultSpec {
            v: PROTOCOL_VERSION,
            id: Some(id.clone()),
            fault,
            start_after_ms: 0,
            duration_ms,
        };
        let _: FaultList = client::request(
            &self.client,
            subjects::FAULTS_INJECT,
            &spec,
            self.request_timeout,
        )
        .await?;
        Ok(id)
    }

    pub async fn heal(&self, id: &str) -> Result<(), ScenarioError> {
        let heal = FaultHeal {
            v: PROTOCOL_VERSION,
            id: Some(id.to_owned()),
        };
        let _: FaultList = client::request(
            &self.client,
            subjects::FAULTS_HEAL,
            &heal,
            self.request_timeout,
        )
        .await?;
        Ok(())
    }

    /// How many tasks [`run_task`](Self::run_task) submitted.
    pub fn tasks_submitted(&self) -> u64 {
        self.next_task.load(Ordering::Relaxed)
    }

    /// Resident memory of the stack's processes by name (see [`stack_rss_bytes`]).
    pub fn stack_rss(&self) -> BTreeMap<String, u64> {
        match &self.stack_pids {
            Some(pids) => rss_of_pids(pids),
            None => stack_rss_bytes(),
        }
    }

    /// Events received since `since` (oldest first).
    pub fn events_since(&self, since: Instant) -> Vec<SeenEvent> {
        lock(&self.events)
            .iter()
            .filter(|e| e.at >= since)
            .cloned()
            .collect()
    }

    /// How many events of each (service, kind) arrived since the context started.
    pub fn event_counts(&self) -> BTreeMap<(String, String), u64> {
        lock(&self.event_counts).clone()
    }

    /// The first detection event (rejected ballot or equivocation) naming one of `agents`
    /// after `since`, and how long after `since` it came.
    pub fn first_detection(&self, since: Instant, agents: &BTreeSet<AgentId>) -> Option<Duration> {
        self.events_since(since).into_iter().find_map(|e| {
            let agent = match &e.event.event {
                EventKind::BallotRejected { agent_id, .. }
                | EventKind::EquivocationDetected { agent_id, .. } => agent_id,
                _ => return None,
            };
            agents.contains(agent).then(|| e.at - since)
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A finished task as the scenario saw it.
#[derive(Debug, Clone)]
pub struct Run {
    pub result: TaskResult,
    /// From publishing to receiving the result.
    pub elapsed: Duration,
    pub submitted: Instant,
}

impl Run {
    pub fn decided(&self) -> bool {
        self.result.status == mabeam_protocol::Status::Decided
    }

    /// The winning option, if a choice was decided.
    pub fn choice(&self) -> Option<&str> {
        self.result.outcome.as_ref().and_then(|o| o.choice())
    }

    /// The decided value (iterative refinement, negotiation).
    pub fn value(&self) -> Option<&[f64]> {
        match self.result.outcome.as_ref()? {
            mabeam_protocol::Outcome::Value { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn seconds(&self) -> f64 {
        self.elapsed.as_secs_f64()
    }

    /// The agents the session reported as faulty.
    pub fn detected(&self) -> BTreeSet<AgentId> {
        self.result
            .faulty_detected
            .iter()
            .map(|f| f.agent_id.clone())
            .collect()
    }
}

/// Agents running in this process; stopped (and deregistered) by [`Group::stop`].
#[derive(Debug)]
pub struct Group {
    pub ids: Vec<AgentId>,
    token: CancellationToken,
    handles: Vec<JoinHandle<Result<(), AgentError>>>,
}

impl Group {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Stops every agent and waits (a few seconds at most) for them to deregister.
    pub async fn stop(self) {
        self.token.cancel();
        let all = futures::future::join_all(self.handles);
        let _ = tokio::time::timeout(Duration::from_secs(10), all).await;
    }
}

/// Resident memory of this process, in bytes (Linux; `None` elsewhere).
pub fn own_rss_bytes() -> Option<u64> {
    rss_of("/proc/self/status")
}

fn rss_of(status_path: &str) -> Option<u64> {
    let text = std::fs::read_to_string(status_path).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resident memory of the given processes by name (`comm`), in bytes.
pub fn rss_of_pids(pids: &[u32]) -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    for pid in pids {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if let Some(rss) = rss_of(&format!("/proc/{pid}/status")) {
            *total.entry(comm.trim().to_owned()).or_insert(0) += rss;
        }
    }
    total
}

/// Resident memory of the stack's processes on this host (`mabeam-*`, `nats-server`,
/// `redis-server`) by name, in bytes; empty when the stack runs elsewhere (containers, another
/// machine).
pub fn stack_rss_bytes() -> BTreeMap<String, u64> {
    let mut total = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return total;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(comm) = std::fs::read_to_string(path.join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        let wanted = comm.starts_with("mabeam-") || comm == "nats-server" || comm == "redis-server";
        // `comm` is cut at 15 characters: `mabeam-agent-si` is make run's fleet, not the stack.
        if !wanted || comm == "mabeam-scenario" || comm == "mabeam-agent-si" {
            continue;
        }
        if let Some(rss) = rss_of(&path.join("status").to_string_lossy()) {
            *total.entry(comm.to_owned()).or_insert(0) += rss;
        }
    }
    total
}
