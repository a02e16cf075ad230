//! Leader election among the agents of the electorate.
//!
//! Only *responsive* agents can be elected: electorate members that sent a ballot in this
//! round, of any kind (an abstention shows an agent is alive as well as a vote does). A leader
//! that does not answer would stall whatever it was elected to lead, so an agent that stayed
//! silent is never elected, whatever the votes say.
//!
//! Methods:
//! - `vote`: plurality of `Choice(candidate)` ballots from electorate members, where the
//!   candidate is a responsive agent; votes for silent agents (and for anything that is not
//!   an agent id) do not count. Each ballot counts once (expertise and confidence play no
//!   part). When no vote counts, the election falls back to `highest_expertise` and says so
//!   in the record's `note`.
//! - `highest_expertise`: the responsive agent with the highest expertise in the electorate.
//! - `random`: a seeded draw among the responsive agents, sorted by id.
//!
//! Ties (most votes, or highest expertise within `1e-9`) follow `tie_break`: `lexicographic`
//! elects the id that sorts first; `random` draws among the tied ids sorted by id. `none` is
//! refused when the task is parsed (an election must elect); should it reach the tally
//! anyway, it acts as `lexicographic`.

use std::collections::{BTreeMap, BTreeSet};

use mabeam_protocol::{result::RoundRecord, session::VoteValue, AgentId, Outcome};

use super::{draw, TallyInput, TallyResult, EPSILON};
use crate::algorithm::{ElectionMethod, LeaderParams, TieBreak};

const ALGORITHM: &str = "leader_election";

/// Elects a leader from `input.votes` (see the module documentation for the rules).
///
/// Undecided only when no electorate member answered. The single history record counts the
/// ballots of responsive agents; its `tally` holds the counted votes per candidate (`vote`),
/// the responsive agents' expertise (`highest_expertise`, also after a fallback), or nothing
/// (`random`).
pub fn elect<R: rand::RngCore>(
    input: &TallyInput<'_>,
    params: &LeaderParams,
    rng: &mut R,
) -> TallyResult {
    let ballots: Vec<&super::Vote> = input
        .votes
        .iter()
        .filter(|v| input.electorate.contains(&v.agent))
        .collect();
    let responsive: BTreeSet<&AgentId> = ballots.iter().map(|v| &v.agent).collect();
    let mut record = RoundRecord {
        round: 1,
        algorithm: ALGORITHM.to_owned(),
        counted: u32::try_from(ballots.len()).unwrap_or(u32::MAX),
        ..RoundRecord::default()
    };
    if responsive.is_empty() {
        return TallyResult::undecided("no agent of the electorate answered", vec![record]);
    }

    let leader = match params.method {
        ElectionMethod::Vote => {
            let mut votes: BTreeMap<&AgentId, usize> = BTreeMap::new();
            let mut ignored = 0usize;
            for ballot in &ballots {
                let VoteValue::Choice(candidate) = &ballot.value else {
                    continue;
                };
                let known = candidate
                    .parse::<AgentId>()
                    .ok()
                    .and_then(|c| responsive.get(&c).copied());
                match known {
                    Some(id) => *votes.entry(id).or_default() += 1,
                    None => ignored += 1,
                }
            }
            record.tally = votes
                .iter()
                .map(|(id, &n)| (id.to_string(), n as f64))
                .collect();
            if ignored > 0 {
                record.note = Some(format!(
                    "{ignored} vote(s) for agents that did not answer were not counted"
                ));
            }
            let most = votes.values().copied().max().unwrap_or(0);
            if most == 0 {
                let note = "no vote named an agent that answered; elected by highest expertise";
                record.note = Some(match record.note.take() {
                    Some(earlier) => format!("{earlier}; {note}"),
                    None => note.to_owned(),
                });
                highest_expertise(input, &responsive, params.tie_break, &mut record, rng)
            } else {
                let tied: Vec<&AgentId> = votes
                    .iter()
                    .filter(|(_, &n)| n == most)
                    .map(|(&id, _)| id)
                    .collect();
                break_tie(&tied, params.tie_break, rng)
            }
        }
        ElectionMethod::HighestExpertise => {
            highest_expertise(input, &responsive, params.tie_break, &mut record, rng)
        }
        ElectionMethod::Random => {
            let sorted: Vec<&AgentId> = responsive.iter().copied().collect();
            draw(&sorted, rng).copied()
        }
    };
    match leader {
        Some(leader) => TallyResult::decided(
            Outcome::Leader {
                leader: leader.clone(),
            },
            vec![record],
        ),
        None => TallyResult::undecided("no agent of the electorate answered", vec![record]),
    }
}

