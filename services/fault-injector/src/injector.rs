//! The injector's state: every fault by id and its timeline (scheduled → on [→ off → on …
//! while flapping] → ended), the commands that make agents and proxies obey, and the copy in
//! Redis.
//!
//! One function, [`Injector::reconcile`], moves every fault to the phase the clock says it
//! is in; requests call it before answering (so an injected fault is in force when the reply
//! arrives) and a driver task calls it at each scheduled change and resend.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use mabeam_protocol::{
    codec::{encode, ContentType},
    fault::{ActiveFault, AgentBehaviour, AgentFaultCommand, FaultKind, FaultSpec, Link},
    subjects,
    telemetry::EventKind,
    AgentId, ErrorCode, PROTOCOL_VERSION,
};
use mabeam_runtime::{now_ms, reply, EventSink, Shutdown};
use redis::aio::ConnectionManager;
use tokio::sync::{Mutex, Notify};

use crate::{
    partition,
    proxy::FaultProxy,
    spec::{self, link_name},
    store::{self, Record},
};

/// Every `target` label value, so each gauge shows 0 rather than disappearing.
const TARGETS: [&str; 3] = ["agents", "partition", "link"];
/// The driver's longest sleep when nothing is scheduled (requests wake it anyway).
const IDLE_WAKE: Duration = Duration::from_secs(60);

/// A refused request: its error code and message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn redis(e: &redis::RedisError) -> Self {
        Self::new(
            ErrorCode::Unavailable,
            format!("cannot store the fault in Redis: {e}"),
        )
    }
}

/// Where a fault is in its timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Scheduled,
    On,
    /// A flapping partition in its healed half-period.
    Off,
    Ended,
}

fn flap_ms(r: &Record) -> Option<u64> {
    match &r.fault {
        FaultKind::Partition {
            flap_ms: Some(f), ..
        } if *f > 0 => Some(*f),
        _ => None,
    }
}

pub(crate) fn phase(r: &Record, now: u64) -> Phase {
    if r.ends_ms.is_some_and(|end| now >= end) {
        Phase::Ended
    } else if now < r.starts_ms {
        Phase::Scheduled
    } else {
        match flap_ms(r) {
            Some(f) if ((now - r.starts_ms) / f) % 2 == 1 => Phase::Off,
            _ => Phase::On,
        }
    }
}

