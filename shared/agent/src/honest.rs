//! How an honest agent answers each kind of round, as plain functions (no I/O, no clock),
//! and [`Opinion`], a decider built from them (agent-sim's fleets use it).
//!
//! - choice algorithms (majority … weighted, adaptive and pipeline stages): the favourite
//!   option; a pipeline stage asking `accept`/`reject` about the previous stage's outcome
//!   accepts an outcome the agent finds acceptable;
//! - ranked choice: every option, most preferred first;
//! - Byzantine agreement: the round's suggestion when acceptable, else the favourite;
//! - iterative refinement: the agent's number (or vector), moved `step` of the way toward the
//!   previous round's aggregate each round;
//! - negotiation: an offer with the range the agent accepts, conceding toward each
//!   counter-proposal;
//! - auction: a bid; leader election: the preferred candidate (itself when the proposal
//!   names none); work distribution: load and capacity.

use mabeam_consensus::algorithm::DEFAULT_OPTIONS;
use mabeam_protocol::session::{Proposal, RoundContext, VoteValue};

use crate::decide::{Decider, Round, Vote};

/// Longest vector an agent answers with (a hint in the proposal cannot make it allocate more).
pub const MAX_DIMENSION: usize = 1024;

/// A stable 64-bit mix of a seed and a string (FNV-1a, then splitmix64), for per-agent orders
/// and draws that must not change between runs.
pub(crate) fn mix(seed: u64, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The options of a round: the proposal's, or `accept`/`reject` when it lists none.
pub fn options_of(proposal: &Proposal) -> Vec<String> {
    if proposal.options.is_empty() {
        DEFAULT_OPTIONS.iter().map(|o| (*o).to_owned()).collect()
    } else {
        proposal.options.clone()
    }
}

/// Iterative refinement: `step` (in `[0, 1]`) of the way from `current` toward `aggregate`,
/// component by component. A vector of another length than the aggregate's is replaced by
/// the aggregate (the coordinator would refuse it).
pub fn refine(current: &[f64], aggregate: &[f64], step: f64) -> Vec<f64> {
    if current.len() != aggregate.len() {
        return aggregate.to_vec();
    }
    let step = step.clamp(0.0, 1.0);
    current
        .iter()
        .zip(aggregate)
        .map(|(x, a)| x + step * (a - x))
        .collect()
}

/// A negotiation offer: the value the agent proposes and the range it accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Offer {
    pub value: f64,
    pub min: f64,
    pub max: f64,
}

impl Offer {
    /// `value` with `tolerance` either side.
    pub fn around(value: f64, tolerance: f64) -> Self {
        let t = tolerance.abs();
        Self {
            value,
            min: value - t,
            max: value + t,
        }
    }

    pub fn to_vote_value(self) -> VoteValue {
        VoteValue::Offer {
            value: self.value,
            min: self.min,
            max: self.max,
        }
    }
}

/// Negotiation: answers a counter-proposal by moving the offer `step` of the way toward it
/// and widening the accepted range toward it by the same share plus a small margin (so a
/// finite number of rounds reaches it), never past it.
pub fn counter_offer(offer: Offer, counter: f64, step: f64) -> Offer {
    if !counter.is_finite() {
        return offer;
    }
    let step = step.clamp(0.0, 1.0);
    let margin = 0.01 * (1.0 + counter.abs());
    let value = offer.value + step * (counter - offer.value);
    let mut min = offer.min;
    let mut max = offer.max;
    if counter < min {
        min = (min - (step * (min - counter) + margin)).max(counter);
    }
    if counter > max {
        max = (max + (step * (counter - max) + margin)).min(counter);
    }
    Offer {
        value,
        min: min.min(value),
        max: max.max(value),
    }
}

/// Byzantine agreement: the round's suggestion when the agent finds it acceptable (it
/// helps a split electorate converge), else its favourite.
pub fn byzantine_choice(
    favourite: &str,
    acceptable: &[String],
    suggestion: Option<&str>,
) -> String {
    match suggestion {
        Some(s) if s == favourite || acceptable.iter().any(|a| a == s) => s.to_owned(),
        _ => favourite.to_owned(),
    }
}

/// A pipeline stage asking whether to accept the previous stage's outcome (options exactly
/// `accept` and `reject`, proposal `{"stage", "algorithm", "outcome"}`): the outcome's value,
/// if there is one.
pub fn previous_outcome(proposal: &Proposal) -> Option<&str> {
    let yes_no = proposal.options.len() == 2
        && proposal.options.iter().any(|o| o == "accept")
        && proposal.options.iter().any(|o| o == "reject");
    if !yes_no {
        return None;
    }
    let outcome = proposal.proposal.get("outcome")?;
    ["choice", "winner", "leader", "value"]
        .iter()
        .find_map(|k| outcome.get(*k))
        .and_then(serde_json::Value::as_str)
}