/// The responsive agent with the highest expertise; records every responsive agent's
/// expertise in the tally.
fn highest_expertise<'a, R: rand::RngCore>(
    input: &TallyInput<'_>,
    responsive: &BTreeSet<&'a AgentId>,
    tie_break: TieBreak,
    record: &mut RoundRecord,
    rng: &mut R,
) -> Option<&'a AgentId> {
    let expertise: Vec<(&AgentId, f64)> = responsive
        .iter()
        .filter_map(|&id| input.electorate.get(id).map(|p| (id, p.expertise)))
        .collect();
    record.tally = expertise
        .iter()
        .map(|(id, e)| (id.to_string(), *e))
        .collect();
    let best = expertise
        .iter()
        .map(|&(_, e)| e)
        .fold(f64::NEG_INFINITY, f64::max);
    let tied: Vec<&AgentId> = expertise
        .iter()
        .filter(|&&(_, e)| best - e <= EPSILON)
        .map(|&(id, _)| id)
        .collect();
    break_tie(&tied, tie_break, rng)
}

/// `tied` is sorted by id.
fn break_tie<'a, R: rand::RngCore>(
    tied: &[&'a AgentId],
    tie_break: TieBreak,
    rng: &mut R,
) -> Option<&'a AgentId> {
    match tie_break {
        TieBreak::Random if tied.len() > 1 => draw(tied, rng).copied(),
        _ => tied.first().copied(),
    }
}

#[cfg(test)]
mod tests {
    use mabeam_protocol::AgentKeypair;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::{tally::Vote, Electorate, Participant};

    fn electorate(members: &[(&str, f64)]) -> Electorate {
        let members = members
            .iter()
            .enumerate()
            .map(|(i, (id, expertise))| Participant {
                id: AgentId::new(*id).unwrap(),
                public_key: AgentKeypair::from_secret_bytes([i as u8; 32]).public_key(),
                expertise: *expertise,
                capabilities: Vec::new(),
            })
            .collect();
        Electorate::new(members).unwrap()
    }

    fn vote(agent: &str, candidate: Option<&str>) -> Vote {
        Vote {
            agent: AgentId::new(agent).unwrap(),
            value: candidate.map_or(VoteValue::Abstain, |c| VoteValue::Choice(c.into())),
            confidence: 1.0,
        }
    }

    fn run(
        e: &Electorate,
        votes: &[Vote],
        method: ElectionMethod,
        tie_break: TieBreak,
        seed: u64,
    ) -> TallyResult {
        elect(
            &TallyInput {
                votes,
                options: &[],
                electorate: e,
            },
            &LeaderParams { method, tie_break },
            &mut ChaCha8Rng::seed_from_u64(seed),
        )
    }

    fn leader(result: &TallyResult) -> String {
        match &result.outcome {
            Some(Outcome::Leader { leader }) => leader.to_string(),
            other => panic!("no leader: {other:?} ({:?})", result.reason),
        }
    }

    fn five() -> Electorate {
        electorate(&[("a", 1.0), ("b", 2.0), ("c", 3.0), ("d", 1.0), ("e", 3.0)])
    }

    #[test]
    fn plurality_of_votes_elects() {
        let votes = [
            vote("a", Some("b")),
            vote("b", Some("b")),
            vote("c", Some("a")),
            vote("d", None),
        ];
        let result = run(
            &five(),
            &votes,
            ElectionMethod::Vote,
            TieBreak::Lexicographic,
            0,
        );
        assert_eq!(leader(&result), "b");
        let record = &result.history[0];
        assert_eq!(record.counted, 4);
        assert_eq!(record.tally.get("b"), Some(&2.0));
        assert_eq!(record.tally.get("a"), Some(&1.0));
        assert!(record.note.is_none());
    }

