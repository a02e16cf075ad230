//! Sealed-bid auctions.
//!
//! Every agent sends one `Bid`; nobody sees the others' bids before the round closes. The
//! best valid bid wins: the highest, or the lowest in a procurement auction (`lowest_wins`,
//! e.g. agents bidding the cost of doing a job).
//!
//! - Only `Bid` ballots from electorate members count; `Abstain` (and any other ballot) is no
//!   bid. Bids must be finite and non-negative.
//! - A `reserve` is the least acceptable bid (the most acceptable one with `lowest_wins`).
//!   A bid equal to the reserve meets it; bids that do not meet it cannot win and do not set
//!   the second price. They still appear in the round's record.
//! - Equal best bids: the agent whose id sorts first (byte order) wins. Sealed bids have no
//!   arrival order that would be fair to use, and the id order is the same on every replay.
//! - Price: `first_price` pays the winner's own bid. `second_price` (Vickrey) pays the best
//!   losing valid bid (equal to the winner's when the best bid is tied), or the reserve when
//!   no other bid is valid, or the winner's own bid when there is no reserve either. So the
//!   price never exceeds the winning bid (never falls below it with `lowest_wins`).

use mabeam_protocol::{result::RoundRecord, session::VoteValue, AgentId, Outcome};

use super::{TallyInput, TallyResult};
use crate::algorithm::{AuctionParams, Pricing};

const ALGORITHM: &str = "auction";

/// Runs the auction over `input.votes` (see the module documentation for the rules).
///
/// Undecided when no valid bid was received (none at all, or none meeting the reserve). The
/// single history record lists every bid received, agent id → bid.
pub fn sealed_bid(input: &TallyInput<'_>, params: &AuctionParams) -> TallyResult {
    let bids: Vec<(&AgentId, f64)> = input
        .votes
        .iter()
        .filter(|v| input.electorate.contains(&v.agent))
        .filter_map(|v| match v.value {
            VoteValue::Bid(b) if b.is_finite() && b >= 0.0 => Some((&v.agent, b)),
            _ => None,
        })
        .collect();
    let record = RoundRecord {
        round: 1,
        algorithm: ALGORITHM.to_owned(),
        counted: u32::try_from(bids.len()).unwrap_or(u32::MAX),
        tally: bids.iter().map(|(a, b)| (a.to_string(), *b)).collect(),
        ..RoundRecord::default()
    };

    let meets_reserve = |bid: f64| match params.reserve {
        None => true,
        Some(r) if params.lowest_wins => bid <= r,
        Some(r) => bid >= r,
    };
    // Best first: by bid (descending, or ascending with lowest_wins), then by agent id.
    let mut valid: Vec<(&AgentId, f64)> = bids
        .iter()
        .copied()
        .filter(|(_, b)| meets_reserve(*b))
        .collect();
    valid.sort_by(|(a1, b1), (a2, b2)| {
        let by_bid = if params.lowest_wins {
            b1.total_cmp(b2)
        } else {
            b2.total_cmp(b1)
        };
        by_bid.then_with(|| a1.cmp(a2))
    });

    let Some(&(winner, bid)) = valid.first() else {
        let reason = match (bids.is_empty(), params.reserve) {
            (true, _) | (false, None) => "no bids were received".to_owned(),
            (false, Some(r)) => format!(
                "none of the {} bids meets the reserve of {r} ({})",
                bids.len(),
                if params.lowest_wins {
                    "a ceiling: procurement auction"
                } else {
                    "a floor"
                }
            ),
        };
        return TallyResult::undecided(reason, vec![record]);
    };
    let price = match params.pricing {
        Pricing::FirstPrice => bid,
        Pricing::SecondPrice => valid
            .get(1)
            .map(|&(_, b)| b)
            .or(params.reserve)
            .unwrap_or(bid),
    };
    TallyResult::decided(
        Outcome::Award {
            winner: winner.clone(),
            bid,
            price,
        },
        vec![record],
    )
}

#[cfg(test)]
mod tests {
    use mabeam_protocol::AgentKeypair;

    use super::*;
    use crate::{tally::Vote, Electorate, Participant};

    fn electorate(ids: &[&str]) -> Electorate {
        let members = ids
            .iter()
            .enumerate()
            .map(|(i, id)| Participant {
                id: AgentId::new(*id).unwrap(),
                public_key: AgentKeypair::from_secret_bytes([i as u8; 32]).public_key(),
                expertise: 1.0,
                capabilities: Vec::new(),
            })
            .collect();
        Electorate::new(members).unwrap()
    }

    fn bid(agent: &str, value: VoteValue) -> Vote {
        Vote {
            agent: AgentId::new(agent).unwrap(),
            value,
            confidence: 1.0,
        }
    }

    fn run(
        bids: &[(&str, f64)],
        pricing: Pricing,
        reserve: Option<f64>,
        lowest_wins: bool,
    ) -> TallyResult {
        let ids: Vec<&str> = bids.iter().map(|(a, _)| *a).collect();
        let e = electorate(&ids);
        let votes: Vec<Vote> = bids
            .iter()
            .map(|(a, b)| bid(a, VoteValue::Bid(*b)))
            .collect();
        sealed_bid(
            &TallyInput {
                votes: &votes,
                options: &[],
                electorate: &e,
            },
            &AuctionParams {
                pricing,
                reserve,
                lowest_wins,
            },
        )
    }

