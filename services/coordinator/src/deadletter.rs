//! Redelivery with backoff, and the dead-letter stream for tasks that cannot be handled.
//!
//! A task that cannot be handled now (registry or Redis unreachable) is nak'ed with a delay
//! that doubles per delivery. On its last delivery (`max_deliver`) it is given up instead:
//! its original body and headers go to the `MABEAM_DEADLETTER` stream with the reason, and
//! only then is the task message acked, so nothing accepted is ever dropped silently.
//!
//! A message can also run out of deliveries without any replica seeing its last one (the
//! replicas holding it died, or it was handed back on shutdown). JetStream announces that
//! with a max-deliveries advisory; one replica (queue group) picks it up, and dead-letters the
//! message unless its session ran or runs (then the result is, or will be, stored anyway).

use std::{sync::Arc, time::Duration};

use async_nats::{
    jetstream::{message::Acker, AckKind},
    HeaderMap,
};
use bytes::Bytes;
use futures::StreamExt;
use mabeam_protocol::{
    codec::decode,
    session::TaskState,
    subjects,
    task::{Priority, TaskSubmission},
    telemetry::EventKind,
    TaskId,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::{Shared, CONSUMER};

/// One delivery of a task message: what is needed to retry it or to dead-letter it.
pub(crate) struct Delivery {
    /// The queue (task stream) the message is in.
    pub(crate) queue: Priority,
    pub(crate) stream_seq: u64,
    /// How many times JetStream has delivered this message, this delivery included.
    pub(crate) delivered: u64,
    pub(crate) payload: Bytes,
    pub(crate) headers: Option<HeaderMap>,
}

/// Delay before the next delivery after `delivered` attempts: `base`, doubling, capped.
pub(crate) fn retry_delay(delivered: u64, base: Duration, max: Duration) -> Duration {
    let doublings = delivered.saturating_sub(1).min(32) as u32;
    base.saturating_mul(2u32.saturating_pow(doublings)).min(max)
}

/// The task cannot be handled now: redeliver it later with backoff, or, on its last
/// delivery, move it to the dead-letter stream.
pub(crate) async fn retry_or_give_up(
    shared: &Shared,
    delivery: &Delivery,
    task: &TaskId,
    why: &str,
    acker: Acker,
) {
    let last = i64::try_from(delivery.delivered).unwrap_or(i64::MAX) >= shared.config.max_deliver;
    if last {
        let reason = format!("given up after {} deliveries: {why}", delivery.delivered);
        match dead_letter(shared, delivery, Some(task), &reason, "last_delivery").await {
            Ok(()) => {
                let _ = acker.ack().await;
                return;
            }
            // Not stored: leave the message to JetStream, whose advisory brings it back here.
            Err(e) => tracing::error!(task = %task, error = %e, "cannot dead-letter a task"),
        }
    }
    crate::intake::outcome("deferred");
    let delay = retry_delay(
        delivery.delivered,
        shared.config.retry_base,
        shared.config.retry_max,
    );
    tracing::warn!(task = %task, reason = why, delivered = delivery.delivered, retry_in_ms = delay.as_millis() as u64, "task deferred; it will be redelivered");
    let _ = acker.ack_with(AckKind::Nak(Some(delay))).await;
}

/// Header values must be one line of visible text.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect()
}

