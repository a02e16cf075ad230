//! The SDK against a real nats-server: hand-built proposals in, signed ballots out, for every
//! round context and every fault behaviour. A small responder on `mabeam.registry.*` stands
//! in for the registry (it checks the signed requests and acknowledges them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use async_nats::{Client, HeaderMap, Subscriber};
use futures::StreamExt;
use mabeam_agent::{Agent, Opinion};
use mabeam_protocol::{
    codec::{decode, encode, ContentType},
    fault::{AgentBehaviour, AgentFaultCommand},
    registry::{AgentStatus, Heartbeat, Registration, RegistryAck},
    session::{
        Ballot, ElectorateMember, Phase, Proposal, RoundContext, SessionClosed, VoteValue,
        MESSAGE_TYPE_HEADER, MESSAGE_TYPE_PROPOSAL, MESSAGE_TYPE_SESSION_CLOSED,
    },
    subjects, AgentId, ErrorCode, Limits, PublicKey, SessionId, SignedEnvelope, Status, TaskId,
};
use mabeam_runtime::{now_ms, reply};
use mabeam_testkit::NatsServer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const SEED: &[u8] = b"wire-tests";

/// Every registry request seen: (subject, envelope).
type Requests = Arc<Mutex<Vec<(String, SignedEnvelope)>>>;

struct Net {
    _nats: NatsServer,
    client: Client,
    requests: Requests,
    /// While set, the stand-in registry answers heartbeats with `unknown_agent`.
    forget: Arc<AtomicBool>,
}

async fn net() -> Net {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let requests: Requests = Arc::default();
    let forget = Arc::new(AtomicBool::new(false));
    let mut sub = client.subscribe("mabeam.registry.*").await.unwrap();
    let (responder, seen, forgetful) = (client.clone(), requests.clone(), forget.clone());
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let limits = Limits::default();
            let env: SignedEnvelope = decode(ContentType::MsgPack, &msg.payload, &limits).unwrap();
            let subject = msg.subject.to_string();
            seen.lock().unwrap().push((subject.clone(), env.clone()));
            let answer = if subject == subjects::REGISTRY_HEARTBEAT
                && forgetful.swap(false, Ordering::SeqCst)
            {
                reply::error_body(ContentType::MsgPack, ErrorCode::UnknownAgent, "who?")
            } else {
                let ack = RegistryAck {
                    v: 1,
                    agent_id: env.sender.clone(),
                    status: AgentStatus::Active,
                };
                reply::ok_body(ContentType::MsgPack, &ack)
            };
            reply::respond(&responder, &msg, answer).await;
        }
    });
    client.flush().await.unwrap();
    Net {
        _nats: nats,
        client,
        requests,
        forget,
    }
}

fn id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}

fn opinion() -> Opinion {
    Opinion {
        ranking: vec!["b".into()],
        number: 10.0,
        step: 0.5,
        tolerance: 1.0,
        bid: 3.0,
        confidence: 0.9,
        ..Opinion::default()
    }
}

