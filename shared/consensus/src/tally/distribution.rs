//! Work distribution: assigning the task's work items to agents.
//!
//! Agents answer with their current `Load { load, capacity }`. Only electorate members that
//! did are *available*: an agent that did not report its load (silent, abstaining, or another
//! ballot) may be down or saturated, and handing it work would strand that work. An agent
//! sending several load reports is taken at its last one.
//!
//! `load` is the work an agent already has and `capacity` what it is meant to carry, in the
//! same units as the items' `cost` (1 for bare item ids). Capacity weighs the choice but is
//! not a hard limit: items are placed even when every agent is past its capacity.
//!
//! Strategies:
//! - `round_robin`: the available agents sorted by id take the items in the given order, in
//!   turn. Ignores loads, costs and capabilities.
//! - `least_loaded`: items in the given order, each to the agent that would be least utilised
//!   after taking it: the smallest `(load + cost already assigned + item cost) / capacity`
//!   (a capacity of 0 counts as 1e-9, so such agents are used only when every agent has none).
//!   Ties go to the id that sorts first. Ignores capabilities.
//! - `capability_match`: like `least_loaded`, but an item that names a `capability` goes only
//!   to an available agent whose registered capabilities include it.
//! - `consistent_hashing`: every available agent owns `virtual_nodes` points on a 64-bit ring,
//!   at the first 8 bytes (big-endian) of SHA-256(agent id ‖ "#" ‖ point index in decimal);
//!   an item goes to the owner of the first point at or after the first 8 bytes of
//!   SHA-256(item id), wrapping around. The placement depends only on the item and the set of
//!   available agents, so when an agent joins, only items that now land on one of its points
//!   move, all to it. Ignores loads, costs and capabilities.
//!
//! When an item cannot be placed (no available agent; for `capability_match`, no available
//! agent with its capability) the round decides nothing and the reason names the items; a
//! partial assignment is never returned.

use std::collections::BTreeMap;

use mabeam_protocol::{result::RoundRecord, session::VoteValue, AgentId, Outcome};
use sha2::{Digest, Sha256};

use super::{TallyInput, TallyResult};
use crate::algorithm::{DistributionParams, Strategy, WorkItem};

const ALGORITHM: &str = "work_distribution";

/// Capacity used in place of 0, so utilisation stays finite.
const MIN_CAPACITY: f64 = 1e-9;

#[derive(Debug, Clone, Copy)]
struct Load {
    load: f64,
    capacity: f64,
}

