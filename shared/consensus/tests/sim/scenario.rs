//! Scenarios: everything one run needs (algorithm and parameters, electorate, preferences,
//! attackers, network), derived from a seed within the limits a property sets.

use mabeam_protocol::SessionId;
use rand::{seq::SliceRandom as _, Rng as _};
use rand_chacha::{rand_core::SeedableRng, ChaCha8Rng};
use serde_json::{json, Value};

use super::{
    agent::{AgentSpec, Behaviour, Pref},
    keys::{ring, MAX_AGENTS},
    net::{NetConfig, Node, Partition},
    seeds::Seeds,
};

/// The virtual clock's start: envelopes carry Unix-ms timestamps, checked against a tolerance.
pub(crate) const T0: u64 = 1_700_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Algo {
    Majority,
    Supermajority,
    Unanimous,
    Plurality,
    Weighted,
    RankedChoice,
    Byzantine,
    Iterative,
    Adaptive,
    Pipeline,
    Negotiation,
    Auction,
    LeaderElection,
    WorkDistribution,
}

impl Algo {
    pub(crate) const ALL: [Self; 14] = [
        Self::Majority,
        Self::Supermajority,
        Self::Unanimous,
        Self::Plurality,
        Self::Weighted,
        Self::RankedChoice,
        Self::Byzantine,
        Self::Iterative,
        Self::Adaptive,
        Self::Pipeline,
        Self::Negotiation,
        Self::Auction,
        Self::LeaderElection,
        Self::WorkDistribution,
    ];

    /// Single-round tallies whose outcome can be recomputed offline from the ballots.
    pub(crate) const SINGLE_ROUND: [Self; 9] = [
        Self::Majority,
        Self::Supermajority,
        Self::Unanimous,
        Self::Plurality,
        Self::Weighted,
        Self::RankedChoice,
        Self::Auction,
        Self::LeaderElection,
        Self::WorkDistribution,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Majority => "majority",
            Self::Supermajority => "supermajority",
            Self::Unanimous => "unanimous",
            Self::Plurality => "plurality",
            Self::Weighted => "weighted",
            Self::RankedChoice => "ranked_choice",
            Self::Byzantine => "byzantine",
            Self::Iterative => "iterative",
            Self::Adaptive => "adaptive",
            Self::Pipeline => "pipeline",
            Self::Negotiation => "negotiation",
            Self::Auction => "auction",
            Self::LeaderElection => "leader_election",
            Self::WorkDistribution => "work_distribution",
        }
    }

    pub(crate) fn is_single_round(self) -> bool {
        Self::SINGLE_ROUND.contains(&self)
    }

    /// Ballots are choices among the task's options.
    fn uses_options(self) -> bool {
        matches!(
            self,
            Self::Majority
                | Self::Supermajority
                | Self::Unanimous
                | Self::Plurality
                | Self::Weighted
                | Self::RankedChoice
                | Self::Byzantine
                | Self::Adaptive
                | Self::Pipeline
        )
    }
}

/// The attack pattern of a run's faulty agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Attack {
    None,
    Silent,
    Slow,
    Crash,
    Equivocate,
    InvalidSignature,
    Replay,
    Timing,
    Coalition,
    Adaptive,
    /// Each faulty agent picks one of the above.
    Mixed,
}

impl Attack {
    pub(crate) const ALL: [Self; 11] = [
        Self::None,
        Self::Silent,
        Self::Slow,
        Self::Crash,
        Self::Equivocate,
        Self::InvalidSignature,
        Self::Replay,
        Self::Timing,
        Self::Coalition,
        Self::Adaptive,
        Self::Mixed,
    ];

    /// Every attack with attackers.
    pub(crate) const ANY: [Self; 10] = [
        Self::Silent,
        Self::Slow,
        Self::Crash,
        Self::Equivocate,
        Self::InvalidSignature,
        Self::Replay,
        Self::Timing,
        Self::Coalition,
        Self::Adaptive,
        Self::Mixed,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Silent => "silent",
            Self::Slow => "slow",
            Self::Crash => "crash",
            Self::Equivocate => "equivocate",
            Self::InvalidSignature => "invalid_sig",
            Self::Replay => "replay",
            Self::Timing => "timing",
            Self::Coalition => "coalition",
            Self::Adaptive => "adaptive",
            Self::Mixed => "mixed",
        }
    }
}