struct Running {
    key: PublicKey,
    stop: CancellationToken,
    task: JoinHandle<Result<(), mabeam_agent::AgentError>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

fn registrations(net: &Net, agent: &AgentId, subject: &str) -> usize {
    net.requests
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, e)| s == subject && &e.sender == agent)
        .count()
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Starts an agent on the shared client and waits until it registered (so its subscription
/// is active: it subscribes before registering, on the same connection).
async fn start(net: &Net, name: &str, decider: Opinion, faults: &[AgentBehaviour]) -> Running {
    let mut builder = Agent::builder(name, "test")
        .capabilities(["wire"])
        .derive_key(SEED)
        .heartbeat_interval(Duration::from_millis(100))
        .seed(7);
    for (i, behaviour) in faults.iter().enumerate() {
        builder = builder.fault(fault(&format!("initial-{i}"), Some(behaviour.clone())));
    }
    let agent = builder.decider(decider).build().unwrap();
    let key = agent.public_key();
    let stop = CancellationToken::new();
    let task = tokio::spawn(agent.run(net.client.clone(), stop.clone()));
    let me = id(name);
    wait_for("registration", || {
        registrations(net, &me, subjects::REGISTRY_REGISTER) > 0
    })
    .await;
    Running { key, stop, task }
}

fn fault(fault_id: &str, behaviour: Option<AgentBehaviour>) -> AgentFaultCommand {
    AgentFaultCommand {
        v: 1,
        fault_id: fault_id.into(),
        behaviour,
        unreachable: vec![],
        coordinator_unreachable: false,
    }
}

async fn send_fault(net: &Net, agent: &str, command: &AgentFaultCommand) {
    let body = encode(ContentType::MsgPack, command).unwrap();
    net.client
        .publish(subjects::agent_faults(&id(agent)), body.into())
        .await
        .unwrap();
}

fn proposal(
    session: &str,
    algorithm: &str,
    round: u32,
    options: &[&str],
    context: RoundContext,
) -> Proposal {
    Proposal {
        v: 1,
        task_id: TaskId::new(format!("task-{session}")).unwrap(),
        session_id: SessionId::new(session).unwrap(),
        algorithm: algorithm.into(),
        round,
        phase: if matches!(context, RoundContext::Byzantine { .. }) {
            Phase::Prepare
        } else {
            Phase::Vote
        },
        proposal: serde_json::json!("which one"),
        options: options.iter().map(|s| (*s).to_owned()).collect(),
        deadline_ms: now_ms() + 2_000,
        context,
    }
}

async fn send(net: &Net, agent: &str, p: &Proposal) {
    let mut headers = HeaderMap::new();
    headers.insert(MESSAGE_TYPE_HEADER, MESSAGE_TYPE_PROPOSAL);
    let body = encode(ContentType::MsgPack, p).unwrap();
    net.client
        .publish_with_headers(subjects::agent_inbox(&id(agent)), headers, body.into())
        .await
        .unwrap();
}

async fn close(net: &Net, agent: &str, session: &str) {
    let mut headers = HeaderMap::new();
    headers.insert(MESSAGE_TYPE_HEADER, MESSAGE_TYPE_SESSION_CLOSED);
    let closed = SessionClosed {
        v: 1,
        task_id: TaskId::new(format!("task-{session}")).unwrap(),
        session_id: SessionId::new(session).unwrap(),
        status: Status::Decided,
    };
    let body = encode(ContentType::MsgPack, &closed).unwrap();
    net.client
        .publish_with_headers(subjects::agent_inbox(&id(agent)), headers, body.into())
        .await
        .unwrap();
}

async fn watch(net: &Net, session: &str) -> Subscriber {
    let sub = net
        .client
        .subscribe(subjects::session_votes_all(
            &SessionId::new(session).unwrap(),
        ))
        .await
        .unwrap();
    net.client.flush().await.unwrap();
    sub
}

/// Everything published on the watched subject within `window`.
async fn collect(sub: &mut Subscriber, window: Duration) -> Vec<async_nats::Message> {
    let mut out = Vec::new();
    let end = tokio::time::Instant::now() + window;
    while let Ok(Some(m)) = tokio::time::timeout_at(end, sub.next()).await {
        out.push(m);
    }
    out
}

async fn next(sub: &mut Subscriber) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("a message within 5 s")
        .expect("subscription open")
}

fn envelope(m: &async_nats::Message) -> SignedEnvelope {
    decode(ContentType::MsgPack, &m.payload, &Limits::default()).unwrap()
}

fn ballot(e: &SignedEnvelope) -> Ballot {
    e.open(&Limits::default()).unwrap()
}

