//! From a task message to a running session: decode, validate, resolve participants, claim
//! the session in Redis, and hand it to a driver. Every refusal becomes a `rejected` result
//! (stored, published, acked) — never a silent drop.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{message::Acker, AckKind};
use mabeam_consensus::{AlgorithmSpec, Session};
use mabeam_protocol::{
    codec::decode,
    error::ErrorBody,
    session::TaskState,
    task::{Priority, TaskSubmission},
    telemetry::EventKind,
    ErrorCode, SessionId, Status, TaskId, TaskResult, PROTOCOL_VERSION,
};
use mabeam_runtime::{now_ms, reply};
use rand::Rng;

use crate::{
    deadletter::{retry_or_give_up, Delivery},
    driver::{session_init, Driver},
    error::Rejection,
    participants::{resolve, ResolveError},
    store::{SessionRecord, StartOutcome},
    Shared,
};

const NATS_MSG_ID: &str = "Nats-Msg-Id";

pub(crate) fn outcome(label: &'static str) {
    metrics::counter!("mabeam_coordinator_tasks_total", "outcome" => label).increment(1);
}

/// The id a task goes by: its own field, else the publisher's dedup id, else one derived
/// from its queue and stream position (stable across redeliveries, distinct across queues).
pub(crate) fn task_id_of(
    task: Option<&TaskSubmission>,
    headers: Option<&async_nats::HeaderMap>,
    queue: Priority,
    stream_seq: u64,
) -> TaskId {
    task.and_then(|t| t.task_id.clone())
        .or_else(|| {
            headers
                .and_then(|h| h.get(NATS_MSG_ID))
                .and_then(|v| TaskId::new(v.as_str()).ok())
        })
        .unwrap_or_else(|| sequence_id(queue, stream_seq))
}

#[allow(clippy::expect_used)]
fn random_session_id(n: u64) -> SessionId {
    SessionId::new(format!("s-{n:016x}")).expect("hex digits make a valid id")
}

/// A task message's position, unique across both queues: `<seq>` in the normal queue (as
/// before there were two), `high-<seq>` in the high one.
pub(crate) fn position(queue: Priority, stream_seq: u64) -> String {
    match queue {
        Priority::Normal => stream_seq.to_string(),
        Priority::High => format!("high-{stream_seq}"),
    }
}

#[allow(clippy::expect_used)]
fn sequence_id(queue: Priority, stream_seq: u64) -> TaskId {
    TaskId::new(format!("task-{}", position(queue, stream_seq))).expect("digits make a valid id")
}

pub(crate) async fn handle_task(
    shared: Arc<Shared>,
    msg: async_nats::jetstream::Message,
    queue: Priority,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (stream_seq, delivered, published_ms) = match msg.info() {
        Ok(info) => (
            info.stream_sequence,
            u64::try_from(info.delivered).unwrap_or(1),
            u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).ok(),
        ),
        Err(_) => (0, 1, None),
    };
    if let Some(published) = published_ms {
        metrics::histogram!("mabeam_coordinator_task_queue_wait_seconds", "priority" => queue.as_str())
            .record(now_ms().saturating_sub(published) as f64 / 1000.0);
    }
    let (message, acker) = msg.split();
    let delivery = Delivery {
        queue,
        stream_seq,
        delivered,
        payload: message.payload,
        headers: message.headers,
    };
    let decoded = reply::content_type(delivery.headers.as_ref())
        .and_then(|ct| decode::<TaskSubmission>(ct, &delivery.payload, &shared.limits));
    let task = match decoded {
        Ok(t) => t,
        Err(e) => {
            let id = task_id_of(None, delivery.headers.as_ref(), queue, stream_seq);
            let rejection = Rejection::new(ErrorCode::from(&e), e.to_string());
            return reject(&shared, &delivery, id, String::new(), rejection, acker).await;
        }
    };
    let task_id = task_id_of(Some(&task), delivery.headers.as_ref(), queue, stream_seq);
    // The subject decides; a priority field, when given, must agree with it.
    if let Some(asked) = task.priority.filter(|asked| *asked != queue) {
        let rejection = Rejection::new(
            ErrorCode::InvalidParams,
            format!(
                "the task asks for priority {asked} but was published on {}; publish it on {}",
                queue.subject(),
                asked.subject()
            ),
        );
        let algorithm = task.algorithm.clone();
        return reject(&shared, &delivery, task_id, algorithm, rejection, acker).await;
    }
    match shared.store.result(&task_id).await {
        Ok(Some(existing)) => {
            // Duplicate or redelivery: the task already has its one result.
            outcome("duplicate");
            shared.publish_result_core(&existing).await;
            let _ = acker.ack().await;
            return;
        }
        Ok(None) => {}
        Err(e) => {
            return retry_or_give_up(&shared, &delivery, &task_id, &e.to_string(), acker).await
        }
    }
    if let Err(e) = AlgorithmSpec::parse(&task.algorithm, &task.params) {
        let rejection = Rejection::new(e.code(), e.to_string());
        return reject(
            &shared,
            &delivery,
            task_id,
            task.algorithm.clone(),
            rejection,
            acker,
        )
        .await;
    }
    let electorate = match resolve(
        &shared.nats,
        &task.participants,
        shared.config.registry_timeout,
    )
    .await
    {
        Ok(e) => e,
        Err(ResolveError::Invalid(rejection)) => {
            return reject(
                &shared,
                &delivery,
                task_id,
                task.algorithm.clone(),
                rejection,
                acker,
            )
            .await
        }
        Err(ResolveError::Unavailable(why)) => {
            return retry_or_give_up(&shared, &delivery, &task_id, &why, acker).await
        }
    };
    let (session_id, seed) = {
        let mut rng = rand::thread_rng();
        (random_session_id(rng.gen()), rng.gen::<u64>())
    };
    let record = SessionRecord {
        task_id: task_id.clone(),
        session_id,
        task,
        electorate,
        seed,
        started_ms: now_ms(),
        submitted_ms: published_ms,
        clock_tolerance_ms: shared.config.clock_tolerance_ms,
    };
    // Build the machine before persisting anything, so a task it refuses leaves no state.
    let session = match session_init(&shared, &record)
        .and_then(|init| Session::start(init, record.started_ms))
    {
        Ok(s) => s,
        Err(e) => {
            let rejection = Rejection::new(e.code(), e.to_string());
            return reject(
                &shared,
                &delivery,
                task_id,
                record.task.algorithm.clone(),
                rejection,
                acker,
            )
            .await;
        }
    };
    match shared.store.start(&record, record.started_ms).await {
        Ok(StartOutcome::Started(lease)) => {
            outcome("accepted");
            shared
                .events
                .emit(EventKind::TaskAccepted {
                    task_id: task_id.clone(),
                    algorithm: record.task.algorithm.clone(),
                })
                .await;
            shared
                .events
                .emit(EventKind::SessionStarted {
                    task_id: task_id.clone(),
                    session_id: record.session_id.clone(),
                    algorithm: record.task.algorithm.clone(),
                    participants: record.electorate.len() as u32,
                })
                .await;
            let lost = shared.own(&lease, permit);
            let vote_rate = crate::driver::vote_limiter(&shared, &record);
            let driver = Driver {
                shared: shared.clone(),
                lease,
                record,
                session,
                acker: Some(acker),
                lost,
                last_proposals: Default::default(),
                vote_rate,
            };
            driver.run(None).await;
        }
        Ok(StartOutcome::AlreadyFinished) => {
            outcome("duplicate");
            let _ = acker.ack().await;
        }
        Ok(StartOutcome::OwnedElsewhere | StartOutcome::Orphaned) => {
            // Another replica runs it (or will resume it): wait for its result, then ack.
            outcome("duplicate");
            drop(permit);
            follow(shared, task_id, acker).await;
        }
        Err(e) => retry_or_give_up(&shared, &delivery, &task_id, &e.to_string(), acker).await,
    }
}