/// How many agents are faulty, relative to f = ⌊(n−1)/3⌋.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum FaultClass {
    Zero,
    WithinF,
    BeyondF,
}

impl FaultClass {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Zero => "0",
            Self::WithinF => "<=f",
            Self::BeyondF => ">f",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum NetKind {
    /// Small fixed latency.
    Perfect,
    /// Lossless, latency with jitter (reordering).
    Jittery,
    /// Drops and duplicates.
    Lossy,
    /// A partition (clean split, minority or coordinator isolation, fragmentation), maybe healed.
    Partitioned,
    /// An intermittent partition.
    Flapping,
}

impl NetKind {
    pub(crate) const ALL: [Self; 5] = [
        Self::Perfect,
        Self::Jittery,
        Self::Lossy,
        Self::Partitioned,
        Self::Flapping,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Perfect => "perfect",
            Self::Jittery => "jittery",
            Self::Lossy => "lossy",
            Self::Partitioned => "partitioned",
            Self::Flapping => "flapping",
        }
    }
}

/// What honest agents want.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum HonestPrefs {
    /// All prefer "a" and accept nothing else.
    Unanimous,
    /// Each prefers one of the honest values and accepts a random few of them.
    Split,
    /// Each prefers one of the honest values and accepts any of them.
    SplitAcceptAny,
    /// One of the above at random.
    Any,
}

impl HonestPrefs {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Unanimous => "unanimous",
            Self::Split => "split",
            Self::SplitAcceptAny => "split_accept_any",
            Self::Any => "any",
        }
    }
}

/// Limits within which a property draws its scenarios.
#[derive(Debug, Clone)]
pub(crate) struct Knobs {
    pub algos: Vec<Algo>,
    pub attacks: Vec<Attack>,
    pub classes: Vec<FaultClass>,
    pub nets: Vec<NetKind>,
    /// Electorate size range (inclusive).
    pub n: (usize, usize),
    pub honest: HonestPrefs,
    /// Forces whether equivocators send both ballots to the coordinator.
    pub equivocate_to_coordinator: Option<bool>,
    /// Session timeout range in ms (inclusive).
    pub timeout: (u64, u64),
    /// Seeds below `.0` use electorates of at most `.1` agents.
    pub small_n: Option<(u64, usize)>,
}

impl Knobs {
    pub(crate) fn new(algos: &[Algo]) -> Self {
        Self {
            algos: algos.to_vec(),
            attacks: Attack::ALL.to_vec(),
            classes: vec![FaultClass::Zero, FaultClass::WithinF],
            nets: NetKind::ALL.to_vec(),
            n: (4, 10),
            honest: HonestPrefs::Any,
            equivocate_to_coordinator: None,
            timeout: (2_000, 6_000),
            small_n: None,
        }
    }

    pub(crate) fn attacks(mut self, attacks: &[Attack]) -> Self {
        self.attacks = attacks.to_vec();
        self
    }

    pub(crate) fn classes(mut self, classes: &[FaultClass]) -> Self {
        self.classes = classes.to_vec();
        self
    }

    pub(crate) fn nets(mut self, nets: &[NetKind]) -> Self {
        self.nets = nets.to_vec();
        self
    }

    pub(crate) fn n(mut self, lo: usize, hi: usize) -> Self {
        self.n = (lo, hi);
        self
    }

    /// Seeds that run in every build (see [`Seeds`]) get electorates of at most `hi`
    /// agents: where signature checks are slow, a byzantine run costs O(n²) of them.
    pub(crate) fn small_n_below(mut self, seeds: &Seeds, hi: usize) -> Self {
        self.small_n = Some((seeds.always_below(), hi));
        self
    }

    pub(crate) fn honest(mut self, honest: HonestPrefs) -> Self {
        self.honest = honest;
        self
    }

    pub(crate) fn equivocate_to_coordinator(mut self, both: bool) -> Self {
        self.equivocate_to_coordinator = Some(both);
        self
    }
}

