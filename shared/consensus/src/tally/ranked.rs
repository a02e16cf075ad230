//! Ranked-choice voting, counted by instant runoff.
//!
//! Each agent ranks the options, most preferred first. Every round counts each ballot for its
//! highest-ranked option still in the race (a *continuing* option). An option holding
//! strictly more than half of the ballots counted in a round wins; otherwise the weakest
//! option is eliminated and its ballots move to their next continuing preference.
//!
//! Ballots:
//! - `Ranking(r)`: `r` in order of preference. Entries that are not options, and repeats of
//!   an entry already ranked, are skipped (`check_ballot` refuses such ballots beforehand).
//! - `Choice(c)`: a ranking of the single option `c`.
//! - `Abstain`, and any ballot naming no option at all: counts towards participation only.
//!
//! Ballots from agents outside the electorate are ignored. Every ballot counts once, with
//! equal weight (expertise and confidence play no part); callers pass one ballot per agent.
//!
//! A ballot whose ranked options have all been eliminated is *exhausted*: it no longer counts,
//! and a majority is measured against the continuing (non-exhausted) ballots only.
//!
//! # Elimination order
//!
//! Options nobody ranks first in a round (zero votes) are eliminated together in one round:
//! eliminating them one at a time would move no ballot and end in the same place. Otherwise
//! the option with the fewest votes is eliminated. A tie for fewest is broken
//! deterministically:
//! 1. backwards through the earlier rounds: the tied option with fewer votes in the most
//!    recent round where the tied options' counts differ is eliminated (when more than two are
//!    tied, each earlier round keeps only the options with the fewest votes in it, until one
//!    is left);
//! 2. if they were tied in every round, the tied option that sorts last in byte order is
//!    eliminated (mirroring the lexicographic tie-break of the other tallies, under which the
//!    first option in byte order wins).

use std::collections::{BTreeMap, BTreeSet};

use mabeam_protocol::{result::RoundRecord, session::VoteValue, Outcome};

use super::{BallotError, TallyInput, TallyResult, EPSILON};
use crate::algorithm::RankedParams;

const ALGORITHM: &str = "ranked_choice";

/// Checks a `Ranking` ballot: non-empty, every entry one of `options`, no entry twice.
pub fn check_ranking(ranking: &[String], options: &[String]) -> Result<(), BallotError> {
    if ranking.is_empty() {
        return Err(BallotError(
            "the ranking is empty; rank at least one option (or abstain)".to_owned(),
        ));
    }
    let mut seen = BTreeSet::new();
    for entry in ranking {
        if !options.iter().any(|o| o == entry) {
            return Err(BallotError(format!(
                "{entry:?} is not one of the options ({})",
                options.join(", ")
            )));
        }
        if !seen.insert(entry.as_str()) {
            return Err(BallotError(format!("{entry:?} is ranked more than once")));
        }
    }
    Ok(())
}

