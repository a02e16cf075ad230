//! Sessions: one task's coordination, as a state machine.
//!
//! The shell creates a [`Session`] with the task and its electorate, then loops: deliver
//! envelopes ([`Session::handle_envelopes`]), fire timers ([`Session::handle_timeout`]), and
//! drain [`Session::poll_effect`] — proposals to publish, timers to arm, rejected ballots and
//! equivocation evidence to report, and finally the [`Decision`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use mabeam_protocol::{
    result::{AlgorithmSwitch, FaultReason, FaultyAgent, RoundRecord},
    session::{EquivocationEvidence, Phase, Proposal, RoundContext},
    task::TaskSubmission,
    AgentId, Certificate, Outcome, SessionId, SignedEnvelope, Status, TaskId, TaskResult,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha8Rng};

use crate::{algorithm::DEFAULT_OPTIONS, AlgorithmSpec, ConfigError, Electorate};

mod adaptive;
mod byzantine;
mod intake;
mod iterative;
mod pipeline;
mod single;

pub use intake::IntakeSettings;
use intake::{Accepted, Admission, Intake, OpenRound};

/// Longest task timeout accepted.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
/// Task timeout when the task names none.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

/// Everything a session starts from.
#[derive(Debug, Clone)]
pub struct SessionInit {
    pub task_id: TaskId,
    pub session_id: SessionId,
    pub spec: AlgorithmSpec,
    pub proposal: serde_json::Value,
    pub options: Vec<String>,
    pub electorate: Electorate,
    pub timeout_ms: u64,
    /// Seeds tie-breaks and random draws; the coordinator persists it with the session.
    pub seed: u64,
    pub intake: IntakeSettings,
}

impl SessionInit {
    /// Validates a submitted task against the resolved electorate.
    pub fn from_task(
        task: &TaskSubmission,
        task_id: TaskId,
        session_id: SessionId,
        electorate: Electorate,
        seed: u64,
        intake: IntakeSettings,
    ) -> Result<Self, ConfigError> {
        let spec = AlgorithmSpec::parse(&task.algorithm, &task.params)?;
        let timeout_ms = task.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if timeout_ms == 0 || timeout_ms > MAX_TIMEOUT_MS {
            return Err(ConfigError::params(
                spec.name(),
                format!("timeout_ms must be in 1..={MAX_TIMEOUT_MS}, got {timeout_ms}"),
            ));
        }
        Ok(Self {
            task_id,
            session_id,
            spec,
            proposal: task.proposal.clone(),
            options: task.options.clone(),
            electorate,
            timeout_ms,
            seed,
            intake,
        })
    }
}

/// What the shell must do.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Send `proposal` to each agent's inbox.
    Propose {
        to: Vec<AgentId>,
        proposal: Box<Proposal>,
    },
    /// Call [`Session::handle_timeout`] at (or after) this time. Earlier timers stay valid;
    /// a timer firing with nothing due is harmless.
    ArmTimer { at_ms: u64 },
    /// A ballot was refused; count and log it.
    BallotRejected {
        agent: AgentId,
        reason: FaultReason,
        detail: String,
    },
    /// Proof that an agent equivocated; report it so the registry quarantines the agent.
    Equivocation(Box<EquivocationEvidence>),
    /// An adaptive session moved to the next algorithm.
    Switched(AlgorithmSwitch),
    /// The session is over. Always the last effect.
    Finished(Box<Decision>),
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: Status,
    pub outcome: Option<Outcome>,
    /// Why there is no decision.
    pub reason: Option<String>,
    pub rounds: u32,
    pub history: Vec<RoundRecord>,
    pub switches: Vec<AlgorithmSwitch>,
    pub participants: Vec<AgentId>,
    pub faulty_detected: Vec<FaultyAgent>,
    pub certificate: Option<Certificate>,
    pub started_ms: u64,
    pub finished_ms: u64,
    /// Each agent's last valid ballot (equivocators' discarded), for dynamic weights
    /// (`weights::agreement`).
    pub final_votes: Vec<crate::tally::Vote>,
}

