//! The registry over a real nats-server and redis-server, started in-process: the request
//! contract, every refusal with its code, the heartbeat lifecycle with its events,
//! quarantine, dynamic weights, queries, replicas and restarts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_nats::HeaderMap;
use futures::StreamExt as _;
use mabeam_consensus::weights::{updated_expertise, WeightUpdate};
use mabeam_protocol::{
    codec::{decode, encode, ContentType, Message, CONTENT_TYPE_HEADER},
    registry::{
        registry_header, AgentInfo, AgentList, AgentQuery, AgentStatus, AgreementReport,
        Deregistration, Heartbeat, Registration, RegistryAck,
    },
    session::{Ballot, EquivocationEvidence, Phase, VoteValue},
    subjects,
    telemetry::{EventKind, TelemetryEvent},
    AgentId, AgentKeypair, EnvelopeHeader, ErrorCode, ErrorReply, Limits, SessionId,
    SignedEnvelope, PROTOCOL_VERSION,
};
use mabeam_registry::{Config, Running};
use mabeam_runtime::{reply, Shutdown};
use mabeam_testkit::Infra;

const STATUS_EVENTS: &str = "mabeam.events.registry.agent_status_changed";

// ---------------------------------------------------------------------------------------------
// Harness.

/// A registry started in-process on `infra`, with `extra` settings.
struct Registry {
    running: Running,
    shutdown: Shutdown,
}

impl Registry {
    async fn start(infra: &Infra, extra: &[(&str, &str)]) -> Self {
        let mut env = infra.env();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_env(&env).unwrap();
        let shutdown = Shutdown::new();
        let running = mabeam_registry::start(config, shutdown.clone())
            .await
            .unwrap();
        Self { running, shutdown }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running.handle)
            .await
            .expect("registry stops within 10 s")
            .unwrap()
            .unwrap();
    }
}

/// Short TTLs, so the lifecycle runs in about a second.
const FAST_TTLS: &[(&str, &str)] = &[
    ("MABEAM_SUSPECT_AFTER_MS", "300"),
    ("MABEAM_FAILED_AFTER_MS", "800"),
    ("MABEAM_SWEEP_INTERVAL_MS", "50"),
];

async fn client(infra: &Infra) -> async_nats::Client {
    async_nats::connect(infra.nats.url()).await.unwrap()
}

