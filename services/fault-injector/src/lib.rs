//! Fault injector service: agent behaviours and partitions through the agents' fault layer,
//! a built-in TCP fault proxy for the NATS and Redis links, and scenario files that schedule
//! faults over time.
//!
//! Requests (`mabeam.faults.inject|heal|list`, micro-service endpoints) answer with a
//! [`FaultList`]; every refusal is a typed `ErrorReply`. Faults live in Redis
//! (`mabeam:faults:active`), so a restarted injector puts them in force again and still
//! heals them on time. Run one replica: the state of the faults is this process's.

pub mod config;
mod error;
mod injector;
pub mod partition;
pub mod proxy;
pub mod scenario;
pub mod spec;
pub mod store;

use std::{net::SocketAddr, sync::Arc};

use async_nats::service::Request;
use futures::StreamExt;
use mabeam_protocol::{
    fault::{FaultHeal, FaultList, FaultSpec, Link},
    subjects,
    telemetry::Service,
    ContentType, ErrorCode, Limits, PROTOCOL_VERSION,
};
use mabeam_runtime::{base, metrics::Described, ratelimit::RateLimiter, reply, Shutdown};
use tokio::task::JoinHandle;

pub use config::{Config, ProxyConfig, KEYS};
pub use error::Error;

/// Help texts of the fault-injector's metrics.
pub const METRICS: &[Described] = &[
    Described::Counter(
        "mabeam_fault_injector_faults_total",
        "Faults injected, by target.",
    ),
    Described::Counter(
        "mabeam_fault_injector_heals_total",
        "Faults healed, by reason.",
    ),
    Described::Gauge(
        "mabeam_fault_injector_faults_active",
        "Faults active now, by target.",
    ),
    Described::Counter(
        "mabeam_fault_injector_commands_total",
        "Fault commands sent to agents, by kind.",
    ),
    Described::Counter(
        "mabeam_fault_injector_unreadable_records_total",
        "Stored fault records that could not be read.",
    ),
    Described::Gauge(
        "mabeam_fault_proxy_connections",
        "Connections open through the fault proxy, by link.",
    ),
    Described::Counter(
        "mabeam_fault_proxy_bytes_total",
        "Bytes forwarded by the fault proxy, by link and direction.",
    ),
];
use injector::{Injector, Refusal};

const DESCRIPTION: &str = "mabeam fault injector: agent faults, partitions, NATS/Redis link faults";

/// A started injector.
#[derive(Debug)]
pub struct Running {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub http_addr: SocketAddr,
    /// The bound address of each configured fault proxy.
    pub proxies: Vec<(Link, SocketAddr)>,
    /// Ends after `shutdown` once the service has drained.
    pub join: JoinHandle<()>,
}

impl Running {
    pub fn proxy_addr(&self, link: Link) -> Option<SocketAddr> {
        self.proxies
            .iter()
            .find(|(l, _)| *l == link)
            .map(|(_, a)| *a)
    }
}

