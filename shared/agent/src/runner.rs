//! The agent's I/O loop: registers, heartbeats, answers proposals and applies the fault
//! layer.
//!
//! One agent is one tokio task holding one NATS subscription (`mabeam.agents.<id>.*`: its
//! inbox and its fault commands) plus one per Byzantine session it takes part in. It sleeps
//! until a message, a decision, a registry reply or its next timer (heartbeat, held message,
//! session expiry), so thousands share one client and one runtime cheaply.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque},
    future::poll_fn,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use async_nats::{Client, Subscriber};
use bytes::Bytes;
use futures::{future::BoxFuture, stream::FuturesUnordered, StreamExt};
use mabeam_consensus::replica::{ByzantineReplica, ReplicaEffect};
use mabeam_protocol::{
    codec::{encode, ContentType},
    fault::AgentFaultCommand,
    group::GroupMessage,
    registry::{Deregistration, Heartbeat, Registration, RegistryAck},
    session::{
        Ballot, Phase, Proposal, RoundContext, SessionClosed, VoteValue, MESSAGE_TYPE_HEADER,
        MESSAGE_TYPE_PROPOSAL, MESSAGE_TYPE_SESSION_CLOSED,
    },
    signing::EnvelopeHeader,
    subjects, AgentId, AgentKeypair, ErrorCode, SessionId, SignedEnvelope, PROTOCOL_VERSION,
};
use mabeam_runtime::{now_ms, reply};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest as _, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::{
    agent::{Agent, LoadHandle, MessageHandler, Settings},
    decide::{Decider, Round, Vote},
    faults::{self, Body, ByzantinePlan, Content, Effective, FaultState, Planned},
    honest::{mix, options_of},
    keys,
    registry::{self, next_sequence, now_us, CallError},
    stats, AgentError,
};

/// Own envelopes kept as replay material (the `replay` fault re-sends them).
const HISTORY: usize = 4;
/// Rounds per session whose envelopes are kept for re-sending.
const ROUNDS_KEPT: usize = 16;
/// Envelopes per round kept for re-sending.
const SENT_PER_ROUND: usize = 16;
/// After a Byzantine peer is first heard from, this agent re-sends its current round's
/// envelopes this much later (once for a burst of newcomers): a peer that received its
/// proposal after this agent published subscribed too late to see those envelopes.
const REPUBLISH_DELAY: Duration = Duration::from_millis(20);
/// Longest wait of an adaptive attacker's contradicting ballot in a plain round.
const ADAPTIVE_DELAY_MAX_MS: u64 = 100;
/// Envelopes per Byzantine session remembered as already fed to the replica.
const MAX_FED: usize = 4096;
const MAX_REGISTER_BACKOFF: Duration = Duration::from_secs(5);

/// An own envelope kept as replay material.
#[derive(Debug)]
struct Sent {
    session: SessionId,
    round: u32,
    bytes: Bytes,
}

/// A message waiting for its release time.
#[derive(Debug)]
struct Held {
    session: SessionId,
    round: u32,
    body: Body,
}

#[derive(Debug)]
struct Session {
    expires: Instant,
    /// Last sequence number used in this session.
    sequence: u64,
    previous: Option<Vote>,
    /// Rounds answered (or being answered) and what went out for each.
    rounds: BTreeMap<u32, Vec<Bytes>>,
    byz: Option<Box<Byz>>,
}

#[derive(Debug)]
struct Byz {
    /// Quorum and electorate (sorted) the replica was made for.
    electorate: (u32, Vec<AgentId>),
    replica: ByzantineReplica,
    votes: Subscriber,
    round: u32,
    deadline_ms: u64,
    options: Vec<String>,
    heard: BTreeSet<AgentId>,
    /// Digests of the messages fed to the replica (up to [`MAX_FED`]).
    fed: HashSet<[u8; 16]>,
    republish_at: Option<Instant>,
    /// Adaptive attacker: peers' prepares per (round, value), and its own prepare per round.
    seen: BTreeMap<(u32, String), BTreeSet<AgentId>>,
    mine: BTreeMap<u32, String>,
    turned: bool,
}

