//! Byzantine agreement among agents, with the coordinator as a trusted sequencer.
//!
//! Each round: the coordinator proposes; every agent publishes a signed *prepare* for its
//! value on the session's vote subjects, where all members see it; an agent that sees 2f+1
//! matching prepares for `v` publishes a signed *commit* for `v` and locks on `v` (it will
//! prepare only `v` in later rounds); 2f+1 matching commits decide `v`, and those commits are
//! the certificate. "2f+1" is shorthand for the quorum ⌈(n+f+1)/2⌉, which it equals when
//! n = 3f+1. The honest side of this protocol is [`crate::replica::ByzantineReplica`].
//!
//! With n >= 3f+1 and at most f faulty agents two quorums share an honest agent, so no two
//! rounds or replicas can certify different values. Commits of an earlier round still decide
//! when they arrive late: they are as final as current ones. With more than f faulty agents
//! the session may end without a decision, never with two.

use std::collections::{BTreeMap, BTreeSet};

use mabeam_protocol::{
    result::RoundRecord,
    session::{Phase, RoundContext, VoteValue},
    AgentId, Certificate, Outcome, SignedEnvelope, Status,
};

use super::{intake::Accepted, Ctx, Scope, StageEnd, Step};
use crate::{algorithm::ByzantineParams, tally, AlgorithmSpec};

#[derive(Debug)]
pub(crate) struct Byzantine {
    scope: Scope,
    spec: AlgorithmSpec,
    f: u32,
    quorum: u32,
    max_rounds: u32,
    round_timeout_ms: Option<u64>,
    end_ms: u64,
    rounds_run: u32,
    round: u32,
    prepares: BTreeMap<String, BTreeSet<AgentId>>,
    /// By (round, value): commits of earlier rounds of this stage may still complete a quorum.
    commits: BTreeMap<(u32, String), BTreeMap<AgentId, SignedEnvelope>>,
    first_round: u32,
    excluded: BTreeSet<AgentId>,
    suggestion: Option<String>,
}

impl Byzantine {
    pub(crate) fn new(params: ByzantineParams, scope: Scope, end_ms: u64) -> Self {
        let f = AlgorithmSpec::byzantine_f(&params, scope.electorate.len());
        Self {
            f,
            quorum: mabeam_protocol::result::byzantine_quorum(scope.electorate.len(), f),
            max_rounds: params.max_rounds,
            round_timeout_ms: params.round_timeout_ms,
            spec: AlgorithmSpec::Byzantine(params),
            scope,
            end_ms,
            rounds_run: 0,
            round: 0,
            prepares: BTreeMap::new(),
            commits: BTreeMap::new(),
            first_round: 0,
            excluded: BTreeSet::new(),
            suggestion: None,
        }
    }

    pub(crate) fn start(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        self.open(ctx, now);
        Step::Continue
    }

    fn open(&mut self, ctx: &mut Ctx, now: u64) {
        let rounds_left = u64::from(self.max_rounds - self.rounds_run).max(1);
        let timeout = self
            .round_timeout_ms
            .unwrap_or_else(|| self.end_ms.saturating_sub(now) / rounds_left);
        self.rounds_run += 1;
        self.prepares.clear();
        let context = RoundContext::Byzantine {
            fault_tolerance: self.f,
            quorum: self.quorum,
            electorate: self.scope.electorate.public_members(),
            suggestion: self.suggestion.clone(),
        };
        self.round = ctx.open_round(
            "byzantine",
            Phase::Prepare,
            context,
            &self.scope,
            now.saturating_add(timeout),
        );
        if self.first_round == 0 {
            self.first_round = self.round;
        }
    }

    pub(crate) fn on_ballot(&mut self, ctx: &mut Ctx, _now: u64, accepted: &Accepted) -> Step {
        let agent = &accepted.agent;
        // Only commits may be of an earlier round of this stage (intake lets nothing else
        // through late).
        if !(self.first_round..=self.round).contains(&accepted.round)
            || !self.scope.electorate.contains(agent)
            || self.excluded.contains(agent)
        {
            return Step::Continue;
        }
        let ballot = &accepted.ballot;
        let value = match (&ballot.value, ballot.phase) {
            // An abstaining agent is present but backs nothing: neither counted nor faulty.
            (VoteValue::Abstain, _) => return Step::Continue,
            (VoteValue::Choice(c), Phase::Prepare | Phase::Commit) => c.clone(),
            (_, Phase::Vote) => {
                ctx.refuse(agent, "byzantine takes prepare and commit ballots".into());
                return Step::Continue;
            }
            _ => {
                ctx.refuse(agent, "byzantine ballots must be a choice".into());
                return Step::Continue;
            }
        };
        if let Err(e) = tally::check_ballot(
            &self.spec,
            &ballot.value,
            &self.scope.options,
            &self.scope.electorate,
        ) {
            ctx.refuse(agent, e.0);
            return Step::Continue;
        }
        if ballot.phase == Phase::Prepare {
            self.prepares
                .entry(value)
                .or_default()
                .insert(agent.clone());
            return Step::Continue;
        }
        if accepted.round != self.round && ballot.phase != Phase::Commit {
            return Step::Continue;
        }
        let round = accepted.round;
        let commits = self.commits.entry((round, value.clone())).or_default();
        commits.insert(agent.clone(), accepted.envelope.clone());
        if commits.len() >= self.quorum as usize {
            return self.decide(ctx, round, value);
        }
        Step::Continue
    }

