//! Pure tallies: counted ballots in, outcome out. Sessions call them when a round closes;
//! `mabeamctl tally` calls them on a ballot file.

use mabeam_protocol::{result::RoundRecord, session::VoteValue, AgentId, Outcome};
use rand::Rng as _;

pub mod auction;
pub mod choice;
pub mod distribution;
pub mod leader;
pub mod numeric;
pub mod ranked;

use crate::{algorithm::AlgorithmSpec, Electorate};

/// A valid ballot as tallies see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub agent: AgentId,
    pub value: VoteValue,
    /// Clamped to `[0, 1]` by every tally.
    pub confidence: f64,
}

/// What a tally concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct TallyResult {
    /// `Some` when decided.
    pub outcome: Option<Outcome>,
    /// Why there is no decision (tie, threshold not met, too few ballots...).
    pub reason: Option<String>,
    /// What the round(s) looked like; ranked choice records one entry per elimination round.
    pub history: Vec<RoundRecord>,
    /// The options tied for first when a tie is why there is no decision.
    pub tied: Vec<String>,
}

impl TallyResult {
    pub(crate) fn decided(outcome: Outcome, history: Vec<RoundRecord>) -> Self {
        Self {
            outcome: Some(outcome),
            reason: None,
            history,
            tied: Vec::new(),
        }
    }

    pub(crate) fn undecided(reason: impl Into<String>, history: Vec<RoundRecord>) -> Self {
        Self {
            outcome: None,
            reason: Some(reason.into()),
            history,
            tied: Vec::new(),
        }
    }

    pub(crate) fn tie(options: Vec<String>, history: Vec<RoundRecord>) -> Self {
        Self {
            tied: options.clone(),
            ..Self::undecided(format!("tie between {}", options.join(", ")), history)
        }
    }
}

/// Everything a single-round tally may look at.
#[derive(Debug)]
pub struct TallyInput<'a> {
    pub votes: &'a [Vote],
    pub options: &'a [String],
    pub electorate: &'a Electorate,
}

/// Why a ballot cannot count for an algorithm.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BallotError(pub String);

/// Checks a ballot's value against what the algorithm accepts.
pub fn check_ballot(
    spec: &AlgorithmSpec,
    value: &VoteValue,
    options: &[String],
    electorate: &Electorate,
) -> Result<(), BallotError> {
    use AlgorithmSpec as A;
    let is_option = |c: &str| options.iter().any(|o| o == c);
    match (spec, value) {
        (_, VoteValue::Abstain) => Ok(()),
        (
            A::Majority(_)
            | A::Supermajority(_)
            | A::Unanimous(_)
            | A::Plurality(_)
            | A::Weighted(_)
            | A::Byzantine(_),
            VoteValue::Choice(c),
        ) => {
            if is_option(c) {
                Ok(())
            } else {
                Err(BallotError(format!("{c:?} is not one of the options")))
            }
        }
        (A::RankedChoice(_), VoteValue::Ranking(r)) => ranked::check_ranking(r, options),
        (A::RankedChoice(_), VoteValue::Choice(c)) if is_option(c) => Ok(()),
        (A::Iterative(_), VoteValue::Number(x)) if x.is_finite() => Ok(()),
        (A::Iterative(_), VoteValue::Vector(v))
            if !v.is_empty() && v.iter().all(|x| x.is_finite()) =>
        {
            Ok(())
        }
        (A::Negotiation(_), VoteValue::Offer { value, min, max })
            if value.is_finite() && min.is_finite() && max.is_finite() && min <= max =>
        {
            Ok(())
        }
        (A::Negotiation(_), VoteValue::Number(x)) if x.is_finite() => Ok(()),
        (A::Auction(_), VoteValue::Bid(b)) if b.is_finite() && *b >= 0.0 => Ok(()),
        (A::LeaderElection(_), VoteValue::Choice(c)) => match c.parse::<AgentId>() {
            Ok(id) if electorate.contains(&id) => Ok(()),
            _ => Err(BallotError(format!(
                "{c:?} is not a member of the electorate"
            ))),
        },
        (A::WorkDistribution(_), VoteValue::Load { load, capacity })
            if load.is_finite() && capacity.is_finite() && *load >= 0.0 && *capacity >= 0.0 =>
        {
            Ok(())
        }
        (spec, value) => Err(BallotError(format!(
            "{} does not accept a {} ballot",
            spec.name(),
            value_kind(value)
        ))),
    }
}

pub(crate) fn value_kind(value: &VoteValue) -> &'static str {
    match value {
        VoteValue::Choice(_) => "choice",
        VoteValue::Ranking(_) => "ranking",
        VoteValue::Number(_) => "number",
        VoteValue::Vector(_) => "vector",
        VoteValue::Bid(_) => "bid",
        VoteValue::Offer { .. } => "offer",
        VoteValue::Load { .. } => "load",
        VoteValue::Abstain => "abstain",
    }
}

/// Tallies a single-round algorithm. Multi-round algorithms (byzantine, iterative,
/// negotiation, adaptive, pipeline) are driven by sessions and return `None`.
pub fn tally_single_round<R: rand::RngCore>(
    spec: &AlgorithmSpec,
    input: &TallyInput<'_>,
    rng: &mut R,
) -> Option<TallyResult> {
    use AlgorithmSpec as A;
    Some(match spec {
        A::Majority(_)
        | A::Supermajority(_)
        | A::Unanimous(_)
        | A::Plurality(_)
        | A::Weighted(_) => {
            let rule = choice::ChoiceRule::for_spec(spec)?;
            choice::tally(input, &rule, rng)
        }
        A::RankedChoice(p) => ranked::instant_runoff(input, p),
        A::Auction(p) => auction::sealed_bid(input, p),
        A::LeaderElection(p) => leader::elect(input, p, rng),
        A::WorkDistribution(p) => distribution::distribute(input, p),
        A::Byzantine(_) | A::Iterative(_) | A::Negotiation(_) | A::Adaptive(_) | A::Pipeline(_) => {
            return None
        }
    })
}

/// Picks one of `tied` (sorted) as `TieBreak::Random` does: a seeded uniform draw.
pub(crate) fn draw<'a, T, R: rand::RngCore>(tied: &'a [T], rng: &mut R) -> Option<&'a T> {
    if tied.is_empty() {
        None
    } else {
        tied.get(rng.gen_range(0..tied.len()))
    }
}

/// Floating-point slack for comparing sums of weights.
pub(crate) const EPSILON: f64 = 1e-9;
