//! Properties of the pure tallies, checked on generated electorates and ballots.

// Integration-test helpers are not `#[test]` functions, so the workspace's test allowances
// do not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use mabeam_consensus::{
    algorithm::{
        Aggregate, AuctionParams, DistributionParams, ElectionMethod, LeaderParams, Pricing,
        RankedParams, Strategy as Placement, TieBreak, WorkItem,
    },
    tally::{
        auction, choice::ChoiceCount, choice::ChoiceRule, distribution, leader, numeric,
        numeric::Offer, ranked, TallyInput, TallyResult, Vote,
    },
    weights::{updated_expertise, WeightUpdate},
    AlgorithmSpec, Electorate, Participant,
};
use mabeam_protocol::{session::VoteValue, AgentId, AgentKeypair, Outcome};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;

fn agent(i: usize) -> AgentId {
    AgentId::new(format!("agent-{i:02}")).unwrap()
}

fn electorate(expertise: &[f64]) -> Electorate {
    electorate_with(expertise, |_| Vec::new())
}

fn electorate_with(expertise: &[f64], capabilities: impl Fn(usize) -> Vec<String>) -> Electorate {
    Electorate::new(
        expertise
            .iter()
            .enumerate()
            .map(|(i, &e)| Participant {
                id: agent(i),
                public_key: AgentKeypair::from_secret_bytes([i as u8; 32]).public_key(),
                expertise: e,
                capabilities: capabilities(i),
            })
            .collect(),
    )
    .unwrap()
}

fn vote(i: usize, value: VoteValue, confidence: f64) -> Vote {
    Vote {
        agent: agent(i),
        value,
        confidence,
    }
}

fn option_names(k: usize) -> Vec<String> {
    (0..k).map(|i| format!("o{i}")).collect()
}

// ---------------------------------------------------------------------------------------
// Ranked choice

/// A ranking over `k` options as indices: repeats dropped, empty means abstain.
fn ranking(k: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..k, 0..=k).prop_map(|r| {
        let mut seen = BTreeSet::new();
        r.into_iter().filter(|o| seen.insert(*o)).collect()
    })
}

fn ranking_vote(i: usize, ranking: &[usize]) -> Vote {
    let value = if ranking.is_empty() {
        VoteValue::Abstain
    } else {
        VoteValue::Ranking(ranking.iter().map(|o| format!("o{o}")).collect())
    };
    vote(i, value, 1.0)
}

fn irv(votes: &[Vote], k: usize, n: usize) -> TallyResult {
    let e = electorate(&vec![1.0; n]);
    ranked::instant_runoff(
        &TallyInput {
            votes,
            options: &option_names(k),
            electorate: &e,
        },
        &RankedParams {
            min_participation: 0.0,
        },
    )
}

/// Options and one ranking per agent.
fn irv_election() -> impl Strategy<Value = (usize, Vec<Vec<usize>>)> {
    (2usize..6).prop_flat_map(|k| (Just(k), prop::collection::vec(ranking(k), 1..40)))
}

