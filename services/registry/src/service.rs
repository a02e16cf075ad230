//! Request handling: decode, authenticate, decide with the pure lifecycle, write with a
//! compare-and-set, announce, reply. Every refusal is a typed `ErrorReply`.

use std::time::Instant;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt as _;
use mabeam_consensus::weights::{updated_expertise, WeightUpdate};
use mabeam_protocol::{
    codec::{decode, encode, ContentType, Message},
    registry::{
        AgentInfo, AgentList, AgentQuery, AgentStatus, AgreementReport, Deregistration, Heartbeat,
        Registration, RegistryAck, REGISTRY_SESSION,
    },
    session::EquivocationEvidence,
    subjects,
    telemetry::EventKind,
    AgentId, ErrorCode, Limits, PublicKey, SignedEnvelope, PROTOCOL_VERSION,
};
use mabeam_runtime::{now_ms, reply, EventSink};

use crate::{
    error::{Refusal, StoreError},
    lifecycle::{self, Liveness},
    store::{Committed, Seen, Store, StoredAgent},
};

/// Reads and compare-and-set writes of one agent before giving up on contention.
const MAX_ATTEMPTS: usize = 8;
/// Bounds on what a registration may declare.
const MAX_TEXT: usize = 128;
const MAX_CAPABILITIES: usize = 64;
const MAX_METADATA: usize = 64;
/// Agreement-report entries applied concurrently.
const WEIGHT_UPDATES_IN_FLIGHT: usize = 16;
/// Room left for reply headers under the server's payload limit.
const HEADER_ROOM: usize = 512;

/// The request endpoints (one NATS micro-service endpoint each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Register,
    Heartbeat,
    Deregister,
    Query,
    Evidence,
}

impl Endpoint {
    pub const ALL: [Endpoint; 5] = [
        Self::Register,
        Self::Heartbeat,
        Self::Deregister,
        Self::Query,
        Self::Evidence,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Heartbeat => "heartbeat",
            Self::Deregister => "deregister",
            Self::Query => "query",
            Self::Evidence => "evidence",
        }
    }

    pub fn subject(self) -> &'static str {
        match self {
            Self::Register => subjects::REGISTRY_REGISTER,
            Self::Heartbeat => subjects::REGISTRY_HEARTBEAT,
            Self::Deregister => subjects::REGISTRY_DEREGISTER,
            Self::Query => subjects::REGISTRY_QUERY,
            Self::Evidence => subjects::REGISTRY_EVIDENCE,
        }
    }
}

/// The label of agreement reports in the request metrics.
const AGREEMENT: &str = "agreement";

#[derive(Debug)]
pub(crate) struct Registry {
    pub(crate) store: Store,
    pub(crate) events: EventSink,
    pub(crate) nats: async_nats::Client,
    pub(crate) limits: Limits,
    pub(crate) liveness: Liveness,
    pub(crate) clock_tolerance_ms: u64,
    /// `Some` when dynamic weights are enabled.
    pub(crate) weights: Option<WeightUpdate>,
    /// Per endpoint: a flood is refused before any decoding or signature check.
    pub(crate) rate: mabeam_runtime::ratelimit::RateLimiter,
}

