//! `mabeamctl tally`: runs an algorithm over a ballot file, offline.
//!
//! Ballots are screened as a live session screens them, then handed to the consensus core's
//! tallies:
//!
//! 1. a ballot from an agent outside the electorate is rejected;
//! 2. a second ballot of an agent with the same value is a duplicate (rejected, the first
//!    counts); with a different value the agent equivocated and none of its ballots count;
//! 3. the value must be one the algorithm accepts (`tally::check_ballot`);
//! 4. iterative only: every vector must have the length of the first one counted.
//!
//! The counted ballots are passed in agent id order with a ChaCha generator seeded by
//! `--seed`, exactly as a session with that seed passes them, so tie-breaks and random draws
//! match the live session.
//!
//! How each family is tallied:
//!
//! - single-round algorithms (majority, supermajority, unanimous, plurality, weighted,
//!   ranked_choice, auction, leader_election, work_distribution): `tally_single_round`,
//!   exactly as a session's round closes.
//! - iterative: the ballots are the values of the *final* round: their aggregate
//!   (`aggregate` parameter) and dispersion are computed once; converged (dispersion at most
//!   `convergence_threshold`) is decided, otherwise no decision, or the aggregate anyway with
//!   `require_convergence=false`. `max_rounds` plays no part.
//! - negotiation: the offers of the final round: `numeric::negotiate` proposes the
//!   compromise; decided when every offer's range (and the hard bounds) accepts it.
//! - byzantine: there are no signatures offline, so every choice ballot stands for a signed
//!   commit: the value with a quorum (2f+1 when n = 3f+1) of matching commits is decided (f from the `f`
//!   parameter, else ⌊(n−1)/3⌋; n must be at least 3f+1). No certificate is produced. Two
//!   values both reaching the quorum (possible only with more than f faulty agents) is no decision.
//! - adaptive and pipeline need live agents and are refused.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use mabeam_consensus::{
    algorithm::{ByzantineParams, IterativeParams, NegotiationParams, DEFAULT_OPTIONS},
    tally::{self, numeric, TallyInput, TallyResult, Vote},
    AlgorithmSpec, ConfigError, Electorate, Participant, ALGORITHMS,
};
use mabeam_protocol::{
    result::RoundRecord, session::VoteValue, AgentId, AgentKeypair, Outcome, Status,
};
use rand_chacha::{rand_core::SeedableRng as _, ChaCha8Rng};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    ballots::BallotFile,
    params::{self, strip_position},
    CtlError,
};

/// Slack on participation shares, as the core counts them.
const EPSILON: f64 = 1e-9;

/// `mabeamctl tally` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct TallyArgs {
    /// Algorithm: majority, supermajority, unanimous, plurality, weighted, ranked_choice,
    /// auction, leader_election, work_distribution, byzantine, iterative or negotiation.
    #[arg(short, long, value_name = "NAME")]
    pub algorithm: String,
    /// The ballot file (JSON; see `mabeamctl tally --help`).
    #[arg(short, long, value_name = "FILE")]
    pub ballots: PathBuf,
    /// Parameters as a JSON object, over the file's `params`.
    #[arg(long, value_name = "JSON", value_parser = params::parse_params_object)]
    pub params: Option<Map<String, Value>>,
    /// One parameter, over `--params`; repeatable. The value is read as JSON when it is
    /// (0.75, true, ["a","b"]) and as a string otherwise (second_price).
    #[arg(
        short = 'p',
        long = "param",
        value_name = "KEY=VALUE",
        value_parser = params::parse_key_value
    )]
    pub param: Vec<(String, Value)>,
    /// Seeds tie-breaks and random draws, as a session's seed does.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub seed: u64,
}

/// A ballot that was not counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedBallot {
    pub agent: AgentId,
    pub reason: String,
}

/// What `mabeamctl tally` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TallyReport {
    pub algorithm: String,
    /// `decided` or `no_decision`.
    pub status: Status,
    pub outcome: Option<Outcome>,
    /// Why there is no decision (or, for iterative without convergence, why the decision is
    /// weak).
    pub reason: Option<String>,
    /// One record per round; ranked choice records each elimination round.
    pub rounds: Vec<RoundRecord>,
    /// Valid ballots handed to the tally, abstentions included.
    pub ballots_counted: usize,
    pub ballots_rejected: Vec<RejectedBallot>,
}

