//! Decoding hostile input: every decoder returns a typed `DecodeError` for garbage, truncated,
//! oversized, wrong-version and tampered input, and never panics.

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
    AgentId, AgentKeypair, ContentType, DecodeError, ErrorReply, Limits, Message, PublicKey,
    SessionId, SignedEnvelope, TaskId, PROTOCOL_VERSION,
};
use proptest::prelude::*;
use serde_json::json;

const BOTH: [ContentType; 2] = [ContentType::MsgPack, ContentType::Json];

/// Runs `bytes` through the decoder of every message type; returns each outcome with the
/// message kind, the decoded value reduced to its version.
fn decode_with_every_decoder(
    content_type: ContentType,
    bytes: &[u8],
    limits: &Limits,
) -> Vec<(&'static str, Result<u16, DecodeError>)> {
    fn one<T: Message>(
        content_type: ContentType,
        bytes: &[u8],
        limits: &Limits,
    ) -> (&'static str, Result<u16, DecodeError>) {
        (
            T::KIND,
            decode::<T>(content_type, bytes, limits).map(|m| m.version()),
        )
    }
    vec![
        one::<TaskSubmission>(content_type, bytes, limits),
        one::<Ballot>(content_type, bytes, limits),
        one::<Proposal>(content_type, bytes, limits),
        one::<SessionClosed>(content_type, bytes, limits),
        one::<EquivocationEvidence>(content_type, bytes, limits),
        one::<SessionQuery>(content_type, bytes, limits),
        one::<TaskResult>(content_type, bytes, limits),
        one::<SessionView>(content_type, bytes, limits),
        one::<ErrorReply>(content_type, bytes, limits),
        one::<Registration>(content_type, bytes, limits),
        one::<Heartbeat>(content_type, bytes, limits),
        one::<Deregistration>(content_type, bytes, limits),
        one::<AgentQuery>(content_type, bytes, limits),
        one::<AgentList>(content_type, bytes, limits),
        one::<RegistryAck>(content_type, bytes, limits),
        one::<AgreementReport>(content_type, bytes, limits),
        one::<FaultSpec>(content_type, bytes, limits),
        one::<FaultHeal>(content_type, bytes, limits),
        one::<FaultList>(content_type, bytes, limits),
        one::<AgentFaultCommand>(content_type, bytes, limits),
        one::<GroupMessage>(content_type, bytes, limits),
        one::<TelemetryEvent>(content_type, bytes, limits),
        one::<AuditQuery>(content_type, bytes, limits),
        one::<AuditPage>(content_type, bytes, limits),
        one::<SignedEnvelope>(content_type, bytes, limits),
    ]
}

// ---------------------------------------------------------------------------------------------
// One valid message of every type, varied by a few generated parameters.

#[derive(Debug, Clone)]
struct Params {
    id: String,
    text: String,
    n: u64,
    x: f64,
}

prop_compose! {
    fn params()(
        id in "[a-zA-Z0-9_:-]{1,24}",
        text in "(?s).{0,12}",
        n in any::<u64>(),
        // Short dyadic values: exact in JSON even without serde_json's `float_roundtrip`
        // (see the note in roundtrip.rs), so a whole message decodes to itself.
        x in (-1_000_000_000i64..1_000_000_000).prop_map(|i| i as f64 / 8.0),
    ) -> Params {
        Params { id, text, n, x }
    }
}

static KEY: LazyLock<AgentKeypair> = LazyLock::new(|| AgentKeypair::from_secret_bytes([7; 32]));

/// Two envelopes sealed once (signing is slow in debug builds): commits for "a" and "b".
static ENVELOPES: LazyLock<[SignedEnvelope; 2]> = LazyLock::new(|| {
    ["a", "b"].map(|choice| {
        let header = EnvelopeHeader {
            sender: AgentId::new("agent-1").unwrap(),
            session: SessionId::new("session-1").unwrap(),
            round: 3,
            sequence: 42,
            timestamp_ms: 1_700_000_000_000,
        };
        let ballot = Ballot::new(Phase::Commit, VoteValue::Choice(choice.into()), 0.75);
        SignedEnvelope::seal(&KEY, header, &ballot).unwrap()
    })
});

fn public_key() -> PublicKey {
    KEY.public_key()
}

