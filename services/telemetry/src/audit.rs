//! The audit trail: every event as one entry of the bounded Redis Stream `mabeam:audit`,
//! written in pipelined batches, and the newest-first query over it.
//!
//! Entry fields: `service`, `kind`, `task`, `agent`, `session` (empty when the event has
//! none; every entry has the same fields so Redis stores them compactly) and `event`, the
//! whole [`TelemetryEvent`] as MessagePack. The entry id is Redis' own `<ms>-<seq>` at
//! ingest, so time ranges are id ranges and need no index.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use mabeam_protocol::{
    codec::{decode, ContentType},
    telemetry::{AuditPage, AuditQuery, AuditRecord, EventKind, TelemetryEvent},
    AgentId, Limits, SessionId, TaskId, PROTOCOL_VERSION,
};
use redis::{aio::ConnectionManager, streams::StreamRangeReply, Value};

use crate::AuditError;

/// The stream key.
pub const AUDIT_STREAM: &str = "mabeam:audit";
/// Records per query when the query gives no limit.
pub const DEFAULT_LIMIT: u32 = 100;
/// Most records one query returns.
pub const MAX_LIMIT: u32 = 10_000;
/// Entries read per round trip while filtering.
const SCAN_CHUNK: usize = 2_000;

/// One event, ready to be appended.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    service: &'static str,
    kind: &'static str,
    task: String,
    agent: String,
    session: String,
    /// The event as MessagePack.
    event: Bytes,
}

impl AuditEntry {
    /// `encoded` is `event` as MessagePack. Events that name only a session get the task
    /// `sessions` knows for it, so a query by task finds its ballot rejections too.
    pub fn new(event: TelemetryEvent, encoded: Bytes, sessions: &mut SessionIndex) -> Self {
        let service = event.service.as_str();
        let kind = event.event.name();
        let (task, session, agent) = into_ids(event.event);
        let task = match (task, &session) {
            (Some(task), Some(session)) => {
                sessions.remember(session, &task);
                String::from(task)
            }
            (Some(task), None) => String::from(task),
            (None, Some(session)) => sessions.task_of(session).unwrap_or_default().to_owned(),
            (None, None) => String::new(),
        };
        Self {
            service,
            kind,
            task,
            agent: agent.map(String::from).unwrap_or_default(),
            session: session.map(String::from).unwrap_or_default(),
            event: encoded,
        }
    }
}

/// The task, session and agent an event is about (moved out: this runs for every event).
fn into_ids(event: EventKind) -> (Option<TaskId>, Option<SessionId>, Option<AgentId>) {
    match event {
        EventKind::TaskAccepted { task_id, .. } => (Some(task_id), None, None),
        EventKind::TaskRejected { task_id, .. } | EventKind::TaskDeadLettered { task_id, .. } => {
            (task_id, None, None)
        }
        EventKind::SessionStarted {
            task_id,
            session_id,
            ..
        }
        | EventKind::SessionResumed {
            task_id,
            session_id,
            ..
        }
        | EventKind::SessionFinished {
            task_id,
            session_id,
            ..
        } => (Some(task_id), Some(session_id), None),
        EventKind::AlgorithmSwitched { session_id, .. } => (None, Some(session_id), None),
        EventKind::BallotRejected {
            session_id,
            agent_id,
            ..
        }
        | EventKind::EquivocationDetected {
            session_id,
            agent_id,
            ..
        } => (None, Some(session_id), Some(agent_id)),
        EventKind::AgentStatusChanged { agent_id, .. } => (None, None, Some(agent_id)),
        EventKind::FaultInjected { .. } | EventKind::FaultHealed { .. } => (None, None, None),
    }
}

