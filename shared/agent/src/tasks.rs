//! Submitting tasks and waiting for their results: the client side every application,
//! `mabeamctl` and the [`crate::swarm`] helpers share.
//!
//! A task goes through JetStream on the subject of its priority (`mabeam.tasks.submit`, or
//! `mabeam.tasks.submit.high`) with its id as `Nats-Msg-Id`, so re-publishing it within the
//! stream's duplicate window queues it once. Its result arrives on `mabeam.results.<task_id>`
//! and stays in the `MABEAM_RESULTS` stream, where a waiter that missed the live copy (it
//! subscribed late, or the task was a duplicate that finished long ago) finds it.
//!
//! ```no_run
//! use std::time::Duration;
//! use mabeam_agent::tasks::TaskClient;
//! use mabeam_protocol::{task::TaskSubmission, ContentType};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let tasks = TaskClient::new(client);
//! let task: TaskSubmission = serde_json::from_value(serde_json::json!({
//!     "algorithm": "majority", "options": ["ship", "wait"], "participants": {"all": true},
//!     "priority": "high"
//! }))?;
//! let result = tasks.decide(task, ContentType::MsgPack, Duration::from_secs(35)).await?;
//! println!("{:?}: {:?}", result.status, result.outcome);
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use async_nats::{
    jetstream::{self, context::PublishErrorKind},
    Client, HeaderMap, Subscriber,
};
use futures::StreamExt as _;
use mabeam_protocol::{
    codec::{encode, CONTENT_TYPE_HEADER},
    subjects,
    task::{Priority, TaskSubmission},
    ContentType, Limits, TaskId, TaskResult,
};
use mabeam_runtime::reply;
use tokio::time::Instant;

/// Why a task could not be submitted or its result not obtained.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// JetStream has no stream for the subject: no coordinator has started against this
    /// NATS (coordinators create the task streams).
    #[error("no stream captures {subject}: no coordinator has created the {priority} task queue — is mabeam running?")]
    NoTaskStream {
        priority: Priority,
        subject: &'static str,
    },
    #[error("the task has no task_id; give it one (see TaskClient::generate_id)")]
    NoTaskId,
    #[error("cannot encode the task: {0}")]
    Encode(String),
    #[error("{subject}: {message}")]
    Nats { subject: String, message: String },
    /// Neither a live result nor a stored one arrived in time; the task may still run.
    #[error("no result for task {task_id} within {waited:?}, live or in the results stream; it may still be running")]
    NoResult { task_id: TaskId, waited: Duration },
}

/// What JetStream said when it took a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    pub task_id: TaskId,
    /// `MABEAM_TASKS` or `MABEAM_TASKS_HIGH`.
    pub stream: String,
    pub sequence: u64,
    /// The id was already in the stream's duplicate window: not queued again.
    pub duplicate: bool,
}

/// Submits tasks and waits for results over one NATS connection.
#[derive(Debug, Clone)]
pub struct TaskClient {
    client: Client,
    js: jetstream::Context,
    limits: Limits,
}

impl TaskClient {
    /// JetStream requests (publish acknowledgements, stored results) wait up to 5 s.
    pub fn new(client: Client) -> Self {
        Self::with_request_timeout(client, Duration::from_secs(5))
    }