/// Microseconds since the epoch, strictly increasing across calls (envelope sequences).
fn now_us() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let mut last = LAST.load(Ordering::SeqCst);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange(last, next, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

fn id(text: &str) -> AgentId {
    AgentId::new(text).unwrap()
}

/// A test agent: an id and a key.
#[derive(Clone)]
struct Agent {
    id: AgentId,
    key: AgentKeypair,
}

impl Agent {
    fn new(name: &str, seed: u8) -> Self {
        Self {
            id: id(name),
            key: AgentKeypair::from_secret_bytes([seed; 32]),
        }
    }

    fn registration(&self, capabilities: &[&str]) -> Registration {
        Registration {
            v: PROTOCOL_VERSION,
            agent_id: self.id.clone(),
            kind: "test".into(),
            capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
            expertise: 1.0,
            public_key: self.key.public_key(),
            metadata: BTreeMap::from([("zone".to_owned(), "eu".to_owned())]),
        }
    }

    /// `body` signed under a fresh registry header.
    fn seal<T: Message>(&self, body: &T) -> SignedEnvelope {
        let us = now_us();
        SignedEnvelope::seal(&self.key, registry_header(&self.id, us / 1000, us), body).unwrap()
    }

    fn register_envelope(&self, capabilities: &[&str]) -> SignedEnvelope {
        self.seal(&self.registration(capabilities))
    }

    fn heartbeat_envelope(&self, load: f64, capacity: f64) -> SignedEnvelope {
        self.seal(&Heartbeat {
            v: PROTOCOL_VERSION,
            agent_id: self.id.clone(),
            load,
            capacity,
        })
    }

    fn deregister_envelope(&self) -> SignedEnvelope {
        self.seal(&Deregistration {
            v: PROTOCOL_VERSION,
            agent_id: self.id.clone(),
        })
    }

    /// A ballot for `choice` in session `s1`, round 1, signed by this agent.
    fn ballot(&self, choice: &str) -> SignedEnvelope {
        let header = EnvelopeHeader {
            sender: self.id.clone(),
            session: SessionId::new("s1").unwrap(),
            round: 1,
            sequence: now_us(),
            timestamp_ms: now_us() / 1000,
        };
        let ballot = Ballot::new(Phase::Vote, VoteValue::Choice(choice.into()), 1.0);
        SignedEnvelope::seal(&self.key, header, &ballot).unwrap()
    }

    fn evidence(&self, first: SignedEnvelope, second: SignedEnvelope) -> EquivocationEvidence {
        EquivocationEvidence {
            v: PROTOCOL_VERSION,
            agent_id: self.id.clone(),
            session_id: SessionId::new("s1").unwrap(),
            round: 1,
            first,
            second,
        }
    }
}

/// Sends raw `body` with `content_type` (no header when `None`) and returns the reply.
async fn request_raw(
    client: &async_nats::Client,
    subject: &'static str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> async_nats::Message {
    let mut headers = HeaderMap::new();
    if let Some(ct) = content_type {
        headers.insert(CONTENT_TYPE_HEADER, ct);
    }
    tokio::time::timeout(
        Duration::from_secs(5),
        client.request_with_headers(subject, headers, body.into()),
    )
    .await
    .expect("reply within 5 s")
    .unwrap_or_else(|e| panic!("request on {subject} failed: {e:?}"))
}

/// Sends `message` in `ct` and decodes the reply, which must come in the same encoding.
async fn call<Req: Message, Resp: Message>(
    client: &async_nats::Client,
    subject: &'static str,
    ct: ContentType,
    message: &Req,
) -> Result<Resp, ErrorReply> {
    let reply = request_raw(
        client,
        subject,
        Some(ct.header_value()),
        encode(ct, message).unwrap(),
    )
    .await;
    assert_eq!(reply::content_type(reply.headers.as_ref()).unwrap(), ct);
    match reply::as_error(reply.headers.as_ref(), &reply.payload) {
        Some(error) => Err(error),
        None => Ok(decode(ct, &reply.payload, &Limits::default()).unwrap()),
    }
}

async fn register(
    client: &async_nats::Client,
    envelope: &SignedEnvelope,
) -> Result<RegistryAck, ErrorReply> {
    call(
        client,
        subjects::REGISTRY_REGISTER,
        ContentType::MsgPack,
        envelope,
    )
    .await
}

async fn heartbeat(
    client: &async_nats::Client,
    envelope: &SignedEnvelope,
) -> Result<RegistryAck, ErrorReply> {
    call(
        client,
        subjects::REGISTRY_HEARTBEAT,
        ContentType::MsgPack,
        envelope,
    )
    .await
}

async fn deregister(
    client: &async_nats::Client,
    envelope: &SignedEnvelope,
) -> Result<RegistryAck, ErrorReply> {
    call(
        client,
        subjects::REGISTRY_DEREGISTER,
        ContentType::MsgPack,
        envelope,
    )
    .await
}

async fn evidence(
    client: &async_nats::Client,
    evidence: &EquivocationEvidence,
) -> Result<RegistryAck, ErrorReply> {
    call(
        client,
        subjects::REGISTRY_EVIDENCE,
        ContentType::MsgPack,
        evidence,
    )
    .await
}

async fn query(client: &async_nats::Client, query: AgentQuery) -> Vec<AgentInfo> {
    let list: AgentList = call(
        client,
        subjects::REGISTRY_QUERY,
        ContentType::MsgPack,
        &query,
    )
    .await
    .unwrap();
    list.agents
}

fn by_ids(ids: &[&AgentId]) -> AgentQuery {
    AgentQuery {
        v: PROTOCOL_VERSION,
        agent_ids: ids.iter().map(|id| (*id).clone()).collect(),
        ..AgentQuery::default()
    }
}

async fn info(client: &async_nats::Client, agent: &AgentId) -> Option<AgentInfo> {
    query(client, by_ids(&[agent])).await.into_iter().next()
}

fn ids(agents: &[AgentInfo]) -> Vec<&str> {
    agents.iter().map(|a| a.agent_id.as_str()).collect()
}

/// Asserts a refusal with `code` whose message contains `needle`.
#[track_caller]
fn assert_refused<T: std::fmt::Debug>(
    outcome: Result<T, ErrorReply>,
    code: ErrorCode,
    needle: &str,
) {
    match outcome {
        Err(e) => {
            assert_eq!(e.code, code, "{e:?}");
            assert!(
                e.message.to_lowercase().contains(&needle.to_lowercase()),
                "{needle:?} not in {:?}",
                e.message
            );
        }
        Ok(v) => panic!("expected {code:?}, got {v:?}"),
    }
}

/// Polls `check` every 20 ms until it returns `Some`, for at most `within`.
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next status change of `agent` announced on `events`.
async fn next_transition(
    events: &mut async_nats::Subscriber,
    agent: &AgentId,
) -> (Option<AgentStatus>, AgentStatus) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .unwrap_or_else(|_| panic!("no status event for {agent} within 5 s"))
            .unwrap();
        let event: TelemetryEvent =
            decode(ContentType::MsgPack, &message.payload, &Limits::default()).unwrap();
        match event.event {
            EventKind::AgentStatusChanged { agent_id, from, to } if &agent_id == agent => {
                return (from, to)
            }
            _ => {}
        }
    }
}

/// Fails if `agent` has another status event within `quiet`.
async fn assert_no_more_transitions(
    events: &mut async_nats::Subscriber,
    agent: &AgentId,
    quiet: Duration,
) {
    let deadline = tokio::time::Instant::now() + quiet;
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, events.next()).await {
        let event: TelemetryEvent =
            decode(ContentType::MsgPack, &message.payload, &Limits::default()).unwrap();
        if let EventKind::AgentStatusChanged { agent_id, from, to } = event.event {
            assert_ne!(&agent_id, agent, "unexpected transition {from:?} → {to:?}");
        }
    }
}