/// Session → task for recent sessions, bounded (oldest forgotten first).
#[derive(Debug)]
pub struct SessionIndex {
    tasks: HashMap<String, String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl SessionIndex {
    pub fn new(capacity: usize) -> Self {
        Self {
            tasks: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn remember(&mut self, session: &SessionId, task: &TaskId) {
        if self.tasks.contains_key(session.as_str()) {
            return;
        }
        if self.order.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.tasks.remove(&oldest);
            }
        }
        self.order.push_back(session.as_str().to_owned());
        self.tasks
            .insert(session.as_str().to_owned(), task.as_str().to_owned());
    }

    fn task_of(&self, session: &SessionId) -> Option<&str> {
        self.tasks.get(session.as_str()).map(String::as_str)
    }
}

/// Appends a batch with one pipelined round trip; the stream is trimmed to about
/// `max_len` entries as it goes (`~` lets Redis trim whole nodes, which is much cheaper).
pub async fn append(
    redis: &mut ConnectionManager,
    max_len: u64,
    entries: &[AuditEntry],
) -> redis::RedisResult<()> {
    // Sized up front: this runs for every event, and growing buffers showed in profiles.
    let mut pipe = redis::Pipeline::with_capacity(entries.len());
    for e in entries {
        let data = 96 + e.task.len() + e.agent.len() + e.session.len() + e.event.len();
        let mut cmd = redis::Cmd::with_capacity(18, data);
        cmd.arg("XADD")
            .arg(AUDIT_STREAM)
            .arg("MAXLEN")
            .arg("~")
            .arg(max_len)
            .arg("*")
            .arg("service")
            .arg(e.service)
            .arg("kind")
            .arg(e.kind)
            .arg("task")
            .arg(&e.task)
            .arg("agent")
            .arg(&e.agent)
            .arg("session")
            .arg(&e.session)
            .arg("event")
            .arg(e.event.as_ref());
        pipe.add_command(cmd).ignore();
    }
    pipe.query_async::<()>(redis).await
}

/// A checked [`AuditQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    task: Option<String>,
    agent: Option<String>,
    /// XREVRANGE bounds: ids or `-`/`+`.
    start: String,
    end: String,
    limit: usize,
}

impl Filter {
    pub fn new(query: &AuditQuery) -> Result<Self, AuditError> {
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(AuditError::InvalidQuery(format!(
                "limit must be between 1 and {MAX_LIMIT}, got {limit}"
            )));
        }
        if let (Some(since), Some(until)) = (query.since_ms, query.until_ms) {
            if since > until {
                return Err(AuditError::InvalidQuery(format!(
                    "since_ms ({since}) is after until_ms ({until})"
                )));
            }
        }
        Ok(Self {
            task: query.task_id.as_ref().map(|t| t.as_str().to_owned()),
            agent: query.agent_id.as_ref().map(|a| a.as_str().to_owned()),
            // A bare millisecond id means `<ms>-0` as a start and `<ms>-<max>` as an end,
            // so both bounds are inclusive.
            start: query
                .since_ms
                .map_or_else(|| "-".to_owned(), |ms| ms.to_string()),
            end: query
                .until_ms
                .map_or_else(|| "+".to_owned(), |ms| ms.to_string()),
            limit: limit as usize,
        })
    }

    fn filters(&self) -> bool {
        self.task.is_some() || self.agent.is_some()
    }
}

/// Reads entries newest first and keeps those matching `filter`.
///
/// Without task or agent filter this is one XREVRANGE of `limit` entries. With one, the
/// stream is scanned in chunks until `limit` matches or the range ends; the stream is
/// bounded, so the scan is too. A task filter also matches the session-only events (ballot
/// rejections, equivocations, switches) of the sessions found for that task.
pub async fn query(
    redis: &mut ConnectionManager,
    filter: &Filter,
    limits: &Limits,
) -> Result<AuditPage, AuditError> {
    let chunk = if filter.filters() {
        SCAN_CHUNK.max(filter.limit)
    } else {
        filter.limit
    };
    let mut records = Vec::new();
    let mut sessions: HashSet<String> = HashSet::new();
    let mut end = filter.end.clone();
    loop {
        let reply: StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(AUDIT_STREAM)
            .arg(&end)
            .arg(&filter.start)
            .arg("COUNT")
            .arg(chunk)
            .query_async(redis)
            .await
            .map_err(|e| AuditError::Unavailable(e.to_string()))?;
        let read = reply.ids.len();
        let mut last = None;
        for entry in reply.ids {
            if matches(filter, &entry.map, &mut sessions) {
                match entry.map.get("event").map(|v| decode_event(v, limits)) {
                    Some(Ok(event)) => records.push(AuditRecord {
                        id: entry.id.clone(),
                        event,
                    }),
                    _ => {
                        metrics::counter!("mabeam_telemetry_audit_undecodable_total").increment(1);
                        tracing::warn!(id = %entry.id, "audit entry without a decodable event; skipped");
                    }
                }
                if records.len() >= filter.limit {
                    return Ok(page(records));
                }
            }
            last = Some(entry.id);
        }
        match last {
            Some(id) if read >= chunk => end = format!("({id}"),
            _ => return Ok(page(records)),
        }
    }
}

