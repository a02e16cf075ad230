//! What the fault-injector tests share: starting the service on real infrastructure,
//! requests, and agents' fault subjects.

#![allow(dead_code)]

use std::time::Duration;

use futures::StreamExt;
use mabeam_fault_injector::{Config, Running};
use mabeam_protocol::{
    codec::{decode, encode, ContentType, Message, CONTENT_TYPE_HEADER},
    fault::{AgentFaultCommand, FaultList},
    subjects, AgentId, ErrorReply, Limits,
};
use mabeam_runtime::{reply, Shutdown};
use mabeam_testkit::Infra;

pub(crate) const WAIT: Duration = Duration::from_secs(5);

pub(crate) struct Injector {
    pub(crate) running: Running,
    pub(crate) shutdown: Shutdown,
}

impl Injector {
    pub(crate) async fn start(infra: &Infra, extra: &[(&str, String)]) -> Self {
        let mut env = infra.env();
        for (k, v) in extra {
            env.insert((*k).to_owned(), v.clone());
        }
        let config = Config::from_env(&env).expect("valid config");
        let shutdown = Shutdown::new();
        let running = mabeam_fault_injector::start(config, shutdown.clone())
            .await
            .expect("injector starts");
        Self { running, shutdown }
    }

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.running.join)
            .await
            .expect("injector stops in time")
            .expect("injector task ends cleanly");
    }
}

pub(crate) async fn client(infra: &Infra) -> async_nats::Client {
    async_nats::connect(infra.nats.url())
        .await
        .expect("test client connects")
}

pub(crate) fn agent(name: &str) -> AgentId {
    AgentId::new(name).expect("valid agent id")
}

pub(crate) fn agents(names: &[&str]) -> Vec<AgentId> {
    names.iter().map(|n| agent(n)).collect()
}

/// Sends `message` as msgpack; the injector's answer or its typed refusal.
pub(crate) async fn call<T: Message>(
    client: &async_nats::Client,
    subject: &'static str,
    message: &T,
) -> Result<FaultList, ErrorReply> {
    let body = encode(ContentType::MsgPack, message).expect("encodes");
    let reply = call_raw(client, subject, ContentType::MsgPack, body).await;
    if let Some(err) = reply::as_error(reply.headers.as_ref(), &reply.payload) {
        return Err(err);
    }
    Ok(decode(ContentType::MsgPack, &reply.payload, &Limits::default()).expect("a fault list"))
}

pub(crate) async fn call_raw(
    client: &async_nats::Client,
    subject: &'static str,
    ct: ContentType,
    body: Vec<u8>,
) -> async_nats::Message {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(CONTENT_TYPE_HEADER, ct.header_value());
    tokio::time::timeout(
        WAIT,
        client.request_with_headers(subject, headers, body.into()),
    )
    .await
    .expect("answer in time")
    .expect("request succeeds")
}

/// Subscribes to an agent's fault subject (the subscription is in place on return).
pub(crate) async fn faults_of(
    client: &async_nats::Client,
    agent: &AgentId,
) -> async_nats::Subscriber {
    let sub = client
        .subscribe(subjects::agent_faults(agent))
        .await
        .expect("subscribes");
    client.flush().await.expect("flush");
    sub
}

pub(crate) async fn next_command(
    sub: &mut async_nats::Subscriber,
    within: Duration,
) -> Option<AgentFaultCommand> {
    let message = tokio::time::timeout(within, sub.next()).await.ok()??;
    let ct = reply::content_type(message.headers.as_ref()).expect("content type");
    Some(decode(ct, &message.payload, &Limits::default()).expect("a fault command"))
}

pub(crate) async fn expect_command(sub: &mut async_nats::Subscriber) -> AgentFaultCommand {
    next_command(sub, WAIT)
        .await
        .expect("a fault command within 5 s")
}

pub(crate) async fn expect_silence(sub: &mut async_nats::Subscriber, during: Duration) {
    if let Some(c) = next_command(sub, during).await {
        panic!("unexpected command {c:?}");
    }
}
