//! agent-sim settings: parsed and validated in one pure function.

use std::time::Duration;

use mabeam_protocol::{fault::AgentBehaviour, AgentId};
use mabeam_runtime::config::{self, CommonConfig, ConfigError, ConfigKey, Env};

/// Most agents one process runs.
pub const MAX_AGENTS: usize = 10_000;

pub const KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "MABEAM_SIM_AGENTS",
        default: Some("10"),
        help: "number of simulated agents, 1 to 10000",
    },
    ConfigKey {
        name: "MABEAM_SIM_ID_PREFIX",
        default: Some("sim"),
        help: "agent ids are <prefix>-00000, <prefix>-00001, ...",
    },
    ConfigKey {
        name: "MABEAM_SIM_KIND",
        default: Some("sim"),
        help: "the kind the agents register with",
    },
    ConfigKey {
        name: "MABEAM_SIM_SEED",
        default: Some("1"),
        help: "keys, opinions and Byzantine picks derive from it: a restart keeps the same keys",
    },
    ConfigKey {
        name: "MABEAM_SIM_CAPABILITIES",
        default: Some("general"),
        help: "comma list of capabilities, assigned round-robin (agent i gets entry i mod n)",
    },
    ConfigKey {
        name: "MABEAM_SIM_PROFILE",
        default: Some("consensus"),
        help: "opinions: consensus (most prefer the first option), split (halves prefer the first two), random",
    },
    ConfigKey {
        name: "MABEAM_SIM_NOISE",
        default: Some("0.1"),
        help: "in [0, 1]: share of consensus agents preferring another option, and the relative spread of numbers",
    },
    ConfigKey {
        name: "MABEAM_SIM_CENTRE",
        default: Some("50"),
        help: "centre of the agents' numbers (iterative values, negotiation offers, bids)",
    },
    ConfigKey {
        name: "MABEAM_SIM_EXPERTISE",
        default: Some("0.5..2"),
        help: "expertise weights, drawn uniformly from min..max (or one number for all)",
    },
    ConfigKey {
        name: "MABEAM_SIM_BYZANTINE_SHARE",
        default: Some("0"),
        help: "share of agents (seeded pick) that misbehave, in [0, 1]",
    },
    ConfigKey {
        name: "MABEAM_SIM_BYZANTINE_BEHAVIOUR",
        default: Some("equivocate"),
        help: "crash | silent | slow:<ms>[:<jitter ms>] | drop:<percent> | corrupt | equivocate | invalid_signature | replay | timing_attack | coalition:<value> | adaptive",
    },
    ConfigKey {
        name: "MABEAM_SIM_BYZANTINE_IDS",
        default: None,
        help: "comma list of agent ids of this fleet that misbehave too",
    },
    ConfigKey {
        name: "MABEAM_HEARTBEAT_INTERVAL_MS",
        default: Some("2000"),
        help: "time between each agent's heartbeats (jittered ±10%)",
    },
];

/// How the fleet's opinions are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Most agents prefer the first option; `noise` of them a random one. Numbers cluster
    /// around the centre.
    Consensus,
    /// Even-numbered agents prefer the first option, odd ones the second; numbers form two
    /// clusters either side of the centre.
    Split,
    /// Each agent prefers a random option; numbers spread widely around the centre.
    Random,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub agents: usize,
    pub id_prefix: String,
    pub kind: String,
    pub seed: u64,
    pub capabilities: Vec<String>,
    pub profile: Profile,
    pub noise: f64,
    pub centre: f64,
    /// `(min, max)`.
    pub expertise: (f64, f64),
    pub byzantine_share: f64,
    pub byzantine_behaviour: AgentBehaviour,
    pub byzantine_ids: Vec<AgentId>,
    pub heartbeat_interval: Duration,
}

/// The id of the fleet's agent number `index`.
pub fn agent_id(prefix: &str, index: usize) -> String {
    format!("{prefix}-{index:05}")
}

fn in_unit_range(env: &impl Env, name: &str) -> Result<f64, ConfigError> {
    let x: f64 = config::parse(env, KEYS, name)?;
    if (0.0..=1.0).contains(&x) {
        Ok(x)
    } else {
        Err(ConfigError::invalid(
            name,
            format!("must be in [0, 1], got {x}"),
        ))
    }
}