fn page(records: Vec<AuditRecord>) -> AuditPage {
    AuditPage {
        v: PROTOCOL_VERSION,
        records,
    }
}

fn text(value: Option<&Value>) -> &str {
    match value {
        Some(Value::BulkString(bytes)) => std::str::from_utf8(bytes).unwrap_or_default(),
        Some(Value::SimpleString(s)) => s,
        _ => "",
    }
}

fn matches(
    filter: &Filter,
    fields: &HashMap<String, Value>,
    sessions: &mut HashSet<String>,
) -> bool {
    if let Some(agent) = &filter.agent {
        if text(fields.get("agent")) != agent {
            return false;
        }
    }
    let Some(task) = &filter.task else {
        return true;
    };
    let session = text(fields.get("session"));
    let entry_task = text(fields.get("task"));
    if entry_task == task {
        if !session.is_empty() {
            sessions.insert(session.to_owned());
        }
        return true;
    }
    // Newest first: a session's SessionFinished comes before its ballot events.
    entry_task.is_empty() && !session.is_empty() && sessions.contains(session)
}

fn decode_event(value: &Value, limits: &Limits) -> Result<TelemetryEvent, String> {
    match value {
        Value::BulkString(bytes) => {
            decode(ContentType::MsgPack, bytes, limits).map_err(|e| e.to_string())
        }
        other => Err(format!("unexpected Redis value {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use mabeam_protocol::{result::FaultReason, telemetry::Service};

    use super::*;

    fn event(kind: EventKind) -> TelemetryEvent {
        TelemetryEvent {
            v: 1,
            service: Service::Coordinator,
            instance: "c1".into(),
            at_ms: 1,
            event: kind,
        }
    }

    #[test]
    fn limits_and_ranges_are_checked() {
        let ok = Filter::new(&AuditQuery::default()).unwrap();
        assert_eq!(ok.limit, 100);
        assert_eq!((ok.start.as_str(), ok.end.as_str()), ("-", "+"));
        for limit in [0, MAX_LIMIT + 1] {
            let e = Filter::new(&AuditQuery {
                limit: Some(limit),
                ..AuditQuery::default()
            })
            .unwrap_err();
            assert!(e.to_string().contains("limit must be between"), "{e}");
            assert_eq!(e.code(), mabeam_protocol::ErrorCode::InvalidParams);
        }
        let e = Filter::new(&AuditQuery {
            since_ms: Some(10),
            until_ms: Some(9),
            ..AuditQuery::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("after until_ms"), "{e}");
        let f = Filter::new(&AuditQuery {
            since_ms: Some(5),
            until_ms: Some(5),
            limit: Some(MAX_LIMIT),
            ..AuditQuery::default()
        })
        .unwrap();
        assert_eq!((f.start.as_str(), f.end.as_str()), ("5", "5"));
    }

    #[test]
    fn session_events_inherit_the_task_of_their_session() {
        let mut index = SessionIndex::new(1);
        let task = TaskId::new("t1").unwrap();
        let session = SessionId::new("s1").unwrap();
        let started = AuditEntry::new(
            event(EventKind::SessionStarted {
                task_id: task.clone(),
                session_id: session.clone(),
                algorithm: "majority".into(),
                participants: 3,
            }),
            Bytes::new(),
            &mut index,
        );
        assert_eq!(
            (started.task.as_str(), started.session.as_str()),
            ("t1", "s1")
        );
        let rejected = AuditEntry::new(
            event(EventKind::BallotRejected {
                session_id: session.clone(),
                agent_id: AgentId::new("a1").unwrap(),
                reason: FaultReason::Replay,
            }),
            Bytes::new(),
            &mut index,
        );
        assert_eq!(rejected.task, "t1");
        assert_eq!(rejected.agent, "a1");
        assert_eq!(rejected.kind, "ballot_rejected");

        // Capacity 1: a newer session evicts the older one.
        AuditEntry::new(
            event(EventKind::SessionStarted {
                task_id: TaskId::new("t2").unwrap(),
                session_id: SessionId::new("s2").unwrap(),
                algorithm: "majority".into(),
                participants: 3,
            }),
            Bytes::new(),
            &mut index,
        );
        assert_eq!(index.task_of(&session), None);
    }
}
