//! Fixtures shared by mabeam's criterion benchmarks (`benches/benches/*.rs`): electorates,
//! precomputed ballots, pre-signed envelopes, and helpers that drive a session to its
//! decision in-process. Everything is deterministic (fixed keys, seeded generators), so two
//! runs measure the same work.
//!
//! [`load`] is the load driver, scale ladder and floor bench behind the `mabeam-load` binary.

pub mod load;

use mabeam_consensus::{
    algorithm::{AlgorithmSpec, ChoiceParams},
    tally::Vote,
    ConfigError, Decision, Effect, Electorate, IntakeSettings, Participant, Session, SessionInit,
};
use mabeam_protocol::{
    session::{Ballot, Phase, VoteValue},
    signing::EnvelopeHeader,
    AgentId, AgentKeypair, EncodeError, IdError, PublicKey, SessionId, SignedEnvelope, TaskId,
};
use rand::{seq::SliceRandom as _, Rng as _, SeedableRng as _};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

/// Electorate sizes every scaling benchmark runs at.
pub const SIZES: [usize; 6] = [5, 13, 50, 100, 200, 500];

/// The virtual clock: sessions start here and ballots are stamped with it.
pub const NOW_MS: u64 = 1_700_000_000_000;

const SESSION: &str = "bench-session";

/// A fixture could not be built (a bug in the fixture, not something to measure).
#[derive(Debug, thiserror::Error)]
pub enum FixtureError {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("there is no agent {0}")]
    NoAgent(usize),
}

/// `agent-0000`, `agent-0001`, ...: ids sort in index order.
pub fn agent_id(i: usize) -> Result<AgentId, IdError> {
    AgentId::new(format!("agent-{i:04}"))
}

/// A fixed key per index.
pub fn keypair(i: usize) -> AgentKeypair {
    let mut secret = [7u8; 32];
    secret[..8].copy_from_slice(&(i as u64).to_le_bytes());
    AgentKeypair::from_secret_bytes(secret)
}

/// `n` agents with their keys, and their electorate with expertise `expertise(i)`.
#[derive(Debug, Clone)]
pub struct Agents {
    pub ids: Vec<AgentId>,
    pub keys: Vec<AgentKeypair>,
    pub electorate: Electorate,
}

pub fn agents(n: usize, expertise: impl Fn(usize) -> f64) -> Result<Agents, FixtureError> {
    let ids = (0..n).map(agent_id).collect::<Result<Vec<_>, _>>()?;
    let keys: Vec<AgentKeypair> = (0..n).map(keypair).collect();
    let members = ids
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(i, (id, key))| Participant {
            id: id.clone(),
            public_key: key.public_key(),
            expertise: expertise(i),
            capabilities: Vec::new(),
        })
        .collect();
    Ok(Agents {
        ids,
        keys,
        electorate: Electorate::new(members)?,
    })
}

/// The single-round algorithms the tally benchmark covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TallyAlgorithm {
    Majority,
    Weighted,
    RankedChoice,
    Plurality,
    Auction,
    LeaderElection,
    LeastLoaded,
    ConsistentHashing,
}

impl TallyAlgorithm {
    pub const ALL: [Self; 8] = [
        Self::Majority,
        Self::Weighted,
        Self::RankedChoice,
        Self::Plurality,
        Self::Auction,
        Self::LeaderElection,
        Self::LeastLoaded,
        Self::ConsistentHashing,
    ];

    /// The benchmark group name.
    pub fn label(self) -> &'static str {
        match self {
            Self::Majority => "majority",
            Self::Weighted => "weighted",
            Self::RankedChoice => "ranked_choice",
            Self::Plurality => "plurality",
            Self::Auction => "auction",
            Self::LeaderElection => "leader_election",
            Self::LeastLoaded => "work_distribution/least_loaded",
            Self::ConsistentHashing => "work_distribution/consistent_hashing",
        }
    }
}

/// Everything one `tally_single_round` call needs, precomputed.
#[derive(Debug, Clone)]
pub struct TallyCase {
    pub spec: AlgorithmSpec,
    pub options: Vec<String>,
    pub electorate: Electorate,
    pub votes: Vec<Vote>,
}

fn choice_options() -> Vec<String> {
    ["A", "B", "C"].iter().map(|s| (*s).to_owned()).collect()
}

