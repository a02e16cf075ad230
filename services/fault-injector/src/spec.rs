//! Pure checks and descriptions of fault specs, shared by the request API and scenario files
//! (so a scenario is refused before it runs, with the same messages the service gives).

use std::collections::BTreeSet;

use mabeam_protocol::{
    fault::{AgentBehaviour, FaultKind, FaultSpec, Link, LinkFault},
    AgentId, ErrorCode,
};
use thiserror::Error;

/// Longest fault id; ids use the same characters as agent ids.
pub const MAX_FAULT_ID_LEN: usize = 128;
/// Shortest flapping period: faster than this, commands would outrun their delivery.
pub const MIN_FLAP_MS: u64 = 10;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum SpecError {
    #[error("fault id {id:?} is invalid: {reason}")]
    InvalidId { id: String, reason: &'static str },
    #[error("the fault names no agents")]
    NoAgents,
    #[error("agent {0} is listed more than once")]
    DuplicateAgent(AgentId),
    #[error("{0}")]
    Invalid(String),
}

impl SpecError {
    /// The error code a refused request carries.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NoAgents => ErrorCode::NoParticipants,
            _ => ErrorCode::InvalidParams,
        }
    }
}

fn invalid(message: impl Into<String>) -> SpecError {
    SpecError::Invalid(message.into())
}

