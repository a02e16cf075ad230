//! Full-stack test harnesses: a whole mabeam stack — nats-server (JetStream), redis-server,
//! registry, coordinator replicas, fault-injector, telemetry and agent-sim fleets — started
//! either as processes on free loopback ports ([`Harness::Processes`], from the binaries in
//! the cargo target directory or `MABEAM_BIN_DIR`) or as containers on a private Docker
//! network ([`Harness::Containers`], testcontainers, images from `make images`). Tests are
//! written once against [`Stack`] and run on both; everything is torn down on drop.
//!
//! Each service logs to `target/e2e-logs/<stack>/<name>.log` (containers:
//! `<stack>-containers/`), kept after the run for post-mortems.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod chaos;
mod containers;
mod processes;

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

pub use containers::{ServiceContainer, Unavailable};
use mabeam_protocol::{
    codec::{decode, encode, ContentType, Message},
    fault::{AgentBehaviour, FaultHeal, FaultKind, FaultList, FaultSpec},
    registry::{AgentList, AgentQuery},
    session::{SessionQuery, SessionView},
    subjects,
    task::Priority,
    AgentId, ErrorReply, Limits, TaskId, TaskResult, PROTOCOL_VERSION,
};
use mabeam_runtime::reply;
pub use processes::{bin_dir, ServiceProcess};

pub(crate) fn logs_dir(stack: &str) -> PathBuf {
    let dir = bin_dir()
        .parent()
        .map(|t| t.join("e2e-logs").join(stack))
        .expect("target dir");
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// A minimal HTTP/1.0 GET (status, body); `None` when nothing answers.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A simulated fleet to start with the stack.
#[derive(Debug, Clone)]
pub struct Fleet {
    pub name: String,
    pub agents: usize,
    pub env: BTreeMap<String, String>,
}

impl Fleet {
    /// `agents` honest agents named `<prefix>-…`.
    pub fn new(prefix: &str, agents: usize) -> Self {
        let mut env = BTreeMap::new();
        env.insert("MABEAM_SIM_AGENTS".into(), agents.to_string());
        env.insert("MABEAM_SIM_ID_PREFIX".into(), prefix.into());
        Self {
            name: format!("agent-sim-{prefix}"),
            agents,
            env,
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }
}

#[derive(Debug, Clone)]
pub struct StackOptions {
    pub name: String,
    pub coordinators: usize,
    pub fault_injector: bool,
    pub telemetry: bool,
    pub fleets: Vec<Fleet>,
    /// Extra settings for every service.
    pub env: BTreeMap<String, String>,
    /// Settings for one service process, by name (`registry`, `coordinator-0`, …).
    pub service_env: BTreeMap<String, BTreeMap<String, String>>,
    /// User, password and inbox prefix of the test's own NATS client, when NATS wants them.
    pub client_auth: Option<(String, String, String)>,
}

impl StackOptions {
    pub fn new(name: &str) -> Self {
        let mut env = BTreeMap::new();
        // Short TTLs so liveness tests and failover run in seconds.
        env.insert("MABEAM_HEARTBEAT_INTERVAL_MS".into(), "300".into());
        env.insert("MABEAM_SUSPECT_AFTER_MS".into(), "1500".into());
        env.insert("MABEAM_FAILED_AFTER_MS".into(), "3000".into());
        env.insert("MABEAM_LEASE_MS".into(), "600".into());
        env.insert("MABEAM_RESUME_SCAN_MS".into(), "100".into());
        env.insert("MABEAM_DRAIN_TIMEOUT_MS".into(), "1000".into());
        Self {
            name: name.into(),
            coordinators: 1,
            fault_injector: false,
            telemetry: false,
            fleets: Vec::new(),
            env,
            service_env: BTreeMap::new(),
            client_auth: None,
        }
    }

    pub fn coordinators(mut self, n: usize) -> Self {
        self.coordinators = n;
        self
    }

    pub fn fault_injector(mut self) -> Self {
        self.fault_injector = true;
        self
    }

    pub fn telemetry(mut self) -> Self {
        self.telemetry = true;
        self
    }

    pub fn fleet(mut self, fleet: Fleet) -> Self {
        self.fleets.push(fleet);
        self
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// How many agents the fleets run together.
    pub fn agents(&self) -> usize {
        self.fleets.iter().map(|f| f.agents).sum()
    }

    /// A setting for one service only (its name: `registry`, `coordinator-0`, …).
    pub fn service_with(mut self, service: &str, key: &str, value: &str) -> Self {
        self.service_env
            .entry(service.into())
            .or_default()
            .insert(key.into(), value.into());
        self
    }

    /// Credentials of the test's own NATS client.
    pub fn client_auth(mut self, user: &str, password: &str, inbox_prefix: &str) -> Self {
        self.client_auth = Some((user.into(), password.into(), inbox_prefix.into()));
        self
    }

    /// Every setting of one service: the stack's, then the service's own.
    fn env_for(&self, service: &str) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        env.extend(self.service_env.get(service).cloned().unwrap_or_default());
        env
    }

    /// The test's own NATS connection options.
    fn client_options(&self) -> async_nats::ConnectOptions {
        match &self.client_auth {
            Some((user, password, inbox)) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
                    .custom_inbox_prefix(inbox)
            }
            None => async_nats::ConnectOptions::new(),
        }
    }
}

/// Which harness runs a stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Harness {
    /// Child processes of the test on loopback ports.
    Processes,
    /// Containers on a private Docker network (testcontainers).
    Containers,
}

