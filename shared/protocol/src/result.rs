//! Task results, published on `mabeam.results.<task_id>` and stored in Redis.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{
    codec::impl_message,
    current_version,
    error::ErrorBody,
    session::{Ballot, ElectorateMember, Phase, VoteValue},
    signing::SignedEnvelope,
    AgentId, Limits, SessionId, TaskId,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The algorithm reached a decision.
    Decided,
    /// The session ran to its end without a decision (tie, no quorum, no convergence, too
    /// many faulty agents). Never a wrong decision instead.
    NoDecision,
    /// The session could not run to its end (infrastructure failure, lost participants).
    Failed,
    /// The task was invalid and never started.
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Decided => "decided",
            Self::NoDecision => "no_decision",
            Self::Failed => "failed",
            Self::Rejected => "rejected",
        }
    }
}

/// What was decided. Tagged by `kind` in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// An option won. `support` is its share of the counted weight; `tally` the totals.
    Choice {
        choice: String,
        support: f64,
        tally: BTreeMap<String, f64>,
    },
    /// A numeric or vector value (iterative refinement, negotiation).
    Value {
        value: Vec<f64>,
        dispersion: f64,
    },
    /// A sealed-bid auction's winner and the price paid.
    Award {
        winner: AgentId,
        bid: f64,
        price: f64,
    },
    Leader {
        leader: AgentId,
    },
    /// Work item → agent.
    Assignment {
        assignments: BTreeMap<String, AgentId>,
    },
}

impl Outcome {
    /// The chosen option, for outcomes that choose one.
    pub fn choice(&self) -> Option<&str> {
        match self {
            Self::Choice { choice, .. } => Some(choice),
            _ => None,
        }
    }
}

/// Why an agent was reported as faulty in a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultReason {
    Equivocation,
    InvalidSignature,
    Replay,
    MalformedBallot,
    /// Outside the sender's clock tolerance or after the round's deadline.
    Untimely,
    /// No answer before the deadline.
    Silent,
}

impl FaultReason {
    /// The snake_case wire name, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Equivocation => "equivocation",
            Self::InvalidSignature => "invalid_signature",
            Self::Replay => "replay",
            Self::MalformedBallot => "malformed_ballot",
            Self::Untimely => "untimely",
            Self::Silent => "silent",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultyAgent {
    pub agent_id: AgentId,
    pub reason: FaultReason,
}

/// One round of a session, as recorded in the result.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RoundRecord {
    pub round: u32,
    /// Pipeline stage or adaptive step (0 for single-stage algorithms).
    #[serde(default)]
    pub stage: u32,
    pub algorithm: String,
    /// Valid ballots counted.
    pub counted: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tally: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispersion: Option<f64>,
    /// Options eliminated in this round (ranked choice).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub eliminated: Vec<String>,
    /// Ballots that ranked no continuing option (ranked choice).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exhausted: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// An adaptive session moving to the next algorithm of its chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlgorithmSwitch {
    pub from: String,
    pub to: String,
    /// The trigger, e.g. `failure_ratio 0.40 >= 0.34`.
    pub reason: String,
    pub at_round: u32,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Timings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// Time from session start to its end.
    #[serde(default)]
    pub duration_ms: u64,
}

