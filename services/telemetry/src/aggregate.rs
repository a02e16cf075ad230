//! Prometheus metrics derived from events.
//!
//! Two kinds, fed from two subscriptions:
//! - [`Counters`]: additive counts and histograms (sessions, rejections, detections,
//!   switches, events). Replicas share events through a queue group, so each event is
//!   counted once across replicas and `sum()` over pods gives the fleet total.
//! - [`Gauges`]: absolute state (agents by status, active faults). Every replica needs
//!   every state change to hold the whole picture, so these events come on a plain
//!   subscription as well, and are re-seeded periodically from the registry and the
//!   fault-injector, which own that state.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mabeam_protocol::{
    fault::FaultList,
    registry::{AgentList, AgentStatus},
    telemetry::{EventKind, TelemetryEvent},
};
use metrics::{Counter, Histogram};

/// Bounds the ids kept for `mabeam_faults_active`, so a flood of bogus events cannot grow
/// memory without limit.
const MAX_TRACKED_FAULTS: usize = 100_000;

/// The algorithm as a label value: a known name, else `other`, so events cannot blow up
/// the label cardinality.
pub fn algorithm_label(name: &str) -> &'static str {
    mabeam_consensus::algorithm::ALGORITHMS
        .iter()
        .find(|known| **known == name)
        .copied()
        .unwrap_or("other")
}

/// Whether an event changes the state [`Gauges`] track (and so travels on the gauge
/// subscription).
pub fn is_gauge_event(event: &EventKind) -> bool {
    matches!(
        event,
        EventKind::AgentStatusChanged { .. }
            | EventKind::FaultInjected { .. }
            | EventKind::FaultHealed { .. }
    )
}