/// Something that is handed one message of every type in turn.
trait Visitor {
    fn visit<T: Message + Debug + PartialEq>(&mut self, message: T) -> Result<(), TestCaseError>;
}

/// Calls `visitor` with one message of every type, all with protocol version `v`.
fn visit_samples(p: &Params, v: u16, visitor: &mut impl Visitor) -> Result<(), TestCaseError> {
    let agent = AgentId::new(p.id.clone()).unwrap();
    let task = TaskId::new(p.id.clone()).unwrap();
    let session = SessionId::new(p.id.clone()).unwrap();
    let pick = |k: u64| p.n % k;
    let member = ElectorateMember {
        agent_id: agent.clone(),
        public_key: public_key(),
    };
    let [first, second] = ENVELOPES.clone();

    visitor.visit(TaskSubmission {
        v,
        task_id: (pick(2) == 0).then(|| task.clone()),
        algorithm: p.text.clone(),
        proposal: json!({"text": p.text, "n": p.n, "list": [1, -2, null, true]}),
        options: vec![p.text.clone(), "b".into()],
        participants: match pick(3) {
            0 => ParticipantSelector::Agents {
                agents: vec![agent.clone()],
            },
            1 => ParticipantSelector::Capability {
                capability: p.text.clone(),
                count: Some(5),
            },
            _ => ParticipantSelector::All { all: true },
        },
        params: json!({"rounds": p.n}),
        timeout_ms: Some(p.n),
        priority: (pick(2) == 0).then_some(Priority::High),
    })?;
    visitor.visit(Ballot {
        v,
        phase: Phase::Prepare,
        value: match pick(8) {
            0 => VoteValue::Choice(p.text.clone()),
            1 => VoteValue::Ranking(vec![p.text.clone(), "x".into()]),
            2 => VoteValue::Number(p.x),
            3 => VoteValue::Vector(vec![p.x, 1.5]),
            4 => VoteValue::Bid(p.x),
            5 => VoteValue::Offer {
                value: p.x,
                min: -1.0,
                max: 1.0,
            },
            6 => VoteValue::Load {
                load: p.x,
                capacity: 2.0,
            },
            _ => VoteValue::Abstain,
        },
        confidence: 0.5,
        reasoning: Some(p.text.clone()),
    })?;
    visitor.visit(Proposal {
        v,
        task_id: task.clone(),
        session_id: session.clone(),
        algorithm: p.text.clone(),
        round: 2,
        phase: Phase::Vote,
        proposal: json!([p.text, p.n]),
        options: vec!["a".into(), "b".into()],
        deadline_ms: p.n,
        context: match pick(4) {
            0 => RoundContext::Open,
            1 => RoundContext::Byzantine {
                fault_tolerance: 1,
                quorum: 3,
                electorate: vec![member.clone()],
                suggestion: Some(p.text.clone()),
            },
            2 => RoundContext::Refine {
                aggregate: vec![p.x],
                dispersion: 0.25,
            },
            _ => RoundContext::Counter { proposal: p.x },
        },
    })?;
    visitor.visit(SessionClosed {
        v,
        task_id: task.clone(),
        session_id: session.clone(),
        status: Status::NoDecision,
    })?;
    visitor.visit(EquivocationEvidence {
        v,
        agent_id: agent.clone(),
        session_id: session.clone(),
        round: 3,
        first: first.clone(),
        second: second.clone(),
    })?;
    visitor.visit(SessionQuery {
        v,
        task_id: task.clone(),
    })?;
    let result = TaskResult {
        v,
        task_id: task.clone(),
        session_id: Some(session.clone()),
        algorithm: p.text.clone(),
        status: Status::Decided,
        outcome: Some(match pick(5) {
            0 => Outcome::Choice {
                choice: p.text.clone(),
                support: 0.75,
                tally: BTreeMap::from([(p.text.clone(), p.x)]),
            },
            1 => Outcome::Value {
                value: vec![p.x],
                dispersion: 0.5,
            },
            2 => Outcome::Award {
                winner: agent.clone(),
                bid: p.x,
                price: 1.0,
            },
            3 => Outcome::Leader {
                leader: agent.clone(),
            },
            _ => Outcome::Assignment {
                assignments: BTreeMap::from([(p.text.clone(), agent.clone())]),
            },
        }),
        reason: Some(p.text.clone()),
        rounds: 1,
        history: vec![RoundRecord {
            round: 1,
            algorithm: p.text.clone(),
            counted: 4,
            tally: BTreeMap::from([("a".to_owned(), 3.0)]),
            aggregate: Some(vec![p.x]),
            dispersion: Some(0.5),
            eliminated: vec!["c".into()],
            exhausted: 1,
            note: Some(p.text.clone()),
            ..RoundRecord::default()
        }],
        switches: vec![AlgorithmSwitch {
            from: "majority".into(),
            to: "byzantine".into(),
            reason: p.text.clone(),
            at_round: 1,
            elapsed_ms: p.n,
        }],
        participants: vec![agent.clone()],
        faulty_detected: vec![FaultyAgent {
            agent_id: agent.clone(),
            reason: FaultReason::Equivocation,
        }],
        certificate: Some(Certificate {
            session_id: session.clone(),
            round: 3,
            value: "a".into(),
            fault_tolerance: 0,
            quorum: 1,
            electorate: vec![member.clone()],
            commits: vec![first.clone()],
        }),
        error: Some(ErrorBody {
            code: ErrorCode::Timeout,
            message: p.text.clone(),
        }),
        timings: Timings {
            submitted_ms: Some(p.n),
            started_ms: None,
            finished_ms: Some(1),
            duration_ms: 5,
        },
    };
    visitor.visit(result.clone())?;
    visitor.visit(SessionView {
        v,
        task_id: task.clone(),
        state: match pick(3) {
            0 => TaskState::Queued,
            1 => TaskState::Running,
            _ => TaskState::Finished,
        },
        live: Some(LiveSession {
            session_id: session.clone(),
            algorithm: p.text.clone(),
            round: 2,
            participants: 7,
            started_ms: p.n,
            deadline_ms: p.n,
            owner: p.text.clone(),
        }),
        result: Some(result),
    })?;
    visitor.visit(ErrorReply {
        v,
        code: ErrorCode::InvalidParams,
        message: p.text.clone(),
    })?;
    visitor.visit(Registration {
        v,
        agent_id: agent.clone(),
        kind: p.text.clone(),
        capabilities: vec!["gpu".into()],
        expertise: p.x,
        public_key: public_key(),
        metadata: BTreeMap::from([(p.text.clone(), p.id.clone())]),
    })?;
    visitor.visit(Heartbeat {
        v,
        agent_id: agent.clone(),
        load: p.x,
        capacity: 8.0,
    })?;
    visitor.visit(Deregistration {
        v,
        agent_id: agent.clone(),
    })?;
    visitor.visit(AgentQuery {
        v,
        capability: Some(p.text.clone()),
        status: Some(AgentStatus::Suspect),
        agent_ids: vec![agent.clone()],
        limit: Some(10),
    })?;
    visitor.visit(AgentList {
        v,
        agents: vec![AgentInfo {
            agent_id: agent.clone(),
            kind: p.text.clone(),
            capabilities: vec!["gpu".into()],
            expertise: 1.0,
            public_key: public_key(),
            status: AgentStatus::Active,
            registered_ms: p.n,
            last_heartbeat_ms: Some(p.n),
            load: p.x,
            capacity: 4.0,
        }],
    })?;
    visitor.visit(RegistryAck {
        v,
        agent_id: agent.clone(),
        status: AgentStatus::Recovered,
    })?;
    visitor.visit(AgreementReport {
        v,
        session_id: session.clone(),
        agreed: BTreeMap::from([(agent.clone(), pick(2) == 0)]),
    })?;
    let behaviour = match pick(11) {
        0 => AgentBehaviour::Crash,
        1 => AgentBehaviour::Silent,
        2 => AgentBehaviour::Slow {
            delay_ms: p.n,
            jitter_ms: 5,
        },
        3 => AgentBehaviour::Drop { percent: p.x },
        4 => AgentBehaviour::Corrupt,
        5 => AgentBehaviour::Equivocate,
        6 => AgentBehaviour::InvalidSignature,
        7 => AgentBehaviour::Replay,
        8 => AgentBehaviour::TimingAttack,
        9 => AgentBehaviour::Coalition {
            value: p.text.clone(),
        },
        _ => AgentBehaviour::Adaptive,
    };
    let fault = match pick(3) {
        0 => FaultKind::Agents {
            agents: vec![agent.clone()],
            behaviour: behaviour.clone(),
        },
        1 => FaultKind::Partition {
            groups: vec![vec![agent.clone()], vec![]],
            flap_ms: Some(p.n),
        },
        _ => FaultKind::Link {
            link: if p.n.is_multiple_of(2) {
                Link::Nats
            } else {
                Link::Redis
            },
            fault: match pick(5) {
                0 => LinkFault::Latency {
                    latency_ms: p.n,
                    jitter_ms: 1,
                },
                1 => LinkFault::Bandwidth {
                    bytes_per_second: p.n,
                },
                2 => LinkFault::Reset,
                3 => LinkFault::Blackhole,
                _ => LinkFault::Slicing {
                    max_bytes: 16,
                    delay_us: p.n,
                },
            },
        },
    };
    visitor.visit(FaultSpec {
        v,
        id: Some(p.text.clone()),
        fault: fault.clone(),
        start_after_ms: p.n,
        duration_ms: Some(1000),
    })?;
    visitor.visit(FaultHeal {
        v,
        id: Some(p.text.clone()),
    })?;
    visitor.visit(FaultList {
        v,
        faults: vec![ActiveFault {
            id: p.text.clone(),
            fault,
            started_ms: p.n,
            ends_ms: Some(p.n),
        }],
    })?;
    visitor.visit(AgentFaultCommand {
        v,
        fault_id: p.text.clone(),
        behaviour: Some(behaviour),
        unreachable: vec![agent.clone()],
        coordinator_unreachable: true,
    })?;
    visitor.visit(GroupMessage {
        v,
        group: p.text.clone(),
        from: agent.to_string(),
        topic: p.text.clone(),
        body: json!({"text": p.text, "n": p.n}),
        sent_ms: p.n,
    })?;
    let event = TelemetryEvent {
        v,
        service: Service::Coordinator,
        instance: p.text.clone(),
        at_ms: p.n,
        event: match pick(11) {
            0 => EventKind::TaskAccepted {
                task_id: task.clone(),
                algorithm: p.text.clone(),
            },
            1 => EventKind::TaskRejected {
                task_id: Some(task.clone()),
                code: ErrorCode::UnknownAlgorithm,
                message: p.text.clone(),
            },
            2 => EventKind::SessionStarted {
                task_id: task.clone(),
                session_id: session.clone(),
                algorithm: p.text.clone(),
                participants: 5,
            },
            3 => EventKind::SessionFinished {
                task_id: task.clone(),
                session_id: session.clone(),
                algorithm: p.text.clone(),
                status: Status::Failed,
                rounds: 2,
                duration_ms: p.n,
            },
            4 => EventKind::AlgorithmSwitched {
                session_id: session.clone(),
                from: "a".into(),
                to: "b".into(),
                reason: p.text.clone(),
            },
            5 => EventKind::BallotRejected {
                session_id: session.clone(),
                agent_id: agent.clone(),
                reason: FaultReason::Replay,
            },
            6 => EventKind::EquivocationDetected {
                session_id: session.clone(),
                agent_id: agent.clone(),
                evidence: None,
            },
            7 => EventKind::AgentStatusChanged {
                agent_id: agent.clone(),
                from: Some(AgentStatus::Active),
                to: AgentStatus::Quarantined,
            },
            8 => EventKind::FaultInjected {
                fault_id: p.text.clone(),
                description: p.text.clone(),
            },
            9 => EventKind::TaskDeadLettered {
                task_id: Some(task.clone()),
                reason: p.text.clone(),
                deliveries: p.n,
            },
            _ => EventKind::FaultHealed {
                fault_id: p.text.clone(),
            },
        },
    };
    visitor.visit(event.clone())?;
    visitor.visit(AuditQuery {
        v,
        task_id: (pick(2) == 0).then(|| task.clone()),
        agent_id: Some(agent.clone()),
        since_ms: Some(p.n / 2),
        until_ms: Some(p.n),
        limit: Some(100),
    })?;
    visitor.visit(AuditPage {
        v,
        records: vec![AuditRecord {
            id: format!("{}-0", p.n),
            event,
        }],
    })?;
    let mut envelope = first;
    envelope.v = v;
    visitor.visit(envelope)?;
    Ok(())
}