/// 55% A, 30% B, 15% C, interleaved.
fn choice_of(i: usize) -> &'static str {
    match i % 20 {
        0..=10 => "A",
        11..=16 => "B",
        _ => "C",
    }
}

/// `n` ballots for `algorithm`, one per agent, in agent id order (as sessions pass them).
pub fn tally_case(algorithm: TallyAlgorithm, n: usize) -> Result<TallyCase, FixtureError> {
    let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
    let expertise = |i: usize| 1.0 + (i % 7) as f64 / 2.0;
    let Agents {
        ids, electorate, ..
    } = agents(n, expertise)?;
    let ranked_options: Vec<String> = ["A", "B", "C", "D", "E"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let (name, params, options) = match algorithm {
        TallyAlgorithm::Majority => ("majority", json!(null), choice_options()),
        TallyAlgorithm::Plurality => ("plurality", json!(null), choice_options()),
        TallyAlgorithm::Weighted => ("weighted", json!(null), choice_options()),
        TallyAlgorithm::RankedChoice => ("ranked_choice", json!(null), ranked_options.clone()),
        TallyAlgorithm::Auction => ("auction", json!(null), Vec::new()),
        TallyAlgorithm::LeaderElection => ("leader_election", json!(null), Vec::new()),
        TallyAlgorithm::LeastLoaded | TallyAlgorithm::ConsistentHashing => {
            let strategy = if algorithm == TallyAlgorithm::LeastLoaded {
                "least_loaded"
            } else {
                "consistent_hashing"
            };
            // One item per agent.
            let items: Vec<String> = (0..n).map(|i| format!("item-{i}")).collect();
            (
                "work_distribution",
                json!({"strategy": strategy, "items": items}),
                Vec::new(),
            )
        }
    };
    let spec = AlgorithmSpec::parse(name, &params)?;
    let votes = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let value = match algorithm {
                TallyAlgorithm::Majority | TallyAlgorithm::Plurality | TallyAlgorithm::Weighted => {
                    VoteValue::Choice(choice_of(i).to_owned())
                }
                TallyAlgorithm::RankedChoice => {
                    let mut ranking = ranked_options.clone();
                    ranking.shuffle(&mut rng);
                    ranking.truncate(rng.gen_range(1..=ranking.len()));
                    VoteValue::Ranking(ranking)
                }
                TallyAlgorithm::Auction => VoteValue::Bid(rng.gen_range(0.0..1000.0)),
                TallyAlgorithm::LeaderElection => {
                    let candidate = ids.get(rng.gen_range(0..n)).unwrap_or(id);
                    VoteValue::Choice(candidate.to_string())
                }
                TallyAlgorithm::LeastLoaded | TallyAlgorithm::ConsistentHashing => {
                    VoteValue::Load {
                        load: (i % 4) as f64,
                        capacity: 4.0 + (i % 3) as f64,
                    }
                }
            };
            Vote {
                agent: id.clone(),
                value,
                confidence: 0.5 + (i % 6) as f64 / 10.0,
            }
        })
        .collect();
    Ok(TallyCase {
        spec,
        options,
        electorate,
        votes,
    })
}

/// Signs `ballot` as agent `i` for round 1 of the bench session.
pub fn sign(
    agents: &Agents,
    i: usize,
    sequence: u64,
    ballot: &Ballot,
) -> Result<SignedEnvelope, FixtureError> {
    let (Some(id), Some(key)) = (agents.ids.get(i), agents.keys.get(i)) else {
        return Err(FixtureError::NoAgent(i));
    };
    Ok(SignedEnvelope::seal(
        key,
        EnvelopeHeader {
            sender: id.clone(),
            session: SessionId::new(SESSION)?,
            round: 1,
            sequence,
            timestamp_ms: NOW_MS,
        },
        ballot,
    )?)
}

fn session_init(
    spec: AlgorithmSpec,
    electorate: Electorate,
    options: Vec<String>,
) -> Result<SessionInit, FixtureError> {
    Ok(SessionInit {
        task_id: TaskId::new("bench-task")?,
        session_id: SessionId::new(SESSION)?,
        spec,
        proposal: json!("benchmark"),
        options,
        electorate,
        timeout_ms: 30_000,
        seed: 0,
        intake: IntakeSettings::default(),
    })
}

