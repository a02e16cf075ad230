//! The TCP fault proxy placed in front of NATS or Redis (Toxiproxy's toxics, built in).
//!
//! Each connection runs one reader and one writer per direction with a queue between them:
//! the reader stamps every chunk with the time it may leave (latency, jitter), the writer
//! waits for it and then writes it shaped (bandwidth, slicing). Both read the *current*
//! toxics, so a fault applied or healed while a connection is open takes effect at once.
//! Several faults on one link combine: latencies add, the lowest bandwidth and the smallest
//! slices win, any blackhole or reset applies.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use mabeam_protocol::fault::{Link, LinkFault};
use mabeam_runtime::Shutdown;
use rand::Rng;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    time::Instant,
};

use crate::{config::ProxyConfig, spec::link_name, Error};

const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks in flight per direction: bounds memory under latency and gives backpressure.
const QUEUE_CHUNKS: usize = 64;
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The combined effect of the faults active on one link.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Effect {
    latency_ms: u64,
    jitter_ms: u64,
    bytes_per_second: Option<u64>,
    blackhole: bool,
    reset: bool,
    /// (max_bytes, delay_us)
    slicing: Option<(u32, u64)>,
}

impl Effect {
    fn of<'a>(faults: impl Iterator<Item = &'a LinkFault>) -> Self {
        let mut e = Self::default();
        for f in faults {
            match *f {
                LinkFault::Latency {
                    latency_ms,
                    jitter_ms,
                } => {
                    e.latency_ms = e.latency_ms.saturating_add(latency_ms);
                    e.jitter_ms = e.jitter_ms.saturating_add(jitter_ms);
                }
                LinkFault::Bandwidth { bytes_per_second } => {
                    e.bytes_per_second = Some(
                        e.bytes_per_second
                            .map_or(bytes_per_second, |b| b.min(bytes_per_second)),
                    );
                }
                LinkFault::Reset => e.reset = true,
                LinkFault::Blackhole => e.blackhole = true,
                LinkFault::Slicing {
                    max_bytes,
                    delay_us,
                } => {
                    e.slicing = Some(match e.slicing {
                        Some((m, d)) => (m.min(max_bytes), d.max(delay_us)),
                        None => (max_bytes, delay_us),
                    });
                }
            }
        }
        e
    }

    /// How long a chunk read now waits before it is written.
    fn delay(&self) -> Duration {
        if self.latency_ms == 0 && self.jitter_ms == 0 {
            return Duration::ZERO;
        }
        let jitter = self.jitter_ms as i64;
        let offset = if jitter > 0 {
            rand::thread_rng().gen_range(-jitter..=jitter)
        } else {
            0
        };
        Duration::from_millis((self.latency_ms as i64 + offset).max(0) as u64)
    }
}

/// A running proxy for one link.
#[derive(Debug)]
pub struct FaultProxy {
    link: Link,
    local_addr: SocketAddr,
    faults: Mutex<BTreeMap<String, LinkFault>>,
    effect: watch::Sender<Effect>,
}

impl FaultProxy {
    /// Binds the listen address and serves until `shutdown`.
    pub async fn bind(config: &ProxyConfig, shutdown: Shutdown) -> Result<Arc<Self>, Error> {
        let bind_error = |source| Error::ProxyBind {
            link: link_name(config.link),
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let (effect, _) = watch::channel(Effect::default());
        let proxy = Arc::new(Self {
            link: config.link,
            local_addr,
            faults: Mutex::new(BTreeMap::new()),
            effect,
        });
        metrics::gauge!("mabeam_fault_proxy_connections", "link" => link_name(config.link))
            .set(0.0);
        tokio::spawn(accept_loop(
            listener,
            config.upstream.clone(),
            proxy.link,
            proxy.effect.subscribe(),
            shutdown,
        ));
        tracing::info!(link = link_name(config.link), listen = %local_addr, upstream = %config.upstream, "fault proxy listening");
        Ok(proxy)
    }

    pub fn link(&self) -> Link {
        self.link
    }

    /// Where clients connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Applies (or replaces) the toxic of one fault.
    pub fn set(&self, fault_id: &str, fault: LinkFault) {
        self.update(|faults| {
            faults.insert(fault_id.to_owned(), fault);
        });
    }

    /// Lifts the toxic of one fault; with none left the link passes traffic through.
    pub fn remove(&self, fault_id: &str) {
        self.update(|faults| {
            faults.remove(fault_id);
        });
    }

    fn update(&self, change: impl FnOnce(&mut BTreeMap<String, LinkFault>)) {
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut faults);
        let effect = Effect::of(faults.values());
        // Send even without receivers: the value is kept for connections opened later.
        self.effect.send_replace(effect);
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    link: Link,
    effect: watch::Receiver<Effect>,
    shutdown: Shutdown,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.cancelled() => return,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(link = link_name(link), error = %e, "fault proxy cannot accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if effect.borrow().reset {
            reset(client);
            continue;
        }
        tokio::spawn(connection(
            client,
            upstream.clone(),
            link,
            effect.clone(),
            shutdown.clone(),
        ));
    }
}

