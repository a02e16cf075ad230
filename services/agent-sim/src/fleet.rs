//! The fleet: every simulated agent's id, capabilities, expertise, opinion and (for the
//! Byzantine ones) behaviour, derived from the config's seed alone.

use mabeam_agent::Opinion;
use mabeam_protocol::{fault::AgentBehaviour, AgentId, IdError};
use rand::{seq::SliceRandom as _, Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;

use crate::config::{agent_id, Config, Profile};

/// The fault id the Byzantine agents' behaviour runs under, so the fault-injector (or
/// `mabeamctl fault heal sim-byzantine`) can heal it.
pub const BYZANTINE_FAULT_ID: &str = "sim-byzantine";

/// Options a consensus agent's noise picks from (modulo the round's option count).
const NOISE_OPTIONS: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct SimAgent {
    pub id: AgentId,
    pub capabilities: Vec<String>,
    pub expertise: f64,
    pub opinion: Opinion,
    pub behaviour: Option<AgentBehaviour>,
    /// Seeds the agent's own random draws (jitter, drops).
    pub seed: u64,
}

/// The seed every agent's key derives from (with its id).
pub fn key_seed(config: &Config) -> Vec<u8> {
    format!("mabeam-sim/{}", config.seed).into_bytes()
}

fn agent_seed(seed: u64, index: usize) -> u64 {
    seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// An agent's opinion under the profile; `rng` is the agent's own generator.
fn opinion(config: &Config, index: usize, rng: &mut ChaCha8Rng) -> Opinion {
    let centre = config.centre;
    let spread = config.noise * centre.abs().max(1.0);
    let mut u = || rng.gen_range(-1.0..=1.0);
    let (favourite, number) = match config.profile {
        Profile::Consensus => (0, centre + spread * u()),
        Profile::Split => {
            let side = if index.is_multiple_of(2) { -1.0 } else { 1.0 };
            (index % 2, centre + side * spread + 0.25 * spread * u())
        }
        Profile::Random => (0, centre + 10.0 * spread * u()),
    };
    let favourite = match config.profile {
        Profile::Consensus if rng.gen::<f64>() < config.noise => rng.gen_range(0..NOISE_OPTIONS),
        Profile::Random => rng.gen_range(0..1 << 20),
        _ => favourite,
    };
    let capacity = f64::from(rng.gen_range(1u32..=10));
    Opinion {
        ranking: Vec::new(),
        favourite,
        order_seed: rng.gen(),
        // Settling for its second choice lets a split Byzantine electorate converge on a
        // round's suggestion.
        acceptable: 2,
        number,
        step: rng.gen_range(0.3..=0.7),
        tolerance: spread.max(0.01 * centre.abs().max(1.0)),
        bid: centre.abs() * rng.gen_range(0.5..=1.5),
        load: rng.gen_range(0.0..capacity),
        capacity,
        confidence: rng.gen_range(0.5..=1.0),
    }
}

/// Every agent of the fleet, in id order. (Ids are valid for any config `from_env`
/// accepted; it checks the longest id the prefix makes.)
pub fn plan(config: &Config) -> Result<Vec<SimAgent>, IdError> {
    let n = config.agents;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(
        config.seed ^ 0xb7e1_5162_8aed_2a6b,
    ));
    let by_share = (config.byzantine_share * n as f64).round() as usize;
    let mut byzantine = vec![false; n];
    for &i in order.iter().take(by_share) {
        byzantine[i] = true;
    }
    (0..n)
        .map(|i| {
            let id = agent_id(&config.id_prefix, i);
            let is_byzantine =
                byzantine[i] || config.byzantine_ids.iter().any(|b| b.as_str() == id);
            let seed = agent_seed(config.seed, i);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (low, high) = config.expertise;
            let expertise = if high > low {
                rng.gen_range(low..=high)
            } else {
                low
            };
            let capabilities = if config.capabilities.is_empty() {
                Vec::new()
            } else {
                vec![config.capabilities[i % config.capabilities.len()].clone()]
            };
            Ok(SimAgent {
                id: AgentId::new(id)?,
                capabilities,
                expertise,
                opinion: opinion(config, i, &mut rng),
                behaviour: is_byzantine.then(|| config.byzantine_behaviour.clone()),
                seed,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Config {
        let env: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_env(&env).unwrap()
    }

    #[test]
    fn the_same_seed_gives_the_same_fleet() {
        let c = config(&[("MABEAM_SIM_AGENTS", "50")]);
        assert_eq!(plan(&c).unwrap(), plan(&c).unwrap());
        let other = config(&[("MABEAM_SIM_AGENTS", "50"), ("MABEAM_SIM_SEED", "2")]);
        assert_ne!(
            plan(&c).unwrap()[0].opinion,
            plan(&other).unwrap()[0].opinion
        );
        assert_eq!(plan(&c).unwrap()[3].id.as_str(), "sim-00003");
    }

    #[test]
    fn capabilities_go_round_robin_and_expertise_stays_in_range() {
        let c = config(&[
            ("MABEAM_SIM_AGENTS", "6"),
            ("MABEAM_SIM_CAPABILITIES", "gpu, cpu,llm"),
            ("MABEAM_SIM_EXPERTISE", "1..3"),
        ]);
        let fleet = plan(&c).unwrap();
        let caps: Vec<&str> = fleet.iter().map(|a| a.capabilities[0].as_str()).collect();
        assert_eq!(caps, ["gpu", "cpu", "llm", "gpu", "cpu", "llm"]);
        assert!(fleet.iter().all(|a| (1.0..=3.0).contains(&a.expertise)));
    }

    #[test]
    fn byzantine_agents_come_from_the_share_and_the_explicit_ids() {
        let c = config(&[
            ("MABEAM_SIM_AGENTS", "100"),
            ("MABEAM_SIM_BYZANTINE_SHARE", "0.1"),
            ("MABEAM_SIM_BYZANTINE_BEHAVIOUR", "coalition:optionB"),
        ]);
        let fleet = plan(&c).unwrap();
        let bad: Vec<&SimAgent> = fleet.iter().filter(|a| a.behaviour.is_some()).collect();
        assert_eq!(bad.len(), 10);
        assert_eq!(
            bad[0].behaviour,
            Some(AgentBehaviour::Coalition {
                value: "optionB".into()
            })
        );
        let c = config(&[
            ("MABEAM_SIM_AGENTS", "5"),
            ("MABEAM_SIM_BYZANTINE_IDS", "sim-00001"),
            ("MABEAM_SIM_BYZANTINE_BEHAVIOUR", "silent"),
        ]);
        let fleet = plan(&c).unwrap();
        let bad: Vec<&str> = fleet
            .iter()
            .filter(|a| a.behaviour.is_some())
            .map(|a| a.id.as_str())
            .collect();
        assert_eq!(bad, ["sim-00001"]);
    }

    #[test]
    fn profiles_shape_favourites_and_numbers() {
        let consensus = plan(&config(&[
            ("MABEAM_SIM_AGENTS", "200"),
            ("MABEAM_SIM_NOISE", "0.1"),
        ]))
        .unwrap();
        let first = consensus
            .iter()
            .filter(|a| a.opinion.favourite == 0)
            .count();
        assert!(first >= 160, "most prefer the first option: {first}");
        assert!(consensus
            .iter()
            .all(|a| (45.0..=55.0).contains(&a.opinion.number)));
        let split = plan(&config(&[
            ("MABEAM_SIM_AGENTS", "10"),
            ("MABEAM_SIM_PROFILE", "split"),
        ]))
        .unwrap();
        assert!(split
            .iter()
            .enumerate()
            .all(|(i, a)| a.opinion.favourite == i % 2));
        assert!(split[0].opinion.number < 50.0 && split[1].opinion.number > 50.0);
        let random = plan(&config(&[
            ("MABEAM_SIM_AGENTS", "50"),
            ("MABEAM_SIM_PROFILE", "random"),
        ]))
        .unwrap();
        let distinct: std::collections::BTreeSet<usize> =
            random.iter().map(|a| a.opinion.favourite % 3).collect();
        assert_eq!(distinct.len(), 3, "random favourites cover the options");
    }
}
