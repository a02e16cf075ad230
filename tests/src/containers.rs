//! The container harness: the same stack as containers on a private Docker network, started
//! with testcontainers (`GenericImage`), published on ephemeral host ports.
//!
//! Images (`make images` builds them offline; see deploy/images.sh):
//! - services: `${MABEAM_IMAGE_PREFIX:-mabeam/}<service>:${MABEAM_IMAGE_TAG:-<version>}`;
//! - NATS and Redis: `MABEAM_NATS_IMAGE` / `MABEAM_REDIS_IMAGE`, else the locally built
//!   `mabeam/nats` / `mabeam/redis` when present, else the official `nats:2.10-alpine` /
//!   `redis:7.2-alpine` (pulled where a registry is reachable).
//!
//! Every container is removed when its handle drops — also when a test panics — and the
//! network with the last of them. Logs stream to `target/e2e-logs/<stack>/<name>.log`.

use std::{
    collections::BTreeMap,
    io::Write,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use testcontainers::{
    bollard::{
        models::{NetworkConnectRequest, NetworkDisconnectRequest},
        Docker,
    },
    core::{logs::LogFrame, IntoContainerPort, WaitFor},
    runners::AsyncRunner,
    ContainerAsync, ContainerRequest, GenericImage, ImageExt,
};

use crate::{http_get, logs_dir, Service, Stack, StackOptions};

/// The port every service listens on for HTTP inside its container.
const HTTP_PORT: u16 = 9100;
const STARTUP: Duration = Duration::from_secs(60);

/// Why the container harness cannot run here.
#[derive(Debug)]
pub struct Unavailable(pub String);

fn env_or(key: &str, default: impl FnOnce() -> String) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(default)
}

/// `repo[:tag]` split at the tag's colon (a registry host may carry a port colon too).
fn split_image(reference: &str) -> (String, String) {
    match reference.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo.to_owned(), tag.to_owned()),
        _ => (reference.to_owned(), "latest".to_owned()),
    }
}

async fn image_present(docker: &Docker, reference: &str) -> bool {
    docker.inspect_image(reference).await.is_ok()
}

/// The images one stack runs.
#[derive(Debug, Clone)]
pub(crate) struct Images {
    nats: String,
    redis: String,
    prefix: String,
    tag: String,
}

impl Images {
    fn service(&self, service: &str) -> String {
        format!("{}{service}:{}", self.prefix, self.tag)
    }

    async fn resolve(docker: &Docker) -> Result<Self, Unavailable> {
        let prefix = env_or("MABEAM_IMAGE_PREFIX", || "mabeam/".into());
        let tag = env_or("MABEAM_IMAGE_TAG", || env!("CARGO_PKG_VERSION").into());
        let local_or = |name: &str, official: &str| {
            let local = format!("{prefix}{name}:{tag}");
            let official = official.to_owned();
            async move {
                if image_present(docker, &local).await {
                    local
                } else {
                    official
                }
            }
        };
        let nats = match std::env::var("MABEAM_NATS_IMAGE") {
            Ok(image) if !image.is_empty() => image,
            _ => local_or("nats", "nats:2.10-alpine").await,
        };
        let redis = match std::env::var("MABEAM_REDIS_IMAGE") {
            Ok(image) if !image.is_empty() => image,
            _ => local_or("redis", "redis:7.2-alpine").await,
        };
        let images = Self {
            nats,
            redis,
            prefix,
            tag,
        };
        for service in [
            "registry",
            "coordinator",
            "fault-injector",
            "telemetry",
            "agent-sim",
        ] {
            let image = images.service(service);
            if !image_present(docker, &image).await {
                return Err(Unavailable(format!(
                    "image {image} is missing: run `make images` (or set MABEAM_IMAGE_PREFIX/MABEAM_IMAGE_TAG)"
                )));
            }
        }
        Ok(images)
    }
}

/// Connects to the Docker engine the way the docker CLI does (DOCKER_HOST or the local socket).
async fn docker() -> Result<Docker, Unavailable> {
    let docker = Docker::connect_with_defaults()
        .map_err(|e| Unavailable(format!("no Docker client configuration: {e}")))?;
    match tokio::time::timeout(Duration::from_secs(5), docker.ping()).await {
        Ok(Ok(_)) => Ok(docker),
        Ok(Err(e)) => Err(Unavailable(format!("no Docker engine reachable: {e}"))),
        Err(_) => Err(Unavailable(
            "the Docker engine did not answer within 5 s".into(),
        )),
    }
}

/// Appends a container's output to its log file as it arrives.
fn log_to_file(path: PathBuf) -> impl Fn(&LogFrame) + Send + Sync + 'static {
    let _ = std::fs::remove_file(&path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map(|f| Arc::new(Mutex::new(f)))
        .ok();
    move |frame: &LogFrame| {
        if let Some(file) = &file {
            let bytes = match frame {
                LogFrame::StdOut(b) | LogFrame::StdErr(b) => b,
            };
            if let Ok(mut f) = file.lock() {
                let _ = f.write_all(bytes);
            }
        }
    }
}

