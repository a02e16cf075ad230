//! Partition shapes (Jepsen's nemeses: clean split, minority isolation, fragmentation; any of
//! them intermittent with `flap_ms`) and the commands that make agents obey one.
//!
//! Coordinators live with group 0: its agents keep hearing proposals, every other group is
//! told `coordinator_unreachable`.

use mabeam_protocol::{
    fault::{AgentFaultCommand, FaultKind},
    AgentId, PROTOCOL_VERSION,
};
use serde::{Deserialize, Serialize};

use crate::spec::SpecError;

fn invalid(message: impl Into<String>) -> SpecError {
    SpecError::Invalid(message.into())
}

/// Two halves; with an odd count group 0 (the coordinators' side) gets the extra agent.
pub fn clean_split(agents: &[AgentId]) -> Result<Vec<Vec<AgentId>>, SpecError> {
    if agents.len() < 2 {
        return Err(invalid("a clean split needs at least two agents"));
    }
    let (a, b) = agents.split_at(agents.len().div_ceil(2));
    Ok(vec![a.to_vec(), b.to_vec()])
}

/// The last `k` agents cut off from the rest (a minority: `2k < n`).
pub fn minority_isolation(agents: &[AgentId], k: usize) -> Result<Vec<Vec<AgentId>>, SpecError> {
    if k == 0 || 2 * k >= agents.len() {
        return Err(invalid(format!(
            "minority isolation of {k} among {} agents: need 0 < k < n/2",
            agents.len()
        )));
    }
    let (a, b) = agents.split_at(agents.len() - k);
    Ok(vec![a.to_vec(), b.to_vec()])
}

/// Consecutive groups of the given sizes, which must add up to the number of agents.
pub fn fragmentation(agents: &[AgentId], sizes: &[usize]) -> Result<Vec<Vec<AgentId>>, SpecError> {
    if sizes.len() < 2 || sizes.contains(&0) {
        return Err(invalid(
            "fragmentation needs at least two group sizes, each positive",
        ));
    }
    let total: usize = sizes.iter().sum();
    if total != agents.len() {
        return Err(invalid(format!(
            "fragment sizes add up to {total} but there are {} agents",
            agents.len()
        )));
    }
    let mut rest = agents;
    let mut groups = Vec::with_capacity(sizes.len());
    for &size in sizes {
        let (group, tail) = rest.split_at(size);
        groups.push(group.to_vec());
        rest = tail;
    }
    Ok(groups)
}

/// A partition shape by name, as scenario files give it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "shape", rename_all = "snake_case", deny_unknown_fields)]
pub enum Shape {
    CleanSplit,
    MinorityIsolation { isolate: usize },
    Fragmentation { sizes: Vec<usize> },
}

impl Shape {
    pub fn groups(&self, agents: &[AgentId]) -> Result<Vec<Vec<AgentId>>, SpecError> {
        match self {
            Self::CleanSplit => clean_split(agents),
            Self::MinorityIsolation { isolate } => minority_isolation(agents, *isolate),
            Self::Fragmentation { sizes } => fragmentation(agents, sizes),
        }
    }

    /// The fault for this shape; intermittent when `flap_ms` is given.
    pub fn fault(&self, agents: &[AgentId], flap_ms: Option<u64>) -> Result<FaultKind, SpecError> {
        Ok(FaultKind::Partition {
            groups: self.groups(agents)?,
            flap_ms,
        })
    }
}

/// The command every member of `groups[i]` gets while the partition holds: the agents of
/// every other group are unreachable, and so are the coordinators unless `i == 0`. All
/// members of a group get the same command, so it is built (and encoded) once per group.
pub fn group_commands<'a>(
    fault_id: &str,
    groups: &'a [Vec<AgentId>],
) -> Vec<(&'a [AgentId], AgentFaultCommand)> {
    groups
        .iter()
        .enumerate()
        .map(|(i, members)| {
            let unreachable = groups
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, g)| g.iter().cloned())
                .collect();
            let command = AgentFaultCommand {
                v: PROTOCOL_VERSION,
                fault_id: fault_id.to_owned(),
                behaviour: None,
                unreachable,
                coordinator_unreachable: i != 0,
            };
            (members.as_slice(), command)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(n: usize) -> Vec<AgentId> {
        (0..n)
            .map(|i| AgentId::new(format!("a{i}")).unwrap())
            .collect()
    }

    fn sizes(groups: &[Vec<AgentId>]) -> Vec<usize> {
        groups.iter().map(Vec::len).collect()
    }

    #[test]
    fn clean_split_gives_the_coordinator_side_the_odd_agent() {
        assert_eq!(sizes(&clean_split(&fleet(5)).unwrap()), [3, 2]);
        assert_eq!(sizes(&clean_split(&fleet(4)).unwrap()), [2, 2]);
        assert!(clean_split(&fleet(1)).is_err());
    }

    #[test]
    fn minority_isolation_cuts_off_the_last_k() {
        let g = minority_isolation(&fleet(7), 3).unwrap();
        assert_eq!(sizes(&g), [4, 3]);
        assert_eq!(g[1][0].as_str(), "a4");
        assert!(
            minority_isolation(&fleet(6), 3).is_err(),
            "3 of 6 is no minority"
        );
        assert!(minority_isolation(&fleet(6), 0).is_err());
    }

    #[test]
    fn fragmentation_needs_sizes_that_add_up() {
        assert_eq!(
            sizes(&fragmentation(&fleet(18), &[8, 6, 4]).unwrap()),
            [8, 6, 4]
        );
        assert!(fragmentation(&fleet(17), &[8, 6, 4]).is_err());
        assert!(fragmentation(&fleet(8), &[8]).is_err());
        assert!(fragmentation(&fleet(8), &[8, 0]).is_err());
    }

    #[test]
    fn each_group_is_cut_from_every_other_and_only_group_zero_keeps_coordinators() {
        let groups = fragmentation(&fleet(6), &[3, 2, 1]).unwrap();
        let commands = group_commands("p", &groups);
        assert_eq!(commands.len(), 3);
        for (i, (members, command)) in commands.iter().enumerate() {
            assert_eq!(*members, groups[i].as_slice());
            assert_eq!(command.fault_id, "p");
            assert_eq!(command.behaviour, None);
            assert_eq!(command.coordinator_unreachable, i != 0);
            let expected: Vec<AgentId> = groups
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, g)| g.clone())
                .collect();
            assert_eq!(command.unreachable, expected);
        }
    }

    #[test]
    fn shapes_read_from_files_build_the_same_groups() {
        let shape: Shape =
            serde_json::from_str(r#"{"shape":"fragmentation","sizes":[2,2]}"#).unwrap();
        assert_eq!(
            shape.groups(&fleet(4)).unwrap(),
            fragmentation(&fleet(4), &[2, 2]).unwrap()
        );
        let FaultKind::Partition { flap_ms, .. } =
            Shape::CleanSplit.fault(&fleet(4), Some(100)).unwrap()
        else {
            panic!("not a partition")
        };
        assert_eq!(flap_ms, Some(100));
    }
}
