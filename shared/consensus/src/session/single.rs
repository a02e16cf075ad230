//! Algorithms decided by one round of ballots: the choice family, ranked choice, auction,
//! leader election and work distribution.

use std::collections::BTreeMap;

use mabeam_protocol::{
    session::{Phase, RoundContext, VoteValue},
    AgentId,
};

use super::{intake::Accepted, Ctx, Scope, StageEnd, Step};
use crate::{
    algorithm::OnTie,
    tally::{
        self,
        choice::{ChoiceCount, ChoiceRule},
        TallyInput, Vote,
    },
    AlgorithmSpec, ConfigError,
};

#[derive(Debug)]
pub(crate) struct SingleRound {
    spec: AlgorithmSpec,
    scope: Scope,
    end_ms: u64,
    round: u32,
    votes: BTreeMap<AgentId, Vote>,
    /// Choice-family rounds keep running totals so they can close as soon as the outcome
    /// is certain instead of waiting for stragglers.
    running: Option<Running>,
    /// Rounds opened to break a tie (at most `max_revotes`, or 1 for the supervisor).
    tie_rounds: u32,
}

/// Running totals of a choice-family round and what the agents yet to vote could add.
#[derive(Debug)]
struct Running {
    rule: ChoiceRule,
    count: ChoiceCount,
    remaining_weight: f64,
}

impl Running {
    fn new(rule: ChoiceRule, scope: &Scope, votes: &BTreeMap<AgentId, Vote>) -> Self {
        let count = ChoiceCount::new(&scope.options, &rule, &scope.electorate);
        let mut running = Self {
            remaining_weight: scope
                .electorate
                .iter()
                .map(|p| rule.max_weight(p.expertise))
                .sum(),
            rule,
            count,
        };
        for vote in votes.values() {
            running.add(scope, vote);
        }
        running
    }

    fn add(&mut self, scope: &Scope, vote: &Vote) {
        let expertise = scope
            .electorate
            .get(&vote.agent)
            .map_or(0.0, |p| p.expertise);
        let choice = match &vote.value {
            VoteValue::Choice(c) => Some(c.as_str()),
            _ => None,
        };
        self.count
            .add(choice, self.rule.weight(expertise, vote.confidence));
        self.remaining_weight -= self.rule.max_weight(expertise);
    }
}