/// One run, fully determined by its seed and knobs.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub seed: u64,
    pub algo: Algo,
    pub attack: Attack,
    pub class: FaultClass,
    pub net_kind: NetKind,
    pub params: Value,
    pub options: Vec<String>,
    pub proposal: Value,
    pub n: usize,
    /// ⌊(n−1)/3⌋: the byzantine tolerance, and the reference for the fault class.
    pub f: usize,
    pub timeout_ms: u64,
    pub agents: Vec<AgentSpec>,
    pub net: NetConfig,
    /// The attackers' value (an option no honest agent prefers or accepts).
    pub wrong: String,
    /// The candidate a leader-election coalition votes for (one of its members).
    pub wrong_leader: String,
    /// Values honest agents prefer.
    pub honest_values: Vec<String>,
    /// `Some(v)` when every honest agent prefers and accepts only `v`.
    pub unanimous: Option<String>,
    /// How honest preferences were drawn (never `Any`).
    pub honest_mode: HonestPrefs,
}

fn pick<T: Copy>(rng: &mut ChaCha8Rng, items: &[T]) -> T {
    *items.choose(rng).expect("knobs list at least one choice")
}

impl Scenario {
    pub(crate) fn generate(seed: u64, knobs: &Knobs) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let algo = pick(&mut rng, &knobs.algos);
        let mut attack = pick(&mut rng, &knobs.attacks);
        let mut class = pick(&mut rng, &knobs.classes);
        let net_kind = pick(&mut rng, &knobs.nets);
        let (lo, hi) = knobs.n;
        let hi = match knobs.small_n {
            Some((below, cap)) if seed < below => hi.min(cap).max(lo),
            _ => hi,
        };
        let mut n = rng.gen_range(lo..=hi.max(lo)).clamp(1, MAX_AGENTS);
        if class == FaultClass::BeyondF {
            n = n.max(4);
        }
        let f = (n - 1) / 3;
        if attack == Attack::None {
            class = FaultClass::Zero;
        }
        if class == FaultClass::Zero {
            attack = Attack::None;
        }
        let faults = match class {
            FaultClass::Zero => 0,
            FaultClass::WithinF if f == 0 => 0,
            FaultClass::WithinF => rng.gen_range(1..=f),
            FaultClass::BeyondF => rng.gen_range(f + 1..=(2 * f).max(f + 1)).min(n - 1),
        };
        if faults == 0 {
            attack = Attack::None;
            class = FaultClass::Zero;
        }
        let timeout_ms = rng.gen_range(knobs.timeout.0..=knobs.timeout.1);

        // Options: the honest values, then the attackers' value.
        let honest_count = rng.gen_range(2..=3);
        let honest_values: Vec<String> = ["a", "b", "c"][..honest_count]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let wrong = "x".to_owned();
        let mut options = honest_values.clone();
        options.push(wrong.clone());
        let mode = match knobs.honest {
            HonestPrefs::Any => pick(
                &mut rng,
                &[
                    HonestPrefs::Unanimous,
                    HonestPrefs::Split,
                    HonestPrefs::SplitAcceptAny,
                ],
            ),
            m => m,
        };
        let unanimous = (mode == HonestPrefs::Unanimous).then(|| honest_values[0].clone());

        let mut faulty: Vec<usize> = (0..n).collect();
        faulty.shuffle(&mut rng);
        faulty.truncate(faults);
        let ids = &ring().ids;
        let coalition_leader = faulty
            .first()
            .map_or_else(|| ids[0].to_string(), |&i| ids[i].to_string());

