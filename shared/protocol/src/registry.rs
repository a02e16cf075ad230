//! Registry requests (`mabeam.registry.*`) and replies.
//!
//! `Registration` and `Heartbeat` are sent inside a `SignedEnvelope` signed by the agent's
//! key, so registering proves possession of the key the id gets bound to.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{codec::impl_message, current_version, AgentId, PublicKey};

/// Liveness and trust of an agent, as the registry tracks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    /// Registered, no heartbeat seen yet.
    Registered,
    Active,
    /// Heartbeats overdue.
    Suspect,
    /// Heartbeats overdue past the failure threshold.
    Failed,
    /// Heartbeats resumed after `Failed`.
    Recovered,
    /// Equivocation evidence was reported; excluded from sessions until cleared.
    Quarantined,
}

impl AgentStatus {
    /// Every status, in lifecycle order (gauges, parsing).
    pub const ALL: [Self; 6] = [
        Self::Registered,
        Self::Active,
        Self::Suspect,
        Self::Failed,
        Self::Recovered,
        Self::Quarantined,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Active => "active",
            Self::Suspect => "suspect",
            Self::Failed => "failed",
            Self::Recovered => "recovered",
            Self::Quarantined => "quarantined",
        }
    }

    /// Whether the coordinator may pick the agent for a new session.
    pub fn is_eligible(self) -> bool {
        matches!(self, Self::Registered | Self::Active | Self::Recovered)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    #[serde(default = "current_version")]
    pub v: u16,
    pub agent_id: AgentId,
    /// Free-form agent kind, e.g. `llm`, `gpu-server`.
    pub kind: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// Expertise weight, > 0; weighted algorithms multiply it with ballot confidence.
    pub expertise: f64,
    pub public_key: PublicKey,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

impl_message!(Registration => "registration");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    #[serde(default = "current_version")]
    pub v: u16,
    pub agent_id: AgentId,
    /// Current load in the agent's own units (work distribution compares it to capacity).
    #[serde(default)]
    pub load: f64,
    #[serde(default)]
    pub capacity: f64,
}

impl_message!(Heartbeat => "heartbeat");

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deregistration {
    #[serde(default = "current_version")]
    pub v: u16,
    pub agent_id: AgentId,
}

impl_message!(Deregistration => "deregistration");

/// List/query agents. All filters are optional and combine with AND.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentQuery {
    #[serde(default = "current_version")]
    pub v: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<AgentStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_ids: Vec<AgentId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// Matches everything; carries the current protocol version (a derived default would say 0,
/// which every decoder refuses).
impl Default for AgentQuery {
    fn default() -> Self {
        Self {
            v: crate::PROTOCOL_VERSION,
            capability: Default::default(),
            status: Default::default(),
            agent_ids: Default::default(),
            limit: Default::default(),
        }
    }
}

impl_message!(AgentQuery => "agent query");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    pub agent_id: AgentId,
    pub kind: String,
    pub capabilities: Vec<String>,
    pub expertise: f64,
    pub public_key: PublicKey,
    pub status: AgentStatus,
    pub registered_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_ms: Option<u64>,
    #[serde(default)]
    pub load: f64,
    #[serde(default)]
    pub capacity: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentList {
    #[serde(default = "current_version")]
    pub v: u16,
    pub agents: Vec<AgentInfo>,
}

impl_message!(AgentList => "agent list");

/// Reply to register, deregister and heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryAck {
    #[serde(default = "current_version")]
    pub v: u16,
    pub agent_id: AgentId,
    pub status: AgentStatus,
}

impl_message!(RegistryAck => "registry ack");

/// The session id registry envelopes (register, heartbeat, deregister) are signed under, so
/// a registry signature can never pass for a ballot.
pub const REGISTRY_SESSION: &str = "registry";

/// The header of an agent's registry envelope. The sequence is the send time in
/// microseconds, so it keeps increasing across agent restarts and the registry can refuse
/// replays by remembering the last one per agent.
pub fn registry_header(agent: &AgentId, now_ms: u64, now_us: u64) -> crate::EnvelopeHeader {
    crate::EnvelopeHeader {
        sender: agent.clone(),
        #[allow(clippy::expect_used)]
        session: crate::SessionId::new(REGISTRY_SESSION).expect("a valid id literal"),
        round: 0,
        sequence: now_us,
        timestamp_ms: now_ms,
    }
}

/// Coordinator → registry (`mabeam.registry.agreement`, no reply): which participants'
/// final ballots agreed with a decided outcome, for dynamic expertise weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementReport {
    #[serde(default = "current_version")]
    pub v: u16,
    pub session_id: crate::SessionId,
    pub agreed: BTreeMap<AgentId, bool>,
}

impl_message!(AgreementReport => "agreement report");
