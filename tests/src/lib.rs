//! The process harness: a whole mabeam stack from real binaries — nats-server (JetStream),
//! redis-server, registry, coordinator replicas, fault-injector, telemetry and agent-sim
//! fleets — on free loopback ports, each with its own data, torn down on drop.
//!
//! Service binaries are taken from the cargo target directory the test runs from (or
//! `MABEAM_BIN_DIR`); `make test` builds them first. Each process logs to
//! `target/e2e-logs/<stack>/<name>.log`, kept after the run for post-mortems.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mabeam_protocol::{
    codec::{decode, encode, ContentType, Message},
    registry::{AgentList, AgentQuery},
    session::{SessionQuery, SessionView},
    subjects, ErrorReply, Limits, TaskId, TaskResult, PROTOCOL_VERSION,
};
use mabeam_runtime::reply;
use mabeam_testkit::{free_port, Infra};

/// Where the service binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MABEAM_BIN_DIR") {
        return dir.into();
    }
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("test binary inside target/<profile>/deps")
        .to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the services first (`cargo build --bins`, which `make test` does)",
        path.display()
    );
    path
}

fn logs_dir(stack: &str) -> PathBuf {
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

/// One service process.
#[derive(Debug)]
pub struct ServiceProcess {
    pub name: String,
    binary: String,
    env: BTreeMap<String, String>,
    pub http: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl ServiceProcess {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(binary(&self.binary))
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary));
        self.child = Some(child);
    }

    /// Waits for `/readyz` to answer 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "{} exited early with {status}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            if let Some((200, _)) = http_get(self.http, "/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "{} not ready within {timeout:?}; see {}",
            self.name,
            self.log.display()
        );
    }

    pub fn is_ready(&self) -> bool {
        matches!(http_get(self.http, "/readyz"), Some((200, _)))
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        http_get(self.http, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default()
    }

    /// SIGKILL: no goodbye, leases left to expire.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready(Duration::from_secs(20));
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.log
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
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
}

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    pub infra: Infra,
    pub registry: ServiceProcess,
    pub coordinators: Vec<ServiceProcess>,
    pub fault_injector: Option<ServiceProcess>,
    pub telemetry: Option<ServiceProcess>,
    pub fleets: Vec<ServiceProcess>,
    /// Address of the fault proxy in front of NATS, when the injector runs.
    pub nats_proxy: Option<String>,
    pub redis_proxy: Option<String>,
    pub client: async_nats::Client,
}

impl Stack {
    pub async fn start(opts: StackOptions) -> Self {
        let infra = tokio::task::spawn_blocking(Infra::start)
            .await
            .expect("infra");
        let logs = logs_dir(&opts.name);
        let base_env = |name: &str| {
            let mut env = infra.env();
            env.insert("MABEAM_LOG".into(), "info".into());
            env.insert("MABEAM_LOG_FORMAT".into(), "json".into());
            env.insert("MABEAM_INSTANCE".into(), name.into());
            env.extend(opts.env.clone());
            env.insert(
                "MABEAM_HTTP_ADDR".into(),
                format!("127.0.0.1:{}", free_port()),
            );
            env
        };
        let process = |name: &str, binary: &str, extra: &BTreeMap<String, String>| {
            let mut env = base_env(name);
            env.extend(extra.clone());
            let http = env["MABEAM_HTTP_ADDR"].parse().expect("addr");
            let log = logs.join(format!("{name}.log"));
            let _ = std::fs::remove_file(&log);
            let mut p = ServiceProcess {
                name: name.into(),
                binary: binary.into(),
                env,
                http,
                log,
                child: None,
            };
            p.spawn();
            p
        };
        let none = BTreeMap::new();
        let mut registry = process("registry", "mabeam-registry", &none);
        let mut coordinators: Vec<_> = (0..opts.coordinators)
            .map(|i| process(&format!("coordinator-{i}"), "mabeam-coordinator", &none))
            .collect();
        let (mut fault_injector, nats_proxy, redis_proxy) = if opts.fault_injector {
            let nats_proxy = format!("127.0.0.1:{}", free_port());
            let redis_proxy = format!("127.0.0.1:{}", free_port());
            let extra: BTreeMap<String, String> = [
                ("MABEAM_PROXY_NATS_LISTEN", nats_proxy.clone()),
                (
                    "MABEAM_PROXY_NATS_UPSTREAM",
                    format!("127.0.0.1:{}", infra.nats.port()),
                ),
                ("MABEAM_PROXY_REDIS_LISTEN", redis_proxy.clone()),
                (
                    "MABEAM_PROXY_REDIS_UPSTREAM",
                    format!("127.0.0.1:{}", infra.redis.port()),
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            (
                Some(process("fault-injector", "mabeam-fault-injector", &extra)),
                Some(nats_proxy),
                Some(redis_proxy),
            )
        } else {
            (None, None, None)
        };
        let mut telemetry = opts
            .telemetry
            .then(|| process("telemetry", "mabeam-telemetry", &none));
        let ready = Duration::from_secs(30);
        registry.wait_ready(ready);
        for c in &mut coordinators {
            c.wait_ready(ready);
        }
        if let Some(f) = &mut fault_injector {
            f.wait_ready(ready);
        }
        if let Some(t) = &mut telemetry {
            t.wait_ready(ready);
        }
        let mut fleets: Vec<_> = opts
            .fleets
            .iter()
            .map(|f| process(&f.name, "mabeam-agent-sim", &f.env))
            .collect();
        for f in &mut fleets {
            f.wait_ready(ready);
        }
        let client = async_nats::connect(infra.nats.url())
            .await
            .expect("test client");
        let stack = Self {
            infra,
            registry,
            coordinators,
            fault_injector,
            telemetry,
            fleets,
            nats_proxy,
            redis_proxy,
            client,
        };
        let expected: usize = opts.fleets.iter().map(|f| f.agents).sum();
        stack.wait_agents(expected, Duration::from_secs(30)).await;
        stack
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
        let js = async_nats::jetstream::new(self.client.clone());
        let mut headers = async_nats::HeaderMap::new();
        if let Some(ct) = content_type {
            headers.insert("Content-Type", ct);
        }
        if let Some(id) = msg_id {
            headers.insert("Nats-Msg-Id", id);
        }
        js.publish_with_headers(subjects::TASKS_SUBMIT, headers, body.into())
            .await
            .expect("publish")
            .await
            .expect("task stream acknowledged");
    }

    /// Submits a task given as JSON, encoded as asked; returns its task id.
    pub async fn submit(&self, task: serde_json::Value, content_type: ContentType) -> TaskId {
        let id = task["task_id"]
            .as_str()
            .expect("tests name their tasks")
            .to_owned();
        let body = match content_type {
            ContentType::Json => serde_json::to_vec(&task).expect("json"),
            ContentType::MsgPack => {
                let typed: mabeam_protocol::task::TaskSubmission =
                    serde_json::from_value(task).expect("a valid task");
                encode(ContentType::MsgPack, &typed).expect("msgpack")
            }
        };
        self.submit_raw(body, Some(content_type.header_value()), None)
            .await;
        TaskId::new(id).expect("task id")
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
        let client = redis::Client::open(self.infra.redis.url()).expect("redis url");
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