/// Encodes every sample in both formats, as (content type, message kind, bytes).
fn encoded_samples(p: &Params) -> Vec<(ContentType, &'static str, Vec<u8>)> {
    struct Collect(Vec<(ContentType, &'static str, Vec<u8>)>);
    impl Visitor for Collect {
        fn visit<T: Message + Debug + PartialEq>(
            &mut self,
            message: T,
        ) -> Result<(), TestCaseError> {
            for content_type in BOTH {
                self.0.push((
                    content_type,
                    T::KIND,
                    encode(content_type, &message).unwrap(),
                ));
            }
            Ok(())
        }
    }
    let mut collect = Collect(Vec::new());
    visit_samples(p, PROTOCOL_VERSION, &mut collect).unwrap();
    collect.0
}

/// Byte-level damage to a valid message: overwrite, insert, delete, flip bits.
#[derive(Debug, Clone)]
enum Mutation {
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Flip(prop::sample::Index, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, bit)| Mutation::Flip(i, bit)),
    ]
}

fn apply(bytes: &mut Vec<u8>, mutation: &Mutation) {
    if bytes.is_empty() {
        return;
    }
    match mutation {
        Mutation::Set(i, b) => {
            let i = i.index(bytes.len());
            bytes[i] = *b;
        }
        Mutation::Insert(i, b) => {
            let i = i.index(bytes.len() + 1);
            bytes.insert(i, *b);
        }
        Mutation::Remove(i) => {
            let i = i.index(bytes.len());
            bytes.remove(i);
        }
        Mutation::Flip(i, bit) => {
            let i = i.index(bytes.len());
            bytes[i] ^= 1 << bit;
        }
    }
}