/// A majority session over `n` agents and one signed vote per agent. The votes split
/// about evenly (accept wins by one or two), so the round cannot close before most of them
/// are counted.
#[derive(Debug, Clone)]
pub struct MajorityFixture {
    pub init: SessionInit,
    pub ballots: Vec<SignedEnvelope>,
}

pub fn majority_fixture(n: usize) -> Result<MajorityFixture, FixtureError> {
    let agents = agents(n, |_| 1.0)?;
    let ballots = (0..n)
        .map(|i| {
            let choice = if i % 2 == 0 || i == 1 {
                "accept"
            } else {
                "reject"
            };
            let ballot = Ballot::new(Phase::Vote, VoteValue::Choice(choice.into()), 0.9);
            sign(&agents, i, 1, &ballot)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let init = session_init(
        AlgorithmSpec::Majority(ChoiceParams::default()),
        agents.electorate,
        vec!["accept".into(), "reject".into()],
    )?;
    Ok(MajorityFixture { init, ballots })
}

/// One byzantine round over `n` agents: every agent's signed prepare for `accept`, then the
/// 2f+1 signed commits that decide it (f = ⌊(n−1)/3⌋).
#[derive(Debug, Clone)]
pub struct ByzantineFixture {
    pub init: SessionInit,
    pub prepares: Vec<SignedEnvelope>,
    pub commits: Vec<SignedEnvelope>,
}

pub fn byzantine_fixture(n: usize) -> Result<ByzantineFixture, FixtureError> {
    let agents = agents(n, |_| 1.0)?;
    let quorum = 2 * (n.saturating_sub(1) / 3) + 1;
    let vote = |phase| Ballot::new(phase, VoteValue::Choice("accept".into()), 1.0);
    let prepares = (0..n)
        .map(|i| sign(&agents, i, 1, &vote(Phase::Prepare)))
        .collect::<Result<Vec<_>, _>>()?;
    let commits = (0..quorum)
        .map(|i| sign(&agents, i, 2, &vote(Phase::Commit)))
        .collect::<Result<Vec<_>, _>>()?;
    let init = session_init(
        AlgorithmSpec::parse("byzantine", &json!(null))?,
        agents.electorate,
        vec!["accept".into(), "reject".into()],
    )?;
    Ok(ByzantineFixture {
        init,
        prepares,
        commits,
    })
}

/// `n` envelopes signed by `n` different agents, and the keys that verify them.
pub fn signed_envelopes(n: usize) -> Result<(Vec<SignedEnvelope>, Vec<PublicKey>), FixtureError> {
    let agents = agents(n, |_| 1.0)?;
    let ballot = Ballot::new(Phase::Vote, VoteValue::Choice("accept".into()), 1.0);
    let envelopes = (0..n)
        .map(|i| sign(&agents, i, 1, &ballot))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        envelopes,
        agents.keys.iter().map(AgentKeypair::public_key).collect(),
    ))
}

/// How envelopes reach the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Each wave with one `handle_envelopes` call (signatures batch-verified).
    Batched,
    /// Each envelope with its own `handle_envelope` call (verified one by one).
    OneByOne,
}

/// Starts a session from `init`, delivers `waves` of envelopes at `NOW_MS + 1`, and drains
/// every effect; returns the decision when the session finished.
pub fn drive(
    init: SessionInit,
    waves: Vec<Vec<SignedEnvelope>>,
    delivery: Delivery,
) -> Result<Option<Decision>, ConfigError> {
    let mut session = Session::start(init, NOW_MS)?;
    let mut decision = drain(&mut session);
    for wave in waves {
        match delivery {
            Delivery::Batched => session.handle_envelopes(NOW_MS + 1, wave),
            Delivery::OneByOne => {
                for envelope in wave {
                    session.handle_envelope(NOW_MS + 1, envelope);
                }
            }
        }
        decision = decision.or(drain(&mut session));
    }
    Ok(decision)
}

fn drain(session: &mut Session) -> Option<Decision> {
    let mut decision = None;
    while let Some(effect) = session.poll_effect() {
        if let Effect::Finished(d) = effect {
            decision = Some(*d);
        }
    }
    decision
}