/// Closes with a TCP RST, as a crashed peer or a middlebox would.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Counts open connections for as long as it lives.
struct OpenConnection(&'static str);

impl OpenConnection {
    fn new(link: &'static str) -> Self {
        metrics::gauge!("mabeam_fault_proxy_connections", "link" => link).increment(1.0);
        Self(link)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!("mabeam_fault_proxy_connections", "link" => self.0).decrement(1.0);
    }
}

async fn connection(
    mut client: TcpStream,
    upstream: String,
    link: Link,
    effect: watch::Receiver<Effect>,
    shutdown: Shutdown,
) {
    let name = link_name(link);
    let mut server = match tokio::time::timeout(
        UPSTREAM_CONNECT_TIMEOUT,
        TcpStream::connect(&upstream),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(link = name, upstream = %upstream, error = %e, "fault proxy cannot reach upstream");
            return;
        }
        Err(_) => {
            tracing::warn!(link = name, upstream = %upstream, "fault proxy upstream connect timed out");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let _open = OpenConnection::new(name);
    let was_reset = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        let up = pipe(client_read, server_write, effect.clone(), name, "upstream");
        let down = pipe(
            server_read,
            client_write,
            effect.clone(),
            name,
            "downstream",
        );
        let mut reset_watch = effect;
        tokio::select! {
            _ = futures::future::join(up, down) => false,
            r = reset_watch.wait_for(|e| e.reset) => r.is_ok(),
            _ = shutdown.cancelled() => false,
        }
    };
    if was_reset {
        reset(client);
        reset(server);
    }
}

/// Copies one direction until EOF or an error, applying the current toxics.
async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    effect: watch::Receiver<Effect>,
    link: &'static str,
    direction: &'static str,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Bytes)>(QUEUE_CHUNKS);
    let read_effect = effect.clone();
    let reader = async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        let mut last_due = Instant::now();
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let e = *read_effect.borrow();
            if e.blackhole {
                continue;
            }
            // Never earlier than the previous chunk: jitter must not reorder a byte stream.
            let due = (Instant::now() + e.delay()).max(last_due);
            last_due = due;
            if tx
                .send((due, Bytes::copy_from_slice(&buf[..n])))
                .await
                .is_err()
            {
                break;
            }
        }
    };
    let bytes = metrics::counter!("mabeam_fault_proxy_bytes_total", "link" => link, "direction" => direction);
    let writer = async move {
        let mut pace = Instant::now();
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            let e = *effect.borrow();
            if e.blackhole {
                continue;
            }
            if write_shaped(&mut to, &chunk, &e, &mut pace).await.is_err() {
                return;
            }
            bytes.increment(chunk.len() as u64);
        }
        // Pass the half-close on, so the far side sees EOF as it would without the proxy.
        let _ = to.shutdown().await;
    };
    futures::future::join(reader, writer).await;
}

/// Writes one chunk under bandwidth and slicing; `pace` is when the link may send next.
async fn write_shaped(
    to: &mut (impl AsyncWrite + Unpin),
    chunk: &[u8],
    e: &Effect,
    pace: &mut Instant,
) -> std::io::Result<()> {
    // Bandwidth sends in pieces of about 50 ms of traffic so it stays smooth.
    let bandwidth_piece = e
        .bytes_per_second
        .map(|bps| (bps / 20).max(1) as usize)
        .unwrap_or(usize::MAX);
    let slice = e
        .slicing
        .map(|(max, _)| max.max(1) as usize)
        .unwrap_or(usize::MAX);
    let piece = bandwidth_piece.min(slice).min(chunk.len().max(1));
    for (i, part) in chunk.chunks(piece).enumerate() {
        if i > 0 {
            if let Some((_, delay_us)) = e.slicing {
                tokio::time::sleep(Duration::from_micros(delay_us)).await;
            }
        }
        if let Some(bps) = e.bytes_per_second {
            tokio::time::sleep_until(*pace).await;
            *pace = (*pace).max(Instant::now())
                + Duration::from_secs_f64(part.len() as f64 / bps as f64);
        }
        to.write_all(part).await?;
        to.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_on_one_link_combine() {
        let faults = [
            LinkFault::Latency {
                latency_ms: 10,
                jitter_ms: 2,
            },
            LinkFault::Latency {
                latency_ms: 5,
                jitter_ms: 0,
            },
            LinkFault::Bandwidth {
                bytes_per_second: 100,
            },
            LinkFault::Bandwidth {
                bytes_per_second: 50,
            },
            LinkFault::Slicing {
                max_bytes: 8,
                delay_us: 10,
            },
            LinkFault::Slicing {
                max_bytes: 16,
                delay_us: 20,
            },
        ];
        let e = Effect::of(faults.iter());
        assert_eq!((e.latency_ms, e.jitter_ms), (15, 2));
        assert_eq!(e.bytes_per_second, Some(50));
        assert_eq!(e.slicing, Some((8, 20)));
        assert!(!e.blackhole && !e.reset);
        assert_eq!(Effect::of([].iter()), Effect::default());
    }

    #[test]
    fn jitter_stays_within_its_bounds() {
        let e = Effect {
            latency_ms: 10,
            jitter_ms: 5,
            ..Effect::default()
        };
        for _ in 0..1000 {
            let d = e.delay();
            assert!(d >= Duration::from_millis(5) && d <= Duration::from_millis(15));
        }
        assert_eq!(Effect::default().delay(), Duration::ZERO);
    }
}
