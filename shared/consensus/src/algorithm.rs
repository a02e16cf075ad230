//! Algorithms and their parameters, parsed from a task's `algorithm` and `params` and
//! validated against its electorate before a session starts.

use mabeam_protocol::AgentId;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::{tally::choice::ChoiceRule, ConfigError};

/// Options used when a choice-based task lists none: a yes/no vote on the proposal.
pub const DEFAULT_OPTIONS: [&str; 2] = ["accept", "reject"];

/// What a share is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Of the weight of valid ballots cast (abstentions and silence do not count).
    #[default]
    Cast,
    /// Of the weight of the whole electorate (silence counts against every option).
    Eligible,
}

/// How a tie for first place is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TieBreak {
    /// A tie is no decision.
    #[default]
    None,
    /// The option that sorts first (byte order) wins.
    Lexicographic,
    /// A seeded draw among the tied options; replaying the session draws the same.
    Random,
}

/// What a choice-family session does when its round ends in a tie that `tie_break` left
/// unresolved (`tie_break: none`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum OnTie {
    /// The session ends without a decision.
    #[default]
    Fail,
    /// The electorate votes again over the tied options, up to `max_revotes` times.
    Revote {
        #[serde(default = "one")]
        max_revotes: u32,
    },
    /// One designated participant alone chooses among the tied options.
    Escalate { supervisor: AgentId },
}

/// Re-votes allowed per session: each is a full round before the task's timeout.
pub const MAX_REVOTES: u32 = 10;

fn default_min_participation() -> f64 {
    0.5
}

/// Majority, unanimous and plurality.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChoiceParams {
    #[serde(default)]
    pub basis: Basis,
    /// Share of the electorate that must cast a valid ballot, in `[0, 1]`.
    #[serde(default = "default_min_participation")]
    pub min_participation: f64,
    /// The winning option needs at least this many ballots cast for it, whatever their
    /// weight (0: no minimum). Must not exceed the electorate; a round with a smaller
    /// electorate (a supervisor settling a tie alone) needs all of its ballots at most.
    #[serde(default)]
    pub min_votes: u32,
    #[serde(default)]
    pub tie_break: TieBreak,
    #[serde(default)]
    pub on_tie: OnTie,
}

impl Default for ChoiceParams {
    fn default() -> Self {
        Self {
            basis: Basis::default(),
            min_participation: default_min_participation(),
            min_votes: 0,
            tie_break: TieBreak::default(),
            on_tie: OnTie::default(),
        }
    }
}

fn two_thirds() -> f64 {
    2.0 / 3.0
}

/// Supermajority: an option needs at least `threshold` of the basis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupermajorityParams {
    #[serde(default = "two_thirds")]
    pub threshold: f64,
    #[serde(default)]
    pub basis: Basis,
    #[serde(default = "default_min_participation")]
    pub min_participation: f64,
    /// As [`ChoiceParams::min_votes`].
    #[serde(default)]
    pub min_votes: u32,
    #[serde(default)]
    pub tie_break: TieBreak,
    #[serde(default)]
    pub on_tie: OnTie,
}

fn half() -> f64 {
    0.5
}

fn yes() -> bool {
    true
}

/// Weighted voting: each ballot weighs expertise × confidence (or expertise alone).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightedParams {
    /// The winner's share must exceed this (or reach it, with `inclusive`).
    #[serde(default = "half")]
    pub threshold: f64,
    #[serde(default)]
    pub inclusive: bool,
    #[serde(default = "yes")]
    pub use_confidence: bool,
    #[serde(default)]
    pub basis: Basis,
    #[serde(default = "default_min_participation")]
    pub min_participation: f64,
    /// As [`ChoiceParams::min_votes`].
    #[serde(default)]
    pub min_votes: u32,
    #[serde(default)]
    pub tie_break: TieBreak,
    #[serde(default)]
    pub on_tie: OnTie,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankedParams {
    #[serde(default = "default_min_participation")]
    pub min_participation: f64,
}

