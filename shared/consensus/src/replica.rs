//! The honest agent's side of Byzantine agreement (see `session::byzantine` for the
//! protocol). The agent SDK and the simulations drive it; it signs its own ballots.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mabeam_protocol::{
    session::{Ballot, EquivocationEvidence, Phase, Proposal, RoundContext, VoteValue},
    signing::EnvelopeHeader,
    AgentId, AgentKeypair, Limits, PublicKey, SessionId, SignedEnvelope,
};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplicaError {
    #[error("proposal is for {0}, not byzantine agreement")]
    NotByzantine(String),
    #[error("this agent ({0}) is not in the proposal's electorate")]
    NotInElectorate(AgentId),
    #[error("proposal is for session {got}, this replica runs {expected}")]
    WrongSession { expected: SessionId, got: SessionId },
    #[error("cannot encode a ballot: {0}")]
    Encode(String),
}

/// What the agent must do.
#[derive(Debug, Clone)]
pub enum ReplicaEffect {
    /// Publish on this agent's vote subject of the session.
    Publish(Box<SignedEnvelope>),
    /// 2f+1 matching commits seen: the value is decided.
    Decided { value: String, round: u32 },
    /// A peer signed two different ballots for one slot.
    Equivocation(Box<EquivocationEvidence>),
}

#[derive(Debug)]
pub struct ByzantineReplica {
    me: AgentId,
    key: AgentKeypair,
    session: SessionId,
    quorum: usize,
    electorate: BTreeMap<AgentId, PublicKey>,
    limits: Limits,
    sequence: u64,
    round: u32,
    locked: Option<String>,
    committed_in: BTreeSet<u32>,
    prepares: BTreeMap<(u32, String), BTreeSet<AgentId>>,
    commits: BTreeMap<(u32, String), BTreeSet<AgentId>>,
    slots: BTreeMap<(u32, Phase, AgentId), SignedEnvelope>,
    faulty: BTreeSet<AgentId>,
    decided: Option<String>,
    out: VecDeque<ReplicaEffect>,
}

impl ByzantineReplica {
    /// Joins the session a Byzantine proposal opened.
    pub fn new(
        me: AgentId,
        key: AgentKeypair,
        proposal: &Proposal,
        limits: Limits,
    ) -> Result<Self, ReplicaError> {
        let RoundContext::Byzantine {
            quorum, electorate, ..
        } = &proposal.context
        else {
            return Err(ReplicaError::NotByzantine(proposal.algorithm.clone()));
        };
        let electorate: BTreeMap<AgentId, PublicKey> = electorate
            .iter()
            .map(|m| (m.agent_id.clone(), m.public_key))
            .collect();
        if !electorate.contains_key(&me) {
            return Err(ReplicaError::NotInElectorate(me));
        }
        Ok(Self {
            me,
            key,
            session: proposal.session_id.clone(),
            quorum: *quorum as usize,
            electorate,
            limits,
            sequence: 0,
            round: 0,
            locked: None,
            committed_in: BTreeSet::new(),
            prepares: BTreeMap::new(),
            commits: BTreeMap::new(),
            slots: BTreeMap::new(),
            faulty: BTreeSet::new(),
            decided: None,
            out: VecDeque::new(),
        })
    }

    pub fn decided(&self) -> Option<&str> {
        self.decided.as_deref()
    }

    /// The value this agent committed to; it prepares nothing else from now on.
    pub fn locked(&self) -> Option<&str> {
        self.locked.as_deref()
    }

    pub fn poll(&mut self) -> Option<ReplicaEffect> {
        self.out.pop_front()
    }

    /// A new round: prepare `choice`, or the locked (or decided) value if there is one.
    ///
    /// The caller picks `choice` (its preference, or the round's suggestion when it finds the
    /// suggestion acceptable).
    pub fn handle_proposal(
        &mut self,
        now_ms: u64,
        proposal: &Proposal,
        choice: &str,
    ) -> Result<(), ReplicaError> {
        if proposal.session_id != self.session {
            return Err(ReplicaError::WrongSession {
                expected: self.session.clone(),
                got: proposal.session_id.clone(),
            });
        }
        // A decided replica keeps taking part: the coordinator may have discarded commits
        // this replica counted (an equivocator's) and need its ballots in a later round.
        if proposal.round <= self.round {
            return Ok(());
        }
        self.round = proposal.round;
        let value = self.locked.clone().unwrap_or_else(|| choice.to_owned());
        self.send(now_ms, Phase::Prepare, value.clone())?;
        self.count(now_ms, Phase::Prepare, self.round, value, self.me.clone())?;
        // Peers' prepares may have arrived before this proposal did.
        let ready = self
            .prepares
            .iter()
            .find(|((r, _), set)| *r == self.round && set.len() >= self.quorum)
            .map(|((_, v), _)| v.clone());
        match ready {
            Some(v) => self.maybe_commit(now_ms, self.round, v),
            None => Ok(()),
        }
    }

