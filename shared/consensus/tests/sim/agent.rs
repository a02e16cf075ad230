//! Simulated agents: honest ones answering from a preference, and the attackers of the fault
//! model (design brief §5). Byzantine rounds run the crate's own [`ByzantineReplica`], so the
//! honest side under test is the real one.

use std::collections::{BTreeMap, BTreeSet};

use mabeam_consensus::replica::{ByzantineReplica, ReplicaEffect};
use mabeam_protocol::{
    session::{Ballot, Phase, Proposal, RoundContext, VoteValue},
    signing::EnvelopeHeader,
    AgentId, AgentKeypair, Limits, SessionId, SignedEnvelope,
};
use rand::{seq::SliceRandom as _, Rng as _};
use rand_chacha::{rand_core::SeedableRng, ChaCha8Rng};

use super::keys::ring;

/// How an agent behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Behaviour {
    Honest,
    /// Never answers.
    Silent,
    /// Honest, but each message leaves after an extra delay drawn from `0..=2*mean_ms`.
    Slow {
        mean_ms: u64,
    },
    /// Honest until `at_ms` after the session start, then gone.
    Crash {
        at_ms: u64,
    },
    /// Different signed ballots to different peers; both to the coordinator when asked.
    Equivocate {
        both_to_coordinator: bool,
    },
    /// Signs with a key nobody registered, and forges ballots in other agents' names.
    InvalidSignature,
    /// Re-sends ballots of an earlier session and of earlier rounds, never its own.
    Replay,
    /// Honest ballots released at the last moment before the deadline, or just after it.
    Timing {
        late: bool,
    },
    /// Votes the scenario's wrong value in every phase, with the other coalition members.
    Coalition,
    /// Honest until it sees a near-quorum, then equivocates (and keeps doing so).
    Adaptive,
}

impl Behaviour {
    pub(crate) fn is_faulty(self) -> bool {
        self != Self::Honest
    }

    /// Runs the honest protocol (maybe late, maybe until it crashes), so what it decides
    /// must agree with every honest agent.
    pub(crate) fn runs_honest_code(self) -> bool {
        matches!(
            self,
            Self::Honest | Self::Slow { .. } | Self::Crash { .. } | Self::Timing { .. }
        )
    }

    /// Byzantine in the strict sense: lies rather than merely fails.
    pub(crate) fn lies(self) -> bool {
        matches!(
            self,
            Self::Equivocate { .. }
                | Self::InvalidSignature
                | Self::Replay
                | Self::Coalition
                | Self::Adaptive
        )
    }
}

/// What an honest agent wants, for every kind of ballot.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pref {
    /// First choice among the options (choice family, byzantine).
    pub choice: String,
    /// Values the agent would also settle for (a byzantine round's suggestion, a pipeline
    /// stage's outcome).
    pub acceptable: Vec<String>,
    pub ranking: Vec<String>,
    /// Iterative refinement: the starting value.
    pub value: Vec<f64>,
    /// Share of the way toward the aggregate / counter-proposal moved each round.
    pub step: f64,
    /// Negotiation: (value, min, max).
    pub offer: (f64, f64, f64),
    pub bid: f64,
    /// Work distribution: (load, capacity).
    pub load: (f64, f64),
    /// Leader election: the candidate voted for.
    pub leader: String,
    pub confidence: f64,
    pub abstain: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AgentSpec {
    pub behaviour: Behaviour,
    pub pref: Pref,
    pub expertise: f64,
    pub capabilities: Vec<String>,
}

/// What every agent of a run knows about the run.
#[derive(Debug)]
pub(crate) struct Shared {
    pub start_ms: u64,
    pub base_ms: u64,
    pub jitter_ms: u64,
    /// The value attackers push (an option no honest agent prefers, when the scenario says so).
    pub wrong: String,
    pub wrong_number: f64,
    pub wrong_leader: String,
    /// Electorate size: agents `0..n`.
    pub n: usize,
    /// Ballots of an earlier session, signed with the agents' real keys: replay material.
    pub old: Vec<SignedEnvelope>,
    pub limits: Limits,
}