impl TallyReport {
    fn new(
        spec: &AlgorithmSpec,
        result: TallyResult,
        counted: usize,
        rejected: Vec<RejectedBallot>,
    ) -> Self {
        Self {
            algorithm: spec.name().to_owned(),
            status: if result.outcome.is_some() {
                Status::Decided
            } else {
                Status::NoDecision
            },
            outcome: result.outcome,
            reason: result.reason,
            rounds: result.history,
            ballots_counted: counted,
            ballots_rejected: rejected,
        }
    }
}

/// Runs `mabeamctl tally`.
pub fn run(args: &TallyArgs) -> Result<TallyReport, CtlError> {
    check_offline(&args.algorithm)?;
    let file = read_ballot_file(&args.ballots)?;
    let params = params::merge(&file.params, args.params.as_ref(), &args.param);
    let spec = AlgorithmSpec::parse(&args.algorithm, &params)?;
    tally_file(&spec, &file, args.seed).map_err(|e| match e {
        FileError::Config(e) => CtlError::Config(e),
        FileError::Content(message) => CtlError::BallotContent {
            path: args.ballots.clone(),
            message,
        },
        FileError::Live(algorithm, why) => CtlError::NeedsLiveAgents { algorithm, why },
    })
}

/// Refuses unknown algorithms (listing the known ones) and those that need live agents,
/// before the ballot file is read.
fn check_offline(name: &str) -> Result<(), CtlError> {
    if !ALGORITHMS.contains(&name) {
        return Err(CtlError::Config(ConfigError::UnknownAlgorithm {
            name: name.to_owned(),
            known: ALGORITHMS.join(", "),
        }));
    }
    match live_only(name) {
        Some((algorithm, why)) => Err(CtlError::NeedsLiveAgents { algorithm, why }),
        None => Ok(()),
    }
}

fn live_only(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "adaptive" => Some((
            "adaptive",
            "it switches algorithms on failures and time pressure observed across rounds",
        )),
        "pipeline" => Some((
            "pipeline",
            "each stage opens new rounds whose proposals depend on the previous stage's outcome",
        )),
        _ => None,
    }
}

/// Reads and parses a ballot file; JSON errors carry their line and column.
pub fn read_ballot_file(path: &Path) -> Result<BallotFile, CtlError> {
    let text = std::fs::read_to_string(path).map_err(|source| CtlError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| CtlError::BallotFile {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: strip_position(&e),
    })
}

/// Why a parsed ballot file cannot be tallied.
#[derive(Debug)]
pub enum FileError {
    Config(ConfigError),
    Content(String),
    Live(&'static str, &'static str),
}

impl From<ConfigError> for FileError {
    fn from(e: ConfigError) -> Self {
        Self::Config(e)
    }
}

/// Deterministic key material for offline participants: keys play no part in a tally.
fn offline_key(index: usize) -> AgentKeypair {
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&(index as u64).to_le_bytes());
    secret[8..16].copy_from_slice(b"mabeamct");
    AgentKeypair::from_secret_bytes(secret)
}

/// The file's electorate: its `agents`, or every agent with a ballot.
pub fn electorate(file: &BallotFile) -> Result<Electorate, FileError> {
    let entries: Vec<(AgentId, f64, Vec<String>)> = match &file.agents {
        Some(agents) => agents
            .iter()
            .map(|a| (a.id.clone(), a.expertise, a.capabilities.clone()))
            .collect(),
        None => {
            let mut seen = BTreeSet::new();
            file.ballots
                .iter()
                .filter(|b| seen.insert(b.agent.clone()))
                .map(|b| (b.agent.clone(), 1.0, Vec::new()))
                .collect()
        }
    };
    if entries.is_empty() {
        return Err(FileError::Content(
            if file.agents.is_some() {
                "`agents` is empty"
            } else {
                "there are no ballots and no `agents` list: the electorate would be empty"
            }
            .to_owned(),
        ));
    }
    let members = entries
        .into_iter()
        .enumerate()
        .map(|(i, (id, expertise, capabilities))| Participant {
            id,
            public_key: offline_key(i).public_key(),
            expertise,
            capabilities,
        })
        .collect();
    Ok(Electorate::new(members)?)
}

