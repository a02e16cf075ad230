//! The stack under load: either one started here from the built binaries (the process
//! harness of `mabeam-tests`), or a running one named by `MABEAM_NATS_URL` / `MABEAM_REDIS_URL`
//! (e.g. from `make run`). Agent fleets are started here in both cases.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use mabeam_protocol::{
    codec::{decode, encode, ContentType, Message},
    fault::{FaultKind, FaultList, FaultSpec},
    registry::{AgentList, AgentQuery},
    subjects, Limits, PROTOCOL_VERSION,
};
use mabeam_runtime::reply;
use mabeam_tests::{Harness, Stack, StackOptions};

use super::{
    procfs::{find_stack, Watched},
    scenario::Scenario,
};

/// What the driver needs from the stack's setup.
#[derive(Debug, Clone)]
pub struct StackSpec {
    /// Names the harness's log directory (`target/e2e-logs/<name>`).
    pub name: String,
    pub coordinators: usize,
    pub fault_injector: bool,
    /// Settings for every service, over the harness's defaults.
    pub env: Vec<(String, String)>,
}

/// A stack to drive.
#[derive(Debug)]
pub struct Target {
    pub nats_url: String,
    pub redis_url: String,
    /// NATS monitoring (`/varz`), when known.
    pub nats_monitor: Option<String>,
    pub client: async_nats::Client,
    /// Processes whose RSS and open fds are sampled.
    pub watched: Vec<Watched>,
    /// Coordinators' `/metrics` addresses, when known.
    pub coordinator_http: Vec<SocketAddr>,
    /// Keeps a stack started here alive; dropping it stops every process.
    _harness: Option<Stack>,
}

/// Where the service binaries are: `MABEAM_BIN_DIR`, else next to this executable.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("MABEAM_BIN_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|e| e.parent().map(Path::to_path_buf))
        })
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The stack to drive: the one the environment names, else one started here.
pub async fn start(spec: &StackSpec) -> anyhow::Result<Target> {
    match std::env::var("MABEAM_NATS_URL") {
        Ok(nats_url) if !nats_url.is_empty() => external(nats_url).await,
        _ => started_here(spec).await,
    }
}

