//! Every protocol message survives `encode` → `decode` unchanged, in MessagePack and in JSON.
//!
//! The strategies are hand-written and cover every variant of every enum a message nests;
//! the `const _` exhaustiveness guards below fail to compile when a variant is added without
//! a strategy for it.

// Test code: clippy.toml's allow-*-in-tests does not reach helpers outside `#[test]` fns.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::LazyLock;

use mabeam_protocol::{
    decode, encode,
    error::{ErrorBody, ErrorCode},
    fault::{
        ActiveFault, AgentBehaviour, AgentFaultCommand, FaultHeal, FaultKind, FaultList, FaultSpec,
        Link, LinkFault,
    },
    group::GroupMessage,
    registry::{
        AgentInfo, AgentList, AgentQuery, AgentStatus, AgreementReport, Deregistration, Heartbeat,
        Registration, RegistryAck,
    },
    result::{
        AlgorithmSwitch, Certificate, FaultReason, FaultyAgent, Outcome, RoundRecord, Status,
        TaskResult, Timings,
    },
    session::{
        Ballot, ElectorateMember, EquivocationEvidence, LiveSession, Phase, Proposal, RoundContext,
        SessionClosed, SessionQuery, SessionView, TaskState, VoteValue,
    },
    signing::EnvelopeHeader,
    task::{ParticipantSelector, Priority, TaskSubmission},
    telemetry::{AuditPage, AuditQuery, AuditRecord, EventKind, Service, TelemetryEvent},
    AgentId, AgentKeypair, ContentType, ErrorReply, Limits, Message, PublicKey, SessionId,
    SignedEnvelope, TaskId, PROTOCOL_VERSION,
};
use proptest::prelude::*;
use serde_json::Value;

// ---------------------------------------------------------------------------------------------
// Exhaustiveness guards: adding a variant breaks the build here until a strategy covers it.

const _: fn(&VoteValue) = |v| match v {
    VoteValue::Choice(_)
    | VoteValue::Ranking(_)
    | VoteValue::Number(_)
    | VoteValue::Vector(_)
    | VoteValue::Bid(_)
    | VoteValue::Offer { .. }
    | VoteValue::Load { .. }
    | VoteValue::Abstain => {}
};
const _: fn(&RoundContext) = |c| match c {
    RoundContext::Open
    | RoundContext::Byzantine { .. }
    | RoundContext::Refine { .. }
    | RoundContext::Counter { .. } => {}
};
const _: fn(&Outcome) = |o| match o {
    Outcome::Choice { .. }
    | Outcome::Value { .. }
    | Outcome::Award { .. }
    | Outcome::Leader { .. }
    | Outcome::Assignment { .. } => {}
};
const _: fn(&ParticipantSelector) = |p| match p {
    ParticipantSelector::Agents { .. }
    | ParticipantSelector::Capability { .. }
    | ParticipantSelector::All { .. } => {}
};
const _: fn(&FaultKind) = |k| match k {
    FaultKind::Agents { .. } | FaultKind::Partition { .. } | FaultKind::Link { .. } => {}
};
const _: fn(&AgentBehaviour) = |b| match b {
    AgentBehaviour::Crash
    | AgentBehaviour::Silent
    | AgentBehaviour::Slow { .. }
    | AgentBehaviour::Drop { .. }
    | AgentBehaviour::Corrupt
    | AgentBehaviour::Equivocate
    | AgentBehaviour::InvalidSignature
    | AgentBehaviour::Replay
    | AgentBehaviour::TimingAttack
    | AgentBehaviour::Coalition { .. }
    | AgentBehaviour::Adaptive => {}
};
const _: fn(&LinkFault) = |f| match f {
    LinkFault::Latency { .. }
    | LinkFault::Bandwidth { .. }
    | LinkFault::Reset
    | LinkFault::Blackhole
    | LinkFault::Slicing { .. } => {}
};
const _: fn(&EventKind) = |e| match e {
    EventKind::TaskAccepted { .. }
    | EventKind::TaskRejected { .. }
    | EventKind::TaskDeadLettered { .. }
    | EventKind::SessionStarted { .. }
    | EventKind::SessionResumed { .. }
    | EventKind::SessionFinished { .. }
    | EventKind::AlgorithmSwitched { .. }
    | EventKind::BallotRejected { .. }
    | EventKind::EquivocationDetected { .. }
    | EventKind::AgentStatusChanged { .. }
    | EventKind::FaultInjected { .. }
    | EventKind::FaultHealed { .. } => {}
};
const _: fn(&ErrorCode) = |c| match c {
    ErrorCode::MalformedMessage
    | ErrorCode::UnsupportedVersion
    | ErrorCode::UnsupportedContentType
    | ErrorCode::TooLarge
    | ErrorCode::UnknownAlgorithm
    | ErrorCode::InvalidParams
    | ErrorCode::NoParticipants
    | ErrorCode::UnknownParticipants
    | ErrorCode::InsufficientParticipants
    | ErrorCode::UnknownTask
    | ErrorCode::UnknownAgent
    | ErrorCode::KeyMismatch
    | ErrorCode::InvalidSignature
    | ErrorCode::Timeout
    | ErrorCode::Unavailable
    | ErrorCode::Unauthorized
    | ErrorCode::RateLimited
    | ErrorCode::Internal => {}
};
const _: fn(&AgentStatus) = |s| match s {
    AgentStatus::Registered
    | AgentStatus::Active
    | AgentStatus::Suspect
    | AgentStatus::Failed
    | AgentStatus::Recovered
    | AgentStatus::Quarantined => {}
};
const _: fn(&FaultReason) = |r| match r {
    FaultReason::Equivocation
    | FaultReason::InvalidSignature
    | FaultReason::Replay
    | FaultReason::MalformedBallot
    | FaultReason::Untimely
    | FaultReason::Silent => {}
};
const _: fn(&Status) = |s| match s {
    Status::Decided | Status::NoDecision | Status::Failed | Status::Rejected => {}
};
const _: fn(&Service) = |s| match s {
    Service::Registry
    | Service::Coordinator
    | Service::FaultInjector
    | Service::Telemetry
    | Service::Agent => {}
};
const _: fn(&Phase) = |p| match p {
    Phase::Vote | Phase::Prepare | Phase::Commit => {}
};
const _: fn(&Link) = |l| match l {
    Link::Nats | Link::Redis => {}
};
const _: fn(&TaskState) = |s| match s {
    TaskState::Queued | TaskState::Running | TaskState::Finished => {}
};

