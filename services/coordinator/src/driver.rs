//! Runs one session: the pure consensus machine in the middle, NATS and Redis around it.
//!
//! Inputs (vote envelopes, timer firings) are logged to Redis under the session's lease
//! before their effects go out, so a replica that takes over replays the log to the same
//! state and carries on.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_nats::jetstream::{message::Acker, AckKind};
use futures::{FutureExt, StreamExt};
use mabeam_consensus::{session::Effect, IntakeSettings, Session, SessionInit};
use mabeam_protocol::{
    codec::{decode, encode, ContentType},
    registry::AgreementReport,
    session::{
        Proposal, SessionClosed, MESSAGE_TYPE_HEADER, MESSAGE_TYPE_PROPOSAL,
        MESSAGE_TYPE_SESSION_CLOSED,
    },
    subjects,
    telemetry::EventKind,
    AgentId, SignedEnvelope, TaskResult, PROTOCOL_VERSION,
};
use mabeam_runtime::{now_ms, ratelimit::RateLimiter, reply};
use tokio_util::sync::CancellationToken;

use crate::{
    error::StoreError,
    store::{Lease, LogEntry, SessionRecord},
    Shared,
};

/// Most envelopes handled (and logged) as one batch.
const MAX_BATCH: usize = 1024;

pub(crate) fn session_init(
    shared: &Shared,
    record: &SessionRecord,
) -> Result<SessionInit, mabeam_consensus::ConfigError> {
    SessionInit::from_task(
        &record.task,
        record.task_id.clone(),
        record.session_id.clone(),
        record.electorate.clone(),
        record.seed,
        IntakeSettings {
            limits: shared.limits,
            clock_tolerance_ms: record.clock_tolerance_ms,
            ..IntakeSettings::default()
        },
    )
}

/// A session this replica owns, being driven.
pub(crate) struct Driver {
    pub(crate) shared: Arc<Shared>,
    pub(crate) lease: Lease,
    pub(crate) record: SessionRecord,
    pub(crate) session: Session,
    /// The task message, acked once the result is stored (absent after a takeover: the
    /// dead owner held it; its redelivery finds the result and is acked then).
    pub(crate) acker: Option<Acker>,
    /// Cancelled when the lease is lost.
    pub(crate) lost: CancellationToken,
    /// Proposals of the latest round, re-sent after a takeover.
    pub(crate) last_proposals: BTreeMap<AgentId, Proposal>,
    /// Per vote subject (one per agent): a flood is dropped before decoding or logging.
    pub(crate) vote_rate: RateLimiter,
}

/// The vote limiter of one session: one bucket per electorate member, and room for a few
/// subjects of non-members (their ballots are refused anyway).
pub(crate) fn vote_limiter(shared: &Shared, record: &SessionRecord) -> RateLimiter {
    RateLimiter::new(shared.config.vote_rate, record.electorate.len() + 64)
}

enum Exit {
    Finished,
    LeaseLost,
    HandedBack,
    StoreFailed(StoreError),
}

impl Driver {
    /// Replays the log of a session taken over from another replica. Effects of the replay
    /// are not re-done, except the latest proposals (agents answer a repeated proposal with
    /// the ballots they already sent) and a decision the dead owner reached but did not store.
    pub(crate) fn replay(&mut self, log: Vec<LogEntry>) -> Option<Box<mabeam_consensus::Decision>> {
        let mut finished = self.drain_replayed();
        for entry in log {
            match entry {
                LogEntry::Envelopes { now_ms, envelopes } => {
                    self.session.handle_envelopes(now_ms, envelopes)
                }
                LogEntry::Timeout { now_ms } => self.session.handle_timeout(now_ms),
            }
            finished = finished.or(self.drain_replayed());
        }
        finished
    }

    fn drain_replayed(&mut self) -> Option<Box<mabeam_consensus::Decision>> {
        let mut finished = None;
        while let Some(effect) = self.session.poll_effect() {
            match effect {
                Effect::Propose { to, proposal } => self.remember(&to, &proposal),
                Effect::Finished(d) => finished = Some(d),
                _ => {}
            }
        }
        finished
    }

    fn remember(&mut self, to: &[AgentId], proposal: &Proposal) {
        if self
            .last_proposals
            .values()
            .any(|p| p.round < proposal.round)
        {
            self.last_proposals.clear();
        }
        for agent in to {
            self.last_proposals.insert(agent.clone(), proposal.clone());
        }
    }