fn three() -> u32 {
    3
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ByzantineParams {
    /// Faulty agents tolerated; defaults to the most the electorate allows, ⌊(n−1)/3⌋.
    #[serde(default)]
    pub f: Option<u32>,
    /// Prepare/commit rounds before giving up with no decision.
    #[serde(default = "three")]
    pub max_rounds: u32,
    /// Per round; defaults to the task timeout divided by `max_rounds`.
    #[serde(default)]
    pub round_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// Mean weighted by expertise × confidence.
    #[default]
    WeightedMean,
    /// Coordinate-wise median (robust to outliers).
    Median,
}

fn five() -> u32 {
    5
}

fn point_zero_five() -> f64 {
    0.05
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IterativeParams {
    #[serde(default = "five")]
    pub max_rounds: u32,
    /// Converged when the RMS distance of the round's values from their aggregate is at most
    /// this (in the values' own units).
    #[serde(default = "point_zero_five")]
    pub convergence_threshold: f64,
    #[serde(default)]
    pub aggregate: Aggregate,
    /// Without convergence by `max_rounds`: `no_decision` (true) or the last aggregate (false).
    #[serde(default = "yes")]
    pub require_convergence: bool,
    #[serde(default = "default_min_participation")]
    pub min_participation: f64,
    #[serde(default)]
    pub round_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NegotiationParams {
    /// Hard bounds the agreed value must respect.
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default = "five")]
    pub max_rounds: u32,
    #[serde(default = "default_min_participation")]
    pub min_participation: f64,
    #[serde(default)]
    pub round_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pricing {
    FirstPrice,
    /// Vickrey: the winner pays the runner-up's bid (or the reserve), so bidding one's true
    /// value is the best strategy.
    #[default]
    SecondPrice,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuctionParams {
    #[serde(default)]
    pub pricing: Pricing,
    #[serde(default)]
    pub reserve: Option<f64>,
    /// Procurement auction: the lowest bid wins (and the reserve is a ceiling).
    #[serde(default)]
    pub lowest_wins: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElectionMethod {
    /// Plurality of ballots naming a responsive candidate.
    #[default]
    Vote,
    /// The responsive agent with the highest expertise.
    HighestExpertise,
    /// A seeded draw among responsive agents.
    Random,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderParams {
    #[serde(default)]
    pub method: ElectionMethod,
    /// Ties in `vote` and `highest_expertise`; `none` is not allowed (an election must elect).
    #[serde(default = "lexicographic")]
    pub tie_break: TieBreak,
}

fn lexicographic() -> TieBreak {
    TieBreak::Lexicographic
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    RoundRobin,
    LeastLoaded,
    CapabilityMatch,
    ConsistentHashing,
}

/// A unit of work: a bare id, or an id with a required capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkItem {
    Id(String),
    Detailed {
        id: String,
        #[serde(default)]
        capability: Option<String>,
        #[serde(default = "one")]
        cost: u32,
    },
}

fn one() -> u32 {
    1
}

impl WorkItem {
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Detailed { id, .. } => id,
        }
    }

    pub fn capability(&self) -> Option<&str> {
        match self {
            Self::Id(_) => None,
            Self::Detailed { capability, .. } => capability.as_deref(),
        }
    }

    pub fn cost(&self) -> u32 {
        match self {
            Self::Id(_) => 1,
            Self::Detailed { cost, .. } => *cost,
        }
    }
}

fn sixty_four() -> u32 {
    64
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributionParams {
    #[serde(default)]
    pub strategy: Strategy,
    pub items: Vec<WorkItem>,
    /// Points per agent on the consistent-hashing ring.
    #[serde(default = "sixty_four")]
    pub virtual_nodes: u32,
}

/// One algorithm with its parameters, inside adaptive chains and pipelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageSpec {
    pub algorithm: String,
    #[serde(default)]
    pub params: serde_json::Value,
}

fn default_chain() -> Vec<StageSpec> {
    ["byzantine", "weighted", "majority"]
        .into_iter()
        .map(|algorithm| StageSpec {
            algorithm: algorithm.into(),
            params: serde_json::Value::Null,
        })
        .collect()
}

fn failure_ratio_default() -> f64 {
    0.34
}

fn min_quality_default() -> f64 {
    0.6
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveParams {
    /// Tried in order; a trigger moves to the next.
    #[serde(default = "default_chain")]
    pub chain: Vec<StageSpec>,
    /// Switch when this share of the electorate has failed (silent, invalid, equivocating).
    #[serde(default = "failure_ratio_default")]
    pub failure_ratio: f64,
    /// Switch when this share of the task timeout has passed without a decision.
    #[serde(default = "half")]
    pub time_pressure: f64,
    /// Switch when a stage decides with less support than this (quality drop).
    #[serde(default = "min_quality_default")]
    pub min_quality: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineStage {
    pub algorithm: String,
    #[serde(default)]
    pub params: serde_json::Value,
    /// The stage's participants; the whole electorate when absent.
    #[serde(default)]
    pub participants: Option<Vec<AgentId>>,
    /// The stage's options; otherwise the task's.
    #[serde(default)]
    pub options: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineParams {
    pub stages: Vec<PipelineStage>,
}

/// A validated algorithm choice.
#[derive(Debug, Clone, PartialEq)]
pub enum AlgorithmSpec {
    Majority(ChoiceParams),
    Supermajority(SupermajorityParams),
    Unanimous(ChoiceParams),
    Plurality(ChoiceParams),
    Weighted(WeightedParams),
    RankedChoice(RankedParams),
    Byzantine(ByzantineParams),
    Iterative(IterativeParams),
    Adaptive(AdaptiveParams),
    Pipeline(PipelineParams),
    Negotiation(NegotiationParams),
    Auction(AuctionParams),
    LeaderElection(LeaderParams),
    WorkDistribution(DistributionParams),
}

/// Every algorithm name, as tasks spell them.
pub const ALGORITHMS: [&str; 14] = [
    "majority",
    "supermajority",
    "unanimous",
    "plurality",
    "weighted",
    "ranked_choice",
    "byzantine",
    "iterative",
    "adaptive",
    "pipeline",
    "negotiation",
    "auction",
    "leader_election",
    "work_distribution",
];

fn parse_params<T: DeserializeOwned>(
    algorithm: &'static str,
    params: &serde_json::Value,
) -> Result<T, ConfigError> {
    let value = if params.is_null() {
        serde_json::Value::Object(serde_json::Map::new())
    } else {
        params.clone()
    };
    serde_json::from_value(value).map_err(|e| ConfigError::params(algorithm, e.to_string()))
}

fn check_on_tie(
    name: &'static str,
    tie_break: TieBreak,
    on_tie: &OnTie,
) -> Result<(), ConfigError> {
    if *on_tie != OnTie::Fail && tie_break != TieBreak::None {
        return Err(ConfigError::params(
            name,
            "on_tie needs tie_break none: a tie_break already settles every tie",
        ));
    }
    match on_tie {
        OnTie::Revote { max_revotes } if !(1..=MAX_REVOTES).contains(max_revotes) => {
            Err(ConfigError::params(
                name,
                format!("on_tie.max_revotes must be 1 to {MAX_REVOTES}, got {max_revotes}"),
            ))
        }
        _ => Ok(()),
    }
}

fn check_fraction(
    algorithm: &'static str,
    name: &str,
    value: f64,
    allow_zero: bool,
) -> Result<(), ConfigError> {
    let ok = value.is_finite() && value <= 1.0 && (value > 0.0 || (allow_zero && value == 0.0));
    if ok {
        Ok(())
    } else {
        let range = if allow_zero { "[0, 1]" } else { "(0, 1]" };
        Err(ConfigError::params(
            algorithm,
            format!("{name} must be in {range}, got {value}"),
        ))
    }
}

fn check_rounds(algorithm: &'static str, max_rounds: u32) -> Result<(), ConfigError> {
    if (1..=1000).contains(&max_rounds) {
        Ok(())
    } else {
        Err(ConfigError::params(
            algorithm,
            format!("max_rounds must be in 1..=1000, got {max_rounds}"),
        ))
    }
}

impl AlgorithmSpec {
    /// Parses a task's `algorithm` and `params`. `null` params mean all defaults.
    pub fn parse(name: &str, params: &serde_json::Value) -> Result<Self, ConfigError> {
        let spec = match name {
            "majority" => Self::Majority(parse_params("majority", params)?),
            "supermajority" => Self::Supermajority(parse_params("supermajority", params)?),
            "unanimous" => Self::Unanimous(parse_params("unanimous", params)?),
            "plurality" => Self::Plurality(parse_params("plurality", params)?),
            "weighted" => Self::Weighted(parse_params("weighted", params)?),
            "ranked_choice" => Self::RankedChoice(parse_params("ranked_choice", params)?),
            "byzantine" => Self::Byzantine(parse_params("byzantine", params)?),
            "iterative" => Self::Iterative(parse_params("iterative", params)?),
            "adaptive" => Self::Adaptive(parse_params("adaptive", params)?),
            "pipeline" => Self::Pipeline(parse_params("pipeline", params)?),
            "negotiation" => Self::Negotiation(parse_params("negotiation", params)?),
            "auction" => Self::Auction(parse_params("auction", params)?),
            "leader_election" => Self::LeaderElection(parse_params("leader_election", params)?),
            "work_distribution" => {
                Self::WorkDistribution(parse_params("work_distribution", params)?)
            }
            other => {
                return Err(ConfigError::UnknownAlgorithm {
                    name: other.to_owned(),
                    known: ALGORITHMS.join(", "),
                })
            }
        };
        spec.check_params()?;
        Ok(spec)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Majority(_) => "majority",
            Self::Supermajority(_) => "supermajority",
            Self::Unanimous(_) => "unanimous",
            Self::Plurality(_) => "plurality",
            Self::Weighted(_) => "weighted",
            Self::RankedChoice(_) => "ranked_choice",
            Self::Byzantine(_) => "byzantine",
            Self::Iterative(_) => "iterative",
            Self::Adaptive(_) => "adaptive",
            Self::Pipeline(_) => "pipeline",
            Self::Negotiation(_) => "negotiation",
            Self::Auction(_) => "auction",
            Self::LeaderElection(_) => "leader_election",
            Self::WorkDistribution(_) => "work_distribution",
        }
    }

    /// Whether ballots name one of the task's options.
    pub fn uses_options(&self) -> bool {
        matches!(
            self,
            Self::Majority(_)
                | Self::Supermajority(_)
                | Self::Unanimous(_)
                | Self::Plurality(_)
                | Self::Weighted(_)
                | Self::RankedChoice(_)
                | Self::Byzantine(_)
        )
    }

    /// Parameter checks that need no electorate.
    fn check_params(&self) -> Result<(), ConfigError> {
        let name = self.name();
        let participation = |p: f64| check_fraction(name, "min_participation", p, true);
        match self {
            Self::Majority(c) | Self::Unanimous(c) | Self::Plurality(c) => {
                check_on_tie(name, c.tie_break, &c.on_tie)?;
                participation(c.min_participation)
            }
            Self::Supermajority(p) => {
                check_fraction(name, "threshold", p.threshold, false)?;
                if p.threshold <= 0.5 {
                    return Err(ConfigError::params(
                        name,
                        format!(
                            "threshold must be above 0.5 (use majority for 0.5), got {}",
                            p.threshold
                        ),
                    ));
                }
                check_on_tie(name, p.tie_break, &p.on_tie)?;
                participation(p.min_participation)
            }
            Self::Weighted(p) => {
                check_fraction(name, "threshold", p.threshold, false)?;
                check_on_tie(name, p.tie_break, &p.on_tie)?;
                participation(p.min_participation)
            }
            Self::RankedChoice(p) => {
                check_fraction(name, "min_participation", p.min_participation, true)
            }
            Self::Byzantine(p) => {
                check_rounds(name, p.max_rounds)?;
                if p.round_timeout_ms == Some(0) {
                    return Err(ConfigError::params(
                        name,
                        "round_timeout_ms must be positive",
                    ));
                }
                Ok(())
            }
            Self::Iterative(p) => {
                check_rounds(name, p.max_rounds)?;
                check_fraction(name, "min_participation", p.min_participation, true)?;
                if !(p.convergence_threshold.is_finite() && p.convergence_threshold >= 0.0) {
                    return Err(ConfigError::params(
                        name,
                        format!(
                            "convergence_threshold must be a non-negative number, got {}",
                            p.convergence_threshold
                        ),
                    ));
                }
                Ok(())
            }
            Self::Negotiation(p) => {
                check_rounds(name, p.max_rounds)?;
                check_fraction(name, "min_participation", p.min_participation, true)?;
                for bound in [p.min, p.max].into_iter().flatten() {
                    if !bound.is_finite() {
                        return Err(ConfigError::params(name, "bounds must be finite"));
                    }
                }
                if let (Some(lo), Some(hi)) = (p.min, p.max) {
                    if lo > hi {
                        return Err(ConfigError::params(
                            name,
                            format!("min {lo} is above max {hi}"),
                        ));
                    }
                }
                Ok(())
            }
            Self::Auction(p) => match p.reserve {
                Some(r) if !r.is_finite() => {
                    Err(ConfigError::params(name, "reserve must be finite"))
                }
                _ => Ok(()),
            },
            Self::LeaderElection(p) => {
                if p.tie_break == TieBreak::None {
                    Err(ConfigError::params(
                        name,
                        "tie_break must be lexicographic or random: an election must elect",
                    ))
                } else {
                    Ok(())
                }
            }
            Self::WorkDistribution(p) => {
                if p.items.is_empty() {
                    return Err(ConfigError::params(name, "items must not be empty"));
                }
                let mut seen = std::collections::BTreeSet::new();
                for item in &p.items {
                    if !seen.insert(item.id()) {
                        return Err(ConfigError::params(
                            name,
                            format!("item {:?} is listed twice", item.id()),
                        ));
                    }
                }
                if p.virtual_nodes == 0 || p.virtual_nodes > 4096 {
                    return Err(ConfigError::params(
                        name,
                        "virtual_nodes must be in 1..=4096",
                    ));
                }
                Ok(())
            }
            Self::Adaptive(p) => {
                if p.chain.is_empty() {
                    return Err(ConfigError::params(name, "chain must not be empty"));
                }
                check_fraction(name, "failure_ratio", p.failure_ratio, false)?;
                check_fraction(name, "time_pressure", p.time_pressure, false)?;
                check_fraction(name, "min_quality", p.min_quality, true)?;
                for stage in &p.chain {
                    let inner = Self::parse(&stage.algorithm, &stage.params)?;
                    if matches!(inner, Self::Adaptive(_) | Self::Pipeline(_)) {
                        return Err(ConfigError::params(
                            name,
                            format!("{} cannot be nested in an adaptive chain", inner.name()),
                        ));
                    }
                }
                Ok(())
            }
            Self::Pipeline(p) => {
                if p.stages.is_empty() {
                    return Err(ConfigError::params(name, "stages must not be empty"));
                }
                for stage in &p.stages {
                    let inner = Self::parse(&stage.algorithm, &stage.params)?;
                    if matches!(inner, Self::Pipeline(_)) {
                        return Err(ConfigError::params(
                            name,
                            "a pipeline cannot be nested in a pipeline",
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// The Byzantine fault tolerance this spec runs with over `n` participants.
    pub fn byzantine_f(params: &ByzantineParams, n: usize) -> u32 {
        params
            .f
            .unwrap_or_else(|| u32::try_from(n.saturating_sub(1) / 3).unwrap_or(u32::MAX))
    }

    /// Checks that the spec can run over `n` participants.
    pub fn check_electorate(&self, n: usize) -> Result<(), ConfigError> {
        let name = self.name();
        if n == 0 {
            return Err(ConfigError::EmptyElectorate);
        }
        let min_votes = ChoiceRule::for_spec(self).map_or(0, |rule| rule.min_votes);
        if min_votes > n {
            return Err(ConfigError::InsufficientParticipants {
                algorithm: name,
                needed: min_votes,
                got: n,
                why: format!(" (min_votes={min_votes})"),
            });
        }
        match self {
            Self::Byzantine(p) => {
                let f = Self::byzantine_f(p, n);
                let needed = 3 * f as usize + 1;
                if n < needed {
                    return Err(ConfigError::InsufficientParticipants {
                        algorithm: name,
                        needed,
                        got: n,
                        why: format!(" (n >= 3f+1 with f={f})"),
                    });
                }
                Ok(())
            }
            Self::Adaptive(p) => {
                // Stages that cannot run over this electorate are skipped at run time; at
                // least one must be able to.
                let runnable = p.chain.iter().any(|s| {
                    Self::parse(&s.algorithm, &s.params)
                        .and_then(|spec| spec.check_electorate(n))
                        .is_ok()
                });
                if runnable {
                    Ok(())
                } else {
                    Err(ConfigError::InsufficientParticipants {
                        algorithm: name,
                        needed: 1,
                        got: n,
                        why: " (no algorithm of the chain can run over this electorate)".into(),
                    })
                }
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_algorithm_lists_the_known_ones() {
        let err = AlgorithmSpec::parse("raft", &json!(null)).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownAlgorithm { .. }));
        assert!(err.to_string().contains("ranked_choice"), "{err}");
    }

    #[test]
    fn impossible_parameters_are_refused_with_the_reason() {
        let cases = [
            (
                "supermajority",
                json!({"threshold": 1.5}),
                "threshold must be in (0, 1]",
            ),
            ("supermajority", json!({"threshold": 0.4}), "above 0.5"),
            ("weighted", json!({"threshold": 0}), "(0, 1]"),
            ("majority", json!({"min_participation": -0.1}), "[0, 1]"),
            ("iterative", json!({"max_rounds": 0}), "max_rounds"),
            ("negotiation", json!({"min": 5, "max": 1}), "above max"),
            (
                "work_distribution",
                json!({"items": []}),
                "must not be empty",
            ),
            (
                "leader_election",
                json!({"tie_break": "none"}),
                "must elect",
            ),
            ("majority", json!({"treshold": 0.5}), "unknown field"),
            (
                "adaptive",
                json!({"chain": [{"algorithm": "adaptive"}]}),
                "nested",
            ),
        ];
        for (name, params, needle) in cases {
            let err = AlgorithmSpec::parse(name, &params).unwrap_err();
            assert!(err.to_string().contains(needle), "{name} {params}: {err}");
        }
    }

    #[test]
    fn byzantine_needs_three_f_plus_one() {
        let spec = AlgorithmSpec::parse("byzantine", &json!({"f": 2})).unwrap();
        assert!(spec.check_electorate(7).is_ok());
        let err = spec.check_electorate(6).unwrap_err();
        assert!(err.to_string().contains("needs at least 7"), "{err}");
        let default_f = AlgorithmSpec::parse("byzantine", &json!(null)).unwrap();
        assert!(default_f.check_electorate(1).is_ok());
        assert!(matches!(
            default_f.check_electorate(0),
            Err(ConfigError::EmptyElectorate)
        ));
    }

    #[test]
    fn defaults_parse_for_every_algorithm() {
        for name in ALGORITHMS {
            let params = match name {
                "work_distribution" => json!({"items": ["a"]}),
                "pipeline" => json!({"stages": [{"algorithm": "majority"}]}),
                _ => json!(null),
            };
            let spec = AlgorithmSpec::parse(name, &params).unwrap();
            assert_eq!(spec.name(), name);
        }
    }
}