/// Assigns `params.items` to the available agents (see the module documentation).
///
/// The single history record counts the available agents and tallies agent id → number of
/// items assigned (0 for available agents that got none).
pub fn distribute(input: &TallyInput<'_>, params: &DistributionParams) -> TallyResult {
    let mut available: BTreeMap<&AgentId, Load> = BTreeMap::new();
    for vote in input.votes {
        if !input.electorate.contains(&vote.agent) {
            continue;
        }
        if let VoteValue::Load { load, capacity } = vote.value {
            if load.is_finite() && capacity.is_finite() && load >= 0.0 && capacity >= 0.0 {
                available.insert(&vote.agent, Load { load, capacity });
            }
        }
    }
    let mut record = RoundRecord {
        round: 1,
        algorithm: ALGORITHM.to_owned(),
        counted: u32::try_from(available.len()).unwrap_or(u32::MAX),
        tally: available.keys().map(|id| (id.to_string(), 0.0)).collect(),
        ..RoundRecord::default()
    };
    if available.is_empty() {
        return TallyResult::undecided(
            format!(
                "no agent reported its load; cannot place {}",
                item_list(params.items.iter())
            ),
            vec![record],
        );
    }

    let placed: Vec<(&WorkItem, Option<&AgentId>)> = match params.strategy {
        Strategy::RoundRobin => {
            let agents: Vec<&AgentId> = available.keys().copied().collect();
            params
                .items
                .iter()
                .enumerate()
                .map(|(i, item)| (item, agents.get(i % agents.len()).copied()))
                .collect()
        }
        Strategy::LeastLoaded => least_loaded(input, &available, &params.items, false),
        Strategy::CapabilityMatch => least_loaded(input, &available, &params.items, true),
        Strategy::ConsistentHashing => {
            let ring = Ring::new(available.keys().copied(), params.virtual_nodes);
            params
                .items
                .iter()
                .map(|item| (item, ring.owner(item.id())))
                .collect()
        }
    };

    let unplaced: Vec<&WorkItem> = placed
        .iter()
        .filter(|(_, agent)| agent.is_none())
        .map(|(item, _)| *item)
        .collect();
    if !unplaced.is_empty() {
        return TallyResult::undecided(
            format!(
                "no available agent has the capability needed by {}",
                unplaced
                    .iter()
                    .map(|i| format!("{:?} ({})", i.id(), i.capability().unwrap_or("none")))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            vec![record],
        );
    }
    let mut assignments = BTreeMap::new();
    for (item, agent) in placed {
        if let Some(agent) = agent {
            if let Some(n) = record.tally.get_mut(agent.as_str()) {
                *n += 1.0;
            }
            assignments.insert(item.id().to_owned(), agent.clone());
        }
    }
    TallyResult::decided(Outcome::Assignment { assignments }, vec![record])
}

/// Greedy least-utilised placement, item by item in the given order.
fn least_loaded<'a, 'i>(
    input: &TallyInput<'_>,
    available: &BTreeMap<&'a AgentId, Load>,
    items: &'i [WorkItem],
    match_capability: bool,
) -> Vec<(&'i WorkItem, Option<&'a AgentId>)> {
    let mut assigned: BTreeMap<&AgentId, f64> = BTreeMap::new();
    items
        .iter()
        .map(|item| {
            let needed = item.capability().filter(|_| match_capability);
            let cost = f64::from(item.cost());
            let mut best: Option<(&AgentId, f64)> = None;
            // Ascending id order: a strictly smaller utilisation is needed to displace an
            // earlier agent, so ties go to the first id.
            for (&agent, l) in available {
                let capable = needed.is_none_or(|cap| {
                    input
                        .electorate
                        .get(agent)
                        .is_some_and(|p| p.capabilities.iter().any(|c| c == cap))
                });
                if !capable {
                    continue;
                }
                let already = assigned.get(agent).copied().unwrap_or(0.0);
                let utilisation = (l.load + already + cost) / l.capacity.max(MIN_CAPACITY);
                if best.is_none_or(|(_, u)| utilisation < u) {
                    best = Some((agent, utilisation));
                }
            }
            let chosen = best.map(|(agent, _)| agent);
            if let Some(agent) = chosen {
                *assigned.entry(agent).or_default() += cost;
            }
            (item, chosen)
        })
        .collect()
}

/// The consistent-hashing ring: points sorted by position (then owner, should two collide).
struct Ring<'a> {
    points: Vec<(u64, &'a AgentId)>,
}

impl<'a> Ring<'a> {
    fn new(agents: impl Iterator<Item = &'a AgentId>, virtual_nodes: u32) -> Self {
        let mut points: Vec<(u64, &AgentId)> = agents
            .flat_map(|agent| {
                (0..virtual_nodes).map(move |v| (hash64(&format!("{agent}#{v}")), agent))
            })
            .collect();
        points.sort();
        Self { points }
    }

    fn owner(&self, item: &str) -> Option<&'a AgentId> {
        let key = hash64(item);
        let at = self.points.partition_point(|&(p, _)| p < key);
        self.points
            .get(at)
            .or_else(|| self.points.first())
            .map(|&(_, agent)| agent)
    }
}

/// The first 8 bytes of SHA-256, big-endian.
fn hash64(text: &str) -> u64 {
    let digest = Sha256::digest(text.as_bytes());
    digest
        .first_chunk::<8>()
        .map_or(0, |first| u64::from_be_bytes(*first))
}