async fn external(nats_url: String) -> anyhow::Result<Target> {
    let redis_url =
        std::env::var("MABEAM_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let client = async_nats::connect(&nats_url)
        .await
        .with_context(|| format!("connecting to {nats_url}"))?;
    let coordinator_http = std::env::var("MABEAM_LOAD_COORDINATOR_HTTP")
        .unwrap_or_default()
        .split(',')
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    Ok(Target {
        watched: find_stack(&nats_url, &redis_url),
        nats_monitor: std::env::var("MABEAM_NATS_MONITOR_URL").ok(),
        nats_url,
        redis_url,
        client,
        coordinator_http,
        _harness: None,
    })
}

/// A whole stack started here: as processes from the built binaries, or with
/// `HARNESS=containers` as containers from the images `make images` built. This is the one
/// place that knows the harness.
async fn started_here(spec: &StackSpec) -> anyhow::Result<Target> {
    let harness = match std::env::var("HARNESS").as_deref() {
        Ok("containers") => Harness::Containers,
        Ok("processes") | Ok("") | Err(_) => Harness::Processes,
        Ok(other) => anyhow::bail!("HARNESS={other}: expected processes or containers"),
    };
    let mut opts = StackOptions::new(&spec.name)
        .coordinators(spec.coordinators)
        .telemetry();
    if spec.fault_injector {
        opts = opts.fault_injector();
    }
    for (k, v) in &spec.env {
        opts = opts.with(k, v);
    }
    // The harness panics with the reason (a missing binary, a service that exits early).
    let stack = tokio::spawn(Stack::start_on(harness, opts))
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the stack: {e}"))?
        .ok_or_else(|| {
            anyhow::anyhow!("the container harness cannot run here (the reason is printed above)")
        })?;
    let mut watched = vec![];
    let mut add = |name: &str, pid: Option<u32>| {
        if let Some(pid) = pid {
            watched.push(Watched {
                name: name.to_owned(),
                pid,
            });
        }
    };
    add("registry", stack.registry.pid());
    for c in &stack.coordinators {
        add(c.name(), c.pid());
    }
    if let Some(f) = &stack.fault_injector {
        add("fault-injector", f.pid());
    }
    if let Some(t) = &stack.telemetry {
        add("telemetry", t.pid());
    }
    let nats_url = stack.nats_url.clone();
    let redis_url = stack.redis_url.clone();
    watched.extend(
        find_stack(&nats_url, &redis_url)
            .into_iter()
            .filter(|w| !w.name.starts_with("mabeam-")),
    );
    Ok(Target {
        nats_monitor: stack.nats_monitor_url(),
        coordinator_http: stack.coordinators.iter().map(|c| c.http()).collect(),
        client: stack.client.clone(),
        watched,
        nats_url,
        redis_url,
        _harness: Some(stack),
    })
}

/// Sends a msgpack request and decodes the reply.
pub async fn request<Q: Message, R: Message>(
    client: &async_nats::Client,
    subject: &str,
    query: &Q,
) -> anyhow::Result<R> {
    let body = encode(ContentType::MsgPack, query)?;
    let request = async_nats::Request::new()
        .payload(body.into())
        .headers(reply::headers_for(ContentType::MsgPack))
        .timeout(Some(Duration::from_secs(10)));
    let response = client
        .send_request(subject.to_owned(), request)
        .await
        .with_context(|| format!("request on {subject}"))?;
    if let Some(err) = reply::as_error(response.headers.as_ref(), &response.payload) {
        bail!("{subject}: {}: {}", err.code.as_str(), err.message);
    }
    Ok(decode(
        ContentType::MsgPack,
        &response.payload,
        &Limits::default(),
    )?)
}

/// agent-sim processes, killed on drop.
#[derive(Debug, Default)]
pub struct Fleets {
    children: Vec<(String, Child)>,
}

impl Fleets {
    pub fn watched(&self) -> Vec<Watched> {
        self.children
            .iter()
            .map(|(name, c)| Watched {
                name: name.clone(),
                pid: c.id(),
            })
            .collect()
    }

    /// Starts a fleet of `scenario.agents` agents with the scenario's prefix and capability.
    pub fn spawn(
        &mut self,
        target: &Target,
        scenario: &Scenario,
        heartbeat_ms: u64,
        logs: &Path,
    ) -> anyhow::Result<()> {
        std::fs::create_dir_all(logs)?;
        let name = format!("agent-sim-{}", scenario.name);
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let binary = bin_dir().join("mabeam-agent-sim");
        let mut cmd = Command::new(&binary);
        cmd.env_clear()
            // Credentials and TLS settings for a stack started elsewhere.
            .envs(
                std::env::vars().filter(|(k, _)| {
                    k.starts_with("MABEAM_NATS_") || k.starts_with("MABEAM_REDIS_")
                }),
            )
            .env("MABEAM_NATS_URL", &target.nats_url)
            .env("MABEAM_REDIS_URL", &target.redis_url)
            .env("MABEAM_HTTP_ADDR", "127.0.0.1:0")
            .env("MABEAM_INSTANCE", &name)
            .env("MABEAM_LOG", "warn")
            .env("MABEAM_SIM_AGENTS", scenario.agents.to_string())
            .env("MABEAM_SIM_ID_PREFIX", &scenario.name)
            .env("MABEAM_SIM_CAPABILITIES", &scenario.name)
            .env("MABEAM_SIM_NOISE", scenario.noise.to_string())
            .env("MABEAM_HEARTBEAT_INTERVAL_MS", heartbeat_ms.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().with_context(|| {
            format!(
                "starting {} (build it: cargo build --bins)",
                binary.display()
            )
        })?;
        self.children.push((name, child));
        Ok(())
    }

    /// Fails when a fleet process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, c) in &mut self.children {
            if let Some(status) = c.try_wait()? {
                bail!("{name} exited with {status}");
            }
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        for (_, mut c) in self.children.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Fleets {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the registry lists every agent of `scenario` as eligible.
pub async fn wait_agents(
    target: &Target,
    fleets: &mut Fleets,
    scenario: &Scenario,
    timeout: Duration,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let list: AgentList = request(
            &target.client,
            subjects::REGISTRY_QUERY,
            &AgentQuery {
                v: PROTOCOL_VERSION,
                capability: Some(scenario.name.clone()),
                ..AgentQuery::default()
            },
        )
        .await?;
        let eligible = list
            .agents
            .iter()
            .filter(|a| a.status.is_eligible())
            .count();
        if eligible >= scenario.agents {
            return Ok(());
        }
        fleets.check_alive()?;
        if start.elapsed() > timeout {
            bail!(
                "{}: only {eligible} of {} agents eligible after {timeout:?}",
                scenario.name,
                scenario.agents
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Makes the scenario's faulty agents misbehave for the whole run (fault id
/// `load-<scenario>`), through the fault-injector.
pub async fn inject_fault(target: &Target, scenario: &Scenario) -> anyhow::Result<()> {
    let Some(fault) = &scenario.fault else {
        return Ok(());
    };
    let spec = FaultSpec {
        v: PROTOCOL_VERSION,
        id: Some(format!("load-{}", scenario.name)),
        fault: FaultKind::Agents {
            agents: scenario.faulty_ids()?,
            behaviour: fault.behaviour.clone(),
        },
        start_after_ms: 0,
        duration_ms: None,
    };
    let _: FaultList = request(&target.client, subjects::FAULTS_INJECT, &spec)
        .await
        .context("injecting a fault (is the fault-injector running?)")?;
    Ok(())
}