impl Decision {
    pub fn into_result(
        self,
        task_id: TaskId,
        session_id: SessionId,
        algorithm: &str,
    ) -> TaskResult {
        TaskResult {
            v: mabeam_protocol::PROTOCOL_VERSION,
            task_id,
            session_id: Some(session_id),
            algorithm: algorithm.to_owned(),
            status: self.status,
            outcome: self.outcome,
            reason: self.reason,
            rounds: self.rounds,
            history: self.history,
            switches: self.switches,
            participants: self.participants,
            faulty_detected: self.faulty_detected,
            certificate: self.certificate,
            error: None,
            timings: mabeam_protocol::result::Timings {
                submitted_ms: None,
                started_ms: Some(self.started_ms),
                finished_ms: Some(self.finished_ms),
                duration_ms: self.finished_ms.saturating_sub(self.started_ms),
            },
        }
    }
}

/// What a stage (a whole single algorithm, or one step of a chain) ended with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StageEnd {
    pub status: Status,
    pub outcome: Option<Outcome>,
    pub reason: Option<String>,
    pub certificate: Option<Certificate>,
}

impl StageEnd {
    fn from_tally(tally: crate::tally::TallyResult) -> Self {
        Self {
            status: if tally.outcome.is_some() {
                Status::Decided
            } else {
                Status::NoDecision
            },
            outcome: tally.outcome,
            reason: tally.reason,
            certificate: None,
        }
    }

    fn no_decision(reason: impl Into<String>) -> Self {
        Self {
            status: Status::NoDecision,
            outcome: None,
            reason: Some(reason.into()),
            certificate: None,
        }
    }

    /// How convincing the decision is, in `[0, 1]` (adaptive's quality trigger).
    fn quality(&self) -> f64 {
        match (&self.status, &self.outcome) {
            (Status::Decided, Some(Outcome::Choice { support, .. })) => *support,
            (Status::Decided, _) => 1.0,
            _ => 0.0,
        }
    }
}

#[derive(Debug)]
pub(crate) enum Step {
    Continue,
    Done(StageEnd),
}

/// The agents, options and proposal one stage works with.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub electorate: Electorate,
    pub options: Vec<String>,
    pub proposal: serde_json::Value,
}

impl Scope {
    fn new(
        spec: &AlgorithmSpec,
        electorate: Electorate,
        options: Vec<String>,
        proposal: serde_json::Value,
    ) -> Self {
        let options = if options.is_empty() && spec.uses_options() {
            DEFAULT_OPTIONS.iter().map(|s| (*s).to_owned()).collect()
        } else {
            options
        };
        Self {
            electorate,
            options,
            proposal,
        }
    }
}

impl Scope {
    /// A numeric ballot's weight: expertise × confidence (intake keeps confidence in [0, 1]).
    pub(crate) fn weight(&self, agent: &AgentId, confidence: f64) -> f64 {
        self.electorate.get(agent).map_or(0.0, |p| p.expertise) * confidence
    }
}

/// Runs `f` on the machine a chain (adaptive, pipeline) is currently running, if any.
pub(crate) fn on_inner(inner: &mut Option<Machine>, f: impl FnOnce(&mut Machine) -> Step) -> Step {
    inner.as_mut().map_or(Step::Continue, f)
}

/// State shared by every machine of a session.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub task_id: TaskId,
    pub session_id: SessionId,
    pub electorate: Electorate,
    pub intake: Intake,
    pub rng: ChaCha8Rng,
    pub started_ms: u64,
    pub end_ms: u64,
    /// Last round number handed out; rounds are numbered across stages.
    pub round: u32,
    pub open: Option<OpenRound>,
    pub out: VecDeque<Effect>,
    pub history: Vec<RoundRecord>,
    pub switches: Vec<AlgorithmSwitch>,
    /// Agents that let a round close without answering.
    pub silent: BTreeSet<AgentId>,
    /// Adaptive step or pipeline stage being run (0 otherwise).
    pub stage: u32,
}

impl Ctx {
    /// Opens the next round: proposal to every scope member, timer at the deadline.
    pub(crate) fn open_round(
        &mut self,
        algorithm: &str,
        phase: Phase,
        context: RoundContext,
        scope: &Scope,
        deadline_ms: u64,
    ) -> u32 {
        self.round += 1;
        let deadline_ms = deadline_ms.min(self.end_ms);
        self.open = Some(OpenRound {
            round: self.round,
            deadline_ms,
        });
        self.out.push_back(Effect::Propose {
            to: scope.electorate.ids(),
            proposal: Box::new(Proposal {
                v: mabeam_protocol::PROTOCOL_VERSION,
                task_id: self.task_id.clone(),
                session_id: self.session_id.clone(),
                algorithm: algorithm.to_owned(),
                round: self.round,
                phase,
                proposal: scope.proposal.clone(),
                options: scope.options.clone(),
                deadline_ms,
                context,
            }),
        });
        self.out.push_back(Effect::ArmTimer { at_ms: deadline_ms });
        self.round
    }