/// Starts the service; returns once requests are being served and stored faults are in
/// force again.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let base = base::start(
        Service::FaultInjector,
        DESCRIPTION,
        &config.common,
        axum::Router::new(),
        &shutdown,
    )
    .await?;
    mabeam_runtime::metrics::describe(METRICS);
    let mut proxies = Vec::with_capacity(config.proxies.len());
    for p in &config.proxies {
        proxies.push(proxy::FaultProxy::bind(p, shutdown.clone()).await?);
    }
    let proxy_addrs = proxies.iter().map(|p| (p.link(), p.local_addr())).collect();
    let injector = Arc::new(Injector::new(
        base.nats.clone(),
        base.redis.clone(),
        base.events.clone(),
        proxies,
        config.resend_every,
    ));
    injector.restore().await.map_err(Error::Restore)?;

    let limits = config.common.limits();
    let mut tasks = Vec::new();
    for (name, subject) in [
        (Endpoint::Inject, subjects::FAULTS_INJECT),
        (Endpoint::Heal, subjects::FAULTS_HEAL),
        (Endpoint::List, subjects::FAULTS_LIST),
    ] {
        let endpoint = base
            .micro
            .endpoint_builder()
            .name(name.as_str())
            .add(subject)
            .await
            .map_err(|e| Error::Endpoint(e.to_string()))?;
        tasks.push(tokio::spawn(serve(
            name,
            endpoint,
            injector.clone(),
            limits,
            RateLimiter::new(config.common.rate_limit, 1),
            shutdown.clone(),
        )));
    }
    tasks.push(tokio::spawn(injector.clone().drive(shutdown.clone())));
    // The server must know the endpoints before we say we are serving (a flush only empties
    // our socket buffer; the round trip proves the server has the subscriptions).
    mabeam_runtime::nats::confirm_subscriptions(&base.nats, std::time::Duration::from_secs(10))
        .await
        .map_err(|e| Error::Endpoint(e.to_string()))?;
    base.serving.set(true);

    let join = tokio::spawn(async move {
        shutdown.cancelled().await;
        base.readiness.set_draining();
        for t in tasks {
            let _ = t.await;
        }
        if let Err(e) = base.micro.stop().await {
            tracing::warn!(error = %e, "cannot stop the micro-service");
        }
        if let Err(e) = base.nats.drain().await {
            tracing::warn!(error = %e, "cannot drain NATS");
        }
        tracing::info!("fault injector stopped");
    });
    Ok(Running {
        http_addr: base.http_addr,
        proxies: proxy_addrs,
        join,
    })
}

/// Serves until `shutdown`.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let running = start(config, shutdown).await?;
    let _ = running.join.await;
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Inject,
    Heal,
    List,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Self::Inject => "inject",
            Self::Heal => "heal",
            Self::List => "list",
        }
    }
}

async fn serve(
    name: Endpoint,
    mut requests: async_nats::service::endpoint::Endpoint,
    injector: Arc<Injector>,
    limits: Limits,
    rate: RateLimiter,
    shutdown: Shutdown,
) {
    loop {
        let request = tokio::select! {
            r = requests.next() => match r {
                Some(r) => r,
                None => return,
            },
            _ = shutdown.cancelled() => return,
        };
        let answer = if rate.admit(name.as_str(), name.as_str()) {
            handle(name, &request, &injector, &limits).await
        } else {
            let ct = reply::content_type(request.message.headers.as_ref())
                .unwrap_or(mabeam_protocol::ContentType::MsgPack);
            reply::rate_limited_body(ct, &request.message.subject)
        };
        reply::respond_to(&request, answer).await;
    }
}

async fn handle(
    name: Endpoint,
    request: &Request,
    injector: &Injector,
    limits: &Limits,
) -> (async_nats::HeaderMap, bytes::Bytes) {
    let headers = request.message.headers.as_ref();
    let payload = &request.message.payload;
    let refuse = |ct: ContentType, refusal: Refusal| {
        reply::record_refusal(name.as_str(), refusal.code, &refusal.message);
        reply::error_body(ct, refusal.code, &refusal.message)
    };
    let ct = match reply::content_type(headers) {
        Ok(ct) => ct,
        Err(e) => return refuse(ContentType::MsgPack, decode_refusal(&e)),
    };
    let result = match name {
        Endpoint::Inject => match reply::decode_message::<FaultSpec>(headers, payload, limits) {
            Ok((spec, _)) => injector.inject(spec).await.map(|f| vec![f]),
            Err(e) => Err(decode_refusal(&e)),
        },
        Endpoint::Heal => match reply::decode_message::<FaultHeal>(headers, payload, limits) {
            Ok((heal, _)) => injector.heal(heal.id).await,
            Err(e) => Err(decode_refusal(&e)),
        },
        // The request carries nothing to read: any body lists every fault.
        Endpoint::List => Ok(injector.list().await),
    };
    match result {
        Ok(faults) => reply::ok_body(
            ct,
            &FaultList {
                v: PROTOCOL_VERSION,
                faults,
            },
        ),
        Err(refusal) => refuse(ct, refusal),
    }
}

fn decode_refusal(e: &mabeam_protocol::DecodeError) -> Refusal {
    Refusal {
        code: ErrorCode::from(e),
        message: e.to_string(),
    }
}
