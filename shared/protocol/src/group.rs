//! Application messages to a group of agents (the swarm helpers' broadcast): delivered to
//! each member on `mabeam.agents.<id>.messages`, beside — never through — the inbox the
//! coordinator alone writes, so an application cannot pose as a coordinator.
//!
//! The body is not signed: who may publish on the subject is for the NATS server's
//! permissions to decide (deploy/nats gives it to clients and operators, not to agents).

use serde::{Deserialize, Serialize};

use crate::{codec::impl_message, current_version};

/// One message to every member of a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMessage {
    #[serde(default = "current_version")]
    pub v: u16,
    /// The group's name, as the sender calls it.
    pub group: String,
    /// Who sent it (free-form: an agent id, a supervisor's name).
    pub from: String,
    /// What it is about, e.g. `investigate`; receivers dispatch on it.
    pub topic: String,
    #[serde(default)]
    pub body: serde_json::Value,
    /// Unix milliseconds when it was sent.
    pub sent_ms: u64,
}

impl_message!(GroupMessage => "group message");