/// A metric name and up to two label values: the key of a cached handle.
type HandleKey = (&'static str, &'static str, &'static str);

/// Counters and histograms; one per ingest task.
///
/// Handles are resolved once per label set and cached: this runs for every event, and a
/// cached handle is one atomic add instead of a registry lookup.
#[derive(Debug, Default)]
pub struct Counters {
    counters: HashMap<HandleKey, Counter>,
    histograms: HashMap<HandleKey, Histogram>,
}

/// Detection kinds counted in `mabeam_byzantine_detections_total`.
const DETECTION_KINDS: [&str; 3] = ["equivocation", "invalid_signature", "replay"];

impl Counters {
    /// Byzantine detections exist at zero from the start, so `rate()`/`increase()` in alerts
    /// and dashboards see the first detection as a change rather than a new series.
    pub fn new() -> Self {
        let mut counters = Self::default();
        for kind in DETECTION_KINDS {
            counters
                .counters
                .entry(("mabeam_byzantine_detections_total", kind, ""))
                .or_insert_with(
                    || metrics::counter!("mabeam_byzantine_detections_total", "kind" => kind),
                );
        }
        counters
    }

    fn count(&mut self, key: HandleKey, make: impl FnOnce() -> Counter) {
        self.counters.entry(key).or_insert_with(make).increment(1);
    }

    fn observe(&mut self, key: HandleKey, value: f64, make: impl FnOnce() -> Histogram) {
        self.histograms
            .entry(key)
            .or_insert_with(make)
            .record(value);
    }

    pub fn record(&mut self, event: &TelemetryEvent) {
        let service = event.service.as_str();
        let kind = event.event.name();
        self.count(("mabeam_telemetry_events_total", service, kind), || {
            metrics::counter!("mabeam_telemetry_events_total", "service" => service, "kind" => kind)
        });
        match &event.event {
            EventKind::SessionFinished {
                algorithm,
                status,
                rounds,
                duration_ms,
                ..
            } => {
                let algorithm = algorithm_label(algorithm);
                let status = status.as_str();
                self.count(("mabeam_sessions_total", algorithm, status), || {
                    metrics::counter!("mabeam_sessions_total", "algorithm" => algorithm, "status" => status)
                });
                self.observe(
                    ("mabeam_decision_duration_seconds", algorithm, ""),
                    *duration_ms as f64 / 1000.0,
                    || metrics::histogram!("mabeam_decision_duration_seconds", "algorithm" => algorithm),
                );
                self.observe(
                    ("mabeam_session_rounds", algorithm, ""),
                    f64::from(*rounds),
                    || metrics::histogram!("mabeam_session_rounds", "algorithm" => algorithm),
                );
            }
            EventKind::TaskRejected { code, .. } => {
                let code = code.as_str();
                self.count(
                    ("mabeam_tasks_rejected_total", code, ""),
                    || metrics::counter!("mabeam_tasks_rejected_total", "code" => code),
                );
            }
            EventKind::BallotRejected { reason, .. } => {
                let reason = reason.as_str();
                self.count(
                    ("mabeam_ballots_rejected_total", reason, ""),
                    || metrics::counter!("mabeam_ballots_rejected_total", "reason" => reason),
                );
                // Forged signatures and replays are attacks even when they cannot be pinned
                // on the named agent.
                if matches!(reason, "invalid_signature" | "replay") {
                    self.count(
                        ("mabeam_byzantine_detections_total", reason, ""),
                        || metrics::counter!("mabeam_byzantine_detections_total", "kind" => reason),
                    );
                }
            }
            EventKind::EquivocationDetected { .. } => {
                self.count(
                    ("mabeam_byzantine_detections_total", "equivocation", ""),
                    || metrics::counter!("mabeam_byzantine_detections_total", "kind" => "equivocation"),
                );
            }
            EventKind::AlgorithmSwitched { from, to, .. } => {
                let (from, to) = (algorithm_label(from), algorithm_label(to));
                self.count(("mabeam_algorithm_switches_total", from, to), || {
                    metrics::counter!("mabeam_algorithm_switches_total", "from" => from, "to" => to)
                });
            }
            // Dead letters are counted by kind in mabeam_telemetry_events_total above.
            EventKind::TaskAccepted { .. }
            | EventKind::TaskDeadLettered { .. }
            | EventKind::SessionStarted { .. }
            | EventKind::SessionResumed { .. }
            | EventKind::AgentStatusChanged { .. }
            | EventKind::FaultInjected { .. }
            | EventKind::FaultHealed { .. } => {}
        }
    }
}

/// Agents by status and active faults, as this replica knows them.
#[derive(Debug, Default)]
pub struct Gauges {
    /// Signed: a transition may arrive before the seed that counts its origin.
    agents: BTreeMap<AgentStatus, i64>,
    faults: BTreeSet<String>,
}

impl Gauges {
    /// Publishes zeroes, so every series exists from the start.
    pub fn new() -> Self {
        let gauges = Self::default();
        gauges.publish_agents();
        gauges.publish_faults();
        gauges
    }

    pub fn apply(&mut self, event: &EventKind) {
        match event {
            EventKind::AgentStatusChanged { from, to, .. } => {
                if from.as_ref() == Some(to) {
                    return;
                }
                if let Some(from) = from {
                    *self.agents.entry(*from).or_default() -= 1;
                }
                *self.agents.entry(*to).or_default() += 1;
                self.publish_agents();
            }
            EventKind::FaultInjected { fault_id, .. } => {
                if self.faults.len() < MAX_TRACKED_FAULTS {
                    self.faults.insert(fault_id.clone());
                }
                self.publish_faults();
            }
            EventKind::FaultHealed { fault_id } => {
                self.faults.remove(fault_id);
                self.publish_faults();
            }
            _ => {}
        }
    }

    /// Replaces the agent counts with the registry's.
    pub fn seed_agents(&mut self, list: &AgentList) {
        self.agents.clear();
        for agent in &list.agents {
            *self.agents.entry(agent.status).or_default() += 1;
        }
        self.publish_agents();
    }

    /// Replaces the active faults with the fault-injector's.
    pub fn seed_faults(&mut self, list: &FaultList) {
        self.faults = list
            .faults
            .iter()
            .take(MAX_TRACKED_FAULTS)
            .map(|f| f.id.clone())
            .collect();
        self.publish_faults();
    }

    pub fn agents(&self, status: AgentStatus) -> i64 {
        self.agents.get(&status).copied().unwrap_or(0)
    }

    pub fn faults_active(&self) -> usize {
        self.faults.len()
    }

    fn publish_agents(&self) {
        for status in AgentStatus::ALL {
            let count = self.agents(status).max(0);
            metrics::gauge!("mabeam_agents", "status" => status.as_str()).set(count as f64);
        }
    }

    fn publish_faults(&self) {
        metrics::gauge!("mabeam_faults_active").set(self.faults.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use mabeam_protocol::{fault::ActiveFault, AgentId};

    use super::*;

    fn status_change(agent: &str, from: Option<AgentStatus>, to: AgentStatus) -> EventKind {
        EventKind::AgentStatusChanged {
            agent_id: AgentId::new(agent).unwrap(),
            from,
            to,
        }
    }

    #[test]
    fn unknown_algorithms_share_one_label() {
        assert_eq!(algorithm_label("byzantine"), "byzantine");
        assert_eq!(algorithm_label("raft"), "other");
        assert_eq!(algorithm_label(""), "other");
    }

    #[test]
    fn status_changes_move_agents_between_statuses() {
        let mut g = Gauges::default();
        g.apply(&status_change("a", None, AgentStatus::Registered));
        g.apply(&status_change("b", None, AgentStatus::Registered));
        g.apply(&status_change(
            "a",
            Some(AgentStatus::Registered),
            AgentStatus::Active,
        ));
        assert_eq!(g.agents(AgentStatus::Registered), 1);
        assert_eq!(g.agents(AgentStatus::Active), 1);
        g.apply(&status_change(
            "a",
            Some(AgentStatus::Active),
            AgentStatus::Active,
        ));
        assert_eq!(
            g.agents(AgentStatus::Active),
            1,
            "no-op transitions change nothing"
        );
    }

    #[test]
    fn faults_count_once_per_id_and_seeding_replaces_them() {
        let mut g = Gauges::default();
        let inject = |id: &str| EventKind::FaultInjected {
            fault_id: id.into(),
            description: String::new(),
        };
        g.apply(&inject("f1"));
        g.apply(&inject("f1"));
        g.apply(&inject("f2"));
        assert_eq!(g.faults_active(), 2);
        g.apply(&EventKind::FaultHealed {
            fault_id: "f1".into(),
        });
        g.apply(&EventKind::FaultHealed {
            fault_id: "unknown".into(),
        });
        assert_eq!(g.faults_active(), 1);
        g.seed_faults(&FaultList {
            v: 1,
            faults: vec![ActiveFault {
                id: "f9".into(),
                fault: mabeam_protocol::fault::FaultKind::Link {
                    link: mabeam_protocol::fault::Link::Nats,
                    fault: mabeam_protocol::fault::LinkFault::Reset,
                },
                started_ms: 0,
                ends_ms: None,
            }],
        });
        assert_eq!(g.faults_active(), 1);
        g.apply(&EventKind::FaultHealed {
            fault_id: "f9".into(),
        });
        assert_eq!(g.faults_active(), 0);
    }
}