#[derive(Debug)]
struct Decided {
    proposal: Arc<Proposal>,
    vote: Vote,
    elapsed: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallKind {
    Register,
    Heartbeat,
}

#[derive(Debug)]
struct CallDone {
    kind: CallKind,
    result: Result<RegistryAck, CallError>,
}

pub(crate) struct Runner<D> {
    me: AgentId,
    key: AgentKeypair,
    impostor: Option<AgentKeypair>,
    registration: Registration,
    decider: Arc<D>,
    settings: Settings,
    load: LoadHandle,
    client: Client,
    own: Subscriber,
    rng: ChaCha8Rng,
    seed: u64,
    faults: FaultState,
    eff: Effective,
    initial_faults: Vec<AgentFaultCommand>,
    sessions: HashMap<SessionId, Session>,
    held: BTreeMap<(Instant, u64), Held>,
    held_seq: u64,
    history: VecDeque<Sent>,
    registry_seq: u64,
    registered: bool,
    register_attempt: u32,
    register_at: Option<Instant>,
    heartbeat_at: Option<Instant>,
    heartbeat_in_flight: bool,
    decisions: FuturesUnordered<BoxFuture<'static, Decided>>,
    calls: FuturesUnordered<BoxFuture<'static, CallDone>>,
    on_message: Option<MessageHandler>,
}

/// The next message of any Byzantine session's vote subscription.
fn poll_votes(
    sessions: &mut HashMap<SessionId, Session>,
    cx: &mut Context<'_>,
) -> Poll<(SessionId, Option<async_nats::Message>)> {
    for (id, session) in sessions.iter_mut() {
        if let Some(byz) = session.byz.as_mut() {
            if let Poll::Ready(message) = byz.votes.poll_next_unpin(cx) {
                return Poll::Ready((id.clone(), message));
            }
        }
    }
    Poll::Pending
}

/// Publishes on `me`'s vote subject of session `sid`. (A free function: the agent's future
/// must not hold a shared borrow of the runner across an await, or it would need `Sync`.)
async fn send_bytes(client: &Client, me: &AgentId, sid: &SessionId, bytes: Bytes) {
    let subject = subjects::session_votes(sid, me);
    match client
        .publish_with_headers(subject, reply::headers_for(ContentType::MsgPack), bytes)
        .await
    {
        Ok(()) => stats::vote_sent(),
        Err(e) => {
            stats::publish_failed();
            tracing::warn!(agent = %me, error = %e, "cannot publish a ballot");
        }
    }
}

/// A short collision-resistant digest of a message.
fn digest(bytes: &[u8]) -> [u8; 16] {
    let full = Sha256::digest(bytes);
    let mut out = [0; 16];
    out.copy_from_slice(&full[..16]);
    out
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn later(now: Instant, ms: u64) -> Instant {
    now + Duration::from_millis(ms)
}

impl<D: Decider> Runner<D> {
    pub(crate) fn new(agent: Agent<D>, client: Client, own: Subscriber) -> Self {
        Self {
            me: agent.id,
            key: agent.key,
            impostor: None,
            registration: agent.registration,
            decider: agent.decider,
            settings: agent.settings,
            load: agent.load,
            client,
            own,
            rng: ChaCha8Rng::seed_from_u64(agent.seed),
            seed: agent.seed,
            faults: FaultState::default(),
            eff: Effective::default(),
            initial_faults: agent.faults,
            sessions: HashMap::new(),
            held: BTreeMap::new(),
            held_seq: 0,
            history: VecDeque::new(),
            registry_seq: 0,
            registered: false,
            register_attempt: 0,
            register_at: None,
            heartbeat_at: None,
            heartbeat_in_flight: false,
            decisions: FuturesUnordered::new(),
            calls: FuturesUnordered::new(),
            on_message: agent.on_message,
        }
    }

    pub(crate) async fn event_loop(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<(), AgentError> {
        for command in std::mem::take(&mut self.initial_faults) {
            self.apply_fault(&command);
        }
        self.register_at = Some(Instant::now());
        // The handlers are boxed: an idle agent's task then only holds what it waits on, not
        // room for the deepest handler (thousands of agents share one process).
        loop {
            let wake = self.next_wake();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ok(()),
                message = self.own.next() => match message {
                    Some(message) => Box::pin(self.on_own(message)).await,
                    None => return Err(AgentError::SubscriptionClosed(self.me.clone())),
                },
                (session, message) = poll_fn(|cx| poll_votes(&mut self.sessions, cx)) => {
                    Box::pin(self.on_peer(session, message)).await;
                }
                Some(done) = self.decisions.next(), if !self.decisions.is_empty() => {
                    Box::pin(self.on_decided(done)).await;
                }
                Some(done) = self.calls.next(), if !self.calls.is_empty() => self.on_call(done)?,
                () = sleep_until(wake) => Box::pin(self.on_wake()).await,
            }
        }
    }

    /// Deregisters (unless crashed) and takes this agent out of the process-wide gauges.
    pub(crate) async fn finish(&mut self, clean: bool) {
        if self.registered && clean && !self.eff.crashed {
            let body = registry::signed_request(
                &self.key,
                &self.me,
                &mut self.registry_seq,
                &Deregistration {
                    v: PROTOCOL_VERSION,
                    agent_id: self.me.clone(),
                },
            );
            match body {
                Ok(body) => {
                    let result = registry::call::<RegistryAck>(
                        &self.client,
                        subjects::REGISTRY_DEREGISTER,
                        body,
                        self.settings.request_timeout,
                        self.settings.limits,
                    )
                    .await;
                    if let Err(e) = result {
                        stats::deregistration_failure(e.label());
                        tracing::warn!(agent = %self.me, error = %e, "cannot deregister");
                    }
                }
                Err(e) => tracing::error!(agent = %self.me, error = %e, "cannot encode"),
            }
        }
        if self.registered {
            self.registered = false;
            stats::registered(-1.0);
        }
        stats::faults_active(-(self.faults.active() as f64));
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if !self.eff.crashed {
            consider(self.register_at);
            if self.registered {
                consider(self.heartbeat_at);
            }
        }
        consider(self.held.keys().next().map(|(at, _)| *at));
        for session in self.sessions.values() {
            consider(Some(session.expires));
            consider(session.byz.as_ref().and_then(|b| b.republish_at));
        }
        next
    }

    // ---- faults -----------------------------------------------------------------------------

    fn apply_fault(&mut self, command: &AgentFaultCommand) {
        let before = self.faults.active();
        let was_crashed = self.eff.crashed;
        if !self.faults.apply(command) {
            return;
        }
        stats::faults_active(self.faults.active() as f64 - before as f64);
        self.eff = self.faults.effective();
        tracing::info!(
            agent = %self.me,
            fault_id = %command.fault_id,
            behaviour = ?command.behaviour,
            active = self.faults.active(),
            "fault command applied"
        );
        if self.eff.crashed && !was_crashed {
            // A crashed process loses everything it held in memory.
            self.sessions.clear();
            self.held.clear();
            self.history.clear();
            self.decisions = FuturesUnordered::new();
        } else if was_crashed && !self.eff.crashed {
            let now = Instant::now();
            if self.registered {
                self.heartbeat_at = Some(now);
            } else {
                self.register_at = Some(now);
            }
        }
    }

    // ---- inbound ------------------------------------------------------------------------------

    async fn on_own(&mut self, message: async_nats::Message) {
        let subject = message.subject.as_str();
        if subject.ends_with(".faults") {
            match reply::decode_message::<AgentFaultCommand>(
                message.headers.as_ref(),
                &message.payload,
                &self.settings.limits,
            ) {
                Ok((command, _)) => self.apply_fault(&command),
                Err(e) => {
                    stats::refused("bad_fault_command");
                    tracing::warn!(agent = %self.me, error = %e, "undecodable fault command");
                }
            }
        } else if subject.ends_with(".inbox") {
            self.on_inbox(message).await;
        } else if subject.ends_with(".messages") {
            self.on_group_message(&message);
        }
    }

    fn on_group_message(&self, message: &async_nats::Message) {
        // A crashed process hears nothing.
        if self.eff.crashed {
            return;
        }
        match reply::decode_message::<GroupMessage>(
            message.headers.as_ref(),
            &message.payload,
            &self.settings.limits,
        ) {
            Ok((group_message, _)) => {
                stats::group_message(self.on_message.is_some());
                if let Some(handler) = &self.on_message {
                    handler.handle(&group_message);
                }
            }
            Err(e) => self.refuse("bad_group_message", &e.to_string()),
        }
    }

    async fn on_inbox(&mut self, message: async_nats::Message) {
        if self.eff.crashed || self.eff.coordinator_unreachable {
            return;
        }
        let headers = message.headers.as_ref();
        let kind = headers
            .and_then(|h| h.get(MESSAGE_TYPE_HEADER))
            .map(|v| v.as_str().to_owned());
        let limits = self.settings.limits;
        match kind.as_deref() {
            Some(MESSAGE_TYPE_SESSION_CLOSED) => {
                match reply::decode_message::<SessionClosed>(headers, &message.payload, &limits) {
                    Ok((closed, _)) => {
                        self.sessions.remove(&closed.session_id);
                        self.held.retain(|_, h| h.session != closed.session_id);
                    }
                    Err(e) => self.refuse("bad_session_closed", &e.to_string()),
                }
            }
            Some(MESSAGE_TYPE_PROPOSAL) | None => {
                match reply::decode_message::<Proposal>(headers, &message.payload, &limits) {
                    Ok((proposal, _)) => self.on_proposal(proposal).await,
                    Err(e) => self.refuse("bad_proposal", &e.to_string()),
                }
            }
            Some(other) => self.refuse("unknown_message_type", other),
        }
    }

    fn refuse(&self, reason: &'static str, detail: &str) {
        stats::refused(reason);
        tracing::warn!(agent = %self.me, reason, detail, "inbox message refused");
    }

    async fn on_proposal(&mut self, p: Proposal) {
        stats::proposal(&p.algorithm);
        let now = Instant::now();
        let now_ms = now_ms();
        let grace_ms = self.settings.session_grace.as_millis() as u64;
        let until_ms = p.deadline_ms.saturating_add(grace_ms);
        if until_ms <= now_ms {
            stats::refused("stale_proposal");
            return;
        }
        let expires = later(now, until_ms - now_ms);
        let sid = p.session_id.clone();
        if !self.sessions.contains_key(&sid) && self.sessions.len() >= self.settings.max_sessions {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.sessions.remove(&oldest);
            }
        }
        let session = self.sessions.entry(sid.clone()).or_insert_with(|| Session {
            expires,
            sequence: 0,
            previous: None,
            rounds: BTreeMap::new(),
            byz: None,
        });
        session.expires = session.expires.max(expires);
        if let Some(sent) = session.rounds.get(&p.round) {
            // A re-sent proposal (coordinator failover): the same envelopes again.
            let again = sent.clone();
            self.republish(&sid, again).await;
            return;
        }
        if let RoundContext::Byzantine { .. } = &p.context {
            if let Err(reason) = self.join_byzantine(&p).await {
                tracing::warn!(agent = %self.me, session = %sid, reason, "cannot take part");
                return;
            }
        }
        if self.eff.silent {
            return;
        }
        let Some(session) = self.sessions.get_mut(&sid) else {
            return;
        };
        session.rounds.insert(p.round, Vec::new());
        while session.rounds.len() > ROUNDS_KEPT {
            session.rounds.pop_first();
        }
        let byzantine =
            session.byz.is_some() && matches!(p.context, RoundContext::Byzantine { .. });
        match self.eff.content.clone() {
            Content::Replay => {
                if byzantine {
                    self.enter_byzantine_round(&p);
                }
                self.replay(&p).await;
            }
            Content::Coalition(value) if byzantine => {
                let ballots = vec![(Phase::Prepare, value.clone()), (Phase::Commit, value)];
                self.enter_byzantine_round(&p);
                self.send_choices(&sid, p.round, p.deadline_ms, ballots)
                    .await;
            }
            _ => {
                let previous = session.previous.clone();
                let decider = Arc::clone(&self.decider);
                let me = self.me.clone();
                let proposal = Arc::new(p);
                self.decisions.push(Box::pin(async move {
                    let started = std::time::Instant::now();
                    let vote = decider
                        .decide(&Round {
                            agent_id: &me,
                            proposal: &proposal,
                            previous: previous.as_ref(),
                        })
                        .await;
                    Decided {
                        proposal,
                        vote,
                        elapsed: started.elapsed(),
                    }
                }));
            }
        }
    }

    /// Sets up (or renews, for a new electorate) the session's replica and subscribes to the
    /// session's votes.
    async fn join_byzantine(&mut self, p: &Proposal) -> Result<(), String> {
        let RoundContext::Byzantine {
            quorum, electorate, ..
        } = &p.context
        else {
            return Err("not a byzantine proposal".into());
        };
        let mut members: Vec<AgentId> = electorate.iter().map(|m| m.agent_id.clone()).collect();
        members.sort();
        let key = (*quorum, members);
        let existing = self
            .sessions
            .get(&p.session_id)
            .and_then(|s| s.byz.as_ref())
            .map(|b| b.electorate == key);
        if existing == Some(true) {
            return Ok(());
        }
        let replica =
            ByzantineReplica::new(self.me.clone(), self.key.clone(), p, self.settings.limits)
                .map_err(|e| e.to_string())?;
        let session = self
            .sessions
            .get_mut(&p.session_id)
            .ok_or_else(|| "session expired".to_owned())?;
        if let Some(byz) = session.byz.as_mut() {
            byz.electorate = key;
            byz.replica = replica;
            byz.round = 0;
            return Ok(());
        }
        let votes = self
            .client
            .subscribe(subjects::session_votes_all(&p.session_id))
            .await
            .map_err(|e| e.to_string())?;
        let session = self
            .sessions
            .get_mut(&p.session_id)
            .ok_or_else(|| "session expired".to_owned())?;
        session.byz = Some(Box::new(Byz {
            electorate: key,
            replica,
            votes,
            round: 0,
            deadline_ms: p.deadline_ms,
            options: options_of(p),
            heard: BTreeSet::new(),
            fed: HashSet::new(),
            republish_at: None,
            seen: BTreeMap::new(),
            mine: BTreeMap::new(),
            turned: false,
        }));
        Ok(())
    }

    fn enter_byzantine_round(&mut self, p: &Proposal) {
        if let Some(byz) = self
            .sessions
            .get_mut(&p.session_id)
            .and_then(|s| s.byz.as_mut())
        {
            if p.round >= byz.round {
                byz.round = p.round;
                byz.deadline_ms = p.deadline_ms;
                byz.options = options_of(p);
            }
        }
    }

    async fn on_decided(&mut self, done: Decided) {
        stats::decide_duration(done.elapsed.as_secs_f64());
        let p = done.proposal;
        if self.eff.mute() {
            return;
        }
        let Some(session) = self.sessions.get_mut(&p.session_id) else {
            return; // closed or expired while deciding
        };
        session.previous = Some(done.vote.clone());
        if session.byz.is_some() && matches!(p.context, RoundContext::Byzantine { .. }) {
            self.byzantine_decided(&p, &done.vote).await;
            return;
        }
        let remaining = p.deadline_ms.saturating_sub(now_ms());
        let adaptive_delay = (remaining / 2).min(ADAPTIVE_DELAY_MAX_MS);
        let values = faults::round_values(
            &self.eff.content,
            &done.vote.value,
            &p,
            &self.me,
            adaptive_delay,
        );
        for (delay, value) in values {
            let ballot = Ballot {
                v: PROTOCOL_VERSION,
                phase: p.phase,
                value,
                confidence: done.vote.wire_confidence(),
                reasoning: done.vote.reasoning.clone(),
            };
            match encode(ContentType::MsgPack, &ballot) {
                Ok(payload) => {
                    let body = Body::Signed {
                        payload,
                        impostor: false,
                    };
                    self.emit(&p.session_id, p.round, p.deadline_ms, delay, body)
                        .await;
                }
                Err(e) => tracing::error!(agent = %self.me, error = %e, "cannot encode a ballot"),
            }
        }
    }

    async fn byzantine_decided(&mut self, p: &Proposal, vote: &Vote) {
        let choice = match &vote.value {
            VoteValue::Choice(c) => c.clone(),
            VoteValue::Abstain => return,
            other => {
                tracing::warn!(agent = %self.me, value = ?other,
                    "a byzantine round needs a choice; abstaining");
                return;
            }
        };
        self.enter_byzantine_round(p);
        let Some(byz) = self
            .sessions
            .get_mut(&p.session_id)
            .and_then(|s| s.byz.as_mut())
        else {
            return;
        };
        match faults::byzantine_plan(&self.eff.content, &choice, &byz.options, byz.turned) {
            ByzantinePlan::Replica => {
                if let Err(e) = byz.replica.handle_proposal(now_ms(), p, &choice) {
                    tracing::warn!(agent = %self.me, error = %e, "replica refused the proposal");
                }
                self.drain(&p.session_id).await;
            }
            ByzantinePlan::Ballots(ballots) => {
                self.send_choices(&p.session_id, p.round, p.deadline_ms, ballots)
                    .await;
            }
            ByzantinePlan::Replay => self.replay(p).await,
        }
    }

    /// Publishes what the replica emitted; an adaptive attacker may turn afterwards.
    async fn drain(&mut self, sid: &SessionId) {
        let adaptive = self.eff.content == Content::Adaptive;
        let limits = self.settings.limits;
        let Some(byz) = self.sessions.get_mut(sid).and_then(|s| s.byz.as_mut()) else {
            return;
        };
        let mut publish = Vec::new();
        while let Some(effect) = byz.replica.poll() {
            match effect {
                ReplicaEffect::Publish(envelope) => {
                    if adaptive && byz.turned {
                        continue;
                    }
                    if adaptive {
                        if let Ok(ballot) = envelope.open::<Ballot>(&limits) {
                            if let (Phase::Prepare, VoteValue::Choice(v)) =
                                (ballot.phase, ballot.value)
                            {
                                byz.mine.insert(envelope.round, v);
                            }
                        }
                    }
                    publish.push((envelope.round, envelope.payload));
                }
                ReplicaEffect::Decided { value, round } => {
                    stats::byzantine_decided();
                    tracing::debug!(agent = %self.me, session = %sid, value, round, "decided");
                }
                ReplicaEffect::Equivocation(evidence) => {
                    stats::equivocation_seen();
                    tracing::info!(agent = %self.me, session = %sid,
                        equivocator = %evidence.agent_id, "peer equivocated");
                }
            }
        }
        let deadline = byz.deadline_ms;
        let turn = if adaptive && !byz.turned {
            let mine = byz.mine.get(&byz.round).map(String::as_str);
            faults::adaptive_turn(&byz.seen, mine, byz.round, byz.electorate.0 as usize)
                .map(|near| (byz.round, faults::adaptive_ballots(&near, &byz.options)))
        } else {
            None
        };
        if turn.is_some() {
            byz.turned = true;
        }
        for (round, payload) in publish {
            let body = Body::Signed {
                payload,
                impostor: false,
            };
            self.emit(sid, round, deadline, 0, body).await;
        }
        if let Some((round, ballots)) = turn {
            self.send_choices(sid, round, deadline, ballots).await;
        }
    }

    /// Byzantine ballots built by hand (attackers).
    async fn send_choices(
        &mut self,
        sid: &SessionId,
        round: u32,
        deadline_ms: u64,
        ballots: Vec<(Phase, String)>,
    ) {
        for (phase, value) in ballots {
            let ballot = Ballot::new(phase, VoteValue::Choice(value), 1.0);
            match encode(ContentType::MsgPack, &ballot) {
                Ok(payload) => {
                    let body = Body::Signed {
                        payload,
                        impostor: false,
                    };
                    self.emit(sid, round, deadline_ms, 0, body).await;
                }
                Err(e) => tracing::error!(agent = %self.me, error = %e, "cannot encode a ballot"),
            }
        }
    }

    /// The `replay` fault's answer: own envelopes of earlier rounds and sessions.
    async fn replay(&mut self, p: &Proposal) {
        let material: Vec<Bytes> = self
            .history
            .iter()
            .filter(|s| !(s.session == p.session_id && s.round >= p.round))
            .map(|s| s.bytes.clone())
            .collect();
        for bytes in material {
            self.emit(&p.session_id, p.round, p.deadline_ms, 0, Body::Raw(bytes))
                .await;
        }
    }

    async fn on_peer(&mut self, sid: SessionId, message: Option<async_nats::Message>) {
        let Some(message) = message else {
            if let Some(session) = self.sessions.get_mut(&sid) {
                session.byz = None;
            }
            return;
        };
        if self.eff.crashed {
            return;
        }
        let envelope = match reply::decode_message::<SignedEnvelope>(
            message.headers.as_ref(),
            &message.payload,
            &self.settings.limits,
        ) {
            Ok((envelope, _)) => envelope,
            Err(_) => {
                stats::refused("bad_peer_envelope");
                return;
            }
        };
        if envelope.sender == self.me || self.eff.unreachable.contains(&envelope.sender) {
            return;
        }
        let adaptive = self.eff.content == Content::Adaptive;
        let limits = self.settings.limits;
        let Some(Session { rounds, byz, .. }) = self.sessions.get_mut(&sid) else {
            return;
        };
        let Some(byz) = byz.as_mut() else {
            return;
        };
        if byz.electorate.1.binary_search(&envelope.sender).is_err() {
            return;
        }
        let published = rounds.get(&byz.round).is_some_and(|sent| !sent.is_empty());
        if byz.heard.insert(envelope.sender.clone()) && published {
            byz.republish_at
                .get_or_insert_with(|| Instant::now() + REPUBLISH_DELAY);
        }
        if adaptive && !byz.turned {
            if let Ok(ballot) = envelope.open::<Ballot>(&limits) {
                if let (Phase::Prepare, VoteValue::Choice(v)) = (ballot.phase, ballot.value) {
                    byz.seen
                        .entry((envelope.round, v))
                        .or_default()
                        .insert(envelope.sender.clone());
                }
            }
        }
        // Exact copies (peers re-send for late joiners) change nothing for the replica, which
        // would verify each again: with every agent of a session in one process, signature
        // checks are most of the work.
        // The digest is cryptographic so no one can craft a message that passes for a
        // peer's genuine one and gets it skipped.
        if byz.fed.len() < MAX_FED && !byz.fed.insert(digest(&message.payload)) {
            return;
        }
        // Errors only say the envelope is not for this replica.
        let _ = byz.replica.handle_envelope(now_ms(), &envelope);
        self.drain(&sid).await;
    }

    // ---- outbound -----------------------------------------------------------------------------

    /// Sends `body` through the delivery faults, now or after its delay.
    async fn emit(
        &mut self,
        sid: &SessionId,
        round: u32,
        deadline_ms: u64,
        extra_delay_ms: u64,
        body: Body,
    ) {
        let late = mix(self.seed, &format!("{sid}/{round}")) & 1 == 1;
        let planned = faults::deliver(
            &self.eff.delivery,
            &mut self.rng,
            now_ms(),
            deadline_ms,
            late,
            body,
        );
        for Planned { delay_ms, body } in planned {
            let delay = delay_ms.saturating_add(extra_delay_ms);
            if delay == 0 {
                self.publish(sid, round, body).await;
            } else {
                self.held_seq += 1;
                let at = later(Instant::now(), delay);
                self.held.insert(
                    (at, self.held_seq),
                    Held {
                        session: sid.clone(),
                        round,
                        body,
                    },
                );
            }
        }
    }

    /// Signs (when needed), records and publishes one message on this agent's vote subject.
    async fn publish(&mut self, sid: &SessionId, round: u32, body: Body) {
        if self.eff.mute() {
            return;
        }
        let Some(session) = self.sessions.get_mut(sid) else {
            return;
        };
        let bytes = match body {
            Body::Raw(bytes) => bytes,
            Body::Signed { payload, impostor } => {
                let header = EnvelopeHeader {
                    sender: self.me.clone(),
                    session: sid.clone(),
                    round,
                    sequence: next_sequence(&mut session.sequence, now_us()),
                    timestamp_ms: now_ms(),
                };
                let key = if impostor {
                    let own = &self.key;
                    &*self.impostor.get_or_insert_with(|| keys::impostor(own))
                } else {
                    &self.key
                };
                let envelope = SignedEnvelope::sign_payload(key, header, payload);
                let bytes = match encode(ContentType::MsgPack, &envelope) {
                    Ok(b) => Bytes::from(b),
                    Err(e) => {
                        tracing::error!(agent = %self.me, error = %e, "cannot encode an envelope");
                        return;
                    }
                };
                if !impostor {
                    if self.history.len() >= HISTORY {
                        self.history.pop_front();
                    }
                    self.history.push_back(Sent {
                        session: sid.clone(),
                        round,
                        bytes: bytes.clone(),
                    });
                }
                bytes
            }
        };
        let sent = session.rounds.entry(round).or_default();
        if sent.len() < SENT_PER_ROUND {
            sent.push(bytes.clone());
        }
        send_bytes(&self.client, &self.me, sid, bytes).await;
    }

    async fn republish(&mut self, sid: &SessionId, messages: Vec<Bytes>) {
        if self.eff.mute() {
            return;
        }
        for bytes in messages {
            send_bytes(&self.client, &self.me, sid, bytes).await;
        }
    }

    // ---- timers and the registry ------------------------------------------------------------

    async fn on_wake(&mut self) {
        let now = Instant::now();
        if !self.eff.crashed {
            if self.register_at.is_some_and(|t| t <= now) {
                self.register_at = None;
                self.start_register();
            }
            if self.registered && self.heartbeat_at.is_some_and(|t| t <= now) {
                self.heartbeat_at = Some(now + self.heartbeat_interval());
                if !self.heartbeat_in_flight {
                    self.start_heartbeat();
                }
            }
        }
        while let Some(entry) = self.held.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let held = entry.remove();
            self.publish(&held.session, held.round, held.body).await;
        }
        let mut again = Vec::new();
        for (sid, session) in &mut self.sessions {
            if let Some(byz) = session.byz.as_mut() {
                if byz.republish_at.is_some_and(|t| t <= now) {
                    byz.republish_at = None;
                    if let Some(sent) = session.rounds.get(&byz.round) {
                        again.push((sid.clone(), sent.clone()));
                    }
                }
            }
        }
        for (sid, messages) in again {
            self.republish(&sid, messages).await;
        }
        // Dropping a session drops its vote subscription (which unsubscribes).
        self.sessions.retain(|_, s| s.expires > now);
    }