    pub fn with_request_timeout(client: Client, timeout: Duration) -> Self {
        let mut js = jetstream::new(client.clone());
        js.set_timeout(timeout);
        Self {
            client,
            js,
            limits: Limits::default(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A fresh task id, `<prefix>-<ms>-<random>`: ids from many processes do not collide.
    pub fn generate_id(prefix: &str) -> Result<TaskId, mabeam_protocol::IdError> {
        let suffix: u32 = rand::random();
        TaskId::new(format!(
            "{prefix}-{}-{suffix:08x}",
            mabeam_runtime::now_ms()
        ))
    }

    /// Publishes `task` on its priority's subject and waits for the stream's
    /// acknowledgement. The task must have an id (it is the dedup id).
    pub async fn submit(
        &self,
        task: &TaskSubmission,
        ct: ContentType,
    ) -> Result<Submitted, TaskError> {
        let task_id = task.task_id.clone().ok_or(TaskError::NoTaskId)?;
        let body = encode(ct, task).map_err(|e| TaskError::Encode(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE_HEADER, ct.header_value());
        headers.insert(async_nats::header::NATS_MESSAGE_ID, task_id.as_str());
        let priority = task.requested_priority();
        let subject = priority.subject();
        let failed = |kind: PublishErrorKind, message: String| match kind {
            PublishErrorKind::StreamNotFound => TaskError::NoTaskStream { priority, subject },
            _ => TaskError::Nats {
                subject: subject.to_owned(),
                message,
            },
        };
        let ack = self
            .js
            .publish_with_headers(subject, headers, body.into())
            .await
            .map_err(|e| failed(e.kind(), e.to_string()))?
            .await
            .map_err(|e| failed(e.kind(), e.to_string()))?;
        Ok(Submitted {
            task_id,
            stream: ack.stream,
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// Starts listening for `task`'s live result. Call it before [`submit`](Self::submit),
    /// so even an instant result is not missed.
    pub async fn watch(&self, task: &TaskId) -> Result<ResultWatch, TaskError> {
        let subject = subjects::results(task);
        let live = self
            .client
            .subscribe(subject.clone())
            .await
            .map_err(|e| TaskError::Nats {
                subject: subject.clone(),
                message: e.to_string(),
            })?;
        Ok(ResultWatch {
            client: self.clone(),
            task: task.clone(),
            live,
        })
    }

    /// The result kept in the results stream for `task`, if there is one.
    pub async fn stored_result(&self, task: &TaskId) -> Option<TaskResult> {
        let stream = self.js.get_stream(subjects::RESULTS_STREAM).await.ok()?;
        let message = stream
            .get_last_raw_message_by_subject(&subjects::results(task))
            .await
            .ok()?;
        reply::decode_message::<TaskResult>(Some(&message.headers), &message.payload, &self.limits)
            .ok()
            .map(|(result, _)| result)
    }

    /// Submits `task` (an id is generated when it has none) and waits up to `wait` for its
    /// result: live, or from the results stream when the live copy was missed or the task
    /// was a duplicate of one already finished.
    pub async fn decide(
        &self,
        mut task: TaskSubmission,
        ct: ContentType,
        wait: Duration,
    ) -> Result<TaskResult, TaskError> {
        let task_id = match &task.task_id {
            Some(id) => id.clone(),
            None => {
                let id = Self::generate_id("task").map_err(|e| TaskError::Encode(e.to_string()))?;
                task.task_id = Some(id.clone());
                id
            }
        };
        let mut watch = self.watch(&task_id).await?;
        let submitted = self.submit(&task, ct).await?;
        watch.result(&submitted, wait).await
    }
}

/// A subscription to one task's result.
#[derive(Debug)]
pub struct ResultWatch {
    client: TaskClient,
    task: TaskId,
    live: Subscriber,
}

impl ResultWatch {
    /// The result of the task `submitted` describes, waiting up to `wait`: live, or stored
    /// in the results stream when the live copy does not come in time. A duplicate of a task
    /// that already finished is answered from the results stream at once. Messages on the
    /// result subject that are not a readable result are skipped, with a warning: a stray
    /// publisher must not end the wait.
    pub async fn result(
        &mut self,
        submitted: &Submitted,
        wait: Duration,
    ) -> Result<TaskResult, TaskError> {
        if submitted.duplicate {
            if let Some(result) = self.client.stored_result(&self.task).await {
                return Ok(result);
            }
        }
        let deadline = Instant::now() + wait;
        loop {
            let Ok(Some(message)) = tokio::time::timeout_at(deadline, self.live.next()).await
            else {
                // Timed out, or the connection closed: the results stream may still hold it.
                return match self.client.stored_result(&self.task).await {
                    Some(result) => Ok(result),
                    None => Err(TaskError::NoResult {
                        task_id: self.task.clone(),
                        waited: wait,
                    }),
                };
            };
            match reply::decode_message::<TaskResult>(
                message.headers.as_ref(),
                &message.payload,
                &self.client.limits,
            ) {
                Ok((result, _)) => return Ok(result),
                Err(e) => tracing::warn!(
                    task = %self.task,
                    subject = %message.subject,
                    error = %e,
                    "skipping an undecodable message on a result subject"
                ),
            }
        }
    }
}
