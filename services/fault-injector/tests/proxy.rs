//! The TCP fault proxy in front of real NATS and Redis, driven through the injector's API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::*;
use futures::StreamExt;
use mabeam_protocol::{
    fault::{FaultHeal, FaultKind, FaultSpec, Link, LinkFault},
    subjects, PROTOCOL_VERSION,
};
use mabeam_testkit::Infra;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

async fn with_proxies(infra: &Infra) -> Injector {
    Injector::start(
        infra,
        &[
            ("MABEAM_PROXY_NATS_LISTEN", "127.0.0.1:0".into()),
            (
                "MABEAM_PROXY_NATS_UPSTREAM",
                format!("127.0.0.1:{}", infra.nats.port()),
            ),
            ("MABEAM_PROXY_REDIS_LISTEN", "127.0.0.1:0".into()),
            (
                "MABEAM_PROXY_REDIS_UPSTREAM",
                format!("127.0.0.1:{}", infra.redis.port()),
            ),
        ],
    )
    .await
}

async fn link_fault(client: &async_nats::Client, id: &str, link: Link, fault: LinkFault) {
    call(
        client,
        subjects::FAULTS_INJECT,
        &FaultSpec {
            v: PROTOCOL_VERSION,
            id: Some(id.to_owned()),
            fault: FaultKind::Link { link, fault },
            start_after_ms: 0,
            duration_ms: None,
        },
    )
    .await
    .unwrap();
}

async fn heal(client: &async_nats::Client, id: &str) {
    call(
        client,
        subjects::FAULTS_HEAL,
        &FaultHeal {
            v: PROTOCOL_VERSION,
            id: Some(id.to_owned()),
        },
    )
    .await
    .unwrap();
}

async fn redis_via(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_millis(800)));
    redis::Client::open(format!("redis://{addr}"))
        .unwrap()
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap()
}

