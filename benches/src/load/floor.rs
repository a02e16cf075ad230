//! The floor: what NATS and Redis alone do on this machine, so every load figure can be read
//! as a ratio to it. Starts its own nats-server (JetStream) and redis-server on free ports.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::{stream, StreamExt as _};
use mabeam_testkit::Infra;
use serde::Serialize;

use super::{histogram, ms, record};

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Floor {
    /// 1 publisher → 1 subscriber, 64-byte messages.
    pub nats_pubsub_msgs_per_s: f64,
    /// 1 publisher → 100 subscriptions: deliveries per second.
    pub nats_fanout_deliveries_per_s: f64,
    pub nats_request_p50_us: f64,
    pub nats_request_p99_us: f64,
    /// JetStream publish to a file stream, waiting for each ack (what a task submission is).
    pub jetstream_publish_p50_us: f64,
    pub jetstream_publish_p99_us: f64,
    pub redis_hset_p50_us: f64,
    pub redis_hset_p99_us: f64,
    /// HSETs from 64 concurrent callers on one multiplexed connection.
    pub redis_hset_multiplexed_ops_per_s: f64,
}

fn us(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    ms(h, q) * 1000.0
}

async fn pubsub(url: &str, messages: usize, subscriptions: usize) -> anyhow::Result<f64> {
    let publisher = async_nats::connect(url).await?;
    let subscriber = async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 20)
        .connect(url)
        .await?;
    let mut subs = Vec::new();
    for _ in 0..subscriptions {
        subs.push(subscriber.subscribe("floor.pubsub").await?);
    }
    subscriber.flush().await?;
    let expected = messages * subscriptions;
    let received = Arc::new(AtomicUsize::new(0));
    let counted = received.clone();
    let counter = tokio::spawn(async move {
        let mut all = stream::select_all(subs);
        while counted.load(Ordering::Relaxed) < expected && all.next().await.is_some() {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    let payload = bytes::Bytes::from(vec![b'x'; 64]);
    let start = Instant::now();
    for i in 0..messages {
        publisher.publish("floor.pubsub", payload.clone()).await?;
        // Flow control: a subscriber far behind is cut off by the server as a slow
        // consumer (and loses messages), so measure what is sustained, not what is dropped.
        while (i + 1) * subscriptions > received.load(Ordering::Relaxed) + 20_000 {
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    publisher.flush().await?;
    // Wait until everything arrived, or nothing more has for two seconds.
    let (mut last, mut last_change) = (received.load(Ordering::Relaxed), Instant::now());
    let mut end = Instant::now();
    while last < expected && last_change.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = received.load(Ordering::Relaxed);
        if now != last {
            (last, last_change, end) = (now, Instant::now(), Instant::now());
        }
    }
    if last == expected {
        end = Instant::now();
    }
    counter.abort();
    if last < expected {
        eprintln!(
            "floor: {} of {expected} NATS messages lost (a subscriber starved of CPU is cut off as a slow consumer)",
            expected - last
        );
    }
    Ok(last as f64 / end.duration_since(start).as_secs_f64())
}

async fn request_reply(url: &str, n: usize) -> anyhow::Result<(f64, f64)> {
    let responder = async_nats::connect(url).await?;
    let mut sub = responder.subscribe("floor.request").await?;
    responder.flush().await?;
    let echo = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Some(reply) = m.reply {
                let _ = responder.publish(reply, m.payload).await;
            }
        }
    });
    let client = async_nats::connect(url).await?;
    let mut h = histogram();
    let payload = bytes::Bytes::from(vec![b'x'; 64]);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        client.request("floor.request", payload.clone()).await?;
        if i >= n / 10 {
            record(&mut h, t.elapsed());
        }
    }
    echo.abort();
    Ok((us(&h, 0.5), us(&h, 0.99)))
}

async fn jetstream(url: &str, n: usize) -> anyhow::Result<(f64, f64)> {
    let client = async_nats::connect(url).await?;
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "FLOOR".into(),
        subjects: vec!["floor.js".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow::anyhow!("floor stream: {e}"))?;
    let mut h = histogram();
    let payload = bytes::Bytes::from(vec![b'x'; 256]);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        js.publish("floor.js", payload.clone())
            .await?
            .await
            .map_err(|e| anyhow::anyhow!("ack: {e}"))?;
        if i >= n / 10 {
            record(&mut h, t.elapsed());
        }
    }
    Ok((us(&h, 0.5), us(&h, 0.99)))
}

