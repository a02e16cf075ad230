//! The agent and its builder. Running it hands over to the I/O loop in `runner`.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::Client;
use mabeam_protocol::{
    fault::AgentFaultCommand, group::GroupMessage, registry::Registration, AgentId, AgentKeypair,
    Limits, PublicKey, PROTOCOL_VERSION,
};
use rand::Rng;
use tokio_util::sync::CancellationToken;

use crate::{decide::Decider, keys, runner::Runner, AgentError};

/// Load and capacity reported in heartbeats; clone it to update them while the agent runs.
#[derive(Debug, Clone)]
pub struct LoadHandle(Arc<[AtomicU64; 2]>);

impl LoadHandle {
    fn new(load: f64, capacity: f64) -> Self {
        Self(Arc::new([
            AtomicU64::new(load.to_bits()),
            AtomicU64::new(capacity.to_bits()),
        ]))
    }

    /// Sets the values the next heartbeat carries (negative or non-finite values become 0).
    pub fn set(&self, load: f64, capacity: f64) {
        let clean = |x: f64| if x.is_finite() { x.max(0.0) } else { 0.0 };
        self.0[0].store(clean(load).to_bits(), Ordering::Relaxed);
        self.0[1].store(clean(capacity).to_bits(), Ordering::Relaxed);
    }

    /// `(load, capacity)`.
    pub fn get(&self) -> (f64, f64) {
        (
            f64::from_bits(self.0[0].load(Ordering::Relaxed)),
            f64::from_bits(self.0[1].load(Ordering::Relaxed)),
        )
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) heartbeat_interval: Duration,
    pub(crate) heartbeat_jitter: f64,
    pub(crate) request_timeout: Duration,
    pub(crate) session_grace: Duration,
    pub(crate) max_sessions: usize,
    pub(crate) limits: Limits,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_jitter: 0.1,
            request_timeout: Duration::from_secs(2),
            session_grace: Duration::from_secs(5),
            max_sessions: 64,
            limits: Limits::default(),
        }
    }
}

/// What an agent does with the group messages it receives ([`AgentBuilder::on_message`]).
#[derive(Clone)]
pub(crate) struct MessageHandler(Arc<dyn Fn(&GroupMessage) + Send + Sync>);

impl MessageHandler {
    pub(crate) fn handle(&self, message: &GroupMessage) {
        (self.0)(message);
    }
}

impl std::fmt::Debug for MessageHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageHandler")
    }
}

#[derive(Debug)]
enum KeySource {
    Generate,
    Given(AgentKeypair),
    Derived(Vec<u8>),
}

/// Builds an [`Agent`]; start with [`Agent::builder`].
#[derive(Debug)]
pub struct AgentBuilder<D> {
    id: String,
    kind: String,
    capabilities: Vec<String>,
    expertise: f64,
    metadata: BTreeMap<String, String>,
    key: KeySource,
    decider: D,
    settings: Settings,
    load: (f64, f64),
    faults: Vec<AgentFaultCommand>,
    seed: Option<u64>,
    on_message: Option<MessageHandler>,
}

impl<D> AgentBuilder<D> {
    pub fn capabilities<I, S>(mut self, capabilities: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.capabilities = capabilities.into_iter().map(Into::into).collect();
        self
    }

    /// Expertise weight (> 0; default 1): weighted algorithms multiply it with confidence.
    pub fn expertise(mut self, expertise: f64) -> Self {
        self.expertise = expertise;
        self
    }

    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The signing key (default: a fresh random one; see [`crate::keys`]).
    pub fn keypair(mut self, key: AgentKeypair) -> Self {
        self.key = KeySource::Given(key);
        self
    }

    /// Derives the key from `seed` and the agent id ([`crate::keys::derive`]).
    pub fn derive_key(mut self, seed: impl AsRef<[u8]>) -> Self {
        self.key = KeySource::Derived(seed.as_ref().to_vec());
        self
    }

    /// Time between heartbeats (default 2 s, at least 10 ms).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.settings.heartbeat_interval = interval;
        self
    }

    /// Each heartbeat interval varies by up to this share either way (default 0.1, at most
    /// 0.5), so a fleet started together does not heartbeat in lockstep.
    pub fn heartbeat_jitter(mut self, share: f64) -> Self {
        self.settings.heartbeat_jitter = share;
        self
    }

    /// How long a registry request may wait for its reply (default 2 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.settings.request_timeout = timeout;
        self
    }

    /// How long after a round's deadline the agent keeps a session's state (default 5 s).
    pub fn session_grace(mut self, grace: Duration) -> Self {
        self.settings.session_grace = grace;
        self
    }

    /// Sessions the agent tracks at once (default 64); beyond, the one expiring first goes.
    pub fn max_sessions(mut self, max: usize) -> Self {
        self.settings.max_sessions = max;
        self
    }

    pub fn limits(mut self, limits: Limits) -> Self {
        self.settings.limits = limits;
        self
    }

    /// Load and capacity the heartbeats start with (default 0 and 1).
    pub fn load(mut self, load: f64, capacity: f64) -> Self {
        self.load = (load, capacity);
        self
    }

    /// A fault active from the start (as if the fault-injector had sent it).
    pub fn fault(mut self, command: AgentFaultCommand) -> Self {
        self.faults.push(command);
        self
    }

    /// Seeds the agent's random draws (jitter, drops), for reproducible runs.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Called with every group message sent to this agent (a swarm broadcast, see
    /// [`crate::swarm`]), on the agent's own task: keep it short, or hand the message to a
    /// channel. Without a handler, messages are counted and dropped.
    pub fn on_message(mut self, handler: impl Fn(&GroupMessage) + Send + Sync + 'static) -> Self {
        self.on_message = Some(MessageHandler(Arc::new(handler)));
        self
    }

    pub fn decider<E: Decider>(self, decider: E) -> AgentBuilder<E> {
        AgentBuilder {
            id: self.id,
            kind: self.kind,
            capabilities: self.capabilities,
            expertise: self.expertise,
            metadata: self.metadata,
            key: self.key,
            decider,
            settings: self.settings,
            load: self.load,
            faults: self.faults,
            seed: self.seed,
            on_message: self.on_message,
        }
    }
}

