//! Pipelines (hierarchical consensus): stages run one after another, each over its own
//! participants, and each stage's outcome becomes the next stage's proposal.

use mabeam_protocol::{AgentId, Status};
use serde_json::json;

use super::{intake::Accepted, on_inner, Ctx, Machine, Scope, StageEnd, Step};
use crate::{algorithm::PipelineParams, AlgorithmSpec, ConfigError};

#[derive(Debug)]
struct Stage {
    spec: AlgorithmSpec,
    participants: Option<Vec<AgentId>>,
    options: Option<Vec<String>>,
}

#[derive(Debug)]
pub(crate) struct Pipeline {
    stages: Vec<Stage>,
    scope: Scope,
    end_ms: u64,
    index: usize,
    inner: Option<Machine>,
}

impl Pipeline {
    pub(crate) fn new(
        params: PipelineParams,
        scope: Scope,
        end_ms: u64,
    ) -> Result<Self, ConfigError> {
        let stages = params
            .stages
            .into_iter()
            .map(|s| {
                let spec = AlgorithmSpec::parse(&s.algorithm, &s.params)?;
                let electorate = match &s.participants {
                    Some(ids) => scope.electorate.subset(ids)?,
                    None => scope.electorate.clone(),
                };
                spec.check_electorate(electorate.len())?;
                Ok(Stage {
                    spec,
                    participants: s.participants,
                    options: s.options,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Self {
            stages,
            scope,
            end_ms,
            index: 0,
            inner: None,
        })
    }

    pub(crate) fn start(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        let proposal = self.scope.proposal.clone();
        self.run_stage(ctx, now, proposal)
    }

    fn run_stage(&mut self, ctx: &mut Ctx, now: u64, proposal: serde_json::Value) -> Step {
        let Some(stage) = self.stages.get(self.index) else {
            return Step::Done(StageEnd::no_decision("pipeline has no stages"));
        };
        let electorate = match &stage.participants {
            Some(ids) => match self.scope.electorate.subset(ids) {
                Ok(e) => e,
                Err(e) => return Step::Done(StageEnd::no_decision(e.to_string())),
            },
            None => self.scope.electorate.clone(),
        };
        let options = stage
            .options
            .clone()
            .unwrap_or_else(|| self.scope.options.clone());
        let scope = Scope::new(&stage.spec, electorate, options, proposal);
        // Later stages must not starve: each gets an equal share of the time left.
        let stages_left = (self.stages.len() - self.index) as u64;
        let stage_end = now.saturating_add(self.end_ms.saturating_sub(now) / stages_left.max(1));
        let mut machine = match Machine::new(stage.spec.clone(), scope, stage_end) {
            Ok(m) => m,
            Err(e) => {
                return Step::Done(StageEnd::no_decision(format!(
                    "stage {}: {e}",
                    self.index + 1
                )))
            }
        };
        ctx.stage = u32::try_from(self.index).unwrap_or(u32::MAX);
        let step = machine.start(ctx, now);
        self.inner = Some(machine);
        self.after_inner(ctx, now, step)
    }

    fn after_inner(&mut self, ctx: &mut Ctx, now: u64, step: Step) -> Step {
        let Step::Done(end) = step else {
            return Step::Continue;
        };
        let name = self.stages.get(self.index).map_or("?", |s| s.spec.name());
        if end.status != Status::Decided {
            let reason = end.reason.clone().unwrap_or_default();
            return Step::Done(StageEnd {
                reason: Some(format!(
                    "stage {} ({name}) ended without a decision: {reason}",
                    self.index + 1
                )),
                ..end
            });
        }
        if self.index + 1 >= self.stages.len() {
            return Step::Done(end);
        }
        let proposal = json!({
            "stage": self.index + 1,
            "algorithm": name,
            "outcome": end.outcome,
        });
        self.index += 1;
        self.run_stage(ctx, now, proposal)
    }

    pub(crate) fn on_ballot(&mut self, ctx: &mut Ctx, now: u64, accepted: &Accepted) -> Step {
        let step = on_inner(&mut self.inner, |m| m.on_ballot(ctx, now, accepted));
        self.after_inner(ctx, now, step)
    }

    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        let step = on_inner(&mut self.inner, |m| m.on_timer(ctx, now));
        self.after_inner(ctx, now, step)
    }

    pub(crate) fn on_equivocation(&mut self, ctx: &mut Ctx, now: u64, agent: &AgentId) -> Step {
        let step = on_inner(&mut self.inner, |m| m.on_equivocation(ctx, now, agent));
        self.after_inner(ctx, now, step)
    }
}