/// Stores the task message in the dead-letter stream (idempotent per stream sequence) and
/// reports it.
async fn dead_letter(
    shared: &Shared,
    delivery: &Delivery,
    task: Option<&TaskId>,
    reason: &str,
    path: &'static str,
) -> Result<(), String> {
    let mut headers = HeaderMap::new();
    if let Some(original) = &delivery.headers {
        for (name, values) in original.iter() {
            // JetStream's own headers (dedup id, expectations) would act on the new stream.
            if AsRef::<str>::as_ref(name).starts_with("Nats-") {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    headers.insert(subjects::DEADLETTER_REASON_HEADER, header_text(reason));
    if let Some(task) = task {
        headers.insert(subjects::DEADLETTER_TASK_HEADER, task.as_str());
    }
    headers.insert(
        subjects::DEADLETTER_DELIVERIES_HEADER,
        delivery.delivered.to_string(),
    );
    headers.insert(
        subjects::DEADLETTER_SEQUENCE_HEADER,
        delivery.stream_seq.to_string(),
    );
    headers.insert(subjects::DEADLETTER_STREAM_HEADER, delivery.queue.stream());
    // Both paths (last delivery, advisory) may see the same message: one dead letter.
    let position = crate::intake::position(delivery.queue, delivery.stream_seq);
    headers.insert("Nats-Msg-Id", format!("deadletter-{position}"));
    shared
        .js
        .publish_with_headers(
            subjects::TASKS_DEADLETTER,
            headers,
            delivery.payload.clone(),
        )
        .await
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    metrics::counter!("mabeam_coordinator_tasks_dead_lettered_total", "path" => path).increment(1);
    tracing::error!(task = ?task.map(TaskId::as_str), stream_seq = delivery.stream_seq, deliveries = delivery.delivered, reason, "task moved to the dead-letter stream");
    shared
        .events
        .emit(EventKind::TaskDeadLettered {
            task_id: task.cloned(),
            reason: reason.to_owned(),
            deliveries: delivery.delivered,
        })
        .await;
    Ok(())
}

/// The fields of `io.nats.jetstream.advisory.v1.max_deliver` we use.
#[derive(Debug, Deserialize)]
struct MaxDeliveries {
    stream: String,
    stream_seq: u64,
    deliveries: u64,
}

/// The advisories JetStream publishes when a message of a task stream (either queue) has
/// used all its deliveries; the stream is named in the advisory.
pub(crate) fn advisory_subject() -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.{CONSUMER}")
}

/// Handles max-deliveries advisories until `stop` (one replica per advisory).
pub(crate) async fn watch_exhausted(
    shared: Arc<Shared>,
    mut advisories: async_nats::Subscriber,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            m = advisories.next() => match m { Some(m) => m, None => return },
            _ = stop.cancelled() => return,
        };
        let advisory: MaxDeliveries = match serde_json::from_slice(&msg.payload) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable max-deliveries advisory");
                continue;
            }
        };
        if let Err(e) = exhausted(&shared, advisory).await {
            tracing::error!(error = %e, "cannot handle an exhausted task message; it stays in the task stream");
        }
    }
}

async fn exhausted(shared: &Shared, advisory: MaxDeliveries) -> Result<(), String> {
    // Another stream's consumer may share the name: not ours.
    let Some(queue) = Priority::of_stream(&advisory.stream) else {
        return Ok(());
    };
    let stream = shared
        .js
        .get_stream(queue.stream())
        .await
        .map_err(|e| e.to_string())?;
    // Gone already: acked in the meantime.
    let Ok(message) = stream.get_raw_message(advisory.stream_seq).await else {
        return Ok(());
    };
    let delivery = Delivery {
        queue,
        stream_seq: advisory.stream_seq,
        delivered: advisory.deliveries,
        payload: message.payload,
        headers: Some(message.headers),
    };
    let task = task_id_of(shared, &delivery);
    match shared.store.progress(&task).await.ok() {
        // Its session ran or runs: the result is (or will be) stored and published; the
        // message has nothing left to do.
        Some(TaskState::Finished | TaskState::Running) => {
            tracing::info!(task = %task, "exhausted task message already has a session; removed");
        }
        // Never run, or its state is unknown (Redis down): keep it for an operator.
        Some(TaskState::Queued) | None => {
            let reason = format!(
                "not acknowledged after {} deliveries (the replicas holding it stopped or handed it back)",
                advisory.deliveries
            );
            dead_letter(shared, &delivery, Some(&task), &reason, "advisory").await?;
        }
    }
    stream
        .delete_message(advisory.stream_seq)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The task id of a stored task message, as intake would name it.
fn task_id_of(shared: &Shared, delivery: &Delivery) -> TaskId {
    let task: Option<TaskSubmission> =
        mabeam_runtime::reply::content_type(delivery.headers.as_ref())
            .ok()
            .and_then(|ct| decode(ct, &delivery.payload, &shared.limits).ok());
    crate::intake::task_id_of(
        task.as_ref(),
        delivery.headers.as_ref(),
        delivery.queue,
        delivery.stream_seq,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_from_the_base_up_to_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        let delays: Vec<u128> = (1..=7)
            .map(|n| retry_delay(n, base, max).as_millis())
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(retry_delay(u64::MAX, base, max), max);
        assert_eq!(retry_delay(0, base, max), base);
    }

    #[test]
    fn header_text_is_one_bounded_line() {
        let t = header_text(&format!("a\r\nb{}", "x".repeat(5000)));
        assert!(!t.contains('\n') && !t.contains('\r'));
        assert_eq!(t.chars().count(), 1024);
    }
}