    pub(crate) fn deadline(&self) -> Option<u64> {
        self.open.map(|o| o.deadline_ms)
    }

    /// Whether the open round's deadline has come (timers may fire early or twice).
    pub(crate) fn round_due(&self, now: u64) -> bool {
        self.deadline().is_some_and(|d| now >= d)
    }

    /// Marks members of `scope` that did not answer a round that closed on its deadline.
    pub(crate) fn note_silent(&mut self, scope: &Scope, answered: impl Fn(&AgentId) -> bool) {
        for id in scope.electorate.iter().map(|p| &p.id) {
            if !answered(id) {
                self.silent.insert(id.clone());
            }
        }
    }

    /// Whether every member of `scope` has answered or been caught misbehaving, so waiting
    /// longer cannot bring another countable ballot.
    pub(crate) fn nothing_more_to_come(
        &self,
        scope: &Scope,
        answered: impl Fn(&AgentId) -> bool,
    ) -> bool {
        scope
            .electorate
            .iter()
            .all(|p| answered(&p.id) || self.intake.faulty().contains_key(&p.id))
    }

    /// Refuses a ballot the algorithm cannot count.
    pub(crate) fn refuse(&mut self, agent: &AgentId, detail: String) {
        if let Admission::Rejected {
            agent,
            reason,
            detail,
        } = self.intake.refuse(agent, detail)
        {
            self.out.push_back(Effect::BallotRejected {
                agent,
                reason,
                detail,
            });
        }
    }

    /// Share of `scope` that is faulty or silent.
    pub(crate) fn failure_ratio(&self, scope: &Scope) -> f64 {
        let failed = scope
            .electorate
            .iter()
            .filter(|p| self.silent.contains(&p.id) || self.intake.faulty().contains_key(&p.id))
            .count();
        failed as f64 / scope.electorate.len().max(1) as f64
    }

    pub(crate) fn record(&mut self, record: RoundRecord) {
        self.history.push(record);
    }
}

/// One algorithm's state machine.
#[derive(Debug)]
pub(crate) enum Machine {
    Single(single::SingleRound),
    Byzantine(byzantine::Byzantine),
    Iterative(iterative::Iterative),
    Negotiation(iterative::Negotiation),
    Adaptive(Box<adaptive::Adaptive>),
    Pipeline(Box<pipeline::Pipeline>),
}