    #[test]
    fn a_vote_for_a_silent_agent_is_ignored() {
        // e would win 3 to 1, but e sent nothing: it cannot lead.
        let votes = [
            vote("a", Some("e")),
            vote("b", Some("e")),
            vote("c", Some("e")),
            vote("d", Some("a")),
        ];
        let result = run(
            &five(),
            &votes,
            ElectionMethod::Vote,
            TieBreak::Lexicographic,
            0,
        );
        assert_eq!(leader(&result), "a");
        assert!(!result.history[0].tally.contains_key("e"));
        let note = result.history[0].note.as_deref().unwrap();
        assert!(note.contains("3 vote(s)"), "{note}");
    }

    #[test]
    fn without_countable_votes_highest_expertise_decides() {
        let votes = [
            vote("a", Some("e")),
            vote("b", None),
            vote("c", Some("nobody")),
        ];
        let result = run(
            &five(),
            &votes,
            ElectionMethod::Vote,
            TieBreak::Lexicographic,
            0,
        );
        assert_eq!(leader(&result), "c");
        let note = result.history[0].note.as_deref().unwrap();
        assert!(note.contains("elected by highest expertise"), "{note}");
        assert_eq!(result.history[0].tally.get("c"), Some(&3.0));
    }

    #[test]
    fn vote_ties_follow_the_tie_break() {
        let votes = [
            vote("a", Some("d")),
            vote("b", Some("b")),
            vote("c", None),
            vote("d", None),
        ];
        let e = five();
        let lexicographic = run(&e, &votes, ElectionMethod::Vote, TieBreak::Lexicographic, 0);
        assert_eq!(leader(&lexicographic), "b");
        let mut drawn = BTreeSet::new();
        for seed in 0..64 {
            let result = run(&e, &votes, ElectionMethod::Vote, TieBreak::Random, seed);
            // The same seed draws the same leader.
            assert_eq!(
                result,
                run(&e, &votes, ElectionMethod::Vote, TieBreak::Random, seed)
            );
            drawn.insert(leader(&result));
        }
        assert_eq!(drawn, BTreeSet::from(["b".to_owned(), "d".to_owned()]));
    }

    #[test]
    fn highest_expertise_among_the_responsive() {
        let e = five();
        // c and e share the highest expertise; e is silent.
        let votes = [vote("a", None), vote("b", None), vote("e", None)];
        let result = run(
            &e,
            &votes,
            ElectionMethod::HighestExpertise,
            TieBreak::Lexicographic,
            0,
        );
        assert_eq!(leader(&result), "e");
        let both = [vote("c", None), vote("e", None)];
        let tied = run(
            &e,
            &both,
            ElectionMethod::HighestExpertise,
            TieBreak::Lexicographic,
            0,
        );
        assert_eq!(leader(&tied), "c");
    }

    #[test]
    fn random_draws_among_responsive_agents_only() {
        let e = five();
        let votes = [vote("b", None), vote("d", Some("a"))];
        let mut drawn = BTreeSet::new();
        for seed in 0..64 {
            drawn.insert(leader(&run(
                &e,
                &votes,
                ElectionMethod::Random,
                TieBreak::Lexicographic,
                seed,
            )));
        }
        assert_eq!(drawn, BTreeSet::from(["b".to_owned(), "d".to_owned()]));
    }

    #[test]
    fn nobody_answering_is_no_decision() {
        let e = five();
        let outsider = [vote("zz", Some("a"))];
        for method in [
            ElectionMethod::Vote,
            ElectionMethod::HighestExpertise,
            ElectionMethod::Random,
        ] {
            let result = run(&e, &outsider, method, TieBreak::Lexicographic, 0);
            assert!(result.outcome.is_none());
            assert!(result.reason.unwrap().contains("no agent"));
        }
    }
}
