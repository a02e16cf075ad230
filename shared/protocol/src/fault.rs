//! Fault-injector requests (`mabeam.faults.*`) and the commands agents' fault layers obey.

use serde::{Deserialize, Serialize};

use crate::{codec::impl_message, current_version, AgentId};

/// How a faulty agent misbehaves (applied by the agent SDK's fault layer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentBehaviour {
    /// Stops answering and heartbeating, as if the process died.
    Crash,
    /// Keeps heartbeating but never votes.
    Silent,
    /// Answers after `delay_ms` ± `jitter_ms`.
    Slow { delay_ms: u64, jitter_ms: u64 },
    /// Drops this share of outgoing messages.
    Drop { percent: f64 },
    /// Sends undecodable payloads.
    Corrupt,
    /// Sends different signed ballots for one round.
    Equivocate,
    /// Signs with a key other than its registered one.
    InvalidSignature,
    /// Re-sends ballots from earlier rounds and sessions.
    Replay,
    /// Answers at the last moment of the round, or just after it.
    TimingAttack,
    /// Votes for `value` together with the other members of the coalition.
    Coalition { value: String },
    /// Honest until a decision is near, then equivocates.
    Adaptive,
}

/// Infrastructure links the fault proxy sits on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Link {
    Nats,
    Redis,
}

/// Toxics of the TCP fault proxy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LinkFault {
    Latency {
        latency_ms: u64,
        jitter_ms: u64,
    },
    Bandwidth {
        bytes_per_second: u64,
    },
    /// Resets every connection.
    Reset,
    /// Accepts and swallows traffic in both directions.
    Blackhole,
    /// Splits writes into `max_bytes` slices, `delay_us` apart.
    Slicing {
        max_bytes: u32,
        delay_us: u64,
    },
}

/// What a fault does and to whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "target", rename_all = "snake_case")]
pub enum FaultKind {
    Agents {
        agents: Vec<AgentId>,
        behaviour: AgentBehaviour,
    },
    /// Agents in different groups cannot exchange messages; with `flap_ms` the partition
    /// comes and goes at that period (intermittent).
    Partition {
        groups: Vec<Vec<AgentId>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flap_ms: Option<u64>,
    },
    Link {
        link: Link,
        fault: LinkFault,
    },
}

/// `mabeam.faults.inject` request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    #[serde(default = "current_version")]
    pub v: u16,
    /// Chosen by the injector when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub fault: FaultKind,
    /// Delay before the fault starts.
    #[serde(default)]
    pub start_after_ms: u64,
    /// Healed automatically after this long; permanent until healed when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl_message!(FaultSpec => "fault spec");

/// `mabeam.faults.heal` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultHeal {
    #[serde(default = "current_version")]
    pub v: u16,
    /// Heals every active fault when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl_message!(FaultHeal => "fault heal");

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveFault {
    pub id: String,
    pub fault: FaultKind,
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_ms: Option<u64>,
}

/// Reply to inject, heal and list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultList {
    #[serde(default = "current_version")]
    pub v: u16,
    pub faults: Vec<ActiveFault>,
}

impl_message!(FaultList => "fault list");

/// Fault-injector → one agent's fault layer (`mabeam.agents.<id>.faults`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentFaultCommand {
    #[serde(default = "current_version")]
    pub v: u16,
    pub fault_id: String,
    /// The behaviour to adopt; `None` heals the fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour: Option<AgentBehaviour>,
    /// Peers this agent must neither hear nor reach (partitions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<AgentId>,
    /// The agent is on the far side of a partition from the coordinators: it hears no
    /// proposals and its votes do not arrive.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub coordinator_unreachable: bool,
}

impl_message!(AgentFaultCommand => "agent fault command");