/// The vector length an iterative round wants: the previous aggregate's, else this agent's
/// previous answer's, else a hint in the proposal (`{"dimensions": n}`, `{"initial": [..]}` or
/// an array of numbers), else 1.
pub fn dimension(proposal: &Proposal, previous: Option<&VoteValue>) -> usize {
    if let RoundContext::Refine { aggregate, .. } = &proposal.context {
        if !aggregate.is_empty() {
            return aggregate.len().min(MAX_DIMENSION);
        }
    }
    if let Some(VoteValue::Vector(v)) = previous {
        if !v.is_empty() {
            return v.len().min(MAX_DIMENSION);
        }
    }
    let hint = &proposal.proposal;
    let from_hint = hint
        .get("dimensions")
        .or_else(|| hint.get("dimension"))
        .and_then(serde_json::Value::as_u64)
        .map(|n| n as usize)
        .or_else(|| hint.get("initial").unwrap_or(hint).as_array().map(Vec::len));
    from_hint.unwrap_or(1).clamp(1, MAX_DIMENSION)
}

/// An honest agent's standing preferences, from which it answers every algorithm.
#[derive(Debug, Clone, PartialEq)]
pub struct Opinion {
    /// Named options in order of preference; options it does not name rank after them.
    pub ranking: Vec<String>,
    /// When the round offers none of the named options: the favourite's index (modulo the
    /// number of options) in the round's option list.
    pub favourite: usize,
    /// Orders the options that are neither named nor the favourite (a per-agent shuffle).
    pub order_seed: u64,
    /// How many of its top-ranked options it settles for (a Byzantine suggestion, a
    /// pipeline outcome); at least 1.
    pub acceptable: usize,
    /// Its value for iterative refinement (every component of a vector) and the centre of
    /// its negotiation offer.
    pub number: f64,
    /// Share of the way it moves toward the aggregate or counter-proposal each round.
    pub step: f64,
    /// Half-width of the range it accepts in negotiation.
    pub tolerance: f64,
    pub bid: f64,
    pub load: f64,
    pub capacity: f64,
    pub confidence: f64,
}

impl Default for Opinion {
    fn default() -> Self {
        Self {
            ranking: Vec::new(),
            favourite: 0,
            order_seed: 0,
            acceptable: 1,
            number: 0.0,
            step: 0.5,
            tolerance: 1.0,
            bid: 1.0,
            load: 0.0,
            capacity: 1.0,
            confidence: 1.0,
        }
    }
}

impl Opinion {
    /// `options` in this agent's order of preference.
    pub fn rank(&self, options: &[String]) -> Vec<String> {
        let mut ranked: Vec<String> = self
            .ranking
            .iter()
            .filter(|o| options.contains(o))
            .cloned()
            .collect();
        let mut rest: Vec<&String> = options.iter().filter(|o| !ranked.contains(o)).collect();
        if ranked.is_empty() && !rest.is_empty() {
            let favourite = rest.remove(self.favourite % rest.len());
            ranked.push(favourite.clone());
        }
        rest.sort_by_key(|o| (mix(self.order_seed, o), o.as_str()));
        ranked.extend(rest.into_iter().cloned());
        ranked
    }

    fn accepts(&self, ranked: &[String], value: &str) -> bool {
        ranked
            .iter()
            .take(self.acceptable.max(1))
            .any(|o| o == value)
    }

