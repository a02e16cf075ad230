//! Telemetry service: event ingest, audit trail in Redis Streams, aggregate metrics.
//!
//! - Ingest: a queue-group subscription (`mabeam-telemetry`) on `mabeam.events.>` decodes
//!   each [`TelemetryEvent`], updates the counters ([`aggregate::Counters`]) and hands it to
//!   a bounded queue; a writer drains the queue in batches, each appended to the
//!   `mabeam:audit` stream in one pipelined round trip. When Redis is down or slow the
//!   queue fills and further events are dropped and counted
//!   (`mabeam_telemetry_events_dropped_total{reason}`); memory stays bounded.
//! - Gauges (`mabeam_agents{status}`, `mabeam_faults_active`): seeded from the registry
//!   and the fault-injector, updated from status and fault events that every replica
//!   receives (see [`aggregate`]).
//! - Query: `mabeam.telemetry.audit` (`AuditQuery` → `AuditPage`) and `GET /audit`.

pub mod aggregate;
pub mod audit;
pub mod config;
mod error;
mod http;

use std::{
    net::SocketAddr,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _};
use mabeam_protocol::{
    codec::{encode, ContentType},
    fault::FaultList,
    registry::{AgentList, AgentQuery},
    subjects,
    telemetry::{AuditPage, AuditQuery, Service, TelemetryEvent},
    DecodeError, ErrorCode, Limits, Message as _, PROTOCOL_VERSION,
};
use mabeam_runtime::{
    reply::{self, decode_message, error_body, ok_body, record_refusal},
    Shutdown,
};
use redis::aio::ConnectionManager;
use tokio::{sync::mpsc, task::JoinHandle};

pub use audit::{AuditEntry, Filter, AUDIT_STREAM, DEFAULT_LIMIT, MAX_LIMIT};
pub use config::{Config, KEYS};
pub use error::{AuditError, Error};
use mabeam_runtime::metrics::Described;

/// Queue group of the event subscription: replicas share the events.
pub const QUEUE_GROUP: &str = "mabeam-telemetry";

/// Help texts of telemetry's metrics.
pub const METRICS: &[Described] = &[
    Described::Counter(
        "mabeam_telemetry_events_total",
        "Events ingested by emitting service and kind.",
    ),
    Described::Counter(
        "mabeam_sessions_total",
        "Sessions finished, by algorithm and status.",
    ),
    Described::Histogram(
        "mabeam_decision_duration_seconds",
        "Session duration from start to result, by algorithm.",
    ),
    Described::Histogram(
        "mabeam_session_rounds",
        "Rounds a session took, by algorithm.",
    ),
    Described::Counter(
        "mabeam_tasks_rejected_total",
        "Tasks rejected, by error code.",
    ),
    Described::Counter(
        "mabeam_ballots_rejected_total",
        "Ballots refused by sessions, by reason.",
    ),
    Described::Counter(
        "mabeam_byzantine_detections_total",
        "Byzantine behaviour detected, by kind (equivocation, invalid_signature, replay).",
    ),
    Described::Counter(
        "mabeam_algorithm_switches_total",
        "Adaptive sessions switching algorithm, by from and to.",
    ),
    Described::Gauge(
        "mabeam_agents",
        "Agents by status, as this telemetry replica tracks them.",
    ),
    Described::Gauge("mabeam_faults_active", "Faults currently injected."),
    Described::Counter(
        "mabeam_telemetry_audit_undecodable_total",
        "Audit entries that could not be decoded when read.",
    ),
    Described::Counter(
        "mabeam_telemetry_events_invalid_total",
        "Events refused as invalid, by reason.",
    ),
    Described::Counter(
        "mabeam_telemetry_events_dropped_total",
        "Events not written to the audit trail, by reason.",
    ),
    Described::Counter(
        "mabeam_telemetry_audit_written_total",
        "Events written to the audit trail.",
    ),
    Described::Histogram(
        "mabeam_telemetry_audit_write_seconds",
        "Time to write one batch to the audit trail.",
    ),
    Described::Gauge(
        "mabeam_telemetry_queue_depth",
        "Events waiting to be written to the audit trail.",
    ),
];
/// Sessions remembered to attach a task id to session-only events.
const SESSION_INDEX: usize = 100_000;
/// How long the server may take to confirm the subscriptions at start.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long, on shutdown, the writer may take to flush the queue.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pipelined batches outstanding at once.
const WRITES_IN_FLIGHT: usize = 4;
/// Writer pause after a failed write, doubling up to the maximum.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Subjects of the events the gauges follow (plain subscriptions: every replica sees them).
const GAUGE_SUBJECTS: [&str; 3] = [
    "mabeam.events.*.agent_status_changed",
    "mabeam.events.*.fault_injected",
    "mabeam.events.*.fault_healed",
];

