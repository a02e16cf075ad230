//! Majority, supermajority, unanimous, plurality and weighted voting over a set of options.
//!
//! All five are one rule: count each ballot's weight for its option, take the leader, and
//! check the leader's share of the basis against a threshold:
//!
//! | algorithm     | weight                           | threshold            |
//! |---------------|----------------------------------|----------------------|
//! | majority      | 1                                | share > 1/2          |
//! | supermajority | 1                                | share >= threshold   |
//! | unanimous     | 1                                | share = 1            |
//! | plurality     | 1                                | none (largest wins)  |
//! | weighted      | expertise × confidence (or expertise) | share > threshold (>= with `inclusive`) |
//!
//! The basis is the cast weight or the whole electorate's weight (`basis`). Abstentions count
//! towards participation but not towards the basis. With `min_votes`, the winner also needs
//! that many ballots of its own, whatever their weight ("at least two analysts agree").

use std::collections::BTreeMap;

use mabeam_protocol::{result::RoundRecord, session::VoteValue, Outcome};

use super::{draw, TallyInput, TallyResult, Vote, EPSILON};
use crate::{
    algorithm::{AlgorithmSpec, Basis, OnTie, TieBreak},
    Electorate,
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub share: f64,
    pub inclusive: bool,
}

impl Threshold {
    fn passes(self, share: f64) -> bool {
        if self.inclusive {
            share >= self.share - EPSILON
        } else {
            share > self.share + EPSILON
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weighting {
    Equal,
    Expertise,
    ExpertiseTimesConfidence,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceRule {
    pub algorithm: &'static str,
    pub threshold: Option<Threshold>,
    pub basis: Basis,
    pub min_participation: f64,
    pub min_votes: usize,
    pub tie_break: TieBreak,
    pub on_tie: OnTie,
    pub weighting: Weighting,
}

impl ChoiceRule {
    pub fn for_spec(spec: &AlgorithmSpec) -> Option<Self> {
        let rule = |threshold, c: &crate::algorithm::ChoiceParams| Self {
            algorithm: spec.name(),
            threshold,
            basis: c.basis,
            min_participation: c.min_participation,
            min_votes: c.min_votes as usize,
            tie_break: c.tie_break,
            on_tie: c.on_tie.clone(),
            weighting: Weighting::Equal,
        };
        Some(match spec {
            AlgorithmSpec::Majority(c) => rule(
                Some(Threshold {
                    share: 0.5,
                    inclusive: false,
                }),
                c,
            ),
            AlgorithmSpec::Unanimous(c) => rule(
                Some(Threshold {
                    share: 1.0,
                    inclusive: true,
                }),
                c,
            ),
            AlgorithmSpec::Plurality(c) => rule(None, c),
            AlgorithmSpec::Supermajority(p) => Self {
                algorithm: spec.name(),
                threshold: Some(Threshold {
                    share: p.threshold,
                    inclusive: true,
                }),
                basis: p.basis,
                min_participation: p.min_participation,
                min_votes: p.min_votes as usize,
                tie_break: p.tie_break,
                on_tie: p.on_tie.clone(),
                weighting: Weighting::Equal,
            },
            AlgorithmSpec::Weighted(p) => Self {
                algorithm: spec.name(),
                threshold: Some(Threshold {
                    share: p.threshold,
                    inclusive: p.inclusive,
                }),
                basis: p.basis,
                min_participation: p.min_participation,
                min_votes: p.min_votes as usize,
                tie_break: p.tie_break,
                on_tie: p.on_tie.clone(),
                weighting: if p.use_confidence {
                    Weighting::ExpertiseTimesConfidence
                } else {
                    Weighting::Expertise
                },
            },
            _ => return None,
        })
    }

    /// The weight one ballot carries.
    pub fn weight(&self, expertise: f64, confidence: f64) -> f64 {
        match self.weighting {
            Weighting::Equal => 1.0,
            Weighting::Expertise => expertise,
            // NaN confidence counts as 0 (clamp would keep it NaN).
            Weighting::ExpertiseTimesConfidence if confidence.is_nan() => 0.0,
            Weighting::ExpertiseTimesConfidence => expertise * confidence.clamp(0.0, 1.0),
        }
    }

    /// The most weight an agent who has not voted yet could add.
    pub fn max_weight(&self, expertise: f64) -> f64 {
        self.weight(expertise, 1.0)
    }
}

/// Running totals of one round; sessions add ballots as they arrive and ask whether the
/// outcome is already certain, so a round can close before its deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceCount {
    totals: BTreeMap<String, f64>,
    /// Ballots per option, whatever their weight (for `min_votes`).
    votes: BTreeMap<String, usize>,
    cast_weight: f64,
    /// Ballots received, abstentions included (participation).
    ballots: usize,
    eligible_weight: f64,
    eligible_count: usize,
    /// The rule's `min_votes`, capped at this round's electorate.
    min_votes: usize,
}

impl ChoiceCount {
    pub fn new(options: &[String], rule: &ChoiceRule, electorate: &Electorate) -> Self {
        Self {
            totals: options.iter().map(|o| (o.clone(), 0.0)).collect(),
            votes: options.iter().map(|o| (o.clone(), 0)).collect(),
            cast_weight: 0.0,
            ballots: 0,
            eligible_weight: electorate
                .iter()
                .map(|p| rule.max_weight(p.expertise))
                .sum(),
            eligible_count: electorate.len(),
            min_votes: rule.min_votes.min(electorate.len()),
        }
    }

    /// Counts a ballot; `None` is an abstention. Unknown options are ignored (callers check
    /// ballots with `check_ballot` first).
    pub fn add(&mut self, choice: Option<&str>, weight: f64) {
        self.ballots += 1;
        if let Some(total) = choice.and_then(|c| self.totals.get_mut(c)) {
            *total += weight;
            self.cast_weight += weight;
        }
        if let Some(votes) = choice.and_then(|c| self.votes.get_mut(c)) {
            *votes += 1;
        }
    }

    fn votes_for(&self, option: &str) -> usize {
        self.votes.get(option).copied().unwrap_or(0)
    }

    /// Ballots for the option with the most weight (the first such, when tied).
    fn leader_votes(&self) -> usize {
        let mut leader: Option<(&str, f64)> = None;
        for (option, &total) in &self.totals {
            if leader.is_none_or(|(_, best)| total > best) {
                leader = Some((option, total));
            }
        }
        leader.map_or(0, |(option, _)| self.votes_for(option))
    }

    fn needed_ballots(&self, rule: &ChoiceRule) -> usize {
        ((rule.min_participation * self.eligible_count as f64) - EPSILON)
            .ceil()
            .max(0.0) as usize
    }

    fn base(&self, rule: &ChoiceRule, extra_cast: f64) -> f64 {
        match rule.basis {
            Basis::Cast => self.cast_weight + extra_cast,
            Basis::Eligible => self.eligible_weight,
        }
    }

    /// Leader, runner-up totals (ties resolved later).
    fn top_two(&self) -> (f64, f64) {
        let mut first = 0.0f64;
        let mut second = 0.0f64;
        for &t in self.totals.values() {
            if t > first {
                second = first;
                first = t;
            } else if t > second {
                second = t;
            }
        }
        (first, second)
    }

    /// True when no ballots still to come (at most `remaining_weight` and `remaining_ballots`
    /// of them) can change whether and what this round decides.
    pub fn settled(
        &self,
        rule: &ChoiceRule,
        remaining_weight: f64,
        remaining_ballots: usize,
    ) -> bool {
        if remaining_ballots == 0 {
            return true;
        }
        let needed = self.needed_ballots(rule);
        let participation_sure = self.ballots >= needed;
        let participation_possible = self.ballots + remaining_ballots >= needed;
        if !participation_possible {
            return true;
        }
        let (first, second) = self.top_two();
        let lead_is_safe = first - second > remaining_weight + EPSILON;
        // A safe leader is the winner: it must already have its min_votes.
        let votes_sure = self.leader_votes() >= self.min_votes;
        let can_reach_votes =
            |option: &str| self.votes_for(option) + remaining_ballots >= self.min_votes;
        match rule.threshold {
            None => {
                (participation_sure && lead_is_safe && votes_sure)
                    || !self.totals.keys().any(|o| can_reach_votes(o))
            }
            Some(threshold) => {
                // With every remaining ballot cast, the base is the same whoever gets them:
                // the worst case for the leader and the best case for any other option.
                let base = self.base(rule, remaining_weight);
                let sure_pass = participation_sure
                    && lead_is_safe
                    && votes_sure
                    && base > 0.0
                    && threshold.passes(first / base);
                let any_can_pass = base > 0.0
                    && self.totals.iter().any(|(o, &t)| {
                        can_reach_votes(o) && threshold.passes((t + remaining_weight) / base)
                    });
                sure_pass || !any_can_pass
            }
        }
    }

    /// The round's result with the ballots counted so far.
    pub fn decide<R: rand::RngCore>(&self, rule: &ChoiceRule, rng: &mut R) -> TallyResult {
        let record = RoundRecord {
            round: 1,
            algorithm: rule.algorithm.to_owned(),
            counted: u32::try_from(self.ballots).unwrap_or(u32::MAX),
            tally: self.totals.clone(),
            ..RoundRecord::default()
        };
        let needed = self.needed_ballots(rule);
        if self.ballots < needed {
            return TallyResult::undecided(
                format!(
                    "{} of {} agents voted; min_participation needs {needed}",
                    self.ballots, self.eligible_count
                ),
                vec![record],
            );
        }
        let (first, _) = self.top_two();
        if first <= 0.0 {
            return TallyResult::undecided("no option received any weight", vec![record]);
        }
        let tied: Vec<&String> = self
            .totals
            .iter()
            .filter(|(_, &t)| (first - t).abs() <= EPSILON)
            .map(|(o, _)| o)
            .collect();
        // A tie among options none of which has min_votes is no tie to settle: whoever the
        // tie went to could not win.
        let best = tied.iter().map(|o| self.votes_for(o)).max().unwrap_or(0);
        if tied.len() > 1 && best < self.min_votes {
            return TallyResult::undecided(
                format!(
                    "the leading options have at most {best} ballot(s) each; min_votes needs {}",
                    self.min_votes
                ),
                vec![record],
            );
        }
        let winner = if tied.len() == 1 {
            tied.first().copied()
        } else {
            match rule.tie_break {
                TieBreak::None => None,
                TieBreak::Lexicographic => tied.first().copied(),
                TieBreak::Random => draw(&tied, rng).copied(),
            }
        };
        let Some(winner) = winner else {
            let tied = tied.into_iter().cloned().collect();
            return TallyResult::tie(tied, vec![record]);
        };
        let base = self.base(rule, 0.0);
        let support = if base > 0.0 { first / base } else { 0.0 };
        if let Some(threshold) = rule.threshold {
            if !threshold.passes(support) {
                let op = if threshold.inclusive { ">=" } else { ">" };
                return TallyResult::undecided(
                    format!(
                        "{winner:?} has {support:.4} of the {basis} weight; {alg} needs {op} {t:.4}",
                        basis = match rule.basis {
                            Basis::Cast => "cast",
                            Basis::Eligible => "eligible",
                        },
                        alg = rule.algorithm,
                        t = threshold.share
                    ),
                    vec![record],
                );
            }
        }
        let votes = self.votes_for(winner);
        if votes < self.min_votes {
            return TallyResult::undecided(
                format!(
                    "{winner:?} has {votes} ballot(s); min_votes needs {}",
                    self.min_votes
                ),
                vec![record],
            );
        }
        TallyResult::decided(
            Outcome::Choice {
                choice: winner.clone(),
                support,
                tally: self.totals.clone(),
            },
            vec![record],
        )
    }
}

/// Tallies all `input.votes` at once.
pub fn tally<R: rand::RngCore>(
    input: &TallyInput<'_>,
    rule: &ChoiceRule,
    rng: &mut R,
) -> TallyResult {
    let mut count = ChoiceCount::new(input.options, rule, input.electorate);
    for Vote {
        agent,
        value,
        confidence,
    } in input.votes
    {
        let Some(expertise) = input.electorate.get(agent).map(|p| p.expertise) else {
            continue;
        };
        let choice = match value {
            VoteValue::Choice(c) => Some(c.as_str()),
            _ => None,
        };
        count.add(choice, rule.weight(expertise, *confidence));
    }
    count.decide(rule, rng)
}