    /// Commits of the current round, by value.
    fn current_commits(&self) -> impl Iterator<Item = (&String, usize)> {
        self.commits
            .iter()
            .filter(|((r, _), _)| *r == self.round)
            .map(|((_, v), c)| (v, c.len()))
    }

    fn decide(&mut self, ctx: &mut Ctx, round: u32, value: String) -> Step {
        let commits: Vec<SignedEnvelope> = self
            .commits
            .get(&(round, value.clone()))
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default();
        let n = self.scope.electorate.len() as f64;
        let support = commits.len() as f64 / n;
        self.record(ctx, None);
        let tally = self
            .commits
            .iter()
            .filter(|((r, _), _)| *r == round)
            .map(|((_, v), c)| (v.clone(), c.len() as f64))
            .collect();
        Step::Done(StageEnd {
            status: Status::Decided,
            outcome: Some(Outcome::Choice {
                choice: value.clone(),
                support,
                tally,
            }),
            reason: None,
            certificate: Some(Certificate {
                session_id: ctx.session_id.clone(),
                round,
                value,
                fault_tolerance: self.f,
                quorum: self.quorum,
                electorate: self.scope.electorate.public_members(),
                commits,
            }),
        })
    }

    fn record(&self, ctx: &mut Ctx, note: Option<String>) {
        let commits: Vec<String> = self
            .current_commits()
            .map(|(v, n)| format!("{v}={n}"))
            .collect();
        let note = match note {
            Some(n) => format!("{n}; commits {}", commits.join(", ")),
            None => format!("commits {}", commits.join(", ")),
        };
        ctx.record(RoundRecord {
            round: self.round,
            stage: ctx.stage,
            algorithm: "byzantine".into(),
            counted: u32::try_from(self.prepares.values().map(BTreeSet::len).sum::<usize>())
                .unwrap_or(u32::MAX),
            tally: self
                .prepares
                .iter()
                .map(|(v, p)| (v.clone(), p.len() as f64))
                .collect(),
            note: Some(note),
            ..RoundRecord::default()
        });
    }

    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        if !ctx.round_due(now) {
            return Step::Continue;
        }
        ctx.note_silent(&self.scope, |id| {
            self.prepares.values().any(|p| p.contains(id))
        });
        // Offer the next round the most-prepared value, but only one backed by f+1 agents:
        // at least one of them is honest, so the suggestion never comes from attackers alone.
        self.suggestion = self
            .prepares
            .iter()
            .filter(|(_, p)| p.len() > self.f as usize)
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(a.0)))
            .map(|(v, _)| v.clone());
        if self.rounds_run >= self.max_rounds || now >= self.end_ms {
            let reason = format!(
                "no value reached {} matching commits in {} round(s)",
                self.quorum, self.rounds_run
            );
            self.record(ctx, Some(reason.clone()));
            return Step::Done(StageEnd::no_decision(reason));
        }
        self.record(ctx, Some("round timed out".into()));
        self.open(ctx, now);
        Step::Continue
    }

    pub(crate) fn exclude(&mut self, ctx: &mut Ctx, _now: u64, agent: &AgentId) -> Step {
        if !self.scope.electorate.contains(agent) {
            return Step::Continue;
        }
        self.excluded.insert(agent.clone());
        for p in self.prepares.values_mut() {
            p.remove(agent);
        }
        for c in self.commits.values_mut() {
            c.remove(agent);
        }
        if self.excluded.len() > self.f as usize {
            // The fault assumption is broken: stop rather than risk a decision that the
            // quorum argument no longer protects.
            let reason = format!(
                "{} agents proven faulty, more than f={}; no decision (safety over liveness)",
                self.excluded.len(),
                self.f
            );
            self.record(ctx, Some(reason.clone()));
            return Step::Done(StageEnd::no_decision(reason));
        }
        Step::Continue
    }
}