// ---------------------------------------------------------------------------------------------
// Leaves.

const ID_REGEX: &str = "[a-zA-Z0-9_:-]{1,24}";

fn agent_id() -> impl Strategy<Value = AgentId> {
    ID_REGEX.prop_map(|s| AgentId::new(s).unwrap())
}

fn task_id() -> impl Strategy<Value = TaskId> {
    ID_REGEX.prop_map(|s| TaskId::new(s).unwrap())
}

fn session_id() -> impl Strategy<Value = SessionId> {
    ID_REGEX.prop_map(|s| SessionId::new(s).unwrap())
}

/// Any text, including control characters, quotes and non-ASCII.
fn text() -> impl Strategy<Value = String> {
    "(?s).{0,12}"
}

/// Finite f64 only: ordinary magnitudes plus the whole finite range (subnormals, zeros, extremes).
fn finite() -> impl Strategy<Value = f64> {
    use proptest::num::f64 as f;
    prop_oneof![
        -1.0e6..1.0e6f64,
        0.0..=1.0f64,
        f::POSITIVE | f::NEGATIVE | f::NORMAL | f::SUBNORMAL | f::ZERO,
        Just(f64::MAX),
        Just(f64::MIN),
        Just(f64::MIN_POSITIVE),
        Just(-0.0),
    ]
}

fn finites() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(finite(), 0..5)
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 0..4)
}

fn agent_ids() -> impl Strategy<Value = Vec<AgentId>> {
    prop::collection::vec(agent_id(), 0..4)
}

/// JSON values without floats (see the note on `json_value`), nested up to 3 levels.
///
/// Floats are left out because a `serde_json::Value` number that is a float with an integral
/// value is not the same `Value` as the integer after some format round trips; the protocol
/// only promises to carry `Value` faithfully, and integers/strings/structure exercise that.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Key generation is slow in debug builds; a fixed pool of keypairs keeps the suite fast.
static KEYPAIRS: LazyLock<Vec<AgentKeypair>> = LazyLock::new(|| {
    (0u8..8)
        .map(|seed| AgentKeypair::from_secret_bytes([seed.wrapping_mul(37).wrapping_add(1); 32]))
        .collect()
});

fn keypair() -> impl Strategy<Value = AgentKeypair> {
    (0..KEYPAIRS.len()).prop_map(|i| KEYPAIRS[i].clone())
}

fn public_key() -> impl Strategy<Value = PublicKey> {
    keypair().prop_map(|k| k.public_key())
}

fn phase() -> impl Strategy<Value = Phase> {
    prop_oneof![Just(Phase::Vote), Just(Phase::Prepare), Just(Phase::Commit)]
}

