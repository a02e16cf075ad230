//! The coordinator: pulls tasks from the JetStream work queue, runs each as a session of the
//! pure consensus core over NATS, keeps session state in Redis under leases so any replica can
//! resume a session whose owner died, and publishes and stores results.
//!
//! Replicas share one durable pull consumer. A task message is acked only after its result is
//! stored; until then the owner signals progress, and a replica that receives a redelivery of
//! a task another replica runs waits for that result instead of running it twice.

mod config;
mod deadletter;
mod driver;
mod error;
mod intake;
mod participants;
mod store;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt;
use mabeam_consensus::Session;
use mabeam_protocol::{
    codec::{encode, ContentType},
    session::{EquivocationEvidence, SessionQuery},
    subjects,
    task::Priority,
    telemetry::{EventKind, Service},
    ErrorCode, Limits, TaskId, TaskResult,
};
use mabeam_runtime::{base, metrics::Described, now_ms, reply, Shutdown};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use config::{Config, KEYS};
pub use error::Error;
use store::{Lease, Store};

/// The durable consumer every replica shares.
pub const CONSUMER: &str = "mabeam-coordinator";

/// Help texts of the coordinator's metrics.
pub const METRICS: &[Described] = &[
    Described::Counter(
        "mabeam_coordinator_proposals_sent_total",
        "Proposals sent to agents.",
    ),
    Described::Counter(
        "mabeam_coordinator_ballots_rejected_total",
        "Ballots a session refused, by reason.",
    ),
    Described::Counter(
        "mabeam_coordinator_leases_lost_total",
        "Session leases this replica lost to another.",
    ),
    Described::Counter(
        "mabeam_coordinator_votes_received_total",
        "Vote messages received.",
    ),
    Described::Counter(
        "mabeam_coordinator_votes_malformed_total",
        "Vote messages that could not be decoded, by reason.",
    ),
    Described::Histogram(
        "mabeam_coordinator_session_duration_seconds",
        "Session duration from start to result, by algorithm and status.",
    ),
    Described::Counter(
        "mabeam_coordinator_tasks_total",
        "Task messages taken from the stream, by outcome.",
    ),
    Described::Counter(
        "mabeam_coordinator_tasks_rejected_total",
        "Tasks rejected before a session started, by error code.",
    ),
    Described::Gauge(
        "mabeam_coordinator_sessions_active",
        "Sessions this replica runs now.",
    ),
    Described::Counter(
        "mabeam_coordinator_sessions_resumed_total",
        "Sessions taken over from a replica whose lease expired.",
    ),
    Described::Histogram(
        "mabeam_coordinator_resume_replay_seconds",
        "Time to replay a resumed session's log.",
    ),
    Described::Histogram(
        "mabeam_coordinator_store_duration_seconds",
        "Redis operation time by operation.",
    ),
    Described::Counter(
        "mabeam_coordinator_store_errors_total",
        "Failed Redis operations by operation.",
    ),
    Described::Gauge(
        "mabeam_coordinator_tasks_pending",
        "Tasks not yet delivered to any coordinator (the shared consumer's backlog), by priority.",
    ),
    Described::Gauge(
        "mabeam_coordinator_tasks_ack_pending",
        "Tasks delivered to coordinators and not yet acknowledged, by priority.",
    ),
    Described::Histogram(
        "mabeam_coordinator_task_queue_wait_seconds",
        "Time from a task's publication to a coordinator taking it, by priority.",
    ),
];

/// State shared by every task of one replica.
pub(crate) struct Shared {
    nats: async_nats::Client,
    js: jetstream::Context,
    store: Store,
    events: mabeam_runtime::EventSink,
    config: Config,
    limits: Limits,
    /// Sessions this replica owns: their lease and the token cancelled when it is lost.
    owned: Mutex<HashMap<TaskId, Owned>>,
    /// Cancelled at the end of the drain period: running sessions are handed back.
    handover: CancellationToken,
    sessions: Arc<Semaphore>,
    /// Requests on `mabeam.sessions.get`.
    queries_rate: mabeam_runtime::ratelimit::RateLimiter,
}