async fn redis_hset(
    url: &str,
    sequential: usize,
    multiplexed: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let mut h = histogram();
    for i in 0..sequential {
        let t = Instant::now();
        let _: () = redis::cmd("HSET")
            .arg(format!("floor:{}", i % 1000))
            .arg("f")
            .arg(i)
            .query_async(&mut conn)
            .await?;
        record(&mut h, t.elapsed());
    }
    let start = Instant::now();
    let results: Vec<redis::RedisResult<()>> = stream::iter(0..multiplexed)
        .map(|i| {
            let mut c = conn.clone();
            async move {
                redis::cmd("HSET")
                    .arg(format!("floor:m:{}", i % 1000))
                    .arg("f")
                    .arg(i)
                    .query_async(&mut c)
                    .await
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let elapsed = start.elapsed().as_secs_f64();
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok((us(&h, 0.5), us(&h, 0.99), multiplexed as f64 / elapsed))
}

/// One measurement of every figure; `scale` multiplies the message counts (1 = full).
pub async fn measure(scale: f64) -> anyhow::Result<Floor> {
    let infra = tokio::task::spawn_blocking(Infra::start)
        .await
        .context("starting nats-server and redis-server")?;
    let n = |x: f64| ((x * scale) as usize).max(100);
    let nats = infra.nats.url();
    let nats_pubsub_msgs_per_s = pubsub(&nats, n(500_000.0), 1)
        .await
        .context("NATS pub/sub")?;
    let nats_fanout_deliveries_per_s = pubsub(&nats, n(10_000.0), 100)
        .await
        .context("NATS fan-out")?;
    let (nats_request_p50_us, nats_request_p99_us) = request_reply(&nats, n(20_000.0))
        .await
        .context("NATS request/reply")?;
    let (jetstream_publish_p50_us, jetstream_publish_p99_us) = jetstream(&nats, n(10_000.0))
        .await
        .context("JetStream publish")?;
    let (redis_hset_p50_us, redis_hset_p99_us, redis_hset_multiplexed_ops_per_s) =
        redis_hset(&infra.redis.url(), n(20_000.0), n(200_000.0))
            .await
            .context("Redis HSET")?;
    Ok(Floor {
        nats_pubsub_msgs_per_s,
        nats_fanout_deliveries_per_s,
        nats_request_p50_us,
        nats_request_p99_us,
        jetstream_publish_p50_us,
        jetstream_publish_p99_us,
        redis_hset_p50_us,
        redis_hset_p99_us,
        redis_hset_multiplexed_ops_per_s,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// The median of each figure over `runs`.
pub fn medians(runs: &[Floor]) -> Floor {
    let m = |f: fn(&Floor) -> f64| median(runs.iter().map(f).collect());
    Floor {
        nats_pubsub_msgs_per_s: m(|f| f.nats_pubsub_msgs_per_s),
        nats_fanout_deliveries_per_s: m(|f| f.nats_fanout_deliveries_per_s),
        nats_request_p50_us: m(|f| f.nats_request_p50_us),
        nats_request_p99_us: m(|f| f.nats_request_p99_us),
        jetstream_publish_p50_us: m(|f| f.jetstream_publish_p50_us),
        jetstream_publish_p99_us: m(|f| f.jetstream_publish_p99_us),
        redis_hset_p50_us: m(|f| f.redis_hset_p50_us),
        redis_hset_p99_us: m(|f| f.redis_hset_p99_us),
        redis_hset_multiplexed_ops_per_s: m(|f| f.redis_hset_multiplexed_ops_per_s),
    }
}

pub fn table(f: &Floor) -> String {
    format!(
        "NATS pub/sub 1→1          {:>12.0} msg/s\n\
         NATS fan-out 1→100        {:>12.0} deliveries/s\n\
         NATS request/reply        p50 {:>7.1} µs   p99 {:>7.1} µs\n\
         JetStream publish+ack     p50 {:>7.1} µs   p99 {:>7.1} µs\n\
         Redis HSET sequential     p50 {:>7.1} µs   p99 {:>7.1} µs\n\
         Redis HSET multiplexed    {:>12.0} op/s\n",
        f.nats_pubsub_msgs_per_s,
        f.nats_fanout_deliveries_per_s,
        f.nats_request_p50_us,
        f.nats_request_p99_us,
        f.jetstream_publish_p50_us,
        f.jetstream_publish_p99_us,
        f.redis_hset_p50_us,
        f.redis_hset_p99_us,
        f.redis_hset_multiplexed_ops_per_s,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_take_the_middle_run() {
        let f = |x: f64| Floor {
            nats_request_p50_us: x,
            ..Floor::default()
        };
        assert_eq!(medians(&[f(3.0), f(1.0), f(2.0)]).nats_request_p50_us, 2.0);
        assert_eq!(median(vec![1.0, 2.0, 3.0, 10.0]), 2.5);
    }
}