/// Answers audit queries from the stream.
#[derive(Debug, Clone)]
pub struct AuditStore {
    redis: ConnectionManager,
    limits: Limits,
}

impl AuditStore {
    pub fn new(redis: ConnectionManager, limits: Limits) -> Self {
        Self { redis, limits }
    }

    pub async fn query(&self, query: &AuditQuery) -> Result<AuditPage, AuditError> {
        let filter = Filter::new(query)?;
        let mut redis = self.redis.clone();
        audit::query(&mut redis, &filter, &self.limits).await
    }
}

/// A started service.
#[derive(Debug)]
pub struct Running {
    /// Where `/metrics`, `/healthz`, `/readyz` and `/audit` are served.
    pub http_addr: SocketAddr,
    /// Ends once the service has shut down and flushed its queue.
    pub join: JoinHandle<()>,
}

/// Starts the service; returns once it is subscribed and serving.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let slot: http::StoreSlot = Arc::new(OnceLock::new());
    let base = mabeam_runtime::base::start(
        Service::Telemetry,
        "event ingest, audit trail and aggregate metrics",
        &config.common,
        http::routes(slot.clone()),
        &shutdown,
    )
    .await?;
    mabeam_runtime::metrics::describe(METRICS);
    let limits = config.common.limits();
    let store = AuditStore::new(base.redis.clone(), limits);
    // Set once, here; the HTTP handler answers 503 until then.
    let _ = slot.set(store.clone());

    let subscribe_error = |subject: &str, e: &dyn std::fmt::Display| Error::Subscribe {
        subject: subject.to_owned(),
        message: e.to_string(),
    };
    let events = base
        .nats
        .queue_subscribe(subjects::EVENTS_ALL, QUEUE_GROUP.to_owned())
        .await
        .map_err(|e| subscribe_error(subjects::EVENTS_ALL, &e))?;
    let mut gauge_events = Vec::new();
    for subject in GAUGE_SUBJECTS {
        gauge_events.push(
            base.nats
                .subscribe(subject)
                .await
                .map_err(|e| subscribe_error(subject, &e))?,
        );
    }
    let endpoint = base
        .micro
        .endpoint_builder()
        .name("audit")
        .add(subjects::TELEMETRY_AUDIT)
        .await
        .map_err(|e| Error::Endpoint(e.to_string()))?;
    // The server has the subscriptions once this returns: events published after `start`
    // are not missed.
    mabeam_runtime::nats::confirm_subscriptions(&base.nats, SUBSCRIBE_TIMEOUT).await?;
    base.serving.set(true);

    let (queue, queued) = mpsc::channel(config.queue);
    let writer = tokio::spawn(write_loop(
        queued,
        base.redis.clone(),
        config.audit_max_len,
        config.batch,
    ));
    let ingest = tokio::spawn(ingest_loop(events, queue, limits, shutdown.clone()));
    tokio::spawn(gauge_loop(
        base.nats.clone(),
        futures::stream::select_all(gauge_events),
        config.seed_every,
        config.request_timeout,
        limits,
        shutdown.clone(),
    ));
    tokio::spawn(audit_endpoint(
        base.nats.clone(),
        endpoint,
        store,
        mabeam_runtime::ratelimit::RateLimiter::new(config.common.rate_limit, 1),
        shutdown.clone(),
    ));

    let readiness = base.readiness.clone();
    let micro = base.micro;
    let nats = base.nats;
    let join = tokio::spawn(async move {
        shutdown.cancelled().await;
        readiness.set_draining();
        let _ = ingest.await;
        if tokio::time::timeout(DRAIN_TIMEOUT, writer).await.is_err() {
            tracing::warn!("audit queue not flushed within {DRAIN_TIMEOUT:?}; the rest is lost");
        }
        if let Err(e) = micro.stop().await {
            tracing::warn!(error = %e, "cannot stop the NATS micro-service");
        }
        let _ = nats.drain().await;
        tracing::info!("telemetry stopped");
    });
    Ok(Running {
        http_addr: base.http_addr,
        join,
    })
}