    async fn publish_proposals(&self, to: &[AgentId], proposal: &Proposal) {
        let body = match encode(ContentType::MsgPack, proposal) {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a proposal");
                return;
            }
        };
        let mut headers = reply::headers_for(ContentType::MsgPack);
        headers.insert(MESSAGE_TYPE_HEADER, MESSAGE_TYPE_PROPOSAL);
        for agent in to {
            let _ = self
                .shared
                .nats
                .publish_with_headers(subjects::agent_inbox(agent), headers.clone(), body.clone())
                .await;
        }
        metrics::counter!("mabeam_coordinator_proposals_sent_total").increment(to.len() as u64);
    }

    /// Publishes effects; returns the decision when the session finished.
    async fn apply_effects(&mut self) -> Option<Box<mabeam_consensus::Decision>> {
        let sid = self.record.session_id.clone();
        while let Some(effect) = self.session.poll_effect() {
            match effect {
                Effect::Propose { to, proposal } => {
                    self.remember(&to, &proposal);
                    self.publish_proposals(&to, &proposal).await;
                }
                Effect::ArmTimer { .. } => {}
                Effect::BallotRejected {
                    agent,
                    reason,
                    detail,
                } => {
                    metrics::counter!("mabeam_coordinator_ballots_rejected_total", "reason" => reason.as_str())
                        .increment(1);
                    tracing::info!(session = %sid, agent = %agent, reason = reason.as_str(), detail, "ballot rejected");
                    self.shared
                        .events
                        .emit(EventKind::BallotRejected {
                            session_id: sid.clone(),
                            agent_id: agent,
                            reason,
                        })
                        .await;
                }
                Effect::Equivocation(evidence) => {
                    let agent = evidence.agent_id.clone();
                    self.shared.report_evidence((*evidence).clone());
                    self.shared
                        .events
                        .emit(EventKind::EquivocationDetected {
                            session_id: sid.clone(),
                            agent_id: agent,
                            evidence: Some(evidence),
                        })
                        .await;
                }
                Effect::Switched(switch) => {
                    self.shared
                        .events
                        .emit(EventKind::AlgorithmSwitched {
                            session_id: sid.clone(),
                            from: switch.from.clone(),
                            to: switch.to.clone(),
                            reason: switch.reason.clone(),
                        })
                        .await;
                }
                Effect::Finished(decision) => return Some(decision),
            }
        }
        None
    }

    /// Drives the session to its end (or until the lease is lost or shutdown hands it back).
    pub(crate) async fn run(mut self, mut pending: Option<Box<mabeam_consensus::Decision>>) {
        let exit = self.drive(&mut pending).await;
        let task = self.lease.task_id.clone();
        match exit {
            Exit::Finished => {}
            Exit::LeaseLost => {
                metrics::counter!("mabeam_coordinator_leases_lost_total").increment(1);
                tracing::warn!(task = %task, "lease lost; another replica owns the session now");
                if let Some(acker) = self.acker.take() {
                    crate::intake::follow(self.shared.clone(), task.clone(), acker).await;
                }
            }
            Exit::HandedBack => {
                if let Err(e) = self.shared.store.release(&self.lease).await {
                    tracing::warn!(task = %task, error = %e, "cannot release the lease; it will expire");
                }
                if let Some(acker) = self.acker.take() {
                    let _ = acker.ack_with(AckKind::Nak(None)).await;
                }
                tracing::info!(task = %task, "session handed back for another replica");
            }
            Exit::StoreFailed(e) => {
                // The session cannot be persisted: stop; once Redis is back, its lease
                // expires and a replica resumes it from what was logged.
                tracing::error!(task = %task, error = %e, "session store failed; session paused for resumption");
                if let Some(acker) = self.acker.take() {
                    let _ = acker
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
            }
        }
        self.shared.forget(&task);
    }

    async fn drive(&mut self, pending: &mut Option<Box<mabeam_consensus::Decision>>) -> Exit {
        let sid = self.record.session_id.clone();
        let mut votes = match self
            .shared
            .nats
            .subscribe(subjects::session_votes_all(&sid))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot subscribe to votes");
                return Exit::HandedBack;
            }
        };
        // A resumed session re-sends its latest round; a fresh one sends its first.
        if !self.last_proposals.is_empty() {
            let mut by_round: BTreeMap<u32, (Vec<AgentId>, Proposal)> = BTreeMap::new();
            for (agent, p) in &self.last_proposals {
                by_round
                    .entry(p.round)
                    .or_insert_with(|| (Vec::new(), p.clone()))
                    .0
                    .push(agent.clone());
            }
            for (to, p) in by_round.into_values() {
                self.publish_proposals(&to, &p).await;
            }
        }
        let progress_every = self.shared.config.ack_wait / 2;
        let mut progress =
            tokio::time::interval_at(tokio::time::Instant::now() + progress_every, progress_every);
        loop {
            if pending.is_none() {
                *pending = self.apply_effects().await;
            }
            if let Some(decision) = pending.take() {
                return self.finish(decision).await;
            }
            let sleep = match self.session.next_timeout() {
                Some(at) => Duration::from_millis(at.saturating_sub(now_ms())),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                biased;
                _ = self.lost.cancelled() => return Exit::LeaseLost,
                _ = self.shared.handover.cancelled() => return Exit::HandedBack,
                first = votes.next() => {
                    let Some(first) = first else { return Exit::HandedBack };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match votes.next().now_or_never() {
                            Some(Some(m)) => batch.push(m),
                            _ => break,
                        }
                    }
                    let envelopes = self.decode_votes(batch);
                    if envelopes.is_empty() {
                        continue;
                    }
                    let now = now_ms();
                    let entry = LogEntry::Envelopes { now_ms: now, envelopes };
                    if let Err(e) = self.shared.store.append(&self.lease, &entry, self.session.round()).await {
                        return store_exit(e);
                    }
                    let LogEntry::Envelopes { envelopes, .. } = entry else { continue };
                    self.session.handle_envelopes(now, envelopes);
                }
                _ = tokio::time::sleep(sleep) => {
                    let now = now_ms();
                    if let Err(e) = self.shared.store.append(&self.lease, &LogEntry::Timeout { now_ms: now }, self.session.round()).await {
                        return store_exit(e);
                    }
                    self.session.handle_timeout(now);
                }
                _ = progress.tick() => {
                    if let Some(acker) = &self.acker {
                        let _ = acker.ack_with(AckKind::Progress).await;
                    }
                }
            }
        }
    }

    fn decode_votes(&self, batch: Vec<async_nats::Message>) -> Vec<SignedEnvelope> {
        metrics::counter!("mabeam_coordinator_votes_received_total").increment(batch.len() as u64);
        batch
            .into_iter()
            .filter(|m| {
                let agent = m.subject.rsplit('.').next().unwrap_or_default();
                self.vote_rate.admit("votes", agent)
            })
            .filter_map(|m| {
                let ct = reply::content_type(m.headers.as_ref()).unwrap_or(ContentType::MsgPack);
                match decode::<SignedEnvelope>(ct, &m.payload, &self.shared.limits) {
                    Ok(env) => Some(env),
                    Err(e) => {
                        metrics::counter!("mabeam_coordinator_votes_malformed_total", "reason" => e.label())
                            .increment(1);
                        tracing::info!(subject = %m.subject, error = %e, "undecodable vote dropped");
                        None
                    }
                }
            })
            .collect()
    }

    async fn finish(&mut self, decision: Box<mabeam_consensus::Decision>) -> Exit {
        let participants = decision.participants.clone();
        let agreement = decision
            .outcome
            .as_ref()
            .map(|o| mabeam_consensus::weights::agreement(&decision.final_votes, o));
        let mut result = decision.into_result(
            self.record.task_id.clone(),
            self.record.session_id.clone(),
            self.session.algorithm(),
        );
        result.timings.submitted_ms = self.record.submitted_ms;
        if let Err(e) = self.shared.store.finish(&self.lease, &result).await {
            return store_exit(e);
        }
        self.shared.publish_result(&result).await;
        if let Some(acker) = self.acker.take() {
            if let Err(e) = acker.ack().await {
                tracing::warn!(error = %e, "cannot ack the task message; its redelivery will find the result");
            }
        }
        self.close(&participants, &result).await;
        if let Some(agreed) = agreement.filter(|a| !a.is_empty()) {
            self.report_agreement(agreed).await;
        }
        Exit::Finished
    }

    /// Tells the registry who agreed with the decision (it adjusts expertise when dynamic
    /// weights are enabled).
    async fn report_agreement(&self, agreed: BTreeMap<AgentId, bool>) {
        let report = AgreementReport {
            v: PROTOCOL_VERSION,
            session_id: self.record.session_id.clone(),
            agreed,
        };
        if let Ok(body) = encode(ContentType::MsgPack, &report) {
            let _ = self
                .shared
                .nats
                .publish_with_headers(
                    subjects::REGISTRY_AGREEMENT,
                    reply::headers_for(ContentType::MsgPack),
                    body.into(),
                )
                .await;
        }
    }

    async fn close(&self, participants: &[AgentId], result: &TaskResult) {
        let closed = SessionClosed {
            v: PROTOCOL_VERSION,
            task_id: result.task_id.clone(),
            session_id: self.record.session_id.clone(),
            status: result.status,
        };
        if let Ok(body) = encode(ContentType::MsgPack, &closed) {
            let body = bytes::Bytes::from(body);
            let mut headers = reply::headers_for(ContentType::MsgPack);
            headers.insert(MESSAGE_TYPE_HEADER, MESSAGE_TYPE_SESSION_CLOSED);
            let everyone = self.record.electorate.ids();
            for agent in if participants.is_empty() {
                &everyone[..]
            } else {
                participants
            } {
                let _ = self
                    .shared
                    .nats
                    .publish_with_headers(
                        subjects::agent_inbox(agent),
                        headers.clone(),
                        body.clone(),
                    )
                    .await;
            }
        }
        let duration = result.timings.duration_ms;
        metrics::histogram!(
            "mabeam_coordinator_session_duration_seconds",
            "algorithm" => result.algorithm.clone(),
            "status" => result.status.as_str()
        )
        .record(duration as f64 / 1000.0);
        self.shared
            .events
            .emit(EventKind::SessionFinished {
                task_id: result.task_id.clone(),
                session_id: self.record.session_id.clone(),
                algorithm: result.algorithm.clone(),
                status: result.status,
                rounds: result.rounds,
                duration_ms: duration,
            })
            .await;
    }
}

fn store_exit(e: StoreError) -> Exit {
    match e {
        StoreError::LeaseLost => Exit::LeaseLost,
        other => Exit::StoreFailed(other),
    }
}
