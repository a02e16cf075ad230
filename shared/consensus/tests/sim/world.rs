//! One run: a coordinator [`Session`] and N simulated agents on the simulated network, driven
//! by the virtual clock until nothing is left in flight. Everything the checks need is
//! recorded in a [`Report`].

use std::{collections::BTreeSet, rc::Rc};

use mabeam_consensus::{
    AlgorithmSpec, Decision, Effect, Electorate, IntakeSettings, Participant, Session, SessionInit,
};
use mabeam_protocol::{
    session::{Ballot, Phase, Proposal, VoteValue},
    signing::EnvelopeHeader,
    Limits, SessionId, SignedEnvelope, TaskId,
};

use super::{
    agent::{Agent, Outbox, Shared, To},
    keys::ring,
    net::{Event, NetStats, Network, Node},
    scenario::{Scenario, T0},
};

/// A message on the simulated network.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    Proposal(Rc<Proposal>),
    Envelopes(Rc<Vec<SignedEnvelope>>),
}

/// Everything observed in one run.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub start_ms: u64,
    /// start + timeout.
    pub end_ms: u64,
    /// Every effect the coordinator emitted, with the virtual time it was drained at.
    pub effects: Vec<(u64, Effect)>,
    /// Every `Effect::Finished`, with its time.
    pub finishes: Vec<(u64, Decision)>,
    /// Effects emitted after the first `Finished` (must be none).
    pub effects_after_finish: usize,
    /// Every envelope delivered to the coordinator, in delivery order, with its time.
    pub deliveries: Vec<(u64, SignedEnvelope)>,
    /// Every proposal the coordinator published, with its time.
    pub proposals: Vec<(u64, Rc<Proposal>)>,
    /// Each agent's replica decision (value, round).
    pub agent_decisions: Vec<Option<(String, u32)>>,
    /// Each agent's replica equivocation reports.
    pub agent_evidence: Vec<usize>,
    /// Set when the run stopped with the session unfinished and nothing left to do.
    pub stalled: Option<String>,
    /// Set when the session refused the scenario.
    pub init_error: Option<String>,
    pub net: NetStats,
    /// Events processed.
    pub steps: u64,
}

impl Report {
    pub(crate) fn decision(&self) -> Option<&Decision> {
        self.finishes.first().map(|(_, d)| d)
    }

    /// The decided choice, if the session decided a `Choice` outcome.
    pub(crate) fn decided_choice(&self) -> Option<&str> {
        self.decision()?.outcome.as_ref()?.choice()
    }
}

/// How long agents may keep talking after the session's timeout before the run stops.
const GRACE_MS: u64 = 5_000;
/// Guard against a run that never quiesces.
const MAX_STEPS: u64 = 2_000_000;

pub(crate) fn electorate(sc: &Scenario) -> Electorate {
    let ring = ring();
    let members = (0..sc.n)
        .map(|i| Participant {
            id: ring.ids[i].clone(),
            public_key: ring.keys[i].public_key(),
            expertise: sc.agents[i].expertise,
            capabilities: sc.agents[i].capabilities.clone(),
        })
        .collect();
    Electorate::new(members).expect("scenario electorates are valid")
}

pub(crate) fn session_init(sc: &Scenario) -> Result<SessionInit, String> {
    let spec = AlgorithmSpec::parse(sc.algo.name(), &sc.params).map_err(|e| e.to_string())?;
    Ok(SessionInit {
        task_id: TaskId::new(format!("task-{}", sc.seed)).expect("valid task id"),
        session_id: sc.session_id(),
        spec,
        proposal: sc.proposal.clone(),
        options: sc.options.clone(),
        electorate: electorate(sc),
        timeout_ms: sc.timeout_ms,
        seed: sc.seed,
        intake: IntakeSettings::default(),
    })
}

/// Ballots of an earlier session, signed with the agents' real keys, for replay attackers.
fn old_session_ballots(sc: &Scenario) -> Vec<SignedEnvelope> {
    let ring = ring();
    let old = SessionId::new(format!("sess-old-{}", sc.seed)).expect("valid session id");
    let mut out = Vec::new();
    for i in 0..sc.n.min(4) {
        for (seq, (phase, value)) in [
            (Phase::Prepare, sc.wrong.clone()),
            (Phase::Commit, sc.wrong.clone()),
            (Phase::Vote, sc.wrong.clone()),
        ]
        .into_iter()
        .enumerate()
        {
            let header = EnvelopeHeader {
                sender: ring.ids[i].clone(),
                session: old.clone(),
                round: 1,
                sequence: seq as u64 + 1,
                timestamp_ms: T0 - 2_000,
            };
            let ballot = Ballot::new(phase, VoteValue::Choice(value), 1.0);
            out.push(SignedEnvelope::seal(&ring.keys[i], header, &ballot).expect("ballot encodes"));
        }
    }
    out
}

