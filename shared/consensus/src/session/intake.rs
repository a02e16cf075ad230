//! Admission of signed ballots: signature, clock, replay window, round, deadline and
//! equivocation checks, in that order, before any algorithm sees a ballot.

use std::collections::{BTreeMap, BTreeSet};

use mabeam_protocol::{
    result::FaultReason,
    session::{Ballot, EquivocationEvidence, Phase},
    AgentId, Limits, SessionId, SignedEnvelope,
};

use crate::Electorate;

/// Tunables of ballot admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntakeSettings {
    pub limits: Limits,
    /// How far a sender's timestamp may be from `now`, either way.
    pub clock_tolerance_ms: u64,
    /// Sequence numbers this far below a sender's highest are still accepted once
    /// (reordering); older ones are replays. At most 64 (one bit per number); larger values
    /// act as 64.
    pub replay_window: u64,
}

impl Default for IntakeSettings {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            clock_tolerance_ms: 30_000,
            replay_window: 64,
        }
    }
}

/// Sliding window over one sender's sequence numbers (as in IPsec anti-replay).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ReplayWindow {
    highest: u64,
    /// Bit i set: `highest - i` was seen.
    seen: u64,
}

impl ReplayWindow {
    fn is_fresh(&self, seq: u64, window: u64) -> bool {
        if seq > self.highest || (self.highest == 0 && self.seen == 0) {
            return true;
        }
        let age = self.highest - seq;
        age < window.min(64) && self.seen & (1u64 << age) == 0
    }

    fn mark(&mut self, seq: u64) {
        if self.highest == 0 && self.seen == 0 {
            self.highest = seq;
            self.seen = 1;
        } else if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = seq;
        } else {
            self.seen |= 1u64 << (self.highest - seq);
        }
    }
}

/// A ballot that passed every check.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    pub agent: AgentId,
    pub round: u32,
    pub ballot: Ballot,
    pub envelope: SignedEnvelope,
}

#[derive(Debug)]
pub(crate) enum Admission {
    Accepted(Box<Accepted>),
    /// The same ballot again (network duplicate or retransmission): harmless.
    Duplicate,
    /// Not for this session's current work (non-participant, stale round).
    Ignored,
    Rejected {
        agent: AgentId,
        reason: FaultReason,
        detail: String,
    },
    Equivocation(Box<EquivocationEvidence>),
}

/// The round a ballot must belong to and until when.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenRound {
    pub round: u32,
    pub deadline_ms: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct Intake {
    settings: IntakeSettings,
    session: SessionId,
    slots: BTreeMap<(u32, Phase, AgentId), SignedEnvelope>,
    windows: BTreeMap<AgentId, ReplayWindow>,
    /// Misbehaviour only the agent itself can have produced: conflicting signed ballots, or a
    /// signed ballot it is not allowed to send. These exclude and count as failures.
    faulty: BTreeMap<AgentId, FaultReason>,
    /// Rejections anyone on the bus could cause in an agent's name (a forged signature, a
    /// replayed or delayed copy of a genuine ballot): reported, never held against the agent.
    suspected: BTreeMap<AgentId, FaultReason>,
    /// Agents with at least one accepted ballot (a suspicion of them is not reported).
    accepted: BTreeSet<AgentId>,
}

impl Intake {
    pub(crate) fn new(settings: IntakeSettings, session: SessionId) -> Self {
        Self {
            settings,
            session,
            slots: BTreeMap::new(),
            windows: BTreeMap::new(),
            faulty: BTreeMap::new(),
            suspected: BTreeMap::new(),
            accepted: BTreeSet::new(),
        }
    }

    /// Agents proven to misbehave, with the first reason seen.
    pub(crate) fn faulty(&self) -> &BTreeMap<AgentId, FaultReason> {
        &self.faulty
    }

    /// Everything worth reporting in a result: proven faults, and suspicions of agents that
    /// never had a ballot accepted (a forger cannot make an agent that voted look faulty).
    pub(crate) fn report(&self) -> BTreeMap<AgentId, FaultReason> {
        let mut report = self.faulty.clone();
        for (agent, reason) in &self.suspected {
            if !self.accepted.contains(agent) {
                report.entry(agent.clone()).or_insert(*reason);
            }
        }
        report
    }

    fn reject(&mut self, agent: &AgentId, reason: FaultReason, detail: String) -> Admission {
        let attributable = matches!(
            reason,
            FaultReason::Equivocation | FaultReason::MalformedBallot
        );
        let list = if attributable {
            &mut self.faulty
        } else {
            &mut self.suspected
        };
        list.entry(agent.clone()).or_insert(reason);
        Admission::Rejected {
            agent: agent.clone(),
            reason,
            detail,
        }
    }

