//! Agent registry service: registration bound to keys, heartbeats, liveness, queries,
//! quarantine.
//!
//! Requests on `mabeam.registry.{register,heartbeat,deregister,query,evidence}` (one NATS
//! micro-service endpoint each, shared by replicas through the service's queue group), and
//! agreement reports on `mabeam.registry.agreement` (a queue subscription, no reply). State
//! lives in Redis (see [`store`]), so replicas share it and a restart loses nothing; the
//! status lifecycle is the pure [`lifecycle`] module.
//!
//! Metrics: `mabeam_registry_requests_total{endpoint,outcome}`,
//! `mabeam_registry_request_duration_seconds{endpoint}`,
//! `mabeam_registry_status_transitions_total{from,to}`, `mabeam_registry_quarantines_total`
//! and the gauge `mabeam_registry_agents{status}`; refusals also count in
//! `mabeam_requests_refused_total{endpoint,code}`.

pub mod config;
pub mod error;
pub mod lifecycle;
pub mod service;
pub mod store;
mod sweeper;

use std::{net::SocketAddr, sync::Arc};

use futures::StreamExt as _;
use mabeam_protocol::{subjects, telemetry::Service};
use mabeam_runtime::{base, metrics::Described, Shutdown};
use tokio::task::{JoinHandle, JoinSet};

pub use config::{Config, KEYS};
pub use error::Error;

/// Help texts of the registry's metrics.
pub const METRICS: &[Described] = &[
    Described::Counter(
        "mabeam_registry_requests_total",
        "Registry requests by endpoint and outcome (ok or an error code).",
    ),
    Described::Histogram(
        "mabeam_registry_request_duration_seconds",
        "Time to answer a registry request, by endpoint.",
    ),
    Described::Gauge(
        "mabeam_registry_agents",
        "Registered agents by status, as of the last sweep.",
    ),
    Described::Counter(
        "mabeam_registry_status_transitions_total",
        "Agent status transitions by from and to status.",
    ),
    Described::Counter(
        "mabeam_registry_quarantines_total",
        "Agents quarantined on equivocation evidence.",
    ),
];

use service::{Endpoint, Registry};
use store::Store;

const DESCRIPTION: &str = "mabeam agent registry";
/// Queue group of the agreement subscription: each report is applied by one replica.
const QUEUE_GROUP: &str = "mabeam-registry";
/// Requests handled concurrently per endpoint.
const MAX_IN_FLIGHT: usize = 256;
/// How long the server may take to confirm the subscriptions at start.
const SUBSCRIBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A started registry.
#[derive(Debug)]
pub struct Running {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: SocketAddr,
    /// Resolves once the registry has stopped after `shutdown` and drained.
    pub handle: JoinHandle<Result<(), Error>>,
}

/// Connects, subscribes and starts the sweeper; returns once requests are being served.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let base = base::start(
        Service::Registry,
        DESCRIPTION,
        &config.common,
        axum::Router::new(),
        &shutdown,
    )
    .await?;
    mabeam_runtime::metrics::describe(METRICS);
    let registry = Arc::new(Registry {
        store: Store::new(base.redis.clone()),
        events: base.events.clone(),
        nats: base.nats.clone(),
        limits: config.common.limits(),
        liveness: config.liveness,
        clock_tolerance_ms: config.clock_tolerance.as_millis() as u64,
        weights: config.dynamic_weights,
        rate: mabeam_runtime::ratelimit::RateLimiter::new(config.common.rate_limit, 16),
    });

    let mut tasks = JoinSet::new();
    for endpoint in Endpoint::ALL {
        let requests = base
            .micro
            .endpoint_builder()
            .name(endpoint.name())
            .add(endpoint.subject())
            .await
            .map_err(|e| Error::Endpoint {
                subject: endpoint.subject(),
                detail: e.to_string(),
            })?;
        let registry = registry.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            // In-flight requests finish after shutdown; no new ones are taken.
            requests
                .take_until(stop.cancelled_owned())
                .for_each_concurrent(MAX_IN_FLIGHT, |request| {
                    let registry = registry.clone();
                    async move { registry.serve(endpoint, &request).await }
                })
                .await;
        });
    }
    let reports = base
        .nats
        .queue_subscribe(subjects::REGISTRY_AGREEMENT, QUEUE_GROUP.to_owned())
        .await
        .map_err(|e| Error::Subscribe {
            subject: subjects::REGISTRY_AGREEMENT,
            detail: e.to_string(),
        })?;
    {
        let registry = registry.clone();
        let stop = shutdown.clone();
        tasks.spawn(async move {
            reports
                .take_until(stop.cancelled_owned())
                .for_each_concurrent(MAX_IN_FLIGHT, |message| {
                    let registry = registry.clone();
                    async move { registry.agreement(&message).await }
                })
                .await;
        });
    }
    {
        let registry = registry.clone();
        let interval = config.sweep_interval;
        // Unique per start, so two replicas given one instance name still hold the lease
        // apart.
        let owner = format!(
            "{}/{}",
            config.common.instance,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default()
        );
        let stop = shutdown.clone();
        tasks.spawn(async move { sweeper::run(&registry, interval, owner, stop).await });
    }

    subscriptions_in_place(&base.nats).await?;
    base.serving.set(true);

    let base::Base {
        nats,
        micro,
        readiness,
        http_addr,
        ..
    } = base;
    let handle = tokio::spawn(async move {
        shutdown.cancelled().await;
        readiness.set_draining();
        let mut result = Ok(());
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = joined {
                result = Err(Error::Task(e));
            }
        }
        if let Err(e) = micro.stop().await {
            tracing::warn!(error = %e, "cannot stop the NATS service endpoints");
        }
        // Replies still buffered reach the server before the connection closes.
        if let Err(e) = nats.flush().await {
            tracing::warn!(error = %e, "cannot flush NATS");
        }
        if let Err(e) = nats.drain().await {
            tracing::warn!(error = %e, "cannot drain NATS");
        }
        tracing::info!("registry stopped");
        result
    });
    Ok(Running { http_addr, handle })
}

async fn subscriptions_in_place(nats: &async_nats::Client) -> Result<(), Error> {
    mabeam_runtime::nats::confirm_subscriptions(nats, SUBSCRIBE_TIMEOUT)
        .await
        .map_err(|e| Error::Subscribe {
            subject: "mabeam.registry.*",
            detail: e.to_string(),
        })
}

/// Runs the registry until `shutdown`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    start(config, shutdown).await?.handle.await?
}