fn status() -> impl Strategy<Value = Status> {
    prop_oneof![
        Just(Status::Decided),
        Just(Status::NoDecision),
        Just(Status::Failed),
        Just(Status::Rejected),
    ]
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::MalformedMessage,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnsupportedContentType,
        ErrorCode::TooLarge,
        ErrorCode::UnknownAlgorithm,
        ErrorCode::InvalidParams,
        ErrorCode::NoParticipants,
        ErrorCode::UnknownParticipants,
        ErrorCode::InsufficientParticipants,
        ErrorCode::UnknownTask,
        ErrorCode::UnknownAgent,
        ErrorCode::KeyMismatch,
        ErrorCode::InvalidSignature,
        ErrorCode::Timeout,
        ErrorCode::Unavailable,
        ErrorCode::Unauthorized,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
    ])
}

fn agent_status() -> impl Strategy<Value = AgentStatus> {
    prop::sample::select(vec![
        AgentStatus::Registered,
        AgentStatus::Active,
        AgentStatus::Suspect,
        AgentStatus::Failed,
        AgentStatus::Recovered,
        AgentStatus::Quarantined,
    ])
}

fn fault_reason() -> impl Strategy<Value = FaultReason> {
    prop::sample::select(vec![
        FaultReason::Equivocation,
        FaultReason::InvalidSignature,
        FaultReason::Replay,
        FaultReason::MalformedBallot,
        FaultReason::Untimely,
        FaultReason::Silent,
    ])
}

fn service() -> impl Strategy<Value = Service> {
    prop::sample::select(vec![
        Service::Registry,
        Service::Coordinator,
        Service::FaultInjector,
        Service::Telemetry,
        Service::Agent,
    ])
}

fn link() -> impl Strategy<Value = Link> {
    prop_oneof![Just(Link::Nats), Just(Link::Redis)]
}

fn task_state() -> impl Strategy<Value = TaskState> {
    prop_oneof![
        Just(TaskState::Queued),
        Just(TaskState::Running),
        Just(TaskState::Finished),
    ]
}

// ---------------------------------------------------------------------------------------------
// Task intake.

fn participant_selector() -> BoxedStrategy<ParticipantSelector> {
    prop_oneof![
        agent_ids().prop_map(|agents| ParticipantSelector::Agents { agents }),
        (text(), proptest::option::of(any::<u32>()))
            .prop_map(|(capability, count)| ParticipantSelector::Capability { capability, count }),
        any::<bool>().prop_map(|all| ParticipantSelector::All { all }),
    ]
    .boxed()
}