    fn heartbeat_interval(&mut self) -> Duration {
        let jitter = self.settings.heartbeat_jitter;
        let factor = if jitter > 0.0 {
            self.rng.gen_range(1.0 - jitter..=1.0 + jitter)
        } else {
            1.0
        };
        self.settings.heartbeat_interval.mul_f64(factor)
    }

    fn register_backoff(&mut self) -> Duration {
        let base = Duration::from_millis(100) * (1u32 << self.register_attempt.min(6));
        self.register_attempt = self.register_attempt.saturating_add(1);
        base.min(MAX_REGISTER_BACKOFF)
            .mul_f64(self.rng.gen_range(0.5..=1.0))
    }

    fn start_register(&mut self) {
        let body = match registry::signed_request(
            &self.key,
            &self.me,
            &mut self.registry_seq,
            &self.registration,
        ) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(agent = %self.me, error = %e, "cannot encode the registration");
                return;
            }
        };
        self.call(CallKind::Register, subjects::REGISTRY_REGISTER, body);
    }

    fn start_heartbeat(&mut self) {
        let drop = self.eff.delivery.drop_percent;
        if drop > 0.0 && self.rng.gen::<f64>() * 100.0 < drop {
            return;
        }
        let (load, capacity) = self.load.get();
        let heartbeat = Heartbeat {
            v: PROTOCOL_VERSION,
            agent_id: self.me.clone(),
            load,
            capacity,
        };
        match registry::signed_request(&self.key, &self.me, &mut self.registry_seq, &heartbeat) {
            Ok(body) => {
                self.heartbeat_in_flight = true;
                self.call(CallKind::Heartbeat, subjects::REGISTRY_HEARTBEAT, body);
            }
            Err(e) => tracing::error!(agent = %self.me, error = %e, "cannot encode a heartbeat"),
        }
    }

    fn call(&mut self, kind: CallKind, subject: &'static str, body: Bytes) {
        let client = self.client.clone();
        let timeout = self.settings.request_timeout;
        let limits = self.settings.limits;
        self.calls.push(Box::pin(async move {
            let result = registry::call(&client, subject, body, timeout, limits).await;
            CallDone { kind, result }
        }));
    }

    fn on_call(&mut self, done: CallDone) -> Result<(), AgentError> {
        let now = Instant::now();
        match (done.kind, done.result) {
            (CallKind::Register, Ok(ack)) => {
                if !self.registered {
                    self.registered = true;
                    stats::registered(1.0);
                }
                self.register_attempt = 0;
                // The first heartbeat anywhere within one interval: a fleet registered at
                // once spreads its heartbeats.
                let first = self
                    .settings
                    .heartbeat_interval
                    .mul_f64(self.rng.gen_range(0.1..=1.0));
                self.heartbeat_at = Some(now + first);
                tracing::debug!(agent = %self.me, status = ack.status.as_str(), "registered");
            }
            (CallKind::Register, Err(e)) => {
                stats::registration_failure(e.label());
                if e.is_permanent() {
                    let (code, message) = match e {
                        CallError::Refused { code, message } => (code, message),
                        other => (ErrorCode::Internal, other.to_string()),
                    };
                    return Err(AgentError::RegistrationRefused {
                        agent: self.me.clone(),
                        code,
                        message,
                    });
                }
                let delay = self.register_backoff();
                self.register_at = Some(now + delay);
                if matches!(e, CallError::Unreachable(_)) {
                    tracing::debug!(agent = %self.me, error = %e, ?delay, "registry not reachable; retrying");
                } else {
                    tracing::warn!(agent = %self.me, error = %e, ?delay, "registration failed; retrying");
                }
            }
            (CallKind::Heartbeat, result) => {
                self.heartbeat_in_flight = false;
                match result {
                    Ok(_) => {}
                    Err(e) => {
                        stats::heartbeat_failure(e.label());
                        if matches!(
                            e,
                            CallError::Refused {
                                code: ErrorCode::UnknownAgent,
                                ..
                            }
                        ) {
                            // The registry forgot this agent (restart, expiry): register again.
                            tracing::info!(agent = %self.me, "registry does not know this agent; re-registering");
                            if self.registered {
                                self.registered = false;
                                stats::registered(-1.0);
                            }
                            self.register_at = Some(now);
                        } else {
                            tracing::debug!(agent = %self.me, error = %e, "heartbeat failed");
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