/// A fault id: 1–128 characters of `[A-Za-z0-9_:-]`, like the other ids.
pub fn validate_id(id: &str) -> Result<(), SpecError> {
    let reason = if id.is_empty() {
        Some("it is empty")
    } else if id.len() > MAX_FAULT_ID_LEN {
        Some("it is longer than 128 characters")
    } else if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
    {
        Some("allowed are ASCII letters, digits, '-', '_' and ':'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SpecError::InvalidId {
            id: id.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Everything that can be checked without the running service (configured proxies and
/// active ids are checked there).
pub fn validate(spec: &FaultSpec) -> Result<(), SpecError> {
    if let Some(id) = &spec.id {
        validate_id(id)?;
    }
    if spec.duration_ms == Some(0) {
        return Err(invalid(
            "duration_ms must be positive (leave it out for a fault that lasts until healed)",
        ));
    }
    match &spec.fault {
        FaultKind::Agents { agents, behaviour } => {
            distinct(agents.iter())?;
            if agents.is_empty() {
                return Err(SpecError::NoAgents);
            }
            validate_behaviour(behaviour)
        }
        FaultKind::Partition { groups, flap_ms } => {
            distinct(groups.iter().flatten())?;
            if groups.iter().all(Vec::is_empty) {
                return Err(SpecError::NoAgents);
            }
            if groups.len() < 2 {
                return Err(invalid("a partition needs at least two groups"));
            }
            if let Some(i) = groups.iter().position(Vec::is_empty) {
                return Err(invalid(format!("partition group {i} is empty")));
            }
            match flap_ms {
                Some(f) if *f < MIN_FLAP_MS => Err(invalid(format!(
                    "flap_ms must be at least {MIN_FLAP_MS}, got {f}"
                ))),
                _ => Ok(()),
            }
        }
        FaultKind::Link { fault, .. } => validate_link_fault(fault),
    }
}

fn distinct<'a>(agents: impl Iterator<Item = &'a AgentId>) -> Result<(), SpecError> {
    let mut seen = BTreeSet::new();
    for a in agents {
        if !seen.insert(a) {
            return Err(SpecError::DuplicateAgent(a.clone()));
        }
    }
    Ok(())
}

fn validate_behaviour(b: &AgentBehaviour) -> Result<(), SpecError> {
    match b {
        AgentBehaviour::Slow {
            delay_ms: 0,
            jitter_ms: 0,
        } => Err(invalid("slow needs delay_ms or jitter_ms above zero")),
        AgentBehaviour::Drop { percent } if !(*percent > 0.0 && *percent <= 100.0) => Err(invalid(
            format!("drop percent must be in (0, 100], got {percent}"),
        )),
        AgentBehaviour::Coalition { value } if value.is_empty() => {
            Err(invalid("coalition needs the value its members vote for"))
        }
        _ => Ok(()),
    }
}

fn validate_link_fault(f: &LinkFault) -> Result<(), SpecError> {
    match f {
        LinkFault::Latency {
            latency_ms: 0,
            jitter_ms: 0,
        } => Err(invalid("latency needs latency_ms or jitter_ms above zero")),
        LinkFault::Bandwidth {
            bytes_per_second: 0,
        } => Err(invalid(
            "bytes_per_second must be positive (use blackhole to stop traffic)",
        )),
        LinkFault::Slicing { max_bytes: 0, .. } => Err(invalid("max_bytes must be positive")),
        _ => Ok(()),
    }
}

/// The `target` label of metrics: `agents`, `partition` or `link`.
pub fn target(kind: &FaultKind) -> &'static str {
    match kind {
        FaultKind::Agents { .. } => "agents",
        FaultKind::Partition { .. } => "partition",
        FaultKind::Link { .. } => "link",
    }
}

pub fn link_name(link: Link) -> &'static str {
    match link {
        Link::Nats => "nats",
        Link::Redis => "redis",
    }
}

/// One line for events and logs.
pub fn describe(kind: &FaultKind) -> String {
    match kind {
        FaultKind::Agents { agents, behaviour } => {
            let name = serde_json::to_value(behaviour)
                .ok()
                .and_then(|v| v.get("type").and_then(|t| t.as_str().map(str::to_owned)))
                .unwrap_or_else(|| "behaviour".to_owned());
            format!("{name} on {} agent(s): {}", agents.len(), list(agents))
        }
        FaultKind::Partition { groups, flap_ms } => {
            let sizes: Vec<String> = groups.iter().map(|g| g.len().to_string()).collect();
            let flap = flap_ms
                .map(|f| format!(", flapping every {f} ms"))
                .unwrap_or_default();
            format!("partition into groups of {}{flap}", sizes.join("|"))
        }
        FaultKind::Link { link, fault } => {
            let what = match fault {
                LinkFault::Latency {
                    latency_ms,
                    jitter_ms,
                } => format!("latency {latency_ms}±{jitter_ms} ms"),
                LinkFault::Bandwidth { bytes_per_second } => {
                    format!("bandwidth {bytes_per_second} B/s")
                }
                LinkFault::Reset => "reset".to_owned(),
                LinkFault::Blackhole => "blackhole".to_owned(),
                LinkFault::Slicing {
                    max_bytes,
                    delay_us,
                } => format!("slicing {max_bytes} B every {delay_us} µs"),
            };
            format!("{} link: {what}", link_name(*link))
        }
    }
}

fn list(agents: &[AgentId]) -> String {
    const SHOWN: usize = 5;
    let mut names: Vec<&str> = agents.iter().take(SHOWN).map(AgentId::as_str).collect();
    if agents.len() > SHOWN {
        names.push("…");
    }
    names.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<AgentId> {
        names.iter().map(|n| AgentId::new(*n).unwrap()).collect()
    }

    fn spec(fault: FaultKind) -> FaultSpec {
        FaultSpec {
            v: 1,
            id: None,
            fault,
            start_after_ms: 0,
            duration_ms: None,
        }
    }

    fn agents(behaviour: AgentBehaviour) -> FaultSpec {
        spec(FaultKind::Agents {
            agents: ids(&["a1", "a2"]),
            behaviour,
        })
    }

    #[test]
    fn zero_and_negative_percentages_are_refused() {
        for percent in [0.0, -5.0, 100.5, f64::NAN] {
            let e = validate(&agents(AgentBehaviour::Drop { percent })).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidParams);
            assert!(e.to_string().contains("percent"), "{e}");
        }
        validate(&agents(AgentBehaviour::Drop { percent: 100.0 })).unwrap();
    }

    #[test]
    fn empty_agent_lists_are_no_participants() {
        let e = validate(&spec(FaultKind::Agents {
            agents: vec![],
            behaviour: AgentBehaviour::Crash,
        }))
        .unwrap_err();
        assert_eq!(e, SpecError::NoAgents);
        assert_eq!(e.code(), ErrorCode::NoParticipants);
        let e = validate(&spec(FaultKind::Partition {
            groups: vec![vec![], vec![]],
            flap_ms: None,
        }))
        .unwrap_err();
        assert_eq!(e, SpecError::NoAgents);
    }

    #[test]
    fn partitions_need_two_disjoint_non_empty_groups() {
        let one = spec(FaultKind::Partition {
            groups: vec![ids(&["a", "b"])],
            flap_ms: None,
        });
        assert!(validate(&one).unwrap_err().to_string().contains("two"));
        let overlap = spec(FaultKind::Partition {
            groups: vec![ids(&["a", "b"]), ids(&["b"])],
            flap_ms: None,
        });
        assert_eq!(
            validate(&overlap).unwrap_err(),
            SpecError::DuplicateAgent(AgentId::new("b").unwrap())
        );
        let hole = spec(FaultKind::Partition {
            groups: vec![ids(&["a"]), vec![]],
            flap_ms: None,
        });
        assert!(validate(&hole).unwrap_err().to_string().contains("group 1"));
        let fast = spec(FaultKind::Partition {
            groups: vec![ids(&["a"]), ids(&["b"])],
            flap_ms: Some(1),
        });
        assert!(validate(&fast).unwrap_err().to_string().contains("flap_ms"));
    }

    #[test]
    fn no_op_behaviours_and_toxics_are_refused() {
        assert!(validate(&agents(AgentBehaviour::Slow {
            delay_ms: 0,
            jitter_ms: 0
        }))
        .is_err());
        assert!(validate(&agents(AgentBehaviour::Coalition {
            value: String::new()
        }))
        .is_err());
        for fault in [
            LinkFault::Latency {
                latency_ms: 0,
                jitter_ms: 0,
            },
            LinkFault::Bandwidth {
                bytes_per_second: 0,
            },
            LinkFault::Slicing {
                max_bytes: 0,
                delay_us: 5,
            },
        ] {
            let s = spec(FaultKind::Link {
                link: Link::Redis,
                fault,
            });
            assert_eq!(validate(&s).unwrap_err().code(), ErrorCode::InvalidParams);
        }
    }

    #[test]
    fn ids_and_durations_are_checked() {
        let mut s = agents(AgentBehaviour::Crash);
        s.id = Some("a.b".into());
        assert!(matches!(validate(&s), Err(SpecError::InvalidId { .. })));
        s.id = Some("ok-1".into());
        s.duration_ms = Some(0);
        assert!(validate(&s)
            .unwrap_err()
            .to_string()
            .contains("duration_ms"));
        s.duration_ms = Some(1);
        validate(&s).unwrap();
    }

    #[test]
    fn descriptions_name_the_fault() {
        assert_eq!(
            describe(&agents(AgentBehaviour::Equivocate).fault),
            "equivocate on 2 agent(s): a1, a2"
        );
        assert_eq!(
            describe(&FaultKind::Partition {
                groups: vec![ids(&["a", "b"]), ids(&["c"])],
                flap_ms: Some(500)
            }),
            "partition into groups of 2|1, flapping every 500 ms"
        );
        assert_eq!(
            describe(&FaultKind::Link {
                link: Link::Nats,
                fault: LinkFault::Blackhole
            }),
            "nats link: blackhole"
        );
    }
}
