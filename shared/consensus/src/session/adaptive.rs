//! Adaptive coordination: run the first algorithm of a fallback chain and move down the
//! chain when a trigger fires — too many failed agents, time pressure, or a decision of too
//! little quality. Every switch is recorded with its reason.

use mabeam_protocol::{result::AlgorithmSwitch, AgentId};

use super::{intake::Accepted, on_inner, Ctx, Effect, Machine, Scope, StageEnd, Step};
use crate::{algorithm::AdaptiveParams, AlgorithmSpec, ConfigError};

#[derive(Debug)]
pub(crate) struct Adaptive {
    params: AdaptiveParams,
    chain: Vec<AlgorithmSpec>,
    scope: Scope,
    end_ms: u64,
    /// Index in `chain` of the running algorithm.
    index: usize,
    inner: Option<Machine>,
    pressure_at_ms: Option<u64>,
    pressure_fired: bool,
    last_end: Option<StageEnd>,
}

impl Adaptive {
    pub(crate) fn new(
        params: AdaptiveParams,
        scope: Scope,
        end_ms: u64,
    ) -> Result<Self, ConfigError> {
        let chain = params
            .chain
            .iter()
            .map(|s| AlgorithmSpec::parse(&s.algorithm, &s.params))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            params,
            chain,
            scope,
            end_ms,
            index: 0,
            inner: None,
            pressure_at_ms: None,
            pressure_fired: false,
            last_end: None,
        })
    }

    pub(crate) fn pressure_at(&self) -> Option<u64> {
        self.pressure_at_ms.filter(|_| !self.pressure_fired)
    }

    pub(crate) fn start(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        let total = self.end_ms.saturating_sub(now) as f64;
        let at = now.saturating_add((total * self.params.time_pressure) as u64);
        self.pressure_at_ms = Some(at);
        ctx.out.push_back(Effect::ArmTimer { at_ms: at });
        self.run_from(ctx, now, 0, None)
    }

    /// Starts the first runnable algorithm at or after `index`.
    fn run_from(&mut self, ctx: &mut Ctx, now: u64, index: usize, reason: Option<String>) -> Step {
        let from = self.inner.as_ref().map(Machine::name);
        let mut skipped = Vec::new();
        for (i, spec) in self.chain.iter().enumerate().skip(index) {
            let scope = Scope::new(
                spec,
                self.scope.electorate.clone(),
                self.scope.options.clone(),
                self.scope.proposal.clone(),
            );
            match Machine::new(spec.clone(), scope, self.end_ms) {
                Ok(mut machine) => {
                    if let Some(from) = from {
                        let mut why = reason.clone().unwrap_or_default();
                        if !skipped.is_empty() {
                            why = format!("{why}; skipped {}", skipped.join(", "));
                        }
                        let switch = AlgorithmSwitch {
                            from: from.to_owned(),
                            to: spec.name().to_owned(),
                            reason: why,
                            at_round: ctx.round,
                            elapsed_ms: now.saturating_sub(ctx.started_ms),
                        };
                        ctx.switches.push(switch.clone());
                        ctx.out.push_back(Effect::Switched(switch));
                    }
                    self.index = i;
                    ctx.stage = u32::try_from(i).unwrap_or(u32::MAX);
                    let step = machine.start(ctx, now);
                    self.inner = Some(machine);
                    return self.after_inner(ctx, now, step);
                }
                Err(e) => skipped.push(format!("{} ({e})", spec.name())),
            }
        }
        let end = self.last_end.take().unwrap_or_else(|| {
            StageEnd::no_decision(format!(
                "no algorithm of the chain could run: {}",
                skipped.join(", ")
            ))
        });
        Step::Done(end)
    }

    fn switch(&mut self, ctx: &mut Ctx, now: u64, reason: String) -> Step {
        if self.index + 1 >= self.chain.len() {
            return Step::Continue;
        }
        self.run_from(ctx, now, self.index + 1, Some(reason))
    }

    /// Inspects what the running algorithm did and applies the triggers.
    fn after_inner(&mut self, ctx: &mut Ctx, now: u64, step: Step) -> Step {
        match step {
            Step::Done(end) => {
                let quality = end.quality();
                let last = self.index + 1 >= self.chain.len();
                if quality >= self.params.min_quality || last {
                    return Step::Done(end);
                }
                let reason = match &end.reason {
                    Some(r) if end.outcome.is_none() => format!("no decision: {r}"),
                    _ => format!(
                        "quality {quality:.2} < min_quality {:.2}",
                        self.params.min_quality
                    ),
                };
                self.last_end = Some(end);
                self.run_from(ctx, now, self.index + 1, Some(reason))
            }
            Step::Continue => {
                let ratio = ctx.failure_ratio(&self.scope);
                if ratio >= self.params.failure_ratio {
                    return self.switch(
                        ctx,
                        now,
                        format!(
                            "failure_ratio {ratio:.2} >= {:.2}",
                            self.params.failure_ratio
                        ),
                    );
                }
                Step::Continue
            }
        }
    }

    pub(crate) fn on_ballot(&mut self, ctx: &mut Ctx, now: u64, accepted: &Accepted) -> Step {
        let step = on_inner(&mut self.inner, |m| m.on_ballot(ctx, now, accepted));
        self.after_inner(ctx, now, step)
    }

    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        if let Some(at) = self.pressure_at() {
            if now >= at {
                self.pressure_fired = true;
                let elapsed = now.saturating_sub(ctx.started_ms);
                let total = self.end_ms.saturating_sub(ctx.started_ms).max(1);
                let before = self.index;
                let step = self.switch(
                    ctx,
                    now,
                    format!(
                        "time_pressure {:.2} >= {:.2}",
                        elapsed as f64 / total as f64,
                        self.params.time_pressure
                    ),
                );
                // Without a switch (already on the last algorithm) the timer may also be
                // the running round's deadline: fall through to it.
                if self.index != before || matches!(step, Step::Done(_)) {
                    return step;
                }
            }
        }
        let step = on_inner(&mut self.inner, |m| m.on_timer(ctx, now));
        self.after_inner(ctx, now, step)
    }

    pub(crate) fn on_equivocation(&mut self, ctx: &mut Ctx, now: u64, agent: &AgentId) -> Step {
        let step = on_inner(&mut self.inner, |m| m.on_equivocation(ctx, now, agent));
        self.after_inner(ctx, now, step)
    }
}