struct World {
    now: u64,
    net: Network<Msg>,
    session: Session,
    agents: Vec<Agent>,
    shared: Shared,
    bus: Vec<SignedEnvelope>,
    armed: BTreeSet<u64>,
    report: Report,
    /// `MABEAM_SIM_TRACE=1`: print every coordinator input and output (debugging a seed).
    trace: bool,
}

fn context_summary(context: &mabeam_protocol::session::RoundContext) -> String {
    match context {
        mabeam_protocol::session::RoundContext::Byzantine {
            fault_tolerance,
            quorum,
            suggestion,
            ..
        } => format!("byzantine f={fault_tolerance} quorum={quorum} suggestion={suggestion:?}"),
        other => format!("{other:?}"),
    }
}

fn describe_envelope(env: &SignedEnvelope) -> String {
    match env.open::<Ballot>(&Limits::default()) {
        Ok(b) => format!(
            "{} r{} {:?} {:?} seq={} sess={}",
            env.sender, env.round, b.phase, b.value, env.sequence, env.session
        ),
        Err(e) => format!("{} r{} undecodable ({e})", env.sender, env.round),
    }
}

/// Runs `sc` to the end and reports what happened.
pub(crate) fn simulate(sc: &Scenario) -> Report {
    super::check::forget_verifications();
    let mut report = Report {
        start_ms: T0,
        end_ms: T0 + sc.timeout_ms,
        ..Report::default()
    };
    let session = match session_init(sc)
        .and_then(|init| Session::start(init, T0).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            report.init_error = Some(e);
            return report;
        }
    };
    let replaying = sc
        .agents
        .iter()
        .any(|a| a.behaviour == super::agent::Behaviour::Replay);
    let shared = Shared {
        start_ms: T0,
        base_ms: sc.net.base_ms,
        jitter_ms: sc.net.jitter_ms,
        wrong: sc.wrong.clone(),
        wrong_number: 1_000.0,
        wrong_leader: sc.wrong_leader.clone(),
        old: if replaying {
            old_session_ballots(sc)
        } else {
            Vec::new()
        },
        limits: Limits::default(),
        n: sc.n,
    };
    let agents = sc
        .agents
        .iter()
        .enumerate()
        .map(|(i, spec)| Agent::new(i, spec.clone(), sc.seed))
        .collect();
    let mut world = World {
        now: T0,
        net: Network::new(sc.net.clone(), sc.seed, T0),
        session,
        agents,
        shared,
        bus: Vec::new(),
        armed: BTreeSet::new(),
        report,
        trace: std::env::var("MABEAM_SIM_TRACE").is_ok_and(|v| v == "1"),
    };
    world.drain_coordinator();
    world.run();
    let mut report = world.report;
    report.agent_decisions = world.agents.iter().map(|a| a.decided.clone()).collect();
    report.agent_evidence = world.agents.iter().map(|a| a.evidence).collect();
    report.net = world.net.stats;
    report
}

impl World {
    fn run(&mut self) {
        let horizon = self.report.end_ms + GRACE_MS;
        while let Some(t) = self.net.next_time().filter(|&t| t <= horizon) {
            self.now = t;
            let mut batch = Vec::new();
            let mut timer = false;
            for event in self.net.pop_due(t) {
                self.report.steps += 1;
                match event {
                    Event::Deliver {
                        to: Node::Coordinator,
                        msg: Msg::Envelopes(envs),
                    } => batch.extend(envs.iter().cloned()),
                    Event::Deliver {
                        to: Node::Coordinator,
                        msg: Msg::Proposal(_),
                    } => {}
                    Event::Deliver {
                        to: Node::Agent(i),
                        msg,
                    } => self.deliver_to_agent(i, &msg),
                    Event::Wake { agent, token } => {
                        let mut out = Outbox::default();
                        self.agents[agent].on_wake(t, token, &self.shared, &mut out);
                        self.dispatch(agent, out);
                    }
                    Event::Timer => timer = true,
                }
            }
            if !batch.is_empty() {
                for env in &batch {
                    if self.trace {
                        eprintln!("+{:>5} coord <- {}", t - T0, describe_envelope(env));
                    }
                    self.report.deliveries.push((t, env.clone()));
                }
                // Everything due at one instant goes in as one batch, as the shell does.
                if batch.len() == 1 {
                    let env = batch.pop().expect("one envelope");
                    self.session.handle_envelope(t, env);
                } else {
                    self.session.handle_envelopes(t, batch);
                }
                self.drain_coordinator();
            }
            if timer {
                if self.trace {
                    eprintln!("+{:>5} coord timer", t - T0);
                }
                self.armed.remove(&t);
                self.session.handle_timeout(t);
                self.drain_coordinator();
            }
            if self.report.steps > MAX_STEPS {
                self.report.stalled = Some(format!("runaway: more than {MAX_STEPS} events"));
                return;
            }
        }
        if !self.session.is_finished() {
            self.report.stalled = Some(format!(
                "nothing left to deliver at {} ms (timeout {} ms) and the session is unfinished; next_timeout={:?}",
                self.now - T0,
                self.report.end_ms - T0,
                self.session.next_timeout().map(|t| t.saturating_sub(T0))
            ));
        }
    }