proptest! {
    #[test]
    fn irv_majority_first_choice_wins_round_one(
        (k, majority, minority, winner) in (2usize..6).prop_flat_map(|k| (
            Just(k),
            prop::collection::vec(ranking(k), 1..25),
            prop::collection::vec(ranking(k), 0..25),
            0..k,
        ))
    ) {
        // Every majority ballot ranks `winner` first; the other ballots are fewer.
        let majority: Vec<Vec<usize>> = majority
            .into_iter()
            .map(|r| std::iter::once(winner).chain(r.into_iter().filter(|&o| o != winner)).collect())
            .collect();
        let minority: Vec<Vec<usize>> = minority.into_iter().take(majority.len() - 1).collect();
        let ballots: Vec<&Vec<usize>> = majority.iter().chain(&minority).collect();
        let votes: Vec<Vote> = ballots.iter().enumerate().map(|(i, r)| ranking_vote(i, r)).collect();
        let result = irv(&votes, k, votes.len());
        let expected = format!("o{winner}");
        prop_assert_eq!(result.outcome.as_ref().and_then(Outcome::choice), Some(expected.as_str()));
        prop_assert_eq!(result.history.len(), 1);
    }

    #[test]
    fn irv_result_independent_of_ballot_order(
        ((k, rankings), order) in irv_election().prop_flat_map(|(k, rankings)| {
            let order: Vec<usize> = (0..rankings.len()).collect();
            (Just((k, rankings)), Just(order).prop_shuffle())
        })
    ) {
        let votes: Vec<Vote> = rankings.iter().enumerate().map(|(i, r)| ranking_vote(i, r)).collect();
        let shuffled: Vec<Vote> = order.iter().map(|&i| votes[i].clone()).collect();
        prop_assert_eq!(irv(&votes, k, votes.len()), irv(&shuffled, k, votes.len()));
    }

    #[test]
    fn irv_winner_is_never_an_eliminated_option((k, rankings) in irv_election()) {
        let votes: Vec<Vote> = rankings.iter().enumerate().map(|(i, r)| ranking_vote(i, r)).collect();
        let result = irv(&votes, k, votes.len());
        let mut eliminated = BTreeSet::new();
        for (i, record) in result.history.iter().enumerate() {
            prop_assert_eq!(record.round as usize, i + 1);
            for option in record.tally.keys() {
                prop_assert!(!eliminated.contains(option), "{} counted after elimination", option);
            }
            let counted: f64 = record.tally.values().sum();
            prop_assert_eq!(counted, f64::from(record.counted));
            eliminated.extend(record.eliminated.iter().cloned());
        }
        match &result.outcome {
            Some(Outcome::Choice { choice, support, tally }) => {
                prop_assert!(!eliminated.contains(choice));
                prop_assert!(option_names(k).contains(choice));
                prop_assert!(*support > 0.5 || tally.len() == 1, "{} with {}", choice, support);
            }
            Some(other) => prop_assert!(false, "not a choice: {:?}", other),
            None => prop_assert!(rankings.iter().all(Vec::is_empty), "{:?}", result.reason),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Auctions

#[derive(Debug, Clone)]
struct Auction {
    /// Per agent: `None` abstains.
    bids: Vec<Option<f64>>,
    params: AuctionParams,
}

fn auction_case() -> impl Strategy<Value = Auction> {
    // Whole-number bids make ties likely.
    let bid = prop_oneof![
        (0u32..20).prop_map(|b| Some(f64::from(b))),
        (0.0..20.0f64).prop_map(Some),
        Just(None),
    ];
    (
        prop::collection::vec(bid, 1..15),
        prop_oneof![Just(Pricing::FirstPrice), Just(Pricing::SecondPrice)],
        prop::option::of((0u32..20).prop_map(f64::from)),
        any::<bool>(),
    )
        .prop_map(|(bids, pricing, reserve, lowest_wins)| Auction {
            bids,
            params: AuctionParams {
                pricing,
                reserve,
                lowest_wins,
            },
        })
}

fn run_auction(case: &Auction) -> TallyResult {
    let e = electorate(&vec![1.0; case.bids.len()]);
    let votes: Vec<Vote> = case
        .bids
        .iter()
        .enumerate()
        .map(|(i, b)| vote(i, b.map_or(VoteValue::Abstain, VoteValue::Bid), 1.0))
        .collect();
    auction::sealed_bid(
        &TallyInput {
            votes: &votes,
            options: &[],
            electorate: &e,
        },
        &case.params,
    )
}

fn valid_bids(case: &Auction) -> Vec<(AgentId, f64)> {
    case.bids
        .iter()
        .enumerate()
        .filter_map(|(i, b)| b.map(|b| (agent(i), b)))
        .filter(|&(_, b)| match case.params.reserve {
            None => true,
            Some(r) if case.params.lowest_wins => b <= r,
            Some(r) => b >= r,
        })
        .collect()
}

proptest! {
    #[test]
    fn auction_winner_has_the_best_valid_bid(case in auction_case()) {
        let valid = valid_bids(&case);
        let result = run_auction(&case);
        let Some(Outcome::Award { winner, bid, .. }) = result.outcome else {
            prop_assert!(valid.is_empty(), "undecided with valid bids: {:?}", result.reason);
            return Ok(());
        };
        let best = if case.params.lowest_wins {
            valid.iter().map(|&(_, b)| b).fold(f64::INFINITY, f64::min)
        } else {
            valid.iter().map(|&(_, b)| b).fold(f64::NEG_INFINITY, f64::max)
        };
        prop_assert_eq!(bid, best);
        // Among equal best bids, the first id.
        let first_best = valid.iter().filter(|&&(_, b)| b == best).map(|(a, _)| a).min();
        prop_assert_eq!(Some(&winner), first_best);
    }

    #[test]
    fn second_price_never_exceeds_the_winning_bid(mut case in auction_case()) {
        case.params.pricing = Pricing::SecondPrice;
        if let Some(Outcome::Award { bid, price, .. }) = run_auction(&case).outcome {
            if case.params.lowest_wins {
                // Procurement: the winner is paid at least its bid.
                prop_assert!(price >= bid, "price {} under bid {}", price, bid);
            } else {
                prop_assert!(price <= bid, "price {} over bid {}", price, bid);
            }
            if let Some(reserve) = case.params.reserve {
                let within_reserve = if case.params.lowest_wins { price <= reserve } else { price >= reserve };
                prop_assert!(within_reserve, "price {} beyond the reserve {}", price, reserve);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Leader election and work distribution

proptest! {
    #[test]
    fn elected_leader_always_answered(
        ballots in prop::collection::vec(prop::option::of(prop::option::of(0usize..12)), 1..12),
        method in prop_oneof![
            Just(ElectionMethod::Vote),
            Just(ElectionMethod::HighestExpertise),
            Just(ElectionMethod::Random),
        ],
        random_ties in any::<bool>(),
        expertise in prop::collection::vec(prop_oneof![Just(1.0), 0.5..3.0f64], 12),
        seed in any::<u64>(),
    ) {
        // ballots[i]: None silent, Some(None) abstains, Some(Some(c)) votes for agent c.
        let e = electorate(&expertise[..ballots.len()]);
        let votes: Vec<Vote> = ballots
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.map(|c| {
                let value = c.map_or(VoteValue::Abstain, |c| VoteValue::Choice(agent(c).to_string()));
                vote(i, value, 1.0)
            }))
            .collect();
        let params = LeaderParams {
            method,
            tie_break: if random_ties { TieBreak::Random } else { TieBreak::Lexicographic },
        };
        let input = TallyInput { votes: &votes, options: &[], electorate: &e };
        let result = leader::elect(&input, &params, &mut ChaCha8Rng::seed_from_u64(seed));
        prop_assert_eq!(&result, &leader::elect(&input, &params, &mut ChaCha8Rng::seed_from_u64(seed)));
        match result.outcome {
            Some(Outcome::Leader { leader }) => {
                prop_assert!(votes.iter().any(|v| v.agent == leader), "{} was silent", leader);
            }
            _ => prop_assert!(votes.is_empty()),
        }
    }

    #[test]
    fn consistent_hashing_moves_items_only_to_a_new_agent(
        n in 1usize..8,
        items in prop::collection::btree_set("[a-z0-9]{1,12}", 1..60),
        virtual_nodes in 1u32..80,
    ) {
        let e = electorate(&vec![1.0; n + 1]);
        let load = |i| vote(i, VoteValue::Load { load: 0.0, capacity: 1.0 }, 1.0);
        let params = DistributionParams {
            strategy: Placement::ConsistentHashing,
            items: items.iter().cloned().map(WorkItem::Id).collect(),
            virtual_nodes,
        };
        let assign = |votes: &[Vote]| -> BTreeMap<String, AgentId> {
            match distribution::distribute(&TallyInput { votes, options: &[], electorate: &e }, &params).outcome {
                Some(Outcome::Assignment { assignments }) => assignments,
                other => panic!("no assignment: {other:?}"),
            }
        };
        let before_votes: Vec<Vote> = (0..n).map(load).collect();
        let after_votes: Vec<Vote> = (0..=n).map(load).collect();
        let before = assign(&before_votes);
        let after = assign(&after_votes);
        prop_assert_eq!(before.len(), items.len());
        for (item, owner) in &after {
            if before.get(item) != Some(owner) {
                prop_assert_eq!(owner, &agent(n), "{} moved between old agents", item);
            }
        }
    }

    #[test]
    fn distribution_places_every_item_on_an_available_agent(
        loads in prop::collection::vec(prop::option::of((0.0..10.0f64, 0.0..10.0f64)), 1..8),
        items in prop::collection::vec((prop::option::of(0usize..3), 1u32..5), 1..30),
        strategy in prop_oneof![
            Just(Placement::RoundRobin),
            Just(Placement::LeastLoaded),
            Just(Placement::CapabilityMatch),
            Just(Placement::ConsistentHashing),
        ],
    ) {
        let caps = ["gpu", "db", "net"];
        // Agent i has capability i % 3.
        let e = electorate_with(&vec![1.0; loads.len()], |i| vec![caps[i % 3].to_owned()]);
        let votes: Vec<Vote> = loads
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.map(|(load, capacity)| vote(i, VoteValue::Load { load, capacity }, 1.0)))
            .collect();
        let work: Vec<WorkItem> = items
            .iter()
            .enumerate()
            .map(|(i, &(cap, cost))| WorkItem::Detailed {
                id: format!("item-{i}"),
                capability: cap.map(|c| caps[c].to_owned()),
                cost,
            })
            .collect();
        let result = distribution::distribute(
            &TallyInput { votes: &votes, options: &[], electorate: &e },
            &DistributionParams { strategy, items: work.clone(), virtual_nodes: 16 },
        );
        let available: BTreeSet<&AgentId> = votes.iter().map(|v| &v.agent).collect();
        match result.outcome {
            Some(Outcome::Assignment { assignments }) => {
                prop_assert_eq!(assignments.len(), work.len());
                for item in &work {
                    let owner = &assignments[item.id()];
                    prop_assert!(available.contains(owner));
                    if strategy == Placement::CapabilityMatch {
                        if let Some(cap) = item.capability() {
                            prop_assert!(e.get(owner).unwrap().capabilities.iter().any(|c| c == cap));
                        }
                    }
                }
                let counted: f64 = result.history[0].tally.values().sum();
                prop_assert_eq!(counted, work.len() as f64);
            }
            _ => {
                let capable_missing = strategy == Placement::CapabilityMatch
                    && work.iter().any(|item| item.capability().is_some_and(|cap| {
                        !available.iter().any(|a| e.get(a).unwrap().capabilities.iter().any(|c| c == cap))
                    }));
                prop_assert!(available.is_empty() || capable_missing, "{:?}", result.reason);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Numeric aggregation, negotiation and weights

proptest! {
    #[test]
    fn weighted_mean_lies_within_the_values_bounds(
        (values, positive) in (1usize..5).prop_flat_map(|dim| (
            prop::collection::vec(
                (prop::collection::vec(-1e6..1e6f64, dim), prop_oneof![Just(0.0), 0.0..10.0f64]),
                0..20,
            ),
            (prop::collection::vec(-1e6..1e6f64, dim), 0.01..10.0f64),
        ))
    ) {
        let mut values = values;
        values.push(positive);
        let mean = numeric::aggregate(&values, Aggregate::WeightedMean).unwrap();
        for (d, m) in mean.iter().enumerate() {
            let weighted = values.iter().filter(|(_, w)| *w > 0.0).map(|(v, _)| v[d]);
            let lo = weighted.clone().fold(f64::INFINITY, f64::min);
            let hi = weighted.fold(f64::NEG_INFINITY, f64::max);
            prop_assert!(lo <= *m && *m <= hi, "{} outside [{}, {}]", m, lo, hi);
        }
    }

    #[test]
    fn median_is_robust_to_a_minority_of_outliers(
        (honest, outliers, share) in (1usize..4).prop_flat_map(|dim| (
            prop::collection::vec((prop::collection::vec(0.0..100.0f64, dim), 0.5..2.0f64), 1..15),
            prop::collection::vec(
                (prop::collection::vec(prop_oneof![Just(1e12), Just(-1e12), -1e9..1e9f64], dim), 0.1..2.0f64),
                0..15,
            ),
            0.0..0.99f64,
        ))
    ) {
        // Scale the outliers to `share` of the honest weight: always a minority.
        let honest_weight: f64 = honest.iter().map(|(_, w)| w).sum();
        let outlier_weight: f64 = outliers.iter().map(|(_, w)| w).sum();
        let scale = if outlier_weight > 0.0 { share * honest_weight / outlier_weight } else { 0.0 };
        let mut values = honest.clone();
        values.extend(outliers.into_iter().map(|(v, w)| (v, w * scale)));
        let median = numeric::aggregate(&values, Aggregate::Median).unwrap();
        for (d, m) in median.iter().enumerate() {
            let lo = honest.iter().map(|(v, _)| v[d]).fold(f64::INFINITY, f64::min);
            let hi = honest.iter().map(|(v, _)| v[d]).fold(f64::NEG_INFINITY, f64::max);
            prop_assert!(lo <= *m && *m <= hi, "{} outside the honest [{}, {}]", m, lo, hi);
        }
    }

    #[test]
    fn negotiated_proposal_respects_the_hard_bounds(
        offers in prop::collection::vec((-100.0..100.0f64, -100.0..100.0f64, 0.0..50.0f64, 0.01..5.0f64), 1..10),
        bounds in (prop::option::of(-120.0..0.0f64), prop::option::of(0.0..120.0f64)),
    ) {
        let offers: Vec<Offer> = offers
            .iter()
            .enumerate()
            .map(|(i, &(value, min, width, weight))| Offer { agent: agent(i), value, min, max: min + width, weight })
            .collect();
        let round = numeric::negotiate(&offers, bounds).unwrap();
        if let Some(lo) = bounds.0 { prop_assert!(round.proposal >= lo); }
        if let Some(hi) = bounds.1 { prop_assert!(round.proposal <= hi); }
        // Agreement is exactly the absence of holdouts.
        prop_assert_eq!(round.agreed, round.holdouts.is_empty());
        for o in &offers {
            let accepts = o.min - 1e-9 <= round.proposal && round.proposal <= o.max + 1e-9;
            prop_assert_eq!(accepts, !round.holdouts.contains(&o.agent));
        }
        // When the ranges overlap inside the bounds, the agents agree.
        let lo = offers.iter().map(|o| o.min).fold(bounds.0.unwrap_or(f64::NEG_INFINITY), f64::max);
        let hi = offers.iter().map(|o| o.max).fold(bounds.1.unwrap_or(f64::INFINITY), f64::min);
        prop_assert_eq!(round.agreed, lo <= hi);
    }

    #[test]
    fn updated_weight_stays_within_bounds(
        learning_rate in prop_oneof![Just(1.0), 0.001..1.0f64],
        min in 0.001..5.0f64,
        width in prop_oneof![Just(0.0), 0.0..20.0f64],
        current in prop_oneof![-10.0..50.0f64, Just(f64::NAN), Just(f64::INFINITY)],
        agreements in prop::collection::vec(any::<bool>(), 1..50),
    ) {
        let update = WeightUpdate { learning_rate, min, max: min + width };
        prop_assert!(update.validate().is_ok());
        let mut w = current;
        for agreed in agreements {
            let next = updated_expertise(w, agreed, &update);
            prop_assert!(update.min <= next && next <= update.max, "{} outside [{}, {}]", next, update.min, update.max);
            // Agreement never lowers an in-bounds weight; disagreement never raises it.
            if (update.min..=update.max).contains(&w) {
                let toward_target = if agreed { next >= w } else { next <= w };
                prop_assert!(toward_target, "{} -> {} (agreed: {})", w, next, agreed);
            }
            w = next;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Early close of the lead's choice tallies

#[derive(Debug, Clone)]
struct ChoiceCase {
    name: &'static str,
    params: serde_json::Value,
    expertise: Vec<f64>,
    options: usize,
    /// Per agent, in arrival order: agent index, `None` to abstain or an option, confidence.
    ballots: Vec<(usize, Option<usize>, f64)>,
    seed: u64,
}

fn choice_spec() -> impl Strategy<Value = (&'static str, serde_json::Value)> {
    let basis = prop_oneof![Just("cast"), Just("eligible")];
    let tie_break = prop_oneof![Just("none"), Just("lexicographic"), Just("random")];
    let participation = prop_oneof![Just(0.0), Just(0.5), Just(1.0), 0.0..=1.0f64];
    (
        0usize..5,
        basis,
        tie_break,
        participation,
        prop_oneof![Just(1.0), Just(2.0 / 3.0), 0.5001..=1.0f64],
        prop_oneof![Just(0.5), Just(1.0), 0.01..=1.0f64],
        any::<bool>(),
        any::<bool>(),
        prop_oneof![2 => Just(0u32), 1 => 1u32..5],
    )
        .prop_map(
            |(kind, basis, tie_break, p, super_t, weighted_t, inclusive, confidence, min_votes)| {
                let common = json!({
                    "basis": basis, "tie_break": tie_break, "min_participation": p,
                    "min_votes": min_votes,
                });
                let mut params = common.as_object().cloned().unwrap_or_default();
                let name = match kind {
                    0 => "majority",
                    1 => "unanimous",
                    2 => "plurality",
                    3 => {
                        params.insert("threshold".into(), json!(super_t));
                        "supermajority"
                    }
                    _ => {
                        params.insert("threshold".into(), json!(weighted_t));
                        params.insert("inclusive".into(), json!(inclusive));
                        params.insert("use_confidence".into(), json!(confidence));
                        "weighted"
                    }
                };
                (name, serde_json::Value::Object(params))
            },
        )
}

fn choice_case() -> impl Strategy<Value = ChoiceCase> {
    (1usize..30, 2usize..5, choice_spec(), any::<u64>()).prop_flat_map(
        |(n, options, (name, params), seed)| {
            let expertise = prop::collection::vec(
                prop_oneof![Just(1.0), (1u32..4).prop_map(f64::from), 0.1..5.0f64],
                n,
            );
            let ballot = (
                prop_oneof![1 => Just(None), 4 => (0..options).prop_map(Some)],
                prop_oneof![Just(1.0), Just(0.0), 0.0..=1.0f64],
            );
            let ballots = prop::collection::vec(ballot, n);
            let order = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
            (expertise, ballots, order).prop_map(move |(expertise, ballots, order)| ChoiceCase {
                name,
                params: params.clone(),
                expertise,
                options,
                ballots: order
                    .into_iter()
                    .zip(ballots)
                    .map(|(agent, (choice, confidence))| (agent, choice, confidence))
                    .collect(),
                seed,
            })
        },
    )
}

/// The winner (or none) after counting `ballots`.
fn choice_decision(
    case: &ChoiceCase,
    rule: &ChoiceRule,
    e: &Electorate,
    options: &[String],
    ballots: &[(usize, Option<usize>, f64)],
) -> Option<String> {
    let mut count = ChoiceCount::new(options, rule, e);
    for &(i, choice, confidence) in ballots {
        count.add(
            choice.map(|c| options[c].as_str()),
            rule.weight(case.expertise[i], confidence),
        );
    }
    count
        .decide(rule, &mut ChaCha8Rng::seed_from_u64(case.seed))
        .outcome
        .and_then(|o| o.choice().map(str::to_owned))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn settled_round_never_changes_its_outcome(case in choice_case()) {
        let spec = AlgorithmSpec::parse(case.name, &case.params).unwrap();
        let rule = ChoiceRule::for_spec(&spec).unwrap();
        let e = electorate(&case.expertise);
        let options = option_names(case.options);
        let n = case.ballots.len();
        let mut count = ChoiceCount::new(&options, &rule, &e);
        for k in 0..=n {
            if k > 0 {
                let (i, choice, confidence) = case.ballots[k - 1];
                count.add(choice.map(|c| options[c].as_str()), rule.weight(case.expertise[i], confidence));
            }
            let (prefix, rest) = case.ballots.split_at(k);
            let remaining_weight: f64 = rest.iter().map(|&(i, _, _)| rule.max_weight(case.expertise[i])).sum();
            if !count.settled(&rule, remaining_weight, rest.len()) {
                continue;
            }
            let at_prefix = count.decide(&rule, &mut ChaCha8Rng::seed_from_u64(case.seed)).outcome.and_then(|o| o.choice().map(str::to_owned));
            prop_assert_eq!(&at_prefix, &choice_decision(&case, &rule, &e, &options, prefix));

            // Completions: the generated rest, any part of it, and the adversarial ones
            // (everyone left votes one option at full weight, or abstains).
            let mut completions: Vec<Vec<(usize, Option<usize>, f64)>> = (0..=rest.len()).map(|m| rest[..m].to_vec()).collect();
            for target in (0..case.options).map(Some).chain([None]) {
                completions.push(rest.iter().map(|&(i, _, _)| (i, target, 1.0)).collect());
            }
            for completion in completions {
                let all: Vec<_> = prefix.iter().chain(&completion).copied().collect();
                let final_decision = choice_decision(&case, &rule, &e, &options, &all);
                prop_assert_eq!(
                    &at_prefix, &final_decision,
                    "{} {} settled after {} of {} ballots {:?}; completion {:?}",
                    case.name, case.params, k, n, prefix, completion
                );
            }
        }
    }
}