/// Runs instant runoff over `input.votes` (see the module documentation for the rules).
///
/// Undecided when fewer than `min_participation` of the electorate sent a ballot (any ballot,
/// abstentions included; the share is rounded up to whole ballots), when no ballot ranks any
/// option, or when every ballot is exhausted. `history` holds one record per round: the
/// continuing ballots counted, each continuing option's votes, the options eliminated at the
/// end of the round and the exhausted ballots so far. The outcome's `support` is the winner's
/// share of the ballots counted in the final round, and its `tally` that round's counts.
pub fn instant_runoff(input: &TallyInput<'_>, params: &RankedParams) -> TallyResult {
    let options: BTreeSet<&str> = input.options.iter().map(String::as_str).collect();
    let mut received = 0usize;
    let mut ballots: Vec<Vec<&str>> = Vec::new();
    for vote in input.votes {
        if !input.electorate.contains(&vote.agent) {
            continue;
        }
        received += 1;
        let ranked: Vec<&str> = match &vote.value {
            VoteValue::Ranking(r) => r.iter().map(String::as_str).collect(),
            VoteValue::Choice(c) => vec![c.as_str()],
            _ => Vec::new(),
        };
        let mut seen = BTreeSet::new();
        let preferences: Vec<&str> = ranked
            .into_iter()
            .filter(|o| options.contains(o) && seen.insert(*o))
            .collect();
        if !preferences.is_empty() {
            ballots.push(preferences);
        }
    }

    let n = input.electorate.len();
    let needed = needed_ballots(params.min_participation, n);
    if received < needed {
        return TallyResult::undecided(
            format!("{received} of {n} agents voted; min_participation needs {needed}"),
            Vec::new(),
        );
    }
    if ballots.is_empty() {
        return TallyResult::undecided("no ballot ranks any option", Vec::new());
    }

    let mut continuing = options;
    let mut history: Vec<RoundRecord> = Vec::new();
    // Per round, the counts of the options continuing in it (for the elimination tie-break).
    let mut past_counts: Vec<BTreeMap<&str, usize>> = Vec::new();
    loop {
        let round = history.len() + 1;
        let mut counts: BTreeMap<&str, usize> = continuing.iter().map(|&o| (o, 0)).collect();
        let mut exhausted = 0usize;
        for ballot in &ballots {
            match ballot.iter().find(|o| continuing.contains(*o)) {
                Some(top) => {
                    if let Some(c) = counts.get_mut(top) {
                        *c += 1;
                    }
                }
                None => exhausted += 1,
            }
        }
        let counted = ballots.len() - exhausted;
        let mut record = RoundRecord {
            round: to_u32(round),
            algorithm: ALGORITHM.to_owned(),
            counted: to_u32(counted),
            tally: counts
                .iter()
                .map(|(&o, &c)| (o.to_owned(), c as f64))
                .collect(),
            exhausted: to_u32(exhausted),
            ..RoundRecord::default()
        };
        if counted == 0 {
            history.push(record);
            return TallyResult::undecided(
                format!("every ballot is exhausted after {} rounds", round - 1),
                history,
            );
        }

        let leader = counts
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(&o, &c)| (o, c));
        if let Some((winner, votes)) = leader {
            if 2 * votes > counted || continuing.len() == 1 {
                let tally = record.tally.clone();
                history.push(record);
                return TallyResult::decided(
                    Outcome::Choice {
                        choice: winner.to_owned(),
                        support: votes as f64 / counted as f64,
                        tally,
                    },
                    history,
                );
            }
        }

        let eliminated = to_eliminate(&counts, &past_counts);
        for o in &eliminated {
            continuing.remove(o);
        }
        record.eliminated = eliminated.iter().map(|&o| o.to_owned()).collect();
        history.push(record);
        past_counts.push(counts);
    }
}

/// The options eliminated at the end of a round without a majority: every zero-vote option,
/// or else the single weakest one after the tie-break.
fn to_eliminate<'a>(
    counts: &BTreeMap<&'a str, usize>,
    past_counts: &[BTreeMap<&'a str, usize>],
) -> Vec<&'a str> {
    let zero: Vec<&str> = counts
        .iter()
        .filter(|(_, &c)| c == 0)
        .map(|(&o, _)| o)
        .collect();
    if !zero.is_empty() {
        return zero;
    }
    let fewest = counts.values().copied().min().unwrap_or(0);
    let mut tied: Vec<&str> = counts
        .iter()
        .filter(|(_, &c)| c == fewest)
        .map(|(&o, _)| o)
        .collect();
    for earlier in past_counts.iter().rev() {
        if tied.len() <= 1 {
            break;
        }
        let count_of = |o: &str| earlier.get(o).copied().unwrap_or(0);
        let min = tied.iter().map(|o| count_of(o)).min().unwrap_or(0);
        tied.retain(|o| count_of(o) == min);
    }
    // `tied` is in byte order (it comes from a BTreeMap), so the last sorts last.
    tied.last().map(|&o| vec![o]).unwrap_or_default()
}