/// Runs until `shutdown`, then drains.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let running = start(config, shutdown).await?;
    let _ = running.join.await;
    Ok(())
}

/// Decodes an event and checks that its subject names its service and kind. The event
/// comes with its MessagePack encoding (the stored form); a refusal with the `reason` label
/// of `mabeam_telemetry_events_invalid_total` and a message for the log.
fn decode_event(
    message: &Message,
    limits: &Limits,
) -> Result<(TelemetryEvent, Bytes), (&'static str, String)> {
    let (event, ct) =
        decode_message::<TelemetryEvent>(message.headers.as_ref(), &message.payload, limits)
            .map_err(|e: DecodeError| (e.label(), e.to_string()))?;
    let mut tokens = message.subject.split('.').skip(2);
    let (service, kind) = (tokens.next(), tokens.next());
    if tokens.next().is_some()
        || service != Some(event.service.as_str())
        || kind != Some(event.event.name())
    {
        return Err((
            "subject_mismatch",
            format!(
                "a {} event from {} arrived on {}",
                event.event.name(),
                event.service.as_str(),
                message.subject
            ),
        ));
    }
    let encoded = match ct {
        ContentType::MsgPack => message.payload.clone(),
        ContentType::Json => encode(ContentType::MsgPack, &event)
            .map(Bytes::from)
            .map_err(|e| ("unencodable", e.to_string()))?,
    };
    Ok((event, encoded))
}