    fn deliver_to_agent(&mut self, i: usize, msg: &Msg) {
        let mut out = Outbox::default();
        let agent = &mut self.agents[i];
        let before = agent.decided.clone();
        match msg {
            Msg::Proposal(p) => agent.on_proposal(self.now, p, &self.shared, &self.bus, &mut out),
            Msg::Envelopes(envs) => agent.on_envelopes(self.now, envs, &self.shared, &mut out),
        }
        if self.trace {
            if let Msg::Proposal(p) = msg {
                eprintln!(
                    "+{:>5} agent {i} <- proposal round {}",
                    self.now - T0,
                    p.round
                );
            }
            if agent.decided != before {
                eprintln!(
                    "+{:>5} agent {i} DECIDED {:?}",
                    self.now - T0,
                    agent.decided
                );
            }
            for send in &out.sends {
                for env in &send.envs {
                    eprintln!(
                        "+{:>5} agent {i} -> {:?} (+{}ms) {}",
                        self.now - T0,
                        send.to,
                        send.delay,
                        describe_envelope(env)
                    );
                }
            }
        }
        self.dispatch(i, out);
    }

    fn dispatch(&mut self, from: usize, out: Outbox) {
        for (at, token) in out.wakes {
            self.net
                .schedule(at.max(self.now), Event::Wake { agent: from, token });
        }
        let n = self.agents.len();
        for send in out.sends {
            self.bus.extend(send.envs.iter().cloned());
            let msg = Msg::Envelopes(Rc::new(send.envs));
            let src = Node::Agent(from);
            match send.to {
                To::Coordinator => self
                    .net
                    .send(self.now, src, Node::Coordinator, msg, send.delay),
                To::Peer(j) if j < n && j != from => {
                    self.net
                        .send(self.now, src, Node::Agent(j), msg, send.delay);
                }
                To::Peer(_) => {}
                To::Everyone => {
                    self.net
                        .send(self.now, src, Node::Coordinator, msg.clone(), send.delay);
                    for j in (0..n).filter(|&j| j != from) {
                        self.net
                            .send(self.now, src, Node::Agent(j), msg.clone(), send.delay);
                    }
                }
            }
        }
    }

    fn drain_coordinator(&mut self) {
        while let Some(effect) = self.session.poll_effect() {
            if !self.report.finishes.is_empty() {
                self.report.effects_after_finish += 1;
            }
            if self.trace {
                let shown = match &effect {
                    Effect::Propose { to, proposal } => format!(
                        "Propose round {} {:?} to {} agents, deadline +{}, context {:?}",
                        proposal.round,
                        proposal.phase,
                        to.len(),
                        proposal.deadline_ms.saturating_sub(T0),
                        context_summary(&proposal.context)
                    ),
                    other => format!("{other:?}").chars().take(400).collect(),
                };
                eprintln!("+{:>5} coord -> {shown}", self.now - T0);
            }
            match &effect {
                Effect::Propose { to, proposal } => {
                    let p = Rc::new((**proposal).clone());
                    self.report.proposals.push((self.now, p.clone()));
                    for id in to {
                        if let Some(j) = ring().ids.iter().position(|x| x == id) {
                            if j < self.agents.len() {
                                self.net.send(
                                    self.now,
                                    Node::Coordinator,
                                    Node::Agent(j),
                                    Msg::Proposal(p.clone()),
                                    0,
                                );
                            }
                        }
                    }
                }
                Effect::ArmTimer { at_ms } => {
                    let at = (*at_ms).max(self.now);
                    if self.armed.insert(at) {
                        self.net.schedule(at, Event::Timer);
                    }
                }
                Effect::Finished(decision) => {
                    self.report.finishes.push((self.now, (**decision).clone()))
                }
                Effect::BallotRejected { .. } | Effect::Equivocation(_) | Effect::Switched(_) => {}
            }
            self.report.effects.push((self.now, effect));
        }
    }
}
