//! Session traffic between the coordinator and agents: proposals out, signed ballots back.

use serde::{Deserialize, Serialize};

use crate::{
    codec::impl_message, current_version, signing::SignedEnvelope, AgentId, Limits, PublicKey,
    SessionId, TaskId,
};

/// The step of a round a ballot belongs to. Byzantine agreement uses prepare then commit;
/// every other algorithm uses plain votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Vote,
    Prepare,
    Commit,
}

/// What an agent answers; which kinds an algorithm accepts is documented per algorithm.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VoteValue {
    /// One of the task's options (or a candidate agent id, for leader election).
    Choice(String),
    /// Options in order of preference, most preferred first (ranked choice).
    Ranking(Vec<String>),
    Number(f64),
    Vector(Vec<f64>),
    /// A sealed bid.
    Bid(f64),
    /// A negotiation offer and the range the agent accepts.
    Offer {
        value: f64,
        min: f64,
        max: f64,
    },
    /// Current load and capacity, for work distribution.
    Load {
        load: f64,
        capacity: f64,
    },
    /// Present but not voting.
    Abstain,
}

/// The signed body of an agent's answer (carried in a [`SignedEnvelope`], whose header holds
/// sender, session and round).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ballot {
    #[serde(default = "current_version")]
    pub v: u16,
    pub phase: Phase,
    pub value: VoteValue,
    /// In `[0, 1]`; weighted algorithms multiply it with the agent's expertise.
    pub confidence: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
}

impl_message!(Ballot => "ballot");

impl Ballot {
    pub fn new(phase: Phase, value: VoteValue, confidence: f64) -> Self {
        Self {
            v: current_version(),
            phase,
            value,
            confidence,
            reasoning: None,
        }
    }
}

/// An agent of a session's electorate, as agents and certificate checkers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ElectorateMember {
    pub agent_id: AgentId,
    pub public_key: PublicKey,
}

/// What a round carries beyond the task's proposal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoundContext {
    /// A single-round vote.
    Open,
    /// Byzantine agreement: agents exchange signed prepares and commits with each other on
    /// the session's vote subjects and need the electorate's keys to check them.
    Byzantine {
        fault_tolerance: u32,
        quorum: u32,
        electorate: Vec<ElectorateMember>,
        /// The value most prepared in the previous round, offered to agents that are not
        /// locked, so a split electorate can converge.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        suggestion: Option<String>,
    },
    /// Iterative refinement: the previous round's aggregate and its dispersion.
    Refine {
        aggregate: Vec<f64>,
        dispersion: f64,
    },
    /// Negotiation: the current compromise the agents react to.
    Counter { proposal: f64 },
}

/// Coordinator → agent: take part in this round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    #[serde(default = "current_version")]
    pub v: u16,
    pub task_id: TaskId,
    pub session_id: SessionId,
    pub algorithm: String,
    pub round: u32,
    pub phase: Phase,
    #[serde(default)]
    pub proposal: serde_json::Value,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Unix milliseconds after which the coordinator no longer counts answers to this round.
    pub deadline_ms: u64,
    pub context: RoundContext,
}

impl_message!(Proposal => "proposal");

/// Coordinator → agents: the session is over; stop working on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionClosed {
    #[serde(default = "current_version")]
    pub v: u16,
    pub task_id: TaskId,
    pub session_id: SessionId,
    pub status: crate::result::Status,
}

impl_message!(SessionClosed => "session closed");

/// Two valid signatures of one agent over ballots of the same session, round and phase with
/// different values: proof of equivocation that any holder of the agent's key can check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EquivocationEvidence {
    #[serde(default = "current_version")]
    pub v: u16,
    pub agent_id: AgentId,
    pub session_id: SessionId,
    pub round: u32,
    pub first: SignedEnvelope,
    pub second: SignedEnvelope,
}

impl_message!(EquivocationEvidence => "equivocation evidence");

impl EquivocationEvidence {
    /// True when both envelopes are the named agent's, verify under `key`, and carry ballots
    /// of the same phase with different values.
    pub fn verify(&self, key: &PublicKey, limits: &Limits) -> bool {
        let same_slot = |e: &SignedEnvelope| {
            e.sender == self.agent_id && e.session == self.session_id && e.round == self.round
        };
        if !(same_slot(&self.first) && same_slot(&self.second)) {
            return false;
        }
        let (Ok(a), Ok(b)) = (
            self.first.open::<Ballot>(limits),
            self.second.open::<Ballot>(limits),
        ) else {
            return false;
        };
        a.phase == b.phase
            && a.value != b.value
            && self.first.verify(key).is_ok()
            && self.second.verify(key).is_ok()
    }
}

/// `mabeam.sessions.get` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionQuery {
    #[serde(default = "current_version")]
    pub v: u16,
    pub task_id: TaskId,
}

impl_message!(SessionQuery => "session query");

/// Header on messages to an agent's inbox telling which message the body holds.
pub const MESSAGE_TYPE_HEADER: &str = "Mabeam-Type";
/// [`MESSAGE_TYPE_HEADER`] value of a [`Proposal`].
pub const MESSAGE_TYPE_PROPOSAL: &str = "proposal";
/// [`MESSAGE_TYPE_HEADER`] value of a [`SessionClosed`].
pub const MESSAGE_TYPE_SESSION_CLOSED: &str = "session_closed";

/// A session still running, as `mabeam.sessions.get` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveSession {
    pub session_id: SessionId,
    pub algorithm: String,
    pub round: u32,
    pub participants: u32,
    pub started_ms: u64,
    pub deadline_ms: u64,
    /// Coordinator instance holding the session's lease.
    pub owner: String,
}

/// Where a task stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Accepted, not yet picked up by a coordinator.
    Queued,
    Running,
    Finished,
}

/// Reply to `mabeam.sessions.get`: the result when the task finished, else its live status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    #[serde(default = "current_version")]
    pub v: u16,
    pub task_id: TaskId,
    pub state: TaskState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LiveSession>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<crate::TaskResult>,
}

impl_message!(SessionView => "session view");