impl Harness {
    pub fn name(self) -> &'static str {
        match self {
            Self::Processes => "processes",
            Self::Containers => "containers",
        }
    }
}

/// One running service, whichever harness started it.
#[derive(Debug)]
pub enum Service {
    Process(ServiceProcess),
    Container(Box<ServiceContainer>),
}

impl Service {
    pub fn name(&self) -> &str {
        match self {
            Self::Process(p) => &p.name,
            Self::Container(c) => &c.name,
        }
    }

    /// Its `/metrics` `/healthz` `/readyz` address, reachable from the test.
    pub fn http(&self) -> SocketAddr {
        match self {
            Self::Process(p) => p.http,
            Self::Container(c) => c.http,
        }
    }

    /// The process id on this host: processes only (a container's pid belongs to the engine).
    pub fn pid(&self) -> Option<u32> {
        match self {
            Self::Process(p) => p.pid(),
            Self::Container(_) => None,
        }
    }

    pub fn is_ready(&self) -> bool {
        matches!(http_get(self.http(), "/readyz"), Some((200, _)))
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(self.http(), "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// SIGKILL: no goodbye, leases left to expire.
    pub async fn kill(&mut self) {
        match self {
            Self::Process(p) => p.kill(),
            Self::Container(c) => c.kill().await,
        }
    }

    /// SIGTERM and a graceful exit within `timeout` (then SIGKILL); true when it exited in time.
    pub async fn terminate(&mut self, timeout: Duration) -> bool {
        match self {
            Self::Process(p) => tokio::task::block_in_place(|| p.terminate(timeout).is_some()),
            Self::Container(c) => c.terminate(timeout).await,
        }
    }

    /// Where its output goes (kept after the run).
    pub fn log_path(&self) -> &Path {
        match self {
            Self::Process(p) => p.log_path(),
            Self::Container(c) => &c.log,
        }
    }

    /// Starts it again (after a kill, or killing it first) and waits until it is ready.
    pub async fn restart(&mut self) {
        match self {
            Self::Process(p) => tokio::task::block_in_place(|| p.restart()),
            Self::Container(c) => c.restart().await,
        }
    }

    /// Cuts it off from NATS and Redis: its container leaves the network, or its process
    /// is stopped (SIGSTOP) — either way nothing it sends arrives and nothing reaches it.
    pub async fn isolate(&mut self) {
        match self {
            Self::Process(p) => p.pause(),
            Self::Container(c) => c.isolate().await,
        }
    }

    pub async fn rejoin(&mut self) {
        match self {
            Self::Process(p) => p.resume(),
            Self::Container(c) => c.rejoin().await,
        }
    }
}

#[derive(Debug)]
enum Infra {
    Processes(mabeam_testkit::Infra),
    Containers(Box<containers::Infra>),
}

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    pub harness: Harness,
    pub registry: Service,
    pub coordinators: Vec<Service>,
    pub fault_injector: Option<Service>,
    pub telemetry: Option<Service>,
    pub fleets: Vec<Service>,
    /// Address of the fault proxy in front of NATS, when the injector runs (as the services
    /// reach it: a loopback port, or a host name on the containers' network).
    pub nats_proxy: Option<String>,
    pub redis_proxy: Option<String>,
    /// NATS and Redis as the test reaches them.
    pub nats_url: String,
    pub redis_url: String,
    pub client: async_nats::Client,
    infra: Infra,
}

impl Stack {
    /// Starts a stack with the process harness.
    pub async fn start(opts: StackOptions) -> Self {
        let infra = tokio::task::spawn_blocking(mabeam_testkit::Infra::start)
            .await
            .expect("infra");
        Self::start_with_infra(infra, opts).await
    }

    /// Starts the services as processes on servers the test set up itself (config files,
    /// ACL users).
    pub async fn start_with_infra(infra: mabeam_testkit::Infra, opts: StackOptions) -> Self {
        let expected = opts.agents();
        let stack = processes::start(infra, opts).await;
        stack.wait_agents(expected, Duration::from_secs(30)).await;
        stack
    }