/// Where a message goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum To {
    Coordinator,
    Peer(usize),
    /// The coordinator and every other agent (a vote subject everyone subscribes to).
    Everyone,
}

#[derive(Debug, Clone)]
pub(crate) struct Out {
    pub to: To,
    /// Delivered together (back-to-back publishes).
    pub envs: Vec<SignedEnvelope>,
    /// The sender's own delay before the message leaves.
    pub delay: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    pub sends: Vec<Out>,
    /// (time, token): call [`Agent::on_wake`] then.
    pub wakes: Vec<(u64, u64)>,
}

/// Sequence numbers attackers pick for ballots they build by hand, far from the replica's.
const OWN_SEQUENCES: u64 = 1 << 32;

#[derive(Debug)]
struct ByzState {
    key: (u32, Vec<AgentId>),
    replica: ByzantineReplica,
    session: SessionId,
    quorum: usize,
    round: u32,
    members: Vec<usize>,
    options: Vec<String>,
    /// Adaptive attacker: prepares seen per (round, value).
    seen: BTreeMap<(u32, String), BTreeSet<AgentId>>,
    my_prepare: BTreeMap<u32, String>,
    turned: bool,
}

#[derive(Debug)]
pub(crate) struct Agent {
    pub idx: usize,
    pub id: AgentId,
    pub spec: AgentSpec,
    key: AgentKeypair,
    wrong_key: AgentKeypair,
    rng: ChaCha8Rng,
    seq: u64,
    own_seq: u64,
    byz: Option<ByzState>,
    pending: Vec<SignedEnvelope>,
    answered: BTreeSet<u32>,
    value: Vec<f64>,
    offer: (f64, f64, f64),
    /// What this agent's replica decided, and in which round.
    pub decided: Option<(String, u32)>,
    /// Equivocation proofs this agent's replica produced.
    pub evidence: usize,
    held: BTreeMap<u64, Vec<Out>>,
    next_token: u64,
    /// Timing attacker: (release time, token) of the messages held back.
    release: Option<(u64, u64)>,
    crashed: bool,
}

fn agent_index(id: &AgentId) -> Option<usize> {
    ring().ids.iter().position(|x| x == id)
}

