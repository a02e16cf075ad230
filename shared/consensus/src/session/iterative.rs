//! Multi-round numeric algorithms: iterative refinement and negotiation. Each round the
//! coordinator publishes the current aggregate; agents answer with a revised value.

use std::collections::BTreeMap;

use mabeam_protocol::{
    result::RoundRecord,
    session::{Phase, RoundContext, VoteValue},
    AgentId, Outcome, Status,
};

use super::{intake::Accepted, Ctx, Scope, StageEnd, Step};
use crate::{
    algorithm::{IterativeParams, NegotiationParams},
    tally::{
        numeric::{self, Offer},
        EPSILON,
    },
};

/// Ballots needed for a round to count.
fn needed(min_participation: f64, n: usize) -> usize {
    ((min_participation * n as f64) - EPSILON).ceil().max(0.0) as usize
}

/// Deadline for the next of `rounds_left` rounds sharing the time up to `end_ms`.
fn round_deadline(now: u64, end_ms: u64, rounds_left: u32, fixed: Option<u64>) -> u64 {
    let timeout =
        fixed.unwrap_or_else(|| end_ms.saturating_sub(now) / u64::from(rounds_left.max(1)));
    now.saturating_add(timeout)
}

#[derive(Debug)]
pub(crate) struct Iterative {
    params: IterativeParams,
    scope: Scope,
    end_ms: u64,
    round: u32,
    rounds_run: u32,
    /// The vector length fixed by the first counted ballot.
    dimension: Option<usize>,
    values: BTreeMap<AgentId, (Vec<f64>, f64)>,
}

impl Iterative {
    pub(crate) fn new(params: IterativeParams, scope: Scope, end_ms: u64) -> Self {
        Self {
            params,
            scope,
            end_ms,
            round: 0,
            rounds_run: 0,
            dimension: None,
            values: BTreeMap::new(),
        }
    }

    pub(crate) fn start(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        self.open(ctx, now, RoundContext::Open);
        Step::Continue
    }

    fn open(&mut self, ctx: &mut Ctx, now: u64, context: RoundContext) {
        let deadline = round_deadline(
            now,
            self.end_ms,
            self.params.max_rounds - self.rounds_run,
            self.params.round_timeout_ms,
        );
        self.rounds_run += 1;
        self.values.clear();
        self.round = ctx.open_round("iterative", Phase::Vote, context, &self.scope, deadline);
    }

    pub(crate) fn on_ballot(&mut self, ctx: &mut Ctx, now: u64, accepted: &Accepted) -> Step {
        let agent = &accepted.agent;
        if accepted.round != self.round || !self.scope.electorate.contains(agent) {
            return Step::Continue;
        }
        let value = match &accepted.ballot.value {
            VoteValue::Number(x) if x.is_finite() => vec![*x],
            VoteValue::Vector(v) if !v.is_empty() && v.iter().all(|x| x.is_finite()) => v.clone(),
            VoteValue::Abstain => return Step::Continue,
            other => {
                ctx.refuse(
                    agent,
                    format!("iterative takes finite number or vector ballots, not {other:?}"),
                );
                return Step::Continue;
            }
        };
        match self.dimension {
            Some(d) if d != value.len() => {
                ctx.refuse(
                    agent,
                    format!(
                        "vector of length {}; this session's values have {d}",
                        value.len()
                    ),
                );
                return Step::Continue;
            }
            None => self.dimension = Some(value.len()),
            Some(_) => {}
        }
        let weight = self.scope.weight(agent, accepted.ballot.confidence);
        self.values.insert(agent.clone(), (value, weight));
        if self.values.len() == self.scope.electorate.len() {
            return self.close(ctx, now);
        }
        Step::Continue
    }

    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        if ctx.round_due(now) {
            ctx.note_silent(&self.scope, |id| self.values.contains_key(id));
            return self.close(ctx, now);
        }
        Step::Continue
    }

    pub(crate) fn exclude(&mut self, ctx: &mut Ctx, now: u64, agent: &AgentId) -> Step {
        self.values.remove(agent);
        let others_done = ctx.nothing_more_to_come(&self.scope, |id| self.values.contains_key(id));
        if others_done && !self.values.is_empty() {
            return self.close(ctx, now);
        }
        Step::Continue
    }

    fn close(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        let values: Vec<(Vec<f64>, f64)> = self.values.values().cloned().collect();
        let need = needed(self.params.min_participation, self.scope.electorate.len());
        let aggregate = numeric::aggregate(&values, self.params.aggregate);
        let dispersion = aggregate.as_ref().map(|a| numeric::dispersion(&values, a));
        ctx.record(RoundRecord {
            round: self.round,
            stage: ctx.stage,
            algorithm: "iterative".into(),
            counted: u32::try_from(values.len()).unwrap_or(u32::MAX),
            aggregate: aggregate.clone(),
            dispersion,
            ..RoundRecord::default()
        });
        let (Some(aggregate), Some(dispersion)) = (aggregate, dispersion) else {
            return Step::Done(StageEnd::no_decision(format!(
                "round {} had no counted values with positive weight",
                self.rounds_run
            )));
        };
        if values.len() < need {
            return Step::Done(StageEnd::no_decision(format!(
                "{} of {} agents answered round {}; min_participation needs {need}",
                values.len(),
                self.scope.electorate.len(),
                self.rounds_run
            )));
        }
        let decided = |reason: Option<String>| {
            Step::Done(StageEnd {
                status: Status::Decided,
                outcome: Some(Outcome::Value {
                    value: aggregate.clone(),
                    dispersion,
                }),
                reason,
                certificate: None,
            })
        };
        if dispersion <= self.params.convergence_threshold {
            return decided(None);
        }
        if self.rounds_run >= self.params.max_rounds || now >= self.end_ms {
            let reason = format!(
                "dispersion {dispersion:.6} still above {} after {} round(s)",
                self.params.convergence_threshold, self.rounds_run
            );
            if self.params.require_convergence {
                return Step::Done(StageEnd::no_decision(reason));
            }
            return decided(Some(reason));
        }
        self.open(
            ctx,
            now,
            RoundContext::Refine {
                aggregate,
                dispersion,
            },
        );
        Step::Continue
    }
}