    /// Starts a stack with the given harness. `None` when the container harness cannot run
    /// here (no Docker engine, images not built): the reason is printed, so the skip shows in
    /// the test output. With `MABEAM_REQUIRE_DOCKER=1` (as `make test` sets) that is a
    /// failure instead.
    pub async fn start_on(harness: Harness, opts: StackOptions) -> Option<Self> {
        match harness {
            Harness::Processes => Some(Self::start(opts).await),
            Harness::Containers => {
                let expected = opts.agents();
                let name = opts.name.clone();
                match containers::start(opts).await {
                    Ok(stack) => {
                        stack.wait_agents(expected, Duration::from_secs(60)).await;
                        Some(stack)
                    }
                    Err(Unavailable(why)) => {
                        assert!(
                            std::env::var("MABEAM_REQUIRE_DOCKER").as_deref() != Ok("1"),
                            "{name}: the container harness must run here (MABEAM_REQUIRE_DOCKER=1) but cannot: {why}"
                        );
                        // Written to the stderr handle, not with eprintln!, so that the test
                        // runner's capture does not hide the skip of a passing test.
                        let _ = writeln!(
                            std::io::stderr().lock(),
                            "SKIPPED {name} on containers: {why}"
                        );
                        None
                    }
                }
            }
        }
    }

    /// Makes Redis stop answering without losing its data (SIGSTOP or `docker pause`).
    pub async fn pause_redis(&mut self) {
        match &mut self.infra {
            Infra::Processes(i) => i.redis.pause(),
            Infra::Containers(i) => i.redis.pause().await,
        }
    }

    pub async fn resume_redis(&mut self) {
        match &mut self.infra {
            Infra::Processes(i) => i.redis.resume(),
            Infra::Containers(i) => i.redis.resume().await,
        }
    }

    /// Kills nats-server -9 (its JetStream data stays). Process harness only: a restarted
    /// container would come back on another host port.
    pub fn kill_nats(&mut self) {
        match &mut self.infra {
            Infra::Processes(i) => tokio::task::block_in_place(|| i.nats.stop()),
            Infra::Containers(_) => panic!("kill_nats: process harness only"),
        }
    }

    /// Starts nats-server again on the same port, with the same JetStream directory.
    pub fn start_nats(&mut self) {
        match &mut self.infra {
            Infra::Processes(i) => tokio::task::block_in_place(|| i.nats.start_again()),
            Infra::Containers(_) => panic!("start_nats: process harness only"),
        }
    }

    /// NATS's monitoring endpoint (`/varz`, `/jsz`), where the test can reach it.
    pub fn nats_monitor_url(&self) -> Option<String> {
        match &self.infra {
            Infra::Processes(i) => Some(i.nats.monitor_url()),
            Infra::Containers(_) => None,
        }
    }

    /// Every service of the stack.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        std::iter::once(&self.registry)
            .chain(&self.coordinators)
            .chain(&self.fault_injector)
            .chain(&self.telemetry)
            .chain(&self.fleets)
    }

    /// Sends a request in msgpack and decodes the reply (or the error reply).
    pub async fn request<Q: Message, R: Message>(
        &self,
        subject: &str,
        query: &Q,
    ) -> Result<R, ErrorReply> {
        let body = encode(ContentType::MsgPack, query).expect("encode");
        let request = async_nats::Request::new()
            .payload(body.into())
            .headers(reply::headers_for(ContentType::MsgPack))
            .timeout(Some(Duration::from_secs(5)));
        let response = self
            .client
            .send_request(subject.to_owned(), request)
            .await
            .unwrap_or_else(|e| panic!("request on {subject}: {e}"));
        if let Some(err) = reply::as_error(response.headers.as_ref(), &response.payload) {
            return Err(err);
        }
        Ok(
            decode(ContentType::MsgPack, &response.payload, &Limits::default())
                .expect("reply decodes"),
        )
    }

    pub async fn agents(&self) -> AgentList {
        self.request(
            subjects::REGISTRY_QUERY,
            &AgentQuery {
                v: PROTOCOL_VERSION,
                ..AgentQuery::default()
            },
        )
        .await
        .expect("registry query")
    }

