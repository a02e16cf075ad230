//! Typed events every service publishes on `mabeam.events.<service>.<kind>`.

use serde::{Deserialize, Serialize};

use crate::{
    codec::impl_message,
    current_version,
    error::ErrorCode,
    registry::AgentStatus,
    result::{FaultReason, Status},
    session::EquivocationEvidence,
    AgentId, SessionId, TaskId,
};

/// The service that emitted an event; also the second subject token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    Registry,
    Coordinator,
    FaultInjector,
    Telemetry,
    Agent,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registry => "registry",
            Self::Coordinator => "coordinator",
            Self::FaultInjector => "fault_injector",
            Self::Telemetry => "telemetry",
            Self::Agent => "agent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    TaskAccepted {
        task_id: TaskId,
        algorithm: String,
    },
    TaskRejected {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_id: Option<TaskId>,
        code: ErrorCode,
        message: String,
    },
    /// A task message was given up after its last delivery and moved to the dead-letter
    /// stream with the reason.
    TaskDeadLettered {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task_id: Option<TaskId>,
        reason: String,
        deliveries: u64,
    },
    SessionStarted {
        task_id: TaskId,
        session_id: SessionId,
        algorithm: String,
        participants: u32,
    },
    /// A replica took over a session whose owner's lease expired (crash, partition, kill -9)
    /// and resumed it from its persisted log.
    SessionResumed {
        task_id: TaskId,
        session_id: SessionId,
        /// Log entries replayed to rebuild it.
        log_entries: u32,
    },
    SessionFinished {
        task_id: TaskId,
        session_id: SessionId,
        algorithm: String,
        status: Status,
        rounds: u32,
        duration_ms: u64,
    },
    AlgorithmSwitched {
        session_id: SessionId,
        from: String,
        to: String,
        reason: String,
    },
    BallotRejected {
        session_id: SessionId,
        agent_id: AgentId,
        reason: FaultReason,
    },
    EquivocationDetected {
        session_id: SessionId,
        agent_id: AgentId,
        /// The two signed ballots, so the audit trail holds the proof itself (anyone with
        /// the agent's public key can check it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        evidence: Option<Box<EquivocationEvidence>>,
    },
    AgentStatusChanged {
        agent_id: AgentId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<AgentStatus>,
        to: AgentStatus,
    },
    FaultInjected {
        fault_id: String,
        description: String,
    },
    FaultHealed {
        fault_id: String,
    },
}

impl EventKind {
    /// The last subject token for this event.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TaskAccepted { .. } => "task_accepted",
            Self::TaskRejected { .. } => "task_rejected",
            Self::TaskDeadLettered { .. } => "task_dead_lettered",
            Self::SessionStarted { .. } => "session_started",
            Self::SessionResumed { .. } => "session_resumed",
            Self::SessionFinished { .. } => "session_finished",
            Self::AlgorithmSwitched { .. } => "algorithm_switched",
            Self::BallotRejected { .. } => "ballot_rejected",
            Self::EquivocationDetected { .. } => "equivocation_detected",
            Self::AgentStatusChanged { .. } => "agent_status_changed",
            Self::FaultInjected { .. } => "fault_injected",
            Self::FaultHealed { .. } => "fault_healed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryEvent {
    #[serde(default = "current_version")]
    pub v: u16,
    pub service: Service,
    /// Emitting instance (pod or process name).
    pub instance: String,
    pub at_ms: u64,
    pub event: EventKind,
}

impl_message!(TelemetryEvent => "telemetry event");

/// Audit-trail query (`mabeam.telemetry.audit`, or `GET /audit` on telemetry's HTTP port).
/// Filters combine with AND.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    #[serde(default = "current_version")]
    pub v: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_id: Option<TaskId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// Newest first; at most this many (default 100, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Matches everything; carries the current protocol version (a derived default would say 0,
/// which every decoder refuses).
impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            task_id: Default::default(),
            agent_id: Default::default(),
            since_ms: Default::default(),
            until_ms: Default::default(),
            limit: Default::default(),
        }
    }
}

impl_message!(AuditQuery => "audit query");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Redis Stream entry id.
    pub id: String,
    pub event: TelemetryEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditPage {
    #[serde(default = "current_version")]
    pub v: u16,
    pub records: Vec<AuditRecord>,
}

impl_message!(AuditPage => "audit page");