/// The options ballots choose among: the file's, or accept/reject for choice algorithms
/// when it lists none (as sessions do).
fn options(spec: &AlgorithmSpec, file: &BallotFile) -> Result<Vec<String>, FileError> {
    let mut seen = BTreeSet::new();
    if let Some(dup) = file.options.iter().find(|o| !seen.insert(o.as_str())) {
        return Err(FileError::Content(format!(
            "option {dup:?} is listed twice"
        )));
    }
    if file.options.is_empty() && spec.uses_options() {
        Ok(DEFAULT_OPTIONS.iter().map(|s| (*s).to_owned()).collect())
    } else {
        Ok(file.options.clone())
    }
}

/// Ballots that survived screening, in agent id order, and those that did not, in file order.
struct Screened {
    votes: Vec<Vote>,
    rejected: Vec<RejectedBallot>,
}

fn screen(
    spec: &AlgorithmSpec,
    file: &BallotFile,
    options: &[String],
    electorate: &Electorate,
) -> Screened {
    let mut rejected: Vec<(usize, RejectedBallot)> = Vec::new();
    let reject =
        |rejected: &mut Vec<(usize, RejectedBallot)>, i: usize, agent: &AgentId, reason: String| {
            rejected.push((
                i,
                RejectedBallot {
                    agent: agent.clone(),
                    reason,
                },
            ));
        };
    // Intake: membership, duplicates and equivocation.
    let mut first: BTreeMap<&AgentId, usize> = BTreeMap::new();
    let mut equivocators: BTreeSet<&AgentId> = BTreeSet::new();
    for (i, ballot) in file.ballots.iter().enumerate() {
        if !electorate.contains(&ballot.agent) {
            reject(
                &mut rejected,
                i,
                &ballot.agent,
                "not a member of the electorate (`agents`)".to_owned(),
            );
            continue;
        }
        match first.get(&ballot.agent) {
            None => {
                first.insert(&ballot.agent, i);
            }
            Some(&j) => {
                let same = file.ballots.get(j).is_some_and(|b| b.vote == ballot.vote);
                if same {
                    reject(
                        &mut rejected,
                        i,
                        &ballot.agent,
                        format!("duplicate of ballot #{j}; the first one counts"),
                    );
                } else {
                    equivocators.insert(&ballot.agent);
                    reject(
                        &mut rejected,
                        i,
                        &ballot.agent,
                        format!(
                            "equivocation: a different value than ballot #{j}; none of this \
                             agent's ballots count"
                        ),
                    );
                }
            }
        }
    }
    // The algorithm's own checks (rejections are reported in file order below).
    let mut dimension: Option<usize> = None;
    let mut votes: Vec<Vote> = Vec::new();
    for (agent, &i) in &first {
        let Some(ballot) = file.ballots.get(i) else {
            continue;
        };
        if equivocators.contains(agent) {
            reject(
                &mut rejected,
                i,
                agent,
                "equivocation: this agent sent ballots with different values".to_owned(),
            );
            continue;
        }
        if !(0.0..=1.0).contains(&ballot.confidence) {
            // As session intake: out-of-range confidence is a malformed ballot.
            let detail = format!("confidence {} is outside [0, 1]", ballot.confidence);
            reject(&mut rejected, i, agent, detail);
            continue;
        }
        if let Err(e) = tally::check_ballot(spec, &ballot.vote, options, electorate) {
            reject(&mut rejected, i, agent, e.0);
            continue;
        }
        votes.push(Vote {
            agent: ballot.agent.clone(),
            value: ballot.vote.clone(),
            confidence: ballot.confidence,
        });
    }
    if matches!(spec, AlgorithmSpec::Iterative(_)) {
        // The first counted vector (in file order) fixes the dimension, as in a session.
        let mut by_file_order: Vec<(usize, Vote)> = votes
            .into_iter()
            .map(|v| (first.get(&v.agent).copied().unwrap_or(usize::MAX), v))
            .collect();
        by_file_order.sort_by_key(|(i, _)| *i);
        votes = Vec::new();
        for (i, vote) in by_file_order {
            let len = match &vote.value {
                VoteValue::Number(_) => Some(1),
                VoteValue::Vector(v) => Some(v.len()),
                _ => None,
            };
            match (len, dimension) {
                (Some(len), Some(d)) if len != d => {
                    reject(
                        &mut rejected,
                        i,
                        &vote.agent,
                        format!("vector of length {len}; the first counted value has {d}"),
                    );
                    continue;
                }
                (Some(len), None) => dimension = Some(len),
                _ => {}
            }
            votes.push(vote);
        }
    }
    votes.sort_by(|a, b| a.agent.cmp(&b.agent));
    rejected.sort_by_key(|(i, _)| *i);
    Screened {
        votes,
        rejected: rejected.into_iter().map(|(_, r)| r).collect(),
    }
}