/// The outcomes allowed for hostile input under the size limit: a message of this build's
/// version, `Malformed`, `UnsupportedVersion`, or `Empty` for empty input.
fn check_outcome(
    kind: &str,
    bytes: &[u8],
    outcome: &Result<u16, DecodeError>,
) -> Result<(), TestCaseError> {
    match outcome {
        Ok(v) => prop_assert_eq!(
            *v,
            PROTOCOL_VERSION,
            "{} decoded with another version",
            kind
        ),
        Err(DecodeError::Empty) => prop_assert!(bytes.is_empty(), "{kind}: Empty for {bytes:?}"),
        Err(DecodeError::Malformed { .. }) | Err(DecodeError::UnsupportedVersion { .. }) => {}
        Err(e) => prop_assert!(false, "{kind}: unexpected error {e:?}"),
    }
    Ok(())
}

fn content_type() -> impl Strategy<Value = ContentType> {
    prop_oneof![Just(ContentType::MsgPack), Just(ContentType::Json)]
}

proptest! {
    #[test]
    fn random_bytes_never_panic_any_decoder(
        bytes in prop::collection::vec(any::<u8>(), 0..=4096),
    ) {
        for content_type in BOTH {
            for (kind, outcome) in decode_with_every_decoder(content_type, &bytes, &Limits::default()) {
                check_outcome(kind, &bytes, &outcome)?;
            }
        }
    }

    /// Random bytes rarely get past the first byte; damaged valid messages reach deep into the
    /// decoders (tagged enums, ids, keys, byte strings).
    #[test]
    fn mutated_messages_never_panic_any_decoder(
        p in params(),
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..6),
    ) {
        let samples = encoded_samples(&p);
        let (content_type, _, mut bytes) = samples[which.index(samples.len())].clone();
        for m in &mutations {
            apply(&mut bytes, m);
        }
        for (kind, outcome) in decode_with_every_decoder(content_type, &bytes, &Limits::default()) {
            check_outcome(kind, &bytes, &outcome)?;
        }
    }
}