struct Owned {
    lease: Lease,
    lost: CancellationToken,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Shared {
    fn own(&self, lease: &Lease, permit: tokio::sync::OwnedSemaphorePermit) -> CancellationToken {
        let lost = CancellationToken::new();
        if let Ok(mut owned) = self.owned.lock() {
            owned.insert(
                lease.task_id.clone(),
                Owned {
                    lease: lease.clone(),
                    lost: lost.clone(),
                    _permit: permit,
                },
            );
            metrics::gauge!("mabeam_coordinator_sessions_active").set(owned.len() as f64);
        }
        lost
    }

    fn forget(&self, task: &TaskId) {
        if let Ok(mut owned) = self.owned.lock() {
            owned.remove(task);
            metrics::gauge!("mabeam_coordinator_sessions_active").set(owned.len() as f64);
        }
    }

    fn owns(&self, task: &TaskId) -> bool {
        self.owned
            .lock()
            .map(|o| o.contains_key(task))
            .unwrap_or(false)
    }

    fn owned_count(&self) -> usize {
        self.owned.lock().map(|o| o.len()).unwrap_or(0)
    }

    /// Results go to the results stream (kept for replay) on `mabeam.results.<task_id>`.
    async fn publish_result(&self, result: &TaskResult) {
        let Ok(body) = encode(ContentType::MsgPack, result) else {
            return;
        };
        let headers = reply::headers_for(ContentType::MsgPack);
        let subject = subjects::results(&result.task_id);
        match self
            .js
            .publish_with_headers(subject, headers, body.into())
            .await
        {
            Ok(ack) => {
                if let Err(e) = ack.await {
                    tracing::warn!(task = %result.task_id, error = %e, "results stream did not confirm; the result is in Redis");
                }
            }
            Err(e) => {
                tracing::warn!(task = %result.task_id, error = %e, "cannot publish the result; it is in Redis")
            }
        }
    }

    /// Re-announces an existing result to live subscribers (the results stream captures it
    /// too, in place of the identical copy it holds: one message per task subject).
    async fn publish_result_core(&self, result: &TaskResult) {
        if let Ok(body) = encode(ContentType::MsgPack, result) {
            let _ = self
                .nats
                .publish_with_headers(
                    subjects::results(&result.task_id),
                    reply::headers_for(ContentType::MsgPack),
                    body.into(),
                )
                .await;
        }
    }

    /// Sends equivocation evidence to the registry, which quarantines the agent.
    fn report_evidence(&self, evidence: EquivocationEvidence) {
        let nats = self.nats.clone();
        let timeout = self.config.registry_timeout;
        tokio::spawn(async move {
            let Ok(body) = encode(ContentType::MsgPack, &evidence) else {
                return;
            };
            let request = async_nats::Request::new()
                .payload(body.into())
                .headers(reply::headers_for(ContentType::MsgPack))
                .timeout(Some(timeout));
            match nats
                .send_request(subjects::REGISTRY_EVIDENCE, request)
                .await
            {
                Ok(r) => {
                    if let Some(err) = reply::as_error(r.headers.as_ref(), &r.payload) {
                        tracing::warn!(agent = %evidence.agent_id, code = err.code.as_str(), "registry refused evidence");
                    }
                }
                Err(e) => {
                    tracing::warn!(agent = %evidence.agent_id, error = %e, "cannot report evidence")
                }
            }
        });
    }
}

/// A started coordinator.
#[derive(Debug)]
pub struct Running {
    pub http_addr: SocketAddr,
    pub instance: String,
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts serving; returns once the stream, consumer and endpoints exist.
pub async fn start(config: Config, shutdown: Shutdown) -> Result<Running, Error> {
    let base = base::start(
        Service::Coordinator,
        "runs coordination sessions for tasks on mabeam.tasks.submit",
        &config.common,
        axum::Router::new(),
        &shutdown,
    )
    .await?;
    mabeam_runtime::metrics::describe(METRICS);
    let js = jetstream::new(base.nats.clone());
    let queues = TaskQueues {
        high: task_queue(&js, &config, Priority::High).await?,
        normal: task_queue(&js, &config, Priority::Normal).await?,
    };
    js.get_or_create_stream(stream::Config {
        name: subjects::RESULTS_STREAM.to_owned(),
        subjects: vec![subjects::RESULTS_ALL.to_owned()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: config.results_max_age,
        num_replicas: config.stream_replicas,
        // A task has one result: a re-announced copy replaces the stored one, never adds.
        max_messages_per_subject: 1,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::JetStream(format!("results stream: {e}")))?;
    js.get_or_create_stream(stream::Config {
        name: subjects::DEADLETTER_STREAM.to_owned(),
        subjects: vec![subjects::TASKS_DEADLETTER.to_owned()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        max_age: config.deadletter_max_age,
        duplicate_window: config.dedup_window,
        ..Default::default()
    })
    .await
    .map_err(|e| Error::JetStream(format!("dead-letter stream: {e}")))?;

    let sessions_get = base
        .micro
        .endpoint_builder()
        .name("sessions-get")
        .add(subjects::SESSIONS_GET)
        .await
        .map_err(|e| Error::Endpoint(e.to_string()))?;
    // One replica handles each advisory.
    let exhausted = base
        .nats
        .queue_subscribe(
            deadletter::advisory_subject(),
            format!("{CONSUMER}-deadletter"),
        )
        .await
        .map_err(|e| Error::Endpoint(format!("max-deliveries advisories: {e}")))?;
    mabeam_runtime::nats::confirm_subscriptions(&base.nats, Duration::from_secs(5)).await?;
    base.serving.set(true);

    let instance = config.common.instance.clone();
    let store = Store::new(
        base.redis.clone(),
        &instance,
        config.lease.as_millis() as u64,
        config.result_ttl.as_secs(),
    );
    let shared = Arc::new(Shared {
        nats: base.nats.clone(),
        js,
        store,
        events: base.events.clone(),
        limits: config.common.limits(),
        sessions: Arc::new(Semaphore::new(config.max_sessions)),
        queries_rate: mabeam_runtime::ratelimit::RateLimiter::new(config.common.rate_limit, 1),
        config,
        owned: Mutex::new(HashMap::new()),
        handover: CancellationToken::new(),
    });
    let http_addr = base.http_addr;
    let task = tokio::spawn(serve(
        shared,
        base,
        queues,
        sessions_get,
        exhausted,
        shutdown,
    ));
    Ok(Running {
        http_addr,
        instance,
        task,
    })
}

/// The task stream of one priority (work-queue retention, so a task is gone once acked)
/// and the durable pull consumer every replica shares on it. Each priority has a stream of
/// its own rather than a filtered consumer on one stream: JetStream cannot order across
/// consumers, and the coordinator's intake must be able to pick high tasks first.
async fn task_queue(
    js: &jetstream::Context,
    config: &Config,
    queue: Priority,
) -> Result<jetstream::consumer::PullConsumer, Error> {
    let stream = js
        .get_or_create_stream(stream::Config {
            name: queue.stream().to_owned(),
            subjects: vec![queue.subject().to_owned()],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: config.dedup_window,
            num_replicas: config.stream_replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::JetStream(format!("{queue} task stream: {e}")))?;
    stream
        .get_or_create_consumer(
            CONSUMER,
            pull::Config {
                durable_name: Some(CONSUMER.to_owned()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: config.max_deliver,
                max_ack_pending: 100_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::JetStream(format!("{queue} task consumer: {e}")))
}

/// The shared consumers of both task queues.
#[derive(Clone)]
struct TaskQueues {
    high: jetstream::consumer::PullConsumer,
    normal: jetstream::consumer::PullConsumer,
}

/// Runs until `shutdown`, then drains.
pub async fn run(config: Config, shutdown: Shutdown) -> Result<(), Error> {
    let running = start(config, shutdown).await?;
    let _ = running.task.await;
    Ok(())
}

async fn serve(
    shared: Arc<Shared>,
    base: base::Base,
    queues: TaskQueues,
    sessions_get: async_nats::service::endpoint::Endpoint,
    exhausted: async_nats::Subscriber,
    shutdown: Shutdown,
) {
    let stop_intake = CancellationToken::new();
    let dead_letters = tokio::spawn(deadletter::watch_exhausted(
        shared.clone(),
        exhausted,
        stop_intake.clone(),
    ));
    let intake = tokio::spawn(pull_tasks(
        shared.clone(),
        queues.clone(),
        stop_intake.clone(),
    ));
    let renew = tokio::spawn(renew_leases(shared.clone(), shutdown.clone()));
    let resume = tokio::spawn(resume_orphans(shared.clone(), stop_intake.clone()));
    let api = tokio::spawn(answer_session_queries(shared.clone(), sessions_get));
    let lag = tokio::spawn(watch_backlog(queues, shared.config.lag_poll));

    shutdown.cancelled().await;
    base.readiness.set_draining();
    stop_intake.cancel();
    let _ = intake.await;
    let _ = resume.await;
    let _ = dead_letters.await;
    // Give running sessions a chance to finish, then hand the rest back.
    let deadline = tokio::time::Instant::now() + shared.config.drain_timeout;
    while shared.owned_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    shared.handover.cancel();
    let handed_back = tokio::time::Instant::now() + Duration::from_secs(2);
    while shared.owned_count() > 0 && tokio::time::Instant::now() < handed_back {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    renew.abort();
    api.abort();
    lag.abort();
    let _ = base.micro.stop().await;
    let _ = base.nats.drain().await;
    tracing::info!("coordinator stopped");
}

async fn pull(consumer: &jetstream::consumer::PullConsumer) -> Result<pull::Stream, String> {
    consumer
        .stream()
        .max_messages_per_batch(256)
        .heartbeat(Duration::from_secs(5))
        .messages()
        .await
        .map_err(|e| e.to_string())
}

async fn pull_tasks(shared: Arc<Shared>, queues: TaskQueues, stop: CancellationToken) {
    loop {
        let (mut high, mut normal) = match (pull(&queues.high).await, pull(&queues.normal).await) {
            (Ok(h), Ok(n)) => (h, n),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot pull tasks; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        loop {
            // Backpressure: take no task while this replica runs its maximum of sessions.
            let permit = tokio::select! {
                p = shared.sessions.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = stop.cancelled() => return,
            };
            // With a slot free, any high task waiting goes before every normal one.
            let (queue, next) = tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                m = high.next() => (Priority::High, m),
                m = normal.next() => (Priority::Normal, m),
            };
            match next {
                Some(Ok(msg)) => {
                    tokio::spawn(intake::handle_task(shared.clone(), msg, queue, permit));
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, priority = queue.as_str(), "task pull error");
                    if matches!(
                        e.kind(),
                        async_nats::jetstream::consumer::pull::MessagesErrorKind::ConsumerDeleted
                    ) {
                        break;
                    }
                }
                None => break,
            }
        }
    }
}

/// Publishes each task queue's backlog, by `priority`: tasks not yet delivered to any
/// replica (`mabeam_coordinator_tasks_pending`) and delivered but not yet acked
/// (`mabeam_coordinator_tasks_ack_pending`). Every replica reports the same consumers, so
/// aggregate across instances with `max`, not `sum`.
async fn watch_backlog(queues: TaskQueues, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        for (queue, consumer) in [
            (Priority::High, &queues.high),
            (Priority::Normal, &queues.normal),
        ] {
            let label = queue.as_str();
            match consumer.get_info().await {
                Ok(info) => {
                    metrics::gauge!("mabeam_coordinator_tasks_pending", "priority" => label)
                        .set(info.num_pending as f64);
                    metrics::gauge!("mabeam_coordinator_tasks_ack_pending", "priority" => label)
                        .set(info.num_ack_pending as f64);
                }
                // Stale figures stay; the NATS outage shows in mabeam_dependency_up.
                Err(e) => {
                    tracing::debug!(error = %e, priority = label, "cannot read a task queue's backlog")
                }
            }
        }
    }
}

async fn renew_leases(shared: Arc<Shared>, shutdown: Shutdown) {
    let every = shared.config.lease / 3;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let leases: Vec<Lease> = shared
            .owned
            .lock()
            .map(|o| o.values().map(|x| x.lease.clone()).collect())
            .unwrap_or_default();
        match shared.store.renew(&leases, now_ms()).await {
            Ok(lost) => {
                for task in lost {
                    if let Ok(owned) = shared.owned.lock() {
                        if let Some(o) = owned.get(&task) {
                            o.lost.cancel();
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot renew leases"),
        }
        if shutdown.is_cancelled() && shared.owned_count() == 0 {
            return;
        }
    }
}

/// Claims sessions whose owner stopped renewing its lease, replays them and carries on.
async fn resume_orphans(shared: Arc<Shared>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(shared.config.resume_scan);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let orphans = match shared.store.orphans(now_ms(), 64).await {
            Ok(o) => o,
            Err(_) => continue,
        };
        for task in orphans {
            if shared.owns(&task) {
                continue;
            }
            let Ok(permit) = shared.sessions.clone().try_acquire_owned() else {
                break;
            };
            if let Err(e) = resume(shared.clone(), task.clone(), permit).await {
                tracing::warn!(task = %task, error = %e, "cannot resume session");
            }
        }
    }
}

async fn resume(
    shared: Arc<Shared>,
    task: TaskId,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<(), error::StoreError> {
    let Some(lease) = shared.store.take_over(&task, now_ms()).await? else {
        return Ok(());
    };
    let Some((record, log)) = shared.store.load(&task).await? else {
        return Ok(());
    };
    let started = std::time::Instant::now();
    let session = driver::session_init(&shared, &record)
        .and_then(|init| Session::start(init, record.started_ms));
    let session = match session {
        Ok(s) => s,
        Err(e) => {
            // The record passed validation when it started, so another build must have
            // written it: end the task with an explicit failure rather than retry forever.
            tracing::error!(task = %task, error = %e, "cannot rebuild a persisted session");
            let result = intake::failed_result(&record, format!("cannot resume the session: {e}"));
            shared.store.finish(&lease, &result).await?;
            shared.publish_result(&result).await;
            return Ok(());
        }
    };
    let lost = shared.own(&lease, permit);
    let vote_rate = driver::vote_limiter(&shared, &record);
    let mut driver = driver::Driver {
        shared: shared.clone(),
        lease,
        record,
        session,
        acker: None,
        vote_rate,
        lost,
        last_proposals: Default::default(),
    };
    let entries = log.len();
    let pending = driver.replay(log);
    metrics::counter!("mabeam_coordinator_sessions_resumed_total").increment(1);
    metrics::histogram!("mabeam_coordinator_resume_replay_seconds")
        .record(started.elapsed().as_secs_f64());
    shared
        .events
        .emit(EventKind::SessionResumed {
            task_id: task.clone(),
            session_id: driver.record.session_id.clone(),
            log_entries: u32::try_from(entries).unwrap_or(u32::MAX),
        })
        .await;
    tokio::spawn(driver.run(pending));
    Ok(())
}

async fn answer_session_queries(
    shared: Arc<Shared>,
    mut endpoint: async_nats::service::endpoint::Endpoint,
) {
    while let Some(request) = endpoint.next().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let msg = &request.message;
            if !shared.queries_rate.admit("sessions_get", "sessions_get") {
                let ct = reply::content_type(msg.headers.as_ref()).unwrap_or(ContentType::MsgPack);
                reply::respond_to(
                    &request,
                    reply::rate_limited_body(ct, subjects::SESSIONS_GET),
                )
                .await;
                return;
            }
            let answer = match reply::decode_message::<SessionQuery>(
                msg.headers.as_ref(),
                &msg.payload,
                &shared.limits,
            ) {
                Err(e) => {
                    let code = ErrorCode::from(&e);
                    reply::record_refusal("sessions_get", code, &e.to_string());
                    reply::error_body(ContentType::MsgPack, code, &e.to_string())
                }
                Ok((query, ct)) => match shared.store.view(&query.task_id).await {
                    Ok(Some(view)) => reply::ok_body(ct, &view),
                    Ok(None) => {
                        let m = format!("no task {} is known (never submitted, not yet picked up, or its result expired)", query.task_id);
                        reply::record_refusal("sessions_get", ErrorCode::UnknownTask, &m);
                        reply::error_body(ct, ErrorCode::UnknownTask, &m)
                    }
                    Err(e) => {
                        reply::record_refusal(
                            "sessions_get",
                            ErrorCode::Unavailable,
                            &e.to_string(),
                        );
                        reply::error_body(ct, ErrorCode::Unavailable, &e.to_string())
                    }
                },
            };
            reply::respond_to(&request, answer).await;
        });
    }
}