/// When the phase changes next by itself (always after `now`), if ever.
pub(crate) fn next_change(r: &Record, now: u64) -> Option<u64> {
    let next = if now < r.starts_ms {
        Some(r.starts_ms)
    } else {
        flap_ms(r).map(|f| {
            r.starts_ms
                .saturating_add(((now - r.starts_ms) / f + 1).saturating_mul(f))
        })
    };
    match (next, r.ends_ms) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Commands of agent faults and partitions are re-sent while on; proxies keep their state.
fn resent(r: &Record) -> bool {
    !matches!(r.fault, FaultKind::Link { .. })
}

#[derive(Debug)]
struct Tracked {
    record: Record,
    /// What was last put in force: `Some(true)` applied, `Some(false)` lifted (or never
    /// applied), `None` unknown (restored after a restart).
    sent: Option<bool>,
    last_sent_ms: u64,
}

#[derive(Debug, Default)]
struct State {
    faults: BTreeMap<String, Tracked>,
    /// Ended faults whose Redis records could not be deleted yet.
    undeleted: BTreeSet<String>,
}

#[derive(Debug)]
pub(crate) struct Injector {
    nats: async_nats::Client,
    redis: ConnectionManager,
    events: EventSink,
    proxies: Vec<Arc<FaultProxy>>,
    resend_every_ms: u64,
    state: Mutex<State>,
    wake: Notify,
}

impl Injector {
    pub(crate) fn new(
        nats: async_nats::Client,
        redis: ConnectionManager,
        events: EventSink,
        proxies: Vec<Arc<FaultProxy>>,
        resend_every: Duration,
    ) -> Self {
        Self {
            nats,
            redis,
            events,
            proxies,
            resend_every_ms: resend_every.as_millis() as u64,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        }
    }

    fn proxy(&self, link: Link) -> Option<&FaultProxy> {
        self.proxies.iter().find(|p| p.link() == link).map(|p| &**p)
    }

    /// Takes over the faults a previous instance stored and puts them in force again.
    pub(crate) async fn restore(&self) -> redis::RedisResult<usize> {
        let records = store::load(&mut self.redis.clone()).await?;
        let mut st = self.state.lock().await;
        let count = records.len();
        for record in records {
            st.faults.insert(
                record.id.clone(),
                Tracked {
                    record,
                    sent: None,
                    last_sent_ms: 0,
                },
            );
        }
        self.reconcile(&mut st, now_ms()).await;
        if count > 0 {
            tracing::info!(faults = count, "restored stored faults");
        }
        Ok(count)
    }

    pub(crate) async fn inject(&self, spec: FaultSpec) -> Result<ActiveFault, Refusal> {
        spec::validate(&spec).map_err(|e| Refusal::new(e.code(), e.to_string()))?;
        if let FaultKind::Link { link, .. } = &spec.fault {
            if self.proxy(*link).is_none() {
                let upper = link_name(*link).to_ascii_uppercase();
                return Err(Refusal::new(
                    ErrorCode::Unavailable,
                    format!(
                        "no fault proxy on the {} link: start the injector with MABEAM_PROXY_{upper}_LISTEN and MABEAM_PROXY_{upper}_UPSTREAM",
                        link_name(*link)
                    ),
                ));
            }
        }
        let mut redis = self.redis.clone();
        let mut st = self.state.lock().await;
        let id = match spec.id {
            Some(id) if st.faults.contains_key(&id) => {
                return Err(Refusal::new(
                    ErrorCode::InvalidParams,
                    format!(
                    "fault {id} is already active or scheduled: heal it first or choose another id"
                ),
                ))
            }
            Some(id) => id,
            None => loop {
                let id = store::next_id(&mut redis)
                    .await
                    .map_err(|e| Refusal::redis(&e))?;
                // A caller may have chosen an id of the generated form.
                if !st.faults.contains_key(&id) {
                    break id;
                }
            },
        };
        let now = now_ms();
        let starts_ms = now.saturating_add(spec.start_after_ms);
        let record = Record {
            id: id.clone(),
            fault: spec.fault,
            created_ms: now,
            starts_ms,
            ends_ms: spec.duration_ms.map(|d| starts_ms.saturating_add(d)),
        };
        store::save(&mut redis, &record)
            .await
            .map_err(|e| Refusal::redis(&e))?;
        let target = spec::target(&record.fault);
        metrics::counter!("mabeam_fault_injector_faults_total", "target" => target).increment(1);
        let mut description = spec::describe(&record.fault);
        if spec.start_after_ms > 0 {
            description.push_str(&format!(", starting in {} ms", spec.start_after_ms));
        }
        if let Some(d) = spec.duration_ms {
            description.push_str(&format!(", for {d} ms"));
        }
        self.events
            .emit(EventKind::FaultInjected {
                fault_id: id.clone(),
                description,
            })
            .await;
        let view = record.view();
        st.faults.insert(
            id,
            Tracked {
                record,
                sent: Some(false),
                last_sent_ms: 0,
            },
        );
        self.reconcile(&mut st, now).await;
        drop(st);
        self.wake.notify_one();
        Ok(view)
    }

    /// Heals one fault, or every fault when `id` is `None`.
    pub(crate) async fn heal(&self, id: Option<String>) -> Result<Vec<ActiveFault>, Refusal> {
        let mut st = self.state.lock().await;
        let ids: Vec<String> = match id {
            Some(id) if !st.faults.contains_key(&id) => {
                return Err(Refusal::new(
                    ErrorCode::InvalidParams,
                    format!("no active or scheduled fault with id {id}"),
                ))
            }
            Some(id) => vec![id],
            None => st.faults.keys().cloned().collect(),
        };
        // Deleted first: a fault healed here must not come back after a restart.
        store::delete(&mut self.redis.clone(), &ids)
            .await
            .map_err(|e| Refusal::redis(&e))?;
        let mut healed = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(t) = st.faults.remove(&id) {
                healed.push(t.record.view());
                self.end(t, "request").await;
            }
        }
        self.update_gauges(&st, now_ms());
        drop(st);
        self.wake.notify_one();
        Ok(healed)
    }

    /// Active and scheduled faults, oldest first.
    pub(crate) async fn list(&self) -> Vec<ActiveFault> {
        let st = self.state.lock().await;
        let mut records: Vec<&Record> = st.faults.values().map(|t| &t.record).collect();
        records.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
        records.into_iter().map(Record::view).collect()
    }

    /// Reconciles at every scheduled change and resend until `shutdown`.
    pub(crate) async fn drive(self: Arc<Self>, shutdown: Shutdown) {
        loop {
            let wait = {
                let mut st = self.state.lock().await;
                let now = now_ms();
                self.reconcile(&mut st, now).await;
                self.next_wake(&st, now)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
    }

    fn next_wake(&self, st: &State, now: u64) -> Duration {
        let mut next: Option<u64> = None;
        let mut earliest = |at: u64| next = Some(next.map_or(at, |n| n.min(at)));
        for t in st.faults.values() {
            if let Some(at) = next_change(&t.record, now) {
                earliest(at);
            }
            if resent(&t.record) && phase(&t.record, now) == Phase::On {
                earliest(t.last_sent_ms.saturating_add(self.resend_every_ms));
            }
        }
        if !st.undeleted.is_empty() {
            earliest(now.saturating_add(self.resend_every_ms));
        }
        next.map_or(IDLE_WAKE, |at| {
            Duration::from_millis(at.saturating_sub(now)).min(IDLE_WAKE)
        })
    }

    async fn reconcile(&self, st: &mut State, now: u64) {
        let mut ended = Vec::new();
        for (id, t) in st.faults.iter_mut() {
            match phase(&t.record, now) {
                Phase::Scheduled => {}
                Phase::On => {
                    let resend_due = resent(&t.record)
                        && now.saturating_sub(t.last_sent_ms) >= self.resend_every_ms;
                    if t.sent != Some(true) || resend_due {
                        self.apply(&t.record).await;
                        t.sent = Some(true);
                        t.last_sent_ms = now;
                    }
                }
                Phase::Off => {
                    if t.sent != Some(false) {
                        self.lift(&t.record).await;
                        t.sent = Some(false);
                    }
                }
                Phase::Ended => ended.push(id.clone()),
            }
        }
        for id in &ended {
            if let Some(t) = st.faults.remove(id) {
                self.end(t, "expired").await;
            }
        }
        st.undeleted.extend(ended);
        if !st.undeleted.is_empty() {
            let ids: Vec<String> = st.undeleted.iter().cloned().collect();
            match store::delete(&mut self.redis.clone(), &ids).await {
                Ok(()) => st.undeleted.clear(),
                Err(e) => {
                    tracing::warn!(error = %e, faults = ids.len(), "cannot delete healed faults from Redis yet; retrying")
                }
            }
        }
        self.update_gauges(st, now);
    }

    /// Lifts a fault that is leaving the state and reports the heal.
    async fn end(&self, t: Tracked, reason: &'static str) {
        if t.sent != Some(false) {
            self.lift(&t.record).await;
        }
        metrics::counter!("mabeam_fault_injector_heals_total", "reason" => reason).increment(1);
        self.events
            .emit(EventKind::FaultHealed {
                fault_id: t.record.id,
            })
            .await;
    }

    fn update_gauges(&self, st: &State, now: u64) {
        for target in TARGETS {
            let active = st
                .faults
                .values()
                .filter(|t| spec::target(&t.record.fault) == target)
                .filter(|t| matches!(phase(&t.record, now), Phase::On | Phase::Off))
                .count();
            metrics::gauge!("mabeam_fault_injector_faults_active", "target" => target)
                .set(active as f64);
        }
    }

    async fn apply(&self, r: &Record) {
        match &r.fault {
            FaultKind::Agents { agents, behaviour } => {
                self.command(agents.iter(), &command(&r.id, Some(behaviour.clone())))
                    .await;
            }
            FaultKind::Partition { groups, .. } => {
                for (members, cmd) in partition::group_commands(&r.id, groups) {
                    self.command(members.iter(), &cmd).await;
                }
            }
            FaultKind::Link { link, fault } => {
                if let Some(p) = self.proxy(*link) {
                    p.set(&r.id, fault.clone());
                }
            }
        }
    }

    async fn lift(&self, r: &Record) {
        match &r.fault {
            FaultKind::Agents { agents, .. } => {
                self.command(agents.iter(), &command(&r.id, None)).await;
            }
            FaultKind::Partition { groups, .. } => {
                self.command(groups.iter().flatten(), &command(&r.id, None))
                    .await;
            }
            FaultKind::Link { link, .. } => {
                if let Some(p) = self.proxy(*link) {
                    p.remove(&r.id);
                }
            }
        }
    }

    /// Sends one command to each agent's fault subject (encoded once).
    async fn command<'a>(
        &self,
        agents: impl Iterator<Item = &'a AgentId>,
        cmd: &AgentFaultCommand,
    ) {
        let body: bytes::Bytes = match encode(ContentType::MsgPack, cmd) {
            Ok(b) => b.into(),
            Err(e) => {
                tracing::error!(error = %e, fault_id = %cmd.fault_id, "cannot encode fault command");
                return;
            }
        };
        let headers = reply::headers_for(ContentType::MsgPack);
        let kind = if cmd.behaviour.is_some() || !cmd.unreachable.is_empty() {
            "apply"
        } else {
            "heal"
        };
        let mut sent = 0u64;
        for agent in agents {
            match self
                .nats
                .publish_with_headers(subjects::agent_faults(agent), headers.clone(), body.clone())
                .await
            {
                Ok(()) => sent += 1,
                Err(e) => {
                    tracing::warn!(error = %e, agent = %agent, fault_id = %cmd.fault_id, "cannot send fault command")
                }
            }
        }
        metrics::counter!("mabeam_fault_injector_commands_total", "kind" => kind).increment(sent);
    }
}

/// A behaviour command; `None` heals (and clears a partition's unreachable set).
fn command(fault_id: &str, behaviour: Option<AgentBehaviour>) -> AgentFaultCommand {
    AgentFaultCommand {
        v: PROTOCOL_VERSION,
        fault_id: fault_id.to_owned(),
        behaviour,
        unreachable: Vec::new(),
        coordinator_unreachable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(starts_ms: u64, ends_ms: Option<u64>, flap: Option<u64>) -> Record {
        Record {
            id: "f".into(),
            fault: FaultKind::Partition {
                groups: vec![
                    vec![AgentId::new("a").unwrap()],
                    vec![AgentId::new("b").unwrap()],
                ],
                flap_ms: flap,
            },
            created_ms: 0,
            starts_ms,
            ends_ms,
        }
    }

    #[test]
    fn a_fault_is_scheduled_then_on_then_ended() {
        let r = record(100, Some(300), None);
        assert_eq!(phase(&r, 99), Phase::Scheduled);
        assert_eq!(next_change(&r, 99), Some(100));
        assert_eq!(phase(&r, 100), Phase::On);
        assert_eq!(next_change(&r, 100), Some(300));
        assert_eq!(phase(&r, 300), Phase::Ended);
        let forever = record(0, None, None);
        assert_eq!(phase(&forever, u64::MAX / 2), Phase::On);
        assert_eq!(next_change(&forever, 5), None);
    }

    #[test]
    fn a_flapping_partition_alternates_every_period() {
        let r = record(1000, Some(1450), Some(100));
        let phases: Vec<Phase> = (1000..1450).step_by(50).map(|t| phase(&r, t)).collect();
        use Phase::*;
        assert_eq!(phases, [On, On, Off, Off, On, On, Off, Off, On]);
        assert_eq!(next_change(&r, 1000), Some(1100));
        assert_eq!(next_change(&r, 1199), Some(1200));
        assert_eq!(next_change(&r, 1420), Some(1450), "the end comes first");
    }
}