    /// Waits until at least `n` agents are registered and eligible.
    pub async fn wait_agents(&self, n: usize, timeout: Duration) {
        let start = Instant::now();
        loop {
            let list = self.agents().await;
            let eligible = list
                .agents
                .iter()
                .filter(|a| a.status.is_eligible())
                .count();
            if eligible >= n {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "only {eligible} of {n} agents eligible after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes a task body (any encoding) on `mabeam.tasks.submit` through JetStream.
    pub async fn submit_raw(
        &self,
        body: Vec<u8>,
        content_type: Option<&str>,
        msg_id: Option<&str>,
    ) {
        self.submit_raw_on(subjects::TASKS_SUBMIT, body, content_type, msg_id)
            .await;
    }

    /// Publishes a task body (any encoding) on a task subject (normal or high priority)
    /// through JetStream.
    pub async fn submit_raw_on(
        &self,
        subject: &str,
        body: Vec<u8>,
        content_type: Option<&str>,
        msg_id: Option<&str>,
    ) {
        let js = async_nats::jetstream::new(self.client.clone());
        let mut headers = async_nats::HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert("Content-Type", ct);
        }
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        js.publish_with_headers(subject.to_owned(), headers, body.into())
            .await
            .expect("publish")
            .await
            .expect("task stream acknowledged");
    }

    /// Submits a task given as JSON, encoded as asked, on the subject of its `priority`
    /// (as a client would); returns its task id.
    pub async fn submit(&self, task: serde_json::Value, content_type: ContentType) -> TaskId {
        let id = task["task_id"]
            .as_str()
            .expect("tests name their tasks")
            .to_owned();
        let priority: Priority = task["priority"]
            .as_str()
            .map_or(Ok(Priority::Normal), str::parse)
            .expect("a valid priority");
        let subject = priority.subject();
        let body = match content_type {
            ContentType::Json => serde_json::to_vec(&task).expect("json"),
            ContentType::MsgPack => {
                let typed: mabeam_protocol::task::TaskSubmission =
                    serde_json::from_value(task).expect("a valid task");
                encode(ContentType::MsgPack, &typed).expect("msgpack")
            }
        };
        self.submit_raw_on(subject, body, Some(content_type.header_value()), None)
            .await;
        TaskId::new(id).expect("task id")
    }

    /// Puts agents under a behaviour through the fault-injector; the active faults after it.
    pub async fn inject_agent_fault(
        &self,
        id: &str,
        agents: Vec<AgentId>,
        behaviour: AgentBehaviour,
    ) -> FaultList {
        let spec = FaultSpec {
            v: PROTOCOL_VERSION,
            id: Some(id.into()),
            fault: FaultKind::Agents { agents, behaviour },
            start_after_ms: 0,
            duration_ms: None,
        };
        self.request(subjects::FAULTS_INJECT, &spec)
            .await
            .unwrap_or_else(|e| panic!("fault {id} not injected: {e:?}"))
    }

    /// Heals one fault; the active faults after it.
    pub async fn heal_fault(&self, id: &str) -> FaultList {
        let heal = FaultHeal {
            v: PROTOCOL_VERSION,
            id: Some(id.into()),
        };
        self.request(subjects::FAULTS_HEAL, &heal)
            .await
            .unwrap_or_else(|e| panic!("fault {id} not healed: {e:?}"))
    }

    /// Subscribes to a task's result subject (do this before submitting).
    pub async fn watch(&self, task: &str) -> async_nats::Subscriber {
        self.client
            .subscribe(subjects::results(&TaskId::new(task).expect("id")))
            .await
            .expect("subscribe")
    }

    /// Waits for the result on a subscription from [`Stack::watch`].
    pub async fn result(sub: &mut async_nats::Subscriber, timeout: Duration) -> TaskResult {
        use futures::StreamExt;
        let msg = tokio::time::timeout(timeout, sub.next())
            .await
            .unwrap_or_else(|_| panic!("no result within {timeout:?}"))
            .expect("subscription open");
        let ct = reply::content_type(msg.headers.as_ref()).expect("content type");
        decode(ct, &msg.payload, &Limits::default()).expect("result decodes")
    }

    /// Submits and waits for the result.
    pub async fn decide(
        &self,
        task: serde_json::Value,
        content_type: ContentType,
        timeout: Duration,
    ) -> TaskResult {
        let id = task["task_id"].as_str().expect("task id").to_owned();
        let mut sub = self.watch(&id).await;
        self.submit(task, content_type).await;
        Self::result(&mut sub, timeout).await
    }

    pub async fn session(&self, task: &str) -> Result<SessionView, ErrorReply> {
        self.request(
            subjects::SESSIONS_GET,
            &SessionQuery {
                v: PROTOCOL_VERSION,
                task_id: TaskId::new(task).expect("id"),
            },
        )
        .await
    }

    /// The result stored in Redis.
    pub async fn stored_result(&self, task: &str) -> Option<TaskResult> {
        let client = redis::Client::open(self.redis_url.as_str()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(format!("mabeam:result:{task}"))
            .query_async(&mut conn)
            .await
            .expect("GET");
        bytes.map(|b| rmp_decode(&b))
    }
}

fn rmp_decode(bytes: &[u8]) -> TaskResult {
    decode(ContentType::MsgPack, bytes, &Limits::default()).expect("stored result decodes")
}