        let round_ms = timeout_ms / 3;
        let dim = if rng.gen_bool(0.7) { 1 } else { 2 };
        let mut agents = Vec::with_capacity(n);
        for i in 0..n {
            let behaviour = if faulty.contains(&i) {
                let a = if attack == Attack::Mixed {
                    pick(&mut rng, &Attack::ANY[..9])
                } else {
                    attack
                };
                match a {
                    Attack::None | Attack::Mixed => Behaviour::Honest,
                    Attack::Silent => Behaviour::Silent,
                    Attack::Slow => Behaviour::Slow {
                        mean_ms: rng.gen_range(20..=round_ms.max(21)),
                    },
                    Attack::Crash => Behaviour::Crash {
                        at_ms: rng.gen_range(0..=timeout_ms / 2),
                    },
                    Attack::Equivocate => Behaviour::Equivocate {
                        both_to_coordinator: knobs
                            .equivocate_to_coordinator
                            .unwrap_or_else(|| rng.gen_bool(0.7)),
                    },
                    Attack::InvalidSignature => Behaviour::InvalidSignature,
                    Attack::Replay => Behaviour::Replay,
                    Attack::Timing => Behaviour::Timing {
                        late: rng.gen_bool(0.5),
                    },
                    Attack::Coalition => Behaviour::Coalition,
                    Attack::Adaptive => Behaviour::Adaptive,
                }
            } else {
                Behaviour::Honest
            };
            let choice = match &unanimous {
                Some(v) => v.clone(),
                None => honest_values.choose(&mut rng).cloned().unwrap_or_default(),
            };
            let acceptable: Vec<String> = match mode {
                HonestPrefs::Unanimous => vec![choice.clone()],
                HonestPrefs::SplitAcceptAny => honest_values.clone(),
                _ => honest_values
                    .iter()
                    .filter(|v| **v == choice || rng.gen_bool(0.4))
                    .cloned()
                    .collect(),
            };
            let mut ranking = honest_values.clone();
            ranking.shuffle(&mut rng);
            if let Some(pos) = ranking.iter().position(|v| *v == choice) {
                ranking.swap(0, pos);
            }
            ranking.truncate(rng.gen_range(1..=ranking.len()));
            let value: Vec<f64> = (0..dim).map(|_| rng.gen_range(0.0..100.0)).collect();
            let offer_value = rng.gen_range(20.0..80.0);
            let spread = rng.gen_range(5.0..30.0);
            agents.push(AgentSpec {
                behaviour,
                pref: Pref {
                    choice,
                    acceptable,
                    ranking,
                    value,
                    step: rng.gen_range(0.4..0.9),
                    offer: (offer_value, offer_value - spread, offer_value + spread),
                    bid: rng.gen_range(1.0..100.0f64).round(),
                    load: (
                        rng.gen_range(0.0..10.0f64).round(),
                        rng.gen_range(5.0..20.0f64).round(),
                    ),
                    leader: ids[rng.gen_range(0..n)].to_string(),
                    confidence: rng.gen_range(0.3..=1.0),
                    abstain: algo != Algo::Byzantine && rng.gen_bool(0.05),
                },
                expertise: rng.gen_range(0.5..2.0),
                capabilities: ["gpu", "cpu"]
                    .iter()
                    .filter(|_| rng.gen_bool(0.6))
                    .map(|s| (*s).to_owned())
                    .collect(),
            });
        }

        let params = params_for(algo, n, &mut rng, &options);
        let options = if algo.uses_options() {
            options
        } else {
            Vec::new()
        };
        let net = network(net_kind, n, f, timeout_ms, &mut rng);
        Self {
            wrong_leader: coalition_leader,
            seed,
            algo,
            attack,
            class,
            net_kind,
            params,
            options,
            proposal: json!({"question": format!("simulated task {seed}")}),
            n,
            f,
            timeout_ms,
            agents,
            net,
            wrong,
            honest_values,
            unanimous,
            honest_mode: mode,
        }
    }

    pub(crate) fn session_id(&self) -> SessionId {
        SessionId::new(format!("sess-{}", self.seed)).expect("valid session id")
    }

    /// Indices of the agents that behave honestly throughout.
    pub(crate) fn honest(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.n).filter(|&i| !self.agents[i].behaviour.is_faulty())
    }

    pub(crate) fn faulty_count(&self) -> usize {
        self.agents
            .iter()
            .filter(|a| a.behaviour.is_faulty())
            .count()
    }

    /// The byzantine f the session runs with (explicit `f` param, else ⌊(n−1)/3⌋).
    pub(crate) fn byzantine_f(&self) -> usize {
        self.params
            .get("f")
            .and_then(Value::as_u64)
            .map_or(self.f, |f| f as usize)
    }

    pub(crate) fn describe(&self) -> String {
        let behaviours: Vec<String> = self
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| a.behaviour.is_faulty())
            .map(|(i, a)| format!("{i}:{:?}", a.behaviour))
            .collect();
        format!(
            "{} n={} f={} attack={} class={} net={} ({:?}) timeout={}ms params={} faulty=[{}] unanimous={:?}",
            self.algo.name(),
            self.n,
            self.f,
            self.attack.label(),
            self.class.label(),
            self.net_kind.label(),
            self.net,
            self.timeout_ms,
            self.params,
            behaviours.join(", "),
            self.unanimous
        )
    }
}