// ---- registration and heartbeats ----------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_with_a_signed_registration_then_heartbeats_and_deregisters() {
    let net = net().await;
    let agent = start(&net, "reg-1", opinion(), &[]).await;
    let me = id("reg-1");
    wait_for("two heartbeats", || {
        registrations(&net, &me, subjects::REGISTRY_HEARTBEAT) >= 2
    })
    .await;
    let key = agent.key;
    agent.stop().await;
    assert_eq!(registrations(&net, &me, subjects::REGISTRY_DEREGISTER), 1);
    let requests = net.requests.lock().unwrap().clone();
    let mut last_sequence = 0;
    for (subject, env) in requests.iter().filter(|(_, e)| e.sender == me) {
        env.verify(&key).unwrap();
        assert_eq!(env.session.as_str(), "registry");
        assert!(env.sequence > last_sequence, "sequences increase");
        last_sequence = env.sequence;
        if subject == subjects::REGISTRY_REGISTER {
            let r: Registration = env.open(&Limits::default()).unwrap();
            assert_eq!(r.public_key, key, "the key inside proves possession");
            assert_eq!(r.capabilities, vec!["wire".to_owned()]);
        }
        if subject == subjects::REGISTRY_HEARTBEAT {
            let h: Heartbeat = env.open(&Limits::default()).unwrap();
            assert_eq!((h.load, h.capacity), (0.0, 1.0));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_answered_unknown_agent_makes_the_agent_register_again() {
    let net = net().await;
    let agent = start(&net, "forgotten", opinion(), &[]).await;
    let me = id("forgotten");
    net.forget.store(true, Ordering::SeqCst);
    wait_for("a second registration", || {
        registrations(&net, &me, subjects::REGISTRY_REGISTER) >= 2
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_retried_until_a_registry_answers() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let agent = Agent::builder("patient", "test")
        .decider(opinion())
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(agent.run(client.clone(), stop.clone()));
    // No registry yet: requests find no responders and are retried with backoff.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut sub = client.subscribe(subjects::REGISTRY_REGISTER).await.unwrap();
    let msg = next(&mut sub).await;
    let ack = RegistryAck {
        v: 1,
        agent_id: id("patient"),
        status: AgentStatus::Registered,
    };
    reply::respond(&client, &msg, reply::ok_body(ContentType::MsgPack, &ack)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_mismatch_refusal_stops_the_agent_with_a_typed_error() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client.subscribe(subjects::REGISTRY_REGISTER).await.unwrap();
    let agent = Agent::builder("impostor", "test")
        .decider(opinion())
        .build()
        .unwrap();
    let task = tokio::spawn(agent.run(client.clone(), CancellationToken::new()));
    let msg = next(&mut sub).await;
    let refusal = reply::error_body(ContentType::MsgPack, ErrorCode::KeyMismatch, "bound");
    reply::respond(&client, &msg, refusal).await;
    let err = task.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err,
            mabeam_agent::AgentError::RegistrationRefused {
                code: ErrorCode::KeyMismatch,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_builder_refuses_impossible_settings() {
    let bad_id = Agent::builder("a.b", "k").decider(opinion()).build();
    assert!(matches!(bad_id, Err(mabeam_agent::AgentError::Id(_))));
    let bad_expertise = Agent::builder("a", "k")
        .expertise(0.0)
        .decider(opinion())
        .build();
    assert!(bad_expertise.unwrap_err().to_string().contains("expertise"));
    let bad_interval = Agent::builder("a", "k")
        .heartbeat_interval(Duration::ZERO)
        .decider(opinion())
        .build();
    assert!(bad_interval
        .unwrap_err()
        .to_string()
        .contains("heartbeat_interval"));
    let no_kind = Agent::builder("a", " ").decider(opinion()).build();
    assert!(no_kind.unwrap_err().to_string().contains("kind"));
}

// ---- proposals ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_proposal_gets_a_ballot_signed_with_the_agents_key() {
    let net = net().await;
    let agent = start(&net, "voter", opinion(), &[]).await;
    let mut votes = watch(&net, "open-1").await;
    let p = proposal("open-1", "weighted", 1, &["a", "b"], RoundContext::Open);
    send(&net, "voter", &p).await;
    let msg = next(&mut votes).await;
    assert_eq!(msg.subject.as_str(), "mabeam.sessions.open-1.votes.voter");
    let env = envelope(&msg);
    env.verify(&agent.key).unwrap();
    assert_eq!((env.round, env.session.as_str()), (1, "open-1"));
    assert!(env.timestamp_ms.abs_diff(now_ms()) < 5_000, "wall clock");
    let b = ballot(&env);
    assert_eq!(b.phase, Phase::Vote);
    assert_eq!(b.value, VoteValue::Choice("b".into()));
    assert_eq!(b.confidence, 0.9);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterative_rounds_move_toward_the_aggregate_with_increasing_sequences() {
    let net = net().await;
    let agent = start(&net, "refiner", opinion(), &[]).await;
    let mut votes = watch(&net, "iter-1").await;
    send(
        &net,
        "refiner",
        &proposal("iter-1", "iterative", 1, &[], RoundContext::Open),
    )
    .await;
    let first = envelope(&next(&mut votes).await);
    assert_eq!(ballot(&first).value, VoteValue::Number(10.0));
    let refine = RoundContext::Refine {
        aggregate: vec![20.0],
        dispersion: 4.0,
    };
    send(
        &net,
        "refiner",
        &proposal("iter-1", "iterative", 2, &[], refine),
    )
    .await;
    let second = envelope(&next(&mut votes).await);
    second.verify(&agent.key).unwrap();
    assert_eq!(second.round, 2);
    assert_eq!(ballot(&second).value, VoteValue::Number(15.0), "half way");
    assert!(second.sequence > first.sequence);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_proposal_gets_an_offer_conceding_toward_it() {
    let net = net().await;
    let agent = start(&net, "trader", opinion(), &[]).await;
    let mut votes = watch(&net, "neg-1").await;
    send(
        &net,
        "trader",
        &proposal("neg-1", "negotiation", 1, &[], RoundContext::Open),
    )
    .await;
    let first = ballot(&envelope(&next(&mut votes).await));
    assert_eq!(
        first.value,
        VoteValue::Offer {
            value: 10.0,
            min: 9.0,
            max: 11.0
        }
    );
    let counter = RoundContext::Counter { proposal: 20.0 };
    send(
        &net,
        "trader",
        &proposal("neg-1", "negotiation", 2, &[], counter),
    )
    .await;
    let VoteValue::Offer { value, min, max } = ballot(&envelope(&next(&mut votes).await)).value
    else {
        panic!("expected an offer")
    };
    assert_eq!(value, 15.0);
    assert!(min <= value && value <= max && max > 11.0 && max <= 20.0);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_sent_proposal_gets_the_same_envelope_until_the_session_closes() {
    let net = net().await;
    let agent = start(&net, "steady", opinion(), &[]).await;
    let mut votes = watch(&net, "again-1").await;
    let p = proposal("again-1", "majority", 1, &["a", "b"], RoundContext::Open);
    send(&net, "steady", &p).await;
    let first = next(&mut votes).await;
    send(&net, "steady", &p).await;
    let second = next(&mut votes).await;
    assert_eq!(first.payload, second.payload, "byte for byte");
    close(&net, "steady", "again-1").await;
    send(&net, "steady", &p).await;
    let third = envelope(&next(&mut votes).await);
    assert!(
        third.sequence > envelope(&first).sequence,
        "state dropped: answered afresh"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_and_stale_inbox_messages_are_counted_and_the_agent_keeps_answering() {
    let metrics = mabeam_runtime::metrics::install().unwrap();
    let net = net().await;
    let agent = start(&net, "robust", opinion(), &[]).await;
    let mut votes = watch(&net, "bad-1").await;
    let inbox = subjects::agent_inbox(&id("robust"));
    net.client
        .publish(inbox.clone(), b"\xc1 not msgpack".as_slice().into())
        .await
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(MESSAGE_TYPE_HEADER, "gossip");
    net.client
        .publish_with_headers(inbox.clone(), headers, b"hi".as_slice().into())
        .await
        .unwrap();
    net.client
        .publish(
            subjects::agent_faults(&id("robust")),
            b"{".as_slice().into(),
        )
        .await
        .unwrap();
    let mut stale = proposal("bad-1", "majority", 1, &["a", "b"], RoundContext::Open);
    stale.deadline_ms = now_ms() - 60_000;
    send(&net, "robust", &stale).await;
    assert!(collect(&mut votes, Duration::from_millis(300))
        .await
        .is_empty());
    let rendered = metrics.render();
    for reason in [
        "bad_proposal",
        "unknown_message_type",
        "bad_fault_command",
        "stale_proposal",
    ] {
        let label = format!("mabeam_agent_messages_refused_total{{reason=\"{reason}\"}}");
        assert!(rendered.contains(&label), "{label} missing");
    }
    send(
        &net,
        "robust",
        &proposal("bad-1", "majority", 1, &["a", "b"], RoundContext::Open),
    )
    .await;
    envelope(&next(&mut votes).await)
        .verify(&agent.key)
        .unwrap();
    agent.stop().await;
}

// ---- Byzantine agreement ------------------------------------------------------------------

fn byzantine_context(names: &[&str]) -> RoundContext {
    let n = names.len() as u32;
    let f = (n - 1) / 3;
    RoundContext::Byzantine {
        fault_tolerance: f,
        quorum: (n + f + 1).div_ceil(2),
        electorate: names
            .iter()
            .map(|name| ElectorateMember {
                agent_id: id(name),
                public_key: mabeam_agent::keys::derive(SEED, &id(name)).public_key(),
            })
            .collect(),
        suggestion: None,
    }
}

/// Per sender: the distinct (phase, value) ballots it signed for round 1, checked against
/// its derived key.
fn tally(messages: &[async_nats::Message]) -> BTreeMap<String, BTreeSet<(String, String)>> {
    let mut out: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for m in messages {
        let Ok(env) =
            decode::<SignedEnvelope>(ContentType::MsgPack, &m.payload, &Limits::default())
        else {
            continue;
        };
        let key = mabeam_agent::keys::derive(SEED, &env.sender).public_key();
        if env.verify(&key).is_err() {
            continue;
        }
        let Ok(b) = env.open::<Ballot>(&Limits::default()) else {
            continue;
        };
        let VoteValue::Choice(v) = b.value else {
            continue;
        };
        out.entry(env.sender.to_string())
            .or_default()
            .insert((format!("{:?}", b.phase), v));
    }
    out
}

fn committed(t: &BTreeMap<String, BTreeSet<(String, String)>>, value: &str) -> usize {
    t.values()
        .filter(|s| s.contains(&("Commit".to_owned(), value.to_owned())))
        .count()
}

async fn byzantine_run(
    net: &Net,
    session: &str,
    names: &[&str],
    behaviours: &[(&str, AgentBehaviour)],
) -> (Vec<Running>, Vec<async_nats::Message>) {
    let mut agents = Vec::new();
    for name in names {
        let faults: Vec<AgentBehaviour> = behaviours
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .collect();
        agents.push(start(net, name, opinion(), &faults).await);
    }
    let mut votes = watch(net, session).await;
    let p = proposal(
        session,
        "byzantine",
        1,
        &["a", "b"],
        byzantine_context(names),
    );
    for name in names {
        send(net, name, &p).await;
    }
    let messages = collect(&mut votes, Duration::from_millis(1_200)).await;
    (agents, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_agents_on_one_client_reach_a_byzantine_decision_among_themselves() {
    let net = net().await;
    let names = ["b0", "b1", "b2", "b3"];
    let (agents, messages) = byzantine_run(&net, "byz-1", &names, &[]).await;
    let t = tally(&messages);
    assert_eq!(t.len(), 4, "{t:?}");
    for (agent, ballots) in &t {
        assert!(
            ballots.contains(&("Prepare".into(), "b".into())),
            "{agent}: {ballots:?}"
        );
    }
    assert!(committed(&t, "b") >= 3, "a quorum of signed commits: {t:?}");
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byzantine_equivocator_signs_two_values_and_the_honest_three_still_decide() {
    let net = net().await;
    let names = ["e0", "e1", "e2", "e3"];
    let (agents, messages) = byzantine_run(
        &net,
        "byz-eq",
        &names,
        &[("e3", AgentBehaviour::Equivocate)],
    )
    .await;
    let t = tally(&messages);
    let e3 = &t["e3"];
    assert!(
        e3.contains(&("Prepare".into(), "a".into()))
            && e3.contains(&("Prepare".into(), "b".into())),
        "{e3:?}"
    );
    let honest: usize = ["e0", "e1", "e2"]
        .iter()
        .filter(|n| t[**n].contains(&("Commit".into(), "b".into())))
        .count();
    assert_eq!(honest, 3, "{t:?}");
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_attacker_turns_when_a_quorum_is_near() {
    let net = net().await;
    let names = ["d0", "d1", "d2", "d3"];
    let (agents, messages) =
        byzantine_run(&net, "byz-ad", &names, &[("d3", AgentBehaviour::Adaptive)]).await;
    let t = tally(&messages);
    let d3 = &t["d3"];
    let prepared: BTreeSet<&String> = d3
        .iter()
        .filter(|(phase, _)| phase == "Prepare")
        .map(|(_, v)| v)
        .collect();
    let commits = d3.iter().filter(|(phase, _)| phase == "Commit").count();
    assert_eq!(
        prepared.len(),
        2,
        "honest prepare, then another value: {d3:?}"
    );
    assert_eq!(commits, 2, "commits both values: {d3:?}");
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_from_its_peers_prepares_but_never_commits() {
    let net = net().await;
    let names = ["u0", "u1", "u2", "u3"];
    let mut partition = fault("partition", None);
    partition.unreachable = vec![id("u1"), id("u2"), id("u3")];
    let mut agents = Vec::new();
    for name in names {
        agents.push(start(&net, name, opinion(), &[]).await);
    }
    send_fault(&net, "u0", &partition).await;
    let mut votes = watch(&net, "byz-part").await;
    let p = proposal(
        "byz-part",
        "byzantine",
        1,
        &["a", "b"],
        byzantine_context(&names),
    );
    for name in names {
        send(&net, name, &p).await;
    }
    let t = tally(&collect(&mut votes, Duration::from_millis(1_000)).await);
    assert_eq!(
        t["u0"],
        BTreeSet::from([("Prepare".to_owned(), "b".to_owned())]),
        "heard no prepare from anyone"
    );
    assert_eq!(committed(&t, "b"), 3, "the others hear it and decide");
    for a in agents {
        a.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byzantine_coalition_prepares_and_commits_its_value() {
    let net = net().await;
    let names = ["c0", "c1", "c2", "c3"];
    let coalition = AgentBehaviour::Coalition { value: "a".into() };
    let (agents, messages) = byzantine_run(&net, "byz-co", &names, &[("c3", coalition)]).await;
    let t = tally(&messages);
    assert_eq!(
        t["c3"],
        BTreeSet::from([
            ("Commit".to_owned(), "a".to_owned()),
            ("Prepare".to_owned(), "a".to_owned())
        ])
    );
    assert_eq!(committed(&t, "b"), 3, "{t:?}");
    for a in agents {
        a.stop().await;
    }
}

// ---- the fault layer on plain rounds ----------------------------------------------------

/// Runs one majority round with `behaviour` active and returns what arrived in `window`.
async fn faulty_round(
    net: &Net,
    name: &str,
    session: &str,
    behaviour: AgentBehaviour,
    window: Duration,
) -> (Running, Vec<async_nats::Message>) {
    let agent = start(net, name, opinion(), &[]).await;
    send_fault(net, name, &fault("f1", Some(behaviour))).await;
    let mut votes = watch(net, session).await;
    send(
        net,
        name,
        &proposal(session, "majority", 1, &["a", "b"], RoundContext::Open),
    )
    .await;
    let messages = collect(&mut votes, window).await;
    (agent, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_publishes_nothing_and_stops_heartbeats_until_healed() {
    let net = net().await;
    let (agent, messages) = faulty_round(
        &net,
        "crasher",
        "crash-1",
        AgentBehaviour::Crash,
        Duration::from_millis(400),
    )
    .await;
    assert!(messages.is_empty());
    let me = id("crasher");
    let beats = registrations(&net, &me, subjects::REGISTRY_HEARTBEAT);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        registrations(&net, &me, subjects::REGISTRY_HEARTBEAT),
        beats,
        "no heartbeats"
    );
    send_fault(&net, "crasher", &fault("f1", None)).await;
    wait_for("heartbeats again", || {
        registrations(&net, &me, subjects::REGISTRY_HEARTBEAT) > beats
    })
    .await;
    let mut votes = watch(&net, "crash-2").await;
    send(
        &net,
        "crasher",
        &proposal("crash-2", "majority", 1, &["a", "b"], RoundContext::Open),
    )
    .await;
    envelope(&next(&mut votes).await)
        .verify(&agent.key)
        .unwrap();
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_keeps_heartbeating_but_never_votes() {
    let net = net().await;
    let (agent, messages) = faulty_round(
        &net,
        "mute",
        "silent-1",
        AgentBehaviour::Silent,
        Duration::from_millis(400),
    )
    .await;
    assert!(messages.is_empty());
    let me = id("mute");
    let beats = registrations(&net, &me, subjects::REGISTRY_HEARTBEAT);
    wait_for("heartbeats", || {
        registrations(&net, &me, subjects::REGISTRY_HEARTBEAT) > beats
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_delays_each_ballot() {
    let net = net().await;
    let agent = start(&net, "sloth", opinion(), &[]).await;
    let slow = AgentBehaviour::Slow {
        delay_ms: 400,
        jitter_ms: 50,
    };
    send_fault(&net, "sloth", &fault("f1", Some(slow))).await;
    let mut votes = watch(&net, "slow-1").await;
    let sent = std::time::Instant::now();
    send(
        &net,
        "sloth",
        &proposal("slow-1", "majority", 1, &["a", "b"], RoundContext::Open),
    )
    .await;
    envelope(&next(&mut votes).await)
        .verify(&agent.key)
        .unwrap();
    assert!(
        sent.elapsed() >= Duration::from_millis(340),
        "{:?}",
        sent.elapsed()
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_every_message_publishes_nothing() {
    let net = net().await;
    let (agent, messages) = faulty_round(
        &net,
        "lossy",
        "drop-1",
        AgentBehaviour::Drop { percent: 100.0 },
        Duration::from_millis(400),
    )
    .await;
    assert!(messages.is_empty());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_sends_garbage_and_an_undecodable_payload() {
    let net = net().await;
    let (agent, messages) = faulty_round(
        &net,
        "garbler",
        "corrupt-1",
        AgentBehaviour::Corrupt,
        Duration::from_millis(400),
    )
    .await;
    assert_eq!(messages.len(), 2);
    let limits = Limits::default();
    assert!(decode::<SignedEnvelope>(ContentType::MsgPack, &messages[0].payload, &limits).is_err());
    let env = envelope(&messages[1]);
    env.verify(&agent.key).unwrap();
    assert!(
        env.open::<Ballot>(&limits).is_err(),
        "payload is not a ballot"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocate_signs_two_different_ballots_for_one_slot() {
    let net = net().await;
    let (agent, messages) = faulty_round(
        &net,
        "twofaced",
        "equiv-1",
        AgentBehaviour::Equivocate,
        Duration::from_millis(400),
    )
    .await;
    assert_eq!(messages.len(), 2);
    let (a, b) = (envelope(&messages[0]), envelope(&messages[1]));
    a.verify(&agent.key).unwrap();
    b.verify(&agent.key).unwrap();
    assert_eq!((a.session.clone(), a.round), (b.session.clone(), b.round));
    let (ba, bb) = (ballot(&a), ballot(&b));
    assert_eq!(ba.phase, bb.phase);
    assert_ne!(ba.value, bb.value);
    let evidence = mabeam_protocol::session::EquivocationEvidence {
        v: 1,
        agent_id: id("twofaced"),
        session_id: a.session.clone(),
        round: 1,
        first: a,
        second: b,
    };
    assert!(evidence.verify(&agent.key, &Limits::default()));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_signature_fails_verification_with_the_registered_key() {
    let net = net().await;
    let (agent, messages) = faulty_round(
        &net,
        "forger",
        "sig-1",
        AgentBehaviour::InvalidSignature,
        Duration::from_millis(400),
    )
    .await;
    assert_eq!(messages.len(), 1);
    let env = envelope(&messages[0]);
    assert!(env.verify(&agent.key).is_err());
    assert_eq!(
        ballot(&env).value,
        VoteValue::Choice("b".into()),
        "honest content"
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_re_sends_envelopes_of_an_earlier_session() {
    let net = net().await;
    let agent = start(&net, "parrot", opinion(), &[]).await;
    let mut first = watch(&net, "replay-1").await;
    send(
        &net,
        "parrot",
        &proposal("replay-1", "majority", 1, &["a", "b"], RoundContext::Open),
    )
    .await;
    let original = next(&mut first).await;
    send_fault(&net, "parrot", &fault("f1", Some(AgentBehaviour::Replay))).await;
    let mut second = watch(&net, "replay-2").await;
    send(
        &net,
        "parrot",
        &proposal("replay-2", "majority", 1, &["a", "b"], RoundContext::Open),
    )
    .await;
    let replayed = collect(&mut second, Duration::from_millis(400)).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].payload, original.payload);
    assert_eq!(envelope(&replayed[0]).session.as_str(), "replay-1");
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timing_attack_holds_the_ballot_until_the_deadline() {
    let net = net().await;
    let agent = start(&net, "lurker", opinion(), &[]).await;
    send_fault(
        &net,
        "lurker",
        &fault("f1", Some(AgentBehaviour::TimingAttack)),
    )
    .await;
    let mut votes = watch(&net, "timing-1").await;
    let p = proposal("timing-1", "majority", 1, &["a", "b"], RoundContext::Open);
    send(&net, "lurker", &p).await;
    let _ = next(&mut votes).await;
    let arrived = now_ms();
    assert!(
        arrived.abs_diff(p.deadline_ms) <= 250,
        "arrived {} ms from the deadline",
        arrived as i64 - p.deadline_ms as i64
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalition_votes_its_value_and_adaptive_contradicts_itself() {
    let net = net().await;
    let coalition = AgentBehaviour::Coalition { value: "a".into() };
    let (agent, messages) = faulty_round(
        &net,
        "member",
        "coal-1",
        coalition,
        Duration::from_millis(400),
    )
    .await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        ballot(&envelope(&messages[0])).value,
        VoteValue::Choice("a".into())
    );
    agent.stop().await;

    let (agent, messages) = faulty_round(
        &net,
        "turncoat",
        "adapt-1",
        AgentBehaviour::Adaptive,
        Duration::from_millis(600),
    )
    .await;
    assert_eq!(messages.len(), 2);
    assert_eq!(
        ballot(&envelope(&messages[0])).value,
        VoteValue::Choice("b".into())
    );
    assert_eq!(
        ballot(&envelope(&messages[1])).value,
        VoteValue::Choice("a".into())
    );
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_partition_means_no_answer_and_healing_restores_honesty() {
    let net = net().await;
    let agent = start(&net, "island", opinion(), &[]).await;
    let mut cut = fault("part", None);
    cut.coordinator_unreachable = true;
    send_fault(&net, "island", &cut).await;
    let mut votes = watch(&net, "island-1").await;
    let p = proposal("island-1", "majority", 1, &["a", "b"], RoundContext::Open);
    send(&net, "island", &p).await;
    assert!(collect(&mut votes, Duration::from_millis(400))
        .await
        .is_empty());
    send_fault(&net, "island", &fault("part", None)).await;
    send(&net, "island", &p).await;
    let env = envelope(&next(&mut votes).await);
    env.verify(&agent.key).unwrap();
    assert_eq!(ballot(&env).value, VoteValue::Choice("b".into()));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healing_a_behaviour_makes_the_agent_honest_again() {
    let net = net().await;
    let (agent, messages) = faulty_round(
        &net,
        "reformed",
        "heal-1",
        AgentBehaviour::Equivocate,
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(messages.len(), 2);
    send_fault(&net, "reformed", &fault("f1", None)).await;
    let mut votes = watch(&net, "heal-2").await;
    send(
        &net,
        "reformed",
        &proposal("heal-2", "majority", 1, &["a", "b"], RoundContext::Open),
    )
    .await;
    let after = collect(&mut votes, Duration::from_millis(400)).await;
    assert_eq!(after.len(), 1);
    let env = envelope(&after[0]);
    env.verify(&agent.key).unwrap();
    assert_eq!(ballot(&env).value, VoteValue::Choice("b".into()));
    agent.stop().await;
}