/// Ballots needed for `min_participation` of `n` agents, as the choice tallies count it.
fn needed_ballots(min_participation: f64, n: usize) -> usize {
    let needed = (min_participation * n as f64 - EPSILON).ceil();
    if needed.is_finite() && needed > 0.0 {
        needed as usize
    } else {
        0
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use mabeam_protocol::{AgentId, AgentKeypair};

    use super::*;
    use crate::{tally::Vote, Electorate, Participant};

    fn electorate(n: usize) -> Electorate {
        let members = (0..n)
            .map(|i| Participant {
                id: AgentId::new(format!("agent-{i:02}")).unwrap(),
                public_key: AgentKeypair::from_secret_bytes([i as u8; 32]).public_key(),
                expertise: 1.0,
                capabilities: Vec::new(),
            })
            .collect();
        Electorate::new(members).unwrap()
    }

    fn options(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    /// One ballot per agent, in electorate order.
    fn ranking_votes(rankings: &[&[&str]]) -> Vec<Vote> {
        rankings
            .iter()
            .enumerate()
            .map(|(i, r)| Vote {
                agent: AgentId::new(format!("agent-{i:02}")).unwrap(),
                value: if r.is_empty() {
                    VoteValue::Abstain
                } else {
                    VoteValue::Ranking(options(r))
                },
                confidence: 1.0,
            })
            .collect()
    }

    fn run(opts: &[&str], rankings: &[&[&str]], min_participation: f64) -> TallyResult {
        let e = electorate(rankings.len());
        let votes = ranking_votes(rankings);
        let options = options(opts);
        instant_runoff(
            &TallyInput {
                votes: &votes,
                options: &options,
                electorate: &e,
            },
            &RankedParams { min_participation },
        )
    }

    fn repeat<'a>(n: usize, r: &'a [&'a str]) -> Vec<&'a [&'a str]> {
        vec![r; n]
    }

    #[test]
    fn rankings_are_checked() {
        let opts = options(&["a", "b", "c"]);
        assert!(check_ranking(&options(&["b", "a"]), &opts).is_ok());
        let empty = check_ranking(&[], &opts).unwrap_err();
        assert!(empty.0.contains("empty"), "{empty}");
        let unknown = check_ranking(&options(&["a", "z"]), &opts).unwrap_err();
        assert!(
            unknown.0.contains("\"z\" is not one of the options"),
            "{unknown}"
        );
        let twice = check_ranking(&options(&["a", "b", "a"]), &opts).unwrap_err();
        assert!(
            twice.0.contains("\"a\" is ranked more than once"),
            "{twice}"
        );
    }

    #[test]
    fn plurality_leader_loses_after_transfers() {
        // a leads on first preferences (8 of 21) but the b and c voters prefer each other.
        let mut rankings = repeat(8, &["a", "b", "c"]);
        rankings.extend(repeat(7, &["b", "c", "a"]));
        rankings.extend(repeat(6, &["c", "b", "a"]));
        let result = run(&["a", "b", "c"], &rankings, 0.5);
        let Some(Outcome::Choice {
            choice,
            support,
            tally,
        }) = &result.outcome
        else {
            panic!("no decision: {result:?}");
        };
        assert_eq!(choice, "b");
        assert!((support - 13.0 / 21.0).abs() < 1e-12);
        assert_eq!(tally.get("b"), Some(&13.0));
        assert_eq!(result.history.len(), 2);
        let first = &result.history[0];
        assert_eq!(first.round, 1);
        assert_eq!(first.algorithm, "ranked_choice");
        assert_eq!(first.counted, 21);
        assert_eq!(first.tally.get("a"), Some(&8.0));
        assert_eq!(first.eliminated, vec!["c".to_owned()]);
        assert_eq!(result.history[1].tally.len(), 2);
        assert!(result.history[1].eliminated.is_empty());
    }

    #[test]
    fn majority_of_first_preferences_wins_in_round_one() {
        let mut rankings = repeat(3, &["b"]);
        rankings.extend(repeat(2, &["a", "b"]));
        let result = run(&["a", "b"], &rankings, 0.5);
        assert_eq!(result.outcome.as_ref().and_then(|o| o.choice()), Some("b"));
        assert_eq!(result.history.len(), 1);
    }

    #[test]
    fn exhausted_ballots_leave_the_count() {
        // Round 1: a 3, b 2, c 2, d 0 -> d out (zero). Round 2: tie b/c at 2, never differed
        // -> c (sorts last) out; its two ballots rank nothing else: exhausted. Round 3: a 3 of
        // 5 continuing ballots wins with 3/5 although 3 of 7 is no majority.
        let mut rankings = repeat(3, &["a"]);
        rankings.extend(repeat(2, &["b"]));
        rankings.extend(repeat(2, &["c"]));
        let result = run(&["a", "b", "c", "d"], &rankings, 0.5);
        assert_eq!(result.outcome.as_ref().and_then(|o| o.choice()), Some("a"));
        let rounds: Vec<(u32, u32, Vec<String>)> = result
            .history
            .iter()
            .map(|r| (r.counted, r.exhausted, r.eliminated.clone()))
            .collect();
        assert_eq!(
            rounds,
            vec![
                (7, 0, vec!["d".to_owned()]),
                (7, 0, vec!["c".to_owned()]),
                (5, 2, vec![]),
            ]
        );
        let Some(Outcome::Choice { support, .. }) = result.outcome else {
            unreachable!()
        };
        assert!((support - 0.6).abs() < 1e-12);
    }

    #[test]
    fn all_zero_vote_options_go_in_one_round() {
        let mut rankings = repeat(2, &["a", "c"]);
        rankings.extend(repeat(2, &["b", "d"]));
        rankings.push(&["e", "c"]);
        let result = run(&["a", "b", "c", "d", "e"], &rankings, 0.5);
        assert_eq!(
            result.history[0].eliminated,
            vec!["c".to_owned(), "d".to_owned()]
        );
        // Round 2: a 2, b 2, e 1 -> e out, its ballot moves to... c, which is gone: exhausted.
        assert_eq!(result.history[1].eliminated, vec!["e".to_owned()]);
        assert_eq!(result.history[2].exhausted, 1);
        // Round 3: a 2, b 2 with identical history -> b (sorts last) out; a wins.
        assert_eq!(result.history[2].eliminated, vec!["b".to_owned()]);
        assert_eq!(result.outcome.as_ref().and_then(|o| o.choice()), Some("a"));
    }

    #[test]
    fn earlier_rounds_beat_byte_order_in_the_tie_break() {
        // Round 1: a 4, c 3, b 2, d 1 -> d out; its ballot goes to b.
        // Round 2: a 4, b 3, c 3 -> tied; byte order would eliminate c, but b had fewer votes
        // in round 1, so b goes; its ballots move to c, which wins 6 to 4.
        let mut rankings = repeat(4, &["a"]);
        rankings.extend(repeat(3, &["c", "a"]));
        rankings.extend(repeat(2, &["b", "c"]));
        rankings.push(&["d", "b", "c"]);
        let result = run(&["a", "b", "c", "d"], &rankings, 0.5);
        assert_eq!(result.history[0].eliminated, vec!["d".to_owned()]);
        assert_eq!(result.history[1].tally.get("b"), Some(&3.0));
        assert_eq!(result.history[1].tally.get("c"), Some(&3.0));
        assert_eq!(result.history[1].eliminated, vec!["b".to_owned()]);
        assert_eq!(result.outcome.as_ref().and_then(|o| o.choice()), Some("c"));
    }

    #[test]
    fn a_tie_in_every_round_eliminates_the_last_in_byte_order() {
        let mut rankings = repeat(3, &["a"]);
        rankings.extend(repeat(2, &["x", "a"]));
        rankings.extend(repeat(2, &["m", "x"]));
        let result = run(&["a", "m", "x"], &rankings, 0.5);
        assert_eq!(result.history[0].eliminated, vec!["x".to_owned()]);
        assert_eq!(result.outcome.as_ref().and_then(|o| o.choice()), Some("a"));
    }

    #[test]
    fn abstentions_count_for_participation_only() {
        let rankings: Vec<&[&str]> = vec![&["a"], &[], &[], &["b", "a"], &["a"]];
        let result = run(&["a", "b"], &rankings, 1.0);
        assert_eq!(result.outcome.as_ref().and_then(|o| o.choice()), Some("a"));
        assert_eq!(result.history[0].counted, 3);
    }

    #[test]
    fn too_few_ballots_is_no_decision() {
        let e = electorate(5);
        let votes = ranking_votes(&[&["a"], &["a"]]);
        let result = instant_runoff(
            &TallyInput {
                votes: &votes,
                options: &options(&["a", "b"]),
                electorate: &e,
            },
            &RankedParams {
                min_participation: 0.5,
            },
        );
        assert!(result.outcome.is_none());
        let reason = result.reason.unwrap();
        assert!(reason.contains("2 of 5 agents voted"), "{reason}");
        assert!(reason.contains("needs 3"), "{reason}");
    }

    #[test]
    fn outsiders_are_ignored_and_choices_are_one_entry_rankings() {
        let e = electorate(3);
        let mut votes = ranking_votes(&[&["b", "a"], &["a"]]);
        votes.push(Vote {
            agent: AgentId::new("agent-02").unwrap(),
            value: VoteValue::Choice("a".into()),
            confidence: 0.1,
        });
        for _ in 0..5 {
            votes.push(Vote {
                agent: AgentId::new("intruder").unwrap(),
                value: VoteValue::Choice("b".into()),
                confidence: 1.0,
            });
        }
        let result = instant_runoff(
            &TallyInput {
                votes: &votes,
                options: &options(&["a", "b"]),
                electorate: &e,
            },
            &RankedParams {
                min_participation: 1.0,
            },
        );
        assert_eq!(result.outcome.as_ref().and_then(|o| o.choice()), Some("a"));
        assert_eq!(result.history[0].counted, 3);
    }

    #[test]
    fn only_abstentions_is_no_decision() {
        let result = run(&["a", "b"], &[&[], &[]], 0.5);
        assert!(result.outcome.is_none());
        assert!(result.reason.unwrap().contains("no ballot ranks"));
    }

    #[test]
    fn the_last_continuing_option_wins() {
        // a 1, b 1: no majority (1 of 2 is not more than half); b goes; a wins with 1 of 1.
        let result = run(&["a", "b"], &[&["a"], &["b"]], 0.5);
        assert_eq!(result.outcome.as_ref().and_then(|o| o.choice()), Some("a"));
        assert_eq!(result.history.len(), 2);
        assert_eq!(result.history[1].exhausted, 1);
    }
}
