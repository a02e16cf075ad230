//! agent-sim started in-process against a real nats-server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use async_nats::{HeaderMap, Subscriber};
use futures::StreamExt;
use mabeam_agent_sim::{start, Config, Running};
use mabeam_protocol::{
    codec::{decode, encode, ContentType},
    registry::{AgentList, AgentQuery, AgentStatus},
    session::{
        Ballot, ElectorateMember, Phase, Proposal, RoundContext, VoteValue, MESSAGE_TYPE_HEADER,
        MESSAGE_TYPE_PROPOSAL,
    },
    subjects, Limits, SessionId, SignedEnvelope, TaskId,
};
use mabeam_runtime::{now_ms, Shutdown};
use mabeam_testkit::Infra;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn fleet(infra: &Infra, extra: &[(&str, &str)]) -> (Running, Shutdown) {
    let mut env = infra.env();
    for (k, v) in extra {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let config = Config::from_env(&env).unwrap();
    let shutdown = Shutdown::new();
    let running = start(config, shutdown.clone()).await.unwrap();
    (running, shutdown)
}

fn proposal(session: &str, algorithm: &str, options: &[&str]) -> Proposal {
    Proposal {
        v: 1,
        task_id: TaskId::new(format!("task-{session}")).unwrap(),
        session_id: SessionId::new(session).unwrap(),
        algorithm: algorithm.into(),
        round: 1,
        phase: Phase::Vote,
        proposal: serde_json::json!("pick one"),
        options: options.iter().map(|s| (*s).to_owned()).collect(),
        deadline_ms: now_ms() + 5_000,
        context: RoundContext::Open,
    }
}

/// Sends `p` to every agent of the fleet and collects, per agent, the valid ballots that
/// arrive within `window` (checked against the agent's key), or until every agent sent
/// `per_agent`.
async fn ask_all(
    client: &async_nats::Client,
    running: &Running,
    p: &Proposal,
    window: Duration,
    per_agent: usize,
) -> BTreeMap<String, Vec<Ballot>> {
    let mut votes: Subscriber = client
        .subscribe(subjects::session_votes_all(&p.session_id))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let body = encode(ContentType::MsgPack, p).unwrap();
    for (id, _) in &running.agents {
        let mut headers = HeaderMap::new();
        headers.insert(MESSAGE_TYPE_HEADER, MESSAGE_TYPE_PROPOSAL);
        client
            .publish_with_headers(subjects::agent_inbox(id), headers, body.clone().into())
            .await
            .unwrap();
    }
    let keys: BTreeMap<_, _> = running.agents.iter().cloned().collect();
    let mut out: BTreeMap<String, Vec<Ballot>> = BTreeMap::new();
    let end = tokio::time::Instant::now() + window;
    while let Ok(Some(m)) = tokio::time::timeout_at(end, votes.next()).await {
        let env: SignedEnvelope =
            decode(ContentType::MsgPack, &m.payload, &Limits::default()).unwrap();
        env.verify(&keys[&env.sender]).unwrap();
        out.entry(env.sender.to_string())
            .or_default()
            .push(env.open(&Limits::default()).unwrap());
        if out.len() == running.agents.len() && out.values().all(|b| b.len() >= per_agent) {
            break;
        }
    }
    out
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_agents_on_one_connection_all_answer_a_proposal() {
    let infra = Infra::start();
    let (running, shutdown) = fleet(&infra, &[("MABEAM_SIM_AGENTS", "200")]).await;
    assert_eq!(running.agents.len(), 200);
    let client = async_nats::connect(infra.nats.url()).await.unwrap();
    // The agents subscribe as they start; a short wait lets the last ones get there.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = proposal("fleet-1", "weighted", &["first", "second", "third"]);
    let answers = ask_all(&client, &running, &p, Duration::from_secs(5), 1).await;
    assert_eq!(answers.len(), 200, "every agent answered");
    let first = answers
        .values()
        .filter(|b| b[0].value == VoteValue::Choice("first".into()))
        .count();
    assert!(
        first >= 150,
        "the consensus profile prefers the first option: {first}"
    );
    assert!(
        answers.values().all(|b| b.len() == 1),
        "honest: one ballot each"
    );

    let metrics = http_get(running.http_addr, "/metrics").await;
    assert!(metrics.contains("mabeam_agent_sim_agents 200"), "{metrics}");
    assert!(metrics.contains("mabeam_agent_votes_sent_total"));
    assert!(http_get(running.http_addr, "/readyz")
        .await
        .starts_with("HTTP/1.1 200"));
    let ping = client
        .request("$SRV.PING.mabeam-agent-sim", "".into())
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&ping.payload).contains("mabeam-agent-sim"));
    assert!(http_get(running.http_addr, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), running.task)
        .await
        .expect("the fleet stops")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_byzantine_share_misbehaves_and_the_rest_answer_every_algorithm() {
    let infra = Infra::start();
    let (running, shutdown) = fleet(
        &infra,
        &[
            ("MABEAM_SIM_AGENTS", "20"),
            ("MABEAM_SIM_BYZANTINE_SHARE", "0.25"),
            ("MABEAM_SIM_BYZANTINE_BEHAVIOUR", "equivocate"),
        ],
    )
    .await;
    let client = async_nats::connect(infra.nats.url()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = ask_all(
        &client,
        &running,
        &proposal("fleet-eq", "majority", &["a", "b"]),
        Duration::from_secs(1),
        2,
    )
    .await;
    let twice = answers.values().filter(|b| b.len() == 2).count();
    assert_eq!(answers.len(), 20);
    assert_eq!(twice, 5, "a quarter equivocates");

    let kinds = [
        ("ranked_choice", "ranking"),
        ("iterative", "number"),
        ("negotiation", "offer"),
        ("auction", "bid"),
        ("leader_election", "choice"),
        ("work_distribution", "load"),
    ];
    for (algorithm, kind) in kinds {
        let session = format!("fleet-{}", algorithm.replace('_', "-"));
        let answers = ask_all(
            &client,
            &running,
            &proposal(&session, algorithm, &["a", "b"]),
            Duration::from_secs(2),
            1,
        )
        .await;
        assert_eq!(answers.len(), 20, "{algorithm}");
        let seen: BTreeSet<&str> = answers
            .values()
            .flatten()
            .map(|b| match &b.value {
                VoteValue::Choice(_) => "choice",
                VoteValue::Ranking(_) => "ranking",
                VoteValue::Number(_) => "number",
                VoteValue::Bid(_) => "bid",
                VoteValue::Offer { .. } => "offer",
                VoteValue::Load { .. } => "load",
                other => panic!("{algorithm}: unexpected {other:?}"),
            })
            .collect();
        assert_eq!(seen, BTreeSet::from([kind]), "{algorithm}");
    }
    shutdown.cancel();
    running.task.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_registers_with_the_real_registry_and_a_restart_keeps_its_keys() {
    let infra = Infra::start();
    let registry_config = mabeam_registry::Config::from_env(&infra.env()).unwrap();
    let registry_stop = Shutdown::new();
    mabeam_registry::start(registry_config, registry_stop.clone())
        .await
        .unwrap();
    let client = async_nats::connect(infra.nats.url()).await.unwrap();
    let extra = [
        ("MABEAM_SIM_AGENTS", "50"),
        ("MABEAM_SIM_CAPABILITIES", "gpu,cpu"),
        ("MABEAM_HEARTBEAT_INTERVAL_MS", "200"),
    ];
    let active = |capability: &'static str| {
        let client = client.clone();
        async move {
            let query = AgentQuery {
                v: mabeam_protocol::PROTOCOL_VERSION,
                capability: Some(capability.into()),
                status: Some(AgentStatus::Active),
                ..AgentQuery::default()
            };
            let body = encode(ContentType::MsgPack, &query).unwrap();
            let reply = client
                .request(subjects::REGISTRY_QUERY, body.into())
                .await
                .unwrap();
            decode::<AgentList>(ContentType::MsgPack, &reply.payload, &Limits::default())
                .unwrap()
                .agents
        }
    };
    let mut first_keys = None;
    for run in 0..2 {
        let (running, shutdown) = fleet(&infra, &extra).await;
        let previous = first_keys.get_or_insert_with(|| running.agents.clone());
        assert_eq!(*previous, running.agents, "the seed gives the same keys");
        let mut gpu = Vec::new();
        for _ in 0..100 {
            gpu = active("gpu").await;
            if gpu.len() == 25 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(gpu.len(), 25, "run {run}: half the fleet has gpu");
        let keys: BTreeMap<_, _> = running.agents.iter().cloned().collect();
        assert!(gpu.iter().all(|a| keys[&a.agent_id] == a.public_key));
        // Deregistration on the way out leaves the registry empty.
        shutdown.cancel();
        running.task.await.unwrap();
        assert!(active("cpu").await.is_empty(), "run {run}: deregistered");
    }
    registry_stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_one_simulated_agents_reach_byzantine_agreement_among_themselves() {
    let infra = Infra::start();
    let (running, shutdown) = fleet(&infra, &[("MABEAM_SIM_AGENTS", "31")]).await;
    let client = async_nats::connect(infra.nats.url()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let n = running.agents.len() as u32;
    let f = (n - 1) / 3;
    let quorum = (n + f + 1).div_ceil(2);
    let mut p = proposal("fleet-byz", "byzantine", &["first", "second"]);
    p.phase = Phase::Prepare;
    p.context = RoundContext::Byzantine {
        fault_tolerance: f,
        quorum,
        electorate: running
            .agents
            .iter()
            .map(|(agent_id, public_key)| ElectorateMember {
                agent_id: agent_id.clone(),
                public_key: *public_key,
            })
            .collect(),
        suggestion: None,
    };
    // Agents re-send their round's envelopes to peers that joined late, so count distinct
    // ballots over the whole window.
    let answers = ask_all(&client, &running, &p, Duration::from_secs(2), usize::MAX).await;
    let commits: BTreeMap<String, usize> = answers
        .values()
        .flat_map(|ballots| {
            let committed: BTreeSet<String> = ballots
                .iter()
                .filter(|b| b.phase == Phase::Commit)
                .filter_map(|b| match &b.value {
                    VoteValue::Choice(c) => Some(c.clone()),
                    _ => None,
                })
                .collect();
            committed
        })
        .fold(BTreeMap::new(), |mut acc, v| {
            *acc.entry(v).or_default() += 1;
            acc
        });
    assert_eq!(commits.len(), 1, "one value committed: {commits:?}");
    assert!(
        commits.values().all(|&c| c >= quorum as usize),
        "a quorum of {quorum} commits: {commits:?}"
    );
    shutdown.cancel();
    running.task.await.unwrap();
}
