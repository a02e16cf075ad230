//! An SDK agent against the real registry service (started in-process) over real NATS and
//! Redis.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mabeam_agent::{Agent, Opinion};
use mabeam_protocol::{
    codec::{decode, encode, ContentType},
    registry::{AgentInfo, AgentList, AgentQuery, AgentStatus},
    subjects, AgentId, Limits,
};
use mabeam_runtime::{reply, Shutdown};
use mabeam_testkit::Infra;
use tokio_util::sync::CancellationToken;

async fn registry(infra: &Infra) -> Shutdown {
    let mut env = infra.env();
    env.insert("MABEAM_SWEEP_INTERVAL_MS".into(), "100".into());
    let config = mabeam_registry::Config::from_env(&env).unwrap();
    let shutdown = Shutdown::new();
    mabeam_registry::start(config, shutdown.clone())
        .await
        .unwrap();
    shutdown
}

async fn lookup(client: &async_nats::Client, id: &str) -> Option<AgentInfo> {
    // `AgentQuery::default()` has version 0, which the registry refuses.
    let query = AgentQuery {
        v: mabeam_protocol::PROTOCOL_VERSION,
        agent_ids: vec![AgentId::new(id).unwrap()],
        ..AgentQuery::default()
    };
    let body = encode(ContentType::MsgPack, &query).unwrap();
    let reply = client
        .request_with_headers(
            subjects::REGISTRY_QUERY,
            reply::headers_for(ContentType::MsgPack),
            body.into(),
        )
        .await
        .ok()?;
    let list: AgentList = decode(ContentType::MsgPack, &reply.payload, &Limits::default()).ok()?;
    list.agents.into_iter().next()
}

async fn wait_until(
    client: &async_nats::Client,
    id: &str,
    what: &str,
    check: impl Fn(Option<&AgentInfo>) -> bool,
) -> Option<AgentInfo> {
    for _ in 0..200 {
        let info = lookup(client, id).await;
        if check(info.as_ref()) {
            return info;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_agent_registers_heartbeats_and_deregisters_with_the_real_registry() {
    let infra = Infra::start();
    let _registry = registry(&infra).await;
    let client = async_nats::connect(infra.nats.url()).await.unwrap();
    let agent = Agent::builder("sdk-1", "test")
        .capabilities(["gpu"])
        .expertise(1.5)
        .load(2.0, 8.0)
        .heartbeat_interval(Duration::from_millis(100))
        .decider(Opinion::default())
        .build()
        .unwrap();
    let key = agent.public_key();
    let stop = CancellationToken::new();
    let task = tokio::spawn(agent.run(client.clone(), stop.clone()));
    let info = wait_until(&client, "sdk-1", "an active agent", |i| {
        i.is_some_and(|i| i.status == AgentStatus::Active)
    })
    .await
    .unwrap();
    assert_eq!(info.public_key, key);
    assert_eq!(info.capabilities, vec!["gpu".to_owned()]);
    assert_eq!(info.expertise, 1.5);
    assert_eq!((info.load, info.capacity), (2.0, 8.0));
    assert!(info.last_heartbeat_ms.is_some());
    stop.cancel();
    task.await.unwrap().unwrap();
    wait_until(&client, "sdk-1", "the agent gone", |i| i.is_none()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_registers_again_after_the_registry_lost_its_state() {
    let mut infra = Infra::start();
    let _registry = registry(&infra).await;
    let client = async_nats::connect(infra.nats.url()).await.unwrap();
    let agent = Agent::builder("sdk-2", "test")
        .heartbeat_interval(Duration::from_millis(100))
        .decider(Opinion::default())
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let task = tokio::spawn(agent.run(client.clone(), stop.clone()));
    wait_until(&client, "sdk-2", "registration", |i| i.is_some()).await;
    // Redis keeps nothing across a restart: the registry forgets every agent, the next
    // heartbeat is answered `unknown_agent` and the SDK registers again.
    infra.redis.stop();
    infra.redis.start_again();
    wait_until(&client, "sdk-2", "registration again", |i| {
        i.is_some_and(|i| i.status == AgentStatus::Active)
    })
    .await;
    stop.cancel();
    task.await.unwrap().unwrap();
}