    fn maybe_commit(&mut self, now_ms: u64, round: u32, value: String) -> Result<(), ReplicaError> {
        let prepared = self
            .prepares
            .get(&(round, value.clone()))
            .map_or(0, BTreeSet::len);
        // Commit once per round, only in the round this agent is in: a prepare quorum for
        // an old round says nothing about the current one.
        if prepared >= self.quorum && round == self.round && !self.committed_in.contains(&round) {
            self.committed_in.insert(round);
            self.locked = Some(value.clone());
            self.send(now_ms, Phase::Commit, value.clone())?;
            self.count(now_ms, Phase::Commit, round, value, self.me.clone())?;
        }
        Ok(())
    }

    fn send(&mut self, now_ms: u64, phase: Phase, value: String) -> Result<(), ReplicaError> {
        self.sequence += 1;
        let header = EnvelopeHeader {
            sender: self.me.clone(),
            session: self.session.clone(),
            round: self.round,
            sequence: self.sequence,
            timestamp_ms: now_ms,
        };
        let ballot = Ballot::new(phase, VoteValue::Choice(value), 1.0);
        let envelope = SignedEnvelope::seal(&self.key, header, &ballot)
            .map_err(|e| ReplicaError::Encode(e.to_string()))?;
        self.slots
            .insert((self.round, phase, self.me.clone()), envelope.clone());
        self.out
            .push_back(ReplicaEffect::Publish(Box::new(envelope)));
        Ok(())
    }

    /// A peer's ballot (own ballots echoed back are ignored).
    pub fn handle_envelope(
        &mut self,
        now_ms: u64,
        envelope: &SignedEnvelope,
    ) -> Result<(), ReplicaError> {
        let sender = &envelope.sender;
        if sender == &self.me || envelope.session != self.session || self.faulty.contains(sender) {
            return Ok(());
        }
        let Some(key) = self.electorate.get(sender) else {
            return Ok(());
        };
        if envelope.verify(key).is_err() {
            return Ok(());
        }
        let Ok(ballot) = envelope.open::<Ballot>(&self.limits) else {
            return Ok(());
        };
        let VoteValue::Choice(value) = ballot.value.clone() else {
            return Ok(());
        };
        if ballot.phase == Phase::Vote {
            return Ok(());
        }
        let slot = (envelope.round, ballot.phase, sender.clone());
        if let Some(first) = self.slots.get(&slot) {
            let same = first
                .open::<Ballot>(&self.limits)
                .is_ok_and(|b| b.value == ballot.value);
            if !same {
                // Keep counting the first ballot only; the second proves equivocation.
                self.faulty.insert(sender.clone());
                self.out.push_back(ReplicaEffect::Equivocation(Box::new(
                    EquivocationEvidence {
                        v: mabeam_protocol::PROTOCOL_VERSION,
                        agent_id: sender.clone(),
                        session_id: self.session.clone(),
                        round: envelope.round,
                        first: first.clone(),
                        second: envelope.clone(),
                    },
                )));
            }
            return Ok(());
        }
        self.slots.insert(slot, envelope.clone());
        self.count(now_ms, ballot.phase, envelope.round, value, sender.clone())
    }

    fn count(
        &mut self,
        now_ms: u64,
        phase: Phase,
        round: u32,
        value: String,
        from: AgentId,
    ) -> Result<(), ReplicaError> {
        let key = (round, value.clone());
        match phase {
            Phase::Prepare => {
                self.prepares.entry(key).or_default().insert(from);
                self.maybe_commit(now_ms, round, value)?;
            }
            Phase::Commit => {
                let n = {
                    let set = self.commits.entry(key).or_default();
                    set.insert(from);
                    set.len()
                };
                if n >= self.quorum && self.decided.is_none() {
                    // A decided value is final (no other can gather a quorum): lock on it.
                    self.locked = Some(value.clone());
                    self.decided = Some(value.clone());
                    self.out.push_back(ReplicaEffect::Decided { value, round });
                }
            }
            Phase::Vote => {}
        }
        Ok(())
    }
}