fn choice_params(rng: &mut ChaCha8Rng) -> Value {
    json!({
        "basis": pick(rng, &["cast", "eligible"]),
        "min_participation": pick(rng, &[0.0, 0.3, 0.5, 0.7]),
        "tie_break": pick(rng, &["none", "lexicographic", "random"]),
    })
}

fn single_stage(algo: &str, rng: &mut ChaCha8Rng) -> Value {
    match algo {
        "majority" | "plurality" | "unanimous" => choice_params(rng),
        "supermajority" => {
            let mut p = choice_params(rng);
            p["threshold"] = json!(pick(rng, &[0.6, 2.0 / 3.0, 0.75, 0.9]));
            p
        }
        "weighted" => {
            let mut p = choice_params(rng);
            p["threshold"] = json!(pick(rng, &[0.3, 0.5, 0.6]));
            p["inclusive"] = json!(rng.gen_bool(0.5));
            p["use_confidence"] = json!(rng.gen_bool(0.7));
            p
        }
        "ranked_choice" => json!({"min_participation": pick(rng, &[0.0, 0.5])}),
        _ => Value::Null,
    }
}

fn params_for(algo: Algo, n: usize, rng: &mut ChaCha8Rng, options: &[String]) -> Value {
    match algo {
        Algo::Majority
        | Algo::Supermajority
        | Algo::Unanimous
        | Algo::Plurality
        | Algo::Weighted
        | Algo::RankedChoice => single_stage(algo.name(), rng),
        Algo::Byzantine => json!({"max_rounds": rng.gen_range(1..=4)}),
        Algo::Iterative => json!({
            "max_rounds": rng.gen_range(3..=10),
            "convergence_threshold": pick(rng, &[0.5, 1.0, 3.0]),
            "aggregate": pick(rng, &["weighted_mean", "median"]),
            "require_convergence": rng.gen_bool(0.5),
            "min_participation": 0.5,
        }),
        Algo::Negotiation => {
            let mut p = json!({"max_rounds": rng.gen_range(3..=8)});
            if rng.gen_bool(0.5) {
                p["min"] = json!(10.0);
                p["max"] = json!(90.0);
            }
            p
        }
        Algo::Auction => {
            let mut p = json!({
                "pricing": pick(rng, &["first_price", "second_price"]),
                "lowest_wins": rng.gen_bool(0.3),
            });
            if rng.gen_bool(0.3) {
                p["reserve"] = json!(rng.gen_range(10.0..60.0f64).round());
            }
            p
        }
        Algo::LeaderElection => json!({
            "method": pick(rng, &["vote", "highest_expertise", "random"]),
            "tie_break": pick(rng, &["lexicographic", "random"]),
        }),
        Algo::WorkDistribution => {
            let strategy = pick(
                rng,
                &[
                    "round_robin",
                    "least_loaded",
                    "capability_match",
                    "consistent_hashing",
                ],
            );
            let items: Vec<Value> = (0..rng.gen_range(1..=6))
                .map(|i| {
                    if strategy == "capability_match" && rng.gen_bool(0.5) {
                        json!({"id": format!("item-{i}"), "capability": pick(rng, &["gpu", "cpu"]), "cost": rng.gen_range(1..=3)})
                    } else {
                        json!(format!("item-{i}"))
                    }
                })
                .collect();
            json!({"strategy": strategy, "items": items})
        }
        Algo::Adaptive => {
            let chains: [&[&str]; 4] = [
                &["byzantine", "weighted", "majority"],
                &["byzantine", "majority"],
                &["weighted", "plurality"],
                &["supermajority", "majority", "plurality"],
            ];
            let chain: Vec<Value> = pick(rng, &chains)
                .iter()
                .map(|a| json!({"algorithm": a, "params": single_stage(a, rng)}))
                .collect();
            json!({
                "chain": chain,
                "failure_ratio": pick(rng, &[0.2, 0.34, 0.5]),
                "time_pressure": pick(rng, &[0.3, 0.5, 0.8]),
                "min_quality": pick(rng, &[0.0, 0.5, 0.6, 0.8]),
            })
        }
        Algo::Pipeline => {
            let ids = &ring().ids;
            let mut members: Vec<usize> = (0..n).collect();
            members.shuffle(rng);
            members.truncate(rng.gen_range(1..=n));
            members.sort_unstable();
            let subset: Vec<String> = members.iter().map(|&i| ids[i].to_string()).collect();
            let first = pick(
                rng,
                &[
                    "plurality",
                    "weighted",
                    "ranked_choice",
                    "majority",
                    "byzantine",
                ],
            );
            let mut stages = vec![if first == "byzantine" {
                json!({"algorithm": "byzantine", "params": {"max_rounds": 2}, "options": options})
            } else {
                json!({"algorithm": first, "params": single_stage(first, rng), "participants": subset, "options": options})
            }];
            let second = pick(rng, &["majority", "supermajority", "plurality"]);
            stages.push(json!({"algorithm": second, "params": single_stage(second, rng), "options": ["accept", "reject"]}));
            if rng.gen_bool(0.3) {
                stages.push(json!({"algorithm": "plurality", "params": {"tie_break": "lexicographic", "min_participation": 0.0}, "options": ["accept", "reject"]}));
            }
            json!({"stages": stages})
        }
    }
}