/// One service (or NATS/Redis) container.
pub struct ServiceContainer {
    pub name: String,
    container: ContainerAsync<GenericImage>,
    docker: Docker,
    network: String,
    internal_port: u16,
    pub http: SocketAddr,
    pub(crate) log: PathBuf,
}

impl std::fmt::Debug for ServiceContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceContainer")
            .field("name", &self.name)
            .field("id", &self.container.id())
            .field("http", &self.http)
            .finish()
    }
}

impl ServiceContainer {
    pub fn id(&self) -> &str {
        self.container.id()
    }

    async fn refresh_port(&mut self) {
        // Docker may publish on a new host port after a restart or reconnect.
        let port = self
            .container
            .get_host_port_ipv4(self.internal_port.tcp())
            .await
            .unwrap_or_else(|e| panic!("{}: no published port: {e}", self.name));
        self.http = SocketAddr::from(([127, 0, 0, 1], port));
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if !self.container.is_running().await.unwrap_or(false) {
                panic!("{} exited early; see its log in target/e2e-logs", self.name);
            }
            let http = self.http;
            if let Ok(Some((200, _))) =
                tokio::task::spawn_blocking(move || http_get(http, "/readyz")).await
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} not ready within {timeout:?}", self.name);
    }

    /// SIGKILL through the engine: no goodbye, leases left to expire.
    pub async fn kill(&mut self) {
        let _ = self.docker.kill_container(self.id(), None).await;
    }

    /// `docker stop`: SIGTERM, then SIGKILL after `timeout`; true when it exited on its own.
    pub async fn terminate(&mut self, timeout: Duration) -> bool {
        let seconds = i32::try_from(timeout.as_secs()).unwrap_or(i32::MAX);
        let _ = self.container.stop_with_timeout(Some(seconds)).await;
        // 137 = 128 + SIGKILL: the engine had to kill it.
        !matches!(self.container.exit_code().await, Ok(Some(137)))
    }

    /// Starts the stopped or killed container again and waits until it is ready.
    pub async fn restart(&mut self) {
        if self.container.is_running().await.unwrap_or(false) {
            self.kill().await;
        }
        self.container
            .start()
            .await
            .unwrap_or_else(|e| panic!("{}: cannot start again: {e}", self.name));
        self.refresh_port().await;
        self.wait_ready(STARTUP).await;
    }

    /// A real partition: the container leaves the stack's network.
    pub async fn isolate(&mut self) {
        self.docker
            .disconnect_network(
                &self.network,
                NetworkDisconnectRequest {
                    container: self.id().to_owned(),
                    force: Some(true),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{}: cannot disconnect: {e}", self.name));
    }

    pub async fn rejoin(&mut self) {
        self.docker
            .connect_network(
                &self.network,
                NetworkConnectRequest {
                    container: self.id().to_owned(),
                    endpoint_config: None,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{}: cannot reconnect: {e}", self.name));
        self.refresh_port().await;
    }

    pub async fn pause(&self) {
        self.container
            .pause()
            .await
            .unwrap_or_else(|e| panic!("{}: cannot pause: {e}", self.name));
    }

    pub async fn resume(&self) {
        self.container
            .unpause()
            .await
            .unwrap_or_else(|e| panic!("{}: cannot unpause: {e}", self.name));
    }
}

/// NATS and Redis as containers; NATS is only held so that it lives as long as the stack.
#[derive(Debug)]
pub(crate) struct Infra {
    pub(crate) _nats: ServiceContainer,
    pub(crate) redis: ServiceContainer,
}

struct Launcher {
    docker: Docker,
    network: String,
    prefix: String,
    logs: PathBuf,
}

impl Launcher {
    async fn launch(
        &self,
        name: &str,
        request: ContainerRequest<GenericImage>,
        internal_port: u16,
    ) -> ServiceContainer {
        let log = self.logs.join(format!("{name}.log"));
        let container = request
            .with_network(&self.network)
            .with_container_name(format!("{}-{name}", self.prefix))
            .with_label("org.mabeam.stack", &self.prefix)
            .with_startup_timeout(STARTUP)
            .with_log_consumer(log_to_file(log.clone()))
            .start()
            .await
            .unwrap_or_else(|e| panic!("cannot start the {name} container: {e}"));
        let mut c = ServiceContainer {
            name: name.to_owned(),
            container,
            docker: self.docker.clone(),
            network: self.network.clone(),
            internal_port,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        c.refresh_port().await;
        c
    }

    fn host(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }
}

pub(crate) async fn start(opts: StackOptions) -> Result<Stack, Unavailable> {
    let docker = docker().await?;
    let images = Images::resolve(&docker).await?;
    // Unique per run, so parallel tests and leftovers of a crashed run never collide.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or_default();
    let prefix = format!("mabeam-{}-{}-{nonce}", opts.name, std::process::id());
    let launcher = Launcher {
        docker,
        network: prefix.clone(),
        prefix,
        logs: logs_dir(&opts.name),
    };
    let launcher = &launcher;

    let (nats_repo, nats_tag) = split_image(&images.nats);
    let nats = GenericImage::new(nats_repo, nats_tag)
        .with_exposed_port(4222.tcp())
        .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
        .with_cmd(["-js", "-sd", "/data", "-m", "8222"]);
    let (redis_repo, redis_tag) = split_image(&images.redis);
    let redis = GenericImage::new(redis_repo, redis_tag)
        .with_exposed_port(6379.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
        .with_cmd(["--protected-mode", "no", "--save", "", "--appendonly", "no"]);
    let (nats, redis) = tokio::join!(
        launcher.launch("nats", nats, 4222),
        launcher.launch("redis", redis, 6379)
    );
    let nats_url = format!("nats://{}", nats.http);
    let redis_url = format!("redis://{}", redis.http);

    let service = |name: &str, service: &str, extra: &BTreeMap<String, String>| {
        let (repo, tag) = split_image(&images.service(service));
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert(
            "MABEAM_NATS_URL".into(),
            format!("nats://{}:4222", launcher.host("nats")),
        );
        env.insert(
            "MABEAM_REDIS_URL".into(),
            format!("redis://{}:6379", launcher.host("redis")),
        );
        env.insert("MABEAM_LOG".into(), "info".into());
        env.insert("MABEAM_LOG_FORMAT".into(), "json".into());
        env.insert("MABEAM_INSTANCE".into(), name.into());
        env.extend(opts.env_for(name));
        env.extend(extra.clone());
        env.insert("MABEAM_HTTP_ADDR".into(), format!("0.0.0.0:{HTTP_PORT}"));
        let mut request: ContainerRequest<GenericImage> = GenericImage::new(repo, tag)
            .with_exposed_port(HTTP_PORT.tcp())
            .into();
        for (k, v) in env {
            request = request.with_env_var(k, v);
        }
        request
    };
    let none = BTreeMap::new();
    let registry = launcher.launch(
        "registry",
        service("registry", "registry", &none),
        HTTP_PORT,
    );
    let coordinators = futures::future::join_all((0..opts.coordinators).map(|i| {
        let name = format!("coordinator-{i}");
        let request = service(&name, "coordinator", &none);
        async move { launcher.launch(&name, request, HTTP_PORT).await }
    }));
    let fault_injector = async {
        if !opts.fault_injector {
            return None;
        }
        let extra: BTreeMap<String, String> = [
            ("MABEAM_PROXY_NATS_LISTEN", "0.0.0.0:14222".to_owned()),
            (
                "MABEAM_PROXY_NATS_UPSTREAM",
                format!("{}:4222", launcher.host("nats")),
            ),
            ("MABEAM_PROXY_REDIS_LISTEN", "0.0.0.0:16379".to_owned()),
            (
                "MABEAM_PROXY_REDIS_UPSTREAM",
                format!("{}:6379", launcher.host("redis")),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let request = service("fault-injector", "fault-injector", &extra);
        Some(launcher.launch("fault-injector", request, HTTP_PORT).await)
    };
    let telemetry = async {
        if !opts.telemetry {
            return None;
        }
        let request = service("telemetry", "telemetry", &none);
        Some(launcher.launch("telemetry", request, HTTP_PORT).await)
    };
    let (mut registry, mut coordinators, mut fault_injector, mut telemetry) =
        tokio::join!(registry, coordinators, fault_injector, telemetry);
    registry.wait_ready(STARTUP).await;
    for c in &mut coordinators {
        c.wait_ready(STARTUP).await;
    }
    if let Some(f) = &mut fault_injector {
        f.wait_ready(STARTUP).await;
    }
    if let Some(t) = &mut telemetry {
        t.wait_ready(STARTUP).await;
    }
    let mut fleets = futures::future::join_all(opts.fleets.iter().map(|f| {
        let request = service(&f.name, "agent-sim", &f.env);
        async move { launcher.launch(&f.name, request, HTTP_PORT).await }
    }))
    .await;
    for f in &mut fleets {
        f.wait_ready(STARTUP).await;
    }
    let nats_proxy = fault_injector
        .as_ref()
        .map(|_| format!("{}:14222", launcher.host("fault-injector")));
    let redis_proxy = fault_injector
        .as_ref()
        .map(|_| format!("{}:16379", launcher.host("fault-injector")));
    let client = opts
        .client_options()
        .connect(&nats_url)
        .await
        .expect("test client");
    Ok(Stack {
        harness: crate::Harness::Containers,
        registry: Service::Container(Box::new(registry)),
        coordinators: coordinators
            .into_iter()
            .map(|c| Service::Container(Box::new(c)))
            .collect(),
        fault_injector: fault_injector.map(|c| Service::Container(Box::new(c))),
        telemetry: telemetry.map(|c| Service::Container(Box::new(c))),
        fleets: fleets
            .into_iter()
            .map(|c| Service::Container(Box::new(c)))
            .collect(),
        nats_proxy,
        redis_proxy,
        nats_url,
        redis_url,
        client,
        infra: crate::Infra::Containers(Box::new(Infra { _nats: nats, redis })),
    })
}