prop_compose! {
    fn task_submission()(
        task_id in proptest::option::of(task_id()),
        algorithm in text(),
        proposal in json_value(),
        options in texts(),
        participants in participant_selector(),
        params in json_value(),
        timeout_ms in proptest::option::of(any::<u64>()),
        priority in proptest::option::of(prop_oneof![Just(Priority::Normal), Just(Priority::High)]),
    ) -> TaskSubmission {
        TaskSubmission {
            v: PROTOCOL_VERSION,
            task_id,
            algorithm,
            proposal,
            options,
            participants,
            params,
            timeout_ms,
            priority,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sessions.

fn vote_value() -> BoxedStrategy<VoteValue> {
    prop_oneof![
        text().prop_map(VoteValue::Choice),
        texts().prop_map(VoteValue::Ranking),
        finite().prop_map(VoteValue::Number),
        finites().prop_map(VoteValue::Vector),
        finite().prop_map(VoteValue::Bid),
        (finite(), finite(), finite()).prop_map(|(value, min, max)| VoteValue::Offer {
            value,
            min,
            max
        }),
        (finite(), finite()).prop_map(|(load, capacity)| VoteValue::Load { load, capacity }),
        Just(VoteValue::Abstain),
    ]
    .boxed()
}

prop_compose! {
    fn ballot()(
        phase in phase(),
        value in vote_value(),
        confidence in finite(),
        reasoning in proptest::option::of(text()),
    ) -> Ballot {
        Ballot { v: PROTOCOL_VERSION, phase, value, confidence, reasoning }
    }
}

prop_compose! {
    fn electorate_member()(agent_id in agent_id(), public_key in public_key()) -> ElectorateMember {
        ElectorateMember { agent_id, public_key }
    }
}

fn round_context() -> BoxedStrategy<RoundContext> {
    prop_oneof![
        Just(RoundContext::Open),
        (
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(electorate_member(), 0..4),
            proptest::option::of(text()),
        )
            .prop_map(|(fault_tolerance, quorum, electorate, suggestion)| {
                RoundContext::Byzantine {
                    fault_tolerance,
                    quorum,
                    electorate,
                    suggestion,
                }
            }),
        (finites(), finite()).prop_map(|(aggregate, dispersion)| RoundContext::Refine {
            aggregate,
            dispersion
        }),
        finite().prop_map(|proposal| RoundContext::Counter { proposal }),
    ]
    .boxed()
}

prop_compose! {
    fn proposal()(
        task_id in task_id(),
        session_id in session_id(),
        algorithm in text(),
        round in any::<u32>(),
        phase in phase(),
        proposal in json_value(),
        options in texts(),
        deadline_ms in any::<u64>(),
        context in round_context(),
    ) -> Proposal {
        Proposal {
            v: PROTOCOL_VERSION,
            task_id,
            session_id,
            algorithm,
            round,
            phase,
            proposal,
            options,
            deadline_ms,
            context,
        }
    }
}

prop_compose! {
    fn session_closed()(task_id in task_id(), session_id in session_id(), status in status())
        -> SessionClosed {
        SessionClosed { v: PROTOCOL_VERSION, task_id, session_id, status }
    }
}

prop_compose! {
    fn envelope_header()(
        sender in agent_id(),
        session in session_id(),
        round in any::<u32>(),
        sequence in any::<u64>(),
        timestamp_ms in any::<u64>(),
    ) -> EnvelopeHeader {
        EnvelopeHeader { sender, session, round, sequence, timestamp_ms }
    }
}

prop_compose! {
    /// A ballot sealed by one of the pooled keys, with that key.
    fn sealed_ballot()(key in keypair(), header in envelope_header(), body in ballot())
        -> (SignedEnvelope, PublicKey, Ballot) {
        let envelope = SignedEnvelope::seal(&key, header, &body).unwrap();
        (envelope, key.public_key(), body)
    }
}

prop_compose! {
    /// An envelope as a hostile or buggy peer might send it: arbitrary payload and signature.
    fn raw_envelope()(
        header in envelope_header(),
        payload in prop::collection::vec(any::<u8>(), 0..48),
        signature in prop::collection::vec(any::<u8>(), 0..80),
    ) -> SignedEnvelope {
        SignedEnvelope {
            v: PROTOCOL_VERSION,
            sender: header.sender,
            session: header.session,
            round: header.round,
            sequence: header.sequence,
            timestamp_ms: header.timestamp_ms,
            payload,
            signature,
        }
    }
}

fn envelope() -> BoxedStrategy<SignedEnvelope> {
    prop_oneof![sealed_ballot().prop_map(|(e, _, _)| e), raw_envelope()].boxed()
}

prop_compose! {
    fn equivocation_evidence()(
        agent_id in agent_id(),
        session_id in session_id(),
        round in any::<u32>(),
        first in envelope(),
        second in envelope(),
    ) -> EquivocationEvidence {
        EquivocationEvidence { v: PROTOCOL_VERSION, agent_id, session_id, round, first, second }
    }
}

prop_compose! {
    fn session_query()(task_id in task_id()) -> SessionQuery {
        SessionQuery { v: PROTOCOL_VERSION, task_id }
    }
}

// ---------------------------------------------------------------------------------------------
// Results.

fn tally() -> impl Strategy<Value = BTreeMap<String, f64>> {
    prop::collection::btree_map(text(), finite(), 0..4)
}

fn outcome() -> BoxedStrategy<Outcome> {
    prop_oneof![
        (text(), finite(), tally()).prop_map(|(choice, support, tally)| Outcome::Choice {
            choice,
            support,
            tally
        }),
        (finites(), finite()).prop_map(|(value, dispersion)| Outcome::Value { value, dispersion }),
        (agent_id(), finite(), finite()).prop_map(|(winner, bid, price)| Outcome::Award {
            winner,
            bid,
            price
        }),
        agent_id().prop_map(|leader| Outcome::Leader { leader }),
        prop::collection::btree_map(text(), agent_id(), 0..4)
            .prop_map(|assignments| Outcome::Assignment { assignments }),
    ]
    .boxed()
}

prop_compose! {
    fn faulty_agent()(agent_id in agent_id(), reason in fault_reason()) -> FaultyAgent {
        FaultyAgent { agent_id, reason }
    }
}

prop_compose! {
    fn round_record()(
        round in any::<u32>(),
        stage in any::<u32>(),
        algorithm in text(),
        counted in any::<u32>(),
        tally in tally(),
        aggregate in proptest::option::of(finites()),
        dispersion in proptest::option::of(finite()),
        eliminated in texts(),
        exhausted in prop_oneof![Just(0u32), any::<u32>()],
        note in proptest::option::of(text()),
    ) -> RoundRecord {
        RoundRecord {
            round,
            stage,
            algorithm,
            counted,
            tally,
            aggregate,
            dispersion,
            eliminated,
            exhausted,
            note,
        }
    }
}

prop_compose! {
    fn algorithm_switch()(
        from in text(),
        to in text(),
        reason in text(),
        at_round in any::<u32>(),
        elapsed_ms in any::<u64>(),
    ) -> AlgorithmSwitch {
        AlgorithmSwitch { from, to, reason, at_round, elapsed_ms }
    }
}

prop_compose! {
    fn timings()(
        submitted_ms in proptest::option::of(any::<u64>()),
        started_ms in proptest::option::of(any::<u64>()),
        finished_ms in proptest::option::of(any::<u64>()),
        duration_ms in any::<u64>(),
    ) -> Timings {
        Timings { submitted_ms, started_ms, finished_ms, duration_ms }
    }
}

prop_compose! {
    fn error_body()(code in error_code(), message in text()) -> ErrorBody {
        ErrorBody { code, message }
    }
}

prop_compose! {
    fn certificate()(
        session_id in session_id(),
        round in any::<u32>(),
        value in text(),
        fault_tolerance in any::<u32>(),
        quorum in any::<u32>(),
        electorate in prop::collection::vec(electorate_member(), 0..4),
        commits in prop::collection::vec(envelope(), 0..3),
    ) -> Certificate {
        Certificate { session_id, round, value, fault_tolerance, quorum, electorate, commits }
    }
}

prop_compose! {
    fn task_result()(
        task_id in task_id(),
        session_id in proptest::option::of(session_id()),
        algorithm in text(),
        status in status(),
        outcome in proptest::option::of(outcome()),
        reason in proptest::option::of(text()),
        rounds in any::<u32>(),
        history in prop::collection::vec(round_record(), 0..3),
        switches in prop::collection::vec(algorithm_switch(), 0..3),
        participants in agent_ids(),
        faulty_detected in prop::collection::vec(faulty_agent(), 0..3),
        certificate in proptest::option::of(certificate()),
        error in proptest::option::of(error_body()),
        timings in timings(),
    ) -> TaskResult {
        TaskResult {
            v: PROTOCOL_VERSION,
            task_id,
            session_id,
            algorithm,
            status,
            outcome,
            reason,
            rounds,
            history,
            switches,
            participants,
            faulty_detected,
            certificate,
            error,
            timings,
        }
    }
}

prop_compose! {
    fn live_session()(
        session_id in session_id(),
        algorithm in text(),
        round in any::<u32>(),
        participants in any::<u32>(),
        started_ms in any::<u64>(),
        deadline_ms in any::<u64>(),
        owner in text(),
    ) -> LiveSession {
        LiveSession { session_id, algorithm, round, participants, started_ms, deadline_ms, owner }
    }
}

prop_compose! {
    fn session_view()(
        task_id in task_id(),
        state in task_state(),
        live in proptest::option::of(live_session()),
        result in proptest::option::of(task_result()),
    ) -> SessionView {
        SessionView { v: PROTOCOL_VERSION, task_id, state, live, result }
    }
}

prop_compose! {
    fn error_reply()(code in error_code(), message in text()) -> ErrorReply {
        ErrorReply { v: PROTOCOL_VERSION, code, message }
    }
}

// ---------------------------------------------------------------------------------------------
// Registry.

prop_compose! {
    fn registration()(
        agent_id in agent_id(),
        kind in text(),
        capabilities in texts(),
        expertise in finite(),
        public_key in public_key(),
        metadata in prop::collection::btree_map(text(), text(), 0..4),
    ) -> Registration {
        Registration {
            v: PROTOCOL_VERSION,
            agent_id,
            kind,
            capabilities,
            expertise,
            public_key,
            metadata,
        }
    }
}

prop_compose! {
    fn heartbeat()(agent_id in agent_id(), load in finite(), capacity in finite()) -> Heartbeat {
        Heartbeat { v: PROTOCOL_VERSION, agent_id, load, capacity }
    }
}

prop_compose! {
    fn deregistration()(agent_id in agent_id()) -> Deregistration {
        Deregistration { v: PROTOCOL_VERSION, agent_id }
    }
}

prop_compose! {
    fn agent_query()(
        capability in proptest::option::of(text()),
        status in proptest::option::of(agent_status()),
        agent_ids in agent_ids(),
        limit in proptest::option::of(any::<u32>()),
    ) -> AgentQuery {
        AgentQuery { v: PROTOCOL_VERSION, capability, status, agent_ids, limit }
    }
}

prop_compose! {
    fn agent_info()(
        agent_id in agent_id(),
        kind in text(),
        capabilities in texts(),
        expertise in finite(),
        public_key in public_key(),
        status in agent_status(),
        registered_ms in any::<u64>(),
        last_heartbeat_ms in proptest::option::of(any::<u64>()),
        load in finite(),
        capacity in finite(),
    ) -> AgentInfo {
        AgentInfo {
            agent_id,
            kind,
            capabilities,
            expertise,
            public_key,
            status,
            registered_ms,
            last_heartbeat_ms,
            load,
            capacity,
        }
    }
}

prop_compose! {
    fn agent_list()(agents in prop::collection::vec(agent_info(), 0..4)) -> AgentList {
        AgentList { v: PROTOCOL_VERSION, agents }
    }
}

prop_compose! {
    fn registry_ack()(agent_id in agent_id(), status in agent_status()) -> RegistryAck {
        RegistryAck { v: PROTOCOL_VERSION, agent_id, status }
    }
}

prop_compose! {
    fn agreement_report()(
        session_id in session_id(),
        agreed in prop::collection::btree_map(agent_id(), any::<bool>(), 0..4),
    ) -> AgreementReport {
        AgreementReport { v: PROTOCOL_VERSION, session_id, agreed }
    }
}

// ---------------------------------------------------------------------------------------------
// Faults.

fn agent_behaviour() -> BoxedStrategy<AgentBehaviour> {
    prop_oneof![
        Just(AgentBehaviour::Crash),
        Just(AgentBehaviour::Silent),
        (any::<u64>(), any::<u64>()).prop_map(|(delay_ms, jitter_ms)| AgentBehaviour::Slow {
            delay_ms,
            jitter_ms
        }),
        finite().prop_map(|percent| AgentBehaviour::Drop { percent }),
        Just(AgentBehaviour::Corrupt),
        Just(AgentBehaviour::Equivocate),
        Just(AgentBehaviour::InvalidSignature),
        Just(AgentBehaviour::Replay),
        Just(AgentBehaviour::TimingAttack),
        text().prop_map(|value| AgentBehaviour::Coalition { value }),
        Just(AgentBehaviour::Adaptive),
    ]
    .boxed()
}

fn link_fault() -> BoxedStrategy<LinkFault> {
    prop_oneof![
        (any::<u64>(), any::<u64>()).prop_map(|(latency_ms, jitter_ms)| LinkFault::Latency {
            latency_ms,
            jitter_ms
        }),
        any::<u64>().prop_map(|bytes_per_second| LinkFault::Bandwidth { bytes_per_second }),
        Just(LinkFault::Reset),
        Just(LinkFault::Blackhole),
        (any::<u32>(), any::<u64>()).prop_map(|(max_bytes, delay_us)| LinkFault::Slicing {
            max_bytes,
            delay_us
        }),
    ]
    .boxed()
}

fn fault_kind() -> BoxedStrategy<FaultKind> {
    prop_oneof![
        (agent_ids(), agent_behaviour())
            .prop_map(|(agents, behaviour)| FaultKind::Agents { agents, behaviour }),
        (
            prop::collection::vec(agent_ids(), 0..3),
            proptest::option::of(any::<u64>()),
        )
            .prop_map(|(groups, flap_ms)| FaultKind::Partition { groups, flap_ms }),
        (link(), link_fault()).prop_map(|(link, fault)| FaultKind::Link { link, fault }),
    ]
    .boxed()
}

prop_compose! {
    fn fault_spec()(
        id in proptest::option::of(text()),
        fault in fault_kind(),
        start_after_ms in any::<u64>(),
        duration_ms in proptest::option::of(any::<u64>()),
    ) -> FaultSpec {
        FaultSpec { v: PROTOCOL_VERSION, id, fault, start_after_ms, duration_ms }
    }
}

prop_compose! {
    fn fault_heal()(id in proptest::option::of(text())) -> FaultHeal {
        FaultHeal { v: PROTOCOL_VERSION, id }
    }
}

prop_compose! {
    fn active_fault()(
        id in text(),
        fault in fault_kind(),
        started_ms in any::<u64>(),
        ends_ms in proptest::option::of(any::<u64>()),
    ) -> ActiveFault {
        ActiveFault { id, fault, started_ms, ends_ms }
    }
}

prop_compose! {
    fn fault_list()(faults in prop::collection::vec(active_fault(), 0..4)) -> FaultList {
        FaultList { v: PROTOCOL_VERSION, faults }
    }
}

prop_compose! {
    fn agent_fault_command()(
        fault_id in text(),
        behaviour in proptest::option::of(agent_behaviour()),
        unreachable in agent_ids(),
        coordinator_unreachable in any::<bool>(),
    ) -> AgentFaultCommand {
        AgentFaultCommand { v: PROTOCOL_VERSION, fault_id, behaviour, unreachable, coordinator_unreachable }
    }
}

prop_compose! {
    fn group_message()(
        group in text(),
        from in text(),
        topic in text(),
        body in json_value(),
        sent_ms in any::<u64>(),
    ) -> GroupMessage {
        GroupMessage { v: PROTOCOL_VERSION, group, from, topic, body, sent_ms }
    }
}

// ---------------------------------------------------------------------------------------------
// Telemetry.

fn event_kind() -> BoxedStrategy<EventKind> {
    prop_oneof![
        (task_id(), text())
            .prop_map(|(task_id, algorithm)| EventKind::TaskAccepted { task_id, algorithm }),
        (proptest::option::of(task_id()), error_code(), text()).prop_map(
            |(task_id, code, message)| EventKind::TaskRejected {
                task_id,
                code,
                message
            }
        ),
        (proptest::option::of(task_id()), text(), any::<u64>()).prop_map(
            |(task_id, reason, deliveries)| EventKind::TaskDeadLettered {
                task_id,
                reason,
                deliveries
            }
        ),
        (task_id(), session_id(), text(), any::<u32>()).prop_map(
            |(task_id, session_id, algorithm, participants)| EventKind::SessionStarted {
                task_id,
                session_id,
                algorithm,
                participants,
            }
        ),
        (task_id(), session_id(), any::<u32>()).prop_map(|(task_id, session_id, log_entries)| {
            EventKind::SessionResumed {
                task_id,
                session_id,
                log_entries,
            }
        }),
        (
            task_id(),
            session_id(),
            text(),
            status(),
            any::<u32>(),
            any::<u64>(),
        )
            .prop_map(
                |(task_id, session_id, algorithm, status, rounds, duration_ms)| {
                    EventKind::SessionFinished {
                        task_id,
                        session_id,
                        algorithm,
                        status,
                        rounds,
                        duration_ms,
                    }
                }
            ),
        (session_id(), text(), text(), text()).prop_map(|(session_id, from, to, reason)| {
            EventKind::AlgorithmSwitched {
                session_id,
                from,
                to,
                reason,
            }
        }),
        (session_id(), agent_id(), fault_reason()).prop_map(|(session_id, agent_id, reason)| {
            EventKind::BallotRejected {
                session_id,
                agent_id,
                reason,
            }
        }),
        (
            session_id(),
            agent_id(),
            proptest::option::of(equivocation_evidence())
        )
            .prop_map(|(session_id, agent_id, evidence)| {
                EventKind::EquivocationDetected {
                    session_id,
                    agent_id,
                    evidence: evidence.map(Box::new),
                }
            }),
        (
            agent_id(),
            proptest::option::of(agent_status()),
            agent_status()
        )
            .prop_map(|(agent_id, from, to)| EventKind::AgentStatusChanged {
                agent_id,
                from,
                to
            }),
        (text(), text()).prop_map(|(fault_id, description)| EventKind::FaultInjected {
            fault_id,
            description
        }),
        text().prop_map(|fault_id| EventKind::FaultHealed { fault_id }),
    ]
    .boxed()
}

prop_compose! {
    fn telemetry_event()(
        service in service(),
        instance in text(),
        at_ms in any::<u64>(),
        event in event_kind(),
    ) -> TelemetryEvent {
        TelemetryEvent { v: PROTOCOL_VERSION, service, instance, at_ms, event }
    }
}

prop_compose! {
    fn audit_query()(
        task_id in proptest::option::of(task_id()),
        agent_id in proptest::option::of(agent_id()),
        since_ms in proptest::option::of(any::<u64>()),
        until_ms in proptest::option::of(any::<u64>()),
        limit in proptest::option::of(any::<u32>()),
    ) -> AuditQuery {
        AuditQuery { v: PROTOCOL_VERSION, task_id, agent_id, since_ms, until_ms, limit }
    }
}

prop_compose! {
    fn audit_record()(id in text(), event in telemetry_event()) -> AuditRecord {
        AuditRecord { id, event }
    }
}

prop_compose! {
    fn audit_page()(records in prop::collection::vec(audit_record(), 0..4)) -> AuditPage {
        AuditPage { v: PROTOCOL_VERSION, records }
    }
}

// ---------------------------------------------------------------------------------------------
// The properties.

/// Encodes `message` in both formats and decodes it back; both must equal the original,
/// floats bit for bit (the workspace enables serde_json's `float_roundtrip`).
fn assert_roundtrips<T: Message + PartialEq + Debug>(message: &T) -> Result<(), TestCaseError> {
    for content_type in [ContentType::MsgPack, ContentType::Json] {
        let bytes = encode(content_type, message)
            .map_err(|e| TestCaseError::fail(format!("{content_type:?} encode failed: {e}")))?;
        let decoded: T = decode(content_type, &bytes, &Limits::default()).map_err(|e| {
            TestCaseError::fail(format!(
                "{content_type:?} decode failed: {e}\nbytes: {}",
                String::from_utf8_lossy(&bytes)
            ))
        })?;
        prop_assert_eq!(
            &decoded,
            message,
            "{:?} round trip changed the message",
            content_type
        );
    }
    Ok(())
}

proptest! {
    #[test]
    fn task_submission_roundtrips_in_msgpack_and_json(message in task_submission()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn ballot_roundtrips_in_msgpack_and_json(message in ballot()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn proposal_roundtrips_in_msgpack_and_json(message in proposal()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn session_closed_roundtrips_in_msgpack_and_json(message in session_closed()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn equivocation_evidence_roundtrips_in_msgpack_and_json(message in equivocation_evidence()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn session_query_roundtrips_in_msgpack_and_json(message in session_query()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn task_result_roundtrips_in_msgpack_and_json(message in task_result()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn session_view_roundtrips_in_msgpack_and_json(message in session_view()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn error_reply_roundtrips_in_msgpack_and_json(message in error_reply()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn registration_roundtrips_in_msgpack_and_json(message in registration()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn heartbeat_roundtrips_in_msgpack_and_json(message in heartbeat()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn deregistration_roundtrips_in_msgpack_and_json(message in deregistration()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn agent_query_roundtrips_in_msgpack_and_json(message in agent_query()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn agent_list_roundtrips_in_msgpack_and_json(message in agent_list()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn registry_ack_roundtrips_in_msgpack_and_json(message in registry_ack()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn agreement_report_roundtrips_in_msgpack_and_json(message in agreement_report()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn fault_spec_roundtrips_in_msgpack_and_json(message in fault_spec()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn fault_heal_roundtrips_in_msgpack_and_json(message in fault_heal()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn fault_list_roundtrips_in_msgpack_and_json(message in fault_list()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn agent_fault_command_roundtrips_in_msgpack_and_json(message in agent_fault_command()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn group_message_roundtrips_in_msgpack_and_json(message in group_message()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn telemetry_event_roundtrips_in_msgpack_and_json(message in telemetry_event()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn audit_query_roundtrips_in_msgpack_and_json(message in audit_query()) {
        assert_roundtrips(&message)?;
    }

    #[test]
    fn audit_page_roundtrips_in_msgpack_and_json(message in audit_page()) {
        assert_roundtrips(&message)?;
    }

}

proptest! {
    // Sealing and verifying are slow in debug builds; 64 cases keep the run short.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn signed_envelope_roundtrips_in_msgpack_and_json_and_still_verifies(
        (envelope, key, body) in sealed_ballot(),
    ) {
        assert_roundtrips(&envelope)?;
        for content_type in [ContentType::MsgPack, ContentType::Json] {
            let bytes = encode(content_type, &envelope).unwrap();
            let decoded: SignedEnvelope =
                decode(content_type, &bytes, &Limits::default()).unwrap();
            prop_assert_eq!(decoded.verify(&key), Ok(()));
            let opened: Ballot = decoded.open(&Limits::default()).unwrap();
            prop_assert_eq!(&opened, &body);
        }
    }

    #[test]
    fn raw_signed_envelope_roundtrips_in_msgpack_and_json(envelope in raw_envelope()) {
        assert_roundtrips(&envelope)?;
    }

    /// Without serde_json's `float_roundtrip` about 30% of floats came back one ULP off.
    #[test]
    fn json_preserves_every_finite_f64_exactly(x in finite()) {
        let message = Heartbeat {
            v: PROTOCOL_VERSION,
            agent_id: AgentId::new("a").unwrap(),
            load: x,
            capacity: 0.0,
        };
        let bytes = encode(ContentType::Json, &message).unwrap();
        let decoded: Heartbeat = decode(ContentType::Json, &bytes, &Limits::default()).unwrap();
        prop_assert_eq!(decoded.load.to_bits(), x.to_bits());
    }
}
