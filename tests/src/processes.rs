//! The process harness: nats-server and redis-server from `mabeam-testkit` and every service
//! as a child process of the test, on free loopback ports.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use mabeam_testkit::free_port;

use crate::{http_get, logs_dir, Service, Stack, StackOptions};

/// Where the service binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MABEAM_BIN_DIR") {
        return dir.into();
    }
    // A test binary runs from target/<profile>/deps, a tool like mabeam-chaos from
    // target/<profile>: the service binaries sit in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("an executable lives in a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>/deps").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the services first (`cargo build --bins`, which `make test` does)",
        path.display()
    );
    path
}

/// Sends a signal with the `kill` utility (no libc binding needed for a test harness).
fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// One service process.
#[derive(Debug)]
pub struct ServiceProcess {
    pub name: String,
    binary: String,
    env: BTreeMap<String, String>,
    pub http: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl ServiceProcess {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let child = Command::new(binary(&self.binary))
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary));
        self.child = Some(child);
    }

    /// Waits for `/readyz` to answer 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "{} exited early with {status}; see {}",
                    self.name,
                    self.log.display()
                );
            }
            if let Some((200, _)) = http_get(self.http, "/readyz") {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "{} not ready within {timeout:?}; see {}",
            self.name,
            self.log.display()
        );
    }

    /// SIGKILL: no goodbye, leases left to expire.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the graceful exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        signal(c.id(), "TERM");
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready(Duration::from_secs(20));
    }

    /// SIGSTOP: the process keeps its connections but answers nothing, as if cut off.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "STOP");
        }
    }

    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, "CONT");
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_path(&self) -> &PathBuf {
        &self.log
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) async fn start(infra: mabeam_testkit::Infra, opts: StackOptions) -> Stack {
    let logs = logs_dir(&opts.name);
    let base_env = |name: &str| {
        let mut env = infra.env();
        env.insert("MABEAM_LOG".into(), "info".into());
        env.insert("MABEAM_LOG_FORMAT".into(), "json".into());
        env.insert("MABEAM_INSTANCE".into(), name.into());
        env.extend(opts.env_for(name));
        env.insert(
            "MABEAM_HTTP_ADDR".into(),
            format!("127.0.0.1:{}", free_port()),
        );
        env
    };
    let process = |name: &str, binary: &str, extra: &BTreeMap<String, String>| {
        let mut env = base_env(name);
        env.extend(extra.clone());
        let http = env["MABEAM_HTTP_ADDR"].parse().expect("addr");
        let log = logs.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        let mut p = ServiceProcess {
            name: name.into(),
            binary: binary.into(),
            env,
            http,
            log,
            child: None,
        };
        p.spawn();
        p
    };
    let none = BTreeMap::new();
    let mut registry = process("registry", "mabeam-registry", &none);
    let mut coordinators: Vec<_> = (0..opts.coordinators)
        .map(|i| process(&format!("coordinator-{i}"), "mabeam-coordinator", &none))
        .collect();
    let (mut fault_injector, nats_proxy, redis_proxy) = if opts.fault_injector {
        let nats_proxy = format!("127.0.0.1:{}", free_port());
        let redis_proxy = format!("127.0.0.1:{}", free_port());
        let extra: BTreeMap<String, String> = [
            ("MABEAM_PROXY_NATS_LISTEN", nats_proxy.clone()),
            (
                "MABEAM_PROXY_NATS_UPSTREAM",
                format!("127.0.0.1:{}", infra.nats.port()),
            ),
            ("MABEAM_PROXY_REDIS_LISTEN", redis_proxy.clone()),
            (
                "MABEAM_PROXY_REDIS_UPSTREAM",
                format!("127.0.0.1:{}", infra.redis.port()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        (
            Some(process("fault-injector", "mabeam-fault-injector", &extra)),
            Some(nats_proxy),
            Some(redis_proxy),
        )
    } else {
        (None, None, None)
    };
    let mut telemetry = opts
        .telemetry
        .then(|| process("telemetry", "mabeam-telemetry", &none));
    let ready = Duration::from_secs(30);
    registry.wait_ready(ready);
    for c in &mut coordinators {
        c.wait_ready(ready);
    }
    if let Some(f) = &mut fault_injector {
        f.wait_ready(ready);
    }
    if let Some(t) = &mut telemetry {
        t.wait_ready(ready);
    }
    let mut fleets: Vec<_> = opts
        .fleets
        .iter()
        .map(|f| process(&f.name, "mabeam-agent-sim", &f.env))
        .collect();
    for f in &mut fleets {
        f.wait_ready(ready);
    }
    let nats_url = infra.nats.url();
    let redis_url = infra.redis.url();
    let client = opts
        .client_options()
        .connect(&nats_url)
        .await
        .expect("test client");
    Stack {
        harness: crate::Harness::Processes,
        registry: Service::Process(registry),
        coordinators: coordinators.into_iter().map(Service::Process).collect(),
        fault_injector: fault_injector.map(Service::Process),
        telemetry: telemetry.map(Service::Process),
        fleets: fleets.into_iter().map(Service::Process).collect(),
        nats_proxy,
        redis_proxy,
        nats_url,
        redis_url,
        client,
        infra: crate::Infra::Processes(infra),
    }
}