/// The final word on a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    #[serde(default = "current_version")]
    pub v: u16,
    pub task_id: TaskId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    pub algorithm: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Why there is no decision (`no_decision` and `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub rounds: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<RoundRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub switches: Vec<AlgorithmSwitch>,
    #[serde(default)]
    pub participants: Vec<AgentId>,
    #[serde(default)]
    pub faulty_detected: Vec<FaultyAgent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    #[serde(default)]
    pub timings: Timings,
}

impl_message!(TaskResult => "task result");

/// The Byzantine quorum over `n` agents tolerating `f` faulty ones: ⌈(n+f+1)/2⌉.
///
/// Any two quorums then share at least f+1 agents, one of them honest. It is the familiar
/// 2f+1 exactly when n = 3f+1; with a larger electorate 2f+1 would let two disjoint honest
/// groups each certify a different value.
pub fn byzantine_quorum(n: usize, f: u32) -> u32 {
    let q = (n as u64 + u64::from(f) + 2) / 2;
    u32::try_from(q).unwrap_or(u32::MAX)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("electorate of {n} cannot tolerate f={f}: n must be at least 3f+1")]
    ElectorateTooSmall { n: usize, f: u32 },
    #[error("quorum is {quorum}; with f={f} it must be ceil((n+f+1)/2)={expected}")]
    WrongQuorum { quorum: u32, f: u32, expected: u32 },
    #[error("electorate lists {0} more than once")]
    DuplicateMember(AgentId),
    #[error("commit from {0}, who is not in the electorate")]
    NotInElectorate(AgentId),
    #[error("commit from {agent} is for session {session} round {round}, not this certificate's")]
    WrongSlot {
        agent: AgentId,
        session: SessionId,
        round: u32,
    },
    #[error("commit from {0} is not a commit ballot for the certified value")]
    WrongBallot(AgentId),
    #[error("signature of {0} does not verify")]
    BadSignature(AgentId),
    #[error("electorate key of {0} is not the trusted one")]
    UntrustedKey(AgentId),
    #[error("{distinct} distinct signed commits; the quorum is {quorum}")]
    NoQuorum { distinct: usize, quorum: u32 },
}

/// Proof of a Byzantine decision: a quorum ([`byzantine_quorum`], 2f+1 when n = 3f+1) of
/// distinct members of an electorate of n >= 3f+1 signed a commit for `value` in `round` of
/// `session_id`.
///
/// Any two quorums overlap in f+1 agents, at least one of them honest, and an honest agent
/// commits only what a quorum prepared; so with at most f faulty agents no two valid
/// certificates for one session can name different values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    pub session_id: SessionId,
    pub round: u32,
    pub value: String,
    pub fault_tolerance: u32,
    pub quorum: u32,
    pub electorate: Vec<ElectorateMember>,
    pub commits: Vec<SignedEnvelope>,
}

impl Certificate {
    /// Checks the certificate on its own. A third party should also check that `electorate`
    /// matches the keys it trusts (e.g. the registry's), see [`Certificate::verify_keys`].
    pub fn verify(&self, limits: &Limits) -> Result<(), CertificateError> {
        let f = self.fault_tolerance;
        let n = self.electorate.len();
        if (n as u64) < 3 * u64::from(f) + 1 {
            return Err(CertificateError::ElectorateTooSmall { n, f });
        }
        let expected = byzantine_quorum(n, f);
        if self.quorum != expected {
            return Err(CertificateError::WrongQuorum {
                quorum: self.quorum,
                f,
                expected,
            });
        }
        let mut keys = BTreeMap::new();
        for member in &self.electorate {
            if keys.insert(&member.agent_id, &member.public_key).is_some() {
                return Err(CertificateError::DuplicateMember(member.agent_id.clone()));
            }
        }
        let mut signers = BTreeSet::new();
        for commit in &self.commits {
            let agent = &commit.sender;
            let key = keys
                .get(agent)
                .ok_or_else(|| CertificateError::NotInElectorate(agent.clone()))?;
            if commit.session != self.session_id || commit.round != self.round {
                return Err(CertificateError::WrongSlot {
                    agent: agent.clone(),
                    session: commit.session.clone(),
                    round: commit.round,
                });
            }
            let ballot: Ballot = commit
                .open(limits)
                .map_err(|_| CertificateError::WrongBallot(agent.clone()))?;
            if ballot.phase != Phase::Commit
                || ballot.value != VoteValue::Choice(self.value.clone())
            {
                return Err(CertificateError::WrongBallot(agent.clone()));
            }
            commit
                .verify(key)
                .map_err(|_| CertificateError::BadSignature(agent.clone()))?;
            signers.insert(agent);
        }
        if signers.len() < self.quorum as usize {
            return Err(CertificateError::NoQuorum {
                distinct: signers.len(),
                quorum: self.quorum,
            });
        }
        Ok(())
    }

    /// Checks that every electorate member's key is the one `trusted` knows for that agent.
    pub fn verify_keys(
        &self,
        trusted: impl Fn(&AgentId) -> Option<crate::PublicKey>,
    ) -> Result<(), CertificateError> {
        for member in &self.electorate {
            if trusted(&member.agent_id) != Some(member.public_key) {
                return Err(CertificateError::UntrustedKey(member.agent_id.clone()));
            }
        }
        Ok(())
    }
}