    /// The honest answer to `round`.
    pub fn answer(&self, round: &Round<'_>) -> Vote {
        let p = round.proposal;
        let previous = round.previous.map(|v| &v.value);
        let value = match p.algorithm.as_str() {
            "iterative" => {
                let dim = dimension(p, previous);
                let current = match previous {
                    Some(VoteValue::Number(x)) if dim == 1 => vec![*x],
                    Some(VoteValue::Vector(v)) if v.len() == dim => v.clone(),
                    _ => vec![self.number; dim],
                };
                let next = match &p.context {
                    RoundContext::Refine { aggregate, .. } if !aggregate.is_empty() => {
                        refine(&current, aggregate, self.step)
                    }
                    _ => current,
                };
                match next.as_slice() {
                    [x] => VoteValue::Number(*x),
                    _ => VoteValue::Vector(next),
                }
            }
            "negotiation" => {
                let offer = match previous {
                    Some(VoteValue::Offer { value, min, max }) => Offer {
                        value: *value,
                        min: *min,
                        max: *max,
                    },
                    _ => Offer::around(self.number, self.tolerance),
                };
                let offer = match p.context {
                    RoundContext::Counter { proposal } => counter_offer(offer, proposal, self.step),
                    _ => offer,
                };
                offer.to_vote_value()
            }
            "auction" => VoteValue::Bid(self.bid.max(0.0)),
            "work_distribution" => VoteValue::Load {
                load: self.load.max(0.0),
                capacity: self.capacity.max(0.0),
            },
            "leader_election" => match self.rank(&p.options).into_iter().next() {
                Some(candidate) => VoteValue::Choice(candidate),
                None => VoteValue::Choice(round.agent_id.to_string()),
            },
            "ranked_choice" => VoteValue::Ranking(self.rank(&options_of(p))),
            _ => {
                let ranked = self.rank(&options_of(p));
                let Some(favourite) = ranked.first() else {
                    return Vote::abstain();
                };
                if let RoundContext::Byzantine { suggestion, .. } = &p.context {
                    let acceptable: Vec<String> = ranked
                        .iter()
                        .take(self.acceptable.max(1))
                        .cloned()
                        .collect();
                    VoteValue::Choice(byzantine_choice(
                        favourite,
                        &acceptable,
                        suggestion.as_deref(),
                    ))
                } else if let Some(outcome) = previous_outcome(p) {
                    // Without named preferences the agent cannot tell the earlier stage's
                    // options apart, so it goes along with what that stage decided.
                    let verdict = if self.ranking.is_empty() || self.accepts(&self.ranking, outcome)
                    {
                        "accept"
                    } else {
                        "reject"
                    };
                    VoteValue::Choice(verdict.to_owned())
                } else {
                    VoteValue::Choice(favourite.clone())
                }
            }
        };
        Vote::new(value).with_confidence(self.confidence)
    }
}

impl Decider for Opinion {
    fn decide(&self, round: &Round<'_>) -> impl std::future::Future<Output = Vote> + Send {
        std::future::ready(self.answer(round))
    }
}

#[cfg(test)]
mod tests {
    use mabeam_protocol::{session::Phase, AgentId, SessionId, TaskId};

    use super::*;

    pub(crate) fn proposal(algorithm: &str, options: &[&str], context: RoundContext) -> Proposal {
        Proposal {
            v: 1,
            task_id: TaskId::new("t").unwrap(),
            session_id: SessionId::new("s").unwrap(),
            algorithm: algorithm.into(),
            round: 1,
            phase: Phase::Vote,
            proposal: serde_json::Value::Null,
            options: options.iter().map(|s| (*s).to_owned()).collect(),
            deadline_ms: 0,
            context,
        }
    }

    fn answer(o: &Opinion, p: &Proposal, previous: Option<&Vote>) -> VoteValue {
        let me = AgentId::new("me").unwrap();
        o.answer(&Round {
            agent_id: &me,
            proposal: p,
            previous,
        })
        .value
    }

    #[test]
    fn refine_moves_toward_the_aggregate_and_adopts_a_mismatched_one() {
        assert_eq!(refine(&[0.0, 10.0], &[10.0, 0.0], 0.5), vec![5.0, 5.0]);
        assert_eq!(refine(&[1.0], &[3.0, 4.0], 0.5), vec![3.0, 4.0]);
        assert_eq!(
            refine(&[0.0], &[10.0], 2.0),
            vec![10.0],
            "step is capped at 1"
        );
    }

    #[test]
    fn counter_offers_concede_toward_the_counter_and_reach_it() {
        let mut offer = Offer::around(10.0, 1.0);
        for _ in 0..200 {
            offer = counter_offer(offer, 20.0, 0.3);
            assert!(offer.min <= offer.value && offer.value <= offer.max);
            assert!(offer.max <= 20.0, "never widens past the counter");
        }
        assert_eq!(offer.max, 20.0, "the counter ends inside the range");
        let down = counter_offer(Offer::around(10.0, 1.0), 0.0, 0.5);
        assert!(down.value < 10.0 && down.min < 9.0 && down.min >= 0.0);
    }

    #[test]
    fn byzantine_choice_takes_an_acceptable_suggestion_only() {
        let ok = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(byzantine_choice("a", &ok, Some("b")), "b");
        assert_eq!(byzantine_choice("a", &ok, Some("c")), "a");
        assert_eq!(byzantine_choice("a", &ok, None), "a");
    }

    #[test]
    fn ranking_puts_named_options_then_the_favourite_then_a_seeded_order() {
        let opts: Vec<String> = ["x", "y", "z", "w"].iter().map(|s| s.to_string()).collect();
        let named = Opinion {
            ranking: vec!["z".into(), "nope".into()],
            ..Opinion::default()
        };
        assert_eq!(named.rank(&opts)[0], "z");
        assert_eq!(named.rank(&opts).len(), 4);
        let by_index = Opinion {
            favourite: 5,
            ..Opinion::default()
        };
        assert_eq!(by_index.rank(&opts)[0], "y", "5 mod 4 = 1");
        assert_eq!(by_index.rank(&opts), by_index.rank(&opts), "stable");
    }