impl Agent {
    pub(crate) fn new(idx: usize, spec: AgentSpec, seed: u64) -> Self {
        let ring = ring();
        Self {
            idx,
            id: ring.ids[idx].clone(),
            key: ring.keys[idx].clone(),
            wrong_key: ring.wrong[idx].clone(),
            rng: ChaCha8Rng::seed_from_u64(
                seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(idx as u64 + 1)),
            ),
            seq: 0,
            own_seq: OWN_SEQUENCES,
            byz: None,
            pending: Vec::new(),
            answered: BTreeSet::new(),
            value: spec.pref.value.clone(),
            offer: spec.pref.offer,
            decided: None,
            evidence: 0,
            held: BTreeMap::new(),
            next_token: 0,
            release: None,
            crashed: false,
            spec,
        }
    }

    fn behaviour(&self) -> Behaviour {
        self.spec.behaviour
    }

    /// True when the agent no longer acts (silent, or crashed by now).
    fn down(&mut self, now: u64, sh: &Shared) -> bool {
        if let Behaviour::Crash { at_ms } = self.behaviour() {
            if now >= sh.start_ms + at_ms {
                self.crashed = true;
            }
        }
        self.crashed || self.behaviour() == Behaviour::Silent
    }

    #[allow(clippy::too_many_arguments)]
    fn seal(
        &mut self,
        now: u64,
        sender: Option<&AgentId>,
        session: &SessionId,
        round: u32,
        phase: Phase,
        value: VoteValue,
        bad_key: bool,
    ) -> SignedEnvelope {
        let sequence = if self.byz.is_some() || sender.is_some() {
            self.own_seq += 1;
            self.own_seq
        } else {
            self.seq += 1;
            self.seq
        };
        let header = EnvelopeHeader {
            sender: sender.unwrap_or(&self.id).clone(),
            session: session.clone(),
            round,
            sequence,
            timestamp_ms: now,
        };
        let key = if bad_key { &self.wrong_key } else { &self.key };
        let ballot = Ballot::new(phase, value, self.spec.pref.confidence);
        SignedEnvelope::seal(key, header, &ballot).expect("a ballot always encodes")
    }

    /// Queues a message, applying the behaviour's delays.
    fn emit(&mut self, now: u64, to: To, envs: Vec<SignedEnvelope>, out: &mut Outbox) {
        let delay = match self.behaviour() {
            Behaviour::Slow { mean_ms } => self.rng.gen_range(0..=2 * mean_ms),
            _ => 0,
        };
        let message = Out { to, envs, delay };
        if let (Behaviour::Timing { .. }, Some((at, token))) = (self.behaviour(), self.release) {
            if now < at {
                self.held.entry(token).or_default().push(message);
                return;
            }
        }
        out.sends.push(message);
    }

    /// Timing attacker: holds this round's messages until just before (or just after) the
    /// moment they would reach the coordinator at the deadline.
    fn arm_release(&mut self, now: u64, deadline: u64, sh: &Shared, out: &mut Outbox) {
        let Behaviour::Timing { late } = self.behaviour() else {
            return;
        };
        let slack = self.rng.gen_range(0..=3);
        let base = sh.base_ms.max(1);
        let at = if late {
            (deadline + 1 + slack).saturating_sub(base)
        } else {
            deadline.saturating_sub(base + sh.jitter_ms + 1 + slack)
        };
        if at <= now {
            self.release = None;
            return;
        }
        self.next_token += 1;
        let token = self.next_token;
        self.release = Some((at, token));
        out.wakes.push((at, token));
    }

    pub(crate) fn on_wake(&mut self, now: u64, token: u64, sh: &Shared, out: &mut Outbox) {
        let outs = self.held.remove(&token).unwrap_or_default();
        if self.release.is_some_and(|(_, t)| t == token) {
            self.release = None;
        }
        if self.down(now, sh) {
            return;
        }
        out.sends.extend(outs);
    }

    pub(crate) fn on_proposal(
        &mut self,
        now: u64,
        p: &Proposal,
        sh: &Shared,
        bus: &[SignedEnvelope],
        out: &mut Outbox,
    ) {
        if self.down(now, sh) {
            return;
        }
        if matches!(p.context, RoundContext::Byzantine { .. }) {
            self.byz_proposal(now, p, sh, bus, out);
        } else {
            self.vote_proposal(now, p, sh, bus, out);
        }
    }

    pub(crate) fn on_envelopes(
        &mut self,
        now: u64,
        envs: &[SignedEnvelope],
        sh: &Shared,
        out: &mut Outbox,
    ) {
        if self.down(now, sh) {
            return;
        }
        if self.byz.is_none() {
            // Peers' ballots may arrive before this agent's first proposal.
            if self.pending.len() < 4096 {
                self.pending.extend(envs.iter().cloned());
            }
            return;
        }
        if self.behaviour() == Behaviour::Adaptive {
            self.watch_for_near_quorum(now, envs, sh, out);
        }
        if let Some(byz) = self.byz.as_mut() {
            for env in envs {
                // Errors mean "not for this replica" (wrong session): nothing to do.
                let _ = byz.replica.handle_envelope(now, env);
            }
        }
        self.flush(now, sh, out);
    }

    // ---- Byzantine agreement --------------------------------------------------------------

    fn byz_proposal(
        &mut self,
        now: u64,
        p: &Proposal,
        sh: &Shared,
        bus: &[SignedEnvelope],
        out: &mut Outbox,
    ) {
        let RoundContext::Byzantine {
            quorum,
            electorate,
            suggestion,
            ..
        } = &p.context
        else {
            return;
        };
        let ids: Vec<AgentId> = electorate.iter().map(|m| m.agent_id.clone()).collect();
        let key = (*quorum, ids.clone());
        let fresh = self
            .byz
            .as_ref()
            .is_none_or(|b| b.key != key || b.session != p.session_id);
        if fresh {
            let Ok(replica) =
                ByzantineReplica::new(self.id.clone(), self.key.clone(), p, sh.limits)
            else {
                return;
            };
            self.byz = Some(ByzState {
                key,
                replica,
                session: p.session_id.clone(),
                quorum: *quorum as usize,
                round: 0,
                members: ids.iter().filter_map(agent_index).collect(),
                options: p.options.clone(),
                seen: BTreeMap::new(),
                my_prepare: BTreeMap::new(),
                turned: false,
            });
            let pending = std::mem::take(&mut self.pending);
            if self.behaviour() == Behaviour::Adaptive {
                self.watch_for_near_quorum(now, &pending, sh, out);
            }
            if let Some(byz) = self.byz.as_mut() {
                for env in &pending {
                    let _ = byz.replica.handle_envelope(now, env);
                }
            }
        }
        let Some(byz) = self.byz.as_mut() else {
            return;
        };
        if p.round <= byz.round {
            return; // a duplicate proposal
        }
        byz.round = p.round;
        byz.options = p.options.clone();
        let turned = byz.turned;
        self.arm_release(now, p.deadline_ms, sh, out);
        match self.behaviour() {
            Behaviour::Silent => {}
            Behaviour::Honest
            | Behaviour::Slow { .. }
            | Behaviour::Crash { .. }
            | Behaviour::Timing { .. }
            | Behaviour::InvalidSignature => {
                let choice = self.byz_choice(suggestion.as_deref(), &p.options);
                if let Some(byz) = self.byz.as_mut() {
                    let _ = byz.replica.handle_proposal(now, p, &choice);
                }
                if self.behaviour() == Behaviour::InvalidSignature {
                    self.forge(now, p, sh, true, out);
                }
            }
            Behaviour::Adaptive if !turned => {
                let choice = self.byz_choice(suggestion.as_deref(), &p.options);
                if let Some(byz) = self.byz.as_mut() {
                    let _ = byz.replica.handle_proposal(now, p, &choice);
                }
            }
            Behaviour::Adaptive => {
                let first = self.byz_choice(None, &p.options);
                self.equivocate(now, p, &first, true, sh, out);
            }
            Behaviour::Equivocate {
                both_to_coordinator,
            } => {
                let first = self.byz_choice(None, &p.options);
                self.equivocate(now, p, &first, both_to_coordinator, sh, out);
            }
            Behaviour::Coalition => {
                let wrong = VoteValue::Choice(sh.wrong.clone());
                let prepare = self.seal(
                    now,
                    None,
                    &p.session_id,
                    p.round,
                    Phase::Prepare,
                    wrong.clone(),
                    false,
                );
                let commit = self.seal(
                    now,
                    None,
                    &p.session_id,
                    p.round,
                    Phase::Commit,
                    wrong,
                    false,
                );
                self.emit(now, To::Everyone, vec![prepare, commit], out);
            }
            Behaviour::Replay => self.replay(now, p, sh, bus, To::Everyone, out),
        }
        self.flush(now, sh, out);
    }

    fn byz_choice(&self, suggestion: Option<&str>, options: &[String]) -> String {
        let pref = &self.spec.pref;
        if let Some(s) = suggestion {
            if s == pref.choice || pref.acceptable.iter().any(|a| a == s) {
                return s.to_owned();
            }
        }
        if options.is_empty() || options.contains(&pref.choice) {
            pref.choice.clone()
        } else {
            options[self.idx % options.len()].clone()
        }
    }

    /// Drains the replica: publishes go to everyone (re-signed by an invalid-signature
    /// attacker; dropped once an adaptive attacker has turned), decisions are recorded.
    fn flush(&mut self, now: u64, sh: &Shared, out: &mut Outbox) {
        let Some(byz) = self.byz.as_mut() else {
            return;
        };
        let mut publish = Vec::new();
        while let Some(effect) = byz.replica.poll() {
            match effect {
                ReplicaEffect::Publish(env) => publish.push(*env),
                ReplicaEffect::Decided { value, round } => {
                    if self.decided.is_none() {
                        self.decided = Some((value, round));
                    }
                }
                ReplicaEffect::Equivocation(_) => self.evidence += 1,
            }
        }
        let turned = byz.turned;
        for env in publish {
            match self.behaviour() {
                Behaviour::Adaptive if turned => continue,
                Behaviour::Adaptive => {
                    if let Ok(b) = env.open::<Ballot>(&sh.limits) {
                        if let (Phase::Prepare, VoteValue::Choice(v)) = (b.phase, b.value) {
                            if let Some(byz) = self.byz.as_mut() {
                                byz.my_prepare.insert(env.round, v);
                            }
                        }
                    }
                    self.emit(now, To::Everyone, vec![env], out);
                }
                Behaviour::InvalidSignature => {
                    let forged = SignedEnvelope::sign_payload(
                        &self.wrong_key,
                        env.header(),
                        env.payload.clone(),
                    );
                    self.emit(now, To::Everyone, vec![forged], out);
                }
                _ => self.emit(now, To::Everyone, vec![env], out),
            }
        }
        if self.behaviour() == Behaviour::Adaptive {
            self.check_turn(now, sh, out);
        }
    }

    /// A value other than `v`: the attackers' value when it differs, else another option.
    fn other_than(&self, v: &str, options: &[String], sh: &Shared) -> String {
        if sh.wrong != v {
            return sh.wrong.clone();
        }
        options
            .iter()
            .find(|o| o.as_str() != v)
            .cloned()
            .unwrap_or_else(|| format!("{v}-other"))
    }

    /// Prepares and commits `first` to half of the peers and another value to the other
    /// half; the coordinator gets both (or only the second).
    fn equivocate(
        &mut self,
        now: u64,
        p: &Proposal,
        first: &str,
        both: bool,
        sh: &Shared,
        out: &mut Outbox,
    ) {
        let Some(byz) = self.byz.as_ref() else {
            return;
        };
        let second = self.other_than(first, &byz.options, sh);
        let members = byz.members.clone();
        for phase in [Phase::Prepare, Phase::Commit] {
            let a = self.seal(
                now,
                None,
                &p.session_id,
                p.round,
                phase,
                VoteValue::Choice(first.to_owned()),
                false,
            );
            let b = self.seal(
                now,
                None,
                &p.session_id,
                p.round,
                phase,
                VoteValue::Choice(second.clone()),
                false,
            );
            let me = self.idx;
            for &peer in members.iter().filter(|&&m| m != me) {
                let env = if (peer + p.round as usize).is_multiple_of(2) {
                    a.clone()
                } else {
                    b.clone()
                };
                self.emit(now, To::Peer(peer), vec![env], out);
            }
            let to_coordinator = if both { vec![a, b] } else { vec![b] };
            self.emit(now, To::Coordinator, to_coordinator, out);
        }
    }

    fn watch_for_near_quorum(
        &mut self,
        _now: u64,
        envs: &[SignedEnvelope],
        sh: &Shared,
        _out: &mut Outbox,
    ) {
        let Some(byz) = self.byz.as_mut() else {
            return;
        };
        if byz.turned {
            return;
        }
        for env in envs {
            if env.session != byz.session {
                continue;
            }
            if let Ok(b) = env.open::<Ballot>(&sh.limits) {
                if let (Phase::Prepare, VoteValue::Choice(v)) = (b.phase, b.value) {
                    byz.seen
                        .entry((env.round, v))
                        .or_default()
                        .insert(env.sender.clone());
                }
            }
        }
    }

    /// Adaptive attacker: once some value of the current round is one prepare short of a
    /// quorum (counting its own), it prepares another value to the coordinator, commits the
    /// two values to the two halves of its peers, and equivocates from then on.
    fn check_turn(&mut self, now: u64, sh: &Shared, out: &mut Outbox) {
        let Some(byz) = self.byz.as_ref() else {
            return;
        };
        if byz.turned || byz.round == 0 {
            return;
        }
        let round = byz.round;
        let mine = byz.my_prepare.get(&round).cloned();
        let near = byz
            .seen
            .range((round, String::new())..)
            .take_while(|((r, _), _)| *r == round)
            .find(|((_, v), set)| {
                set.len() + usize::from(mine.as_deref() == Some(v.as_str())) + 1 >= byz.quorum
            })
            .map(|((_, v), _)| v.clone());
        let Some(v) = near else {
            return;
        };
        let w = self.other_than(&v, &byz.options, sh);
        let session = byz.session.clone();
        let members = byz.members.clone();
        if let Some(byz) = self.byz.as_mut() {
            byz.turned = true;
        }
        let p_env = self.seal(
            now,
            None,
            &session,
            round,
            Phase::Prepare,
            VoteValue::Choice(w.clone()),
            false,
        );
        let cw = self.seal(
            now,
            None,
            &session,
            round,
            Phase::Commit,
            VoteValue::Choice(w.clone()),
            false,
        );
        let cv = self.seal(
            now,
            None,
            &session,
            round,
            Phase::Commit,
            VoteValue::Choice(v),
            false,
        );
        self.emit(now, To::Coordinator, vec![p_env, cw.clone()], out);
        let me = self.idx;
        for &peer in members.iter().filter(|&&m| m != me) {
            let env = if peer.is_multiple_of(2) {
                cw.clone()
            } else {
                cv.clone()
            };
            self.emit(now, To::Peer(peer), vec![env], out);
        }
    }

    /// Ballots in an honest member's name, signed with this agent's key.
    fn forge(&mut self, now: u64, p: &Proposal, sh: &Shared, byzantine: bool, out: &mut Outbox) {
        let members: Vec<usize> = match &self.byz {
            Some(b) if byzantine => b.members.clone(),
            _ => (0..sh.n).collect(),
        };
        let candidates: Vec<usize> = members.into_iter().filter(|&m| m != self.idx).collect();
        let Some(&victim) = candidates.choose(&mut self.rng) else {
            return;
        };
        let victim = ring().ids[victim].clone();
        let value = self.coalition_value(p, sh);
        let to = if byzantine {
            To::Everyone
        } else {
            To::Coordinator
        };
        let phases: &[Phase] = if byzantine {
            &[Phase::Prepare, Phase::Commit]
        } else {
            &[Phase::Vote]
        };
        let envs: Vec<SignedEnvelope> = phases
            .iter()
            .map(|&phase| {
                self.seal(
                    now,
                    Some(&victim),
                    &p.session_id,
                    p.round,
                    phase,
                    value.clone(),
                    false,
                )
            })
            .collect();
        self.emit(now, to, envs, out);
    }

    fn replay(
        &mut self,
        now: u64,
        p: &Proposal,
        sh: &Shared,
        bus: &[SignedEnvelope],
        to: To,
        out: &mut Outbox,
    ) {
        let mut picks: Vec<SignedEnvelope> =
            sh.old.choose_multiple(&mut self.rng, 3).cloned().collect();
        let earlier: Vec<&SignedEnvelope> = bus
            .iter()
            .filter(|e| e.session == p.session_id && e.round < p.round)
            .collect();
        picks.extend(
            earlier
                .choose_multiple(&mut self.rng, 3)
                .map(|e| (*e).clone()),
        );
        let current: Vec<&SignedEnvelope> = bus
            .iter()
            .filter(|e| e.session == p.session_id && e.round == p.round && e.sender != self.id)
            .collect();
        picks.extend(current.choose(&mut self.rng).map(|e| (*e).clone()));
        if !picks.is_empty() {
            self.emit(now, to, picks, out);
        }
    }

    // ---- Single-round and multi-round votes -------------------------------------------------

    fn vote_proposal(
        &mut self,
        now: u64,
        p: &Proposal,
        sh: &Shared,
        bus: &[SignedEnvelope],
        out: &mut Outbox,
    ) {
        if !self.answered.insert(p.round) {
            return; // a duplicate proposal
        }
        let honest = self.honest_value(p);
        let seal = |agent: &mut Self, value: VoteValue, bad: bool| {
            agent.seal(now, None, &p.session_id, p.round, Phase::Vote, value, bad)
        };
        match self.behaviour() {
            Behaviour::Silent => {}
            Behaviour::Honest | Behaviour::Slow { .. } | Behaviour::Crash { .. } => {
                let env = seal(self, honest, false);
                self.emit(now, To::Coordinator, vec![env], out);
            }
            Behaviour::Timing { .. } => {
                self.arm_release(now, p.deadline_ms, sh, out);
                let env = seal(self, honest, false);
                self.emit(now, To::Coordinator, vec![env], out);
            }
            Behaviour::Equivocate {
                both_to_coordinator,
            } => {
                let alt = self.alt_value(&honest, p, sh);
                let a = seal(self, honest, false);
                let b = seal(self, alt, false);
                if both_to_coordinator {
                    self.emit(now, To::Coordinator, vec![a, b], out);
                } else {
                    self.emit(now, To::Coordinator, vec![a], out);
                    self.hold_for(now, sh, To::Coordinator, vec![b], out);
                }
            }
            Behaviour::InvalidSignature => {
                let env = seal(self, honest, true);
                self.emit(now, To::Coordinator, vec![env], out);
                self.forge(now, p, sh, false, out);
            }
            Behaviour::Replay => self.replay(now, p, sh, bus, To::Coordinator, out),
            Behaviour::Coalition => {
                let value = self.coalition_value(p, sh);
                let env = seal(self, value, false);
                self.emit(now, To::Coordinator, vec![env], out);
            }
            Behaviour::Adaptive => {
                let alt = self.alt_value(&honest, p, sh);
                let a = seal(self, honest, false);
                let b = seal(self, alt, false);
                self.emit(now, To::Coordinator, vec![a], out);
                self.hold_for(now, sh, To::Coordinator, vec![b], out);
            }
        }
    }

    /// Sends `envs` a little later (a second, contradicting ballot).
    fn hold_for(
        &mut self,
        now: u64,
        sh: &Shared,
        to: To,
        envs: Vec<SignedEnvelope>,
        out: &mut Outbox,
    ) {
        self.next_token += 1;
        let token = self.next_token;
        let at = now + 1 + self.rng.gen_range(0..=sh.base_ms + sh.jitter_ms);
        self.held
            .entry(token)
            .or_default()
            .push(Out { to, envs, delay: 0 });
        out.wakes.push((at, token));
    }

    fn choice_for(&self, p: &Proposal) -> VoteValue {
        let pref = &self.spec.pref;
        if pref.abstain {
            return VoteValue::Abstain;
        }
        if p.options.contains(&pref.choice) {
            return VoteValue::Choice(pref.choice.clone());
        }
        if p.options.iter().any(|o| o == "accept") && p.options.iter().any(|o| o == "reject") {
            // A pipeline stage asking whether to accept the previous stage's outcome.
            let previous = p
                .proposal
                .get("outcome")
                .and_then(|o| {
                    o.get("choice")
                        .or_else(|| o.get("winner"))
                        .or_else(|| o.get("leader"))
                })
                .and_then(|c| c.as_str());
            let accept =
                previous.is_none_or(|c| c == pref.choice || pref.acceptable.iter().any(|a| a == c));
            return VoteValue::Choice(if accept { "accept" } else { "reject" }.to_owned());
        }
        match p.options.get(self.idx % p.options.len().max(1)) {
            Some(o) => VoteValue::Choice(o.clone()),
            None => VoteValue::Abstain,
        }
    }

    /// The honest ballot for this round (moving iterative values and negotiation offers).
    fn honest_value(&mut self, p: &Proposal) -> VoteValue {
        let step = self.spec.pref.step;
        match p.algorithm.as_str() {
            "iterative" => {
                if let RoundContext::Refine { aggregate, .. } = &p.context {
                    if aggregate.len() == self.value.len() {
                        for (x, a) in self.value.iter_mut().zip(aggregate) {
                            *x += step * (a - *x);
                        }
                    }
                }
                if self.value.len() == 1 {
                    VoteValue::Number(self.value[0])
                } else {
                    VoteValue::Vector(self.value.clone())
                }
            }
            "negotiation" => {
                if let RoundContext::Counter { proposal } = p.context {
                    let (mut v, mut lo, mut hi) = self.offer;
                    v += step * (proposal - v);
                    if proposal < lo {
                        lo -= step * (lo - proposal) + 0.5;
                    }
                    if proposal > hi {
                        hi += step * (proposal - hi) + 0.5;
                    }
                    self.offer = (v, lo.min(v), hi.max(v));
                }
                let (value, min, max) = self.offer;
                VoteValue::Offer { value, min, max }
            }
            "auction" => VoteValue::Bid(self.spec.pref.bid),
            "leader_election" => VoteValue::Choice(self.spec.pref.leader.clone()),
            "work_distribution" => VoteValue::Load {
                load: self.spec.pref.load.0,
                capacity: self.spec.pref.load.1,
            },
            "ranked_choice" => {
                if self.spec.pref.abstain {
                    return VoteValue::Abstain;
                }
                let ranking: Vec<String> = self
                    .spec
                    .pref
                    .ranking
                    .iter()
                    .filter(|o| p.options.contains(o))
                    .cloned()
                    .collect();
                if ranking.is_empty() {
                    VoteValue::Abstain
                } else {
                    VoteValue::Ranking(ranking)
                }
            }
            _ => self.choice_for(p),
        }
    }

    /// A different ballot of the same kind (the second half of an equivocation).
    fn alt_value(&self, honest: &VoteValue, p: &Proposal, sh: &Shared) -> VoteValue {
        match honest {
            VoteValue::Choice(c) if p.algorithm == "leader_election" => {
                let me = self.id.to_string();
                VoteValue::Choice(if *c == me {
                    ring().ids[(self.idx + 1) % sh.n.max(1)].to_string()
                } else {
                    me
                })
            }
            VoteValue::Choice(c) => match p.options.iter().find(|o| *o != c) {
                Some(o) => VoteValue::Choice(o.clone()),
                None => VoteValue::Abstain,
            },
            VoteValue::Ranking(r) if r.len() > 1 => {
                VoteValue::Ranking(r.iter().rev().cloned().collect())
            }
            VoteValue::Ranking(r) => match p.options.iter().find(|o| Some(*o) != r.first()) {
                Some(o) => VoteValue::Ranking(vec![o.clone()]),
                None => VoteValue::Abstain,
            },
            VoteValue::Number(x) => VoteValue::Number(x + 10.0),
            VoteValue::Vector(v) => VoteValue::Vector(v.iter().map(|x| x + 10.0).collect()),
            VoteValue::Bid(b) => VoteValue::Bid(b * 2.0 + 1.0),
            VoteValue::Offer { value, min, max } => VoteValue::Offer {
                value: value + 10.0,
                min: min + 10.0,
                max: max + 10.0,
            },
            VoteValue::Load { load, capacity } => VoteValue::Load {
                load: load + 5.0,
                capacity: *capacity,
            },
            VoteValue::Abstain => match p.options.first() {
                Some(o) => VoteValue::Choice(o.clone()),
                None => VoteValue::Number(0.0),
            },
        }
    }

    /// The value a coalition pushes, as a ballot of this round's kind.
    fn coalition_value(&self, p: &Proposal, sh: &Shared) -> VoteValue {
        let wrong_choice = || {
            if p.options.contains(&sh.wrong) || p.options.is_empty() {
                sh.wrong.clone()
            } else {
                p.options.last().cloned().unwrap_or_default()
            }
        };
        match p.algorithm.as_str() {
            "iterative" => {
                if self.value.len() == 1 {
                    VoteValue::Number(sh.wrong_number)
                } else {
                    VoteValue::Vector(vec![sh.wrong_number; self.value.len()])
                }
            }
            "negotiation" => VoteValue::Offer {
                value: sh.wrong_number,
                min: sh.wrong_number,
                max: sh.wrong_number,
            },
            "auction" => VoteValue::Bid(sh.wrong_number.abs() * 10.0),
            "leader_election" => VoteValue::Choice(sh.wrong_leader.clone()),
            "work_distribution" => VoteValue::Load {
                load: 0.0,
                capacity: 1000.0,
            },
            "ranked_choice" => VoteValue::Ranking(vec![wrong_choice()]),
            _ => VoteValue::Choice(wrong_choice()),
        }
    }
}