fn expertise(raw: &str) -> Result<(f64, f64), String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|e| format!("cannot parse {s:?}: {e}"))
    };
    let (min, max) = match raw.split_once("..") {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let x = parse(raw)?;
            (x, x)
        }
    };
    if !(min.is_finite() && max.is_finite() && min > 0.0 && min <= max) {
        return Err(format!("needs 0 < min <= max (finite), got {min}..{max}"));
    }
    Ok((min, max))
}

/// Parses a behaviour as written in `MABEAM_SIM_BYZANTINE_BEHAVIOUR`.
pub fn behaviour(text: &str) -> Result<AgentBehaviour, String> {
    let text = text.trim();
    let (name, arg) = match text.split_once(':') {
        Some((n, a)) => (n, Some(a)),
        None => (text, None),
    };
    let number = |s: &str| {
        s.trim()
            .parse::<u64>()
            .map_err(|e| format!("{text:?}: cannot parse {s:?}: {e}"))
    };
    let no_arg = |b: AgentBehaviour| match arg {
        None => Ok(b),
        Some(_) => Err(format!("{name} takes no argument")),
    };
    match name.to_ascii_lowercase().replace('-', "_").as_str() {
        "crash" => no_arg(AgentBehaviour::Crash),
        "silent" => no_arg(AgentBehaviour::Silent),
        "corrupt" => no_arg(AgentBehaviour::Corrupt),
        "equivocate" => no_arg(AgentBehaviour::Equivocate),
        "invalid_signature" => no_arg(AgentBehaviour::InvalidSignature),
        "replay" => no_arg(AgentBehaviour::Replay),
        "timing_attack" => no_arg(AgentBehaviour::TimingAttack),
        "adaptive" => no_arg(AgentBehaviour::Adaptive),
        "slow" => {
            let (delay, jitter) = match arg {
                None => (500, 100),
                Some(a) => match a.split_once(':') {
                    Some((d, j)) => (number(d)?, number(j)?),
                    None => (number(a)?, 0),
                },
            };
            Ok(AgentBehaviour::Slow {
                delay_ms: delay,
                jitter_ms: jitter,
            })
        }
        "drop" => {
            let percent = match arg {
                None => 50.0,
                Some(a) => a
                    .trim()
                    .parse::<f64>()
                    .map_err(|e| format!("{text:?}: cannot parse {a:?}: {e}"))?,
            };
            if !(0.0..=100.0).contains(&percent) {
                return Err(format!("drop percent must be in [0, 100], got {percent}"));
            }
            Ok(AgentBehaviour::Drop { percent })
        }
        "coalition" => match arg.map(str::trim) {
            Some(value) if !value.is_empty() => Ok(AgentBehaviour::Coalition {
                value: value.to_owned(),
            }),
            _ => Err("coalition needs a value: coalition:<value>".into()),
        },
        other => Err(format!(
            "unknown behaviour {other:?}; expected crash, silent, slow:<ms>[:<jitter>], drop:<percent>, corrupt, equivocate, invalid_signature, replay, timing_attack, coalition:<value> or adaptive"
        )),
    }
}

fn list(raw: Option<String>) -> Vec<String> {
    raw.map(|r| {
        r.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    })
    .unwrap_or_default()
}