fn item_list<'a>(items: impl Iterator<Item = &'a WorkItem>) -> String {
    items
        .map(|i| format!("{:?}", i.id()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use mabeam_protocol::AgentKeypair;

    use super::*;
    use crate::{tally::Vote, Electorate, Participant};

    fn electorate(members: &[(&str, &[&str])]) -> Electorate {
        let members = members
            .iter()
            .enumerate()
            .map(|(i, (id, caps))| Participant {
                id: AgentId::new(*id).unwrap(),
                public_key: AgentKeypair::from_secret_bytes([i as u8; 32]).public_key(),
                expertise: 1.0,
                capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
            })
            .collect();
        Electorate::new(members).unwrap()
    }

    fn load(agent: &str, load: f64, capacity: f64) -> Vote {
        Vote {
            agent: AgentId::new(agent).unwrap(),
            value: VoteValue::Load { load, capacity },
            confidence: 1.0,
        }
    }

    fn items(ids: &[&str]) -> Vec<WorkItem> {
        ids.iter().map(|i| WorkItem::Id((*i).to_owned())).collect()
    }

    fn detailed(id: &str, capability: Option<&str>, cost: u32) -> WorkItem {
        WorkItem::Detailed {
            id: id.to_owned(),
            capability: capability.map(str::to_owned),
            cost,
        }
    }

    fn run(
        e: &Electorate,
        votes: &[Vote],
        strategy: Strategy,
        items: Vec<WorkItem>,
    ) -> TallyResult {
        distribute(
            &TallyInput {
                votes,
                options: &[],
                electorate: e,
            },
            &DistributionParams {
                strategy,
                items,
                virtual_nodes: 64,
            },
        )
    }

    fn assignments(result: &TallyResult) -> BTreeMap<String, String> {
        match &result.outcome {
            Some(Outcome::Assignment { assignments }) => assignments
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            other => panic!("no assignment: {other:?} ({:?})", result.reason),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn round_robin_takes_turns_in_id_order_among_available_agents() {
        let e = electorate(&[("c", &[]), ("a", &[]), ("b", &[])]);
        // b is silent: not available.
        let votes = [load("c", 0.0, 1.0), load("a", 5.0, 1.0)];
        let result = run(&e, &votes, Strategy::RoundRobin, items(&["i1", "i2", "i3"]));
        assert_eq!(
            assignments(&result),
            map(&[("i1", "a"), ("i2", "c"), ("i3", "a")])
        );
        let record = &result.history[0];
        assert_eq!(record.counted, 2);
        assert_eq!(record.tally.get("a"), Some(&2.0));
        assert_eq!(record.tally.get("c"), Some(&1.0));
        assert!(!record.tally.contains_key("b"));
    }

    #[test]
    fn least_loaded_balances_utilisation() {
        let e = electorate(&[("a", &[]), ("b", &[])]);
        // a: 2 of 10, b: 0 of 2. Utilisation after taking a unit item: a 0.3, b 0.5 -> a;
        // then a 0.4 vs b 0.5 -> a; a 0.5 vs b 0.5 -> tie, a (first id); a 0.6 vs 0.5 -> b.
        let votes = [load("a", 2.0, 10.0), load("b", 0.0, 2.0)];
        let result = run(
            &e,
            &votes,
            Strategy::LeastLoaded,
            items(&["1", "2", "3", "4"]),
        );
        assert_eq!(
            assignments(&result),
            map(&[("1", "a"), ("2", "a"), ("3", "a"), ("4", "b")])
        );
    }

    #[test]
    fn least_loaded_accounts_for_item_cost() {
        let e = electorate(&[("a", &[]), ("b", &[])]);
        let votes = [load("a", 0.0, 10.0), load("b", 0.0, 10.0)];
        let result = run(
            &e,
            &votes,
            Strategy::LeastLoaded,
            vec![
                detailed("big", None, 8),
                detailed("s1", None, 1),
                detailed("s2", None, 1),
            ],
        );
        assert_eq!(
            assignments(&result),
            map(&[("big", "a"), ("s1", "b"), ("s2", "b")])
        );
    }

    #[test]
    fn zero_capacity_agents_are_a_last_resort() {
        let e = electorate(&[("a", &[]), ("b", &[])]);
        let votes = [load("a", 0.0, 0.0), load("b", 50.0, 10.0)];
        let result = run(&e, &votes, Strategy::LeastLoaded, items(&["x"]));
        assert_eq!(assignments(&result), map(&[("x", "b")]));
    }

    #[test]
    fn capability_match_places_items_only_on_capable_agents() {
        let e = electorate(&[("a", &["gpu"]), ("b", &[]), ("c", &["gpu", "db"])]);
        let votes = [
            load("a", 0.0, 4.0),
            load("b", 0.0, 4.0),
            load("c", 3.0, 4.0),
        ];
        let result = run(
            &e,
            &votes,
            Strategy::CapabilityMatch,
            vec![
                detailed("train", Some("gpu"), 1),
                detailed("query", Some("db"), 1),
                detailed("plain", None, 1),
                detailed("train2", Some("gpu"), 1),
            ],
        );
        // train: a (0.25) beats c (1.0); query: only c; plain: b (0.25, a would be 0.5);
        // train2: a (0.5) beats c (1.25).
        assert_eq!(
            assignments(&result),
            map(&[
                ("train", "a"),
                ("query", "c"),
                ("plain", "b"),
                ("train2", "a")
            ])
        );
    }

    #[test]
    fn capability_match_without_a_capable_agent_names_the_items() {
        // c has "db" but did not report its load.
        let e = electorate(&[("a", &["gpu"]), ("c", &["db"])]);
        let votes = [load("a", 0.0, 4.0)];
        let result = run(
            &e,
            &votes,
            Strategy::CapabilityMatch,
            vec![detailed("query", Some("db"), 1), detailed("x", None, 1)],
        );
        assert!(result.outcome.is_none());
        let reason = result.reason.unwrap();
        assert!(reason.contains("\"query\" (db)"), "{reason}");
        assert!(!reason.contains("\"x\""), "{reason}");
    }

    #[test]
    fn other_strategies_ignore_capabilities() {
        let e = electorate(&[("a", &[])]);
        let votes = [load("a", 0.0, 4.0)];
        let result = run(
            &e,
            &votes,
            Strategy::LeastLoaded,
            vec![detailed("query", Some("db"), 1)],
        );
        assert_eq!(assignments(&result), map(&[("query", "a")]));
    }

    #[test]
    fn no_available_agent_is_no_decision() {
        let e = electorate(&[("a", &[]), ("b", &[])]);
        let votes = [
            Vote {
                agent: AgentId::new("a").unwrap(),
                value: VoteValue::Abstain,
                confidence: 1.0,
            },
            load("outsider", 0.0, 1.0),
        ];
        for strategy in [
            Strategy::RoundRobin,
            Strategy::LeastLoaded,
            Strategy::CapabilityMatch,
            Strategy::ConsistentHashing,
        ] {
            let result = run(&e, &votes, strategy, items(&["i1", "i2"]));
            assert!(result.outcome.is_none());
            let reason = result.reason.unwrap();
            assert!(reason.contains("no agent reported its load"), "{reason}");
            assert!(reason.contains("\"i1\", \"i2\""), "{reason}");
        }
    }

    #[test]
    fn ring_positions_follow_the_documented_hash() {
        let digest = Sha256::digest(b"agent-1#0");
        let expected = u64::from_be_bytes(digest[..8].try_into().unwrap());
        let agent = AgentId::new("agent-1").unwrap();
        let ring = Ring::new([&agent].into_iter(), 1);
        assert_eq!(ring.points, vec![(expected, &agent)]);
    }

    #[test]
    fn consistent_hashing_moves_only_items_to_a_new_agent() {
        let ids: Vec<String> = (0..8).map(|i| format!("agent-{i}")).collect();
        let members: Vec<(&str, &[&str])> =
            ids.iter().map(|i| (i.as_str(), &[] as &[&str])).collect();
        let e = electorate(&members);
        let item_ids: Vec<String> = (0..500).map(|i| format!("item-{i}")).collect();
        let item_refs: Vec<&str> = item_ids.iter().map(String::as_str).collect();
        let votes: Vec<Vote> = ids.iter().map(|i| load(i, 0.0, 1.0)).collect();

        let before = assignments(&run(
            &e,
            &votes[..7],
            Strategy::ConsistentHashing,
            items(&item_refs),
        ));
        let after = assignments(&run(
            &e,
            &votes,
            Strategy::ConsistentHashing,
            items(&item_refs),
        ));
        let moved: Vec<&String> = item_ids
            .iter()
            .filter(|i| before[*i] != after[*i])
            .collect();
        assert!(!moved.is_empty(), "the new agent got nothing");
        assert!(moved.len() < 150, "{} of 500 items moved", moved.len());
        for item in moved {
            assert_eq!(after[item], "agent-7", "{item} moved elsewhere");
        }
        // Every agent gets a share with 64 points each.
        let mut per_agent: BTreeMap<&String, usize> = BTreeMap::new();
        for agent in after.values() {
            *per_agent.entry(agent).or_default() += 1;
        }
        assert_eq!(per_agent.len(), 8);
        // Placement does not depend on the order of the answers.
        let mut reversed = votes.clone();
        reversed.reverse();
        assert_eq!(
            assignments(&run(
                &e,
                &reversed,
                Strategy::ConsistentHashing,
                items(&item_refs)
            )),
            after
        );
    }
}
