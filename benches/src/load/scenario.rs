//! The scenario mix: algorithm × agent count, with and without faults. Each scenario has its
//! own agent-sim fleet (ids `<name>-00000`…, capability `<name>`), so scenarios never share
//! agents and a fault injected into one fleet touches no other scenario.

use mabeam_protocol::{
    fault::AgentBehaviour,
    task::{ParticipantSelector, Priority, TaskSubmission},
    AgentId, IdError, TaskId, PROTOCOL_VERSION,
};
use serde_json::json;

/// How a scenario's tasks name their participants (both ways the wire protocol offers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// `{"capability": <name>, "count": agents}`: the registry picks them.
    Capability,
    /// `{"agents": [...]}`: every id listed.
    Explicit,
}

/// Agents of the fleet that misbehave for the whole run, set through the fault-injector.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub agents: usize,
    pub behaviour: AgentBehaviour,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Also the fleet's id prefix and capability.
    pub name: String,
    pub algorithm: &'static str,
    pub agents: usize,
    pub params: serde_json::Value,
    pub options: Vec<String>,
    pub selection: Selection,
    pub fault: Option<Fault>,
    /// Sessions per second at rate multiplier 1: together about 75/s, what one coordinator
    /// sustains with every scenario at once on a busy 2-core machine (BENCHMARKS.md);
    /// `RATE_SCALE` raises it.
    pub base_rate: f64,
    /// `MABEAM_SIM_NOISE` of the fleet: 0 makes every honest agent prefer the first option, so
    /// a session that fails to decide is the machinery's fault, not the opinions'.
    pub noise: f64,
    /// Session timeout.
    pub timeout_ms: u64,
    /// The queue its tasks go to.
    pub priority: Priority,
}

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("unknown scenario {0:?}; known: {1}")]
    Unknown(String, String),
    #[error(transparent)]
    Id(#[from] IdError),
}

fn choice(name: &str, algorithm: &'static str, agents: usize, base_rate: f64) -> Scenario {
    Scenario {
        name: name.to_owned(),
        algorithm,
        agents,
        params: json!({}),
        options: vec!["ship".into(), "hold".into()],
        selection: Selection::Capability,
        fault: None,
        base_rate,
        noise: 0.0,
        timeout_ms: 10_000,
        priority: Priority::Normal,
    }
}

fn byzantine(name: &str, agents: usize, f: usize, base_rate: f64) -> Scenario {
    Scenario {
        params: json!({ "f": f }),
        selection: Selection::Explicit,
        ..choice(name, "byzantine", agents, base_rate)
    }
}

fn iterative(name: &str, agents: usize, base_rate: f64) -> Scenario {
    Scenario {
        // Numbers spread ±10 % around 50; each round agents move toward the aggregate, so
        // the session needs a few rounds to get within 1.0.
        params: json!({ "max_rounds": 5, "convergence_threshold": 1.0 }),
        options: Vec::new(),
        noise: 0.1,
        ..choice(name, "iterative", agents, base_rate)
    }
}

/// The same tasks through the high-priority queue: with a coordinator's session slots
/// bounded (`--max-sessions`), they should overtake the others once the slots run out.
fn high_priority(mut s: Scenario) -> Scenario {
    s.name = format!("{}-high", s.name);
    s.priority = Priority::High;
    s
}

fn with_fault(mut s: Scenario, agents: usize, behaviour: AgentBehaviour) -> Scenario {
    s.name = format!("{}-faults", s.name);
    s.fault = Some(Fault { agents, behaviour });
    s
}