impl Config {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env, &config::default_instance("agent-sim"))?;
        let agents: usize = config::parse(env, KEYS, "MABEAM_SIM_AGENTS")?;
        if !(1..=MAX_AGENTS).contains(&agents) {
            return Err(ConfigError::invalid(
                "MABEAM_SIM_AGENTS",
                format!("must be between 1 and {MAX_AGENTS}, got {agents}"),
            ));
        }
        let id_prefix = config::required(env, KEYS, "MABEAM_SIM_ID_PREFIX")?;
        AgentId::new(agent_id(&id_prefix, MAX_AGENTS))
            .map_err(|e| ConfigError::invalid("MABEAM_SIM_ID_PREFIX", e.to_string()))?;
        let kind = config::required(env, KEYS, "MABEAM_SIM_KIND")?;
        let seed: u64 = config::parse(env, KEYS, "MABEAM_SIM_SEED")?;
        let capabilities = list(config::value(env, KEYS, "MABEAM_SIM_CAPABILITIES"));
        let profile = match config::required(env, KEYS, "MABEAM_SIM_PROFILE")?
            .to_ascii_lowercase()
            .as_str()
        {
            "consensus" => Profile::Consensus,
            "split" => Profile::Split,
            "random" => Profile::Random,
            other => {
                return Err(ConfigError::invalid(
                    "MABEAM_SIM_PROFILE",
                    format!("expected consensus, split or random, got {other:?}"),
                ))
            }
        };
        let noise = in_unit_range(env, "MABEAM_SIM_NOISE")?;
        let centre: f64 = config::parse(env, KEYS, "MABEAM_SIM_CENTRE")?;
        if !centre.is_finite() {
            return Err(ConfigError::invalid("MABEAM_SIM_CENTRE", "must be finite"));
        }
        let expertise = expertise(&config::required(env, KEYS, "MABEAM_SIM_EXPERTISE")?)
            .map_err(|m| ConfigError::invalid("MABEAM_SIM_EXPERTISE", m))?;
        let byzantine_share = in_unit_range(env, "MABEAM_SIM_BYZANTINE_SHARE")?;
        let byzantine_behaviour = behaviour(&config::required(
            env,
            KEYS,
            "MABEAM_SIM_BYZANTINE_BEHAVIOUR",
        )?)
        .map_err(|m| ConfigError::invalid("MABEAM_SIM_BYZANTINE_BEHAVIOUR", m))?;
        let mut byzantine_ids = Vec::new();
        for raw in list(config::value(env, KEYS, "MABEAM_SIM_BYZANTINE_IDS")) {
            let in_fleet = (0..agents).any(|i| agent_id(&id_prefix, i) == raw);
            if !in_fleet {
                return Err(ConfigError::invalid(
                    "MABEAM_SIM_BYZANTINE_IDS",
                    format!(
                        "{raw:?} is not an agent of this fleet ({} to {})",
                        agent_id(&id_prefix, 0),
                        agent_id(&id_prefix, agents - 1)
                    ),
                ));
            }
            byzantine_ids
                .push(AgentId::new(raw).map_err(|e| {
                    ConfigError::invalid("MABEAM_SIM_BYZANTINE_IDS", e.to_string())
                })?);
        }
        Ok(Self {
            common,
            agents,
            id_prefix,
            kind,
            seed,
            capabilities,
            profile,
            noise,
            centre,
            expertise,
            byzantine_share,
            byzantine_behaviour,
            byzantine_ids,
            heartbeat_interval: config::millis(env, KEYS, "MABEAM_HEARTBEAT_INTERVAL_MS", 10)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use mabeam_runtime::config::settings as env;

    fn error(pairs: &[(&str, &str)]) -> String {
        Config::from_env(&env(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn defaults_give_ten_consensus_agents() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert_eq!(c.agents, 10);
        assert_eq!(c.id_prefix, "sim");
        assert_eq!(c.profile, Profile::Consensus);
        assert_eq!(c.capabilities, vec!["general".to_owned()]);
        assert_eq!(c.expertise, (0.5, 2.0));
        assert_eq!(c.byzantine_share, 0.0);
        assert_eq!(c.byzantine_behaviour, AgentBehaviour::Equivocate);
        assert_eq!(c.heartbeat_interval, Duration::from_secs(2));
        assert_eq!(agent_id("sim", 7), "sim-00007");
    }

    #[test]
    fn fleet_size_is_bounded() {
        assert!(error(&[("MABEAM_SIM_AGENTS", "0")]).starts_with("MABEAM_SIM_AGENTS"));
        assert!(error(&[("MABEAM_SIM_AGENTS", "10001")]).contains("between 1 and 10000"));
        assert!(error(&[("MABEAM_SIM_AGENTS", "many")]).starts_with("MABEAM_SIM_AGENTS"));
    }

    #[test]
    fn a_prefix_that_cannot_make_ids_is_refused() {
        assert!(error(&[("MABEAM_SIM_ID_PREFIX", "a.b")]).starts_with("MABEAM_SIM_ID_PREFIX"));
        let long = "x".repeat(125);
        assert!(error(&[("MABEAM_SIM_ID_PREFIX", &long)]).contains("limit"));
    }

    #[test]
    fn shares_profiles_and_expertise_are_validated() {
        assert!(error(&[("MABEAM_SIM_BYZANTINE_SHARE", "1.5")]).contains("[0, 1]"));
        assert!(error(&[("MABEAM_SIM_NOISE", "-0.1")]).starts_with("MABEAM_SIM_NOISE"));
        assert!(error(&[("MABEAM_SIM_PROFILE", "chaos")]).contains("consensus, split or random"));
        assert!(error(&[("MABEAM_SIM_EXPERTISE", "2..1")]).starts_with("MABEAM_SIM_EXPERTISE"));
        assert!(error(&[("MABEAM_SIM_EXPERTISE", "0")]).starts_with("MABEAM_SIM_EXPERTISE"));
        assert!(error(&[("MABEAM_SIM_CENTRE", "inf")]).starts_with("MABEAM_SIM_CENTRE"));
        assert!(error(&[("MABEAM_HEARTBEAT_INTERVAL_MS", "1")]).contains("at least 10 ms"));
        let c = Config::from_env(&env(&[
            ("MABEAM_SIM_EXPERTISE", "1.5"),
            ("MABEAM_SIM_PROFILE", "Split"),
        ]))
        .unwrap();
        assert_eq!(c.expertise, (1.5, 1.5));
        assert_eq!(c.profile, Profile::Split);
    }

    #[test]
    fn every_behaviour_parses_and_bad_ones_say_why() {
        let cases = [
            ("crash", AgentBehaviour::Crash),
            ("silent", AgentBehaviour::Silent),
            (
                "slow:200:50",
                AgentBehaviour::Slow {
                    delay_ms: 200,
                    jitter_ms: 50,
                },
            ),
            (
                "slow:200",
                AgentBehaviour::Slow {
                    delay_ms: 200,
                    jitter_ms: 0,
                },
            ),
            ("drop:30", AgentBehaviour::Drop { percent: 30.0 }),
            ("corrupt", AgentBehaviour::Corrupt),
            ("equivocate", AgentBehaviour::Equivocate),
            ("invalid-signature", AgentBehaviour::InvalidSignature),
            ("replay", AgentBehaviour::Replay),
            ("timing_attack", AgentBehaviour::TimingAttack),
            (
                "coalition:optionB",
                AgentBehaviour::Coalition {
                    value: "optionB".into(),
                },
            ),
            ("adaptive", AgentBehaviour::Adaptive),
        ];
        for (text, expected) in cases {
            assert_eq!(behaviour(text).unwrap(), expected, "{text}");
        }
        assert!(behaviour("coalition")
            .unwrap_err()
            .contains("needs a value"));
        assert!(behaviour("drop:150").unwrap_err().contains("[0, 100]"));
        assert!(behaviour("slow:x").unwrap_err().contains("cannot parse"));
        assert!(behaviour("crash:1").unwrap_err().contains("no argument"));
        assert!(behaviour("teleport")
            .unwrap_err()
            .contains("unknown behaviour"));
        assert!(error(&[("MABEAM_SIM_BYZANTINE_BEHAVIOUR", "teleport")])
            .starts_with("MABEAM_SIM_BYZANTINE_BEHAVIOUR"));
    }

    #[test]
    fn explicit_byzantine_ids_must_belong_to_the_fleet() {
        let c = Config::from_env(&env(&[
            ("MABEAM_SIM_AGENTS", "3"),
            ("MABEAM_SIM_BYZANTINE_IDS", "sim-00002, sim-00000"),
        ]))
        .unwrap();
        assert_eq!(c.byzantine_ids.len(), 2);
        let e = error(&[
            ("MABEAM_SIM_AGENTS", "3"),
            ("MABEAM_SIM_BYZANTINE_IDS", "sim-00003"),
        ]);
        assert!(e.contains("not an agent of this fleet"), "{e}");
    }
}