impl<D: Decider> AgentBuilder<D> {
    /// Validates the settings.
    pub fn build(self) -> Result<Agent<D>, AgentError> {
        let id = AgentId::new(self.id)?;
        if self.kind.trim().is_empty() {
            return Err(AgentError::config("kind", "must not be empty"));
        }
        if !(self.expertise.is_finite() && self.expertise > 0.0) {
            return Err(AgentError::config(
                "expertise",
                format!("must be a positive number, got {}", self.expertise),
            ));
        }
        if self.capabilities.iter().any(|c| c.trim().is_empty()) {
            return Err(AgentError::config(
                "capabilities",
                "must not contain empty names",
            ));
        }
        let s = &self.settings;
        if s.heartbeat_interval < Duration::from_millis(10) {
            return Err(AgentError::config(
                "heartbeat_interval",
                "must be at least 10 ms",
            ));
        }
        if !(0.0..=0.5).contains(&s.heartbeat_jitter) {
            return Err(AgentError::config(
                "heartbeat_jitter",
                "must be between 0 and 0.5",
            ));
        }
        if s.request_timeout.is_zero() {
            return Err(AgentError::config("request_timeout", "must not be zero"));
        }
        if s.max_sessions == 0 {
            return Err(AgentError::config("max_sessions", "must be at least 1"));
        }
        let (load, capacity) = self.load;
        if !(load.is_finite() && capacity.is_finite() && load >= 0.0 && capacity >= 0.0) {
            return Err(AgentError::config(
                "load",
                "load and capacity must be finite and not negative",
            ));
        }
        let key = match self.key {
            KeySource::Generate => keys::generate(),
            KeySource::Given(k) => k,
            KeySource::Derived(seed) => keys::derive(&seed, &id),
        };
        let registration = Registration {
            v: PROTOCOL_VERSION,
            agent_id: id.clone(),
            kind: self.kind,
            capabilities: self.capabilities,
            expertise: self.expertise,
            public_key: key.public_key(),
            metadata: self.metadata,
        };
        Ok(Agent {
            id,
            key,
            registration,
            decider: Arc::new(self.decider),
            settings: self.settings,
            load: LoadHandle::new(load, capacity),
            faults: self.faults,
            seed: self.seed.unwrap_or_else(|| rand::thread_rng().gen()),
            on_message: self.on_message,
        })
    }
}

/// An agent, ready to run.
#[derive(Debug)]
pub struct Agent<D> {
    pub(crate) id: AgentId,
    pub(crate) key: AgentKeypair,
    pub(crate) registration: Registration,
    pub(crate) decider: Arc<D>,
    pub(crate) settings: Settings,
    pub(crate) load: LoadHandle,
    pub(crate) faults: Vec<AgentFaultCommand>,
    pub(crate) seed: u64,
    pub(crate) on_message: Option<MessageHandler>,
}

impl Agent<()> {
    /// Starts building agent `id` of `kind` (free-form, e.g. `llm`, `gpu-server`).
    pub fn builder(id: impl Into<String>, kind: impl Into<String>) -> AgentBuilder<()> {
        AgentBuilder {
            id: id.into(),
            kind: kind.into(),
            capabilities: Vec::new(),
            expertise: 1.0,
            metadata: BTreeMap::new(),
            key: KeySource::Generate,
            decider: (),
            settings: Settings::default(),
            load: (0.0, 1.0),
            faults: Vec::new(),
            seed: None,
            on_message: None,
        }
    }
}

impl<D: Decider> Agent<D> {
    pub fn id(&self) -> &AgentId {
        &self.id
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    /// What the agent registers.
    pub fn registration(&self) -> &Registration {
        &self.registration
    }

    pub fn load_handle(&self) -> LoadHandle {
        self.load.clone()
    }

    /// Runs until `shutdown`: subscribes, registers (retrying with backoff until a registry
    /// answers), heartbeats, answers proposals, obeys fault commands, and deregisters on the
    /// way out. Many agents may share one client.
    ///
    /// Returns an error when the subscription fails or closes, or when the registry refuses
    /// the registration for good (e.g. the id is bound to another key).
    pub async fn run(self, client: Client, shutdown: CancellationToken) -> Result<(), AgentError> {
        // One subscription for both the inbox and the fault commands: subscriptions cost
        // memory (a channel each) and an agent-sim process holds thousands.
        let subject = format!("mabeam.agents.{}.*", self.id);
        let own = Box::pin(client.subscribe(subject.clone()))
            .await
            .map_err(|source| AgentError::Subscribe { subject, source })?;
        let mut runner = Runner::new(self, client, own);
        let result = runner.event_loop(&shutdown).await;
        // Boxed, like the loop's handlers, so the task does not reserve room for it.
        Box::pin(runner.finish(result.is_ok())).await;
        result
    }
}