    fn award(result: &TallyResult) -> (String, f64, f64) {
        match &result.outcome {
            Some(Outcome::Award { winner, bid, price }) => (winner.to_string(), *bid, *price),
            other => panic!("no award: {other:?} ({:?})", result.reason),
        }
    }

    #[test]
    fn second_price_pays_the_runner_up() {
        let result = run(
            &[("a", 10.0), ("b", 30.0), ("c", 20.0)],
            Pricing::SecondPrice,
            None,
            false,
        );
        assert_eq!(award(&result), ("b".into(), 30.0, 20.0));
        let record = &result.history[0];
        assert_eq!(record.counted, 3);
        assert_eq!(record.tally.get("a"), Some(&10.0));
    }

    #[test]
    fn first_price_pays_the_own_bid() {
        let result = run(
            &[("a", 10.0), ("b", 30.0)],
            Pricing::FirstPrice,
            None,
            false,
        );
        assert_eq!(award(&result), ("b".into(), 30.0, 30.0));
    }

    #[test]
    fn second_price_with_a_reserve() {
        // c's bid is below the reserve: it neither wins nor sets the price.
        let result = run(
            &[("a", 50.0), ("c", 10.0)],
            Pricing::SecondPrice,
            Some(25.0),
            false,
        );
        assert_eq!(award(&result), ("a".into(), 50.0, 25.0));
        let runner_up_above_reserve = run(
            &[("a", 50.0), ("b", 30.0), ("c", 10.0)],
            Pricing::SecondPrice,
            Some(25.0),
            false,
        );
        assert_eq!(award(&runner_up_above_reserve), ("a".into(), 50.0, 30.0));
    }

    #[test]
    fn lone_bid_without_reserve_pays_itself() {
        let result = run(&[("a", 7.0)], Pricing::SecondPrice, None, false);
        assert_eq!(award(&result), ("a".into(), 7.0, 7.0));
    }

    #[test]
    fn a_bid_equal_to_the_reserve_meets_it() {
        let result = run(&[("a", 25.0)], Pricing::SecondPrice, Some(25.0), false);
        assert_eq!(award(&result), ("a".into(), 25.0, 25.0));
    }

    #[test]
    fn nothing_meets_the_reserve() {
        let result = run(
            &[("a", 5.0), ("b", 6.0)],
            Pricing::SecondPrice,
            Some(25.0),
            false,
        );
        assert!(result.outcome.is_none());
        let reason = result.reason.unwrap();
        assert!(
            reason.contains("none of the 2 bids meets the reserve of 25"),
            "{reason}"
        );
        assert_eq!(result.history[0].tally.len(), 2);
    }

    #[test]
    fn procurement_auction_lowest_wins_under_the_ceiling() {
        // d's bid is over the ceiling; a wins with 10 and is paid the next lowest, 12.
        let result = run(
            &[("a", 10.0), ("b", 15.0), ("c", 12.0), ("d", 100.0)],
            Pricing::SecondPrice,
            Some(50.0),
            true,
        );
        assert_eq!(award(&result), ("a".into(), 10.0, 12.0));
        let alone = run(
            &[("a", 10.0), ("d", 100.0)],
            Pricing::SecondPrice,
            Some(50.0),
            true,
        );
        assert_eq!(award(&alone), ("a".into(), 10.0, 50.0));
        let first = run(&[("a", 10.0), ("b", 15.0)], Pricing::FirstPrice, None, true);
        assert_eq!(award(&first), ("a".into(), 10.0, 10.0));
    }

    #[test]
    fn tied_best_bids_go_to_the_first_id() {
        let result = run(
            &[("zed", 40.0), ("amy", 40.0), ("bob", 10.0)],
            Pricing::SecondPrice,
            None,
            false,
        );
        // The tied loser's bid is the second price.
        assert_eq!(award(&result), ("amy".into(), 40.0, 40.0));
    }

    #[test]
    fn abstentions_other_ballots_and_outsiders_are_no_bids() {
        let e = electorate(&["a", "b", "c"]);
        let votes = vec![
            bid("a", VoteValue::Abstain),
            bid("b", VoteValue::Choice("x".into())),
            bid("c", VoteValue::Bid(3.0)),
            bid("mallory", VoteValue::Bid(1000.0)),
        ];
        let result = sealed_bid(
            &TallyInput {
                votes: &votes,
                options: &[],
                electorate: &e,
            },
            &AuctionParams {
                pricing: Pricing::SecondPrice,
                reserve: None,
                lowest_wins: false,
            },
        );
        assert_eq!(award(&result), ("c".into(), 3.0, 3.0));
        assert_eq!(result.history[0].counted, 1);

        let none = sealed_bid(
            &TallyInput {
                votes: &votes[..2],
                options: &[],
                electorate: &e,
            },
            &AuctionParams {
                pricing: Pricing::SecondPrice,
                reserve: Some(1.0),
                lowest_wins: false,
            },
        );
        assert_eq!(none.reason.as_deref(), Some("no bids were received"));
    }
}