impl Machine {
    /// Builds the machine for `spec` over `scope`; it must end by `end_ms`.
    pub(crate) fn new(spec: AlgorithmSpec, scope: Scope, end_ms: u64) -> Result<Self, ConfigError> {
        spec.check_electorate(scope.electorate.len())?;
        Ok(match spec {
            AlgorithmSpec::Byzantine(p) => {
                Self::Byzantine(byzantine::Byzantine::new(p, scope, end_ms))
            }
            AlgorithmSpec::Iterative(p) => {
                Self::Iterative(iterative::Iterative::new(p, scope, end_ms))
            }
            AlgorithmSpec::Negotiation(p) => {
                Self::Negotiation(iterative::Negotiation::new(p, scope, end_ms))
            }
            AlgorithmSpec::Adaptive(p) => {
                Self::Adaptive(Box::new(adaptive::Adaptive::new(p, scope, end_ms)?))
            }
            AlgorithmSpec::Pipeline(p) => {
                Self::Pipeline(Box::new(pipeline::Pipeline::new(p, scope, end_ms)?))
            }
            single => Self::Single(single::SingleRound::new(single, scope, end_ms)?),
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Single(m) => m.name(),
            Self::Byzantine(_) => "byzantine",
            Self::Iterative(_) => "iterative",
            Self::Negotiation(_) => "negotiation",
            Self::Adaptive(_) => "adaptive",
            Self::Pipeline(_) => "pipeline",
        }
    }

    pub(crate) fn start(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        match self {
            Self::Single(m) => m.start(ctx, now),
            Self::Byzantine(m) => m.start(ctx, now),
            Self::Iterative(m) => m.start(ctx, now),
            Self::Negotiation(m) => m.start(ctx, now),
            Self::Adaptive(m) => m.start(ctx, now),
            Self::Pipeline(m) => m.start(ctx, now),
        }
    }

    pub(crate) fn on_ballot(&mut self, ctx: &mut Ctx, now: u64, ballot: &Accepted) -> Step {
        match self {
            Self::Single(m) => m.on_ballot(ctx, now, ballot),
            Self::Byzantine(m) => m.on_ballot(ctx, now, ballot),
            Self::Iterative(m) => m.on_ballot(ctx, now, ballot),
            Self::Negotiation(m) => m.on_ballot(ctx, now, ballot),
            Self::Adaptive(m) => m.on_ballot(ctx, now, ballot),
            Self::Pipeline(m) => m.on_ballot(ctx, now, ballot),
        }
    }

    /// A timer fired; machines act only on what is due.
    pub(crate) fn on_timer(&mut self, ctx: &mut Ctx, now: u64) -> Step {
        match self {
            Self::Single(m) => m.on_timer(ctx, now),
            Self::Byzantine(m) => m.on_timer(ctx, now),
            Self::Iterative(m) => m.on_timer(ctx, now),
            Self::Negotiation(m) => m.on_timer(ctx, now),
            Self::Adaptive(m) => m.on_timer(ctx, now),
            Self::Pipeline(m) => m.on_timer(ctx, now),
        }
    }

    /// An agent was proven to equivocate: its ballots no longer count.
    pub(crate) fn on_equivocation(&mut self, ctx: &mut Ctx, now: u64, agent: &AgentId) -> Step {
        match self {
            Self::Single(m) => m.exclude(ctx, now, agent),
            Self::Byzantine(m) => m.exclude(ctx, now, agent),
            Self::Iterative(m) => m.exclude(ctx, now, agent),
            Self::Negotiation(m) => m.exclude(ctx, now, agent),
            Self::Adaptive(m) => m.on_equivocation(ctx, now, agent),
            Self::Pipeline(m) => m.on_equivocation(ctx, now, agent),
        }
    }
}

/// One task's coordination session.
#[derive(Debug)]
pub struct Session {
    ctx: Ctx,
    machine: Machine,
    algorithm: &'static str,
    finished: bool,
    latest: BTreeMap<AgentId, crate::tally::Vote>,
}

impl Session {
    /// Validates `init` and opens the first round (see [`Session::poll_effect`]).
    pub fn start(init: SessionInit, now_ms: u64) -> Result<Self, ConfigError> {
        let SessionInit {
            task_id,
            session_id,
            spec,
            proposal,
            options,
            electorate,
            timeout_ms,
            seed,
            intake,
        } = init;
        let algorithm = spec.name();
        let end_ms = now_ms.saturating_add(timeout_ms);
        let scope = Scope::new(&spec, electorate.clone(), options, proposal);
        let machine = Machine::new(spec, scope, end_ms)?;
        let mut session = Self {
            ctx: Ctx {
                intake: Intake::new(intake, session_id.clone()),
                task_id,
                session_id,
                electorate,
                rng: ChaCha8Rng::seed_from_u64(seed),
                started_ms: now_ms,
                end_ms,
                round: 0,
                open: None,
                out: VecDeque::new(),
                history: Vec::new(),
                switches: Vec::new(),
                silent: BTreeSet::new(),
                stage: 0,
            },
            machine,
            algorithm,
            finished: false,
            latest: BTreeMap::new(),
        };
        let step = session.machine.start(&mut session.ctx, now_ms);
        session.apply(step, now_ms);
        Ok(session)
    }

    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }

    pub fn task_id(&self) -> &TaskId {
        &self.ctx.task_id
    }

    pub fn session_id(&self) -> &SessionId {
        &self.ctx.session_id
    }

    pub fn electorate(&self) -> &Electorate {
        &self.ctx.electorate
    }