    /// Runs every check on `envelope`. `verified` says its signature was already checked
    /// (batch verification).
    pub(crate) fn admit(
        &mut self,
        now_ms: u64,
        electorate: &Electorate,
        envelope: SignedEnvelope,
        verified: bool,
        open: Option<OpenRound>,
    ) -> Admission {
        let agent = envelope.sender.clone();
        let Some(member) = electorate.get(&agent) else {
            return Admission::Ignored;
        };
        if !verified {
            if let Err(e) = envelope.verify(&member.public_key) {
                return self.reject(&agent, FaultReason::InvalidSignature, e.to_string());
            }
        }
        if envelope.session != self.session {
            return self.reject(
                &agent,
                FaultReason::Replay,
                format!(
                    "ballot of session {} replayed into {}",
                    envelope.session, self.session
                ),
            );
        }
        let skew = now_ms.abs_diff(envelope.timestamp_ms);
        if skew > self.settings.clock_tolerance_ms {
            return self.reject(
                &agent,
                FaultReason::Untimely,
                format!(
                    "timestamp {} is {skew} ms from now; tolerance is {} ms",
                    envelope.timestamp_ms, self.settings.clock_tolerance_ms
                ),
            );
        }
        let ballot: Ballot = match envelope.open(&self.settings.limits) {
            Ok(b) => b,
            Err(e) => return self.reject(&agent, FaultReason::MalformedBallot, e.to_string()),
        };
        if !(0.0..=1.0).contains(&ballot.confidence) {
            // NaN fails the range check too: one NaN would poison every weighted total.
            return self.reject(
                &agent,
                FaultReason::MalformedBallot,
                format!("confidence {} is outside [0, 1]", ballot.confidence),
            );
        }
        // Rounds before anything that remembers the ballot: a late copy of a closed round's
        // ballot (retransmission, network duplicate) must stay harmless. Commits are the
        // exception: a quorum of them is final whenever it completes.
        let Some(open) = open else {
            return Admission::Ignored;
        };
        let late_commit = envelope.round < open.round && ballot.phase == Phase::Commit;
        if envelope.round > open.round || (envelope.round < open.round && !late_commit) {
            return Admission::Ignored;
        }
        let slot = (envelope.round, ballot.phase, agent.clone());
        if let Some(first) = self.slots.get(&slot) {
            if first.payload == envelope.payload {
                return Admission::Duplicate;
            }
            let same_value = first
                .open::<Ballot>(&self.settings.limits)
                .map(|b| b.value == ballot.value)
                .unwrap_or(false);
            if same_value {
                // A retransmission with, say, another confidence: keep the first.
                return Admission::Duplicate;
            }
            self.faulty.insert(agent.clone(), FaultReason::Equivocation);
            return Admission::Equivocation(Box::new(EquivocationEvidence {
                v: mabeam_protocol::PROTOCOL_VERSION,
                agent_id: agent,
                session_id: self.session.clone(),
                round: envelope.round,
                first: first.clone(),
                second: envelope,
            }));
        }
        let window = self.windows.entry(agent.clone()).or_default();
        if !window.is_fresh(envelope.sequence, self.settings.replay_window) {
            return self.reject(
                &agent,
                FaultReason::Replay,
                format!("sequence {} was already used", envelope.sequence),
            );
        }
        window.mark(envelope.sequence);
        if now_ms > open.deadline_ms && ballot.phase != Phase::Commit {
            return self.reject(
                &agent,
                FaultReason::Untimely,
                format!(
                    "arrived {} ms after the round's deadline",
                    now_ms - open.deadline_ms
                ),
            );
        }
        self.slots.insert(slot, envelope.clone());
        self.accepted.insert(agent.clone());
        Admission::Accepted(Box::new(Accepted {
            agent,
            round: envelope.round,
            ballot,
            envelope,
        }))
    }

    /// Records a ballot that passed intake but that the algorithm refused.
    pub(crate) fn refuse(&mut self, agent: &AgentId, detail: String) -> Admission {
        self.reject(agent, FaultReason::MalformedBallot, detail)
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_window_accepts_reordering_and_refuses_reuse() {
        let mut w = ReplayWindow::default();
        for seq in [5, 3, 4, 9, 6] {
            assert!(w.is_fresh(seq, 64), "{seq}");
            w.mark(seq);
        }
        for seq in [5, 3, 9] {
            assert!(!w.is_fresh(seq, 64), "{seq} reused");
        }
        assert!(w.is_fresh(7, 64));
        w.mark(200);
        assert!(!w.is_fresh(100, 64), "outside the window");
        assert!(w.is_fresh(199, 64));
    }
}
