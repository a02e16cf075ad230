//! agent-sim: one process running a fleet of 1 to 10,000 simulated agents on one NATS
//! connection, built with the agent SDK.
//!
//! Every agent is derived from `MABEAM_SIM_SEED` (its key, opinion, expertise and whether
//! it misbehaves), so a restarted fleet registers the same keys. Honest agents answer every
//! algorithm from an [`mabeam_agent::Opinion`] shaped by `MABEAM_SIM_PROFILE`; the Byzantine
//! ones (`MABEAM_SIM_BYZANTINE_SHARE`, `MABEAM_SIM_BYZANTINE_IDS`) run
//! `MABEAM_SIM_BYZANTINE_BEHAVIOUR` through the SDK's fault layer under the fault id
//! [`fleet::BYZANTINE_FAULT_ID`], and the fault-injector can add or heal faults on any agent.
//!
//! HTTP: `/metrics`, `/healthz`, `/readyz` (ready while NATS is connected); NATS
//! micro-service `mabeam-agent-sim` (`$SRV.PING|INFO|STATS`). agent-sim needs no Redis.
//! Metrics: the SDK's `mabeam_agent_*` (summed over the fleet), `mabeam_agent_sim_agents`
//! (fleet size) and `mabeam_agent_sim_agent_failures_total` (agents that stopped on an error,
//! e.g. the registry refusing their key).

pub mod config;
mod error;
pub mod fleet;

use std::net::SocketAddr;

use async_nats::service::ServiceExt as _;
use mabeam_agent::Agent;
use mabeam_protocol::{AgentId, PublicKey};
use mabeam_runtime::{metrics::Described, Readiness, RuntimeError, Shutdown};

pub use config::{Config, Profile, KEYS};
pub use error::Error;

/// Help texts of agent-sim's own metrics (the agents' are `mabeam_agent::METRICS`).
pub const METRICS: &[Described] = &[
    Described::Counter(
        "mabeam_agent_sim_agent_failures_total",
        "Simulated agents that stopped with an error.",
    ),
    Described::Gauge(
        "mabeam_agent_sim_agents",
        "Simulated agents this process runs.",
    ),
];

const DESCRIPTION: &str = "simulated agent fleet";

#[derive(Debug)]
pub struct Running {
    pub http_addr: SocketAddr,
    /// Every agent with its public key, in id order.
    pub agents: Vec<(AgentId, PublicKey)>,
    /// Ends after shutdown, once every agent deregistered.
    pub task: tokio::task::JoinHandle<()>,
}

/// Connects and starts every agent; returns once they are all running.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let common = &config.common;
    mabeam_runtime::logging::init(&common.log_filter, &common.log_format);
    let metrics = mabeam_runtime::metrics::install()?;
    mabeam_runtime::metrics::describe(METRICS);
    mabeam_runtime::metrics::describe(mabeam_agent::METRICS);
    // Only NATS: agents never talk to Redis, so readiness does not wait for it.
    let readiness = Readiness::new();
    let nats_up = readiness.register("nats");
    let http_addr = mabeam_runtime::http::serve(
        common.http_addr,
        metrics,
        readiness.clone(),
        axum::Router::new(),
        shutdown.clone(),
    )
    .await?;
    let client =
        mabeam_runtime::nats::connect(&common.nats, &common.instance, nats_up, &shutdown).await?;
    let micro = client
        .service_builder()
        .description(DESCRIPTION)
        .start("mabeam-agent-sim", env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| RuntimeError::Service(e.to_string()))?;

    let key_seed = fleet::key_seed(&config);
    let mut agents = Vec::with_capacity(config.agents);
    let mut tasks = Vec::with_capacity(config.agents);
    for sim in fleet::plan(&config)? {
        let mut builder = Agent::builder(sim.id.as_str(), config.kind.as_str())
            .capabilities(sim.capabilities)
            .expertise(sim.expertise)
            .derive_key(&key_seed)
            .heartbeat_interval(config.heartbeat_interval)
            .limits(common.limits())
            .load(sim.opinion.load, sim.opinion.capacity)
            .seed(sim.seed);
        if let Some(behaviour) = sim.behaviour {
            builder = builder.fault(mabeam_protocol::fault::AgentFaultCommand {
                v: mabeam_protocol::PROTOCOL_VERSION,
                fault_id: fleet::BYZANTINE_FAULT_ID.to_owned(),
                behaviour: Some(behaviour),
                unreachable: Vec::new(),
                coordinator_unreachable: false,
            });
        }
        let agent = builder
            .decider(sim.opinion)
            .build()
            .map_err(|source| Error::Agent {
                id: sim.id.clone(),
                source,
            })?;
        agents.push((sim.id, agent.public_key()));
        let (client, shutdown) = (client.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            let id = agent.id().clone();
            if let Err(e) = agent.run(client, shutdown).await {
                metrics::counter!("mabeam_agent_sim_agent_failures_total").increment(1);
                tracing::error!(agent = %id, error = %e, "simulated agent stopped");
            }
        }));
    }
    metrics::gauge!("mabeam_agent_sim_agents").set(agents.len() as f64);
    tracing::info!(agents = agents.len(), http = %http_addr, profile = ?config.profile, "fleet running");

    let task = tokio::spawn(async move {
        shutdown.cancelled().await;
        readiness.set_draining();
        // Agents deregister on the way out; wait for them before closing the connection.
        for task in tasks {
            let _ = task.await;
        }
        let _ = micro.stop().await;
        if let Err(e) = client.drain().await {
            tracing::warn!(error = %e, "cannot drain the NATS connection");
        }
    });
    Ok(Running {
        http_addr,
        agents,
        task,
    })
}

/// Runs the fleet until `shutdown`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let running = start(config, shutdown).await?;
    let _ = running.task.await;
    Ok(())
}