fn count_request(endpoint: &'static str, outcome: &'static str, started: Instant) {
    metrics::counter!("mabeam_registry_requests_total", "endpoint" => endpoint, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("mabeam_registry_request_duration_seconds", "endpoint" => endpoint)
        .record(started.elapsed().as_secs_f64());
}

fn contended(id: &AgentId) -> Refusal {
    Refusal::new(
        ErrorCode::Unavailable,
        format!("agent {id} is being updated concurrently; retry"),
    )
}

fn replayed(id: &AgentId, sequence: u64, last: Option<u64>) -> Refusal {
    let last = last.map_or_else(|| "one".to_owned(), |l| l.to_string());
    Refusal::new(
        ErrorCode::Unauthorized,
        format!(
            "replayed or reordered envelope: sequence {sequence} is not above the last accepted {last} for {id}"
        ),
    )
}

fn verify(envelope: &SignedEnvelope, key: &PublicKey) -> Result<(), Refusal> {
    envelope
        .verify(key)
        .map_err(|e| Refusal::new(ErrorCode::InvalidSignature, e.to_string()))
}

fn fresh(id: &AgentId, sequence: u64, last: Option<u64>) -> Result<(), Refusal> {
    match last {
        Some(last) if sequence <= last => Err(replayed(id, sequence, Some(last))),
        _ => Ok(()),
    }
}

/// The agent an envelope or evidence names, which must be registered.
fn known(id: &AgentId, agent: Option<StoredAgent>) -> Result<StoredAgent, Refusal> {
    agent.ok_or_else(|| {
        Refusal::new(
            ErrorCode::UnknownAgent,
            format!("agent {id} is not registered; register it first"),
        )
    })
}

/// Checks what a registration declares; returns its capabilities without duplicates.
pub(crate) fn validate_registration(reg: &Registration) -> Result<Vec<String>, Refusal> {
    let invalid = |message: String| Err(Refusal::new(ErrorCode::InvalidParams, message));
    if !(reg.expertise.is_finite() && reg.expertise > 0.0) {
        return invalid(format!(
            "expertise must be a positive number, got {}",
            reg.expertise
        ));
    }
    if reg.kind.len() > MAX_TEXT {
        return invalid(format!("kind is longer than {MAX_TEXT} bytes"));
    }
    if reg.capabilities.len() > MAX_CAPABILITIES {
        return invalid(format!(
            "{} capabilities; at most {MAX_CAPABILITIES} are accepted",
            reg.capabilities.len()
        ));
    }
    let mut capabilities: Vec<String> = Vec::with_capacity(reg.capabilities.len());
    for cap in &reg.capabilities {
        if cap.is_empty() || cap.len() > MAX_TEXT {
            return invalid(format!(
                "capability {cap:?} must be 1 to {MAX_TEXT} bytes long"
            ));
        }
        if !capabilities.contains(cap) {
            capabilities.push(cap.clone());
        }
    }
    if reg.metadata.len() > MAX_METADATA {
        return invalid(format!(
            "{} metadata entries; at most {MAX_METADATA} are accepted",
            reg.metadata.len()
        ));
    }
    Ok(capabilities)
}

/// Whether `agent` passes the query's status and capability filters.
fn matches(agent: &AgentInfo, query: &AgentQuery) -> bool {
    query.status.is_none_or(|s| agent.status == s)
        && query
            .capability
            .as_ref()
            .is_none_or(|c| agent.capabilities.contains(c))
}

impl Registry {
    /// Answers one request on `endpoint`, counting and timing it.
    pub(crate) async fn serve(&self, endpoint: Endpoint, request: &async_nats::service::Request) {
        let started = Instant::now();
        let message = &request.message;
        if !self.rate.admit(endpoint.name(), endpoint.name()) {
            count_request(endpoint.name(), ErrorCode::RateLimited.as_str(), started);
            let ct = reply::content_type(message.headers.as_ref()).unwrap_or(ContentType::MsgPack);
            reply::respond_to(request, reply::rate_limited_body(ct, endpoint.subject())).await;
            return;
        }
        let (ct, outcome) = match reply::content_type(message.headers.as_ref()) {
            Ok(ct) => (ct, self.handle(endpoint, ct, &message.payload).await),
            Err(e) => (ContentType::MsgPack, Err(Refusal::from(e))),
        };
        let body = match outcome {
            Ok(body) => {
                count_request(endpoint.name(), "ok", started);
                body
            }
            Err(refusal) => {
                reply::record_refusal(endpoint.name(), refusal.code, &refusal.message);
                count_request(endpoint.name(), refusal.code.as_str(), started);
                reply::error_body(ct, refusal.code, &refusal.message)
            }
        };
        reply::respond_to(request, body).await;
    }

    async fn handle(
        &self,
        endpoint: Endpoint,
        ct: ContentType,
        payload: &[u8],
    ) -> Result<(HeaderMap, Bytes), Refusal> {
        match endpoint {
            Endpoint::Register => {
                let ack = self.register(self.decode(ct, payload)?).await?;
                Ok(reply::ok_body(ct, &ack))
            }
            Endpoint::Heartbeat => {
                let ack = self.heartbeat(self.decode(ct, payload)?).await?;
                Ok(reply::ok_body(ct, &ack))
            }
            Endpoint::Deregister => {
                let ack = self.deregister(self.decode(ct, payload)?).await?;
                Ok(reply::ok_body(ct, &ack))
            }
            Endpoint::Evidence => {
                let ack = self.evidence(self.decode(ct, payload)?).await?;
                Ok(reply::ok_body(ct, &ack))
            }
            Endpoint::Query => {
                let list = self.query(self.decode(ct, payload)?).await?;
                let (headers, body) = reply::ok_body(ct, &list);
                // A reply over the server's limit would never arrive: say why instead.
                let limit = self.nats.server_info().max_payload;
                if body.len() + HEADER_ROOM > limit {
                    return Err(Refusal::new(
                        ErrorCode::TooLarge,
                        format!(
                            "the {} matching agents take {} bytes, over the {limit}-byte NATS limit; narrow the query or set a limit",
                            list.agents.len(),
                            body.len()
                        ),
                    ));
                }
                Ok((headers, body))
            }
        }
    }

    fn decode<T: Message>(&self, ct: ContentType, payload: &[u8]) -> Result<T, Refusal> {
        Ok(decode(ct, payload, &self.limits)?)
    }

    /// Opens a registry envelope: its header names the registry session, its payload decodes
    /// as `T`, the sender is the agent the payload speaks for, and its clock is close enough
    /// to ours. The signature is checked by the caller, which knows the key.
    fn open<T: Message>(
        &self,
        envelope: &SignedEnvelope,
        agent_of: impl Fn(&T) -> &AgentId,
    ) -> Result<T, Refusal> {
        if envelope.session.as_str() != REGISTRY_SESSION || envelope.round != 0 {
            return Err(Refusal::new(
                ErrorCode::Unauthorized,
                format!(
                    "envelope is signed for session {} round {}, not for the registry (session {REGISTRY_SESSION:?}, round 0)",
                    envelope.session, envelope.round
                ),
            ));
        }
        let body: T = envelope
            .open(&self.limits)
            .map_err(|e| Refusal::new(ErrorCode::from(&e), format!("envelope payload: {e}")))?;
        let agent = agent_of(&body);
        if &envelope.sender != agent {
            return Err(Refusal::new(
                ErrorCode::Unauthorized,
                format!(
                    "envelope sender {} is not the agent {agent} it speaks for",
                    envelope.sender
                ),
            ));
        }
        let skew = now_ms().abs_diff(envelope.timestamp_ms);
        if skew > self.clock_tolerance_ms {
            return Err(Refusal::new(
                ErrorCode::Unauthorized,
                format!(
                    "envelope timestamp {} is {skew} ms from the registry clock; the tolerance is {} ms",
                    envelope.timestamp_ms, self.clock_tolerance_ms
                ),
            ));
        }
        Ok(body)
    }

    /// Counts and announces a status change (`from` is `None` for a new agent).
    pub(crate) async fn announce(
        &self,
        agent_id: &AgentId,
        from: Option<AgentStatus>,
        to: AgentStatus,
    ) {
        if from == Some(to) {
            return;
        }
        metrics::counter!(
            "mabeam_registry_status_transitions_total",
            "from" => from.map_or("none", AgentStatus::as_str),
            "to" => to.as_str()
        )
        .increment(1);
        self.events
            .emit(EventKind::AgentStatusChanged {
                agent_id: agent_id.clone(),
                from,
                to,
            })
            .await;
    }

    fn ack(agent_id: &AgentId, status: AgentStatus) -> RegistryAck {
        RegistryAck {
            v: PROTOCOL_VERSION,
            agent_id: agent_id.clone(),
            status,
        }
    }

    async fn register(&self, envelope: SignedEnvelope) -> Result<RegistryAck, Refusal> {
        let reg: Registration = self.open(&envelope, |r: &Registration| &r.agent_id)?;
        // Proof of possession: the id gets bound to the key that signed this.
        verify(&envelope, &reg.public_key)?;
        let capabilities = validate_registration(&reg)?;
        let id = &reg.agent_id;
        for _ in 0..MAX_ATTEMPTS {
            let snapshot = self.store.snapshot(id).await?;
            let old = snapshot.agent.as_ref();
            if let Some(old) = old {
                if old.info.public_key != reg.public_key {
                    return Err(Refusal::new(
                        ErrorCode::KeyMismatch,
                        format!(
                            "agent id {id} is bound to another key; deregister it with that key first"
                        ),
                    ));
                }
            }
            fresh(id, envelope.sequence, snapshot.last_sequence)?;
            let now = now_ms();
            let status =
                lifecycle::after_registration(old.map(|o| o.info.status), snapshot.quarantined);
            let agent = StoredAgent {
                info: AgentInfo {
                    agent_id: id.clone(),
                    kind: reg.kind.clone(),
                    capabilities: capabilities.clone(),
                    // With dynamic weights a restarting agent keeps what it has earned
                    // rather than resetting it by declaring a new value.
                    expertise: match (old, self.weights) {
                        (Some(old), Some(_)) => old.info.expertise,
                        _ => reg.expertise,
                    },
                    public_key: reg.public_key,
                    status,
                    registered_ms: now,
                    last_heartbeat_ms: old.and_then(|o| o.info.last_heartbeat_ms),
                    load: old.map_or(0.0, |o| o.info.load),
                    capacity: old.map_or(0.0, |o| o.info.capacity),
                },
                rev: old.map_or(0, |o| o.rev),
            };
            let seen = if lifecycle::is_timed(status) {
                Seen::At(now)
            } else {
                Seen::Forget
            };
            match self
                .store
                .put(
                    old,
                    &agent,
                    Some(&reg.metadata),
                    Some(envelope.sequence),
                    seen,
                )
                .await?
            {
                Committed::Done => {
                    self.announce(id, old.map(|o| o.info.status), status).await;
                    return Ok(Self::ack(id, status));
                }
                Committed::Conflict => continue,
                Committed::Replay => {
                    return Err(replayed(id, envelope.sequence, snapshot.last_sequence))
                }
            }
        }
        Err(contended(id))
    }

    async fn heartbeat(&self, envelope: SignedEnvelope) -> Result<RegistryAck, Refusal> {
        let beat: Heartbeat = self.open(&envelope, |h: &Heartbeat| &h.agent_id)?;
        for (name, value) in [("load", beat.load), ("capacity", beat.capacity)] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(Refusal::new(
                    ErrorCode::InvalidParams,
                    format!("{name} must be a non-negative number, got {value}"),
                ));
            }
        }
        let id = &beat.agent_id;
        let mut verified_with = None;
        for _ in 0..MAX_ATTEMPTS {
            let snapshot = self.store.snapshot(id).await?;
            let old = known(id, snapshot.agent)?;
            if verified_with != Some(old.info.public_key) {
                verify(&envelope, &old.info.public_key)?;
                verified_with = Some(old.info.public_key);
            }
            fresh(id, envelope.sequence, snapshot.last_sequence)?;
            let now = now_ms();
            let status = lifecycle::after_heartbeat(old.info.status);
            let mut agent = old.clone();
            agent.info.status = status;
            agent.info.last_heartbeat_ms = Some(now);
            agent.info.load = beat.load;
            agent.info.capacity = beat.capacity;
            let seen = if lifecycle::is_timed(status) {
                Seen::At(now)
            } else {
                Seen::Forget
            };
            match self
                .store
                .put(Some(&old), &agent, None, Some(envelope.sequence), seen)
                .await?
            {
                Committed::Done => {
                    self.announce(id, Some(old.info.status), status).await;
                    return Ok(Self::ack(id, status));
                }
                Committed::Conflict => continue,
                Committed::Replay => {
                    return Err(replayed(id, envelope.sequence, snapshot.last_sequence))
                }
            }
        }
        Err(contended(id))
    }

    async fn deregister(&self, envelope: SignedEnvelope) -> Result<RegistryAck, Refusal> {
        let request: Deregistration = self.open(&envelope, |d: &Deregistration| &d.agent_id)?;
        let id = &request.agent_id;
        let mut verified_with = None;
        for _ in 0..MAX_ATTEMPTS {
            let snapshot = self.store.snapshot(id).await?;
            let old = known(id, snapshot.agent)?;
            if verified_with != Some(old.info.public_key) {
                verify(&envelope, &old.info.public_key)?;
                verified_with = Some(old.info.public_key);
            }
            fresh(id, envelope.sequence, snapshot.last_sequence)?;
            // The sequence outlives the agent for as long as its envelopes stay timely.
            let keep_ms = self.clock_tolerance_ms.saturating_mul(2);
            match self.store.delete(&old, envelope.sequence, keep_ms).await? {
                Committed::Done => {
                    tracing::info!(agent = %id, "agent deregistered");
                    return Ok(Self::ack(id, old.info.status));
                }
                Committed::Conflict => continue,
                Committed::Replay => {
                    return Err(replayed(id, envelope.sequence, snapshot.last_sequence))
                }
            }
        }
        Err(contended(id))
    }

    async fn evidence(&self, evidence: EquivocationEvidence) -> Result<RegistryAck, Refusal> {
        let id = &evidence.agent_id;
        let agent = known(id, self.store.snapshot(id).await?.agent)?;
        if !evidence.verify(&agent.info.public_key, &self.limits) {
            return Err(Refusal::new(
                ErrorCode::InvalidSignature,
                format!(
                    "evidence does not prove equivocation by {id}: it needs two valid signatures of {id} over ballots of session {} round {} with the same phase and different values",
                    evidence.session_id, evidence.round
                ),
            ));
        }
        let bytes = encode(ContentType::MsgPack, &evidence)
            .map_err(|e| Refusal::new(ErrorCode::Internal, e.to_string()))?;
        // The quarantine mark is set first: an agent deregistering meanwhile comes back
        // quarantined.
        self.store.keep_evidence(id, bytes).await?;
        let mut current = Some(agent);
        for _ in 0..MAX_ATTEMPTS {
            let Some(old) = current else {
                return Ok(Self::ack(id, AgentStatus::Quarantined));
            };
            if old.info.status == AgentStatus::Quarantined {
                return Ok(Self::ack(id, AgentStatus::Quarantined));
            }
            let mut agent = old.clone();
            agent.info.status = AgentStatus::Quarantined;
            match self
                .store
                .put(Some(&old), &agent, None, None, Seen::Forget)
                .await?
            {
                Committed::Done => {
                    metrics::counter!("mabeam_registry_quarantines_total").increment(1);
                    tracing::warn!(agent = %id, session = %evidence.session_id, round = evidence.round, "agent quarantined on equivocation evidence");
                    self.announce(id, Some(old.info.status), AgentStatus::Quarantined)
                        .await;
                    return Ok(Self::ack(id, AgentStatus::Quarantined));
                }
                Committed::Conflict => current = self.store.snapshot(id).await?.agent,
                Committed::Replay => return Err(StoreError::Script("replay".into()).into()),
            }
        }
        Err(contended(id))
    }

    async fn query(&self, query: AgentQuery) -> Result<AgentList, Refusal> {
        let mut ids: Vec<String> = if query.agent_ids.is_empty() {
            self.store
                .ids(query.capability.as_deref(), query.status)
                .await?
        } else {
            query.agent_ids.iter().map(|id| id.to_string()).collect()
        };
        ids.sort_unstable();
        ids.dedup();
        let limit = query.limit.map_or(usize::MAX, |l| l as usize);
        // Without a limit one pipelined round trip reads every candidate; with one, chunks
        // stop early.
        let chunk = match query.limit {
            Some(l) => (l as usize).clamp(64, 4096),
            None => ids.len().max(1),
        };
        let mut agents = Vec::new();
        for ids in ids.chunks(chunk) {
            if agents.len() >= limit {
                break;
            }
            // Index sets and records are written together but read apart: filter again.
            agents.extend(
                self.store
                    .agents(ids)
                    .await?
                    .into_iter()
                    .map(|a| a.info)
                    .filter(|a| matches(a, &query)),
            );
        }
        agents.truncate(limit);
        Ok(AgentList {
            v: PROTOCOL_VERSION,
            agents,
        })
    }

    /// Handles one agreement report (a publication, no reply).
    pub(crate) async fn agreement(&self, message: &async_nats::Message) {
        let started = Instant::now();
        if !self.rate.admit(AGREEMENT, AGREEMENT) {
            count_request(AGREEMENT, ErrorCode::RateLimited.as_str(), started);
            return;
        }
        let report = reply::decode_message::<AgreementReport>(
            message.headers.as_ref(),
            &message.payload,
            &self.limits,
        );
        let outcome = match (report, self.weights) {
            (Err(e), _) => {
                let refusal = Refusal::from(e);
                reply::record_refusal(AGREEMENT, refusal.code, &refusal.message);
                refusal.code.as_str()
            }
            (Ok(_), None) => "ignored",
            (Ok((report, _)), Some(weights)) => {
                let session = report.session_id;
                // Owned entries: futures borrowing the report would not be `Send` for
                // every lifetime, which spawning needs.
                let failures = futures::stream::iter(report.agreed)
                    .map(|(id, agreed)| async move {
                        self.update_expertise(&id, agreed, &weights).await
                    })
                    .buffer_unordered(WEIGHT_UPDATES_IN_FLIGHT)
                    .filter_map(|r| async move { r.err() })
                    .collect::<Vec<_>>()
                    .await;
                for refusal in &failures {
                    tracing::warn!(%session, error = %refusal, "expertise not updated");
                }
                if failures.is_empty() {
                    "applied"
                } else {
                    "partial"
                }
            }
        };
        count_request(AGREEMENT, outcome, started);
    }

    async fn update_expertise(
        &self,
        id: &AgentId,
        agreed: bool,
        weights: &WeightUpdate,
    ) -> Result<(), Refusal> {
        for _ in 0..MAX_ATTEMPTS {
            // Agents deregistered since the session have nothing to update.
            let Some(old) = self.store.snapshot(id).await?.agent else {
                return Ok(());
            };
            let mut agent = old.clone();
            agent.info.expertise = updated_expertise(old.info.expertise, agreed, weights);
            match self
                .store
                .put(Some(&old), &agent, None, None, Seen::Keep)
                .await?
            {
                Committed::Done => return Ok(()),
                Committed::Conflict => continue,
                Committed::Replay => return Err(StoreError::Script("replay".into()).into()),
            }
        }
        Err(contended(id))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mabeam_protocol::AgentKeypair;

    use super::*;

    fn registration() -> Registration {
        Registration {
            v: PROTOCOL_VERSION,
            agent_id: AgentId::new("a").unwrap(),
            kind: "llm".into(),
            capabilities: vec!["gpu".into(), "eval".into(), "gpu".into()],
            expertise: 2.0,
            public_key: AgentKeypair::from_secret_bytes([1; 32]).public_key(),
            metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn registrations_keep_capabilities_once_in_order() {
        assert_eq!(
            validate_registration(&registration()).unwrap(),
            ["gpu", "eval"]
        );
    }

    #[test]
    fn impossible_registrations_are_invalid_params() {
        type Damage = fn(&mut Registration);
        let cases: [(Damage, &str); 6] = [
            (|r| r.expertise = 0.0, "expertise"),
            (|r| r.expertise = f64::NAN, "expertise"),
            (|r| r.kind = "k".repeat(200), "kind"),
            (|r| r.capabilities = vec![String::new()], "capability"),
            (
                |r| r.capabilities = (0..100).map(|i| i.to_string()).collect(),
                "capabilities",
            ),
            (
                |r| {
                    r.metadata = (0..100).map(|i| (i.to_string(), String::new())).collect();
                },
                "metadata",
            ),
        ];
        for (damage, needle) in cases {
            let mut reg = registration();
            damage(&mut reg);
            let refusal = validate_registration(&reg).unwrap_err();
            assert_eq!(refusal.code, ErrorCode::InvalidParams);
            assert!(refusal.message.contains(needle), "{refusal}");
        }
    }

    #[test]
    fn query_filters_combine_with_and() {
        let info = AgentInfo {
            agent_id: AgentId::new("a").unwrap(),
            kind: String::new(),
            capabilities: vec!["gpu".into()],
            expertise: 1.0,
            public_key: AgentKeypair::from_secret_bytes([1; 32]).public_key(),
            status: AgentStatus::Active,
            registered_ms: 0,
            last_heartbeat_ms: None,
            load: 0.0,
            capacity: 0.0,
        };
        let query = |capability: Option<&str>, status| AgentQuery {
            capability: capability.map(str::to_owned),
            status,
            ..AgentQuery::default()
        };
        assert!(matches(&info, &query(None, None)));
        assert!(matches(
            &info,
            &query(Some("gpu"), Some(AgentStatus::Active))
        ));
        assert!(!matches(
            &info,
            &query(Some("cpu"), Some(AgentStatus::Active))
        ));
        assert!(!matches(
            &info,
            &query(Some("gpu"), Some(AgentStatus::Failed))
        ));
    }
}