proptest! {
    // Each case decodes every prefix of 48 encodings, so few cases keep the debug run short;
    // the enum variants the samples pick vary between runs (every variant is covered on
    // each run by the round-trip properties in roundtrip.rs).
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn truncated_messages_give_typed_errors(p in params()) {
        struct Truncate;
        impl Visitor for Truncate {
            fn visit<T: Message + Debug + PartialEq>(
                &mut self,
                message: T,
            ) -> Result<(), TestCaseError> {
                for content_type in BOTH {
                    let bytes = encode(content_type, &message).unwrap();
                    let whole = decode::<T>(content_type, &bytes, &Limits::default());
                    prop_assert_eq!(whole.as_ref(), Ok(&message), "{:?}", content_type);
                    for len in 0..bytes.len() {
                        match decode::<T>(content_type, &bytes[..len], &Limits::default()) {
                            Err(DecodeError::Empty) => prop_assert_eq!(len, 0),
                            Err(DecodeError::Malformed { kind, .. }) => {
                                prop_assert_eq!(kind, T::KIND);
                            }
                            other => prop_assert!(
                                false,
                                "{} {:?} truncated to {} of {} bytes gave {:?}",
                                T::KIND,
                                content_type,
                                len,
                                bytes.len(),
                                other
                            ),
                        }
                    }
                }
                Ok(())
            }
        }
        visit_samples(&p, PROTOCOL_VERSION, &mut Truncate)?;
    }
}

