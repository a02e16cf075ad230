//! What every service starts with: logs, metrics, readiness, NATS, Redis, the HTTP probes,
//! the event sink and its NATS micro-service (`$SRV.PING|INFO|STATS`).

use std::net::SocketAddr;

use async_nats::service::{Service as MicroService, ServiceExt};
use mabeam_protocol::telemetry::Service;
use metrics_exporter_prometheus::PrometheusHandle;
use redis::aio::ConnectionManager;

use crate::{health::Dependency, CommonConfig, EventSink, Readiness, RuntimeError, Shutdown};

#[derive(Debug)]
pub struct Base {
    pub nats: async_nats::Client,
    pub redis: ConnectionManager,
    pub events: EventSink,
    pub readiness: Readiness,
    /// Down until the service says its endpoints are in place (`/readyz` stays false while
    /// connected but not yet answering): set it once the subscriptions are confirmed.
    pub serving: Dependency,
    pub http_addr: SocketAddr,
    pub micro: MicroService,
    pub metrics: PrometheusHandle,
}

/// Starts the shared plumbing. `routes` are served beside the probes.
pub async fn start(
    service: Service,
    description: &str,
    config: &CommonConfig,
    routes: axum::Router,
    shutdown: &Shutdown,
) -> Result<Base, RuntimeError> {
    crate::logging::init(&config.log_filter, &config.log_format);
    let metrics = crate::metrics::install()?;
    let readiness = Readiness::new();
    let nats_dep = readiness.register("nats");
    let redis_dep = readiness.register("redis");
    let serving = readiness.register("serving");
    // Probes come up first so an orchestrator sees "alive, not ready" while we connect.
    let http_addr = crate::http::serve(
        config.http_addr,
        metrics.clone(),
        readiness.clone(),
        routes,
        shutdown.clone(),
    )
    .await?;
    let nats = crate::nats::connect(&config.nats, &config.instance, nats_dep, shutdown).await?;
    let redis = crate::redis::connect(&config.redis, redis_dep, shutdown).await?;
    let name = format!("mabeam-{}", service.as_str().replace('_', "-"));
    let micro = nats
        .service_builder()
        .description(description)
        .start(name, env!("CARGO_PKG_VERSION"))
        .await
        .map_err(|e| RuntimeError::Service(e.to_string()))?;
    let events = EventSink::new(nats.clone(), service, config.instance.clone());
    tracing::info!(service = service.as_str(), instance = %config.instance, http = %http_addr, "started");
    Ok(Base {
        nats,
        redis,
        events,
        readiness,
        serving,
        http_addr,
        micro,
        metrics,
    })
}