async fn ping(conn: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<String> {
    redis::cmd("PING").query_async(conn).await
}

/// A raw RESP PING on a fresh connection: `Some(reply)` or `None` when nothing came back.
async fn raw_ping(stream: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    stream.write_all(b"PING\r\n").await.ok()?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(within, stream.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_nats_pass_through_the_proxy() {
    let infra = Infra::start();
    let injector = with_proxies(&infra).await;
    let redis_addr = injector.running.proxy_addr(Link::Redis).unwrap();
    let nats_addr = injector.running.proxy_addr(Link::Nats).unwrap();

    let mut conn = redis_via(redis_addr).await;
    assert_eq!(ping(&mut conn).await.unwrap(), "PONG");
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query_async(&mut conn)
        .await
        .unwrap();
    let v: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(v, "v");

    let proxied = async_nats::connect(format!("nats://{nats_addr}"))
        .await
        .unwrap();
    let direct = client(&infra).await;
    let mut sub = direct.subscribe("proxy.check").await.unwrap();
    direct.flush().await.unwrap();
    proxied
        .publish("proxy.check", "through the proxy".into())
        .await
        .unwrap();
    proxied.flush().await.unwrap();
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"through the proxy");

    // Both links count their traffic and connections.
    let metrics = http_get(injector.running.http_addr, "/metrics").await;
    for needle in [
        "mabeam_fault_proxy_bytes_total{link=\"redis\",direction=\"upstream\"}",
        "mabeam_fault_proxy_bytes_total{link=\"nats\",direction=\"downstream\"}",
        "mabeam_fault_proxy_connections{link=\"nats\"}",
        "mabeam_fault_injector_faults_active{target=\"link\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    injector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_delays_traffic_until_healed() {
    let infra = Infra::start();
    let injector = with_proxies(&infra).await;
    let client = client(&infra).await;
    let mut conn = redis_via(injector.running.proxy_addr(Link::Redis).unwrap()).await;
    assert_eq!(ping(&mut conn).await.unwrap(), "PONG");

    link_fault(
        &client,
        "slow-redis",
        Link::Redis,
        LinkFault::Latency {
            latency_ms: 150,
            jitter_ms: 20,
        },
    )
    .await;
    let t = Instant::now();
    assert_eq!(ping(&mut conn).await.unwrap(), "PONG");
    // Delayed both ways: at least 2 × (150 − 20) ms.
    assert!(
        t.elapsed() >= Duration::from_millis(260),
        "{:?}",
        t.elapsed()
    );

    heal(&client, "slow-redis").await;
    let t = Instant::now();
    assert_eq!(ping(&mut conn).await.unwrap(), "PONG");
    // Healed: well under the 260 ms the fault guaranteed.
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "still delayed after healing: {:?}",
        t.elapsed()
    );
    injector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackhole_swallows_traffic_until_healed() {
    let infra = Infra::start();
    let injector = with_proxies(&infra).await;
    let client = client(&infra).await;
    let addr = injector.running.proxy_addr(Link::Redis).unwrap();
    let mut conn = redis_via(addr).await;
    assert_eq!(ping(&mut conn).await.unwrap(), "PONG");

    link_fault(&client, "hole", Link::Redis, LinkFault::Blackhole).await;
    let e = ping(&mut conn).await.unwrap_err();
    assert!(e.is_timeout(), "{e}");
    // New connections are accepted, and swallowed too.
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    assert_eq!(raw_ping(&mut fresh, Duration::from_millis(500)).await, None);

    heal(&client, "hole").await;
    let mut after = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_ping(&mut after, WAIT).await.as_deref(),
        Some(&b"+PONG\r\n"[..])
    );
    injector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_drops_open_connections_and_new_ones_until_healed() {
    let infra = Infra::start();
    let injector = with_proxies(&infra).await;
    let client = client(&infra).await;
    let addr = injector.running.proxy_addr(Link::Redis).unwrap();
    let mut open = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_ping(&mut open, WAIT).await.as_deref(),
        Some(&b"+PONG\r\n"[..])
    );

    link_fault(&client, "rst", Link::Redis, LinkFault::Reset).await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, open.read(&mut buf))
        .await
        .expect("the open connection is closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // A new connection is reset as soon as it is accepted (the RST may even beat connect()).
    if let Ok(mut fresh) = TcpStream::connect(addr).await {
        let read = tokio::time::timeout(WAIT, fresh.read(&mut buf))
            .await
            .expect("a new connection is closed at once");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    heal(&client, "rst").await;
    let mut after = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        raw_ping(&mut after, WAIT).await.as_deref(),
        Some(&b"+PONG\r\n"[..])
    );
    injector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_client_reconnects_through_the_proxy_after_a_reset() {
    let infra = Infra::start();
    let injector = with_proxies(&infra).await;
    let client = client(&infra).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let proxied = async_nats::ConnectOptions::new()
        .reconnect_delay_callback(|_| Duration::from_millis(50))
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e.to_string());
            }
        })
        .connect(format!(
            "nats://{}",
            injector.running.proxy_addr(Link::Nats).unwrap()
        ))
        .await
        .unwrap();

    assert_eq!(rx.recv().await.unwrap(), "connected");
    link_fault(&client, "nats-rst", Link::Nats, LinkFault::Reset).await;
    let event = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event, "disconnected");
    heal(&client, "nats-rst").await;
    // Attempts made while the reset held failed; the first after the heal succeeds.
    loop {
        let event = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        if event == "connected" {
            break;
        }
    }
    let reply = proxied.request("$SRV.PING", "".into()).await.unwrap();
    assert!(!reply.payload.is_empty());
    injector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_and_slicing_deliver_every_byte_slower() {
    let infra = Infra::start();
    let injector = with_proxies(&infra).await;
    let client = client(&infra).await;
    let mut conn = redis_via(injector.running.proxy_addr(Link::Redis).unwrap()).await;
    let value: String = (0..8_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();

    link_fault(
        &client,
        "thin",
        Link::Redis,
        LinkFault::Bandwidth {
            bytes_per_second: 40_000,
        },
    )
    .await;
    let t = Instant::now();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query_async(&mut conn)
        .await
        .unwrap();
    // 8 kB at 40 kB/s: at least 200 ms, less the first piece's head start.
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    heal(&client, "thin").await;
    let t = Instant::now();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(120),
        "still throttled after healing: {:?}",
        t.elapsed()
    );

    link_fault(
        &client,
        "sliced",
        Link::Redis,
        LinkFault::Slicing {
            max_bytes: 512,
            delay_us: 10_000,
        },
    )
    .await;
    let t = Instant::now();
    let back: String = redis::cmd("GET")
        .arg("big")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(back, value);
    // 8 kB in 512-byte slices 10 ms apart: at least 15 gaps.
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "not sliced: {:?}",
        t.elapsed()
    );
    heal(&client, "sliced").await;
    injector.stop().await;
}

async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).await.unwrap();
    body
}