#[derive(Debug)]
pub(crate) struct Negotiation {
    params: NegotiationParams,
    scope: Scope,
    end_ms: u64,
    round: u32,
    rounds_run: u32,
    offers: BTreeMap<AgentId, Offer>,
}

impl Negotiation {
    pub(crate) fn new(params: NegotiationParams, scope: Scope, end_ms: u64) -> Self {
        Self {
            params,
            scope,
            end_ms,
            round: 0,
            rounds_run: 0,
            offers: BTreeMap::new(),
        }
    }

    pub(crate) fn start(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        self.open(ctx, now, RoundContext::Open);
        Step::Continue
    }

    fn open(&mut self, ctx: &mut Ctx, now: u64, context: RoundContext) {
        let deadline = round_deadline(
            now,
            self.end_ms,
            self.params.max_rounds - self.rounds_run,
            self.params.round_timeout_ms,
        );
        self.rounds_run += 1;
        self.offers.clear();
        self.round = ctx.open_round("negotiation", Phase::Vote, context, &self.scope, deadline);
    }

    pub(crate) fn on_ballot(&mut self, ctx: &mut Ctx, now: u64, accepted: &Accepted) -> Step {
        let agent = &accepted.agent;
        if accepted.round != self.round || !self.scope.electorate.contains(agent) {
            return Step::Continue;
        }
        let (value, min, max) = match accepted.ballot.value {
            VoteValue::Offer { value, min, max }
                if value.is_finite() && min.is_finite() && max.is_finite() && min <= max =>
            {
                (value, min, max)
            }
            // A bare number is an offer that accepts only itself.
            VoteValue::Number(x) if x.is_finite() => (x, x, x),
            VoteValue::Abstain => return Step::Continue,
            ref other => {
                ctx.refuse(
                    agent,
                    format!("negotiation takes offers (value, min <= max), not {other:?}"),
                );
                return Step::Continue;
            }
        };
        self.offers.insert(
            agent.clone(),
            Offer {
                agent: agent.clone(),
                value,
                min,
                max,
                weight: self.scope.weight(agent, accepted.ballot.confidence),
            },
        );
        if self.offers.len() == self.scope.electorate.len() {
            return self.close(ctx, now);
        }
        Step::Continue
    }

    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        if ctx.round_due(now) {
            ctx.note_silent(&self.scope, |id| self.offers.contains_key(id));
            return self.close(ctx, now);
        }
        Step::Continue
    }

    pub(crate) fn exclude(&mut self, ctx: &mut Ctx, now: u64, agent: &AgentId) -> Step {
        self.offers.remove(agent);
        let others_done = ctx.nothing_more_to_come(&self.scope, |id| self.offers.contains_key(id));
        if others_done && !self.offers.is_empty() {
            return self.close(ctx, now);
        }
        Step::Continue
    }

    fn close(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        let offers: Vec<Offer> = self.offers.values().cloned().collect();
        let need = needed(self.params.min_participation, self.scope.electorate.len());
        let step = numeric::negotiate(&offers, (self.params.min, self.params.max));
        ctx.record(RoundRecord {
            round: self.round,
            stage: ctx.stage,
            algorithm: "negotiation".into(),
            counted: u32::try_from(offers.len()).unwrap_or(u32::MAX),
            aggregate: step.as_ref().map(|s| vec![s.proposal]),
            note: step
                .as_ref()
                .filter(|s| !s.holdouts.is_empty())
                .map(|s| format!("{} holdout(s)", s.holdouts.len())),
            ..RoundRecord::default()
        });
        let Some(step) = step else {
            return Step::Done(StageEnd::no_decision(format!(
                "round {} had no offers",
                self.rounds_run
            )));
        };
        if offers.len() < need {
            return Step::Done(StageEnd::no_decision(format!(
                "{} of {} agents made offers; min_participation needs {need}",
                offers.len(),
                self.scope.electorate.len()
            )));
        }
        if step.agreed {
            let spread = offers
                .iter()
                .map(|o| (o.value - step.proposal).abs())
                .fold(0.0, f64::max);
            return Step::Done(StageEnd {
                status: Status::Decided,
                outcome: Some(Outcome::Value {
                    value: vec![step.proposal],
                    dispersion: spread,
                }),
                reason: None,
                certificate: None,
            });
        }
        if self.rounds_run >= self.params.max_rounds || now >= self.end_ms {
            let holdouts: Vec<&str> = step.holdouts.iter().map(AgentId::as_str).collect();
            return Step::Done(StageEnd::no_decision(format!(
                "no agreement after {} round(s); {} do not accept {:.6}",
                self.rounds_run,
                holdouts.join(", "),
                step.proposal
            )));
        }
        self.open(
            ctx,
            now,
            RoundContext::Counter {
                proposal: step.proposal,
            },
        );
        Step::Continue
    }
}
