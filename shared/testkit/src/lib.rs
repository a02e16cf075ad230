//! Real infrastructure for tests: a `nats-server` with JetStream and a `redis-server`, each
//! on free loopback ports with its own data directory, stopped (and the directory removed)
//! on drop. Both can be stopped and started again on the same port and data, to test
//! reconnection and restarts.
//!
//! The binaries come from the OS packages (`apt-get install nats-server redis-server`);
//! `.ci/run` installs them. A missing binary fails the test with that instruction rather
//! than skipping it, since CI always has them.

#![allow(clippy::expect_used, clippy::panic)]

use std::{
    io::{BufRead, BufReader, Read},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// A free TCP port on 127.0.0.1 (bound and released; the OS does not hand it out again soon).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

fn find_binary(name: &str) -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([
            "/usr/sbin".into(),
            "/usr/bin".into(),
            "/usr/local/bin".into(),
        ]);
    for dir in candidates {
        let path = dir.join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!("{name} not found: install it (apt-get install {name}); .ci/run does this on CI")
}

/// Waits until a line of the child's `stream` contains `needle`, or fails after `timeout`
/// (or when the child exits first) with the last lines it wrote.
fn wait_for_line(
    stream: impl Read + Send + 'static,
    needle: &'static str,
    timeout: Duration,
    what: &str,
) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        let mut last = std::collections::VecDeque::new();
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if line.contains(needle) {
                    let _ = tx.send(Ok(()));
                    sent = true;
                } else {
                    last.push_back(line);
                    if last.len() > 5 {
                        last.pop_front();
                    }
                }
            }
            // Keep draining so the child never blocks on a full pipe.
        }
        if !sent {
            let _ = tx.send(Err(Vec::from(last).join("\n")));
        }
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(())) => {}
        Ok(Err(output)) => panic!("{what} exited before reporting {needle:?}:\n{output}"),
        Err(_) => panic!("{what} did not report {needle:?} within {timeout:?}"),
    }
}

fn wait_for_port(addr: SocketAddr, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A nats-server with JetStream, storing in its own temporary directory.
#[derive(Debug)]
pub struct NatsServer {
    port: u16,
    monitor_port: u16,
    store: tempfile::TempDir,
    config: Option<PathBuf>,
    /// Environment of the server process: a config file may read passwords and certificate
    /// paths from it (`$VAR`).
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with_config(None)
    }

    /// Starts with an extra config file (authorization, TLS); its `port` and `store_dir`
    /// are overridden by flags.
    pub fn start_with_config(config: Option<&Path>) -> Self {
        Self::start_with_config_env(config, &[])
    }

    /// As [`Self::start_with_config`], with extra environment variables for the server.
    pub fn start_with_config_env(config: Option<&Path>, env: &[(&str, &str)]) -> Self {
        let mut s = Self {
            port: free_port(),
            monitor_port: free_port(),
            store: tempfile::tempdir().expect("temp dir for the JetStream store"),
            config: config.map(Path::to_path_buf),
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(find_binary("nats-server"));
        if let Some(c) = &self.config {
            cmd.arg("-c").arg(c);
        }
        cmd.args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-m")
            .arg(self.monitor_port.to_string())
            .arg("-sd")
            .arg(self.store.path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("cannot start nats-server");
        let stderr = child.stderr.take().expect("piped stderr");
        self.child = Some(child);
        wait_for_line(
            stderr,
            "Server is ready",
            Duration::from_secs(15),
            "nats-server",
        );
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring endpoint (`/varz`, `/jsz`, `/healthz`).
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port)
    }

    /// Kills the server (SIGKILL); JetStream data stays for [`Self::start_again`].
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A redis-server without persistence in its own temporary directory.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Starts with extra `redis-server` arguments, e.g. `["--requirepass", "x"]`.
    pub fn start_with_args(extra: &[&str]) -> Self {
        let mut s = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir for redis"),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            child: None,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let mut child = Command::new(find_binary("redis-server"))
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(&self.extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        let stdout = child.stdout.take().expect("piped stdout");
        self.child = Some(child);
        wait_for_line(
            stdout,
            "Ready to accept connections",
            Duration::from_secs(15),
            "redis-server",
        );
        assert!(
            wait_for_port(
                SocketAddr::from(([127, 0, 0, 1], self.port)),
                Duration::from_secs(5)
            ),
            "redis-server not accepting connections"
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGSTOP: the server keeps its connections and data but answers nothing, like a
    /// stalled host; [`Self::resume`] continues it.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(c.id().to_string())
                .status();
        }
    }

    /// Kills the server; data is not kept (no persistence configured).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    pub fn start_again(&mut self) {
        if self.child.is_none() {
            self.spawn();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// NATS and Redis together, the infrastructure every service needs.
#[derive(Debug)]
pub struct Infra {
    pub nats: NatsServer,
    pub redis: RedisServer,
}

impl Infra {
    pub fn start() -> Self {
        Self {
            nats: NatsServer::start(),
            redis: RedisServer::start(),
        }
    }

    /// The common service settings pointing at this infrastructure, with an ephemeral
    /// HTTP port and text logs.
    pub fn env(&self) -> std::collections::BTreeMap<String, String> {
        [
            ("MABEAM_NATS_URL", self.nats.url()),
            ("MABEAM_REDIS_URL", self.redis.url()),
            ("MABEAM_HTTP_ADDR", "127.0.0.1:0".to_owned()),
            ("MABEAM_LOG_FORMAT", "text".to_owned()),
            ("MABEAM_LOG", "warn".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

/// The value of the sample `name{labels}` in Prometheus text (labels in any order; the
/// sample must have exactly these labels).
pub fn metric_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: std::collections::BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, found) = match series.split_once('{') {
            Some((n, rest)) => (n, metric_labels(rest.strip_suffix('}')?)),
            None => (series, std::collections::BTreeMap::new()),
        };
        (series_name == name && found == wanted)
            .then(|| value.parse().ok())
            .flatten()
    })
}

fn metric_labels(text: &str) -> std::collections::BTreeMap<&str, &str> {
    text.split("\",")
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once("=\"")?;
            Some((k, v.trim_end_matches('"')))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_start_accept_connections_and_restart_on_the_same_port() {
        let mut infra = Infra::start();
        let nats_addr = SocketAddr::from(([127, 0, 0, 1], infra.nats.port()));
        let redis_addr = SocketAddr::from(([127, 0, 0, 1], infra.redis.port()));
        assert!(wait_for_port(nats_addr, Duration::from_secs(1)));
        assert!(wait_for_port(redis_addr, Duration::from_secs(1)));
        infra.nats.stop();
        assert!(!wait_for_port(nats_addr, Duration::from_millis(200)));
        infra.nats.start_again();
        assert!(wait_for_port(nats_addr, Duration::from_secs(1)));
        infra.redis.stop();
        infra.redis.start_again();
        assert!(wait_for_port(redis_addr, Duration::from_secs(1)));
    }
}