/// The mix from the targets table (design brief §6), with faulty variants. `tiny` gives the
/// same shapes at a handful of agents, for the smoke run in `make test`.
pub fn catalogue(tiny: bool) -> Vec<Scenario> {
    if tiny {
        return vec![
            choice("majority-5", "majority", 5, 20.0),
            choice("weighted-7", "weighted", 7, 5.0),
            byzantine("byzantine-4", 4, 1, 5.0),
            iterative("iterative-4", 4, 5.0),
            with_fault(
                choice("majority-5", "majority", 5, 5.0),
                1,
                AgentBehaviour::Silent,
            ),
            with_fault(
                byzantine("byzantine-4", 4, 1, 2.0),
                1,
                AgentBehaviour::Silent,
            ),
        ];
    }
    vec![
        choice("majority-5", "majority", 5, 50.0),
        choice("weighted-50", "weighted", 50, 5.0),
        choice("weighted-200", "weighted", 200, 1.0),
        byzantine("byzantine-13", 13, 4, 5.0),
        byzantine("byzantine-100", 100, 33, 0.25),
        iterative("iterative-20", 20, 5.0),
        high_priority(choice("majority-5", "majority", 5, 5.0)),
        // Silent agents keep heartbeating (they stay eligible) but never vote: crash faults
        // at the tolerated bound.
        with_fault(
            choice("majority-5", "majority", 5, 5.0),
            1,
            AgentBehaviour::Silent,
        ),
        with_fault(
            choice("weighted-50", "weighted", 50, 1.0),
            10,
            AgentBehaviour::Slow {
                delay_ms: 5,
                jitter_ms: 2,
            },
        ),
        with_fault(
            byzantine("byzantine-13", 13, 4, 2.0),
            4,
            AgentBehaviour::Silent,
        ),
    ]
}

/// The scenarios named in `names` (all when empty), in catalogue order.
pub fn select(tiny: bool, names: &[String]) -> Result<Vec<Scenario>, ScenarioError> {
    let all = catalogue(tiny);
    if names.is_empty() {
        return Ok(all);
    }
    for n in names {
        if !all.iter().any(|s| &s.name == n) {
            let known: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
            return Err(ScenarioError::Unknown(n.clone(), known.join(", ")));
        }
    }
    Ok(all
        .into_iter()
        .filter(|s| names.contains(&s.name))
        .collect())
}

impl Scenario {
    /// The fleet's agent ids, as agent-sim names them.
    pub fn agent_ids(&self) -> Result<Vec<AgentId>, IdError> {
        (0..self.agents)
            .map(|i| AgentId::new(format!("{}-{i:05}", self.name)))
            .collect()
    }

    /// The agents the fault-injector makes misbehave: the first ones of the fleet.
    pub fn faulty_ids(&self) -> Result<Vec<AgentId>, IdError> {
        let n = self.fault.as_ref().map_or(0, |f| f.agents);
        Ok(self.agent_ids()?.into_iter().take(n).collect())
    }

    pub fn task(&self, task_id: TaskId) -> Result<TaskSubmission, IdError> {
        let participants = match self.selection {
            Selection::Capability => ParticipantSelector::Capability {
                capability: self.name.clone(),
                count: u32::try_from(self.agents).ok(),
            },
            Selection::Explicit => ParticipantSelector::Agents {
                agents: self.agent_ids()?,
            },
        };
        Ok(TaskSubmission {
            v: PROTOCOL_VERSION,
            task_id: Some(task_id),
            algorithm: self.algorithm.to_owned(),
            proposal: json!({ "load_test": self.name }),
            options: self.options.clone(),
            participants,
            params: self.params.clone(),
            timeout_ms: Some(self.timeout_ms),
            priority: Some(self.priority),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_full_mix_covers_the_targets_table() {
        let names: Vec<String> = catalogue(false).into_iter().map(|s| s.name).collect();
        for n in [
            "majority-5",
            "weighted-50",
            "weighted-200",
            "byzantine-13",
            "byzantine-100",
            "iterative-20",
            "majority-5-faults",
            "byzantine-13-faults",
        ] {
            assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
        }
    }

    #[test]
    fn byzantine_faults_stay_within_f() {
        for s in catalogue(false).into_iter().chain(catalogue(true)) {
            if s.algorithm == "byzantine" {
                let f = s.params["f"].as_u64().unwrap() as usize;
                assert!(s.agents > 3 * f, "{}", s.name);
                assert!(s.fault.as_ref().map_or(0, |x| x.agents) <= f, "{}", s.name);
            }
        }
    }

    #[test]
    fn unknown_scenarios_are_refused_with_the_known_names() {
        let err = select(false, &["majority-6".into()]).unwrap_err();
        assert!(err.to_string().contains("majority-5"), "{err}");
        let picked = select(false, &["byzantine-13".into()]).unwrap();
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].agent_ids().unwrap().len(), 13);
    }
}