/// `GET path` on the registry's HTTP port: (status code, body).
async fn http_get(running: &Running, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(running.http_addr)
        .await
        .unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

// ---------------------------------------------------------------------------------------------
// The request contract.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_query_heartbeat_deregister_round_trip_in_msgpack_and_json() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    for (ct, agent) in [
        (ContentType::MsgPack, Agent::new("agent-msgpack", 1)),
        (ContentType::Json, Agent::new("agent-json", 2)),
    ] {
        let ack: RegistryAck = call(
            &client,
            subjects::REGISTRY_REGISTER,
            ct,
            &agent.register_envelope(&["gpu", "eval"]),
        )
        .await
        .unwrap();
        assert_eq!(
            (ack.agent_id.clone(), ack.status),
            (agent.id.clone(), AgentStatus::Registered)
        );

        let list: AgentList = call(&client, subjects::REGISTRY_QUERY, ct, &by_ids(&[&agent.id]))
            .await
            .unwrap();
        let [found] = list.agents.as_slice() else {
            panic!("{:?}", list.agents)
        };
        assert_eq!(found.status, AgentStatus::Registered);
        assert_eq!(found.capabilities, ["gpu", "eval"]);
        assert_eq!(found.kind, "test");
        assert_eq!(found.expertise, 1.0);
        assert_eq!(found.public_key, agent.key.public_key());
        assert_eq!(found.last_heartbeat_ms, None);

        let ack: RegistryAck = call(
            &client,
            subjects::REGISTRY_HEARTBEAT,
            ct,
            &agent.heartbeat_envelope(2.5, 8.0),
        )
        .await
        .unwrap();
        assert_eq!(ack.status, AgentStatus::Active);
        let found = info(&client, &agent.id).await.unwrap();
        assert_eq!(found.status, AgentStatus::Active);
        assert_eq!((found.load, found.capacity), (2.5, 8.0));
        assert!(found.last_heartbeat_ms.unwrap() >= found.registered_ms);

        let ack: RegistryAck = call(
            &client,
            subjects::REGISTRY_DEREGISTER,
            ct,
            &agent.deregister_envelope(),
        )
        .await
        .unwrap();
        assert_eq!(ack.agent_id, agent.id);
        assert_eq!(info(&client, &agent.id).await, None);
        let capable = query(
            &client,
            AgentQuery {
                capability: Some("gpu".into()),
                ..by_ids(&[])
            },
        )
        .await;
        assert!(capable.is_empty(), "capability index keeps {capable:?}");
        assert_refused(
            heartbeat(&client, &agent.heartbeat_envelope(0.0, 1.0)).await,
            ErrorCode::UnknownAgent,
            "not registered",
        );
    }
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_bound_to_one_key_refuses_another_key_with_key_mismatch() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    let owner = Agent::new("bound", 1);
    let intruder = Agent {
        key: AgentKeypair::from_secret_bytes([9; 32]),
        ..owner.clone()
    };
    register(&client, &owner.register_envelope(&["gpu"]))
        .await
        .unwrap();
    assert_refused(
        register(&client, &intruder.register_envelope(&["gpu"])).await,
        ErrorCode::KeyMismatch,
        "bound to another key",
    );
    assert_eq!(
        info(&client, &owner.id).await.unwrap().public_key,
        owner.key.public_key()
    );
    // The same key re-registers; once deregistered, the id is free for another key.
    register(&client, &owner.register_envelope(&["gpu", "cpu"]))
        .await
        .unwrap();
    assert_eq!(
        info(&client, &owner.id).await.unwrap().capabilities,
        ["gpu", "cpu"]
    );
    deregister(&client, &owner.deregister_envelope())
        .await
        .unwrap();
    register(&client, &intruder.register_envelope(&[]))
        .await
        .unwrap();
    assert_eq!(
        info(&client, &owner.id).await.unwrap().public_key,
        intruder.key.public_key()
    );
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_signatures_are_invalid_signature() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    let agent = Agent::new("honest", 1);
    let forger = Agent {
        key: AgentKeypair::from_secret_bytes([9; 32]),
        ..agent.clone()
    };

    // A registration naming a key its signer does not hold: no proof of possession.
    let claim = forger.seal(&agent.registration(&[]));
    assert_refused(
        register(&client, &claim).await,
        ErrorCode::InvalidSignature,
        "does not verify",
    );
    assert_eq!(info(&client, &agent.id).await, None);

    register(&client, &agent.register_envelope(&[]))
        .await
        .unwrap();
    // A heartbeat or deregistration signed by another key.
    assert_refused(
        heartbeat(&client, &forger.heartbeat_envelope(1.0, 1.0)).await,
        ErrorCode::InvalidSignature,
        "does not verify",
    );
    assert_refused(
        deregister(&client, &forger.deregister_envelope()).await,
        ErrorCode::InvalidSignature,
        "does not verify",
    );
    // Tampered signature and tampered payload.
    let mut tampered = agent.heartbeat_envelope(1.0, 1.0);
    tampered.signature[5] ^= 1;
    assert_refused(
        heartbeat(&client, &tampered).await,
        ErrorCode::InvalidSignature,
        "",
    );
    let mut tampered = agent.heartbeat_envelope(1.0, 1.0);
    tampered.payload = encode(
        ContentType::MsgPack,
        &Heartbeat {
            v: PROTOCOL_VERSION,
            agent_id: agent.id.clone(),
            load: 99.0,
            capacity: 1.0,
        },
    )
    .unwrap();
    assert_refused(
        heartbeat(&client, &tampered).await,
        ErrorCode::InvalidSignature,
        "",
    );
    let found = info(&client, &agent.id).await.unwrap();
    assert_eq!((found.status, found.load), (AgentStatus::Registered, 0.0));
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_envelopes_are_refused() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    let agent = Agent::new("replayed", 1);
    let registration = agent.register_envelope(&[]);
    register(&client, &registration).await.unwrap();
    assert_refused(
        register(&client, &registration).await,
        ErrorCode::Unauthorized,
        "replay",
    );

    let beat = agent.heartbeat_envelope(1.0, 2.0);
    let older = agent.heartbeat_envelope(3.0, 4.0);
    let newer = agent.heartbeat_envelope(5.0, 6.0);
    heartbeat(&client, &beat).await.unwrap();
    assert_refused(
        heartbeat(&client, &beat).await,
        ErrorCode::Unauthorized,
        "replay",
    );
    heartbeat(&client, &newer).await.unwrap();
    // Reordered: signed before the last accepted one.
    assert_refused(
        heartbeat(&client, &older).await,
        ErrorCode::Unauthorized,
        "not above",
    );
    assert_eq!(info(&client, &agent.id).await.unwrap().load, 5.0);

    // Deregistered, the agent cannot be brought back by replaying its registration.
    let goodbye = agent.deregister_envelope();
    deregister(&client, &goodbye).await.unwrap();
    assert_refused(
        register(&client, &registration).await,
        ErrorCode::Unauthorized,
        "replay",
    );
    assert_eq!(info(&client, &agent.id).await, None);
    assert_refused(
        deregister(&client, &goodbye).await,
        ErrorCode::UnknownAgent,
        "",
    );
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_outside_the_clock_tolerance_are_refused() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[("MABEAM_CLOCK_TOLERANCE_MS", "5000")]).await;
    let client = client(&infra).await;
    let agent = Agent::new("skewed", 1);
    for offset_ms in [-60_000i64, 60_000] {
        let us = now_us();
        let mut header = registry_header(&agent.id, us / 1000, us);
        header.timestamp_ms = header.timestamp_ms.saturating_add_signed(offset_ms);
        let stale = SignedEnvelope::seal(&agent.key, header, &agent.registration(&[])).unwrap();
        assert_refused(
            register(&client, &stale).await,
            ErrorCode::Unauthorized,
            "tolerance",
        );
    }
    assert_eq!(info(&client, &agent.id).await, None);
    register(&client, &agent.register_envelope(&[]))
        .await
        .unwrap();
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_speaking_for_another_agent_or_session_are_unauthorized() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    let victim = Agent::new("victim", 1);
    let mallory = Agent::new("mallory", 2);
    register(&client, &victim.register_envelope(&[]))
        .await
        .unwrap();
    register(&client, &mallory.register_envelope(&[]))
        .await
        .unwrap();

    // Mallory signs, as herself, a heartbeat for the victim.
    let beat = mallory.seal(&Heartbeat {
        v: PROTOCOL_VERSION,
        agent_id: victim.id.clone(),
        load: 0.0,
        capacity: 0.0,
    });
    assert_refused(
        heartbeat(&client, &beat).await,
        ErrorCode::Unauthorized,
        "is not the agent",
    );
    let claim = mallory.seal(&Registration {
        public_key: mallory.key.public_key(),
        ..victim.registration(&[])
    });
    assert_refused(
        register(&client, &claim).await,
        ErrorCode::Unauthorized,
        "is not the agent",
    );
    let goodbye = mallory.seal(&Deregistration {
        v: PROTOCOL_VERSION,
        agent_id: victim.id.clone(),
    });
    assert_refused(
        deregister(&client, &goodbye).await,
        ErrorCode::Unauthorized,
        "is not the agent",
    );

    // The victim's own ballot signature cannot be used as a registry message.
    let us = now_us();
    let header = EnvelopeHeader {
        session: SessionId::new("s1").unwrap(),
        ..registry_header(&victim.id, us / 1000, us)
    };
    let beat = SignedEnvelope::seal(
        &victim.key,
        header,
        &Heartbeat {
            v: PROTOCOL_VERSION,
            agent_id: victim.id.clone(),
            load: 0.0,
            capacity: 0.0,
        },
    )
    .unwrap();
    assert_refused(
        heartbeat(&client, &beat).await,
        ErrorCode::Unauthorized,
        "not for the registry",
    );
    assert_eq!(
        info(&client, &victim.id).await.unwrap().status,
        AgentStatus::Registered
    );
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_typed_errors_in_the_request_encoding() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    let subjects_all = [
        subjects::REGISTRY_REGISTER,
        subjects::REGISTRY_HEARTBEAT,
        subjects::REGISTRY_DEREGISTER,
        subjects::REGISTRY_QUERY,
        subjects::REGISTRY_EVIDENCE,
    ];
    for subject in subjects_all {
        for (ct, body) in [
            (ContentType::MsgPack, vec![0xc1, 0x00, 0xff]),
            (ContentType::Json, b"{\"v\": 1, \"agent_id\": ".to_vec()),
            (ContentType::MsgPack, Vec::new()),
        ] {
            let reply = request_raw(&client, subject, Some(ct.header_value()), body).await;
            assert_eq!(reply::content_type(reply.headers.as_ref()).unwrap(), ct);
            let error = reply::as_error(reply.headers.as_ref(), &reply.payload)
                .unwrap_or_else(|| panic!("{subject}: no error reply"));
            assert_eq!(
                error.code,
                ErrorCode::MalformedMessage,
                "{subject}: {error:?}"
            );
        }
        let reply = request_raw(&client, subject, Some("text/plain"), b"hello".to_vec()).await;
        let error = reply::as_error(reply.headers.as_ref(), &reply.payload).unwrap();
        assert_eq!(error.code, ErrorCode::UnsupportedContentType, "{subject}");
        let future = serde_json::json!({"v": 7, "agent_id": "x"});
        let reply = request_raw(
            &client,
            subject,
            Some("application/json"),
            serde_json::to_vec(&future).unwrap(),
        )
        .await;
        let error = reply::as_error(reply.headers.as_ref(), &reply.payload).unwrap();
        assert_eq!(error.code, ErrorCode::UnsupportedVersion, "{subject}");
    }
    // A well-formed envelope whose payload is garbage or another message.
    let agent = Agent::new("garbled", 1);
    let us = now_us();
    let garbage = SignedEnvelope::sign_payload(
        &agent.key,
        registry_header(&agent.id, us / 1000, us),
        vec![0xc1],
    );
    assert_refused(
        register(&client, &garbage).await,
        ErrorCode::MalformedMessage,
        "envelope payload",
    );
    let wrong = agent.seal(&Deregistration {
        v: PROTOCOL_VERSION,
        agent_id: agent.id.clone(),
    });
    assert_refused(
        register(&client, &wrong).await,
        ErrorCode::MalformedMessage,
        "registration",
    );
    // Impossible values in a well-formed registration or heartbeat.
    let mut silly = agent.registration(&[]);
    silly.expertise = -1.0;
    assert_refused(
        register(&client, &agent.seal(&silly)).await,
        ErrorCode::InvalidParams,
        "expertise",
    );
    register(&client, &agent.register_envelope(&[]))
        .await
        .unwrap();
    assert_refused(
        heartbeat(&client, &agent.heartbeat_envelope(f64::NAN, 1.0)).await,
        ErrorCode::InvalidParams,
        "load",
    );
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_too_large() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[("MABEAM_MAX_MESSAGE_BYTES", "1024")]).await;
    let client = client(&infra).await;
    let agent = Agent::new("big", 1);
    let mut registration = agent.registration(&[]);
    registration
        .metadata
        .insert("blob".into(), "x".repeat(4096));
    assert_refused(
        register(&client, &agent.seal(&registration)).await,
        ErrorCode::TooLarge,
        "limit is 1024",
    );
    let reply = request_raw(&client, subjects::REGISTRY_QUERY, None, vec![0x80; 2048]).await;
    let error = reply::as_error(reply.headers.as_ref(), &reply.payload).unwrap();
    assert_eq!(error.code, ErrorCode::TooLarge);
    assert_eq!(info(&client, &agent.id).await, None);
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_agents_cannot_heartbeat_or_deregister() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    let stranger = Agent::new("stranger", 1);
    assert_refused(
        heartbeat(&client, &stranger.heartbeat_envelope(0.0, 1.0)).await,
        ErrorCode::UnknownAgent,
        "register it first",
    );
    assert_refused(
        deregister(&client, &stranger.deregister_envelope()).await,
        ErrorCode::UnknownAgent,
        "not registered",
    );
    // Refusals are counted per endpoint and code.
    let (_, metrics) = http_get(&registry.running, "/metrics").await;
    assert!(
        metrics.contains(
            r#"mabeam_registry_requests_total{endpoint="heartbeat",outcome="unknown_agent"}"#
        ),
        "{metrics}"
    );
    assert!(metrics
        .contains(r#"mabeam_requests_refused_total{endpoint="heartbeat",code="unknown_agent"}"#));
    registry.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Lifecycle.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_loss_drives_the_lifecycle_and_announces_every_transition() {
    use AgentStatus::*;
    let infra = Infra::start();
    let registry = Registry::start(&infra, FAST_TTLS).await;
    let client = client(&infra).await;
    let mut events = client.subscribe(STATUS_EVENTS).await.unwrap();
    client.flush().await.unwrap();
    let agent = Agent::new("mortal", 1);

    register(&client, &agent.register_envelope(&["gpu"]))
        .await
        .unwrap();
    assert_eq!(
        next_transition(&mut events, &agent.id).await,
        (None, Registered)
    );
    // Taken before the request: the registry stamps the heartbeat no earlier.
    let last_beat = Instant::now();
    let ack = heartbeat(&client, &agent.heartbeat_envelope(1.0, 4.0))
        .await
        .unwrap();
    assert_eq!(ack.status, Active);
    assert_eq!(
        next_transition(&mut events, &agent.id).await,
        (Some(Registered), Active)
    );

    assert_eq!(
        next_transition(&mut events, &agent.id).await,
        (Some(Active), Suspect)
    );
    assert!(
        last_beat.elapsed() >= Duration::from_millis(290),
        "suspect too early"
    );
    assert_eq!(info(&client, &agent.id).await.unwrap().status, Suspect);
    assert_eq!(
        next_transition(&mut events, &agent.id).await,
        (Some(Suspect), Failed)
    );
    assert!(
        last_beat.elapsed() >= Duration::from_millis(790),
        "failed too early"
    );
    let failed = info(&client, &agent.id).await.unwrap();
    assert_eq!(
        (failed.status, failed.load, failed.capacity),
        (Failed, 1.0, 4.0)
    );
    assert!(!failed.status.is_eligible());

    let ack = heartbeat(&client, &agent.heartbeat_envelope(2.0, 4.0))
        .await
        .unwrap();
    assert_eq!(ack.status, Recovered);
    assert_eq!(
        next_transition(&mut events, &agent.id).await,
        (Some(Failed), Recovered)
    );
    let ack = heartbeat(&client, &agent.heartbeat_envelope(3.0, 4.0))
        .await
        .unwrap();
    assert_eq!(ack.status, Active);
    assert_eq!(
        next_transition(&mut events, &agent.id).await,
        (Some(Recovered), Active)
    );

    // Suspect then a heartbeat: straight back to active.
    assert_eq!(
        next_transition(&mut events, &agent.id).await,
        (Some(Active), Suspect)
    );
    let ack = heartbeat(&client, &agent.heartbeat_envelope(0.0, 4.0))
        .await
        .unwrap();
    assert_eq!(ack.status, Active);
    assert_eq!(
        next_transition(&mut events, &agent.id).await,
        (Some(Suspect), Active)
    );

    // Without heartbeats a registered agent fails too.
    let silent = Agent::new("never-beats", 2);
    register(&client, &silent.register_envelope(&[]))
        .await
        .unwrap();
    assert_eq!(
        next_transition(&mut events, &silent.id).await,
        (None, Registered)
    );
    assert_eq!(
        next_transition(&mut events, &silent.id).await,
        (Some(Registered), Suspect)
    );
    assert_eq!(
        next_transition(&mut events, &silent.id).await,
        (Some(Suspect), Failed)
    );
    // Failed is where silence ends: nothing more happens until a heartbeat.
    assert_no_more_transitions(&mut events, &silent.id, Duration::from_millis(400)).await;

    let (_, metrics) = http_get(&registry.running, "/metrics").await;
    assert!(
        metrics.contains(r#"mabeam_registry_status_transitions_total{from="suspect",to="failed"}"#)
    );
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_work_and_announce_each_transition_once() {
    use AgentStatus::*;
    let infra = Infra::start();
    let mut replicas = Vec::new();
    for name in ["registry-a", "registry-b", "registry-c"] {
        let mut settings = FAST_TTLS.to_vec();
        settings.push(("MABEAM_INSTANCE", name));
        replicas.push(Registry::start(&infra, &settings).await);
    }
    let client = client(&infra).await;
    let mut events = client.subscribe(STATUS_EVENTS).await.unwrap();
    client.flush().await.unwrap();
    let agents: Vec<Agent> = (0..6)
        .map(|i| Agent::new(&format!("fleet-{i}"), 10 + i))
        .collect();
    for agent in &agents {
        register(&client, &agent.register_envelope(&[]))
            .await
            .unwrap();
        heartbeat(&client, &agent.heartbeat_envelope(0.0, 1.0))
            .await
            .unwrap();
    }
    let mut seen: BTreeMap<AgentId, Vec<(Option<AgentStatus>, AgentStatus)>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while let Ok(Some(message)) = tokio::time::timeout_at(deadline, events.next()).await {
        let event: TelemetryEvent =
            decode(ContentType::MsgPack, &message.payload, &Limits::default()).unwrap();
        if let EventKind::AgentStatusChanged { agent_id, from, to } = event.event {
            seen.entry(agent_id).or_default().push((from, to));
        }
    }
    for agent in &agents {
        assert_eq!(
            seen.get(&agent.id).map(Vec::as_slice),
            Some(
                &[
                    (None, Registered),
                    (Some(Registered), Active),
                    (Some(Active), Suspect),
                    (Some(Suspect), Failed)
                ][..]
            ),
            "{}",
            agent.id
        );
    }
    for replica in replicas {
        replica.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_drops_work_list_entries_time_cannot_change() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, FAST_TTLS).await;
    let client = client(&infra).await;
    let cheat = Agent::new("cheat", 1);
    register(&client, &cheat.register_envelope(&[]))
        .await
        .unwrap();
    let proof = cheat.evidence(cheat.ballot("yes"), cheat.ballot("no"));
    evidence(&client, &proof).await.unwrap();
    // Entries the registry would not have left: a quarantined agent and an id with no record.
    let mut redis = redis::Client::open(infra.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for id in ["cheat", "ghost"] {
        let _: i64 = redis::cmd("ZADD")
            .arg("mabeam:registry:seen")
            .arg(0)
            .arg(id)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(3), "the work list to empty", || {
        let mut redis = redis.clone();
        async move {
            let left: i64 = redis::cmd("ZCARD")
                .arg("mabeam:registry:seen")
                .query_async(&mut redis)
                .await
                .unwrap();
            (left == 0).then_some(())
        }
    })
    .await;
    assert_eq!(
        info(&client, &cheat.id).await.unwrap().status,
        AgentStatus::Quarantined
    );
    registry.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Quarantine.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_evidence_quarantines_for_good_and_the_agent_is_no_longer_eligible() {
    use AgentStatus::*;
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    let mut events = client.subscribe(STATUS_EVENTS).await.unwrap();
    client.flush().await.unwrap();
    let cheat = Agent::new("cheat", 1);
    let honest = Agent::new("honest", 2);
    for agent in [&cheat, &honest] {
        register(&client, &agent.register_envelope(&["gpu"]))
            .await
            .unwrap();
        heartbeat(&client, &agent.heartbeat_envelope(0.0, 1.0))
            .await
            .unwrap();
    }
    let proof = cheat.evidence(cheat.ballot("yes"), cheat.ballot("no"));
    let ack = evidence(&client, &proof).await.unwrap();
    assert_eq!(
        (ack.agent_id.clone(), ack.status),
        (cheat.id.clone(), Quarantined)
    );
    // A second report of the same evidence changes nothing.
    assert_eq!(evidence(&client, &proof).await.unwrap().status, Quarantined);

    let found = info(&client, &cheat.id).await.unwrap();
    assert_eq!(found.status, Quarantined);
    assert!(!found.status.is_eligible());
    let active = query(
        &client,
        AgentQuery {
            capability: Some("gpu".into()),
            status: Some(Active),
            ..by_ids(&[])
        },
    )
    .await;
    assert_eq!(ids(&active), ["honest"]);
    let quarantined = query(
        &client,
        AgentQuery {
            status: Some(Quarantined),
            ..by_ids(&[])
        },
    )
    .await;
    assert_eq!(ids(&quarantined), ["cheat"]);

    // Heartbeats are recorded, the status stays; re-registering does not clear it, nor does
    // deregistering and registering again.
    let ack = heartbeat(&client, &cheat.heartbeat_envelope(7.0, 8.0))
        .await
        .unwrap();
    assert_eq!(ack.status, Quarantined);
    let found = info(&client, &cheat.id).await.unwrap();
    assert_eq!((found.status, found.load), (Quarantined, 7.0));
    assert_eq!(
        register(&client, &cheat.register_envelope(&["gpu"]))
            .await
            .unwrap()
            .status,
        Quarantined
    );
    deregister(&client, &cheat.deregister_envelope())
        .await
        .unwrap();
    assert_eq!(
        register(&client, &cheat.register_envelope(&["gpu"]))
            .await
            .unwrap()
            .status,
        Quarantined
    );

    // Announced once; the evidence is kept.
    let mut transitions = Vec::new();
    loop {
        let t = next_transition(&mut events, &cheat.id).await;
        transitions.push(t);
        if t.1 == Quarantined {
            break;
        }
    }
    assert_eq!(
        transitions,
        [
            (None, Registered),
            (Some(Registered), Active),
            (Some(Active), Quarantined)
        ]
    );
    // Re-registration as new after deregistration: announced from nothing to quarantined.
    assert_eq!(
        next_transition(&mut events, &cheat.id).await,
        (None, Quarantined)
    );
    let mut redis = redis::Client::open(infra.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let kept: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg("mabeam:registry:evidence:cheat")
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(!kept.is_empty());
    let stored: EquivocationEvidence =
        decode(ContentType::MsgPack, &kept[0], &Limits::default()).unwrap();
    assert_eq!(stored, proof);
    let (_, metrics) = http_get(&registry.running, "/metrics").await;
    // Counted, not merely described (the recorder is shared by every test in this process,
    // so other quarantines may have counted too).
    assert!(
        mabeam_testkit::metric_sample(&metrics, "mabeam_registry_quarantines_total", &[])
            .is_some_and(|n| n >= 1.0),
        "{metrics}"
    );
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_evidence_is_refused_and_changes_nothing() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    let agent = Agent::new("accused", 1);
    let framer = Agent {
        key: AgentKeypair::from_secret_bytes([9; 32]),
        ..agent.clone()
    };
    register(&client, &agent.register_envelope(&[]))
        .await
        .unwrap();

    // Same value twice is not equivocation.
    let same = agent.evidence(agent.ballot("yes"), agent.ballot("yes"));
    assert_refused(
        evidence(&client, &same).await,
        ErrorCode::InvalidSignature,
        "does not prove",
    );
    // Ballots signed by someone else's key.
    let forged = framer.evidence(framer.ballot("yes"), framer.ballot("no"));
    assert_refused(
        evidence(&client, &forged).await,
        ErrorCode::InvalidSignature,
        "does not prove",
    );
    // Ballots of another round than the evidence names.
    let mut elsewhere = agent.evidence(agent.ballot("yes"), agent.ballot("no"));
    elsewhere.round = 2;
    assert_refused(
        evidence(&client, &elsewhere).await,
        ErrorCode::InvalidSignature,
        "round 2",
    );
    // Evidence against nobody.
    let ghost = Agent::new("ghost", 3);
    let unknown = ghost.evidence(ghost.ballot("yes"), ghost.ballot("no"));
    assert_refused(
        evidence(&client, &unknown).await,
        ErrorCode::UnknownAgent,
        "",
    );

    assert_eq!(
        info(&client, &agent.id).await.unwrap().status,
        AgentStatus::Registered
    );
    registry.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Dynamic weights.

fn agreement(session: &str, verdicts: &[(&AgentId, bool)]) -> Vec<u8> {
    let report = AgreementReport {
        v: PROTOCOL_VERSION,
        session_id: SessionId::new(session).unwrap(),
        agreed: verdicts.iter().map(|(id, v)| ((*id).clone(), *v)).collect(),
    };
    encode(ContentType::MsgPack, &report).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_weights_move_expertise_toward_agreement() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[("MABEAM_DYNAMIC_WEIGHTS", "true")]).await;
    let client = client(&infra).await;
    let right = Agent::new("right", 1);
    let wrong = Agent::new("wrong", 2);
    for agent in [&right, &wrong] {
        register(&client, &agent.register_envelope(&[]))
            .await
            .unwrap();
    }
    let update = WeightUpdate::default();
    let ghost = id("deregistered-meanwhile");
    client
        .publish(
            subjects::REGISTRY_AGREEMENT,
            agreement(
                "s1",
                &[(&right.id, true), (&wrong.id, false), (&ghost, true)],
            )
            .into(),
        )
        .await
        .unwrap();
    let expected = (
        updated_expertise(1.0, true, &update),
        updated_expertise(1.0, false, &update),
    );
    eventually(Duration::from_secs(3), "expertise to move", || async {
        let a = info(&client, &right.id).await.unwrap().expertise;
        let b = info(&client, &wrong.id).await.unwrap().expertise;
        ((a, b) == expected).then_some(())
    })
    .await;
    assert!(expected.0 > 1.0 && expected.1 < 1.0);
    // Learned weights survive the agent re-registering with its declared expertise.
    register(&client, &right.register_envelope(&[]))
        .await
        .unwrap();
    assert_eq!(
        info(&client, &right.id).await.unwrap().expertise,
        expected.0
    );
    assert_eq!(info(&client, &ghost).await, None);
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreement_reports_are_counted_but_ignored_without_dynamic_weights() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    let agent = Agent::new("steady", 1);
    register(&client, &agent.register_envelope(&[]))
        .await
        .unwrap();
    client
        .publish(
            subjects::REGISTRY_AGREEMENT,
            agreement("s1", &[(&agent.id, true)]).into(),
        )
        .await
        .unwrap();
    client
        .publish(subjects::REGISTRY_AGREEMENT, vec![0xc1].into())
        .await
        .unwrap();
    eventually(Duration::from_secs(3), "the report to be counted", || async {
        let (_, body) = http_get(&registry.running, "/metrics").await;
        (body.contains(r#"mabeam_registry_requests_total{endpoint="agreement",outcome="ignored"}"#)
            && body.contains(r#"mabeam_registry_requests_total{endpoint="agreement",outcome="malformed_message"}"#))
        .then_some(())
    })
    .await;
    assert_eq!(info(&client, &agent.id).await.unwrap().expertise, 1.0);
    registry.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Queries, restarts, probes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_filter_by_capability_status_and_ids_sorted_by_id() {
    use AgentStatus::*;
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    let fleet = [
        (Agent::new("d", 4), &["gpu", "eval"][..], true),
        (Agent::new("b", 2), &["gpu"][..], false),
        (Agent::new("a", 1), &["cpu"][..], true),
        (Agent::new("c", 3), &["gpu"][..], true),
    ];
    for (agent, caps, beats) in &fleet {
        register(&client, &agent.register_envelope(caps))
            .await
            .unwrap();
        if *beats {
            heartbeat(&client, &agent.heartbeat_envelope(0.0, 1.0))
                .await
                .unwrap();
        }
    }
    let q =
        |capability: Option<&str>, status: Option<AgentStatus>, limit: Option<u32>| AgentQuery {
            capability: capability.map(str::to_owned),
            status,
            limit,
            ..by_ids(&[])
        };
    assert_eq!(
        ids(&query(&client, q(None, None, None)).await),
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        ids(&query(&client, q(Some("gpu"), None, None)).await),
        ["b", "c", "d"]
    );
    assert_eq!(
        ids(&query(&client, q(None, Some(Active), None)).await),
        ["a", "c", "d"]
    );
    assert_eq!(
        ids(&query(&client, q(Some("gpu"), Some(Active), None)).await),
        ["c", "d"]
    );
    assert_eq!(
        ids(&query(&client, q(Some("gpu"), Some(Registered), None)).await),
        ["b"]
    );
    assert_eq!(
        ids(&query(&client, q(Some("eval"), Some(Failed), None)).await),
        Vec::<&str>::new()
    );
    assert_eq!(
        ids(&query(&client, q(Some("nothing"), None, None)).await),
        Vec::<&str>::new()
    );
    assert_eq!(
        ids(&query(&client, q(None, None, Some(2))).await),
        ["a", "b"]
    );
    assert_eq!(
        ids(&query(&client, q(Some("gpu"), None, Some(0))).await),
        Vec::<&str>::new()
    );

    let (d, c, unknown) = (id("d"), id("c"), id("zz-unknown"));
    assert_eq!(
        ids(&query(&client, by_ids(&[&d, &unknown, &c, &d])).await),
        ["c", "d"]
    );
    let both = AgentQuery {
        capability: Some("eval".into()),
        ..by_ids(&[&d, &c])
    };
    assert_eq!(ids(&query(&client, both).await), ["d"]);
    let both = AgentQuery {
        status: Some(Registered),
        ..by_ids(&[&d, &c, &id("b")])
    };
    assert_eq!(ids(&query(&client, both).await), ["b"]);

    // JSON queries from other languages may omit everything.
    let reply = request_raw(
        &client,
        subjects::REGISTRY_QUERY,
        Some("application/json"),
        b"{}".to_vec(),
    )
    .await;
    let list: AgentList = decode(ContentType::Json, &reply.payload, &Limits::default()).unwrap();
    assert_eq!(ids(&list.agents), ["a", "b", "c", "d"]);
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_registry_keeps_agents_bindings_and_sequences() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    let agent = Agent::new("durable", 1);
    register(&client, &agent.register_envelope(&["gpu"]))
        .await
        .unwrap();
    let beat = agent.heartbeat_envelope(3.0, 9.0);
    heartbeat(&client, &beat).await.unwrap();
    let before = info(&client, &agent.id).await.unwrap();
    registry.stop().await;

    let registry = Registry::start(&infra, &[]).await;
    assert_eq!(info(&client, &agent.id).await.unwrap(), before);
    assert_eq!(
        ids(&query(
            &client,
            AgentQuery {
                capability: Some("gpu".into()),
                ..by_ids(&[])
            }
        )
        .await),
        ["durable"]
    );
    let intruder = Agent {
        key: AgentKeypair::from_secret_bytes([9; 32]),
        ..agent.clone()
    };
    assert_refused(
        register(&client, &intruder.register_envelope(&[])).await,
        ErrorCode::KeyMismatch,
        "",
    );
    assert_refused(
        heartbeat(&client, &beat).await,
        ErrorCode::Unauthorized,
        "replay",
    );
    assert_eq!(
        heartbeat(&client, &agent.heartbeat_envelope(1.0, 9.0))
            .await
            .unwrap()
            .status,
        AgentStatus::Active
    );
    registry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_metrics_and_service_discovery_answer() {
    let infra = Infra::start();
    let registry = Registry::start(&infra, &[]).await;
    let client = client(&infra).await;
    let agent = Agent::new("observed", 1);
    register(&client, &agent.register_envelope(&[]))
        .await
        .unwrap();
    query(&client, by_ids(&[&agent.id])).await;

    let (code, _) = http_get(&registry.running, "/healthz").await;
    assert_eq!(code, 200);
    let (code, body) = http_get(&registry.running, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    let metrics = eventually(Duration::from_secs(3), "the agents gauge", || async {
        let (_, body) = http_get(&registry.running, "/metrics").await;
        body.contains(r#"mabeam_registry_agents{status="registered"}"#)
            .then_some(body)
    })
    .await;
    for needle in [
        r#"mabeam_registry_requests_total{endpoint="register",outcome="ok"}"#,
        r#"mabeam_registry_request_duration_seconds_bucket{endpoint="query",le="0.001"}"#,
        r#"mabeam_registry_status_transitions_total{from="none",to="registered"}"#,
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }

    let info = client
        .request("$SRV.INFO.mabeam-registry", "".into())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    let mut subjects: Vec<&str> = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["subject"].as_str().unwrap())
        .collect();
    subjects.sort_unstable();
    assert_eq!(
        subjects,
        [
            "mabeam.registry.deregister",
            "mabeam.registry.evidence",
            "mabeam.registry.heartbeat",
            "mabeam.registry.query",
            "mabeam.registry.register"
        ]
    );
    registry.stop().await;
}
