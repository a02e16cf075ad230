//! Helpers shared by the telemetry test binaries: start the service in-process, publish
//! events, query the audit trail over NATS and HTTP, read `/metrics`.

// Each test binary uses a different subset of these helpers.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
use mabeam_protocol::{
    codec::{decode, encode, ContentType},
    subjects,
    telemetry::{AuditPage, AuditQuery, EventKind, Service, TelemetryEvent},
    ErrorReply, Limits,
};
use mabeam_runtime::{reply, Shutdown};
use mabeam_telemetry::{Config, Running};
use mabeam_testkit::Infra;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub struct Telemetry {
    pub running: Running,
    pub shutdown: Shutdown,
}

impl Telemetry {
    pub async fn start(infra: &Infra, extra: &[(&str, &str)]) -> Self {
        let mut env = infra.env();
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let config = Config::from_env(&env).unwrap();
        let shutdown = Shutdown::new();
        let running = mabeam_telemetry::start(config, shutdown.clone())
            .await
            .unwrap();
        Self { running, shutdown }
    }

    pub fn http(&self) -> SocketAddr {
        self.running.http_addr
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.running.join)
            .await
            .expect("telemetry stops")
            .unwrap();
    }
}

pub async fn connect(infra: &Infra) -> async_nats::Client {
    async_nats::connect(infra.nats.url()).await.unwrap()
}

pub fn event(service: Service, at_ms: u64, kind: EventKind) -> TelemetryEvent {
    TelemetryEvent {
        v: 1,
        service,
        instance: "test-1".into(),
        at_ms,
        event: kind,
    }
}

/// Publishes an event on its subject, as `EventSink` does.
pub async fn publish(client: &async_nats::Client, event: &TelemetryEvent) {
    let subject = subjects::event(event.service, event.event.name());
    let body = encode(ContentType::MsgPack, event).unwrap();
    client.publish(subject, body.into()).await.unwrap();
}

/// The audit query over NATS, in `ct`; the reply or the error reply.
pub async fn audit_nats(
    client: &async_nats::Client,
    query: &AuditQuery,
    ct: ContentType,
) -> Result<AuditPage, ErrorReply> {
    let body = encode(ct, query).unwrap();
    audit_nats_raw(client, reply::headers_for(ct), body.into()).await
}

pub async fn audit_nats_raw(
    client: &async_nats::Client,
    headers: async_nats::HeaderMap,
    body: Bytes,
) -> Result<AuditPage, ErrorReply> {
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        client.request_with_headers(subjects::TELEMETRY_AUDIT, headers, body),
    )
    .await
    .expect("audit reply in time")
    .unwrap();
    if let Some(err) = reply::as_error(answer.headers.as_ref(), &answer.payload) {
        return Err(err);
    }
    let ct = reply::content_type(answer.headers.as_ref()).unwrap();
    Ok(decode(ct, &answer.payload, &Limits::default()).unwrap())
}

/// A plain HTTP/1.0 GET: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    (status, body.to_owned())
}

pub async fn metrics_text(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

pub use mabeam_testkit::metric_sample as sample;

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