proptest! {
    #[test]
    fn oversized_input_is_refused_before_parsing(
        p in params(),
        which in any::<prop::sample::Index>(),
        limit_at in any::<prop::sample::Index>(),
        garbage in any::<bool>(),
    ) {
        let samples = encoded_samples(&p);
        let (content_type, _, mut bytes) = samples[which.index(samples.len())].clone();
        if garbage {
            // Refused on size alone: the content does not matter.
            bytes.iter_mut().for_each(|b| *b = 0xc1);
        }
        let limit = limit_at.index(bytes.len());
        let limits = Limits { max_message_bytes: limit };
        for (kind, outcome) in decode_with_every_decoder(content_type, &bytes, &limits) {
            prop_assert_eq!(
                outcome,
                Err(DecodeError::TooLarge { size: bytes.len(), limit }),
                "{}",
                kind
            );
        }
        // Exactly at the limit it is accepted.
        if !garbage {
            let exact = Limits { max_message_bytes: bytes.len() };
            let decoded = decode_with_every_decoder(content_type, &bytes, &exact);
            prop_assert!(decoded.iter().any(|(_, outcome)| outcome.is_ok()));
        }
    }

    #[test]
    fn wrong_version_is_reported_as_unsupported_version(
        p in params(),
        v in prop_oneof![Just(0u16), 2u16..=u16::MAX],
    ) {
        struct WrongVersion(u16);
        impl Visitor for WrongVersion {
            fn visit<T: Message + Debug + PartialEq>(
                &mut self,
                message: T,
            ) -> Result<(), TestCaseError> {
                for content_type in BOTH {
                    let bytes = encode(content_type, &message).unwrap();
                    prop_assert_eq!(
                        decode::<T>(content_type, &bytes, &Limits::default()),
                        Err(DecodeError::UnsupportedVersion {
                            kind: T::KIND,
                            found: self.0,
                            supported: PROTOCOL_VERSION,
                        }),
                        "{:?}",
                        content_type
                    );
                }
                Ok(())
            }
        }
        visit_samples(&p, v, &mut WrongVersion(v))?;
    }

    /// A newer peer may change a message's shape; its version, not "malformed", is reported.
    #[test]
    fn newer_version_with_unknown_shape_is_reported_as_unsupported_version(
        v in 2u16..=u16::MAX,
        content_type in content_type(),
    ) {
        let body = json!({"v": v, "a_field_from_the_future": [1, 2, 3]});
        let bytes = match content_type {
            ContentType::Json => serde_json::to_vec(&body).unwrap(),
            ContentType::MsgPack => rmp_serde::to_vec_named(&body).unwrap(),
        };
        for (kind, outcome) in decode_with_every_decoder(content_type, &bytes, &Limits::default()) {
            match outcome {
                Err(DecodeError::UnsupportedVersion { found, supported, .. }) => {
                    prop_assert_eq!(found, v, "{}", kind);
                    prop_assert_eq!(supported, PROTOCOL_VERSION);
                }
                other => prop_assert!(false, "{kind}: {other:?}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plain tests.

#[test]
fn json_task_without_v_and_task_id_decodes_with_version_1() {
    let bytes = br#"{"algorithm": "majority", "participants": {"all": true}}"#;
    let task: TaskSubmission = decode(ContentType::Json, bytes, &Limits::default()).unwrap();
    assert_eq!(task.v, PROTOCOL_VERSION);
    assert_eq!(task.task_id, None);
    assert_eq!(task.algorithm, "majority");
    assert_eq!(task.participants, ParticipantSelector::All { all: true });
    assert_eq!(task.proposal, serde_json::Value::Null);
    assert_eq!(task.params, serde_json::Value::Null);
    assert!(task.options.is_empty());
    assert_eq!(task.timeout_ms, None);
}

#[test]
fn unknown_content_type_header_is_unsupported_content_type() {
    for header in [
        "text/plain",
        "application/xml; charset=utf-8",
        "json",
        "*/*",
    ] {
        assert_eq!(
            ContentType::from_header(Some(header)),
            Err(DecodeError::UnsupportedContentType(header.to_owned())),
            "{header}"
        );
    }
}

#[test]
fn content_type_header_parameters_case_and_absence_are_handled() {
    let cases = [
        (Some("application/json; charset=utf-8"), ContentType::Json),
        (Some("Application/JSON"), ContentType::Json),
        (Some(" application/json ;charset=UTF-8"), ContentType::Json),
        (Some("text/json"), ContentType::Json),
        (Some("application/msgpack"), ContentType::MsgPack),
        (Some("application/x-msgpack"), ContentType::MsgPack),
        (Some("application/vnd.msgpack"), ContentType::MsgPack),
        (None, ContentType::MsgPack),
    ];
    for (header, expected) in cases {
        assert_eq!(ContentType::from_header(header), Ok(expected), "{header:?}");
    }
    for content_type in BOTH {
        assert_eq!(
            ContentType::from_header(Some(content_type.header_value())),
            Ok(content_type)
        );
    }
}

#[test]
fn dotted_id_in_json_task_is_malformed_and_names_the_character() {
    let bytes = br#"{"task_id": "a.b", "algorithm": "majority", "participants": {"all": true}}"#;
    match decode::<TaskSubmission>(ContentType::Json, bytes, &Limits::default()) {
        Err(DecodeError::Malformed {
            format,
            kind,
            detail,
        }) => {
            assert_eq!(format, "json");
            assert_eq!(kind, "task submission");
            assert!(detail.contains("'.'"), "{detail}");
            assert!(detail.contains("a.b"), "{detail}");
        }
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn dotted_agent_id_in_participants_is_malformed() {
    let bytes = br#"{"algorithm": "majority", "participants": {"agents": ["ok", "x.y"]}}"#;
    let err = decode::<TaskSubmission>(ContentType::Json, bytes, &Limits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("contains '.'"), "{err}");
}

#[test]
fn mixed_or_empty_participant_selectors_say_what_is_expected() {
    for (body, needle) in [
        (r#"{"agents": ["a"], "all": true}"#, "exactly one of"),
        (r#"{}"#, "must name agents"),
        (r#"{"everyone": true}"#, "unknown field"),
    ] {
        let task = format!(r#"{{"algorithm": "majority", "participants": {body}}}"#);
        let err = decode::<TaskSubmission>(ContentType::Json, task.as_bytes(), &Limits::default())
            .unwrap_err();
        assert!(err.to_string().contains(needle), "{body}: {err}");
    }
}

#[test]
fn bit_flipped_signed_envelope_fails_verify() {
    let key = KEY.public_key();
    let original = ENVELOPES[0].clone();
    original.verify(&key).unwrap();
    let mut checked = 0;
    // Payload and signature, one bit per byte, rotating through the bit positions
    // (verification is slow in debug builds; the header fields are covered by the unit tests).
    let fields: [fn(&mut SignedEnvelope) -> &mut Vec<u8>; 2] =
        [|e| &mut e.payload, |e| &mut e.signature];
    for (field, target) in fields.iter().enumerate() {
        for byte in 0..target(&mut original.clone()).len() {
            let mut tampered = original.clone();
            target(&mut tampered)[byte] ^= 1 << (byte % 8);
            assert!(tampered.verify(&key).is_err(), "field {field} byte {byte}");
            checked += 1;
        }
    }
    // Bits flipped on the wire: whatever still decodes must not verify unless it decoded to
    // the very same envelope.
    for content_type in BOTH {
        let bytes = encode(content_type, &original).unwrap();
        // JSON spells the byte fields as long arrays of numbers: every fifth byte suffices.
        let step = if content_type == ContentType::Json {
            5
        } else {
            1
        };
        for byte in (0..bytes.len()).step_by(step) {
            let mut flipped = bytes.clone();
            flipped[byte] ^= 1 << (byte % 8);
            if let Ok(decoded) =
                decode::<SignedEnvelope>(content_type, &flipped, &Limits::default())
            {
                if decoded != original {
                    assert!(
                        decoded.verify(&key).is_err(),
                        "{content_type:?} byte {byte}"
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} tampered envelopes checked");
}

/// MessagePack `{"algorithm": "m", "participants": {"all": true}, <field>: [[[...nil...]]]}`
/// with `depth` nested arrays, as a TaskSubmission (`field` = "proposal", a JSON value) or
/// with an unknown field every decoder must skip.
fn nested_msgpack_task(field: &str, depth: usize) -> Vec<u8> {
    let mut bytes = vec![0x83];
    for s in ["algorithm", "m", "participants"] {
        bytes.extend(rmp_serde::to_vec(s).unwrap());
    }
    bytes.push(0x81);
    bytes.extend(rmp_serde::to_vec("all").unwrap());
    bytes.push(0xc3);
    bytes.extend(rmp_serde::to_vec(field).unwrap());
    bytes.extend(std::iter::repeat_n(0x91, depth)); // fixarray of one element
    bytes.push(0xc0); // nil
    bytes
}

/// Runs `f` on a thread with `stack` bytes of stack and returns its result.
fn on_stack<R: Send + 'static>(stack: usize, f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn deeply_nested_input_is_refused_as_malformed() {
    // A big stack so that this test checks the depth limits, not the stack size (for that
    // see `nesting_up_to_the_msgpack_depth_limit_fits_a_2_mib_stack`).
    on_stack(64 << 20, || {
        for depth in [5_000, 100_000] {
            for field in ["proposal", "unknown_field"] {
                let bytes = nested_msgpack_task(field, depth);
                for (kind, outcome) in
                    decode_with_every_decoder(ContentType::MsgPack, &bytes, &Limits::default())
                {
                    assert!(
                        matches!(outcome, Err(DecodeError::Malformed { .. })),
                        "msgpack {field} depth {depth} {kind}: {outcome:?}"
                    );
                }
            }
            let json = format!(
                r#"{{"algorithm": "m", "participants": {{"all": true}}, "proposal": {}{}}}"#,
                "[".repeat(depth),
                "]".repeat(depth)
            );
            let task =
                decode::<TaskSubmission>(ContentType::Json, json.as_bytes(), &Limits::default());
            assert!(
                matches!(task, Err(DecodeError::Malformed { .. })),
                "json depth {depth}: {task:?}"
            );
            // serde_json skips unknown fields without recursing, so decoders of messages
            // with only optional fields (agent query, fault heal) may accept the body.
            for (kind, outcome) in
                decode_with_every_decoder(ContentType::Json, json.as_bytes(), &Limits::default())
            {
                check_outcome(kind, json.as_bytes(), &outcome).unwrap();
            }
        }
    });
}

/// rmp_serde's default depth limit (1024) let a ~1 KiB MessagePack task overflow a 2 MiB
/// stack (spawned threads, tokio workers) in a debug build; the codec caps depth at 128.
#[test]
fn nesting_up_to_the_msgpack_depth_limit_fits_a_2_mib_stack() {
    for field in ["proposal", "unknown_field"] {
        let bytes = nested_msgpack_task(field, 1020);
        let outcomes = on_stack(2 << 20, move || {
            decode_with_every_decoder(ContentType::MsgPack, &bytes, &Limits::default())
        });
        for (kind, outcome) in outcomes {
            check_outcome(kind, b"x", &outcome).unwrap();
        }
    }
}

/// A body is exactly one message: trailing bytes are refused in MessagePack as in JSON.
#[test]
fn trailing_bytes_after_a_message_are_refused() {
    let params = Params {
        id: "a".into(),
        text: "t".into(),
        n: 1,
        x: 0.5,
    };
    for (content_type, kind, mut bytes) in encoded_samples(&params) {
        bytes.extend_from_slice(b"\x00 ");
        let outcome = decode_with_every_decoder(content_type, &bytes, &Limits::default())
            .into_iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, outcome)| outcome);
        assert!(
            matches!(outcome, Some(Err(DecodeError::Malformed { .. }))),
            "{content_type:?} {kind} with trailing bytes: {outcome:?}"
        );
    }
}