    #[test]
    fn every_algorithm_gets_the_ballot_kind_it_accepts() {
        let o = Opinion {
            number: 4.0,
            bid: 7.0,
            load: 1.0,
            capacity: 3.0,
            confidence: 0.8,
            ..Opinion::default()
        };
        let open = RoundContext::Open;
        let cases: Vec<(&str, Vec<&str>, VoteValue)> = vec![
            ("majority", vec!["a", "b"], VoteValue::Choice("a".into())),
            ("weighted", vec![], VoteValue::Choice("accept".into())),
            (
                "ranked_choice",
                vec!["a", "b"],
                VoteValue::Ranking(vec!["a".into(), "b".into()]),
            ),
            ("iterative", vec![], VoteValue::Number(4.0)),
            (
                "negotiation",
                vec![],
                VoteValue::Offer {
                    value: 4.0,
                    min: 3.0,
                    max: 5.0,
                },
            ),
            ("auction", vec![], VoteValue::Bid(7.0)),
            (
                "work_distribution",
                vec![],
                VoteValue::Load {
                    load: 1.0,
                    capacity: 3.0,
                },
            ),
            ("leader_election", vec![], VoteValue::Choice("me".into())),
        ];
        for (algorithm, options, expected) in cases {
            let p = proposal(algorithm, &options, open.clone());
            assert_eq!(answer(&o, &p, None), expected, "{algorithm}");
        }
    }

    #[test]
    fn iterative_rounds_move_from_the_previous_answer_toward_the_aggregate() {
        let o = Opinion {
            number: 0.0,
            step: 0.5,
            ..Opinion::default()
        };
        let p = proposal(
            "iterative",
            &[],
            RoundContext::Refine {
                aggregate: vec![10.0],
                dispersion: 3.0,
            },
        );
        let prev = Vote::new(VoteValue::Number(2.0));
        assert_eq!(answer(&o, &p, Some(&prev)), VoteValue::Number(6.0));
        let mut vector = proposal("iterative", &[], RoundContext::Open);
        vector.proposal = serde_json::json!({"dimensions": 3});
        assert_eq!(answer(&o, &vector, None), VoteValue::Vector(vec![0.0; 3]));
    }

    #[test]
    fn negotiation_answers_a_counter_with_an_offer() {
        let o = Opinion {
            number: 10.0,
            tolerance: 1.0,
            step: 0.5,
            ..Opinion::default()
        };
        let p = proposal("negotiation", &[], RoundContext::Counter { proposal: 20.0 });
        let VoteValue::Offer { value, min, max } = answer(&o, &p, None) else {
            panic!("not an offer")
        };
        assert_eq!(value, 15.0);
        assert!(min <= value && value <= max && max <= 20.0);
    }

    #[test]
    fn byzantine_rounds_follow_an_acceptable_suggestion() {
        let o = Opinion {
            acceptable: 2,
            ..Opinion::default()
        };
        let byz = |suggestion: Option<&str>| RoundContext::Byzantine {
            fault_tolerance: 1,
            quorum: 3,
            electorate: vec![],
            suggestion: suggestion.map(str::to_owned),
        };
        let ranked = o.rank(&["a".to_owned(), "b".to_owned(), "c".to_owned()]);
        let second = ranked[1].clone();
        let third = ranked[2].clone();
        let p = proposal("byzantine", &["a", "b", "c"], byz(Some(&second)));
        assert_eq!(answer(&o, &p, None), VoteValue::Choice(second));
        let p = proposal("byzantine", &["a", "b", "c"], byz(Some(&third)));
        assert_eq!(answer(&o, &p, None), VoteValue::Choice("a".into()));
    }

    #[test]
    fn pipeline_stages_accept_an_acceptable_previous_outcome() {
        let o = Opinion {
            ranking: vec!["postgres".into()],
            ..Opinion::default()
        };
        let mut p = proposal("majority", &["accept", "reject"], RoundContext::Open);
        p.proposal = serde_json::json!({"stage": 1, "algorithm": "plurality",
            "outcome": {"choice": "postgres"}});
        assert_eq!(answer(&o, &p, None), VoteValue::Choice("accept".into()));
        p.proposal = serde_json::json!({"stage": 1, "algorithm": "plurality",
            "outcome": {"choice": "mysql"}});
        assert_eq!(answer(&o, &p, None), VoteValue::Choice("reject".into()));
    }

    #[test]
    fn dimension_hints_are_bounded() {
        let mut p = proposal("iterative", &[], RoundContext::Open);
        p.proposal = serde_json::json!({"dimensions": 1_000_000_000u64});
        assert_eq!(dimension(&p, None), MAX_DIMENSION);
        p.proposal = serde_json::json!([1.0, 2.0]);
        assert_eq!(dimension(&p, None), 2);
    }
}