/// Tallies a parsed ballot file with a parsed algorithm.
pub fn tally_file(
    spec: &AlgorithmSpec,
    file: &BallotFile,
    seed: u64,
) -> Result<TallyReport, FileError> {
    if let Some((algorithm, why)) = live_only(spec.name()) {
        return Err(FileError::Live(algorithm, why));
    }
    let electorate = electorate(file)?;
    spec.check_electorate(electorate.len())?;
    let options = options(spec, file)?;
    let Screened { votes, rejected } = screen(spec, file, &options, &electorate);
    let input = TallyInput {
        votes: &votes,
        options: &options,
        electorate: &electorate,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let result = match spec {
        AlgorithmSpec::Byzantine(p) => byzantine(p, &input),
        AlgorithmSpec::Iterative(p) => iterative(p, &input),
        AlgorithmSpec::Negotiation(p) => negotiation(p, &input),
        single => match tally::tally_single_round(single, &input, &mut rng) {
            Some(result) => result,
            None => {
                return Err(FileError::Live(
                    single.name(),
                    "it is not a single-round algorithm",
                ))
            }
        },
    };
    Ok(TallyReport::new(spec, result, votes.len(), rejected))
}

fn needed(min_participation: f64, n: usize) -> usize {
    let needed = (min_participation * n as f64 - EPSILON).ceil();
    if needed.is_finite() && needed > 0.0 {
        needed as usize
    } else {
        0
    }
}

fn weight(input: &TallyInput<'_>, vote: &Vote) -> f64 {
    let expertise = input
        .electorate
        .get(&vote.agent)
        .map_or(0.0, |p| p.expertise);
    expertise * vote.confidence.clamp(0.0, 1.0)
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn result(outcome: Option<Outcome>, reason: Option<String>, record: RoundRecord) -> TallyResult {
    TallyResult {
        outcome,
        reason,
        history: vec![record],
        tied: Vec::new(),
    }
}

/// Byzantine offline: each choice ballot is a commit; a quorum (2f+1 when n = 3f+1) of matching commits decides.
fn byzantine(params: &ByzantineParams, input: &TallyInput<'_>) -> TallyResult {
    let n = input.electorate.len();
    let f = AlgorithmSpec::byzantine_f(params, n);
    let quorum = u64::from(mabeam_protocol::result::byzantine_quorum(n, f));
    let mut commits: BTreeMap<String, f64> = BTreeMap::new();
    for vote in input.votes {
        if let VoteValue::Choice(c) = &vote.value {
            *commits.entry(c.clone()).or_default() += 1.0;
        }
    }
    let counted: usize = input
        .votes
        .iter()
        .filter(|v| matches!(v.value, VoteValue::Choice(_)))
        .count();
    let summary: Vec<String> = commits.iter().map(|(v, c)| format!("{v}={c}")).collect();
    let record = RoundRecord {
        round: 1,
        algorithm: "byzantine".into(),
        counted: to_u32(counted),
        tally: commits.clone(),
        note: Some(format!(
            "offline: every choice ballot counts as a commit; commits {}; quorum={quorum} \
             (f={f}, n={n})",
            if summary.is_empty() {
                "none".to_owned()
            } else {
                summary.join(", ")
            }
        )),
        ..RoundRecord::default()
    };
    let reached: Vec<(&String, f64)> = commits
        .iter()
        .filter(|(_, &c)| c >= quorum as f64)
        .map(|(v, &c)| (v, c))
        .collect();
    match reached.as_slice() {
        [(value, count)] => result(
            Some(Outcome::Choice {
                choice: (*value).clone(),
                support: count / n as f64,
                tally: commits.clone(),
            }),
            None,
            record,
        ),
        [] => {
            let best = commits
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map_or_else(
                    || "no commits".to_owned(),
                    |(v, c)| format!("most: {v:?} with {c}"),
                );
            result(
                None,
                Some(format!(
                    "no value reached the quorum of {quorum} matching commits ({best})"
                )),
                record,
            )
        }
        several => {
            let names: Vec<&str> = several.iter().map(|(v, _)| v.as_str()).collect();
            result(
                None,
                Some(format!(
                    "conflicting quorums for {}: more than f={f} agents must be faulty; no \
                     decision (safety over liveness)",
                    names.join(", ")
                )),
                record,
            )
        }
    }
}

/// Iterative refinement offline: the ballots are the final round's values.
fn iterative(params: &IterativeParams, input: &TallyInput<'_>) -> TallyResult {
    let values: Vec<(Vec<f64>, f64)> = input
        .votes
        .iter()
        .filter_map(|v| match &v.value {
            VoteValue::Number(x) => Some((vec![*x], weight(input, v))),
            VoteValue::Vector(x) => Some((x.clone(), weight(input, v))),
            _ => None,
        })
        .collect();
    let n = input.electorate.len();
    let need = needed(params.min_participation, n);
    let aggregate = numeric::aggregate(&values, params.aggregate);
    let dispersion = aggregate.as_ref().map(|a| numeric::dispersion(&values, a));
    let record = RoundRecord {
        round: 1,
        algorithm: "iterative".into(),
        counted: to_u32(values.len()),
        aggregate: aggregate.clone(),
        dispersion,
        note: Some("offline: the ballots are taken as the final round's values".into()),
        ..RoundRecord::default()
    };
    let (Some(aggregate), Some(dispersion)) = (aggregate, dispersion) else {
        return result(
            None,
            Some("no counted values with positive weight".into()),
            record,
        );
    };
    if values.len() < need {
        return result(
            None,
            Some(format!(
                "{} of {n} agents sent a value; min_participation needs {need}",
                values.len()
            )),
            record,
        );
    }
    let outcome = Some(Outcome::Value {
        value: aggregate,
        dispersion,
    });
    if dispersion <= params.convergence_threshold {
        return result(outcome, None, record);
    }
    let reason = format!(
        "dispersion {dispersion:.6} is above convergence_threshold {}",
        params.convergence_threshold
    );
    if params.require_convergence {
        result(None, Some(reason), record)
    } else {
        result(outcome, Some(reason), record)
    }
}

/// Negotiation offline: the ballots are the final round's offers.
fn negotiation(params: &NegotiationParams, input: &TallyInput<'_>) -> TallyResult {
    let offers: Vec<numeric::Offer> = input
        .votes
        .iter()
        .filter_map(|v| {
            let (value, min, max) = match v.value {
                VoteValue::Offer { value, min, max } => (value, min, max),
                // A bare number is an offer that accepts only itself.
                VoteValue::Number(x) => (x, x, x),
                _ => return None,
            };
            Some(numeric::Offer {
                agent: v.agent.clone(),
                value,
                min,
                max,
                weight: weight(input, v),
            })
        })
        .collect();
    let n = input.electorate.len();
    let need = needed(params.min_participation, n);
    let step = numeric::negotiate(&offers, (params.min, params.max));
    let record = RoundRecord {
        round: 1,
        algorithm: "negotiation".into(),
        counted: to_u32(offers.len()),
        aggregate: step.as_ref().map(|s| vec![s.proposal]),
        note: step
            .as_ref()
            .filter(|s| !s.holdouts.is_empty())
            .map(|s| format!("{} holdout(s)", s.holdouts.len())),
        ..RoundRecord::default()
    };
    let Some(step) = step else {
        return result(None, Some("no offers with positive weight".into()), record);
    };
    if offers.len() < need {
        return result(
            None,
            Some(format!(
                "{} of {n} agents made offers; min_participation needs {need}",
                offers.len()
            )),
            record,
        );
    }
    if step.agreed {
        let spread = offers
            .iter()
            .map(|o| (o.value - step.proposal).abs())
            .fold(0.0, f64::max);
        return result(
            Some(Outcome::Value {
                value: vec![step.proposal],
                dispersion: spread,
            }),
            None,
            record,
        );
    }
    let holdouts: Vec<&str> = step.holdouts.iter().map(AgentId::as_str).collect();
    let reason = if holdouts.is_empty() {
        format!(
            "the compromise {:.6} is outside the hard bounds",
            step.proposal
        )
    } else {
        format!(
            "no agreement: {} do not accept {:.6}",
            holdouts.join(", "),
            step.proposal
        )
    };
    result(None, Some(reason), record)
}