impl SingleRound {
    pub(crate) fn new(spec: AlgorithmSpec, scope: Scope, end_ms: u64) -> Result<Self, ConfigError> {
        let rule = ChoiceRule::for_spec(&spec);
        if let Some(OnTie::Escalate { supervisor }) = rule.as_ref().map(|r| &r.on_tie) {
            if !scope.electorate.contains(supervisor) {
                return Err(ConfigError::params(
                    spec.name(),
                    format!("on_tie.supervisor {supervisor} is not a participant"),
                ));
            }
        }
        let running = rule.map(|rule| Running::new(rule, &scope, &BTreeMap::new()));
        Ok(Self {
            spec,
            scope,
            end_ms,
            round: 0,
            votes: BTreeMap::new(),
            running,
            tie_rounds: 0,
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        self.spec.name()
    }

    pub(crate) fn start(&mut self, ctx: &mut Ctx, _now: u64) -> Step {
        self.open_round(ctx);
        Step::Continue
    }

    fn open_round(&mut self, ctx: &mut Ctx) {
        self.round = ctx.open_round(
            self.name(),
            Phase::Vote,
            RoundContext::Open,
            &self.scope,
            self.end_ms,
        );
    }

    pub(crate) fn on_ballot(&mut self, ctx: &mut Ctx, now: u64, accepted: &Accepted) -> Step {
        let agent = &accepted.agent;
        if accepted.round != self.round || !self.scope.electorate.contains(agent) {
            return Step::Continue;
        }
        let ballot = &accepted.ballot;
        if ballot.phase != Phase::Vote {
            ctx.refuse(
                agent,
                format!("{} takes vote ballots, not {:?}", self.name(), ballot.phase),
            );
            return Step::Continue;
        }
        if let Err(e) = tally::check_ballot(
            &self.spec,
            &ballot.value,
            &self.scope.options,
            &self.scope.electorate,
        ) {
            ctx.refuse(agent, e.0);
            return Step::Continue;
        }
        let vote = Vote {
            agent: agent.clone(),
            value: ballot.value.clone(),
            confidence: ballot.confidence,
        };
        if let Some(running) = &mut self.running {
            running.add(&self.scope, &vote);
        }
        // Intake admits one ballot per agent and round, so this never replaces a vote.
        self.votes.insert(agent.clone(), vote);
        if self.votes.len() == self.scope.electorate.len() || self.settled() {
            return self.close(ctx, now);
        }
        Step::Continue
    }

    fn settled(&self) -> bool {
        let remaining = self.scope.electorate.len() - self.votes.len();
        self.running.as_ref().is_some_and(|r| {
            r.count
                .settled(&r.rule, r.remaining_weight.max(0.0), remaining)
        })
    }

    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        if ctx.round_due(now) {
            ctx.note_silent(&self.scope, |id| self.votes.contains_key(id));
            return self.close(ctx, now);
        }
        Step::Continue
    }

    pub(crate) fn exclude(&mut self, ctx: &mut Ctx, now: u64, agent: &AgentId) -> Step {
        if self.votes.remove(agent).is_some() {
            if let Some(running) = &mut self.running {
                *running = Running::new(running.rule.clone(), &self.scope, &self.votes);
            }
        }
        // The equivocator will never vote validly again: the round may now be complete.
        let others_done = ctx.nothing_more_to_come(&self.scope, |id| self.votes.contains_key(id));
        if others_done {
            return self.close(ctx, now);
        }
        Step::Continue
    }

    fn close(&mut self, ctx: &mut Ctx, _now: u64) -> Step {
        let votes: Vec<Vote> = self.votes.values().cloned().collect();
        let input = TallyInput {
            votes: &votes,
            options: &self.scope.options,
            electorate: &self.scope.electorate,
        };
        let Some(mut result) = tally::tally_single_round(&self.spec, &input, &mut ctx.rng) else {
            return Step::Done(StageEnd::no_decision(format!(
                "{} is not a single-round algorithm",
                self.name()
            )));
        };
        // Tallies number their own rounds from 1 (ranked choice records each elimination
        // round); the stage says where in a chain or pipeline the tally happened.
        for mut record in std::mem::take(&mut result.history) {
            record.stage = ctx.stage;
            ctx.record(record);
        }
        if result.outcome.is_none() && !result.tied.is_empty() {
            if let Some(step) = self.break_tie(ctx, std::mem::take(&mut result.tied)) {
                return step;
            }
        }
        Step::Done(StageEnd::from_tally(result))
    }

    /// Applies the task's tie policy: a new round over the tied options — of everyone
    /// (re-vote) or of the supervisor alone (escalate) — or `None` when the tie stands.
    fn break_tie(&mut self, ctx: &mut Ctx, tied: Vec<String>) -> Option<Step> {
        let on_tie = self.running.as_ref()?.rule.on_tie.clone();
        let limit = match &on_tie {
            OnTie::Fail => return None,
            OnTie::Revote { max_revotes } => *max_revotes,
            OnTie::Escalate { .. } => 1,
        };
        if self.tie_rounds >= limit {
            return None;
        }
        self.tie_rounds += 1;
        let electorate = match &on_tie {
            // Checked against the electorate when the session started.
            OnTie::Escalate { supervisor } => self
                .scope
                .electorate
                .subset(std::slice::from_ref(supervisor))
                .ok()?,
            _ => self.scope.electorate.clone(),
        };
        self.scope = Scope {
            electorate,
            options: tied,
            proposal: self.scope.proposal.clone(),
        };
        self.votes.clear();
        if let Some(running) = &mut self.running {
            *running = Running::new(running.rule.clone(), &self.scope, &self.votes);
        }
        self.open_round(ctx);
        Some(Step::Continue)
    }
}