    /// The current round number (rounds count across adaptive and pipeline stages).
    pub fn round(&self) -> u32 {
        self.ctx.round
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// When the shell must call [`Session::handle_timeout`] next.
    pub fn next_timeout(&self) -> Option<u64> {
        if self.finished {
            return None;
        }
        let adaptive = match &self.machine {
            Machine::Adaptive(m) => m.pressure_at(),
            _ => None,
        };
        [self.ctx.deadline(), adaptive, Some(self.ctx.end_ms)]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.ctx.out.pop_front()
    }

    /// Delivers one envelope.
    pub fn handle_envelope(&mut self, now_ms: u64, envelope: SignedEnvelope) {
        self.deliver(now_ms, envelope, false);
    }

    /// Delivers many envelopes, verifying the members' signatures as one batch (about twice
    /// as fast as one by one); a failing batch falls back to per-envelope verification so the
    /// culprit is named. Non-members are dropped by intake and stay out of the batch.
    pub fn handle_envelopes(&mut self, now_ms: u64, envelopes: Vec<SignedEnvelope>) {
        let keyed: Vec<_> = envelopes
            .iter()
            .filter_map(|e| {
                self.ctx
                    .electorate
                    .get(&e.sender)
                    .map(|p| (e, &p.public_key))
            })
            .collect();
        let batch_ok = keyed.len() > 1 && mabeam_protocol::verify_batch(&keyed).is_ok();
        drop(keyed);
        for envelope in envelopes {
            self.deliver(now_ms, envelope, batch_ok);
        }
    }

    fn deliver(&mut self, now: u64, envelope: SignedEnvelope, verified: bool) {
        if self.finished {
            return;
        }
        let open = self.ctx.open;
        let admission = self
            .ctx
            .intake
            .admit(now, &self.ctx.electorate, envelope, verified, open);
        let step = match admission {
            Admission::Accepted(ballot) => {
                self.latest.insert(
                    ballot.agent.clone(),
                    crate::tally::Vote {
                        agent: ballot.agent.clone(),
                        value: ballot.ballot.value.clone(),
                        confidence: ballot.ballot.confidence,
                    },
                );
                self.machine.on_ballot(&mut self.ctx, now, &ballot)
            }
            Admission::Duplicate | Admission::Ignored => Step::Continue,
            Admission::Rejected {
                agent,
                reason,
                detail,
            } => {
                self.ctx.out.push_back(Effect::BallotRejected {
                    agent,
                    reason,
                    detail,
                });
                Step::Continue
            }
            Admission::Equivocation(evidence) => {
                let agent = evidence.agent_id.clone();
                self.latest.remove(&agent);
                self.ctx.out.push_back(Effect::Equivocation(evidence));
                self.machine.on_equivocation(&mut self.ctx, now, &agent)
            }
        };
        self.apply(step, now);
    }

    /// Fires due timers: round deadlines, adaptive time pressure, the session timeout.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        if self.finished {
            return;
        }
        let step = self.machine.on_timer(&mut self.ctx, now_ms);
        let step = match step {
            Step::Continue if now_ms >= self.ctx.end_ms => {
                Step::Done(StageEnd::no_decision(format!(
                    "timed out after {} ms",
                    self.ctx.end_ms - self.ctx.started_ms
                )))
            }
            step => step,
        };
        self.apply(step, now_ms);
    }

    fn apply(&mut self, step: Step, now: u64) {
        let Step::Done(end) = step else {
            return;
        };
        self.finished = true;
        self.ctx.open = None;
        let mut faulty: BTreeMap<AgentId, FaultReason> = self.ctx.intake.report();
        for id in &self.ctx.silent {
            faulty.entry(id.clone()).or_insert(FaultReason::Silent);
        }
        let decision = Decision {
            status: end.status,
            outcome: end.outcome,
            reason: end.reason,
            rounds: self.ctx.round,
            history: std::mem::take(&mut self.ctx.history),
            switches: std::mem::take(&mut self.ctx.switches),
            participants: self.ctx.electorate.ids(),
            faulty_detected: faulty
                .into_iter()
                .map(|(agent_id, reason)| FaultyAgent { agent_id, reason })
                .collect(),
            certificate: end.certificate,
            started_ms: self.ctx.started_ms,
            finished_ms: now,
            final_votes: std::mem::take(&mut self.latest).into_values().collect(),
        };
        self.ctx.out.push_back(Effect::Finished(Box::new(decision)));
    }
}