/// A result for a task that could not run to its end.
pub(crate) fn failed_result(record: &SessionRecord, reason: String) -> TaskResult {
    let mut result = bare_result(
        record.task_id.clone(),
        record.task.algorithm.clone(),
        Status::Failed,
        &reason,
    );
    result.session_id = Some(record.session_id.clone());
    result.participants = record.electorate.ids();
    result.error = Some(ErrorBody {
        code: ErrorCode::Internal,
        message: reason,
    });
    result
}

fn bare_result(task_id: TaskId, algorithm: String, status: Status, reason: &str) -> TaskResult {
    TaskResult {
        v: PROTOCOL_VERSION,
        task_id,
        session_id: None,
        algorithm,
        status,
        outcome: None,
        reason: Some(reason.to_owned()),
        rounds: 0,
        history: Vec::new(),
        switches: Vec::new(),
        participants: Vec::new(),
        faulty_detected: Vec::new(),
        certificate: None,
        error: None,
        timings: mabeam_protocol::result::Timings {
            submitted_ms: None,
            started_ms: None,
            finished_ms: Some(now_ms()),
            duration_ms: 0,
        },
    }
}

pub(crate) async fn reject(
    shared: &Shared,
    delivery: &Delivery,
    task_id: TaskId,
    algorithm: String,
    rejection: Rejection,
    acker: Acker,
) {
    outcome("rejected");
    metrics::counter!("mabeam_coordinator_tasks_rejected_total", "code" => rejection.code.as_str())
        .increment(1);
    tracing::warn!(task = %task_id, code = rejection.code.as_str(), message = %rejection.message, "task rejected");
    let mut result = bare_result(
        task_id.clone(),
        algorithm,
        Status::Rejected,
        &rejection.message,
    );
    result.error = Some(ErrorBody {
        code: rejection.code,
        message: rejection.message.clone(),
    });
    match shared.store.store_unsessioned_result(&result).await {
        Ok(true) => {
            shared.publish_result(&result).await;
            shared
                .events
                .emit(EventKind::TaskRejected {
                    task_id: Some(task_id),
                    code: rejection.code,
                    message: rejection.message,
                })
                .await;
        }
        // A result already exists (a racing duplicate): the first one stands.
        Ok(false) => {}
        Err(e) => {
            return retry_or_give_up(shared, delivery, &result.task_id, &e.to_string(), acker).await
        }
    }
    let _ = acker.ack().await;
}

/// Holds a task message whose session another replica runs: signals progress so JetStream
/// does not redeliver it, and acks once the result is stored. On shutdown it is handed back.
pub(crate) async fn follow(shared: Arc<Shared>, task: TaskId, acker: Acker) {
    let poll = shared.config.resume_scan.max(Duration::from_millis(50));
    let progress_every = shared.config.ack_wait / 2;
    let mut last_progress = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = shared.handover.cancelled() => {
                let _ = acker.ack_with(AckKind::Nak(None)).await;
                return;
            }
        }
        match shared.store.progress(&task).await {
            Ok(TaskState::Finished) => {
                let _ = acker.ack().await;
                return;
            }
            Ok(TaskState::Running) | Err(_) => {}
            // Neither result nor session: the state is gone (e.g. Redis lost it); run it again.
            Ok(TaskState::Queued) => {
                let _ = acker.ack_with(AckKind::Nak(None)).await;
                return;
            }
        }
        if last_progress.elapsed() >= progress_every {
            let _ = acker.ack_with(AckKind::Progress).await;
            last_progress = tokio::time::Instant::now();
        }
    }
}