/// At most one log line per second for a repeated condition, with the count in between.
#[derive(Debug)]
struct Throttle {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new() -> Self {
        Self {
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` when a line may be logged now.
    fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// The per-event work of the ingest subscription.
struct Ingest {
    queue: mpsc::Sender<AuditEntry>,
    limits: Limits,
    counters: aggregate::Counters,
    sessions: audit::SessionIndex,
    invalid_log: Throttle,
    dropped_log: Throttle,
    queue_full: metrics::Counter,
}

impl Ingest {
    fn handle(&mut self, message: Message) {
        match decode_event(&message, &self.limits) {
            Ok((event, encoded)) => {
                self.counters.record(&event);
                let entry = AuditEntry::new(event, encoded, &mut self.sessions);
                if self.queue.try_send(entry).is_err() {
                    self.queue_full.increment(1);
                    if let Some(suppressed) = self.dropped_log.allow() {
                        tracing::warn!(
                            suppressed,
                            "audit queue full (Redis down or slow): event dropped"
                        );
                    }
                }
            }
            Err((reason, detail)) => {
                metrics::counter!("mabeam_telemetry_events_invalid_total", "reason" => reason)
                    .increment(1);
                if let Some(suppressed) = self.invalid_log.allow() {
                    tracing::warn!(
                        subject = %message.subject,
                        reason,
                        detail,
                        suppressed,
                        "invalid event ignored"
                    );
                }
            }
        }
    }
}

async fn ingest_loop(
    mut events: async_nats::Subscriber,
    queue: mpsc::Sender<AuditEntry>,
    limits: Limits,
    shutdown: Shutdown,
) {
    let mut ingest = Ingest {
        queue,
        limits,
        counters: aggregate::Counters::new(),
        sessions: audit::SessionIndex::new(SESSION_INDEX),
        invalid_log: Throttle::new(),
        dropped_log: Throttle::new(),
        queue_full: metrics::counter!("mabeam_telemetry_events_dropped_total", "reason" => "queue_full"),
    };
    let mut draining = false;
    loop {
        let message = tokio::select! {
            biased;
            m = events.next() => m,
            _ = shutdown.cancelled(), if !draining => {
                // Stop new deliveries but take what the client already holds.
                draining = true;
                if let Err(e) = events.drain().await {
                    tracing::warn!(error = %e, "cannot drain the event subscription");
                    break;
                }
                continue;
            }
        };
        let Some(message) = message else { break };
        ingest.handle(message);
        // Under load, take what is already buffered without a select! per event (the
        // runtime's budget still makes this yield now and then).
        while let Some(Some(message)) = events.next().now_or_never() {
            ingest.handle(message);
        }
    }
}

/// Drains the queue into the stream, with up to [`WRITES_IN_FLIGHT`] batches outstanding
/// on the multiplexed connection so Redis works on one batch while the next is built.
/// Batches are sent in queue order (each write enqueues its pipeline on its first poll,
/// in push order), so the stream keeps the arrival order.
async fn write_loop(
    mut queued: mpsc::Receiver<AuditEntry>,
    redis: ConnectionManager,
    max_len: u64,
    batch: usize,
) {
    let written = metrics::counter!("mabeam_telemetry_audit_written_total");
    let failed =
        metrics::counter!("mabeam_telemetry_events_dropped_total", "reason" => "redis_error");
    let write_time = metrics::histogram!("mabeam_telemetry_audit_write_seconds");
    let depth = metrics::gauge!("mabeam_telemetry_queue_depth");
    let mut log = Throttle::new();
    let mut retry = RETRY_MIN;
    let mut resume_at = tokio::time::Instant::now();
    let mut in_flight = futures::stream::FuturesUnordered::new();
    // Batch buffers are reused: a fresh 1,024-entry buffer per batch is a large allocation.
    let mut spare: Vec<Vec<AuditEntry>> = Vec::new();
    let mut open = true;
    while open || !in_flight.is_empty() {
        let mut buf = spare.pop().unwrap_or_else(|| Vec::with_capacity(batch));
        tokio::select! {
            n = async {
                if resume_at > tokio::time::Instant::now() {
                    tokio::time::sleep_until(resume_at).await;
                }
                queued.recv_many(&mut buf, batch).await
            }, if open && in_flight.len() < WRITES_IN_FLIGHT => {
                if n == 0 {
                    open = false;
                    continue;
                }
                depth.set(queued.len() as f64);
                let mut redis = redis.clone();
                in_flight.push(async move {
                    let started = Instant::now();
                    let result = audit::append(&mut redis, max_len, &buf).await;
                    (result, buf, started.elapsed())
                });
            }
            Some((result, mut done, took)) = in_flight.next() => {
                spare.push(buf);
                let count = done.len();
                done.clear();
                spare.push(done);
                match result {
                    Ok(()) => {
                        write_time.record(took.as_secs_f64());
                        written.increment(count as u64);
                        retry = RETRY_MIN;
                    }
                    Err(e) => {
                        failed.increment(count as u64);
                        if let Some(suppressed) = log.allow() {
                            tracing::warn!(error = %e, events = count, suppressed, "cannot write to the audit stream; events dropped");
                        }
                        // Let Redis recover; meanwhile the queue absorbs what it can.
                        resume_at = tokio::time::Instant::now() + retry;
                        retry = (retry * 2).min(RETRY_MAX);
                    }
                }
            },
        }
    }
}

async fn gauge_loop(
    nats: async_nats::Client,
    mut events: futures::stream::SelectAll<async_nats::Subscriber>,
    seed_every: Duration,
    timeout: Duration,
    limits: Limits,
    shutdown: Shutdown,
) {
    let mut gauges = aggregate::Gauges::new();
    let mut tick = tokio::time::interval(seed_every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => seed(&nats, &mut gauges, timeout, &limits).await,
            message = events.next() => {
                let Some(message) = message else { return };
                // Invalid events are counted once, by the ingest subscription.
                if let Ok((event, _)) = decode_event(&message, &limits) {
                    if aggregate::is_gauge_event(&event.event) {
                        gauges.apply(&event.event);
                    }
                }
            }
        }
    }
}

/// Re-reads agent statuses and active faults from their owners, when they answer.
async fn seed(
    nats: &async_nats::Client,
    gauges: &mut aggregate::Gauges,
    timeout: Duration,
    limits: &Limits,
) {
    let everyone = AgentQuery {
        v: PROTOCOL_VERSION,
        ..AgentQuery::default()
    };
    let query = encode(ContentType::MsgPack, &everyone).map(Bytes::from);
    match query {
        Ok(body) => {
            match request::<AgentList>(nats, subjects::REGISTRY_QUERY, body, timeout, limits).await
            {
                Ok(list) => gauges.seed_agents(&list),
                Err(e) => e.log("agent statuses not seeded from the registry"),
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot encode an agent query"),
    }
    // `list` takes no body.
    match request::<FaultList>(nats, subjects::FAULTS_LIST, Bytes::new(), timeout, limits).await {
        Ok(list) => gauges.seed_faults(&list),
        Err(e) => e.log("active faults not seeded from the fault-injector"),
    }
}

/// Why a seeding request brought nothing.
#[derive(Debug)]
enum SeedError {
    /// Nobody answered: the owner is not running (yet); normal at start.
    NoAnswer(String),
    /// The owner answered with an error, or something unreadable: worth a warning (e.g. a
    /// fleet too large for one registry reply).
    Failed(String),
}

impl SeedError {
    fn log(&self, what: &str) {
        match self {
            Self::NoAnswer(e) => tracing::debug!(error = %e, "{what}"),
            Self::Failed(e) => tracing::warn!(error = %e, "{what}"),
        }
    }
}

async fn request<T: mabeam_protocol::Message>(
    nats: &async_nats::Client,
    subject: &'static str,
    body: Bytes,
    timeout: Duration,
    limits: &Limits,
) -> Result<T, SeedError> {
    let reply = tokio::time::timeout(
        timeout,
        nats.request_with_headers(subject, reply::headers_for(ContentType::MsgPack), body),
    )
    .await
    .map_err(|_| SeedError::NoAnswer(format!("{subject}: no answer within {timeout:?}")))?
    .map_err(|e| SeedError::NoAnswer(format!("{subject}: {e}")))?;
    if let Some(err) = reply::as_error(reply.headers.as_ref(), &reply.payload) {
        return Err(SeedError::Failed(format!(
            "{subject}: {}: {}",
            err.code.as_str(),
            err.message
        )));
    }
    decode_message::<T>(reply.headers.as_ref(), &reply.payload, limits)
        .map(|(value, _)| value)
        .map_err(|e| SeedError::Failed(format!("{subject}: {e}")))
}

async fn audit_endpoint(
    nats: async_nats::Client,
    mut endpoint: async_nats::service::endpoint::Endpoint,
    store: AuditStore,
    rate: mabeam_runtime::ratelimit::RateLimiter,
    shutdown: Shutdown,
) {
    loop {
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = endpoint.next() => r,
        };
        let Some(request) = request else { return };
        if !rate.admit("audit", "audit") {
            let ct = reply::content_type(request.message.headers.as_ref())
                .unwrap_or(ContentType::MsgPack);
            reply::respond_to(
                &request,
                reply::rate_limited_body(ct, subjects::TELEMETRY_AUDIT),
            )
            .await;
            continue;
        }
        let store = store.clone();
        let max_payload = nats.server_info().max_payload;
        tokio::spawn(async move {
            let answer = answer_audit(&request.message, &store, max_payload).await;
            reply::respond_to(&request, answer).await;
        });
    }
}

async fn answer_audit(
    message: &Message,
    store: &AuditStore,
    max_payload: usize,
) -> (HeaderMap, Bytes) {
    let refuse = |ct: ContentType, code: ErrorCode, text: String| {
        record_refusal("audit", code, &text);
        error_body(ct, code, &text)
    };
    let (query, ct) = match decode_message::<AuditQuery>(
        message.headers.as_ref(),
        &message.payload,
        &store.limits,
    ) {
        Ok(decoded) => decoded,
        Err(e) => {
            // Answer in the caller's encoding when it named a known one.
            let ct = reply::content_type(message.headers.as_ref()).unwrap_or_default();
            return refuse(ct, ErrorCode::from(&e), e.to_string());
        }
    };
    match store.query(&query).await {
        Ok(page) => {
            let answer = ok_body(ct, &page);
            // A reply above the server's max_payload would never arrive: say so instead.
            if max_payload > 0 && answer.1.len() > max_payload {
                return refuse(
                    ct,
                    ErrorCode::TooLarge,
                    format!(
                        "{} records make a {}-byte {}, above the NATS max_payload of {max_payload} \
                         bytes; ask for fewer (limit) or use GET /audit",
                        page.records.len(),
                        answer.1.len(),
                        AuditPage::KIND
                    ),
                );
            }
            answer
        }
        Err(e) => refuse(ct, e.code(), e.to_string()),
    }
}