fn network(kind: NetKind, n: usize, f: usize, timeout_ms: u64, rng: &mut ChaCha8Rng) -> NetConfig {
    let mut cfg = NetConfig {
        base_ms: rng.gen_range(1..=20),
        jitter_ms: rng.gen_range(1..=40),
        ..NetConfig::default()
    };
    match kind {
        NetKind::Perfect => {
            cfg.base_ms = rng.gen_range(1..=5);
            cfg.jitter_ms = 0;
        }
        NetKind::Jittery => {}
        NetKind::Lossy => {
            cfg.drop = pick(rng, &[0.01, 0.05, 0.1, 0.2]);
            cfg.dup = pick(rng, &[0.0, 0.05, 0.15]);
        }
        NetKind::Partitioned | NetKind::Flapping => {
            let mut agents: Vec<Node> = (0..n).map(Node::Agent).collect();
            agents.shuffle(rng);
            let groups = match rng.gen_range(0..4) {
                // Clean split; the coordinator is with the first half.
                0 => {
                    let (a, b) = agents.split_at(n / 2);
                    let mut a = a.to_vec();
                    a.push(Node::Coordinator);
                    vec![a, b.to_vec()]
                }
                // Minority isolation: up to f agents cut off from everyone else.
                1 => {
                    let k = rng.gen_range(1..=f.max(1)).min(n);
                    let (a, b) = agents.split_at(k);
                    let mut b = b.to_vec();
                    b.push(Node::Coordinator);
                    vec![a.to_vec(), b]
                }
                // The coordinator cut off from some agents (which still reach each other).
                2 => {
                    let k = rng.gen_range(1..=n.div_ceil(2));
                    vec![vec![Node::Coordinator], agents[..k].to_vec()]
                }
                // Fragmentation into three groups.
                _ => {
                    let a = n / 3;
                    let b = 2 * n / 3;
                    let mut first = agents[..a].to_vec();
                    first.push(Node::Coordinator);
                    vec![first, agents[a..b].to_vec(), agents[b..].to_vec()]
                }
            };
            let from_ms = rng.gen_range(0..=timeout_ms / 2);
            let heal_ms = rng
                .gen_bool(0.6)
                .then(|| from_ms + rng.gen_range(50..=timeout_ms / 2));
            let flap = (kind == NetKind::Flapping)
                .then(|| (rng.gen_range(20..=400), rng.gen_range(20..=400)));
            cfg.partitions.push(Partition {
                groups,
                from_ms,
                heal_ms,
                flap,
            });
            if rng.gen_bool(0.3) {
                cfg.drop = 0.02;
            }
        }
    }
    cfg
}
