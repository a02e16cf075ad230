//! Dynamic expertise: agents that keep agreeing with the decisions their electorates reach
//! gain weight, agents that keep disagreeing lose it.
//!
//! The registry calls [`agreement`] on a decided session's final ballots and feeds each
//! agent's result to [`updated_expertise`]. The update is an exponential moving average, so
//! one decision moves a weight by at most `learning_rate` of the way to a bound, and old
//! decisions fade geometrically.

use std::collections::BTreeMap;

use mabeam_protocol::{session::VoteValue, AgentId, Outcome};
use serde::{Deserialize, Serialize};

use crate::{
    tally::{Vote, EPSILON},
    ConfigError,
};

/// How expertise moves after each decision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightUpdate {
    /// Share of the distance to the bound covered per decision, in `(0, 1]`.
    pub learning_rate: f64,
    /// Expertise never falls below this (> 0: every agent keeps some voice).
    pub min: f64,
    /// Expertise never rises above this (>= `min`).
    pub max: f64,
}

impl Default for WeightUpdate {
    fn default() -> Self {
        Self {
            learning_rate: 0.1,
            min: 0.1,
            max: 10.0,
        }
    }
}

impl WeightUpdate {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |detail: String| Err(ConfigError::params("weight_update", detail));
        if !(self.learning_rate.is_finite()
            && self.learning_rate > 0.0
            && self.learning_rate <= 1.0)
        {
            return fail(format!(
                "learning_rate must be in (0, 1], got {}",
                self.learning_rate
            ));
        }
        if !(self.min.is_finite() && self.max.is_finite()) {
            return fail(format!(
                "min and max must be finite, got {} and {}",
                self.min, self.max
            ));
        }
        if self.min <= 0.0 {
            return fail(format!("min must be positive, got {}", self.min));
        }
        if self.min > self.max {
            return fail(format!("min {} is above max {}", self.min, self.max));
        }
        Ok(())
    }
}

/// The expertise after one more decision:
///
/// `new = current + learning_rate × (target − current)`, with `target = max` when the agent
/// agreed with the decided outcome and `target = min` when it did not; the result is clamped
/// to `[min, max]`.
///
/// `current` is first brought into `[min, max]` (a value that is not a number counts as
/// `min`), so an agent registered outside the bounds enters them at once. With a validated
/// update the result is always within the bounds; it never panics, whatever the update.
pub fn updated_expertise(current: f64, agreed: bool, update: &WeightUpdate) -> f64 {
    // max/min rather than f64::clamp: clamp panics when min > max (an unvalidated update).
    let bound = |x: f64| x.max(update.min).min(update.max);
    let current = bound(current);
    let target = if agreed { update.max } else { update.min };
    bound(current + update.learning_rate * (target - current))
}

/// Which voters agreed with a decided `outcome`.
///
/// - `Choice` outcomes: a `Choice` ballot agrees when it names the winning option, a
///   `Ranking` when it ranks the winner first.
/// - `Value` outcomes: a `Number` or `Vector` ballot agrees when its Euclidean distance to
///   the decided value is at most the outcome's `dispersion` (the typical spread of the final
///   round, so roughly the closer half of a spread electorate agrees; at least 1e-9, so with
///   zero dispersion only the exact value agrees). An `Offer` agrees when the decided value
///   (one-dimensional) lies within the offer's accepted `[min, max]` range.
/// - Other outcome kinds (award, leader, assignment) have no right answer to agree with: the
///   map is empty.
///
/// Abstentions, and ballots that cannot be compared with the outcome (another kind, or a
/// vector of another dimension), are left out of the map. An agent with several ballots is
/// judged by its last one.
pub fn agreement(votes: &[Vote], outcome: &Outcome) -> BTreeMap<AgentId, bool> {
    let mut agreed = BTreeMap::new();
    for vote in votes {
        let verdict = match outcome {
            Outcome::Choice { choice, .. } => match &vote.value {
                VoteValue::Choice(c) => Some(c == choice),
                VoteValue::Ranking(r) => Some(r.first() == Some(choice)),
                _ => None,
            },
            Outcome::Value { value, dispersion } => {
                let tolerance = dispersion.max(EPSILON);
                match &vote.value {
                    VoteValue::Number(x) => within(std::slice::from_ref(x), value, tolerance),
                    VoteValue::Vector(v) => within(v, value, tolerance),
                    VoteValue::Offer { min, max, .. } => match value.as_slice() {
                        [x] => Some(min - EPSILON <= *x && *x <= max + EPSILON),
                        _ => None,
                    },
                    _ => None,
                }
            }
            Outcome::Award { .. } | Outcome::Leader { .. } | Outcome::Assignment { .. } => None,
        };
        if let Some(verdict) = verdict {
            agreed.insert(vote.agent.clone(), verdict);
        }
    }
    agreed
}

/// Whether `x` lies within `tolerance` (Euclidean) of `value`; `None` on a dimension mismatch.
fn within(x: &[f64], value: &[f64], tolerance: f64) -> Option<bool> {
    if x.len() != value.len() {
        return None;
    }
    let distance = x
        .iter()
        .zip(value)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    Some(distance <= tolerance)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(agent: &str, value: VoteValue) -> Vote {
        Vote {
            agent: AgentId::new(agent).unwrap(),
            value,
            confidence: 1.0,
        }
    }

    fn verdicts(map: &BTreeMap<AgentId, bool>) -> Vec<(&str, bool)> {
        map.iter().map(|(a, v)| (a.as_str(), *v)).collect()
    }

    #[test]
    fn the_default_is_valid_and_bad_updates_are_refused() {
        assert!(WeightUpdate::default().validate().is_ok());
        let cases = [
            (0.0, 0.1, 10.0, "learning_rate"),
            (1.5, 0.1, 10.0, "learning_rate"),
            (f64::NAN, 0.1, 10.0, "learning_rate"),
            (0.1, 0.0, 10.0, "min must be positive"),
            (0.1, 5.0, 1.0, "above max"),
            (0.1, 0.1, f64::INFINITY, "finite"),
        ];
        for (learning_rate, min, max, needle) in cases {
            let err = WeightUpdate {
                learning_rate,
                min,
                max,
            }
            .validate()
            .unwrap_err();
            assert!(err.to_string().contains(needle), "{err}");
        }
        assert!(WeightUpdate {
            learning_rate: 1.0,
            min: 2.0,
            max: 2.0
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn agreement_moves_toward_max_and_disagreement_toward_min() {
        let u = WeightUpdate::default();
        let up = updated_expertise(1.0, true, &u);
        assert!((up - (1.0 + 0.1 * 9.0)).abs() < 1e-12);
        let down = updated_expertise(1.0, false, &u);
        assert!((down - (1.0 - 0.1 * 0.9)).abs() < 1e-12);
    }

    #[test]
    fn weights_stay_within_the_bounds() {
        let u = WeightUpdate {
            learning_rate: 1.0,
            min: 0.5,
            max: 2.0,
        };
        assert_eq!(updated_expertise(1.0, true, &u), 2.0);
        assert_eq!(updated_expertise(1.0, false, &u), 0.5);
        let slow = WeightUpdate::default();
        let mut w = 1.0;
        for _ in 0..1000 {
            w = updated_expertise(w, true, &slow);
            assert!(w <= slow.max);
        }
        assert!((w - slow.max).abs() < 1e-9);
        for _ in 0..1000 {
            w = updated_expertise(w, false, &slow);
            assert!(w >= slow.min);
        }
        assert!((w - slow.min).abs() < 1e-9);
        // Out-of-range or non-numeric starting weights enter the bounds.
        assert!(updated_expertise(100.0, true, &slow) <= slow.max);
        assert_eq!(updated_expertise(f64::NAN, false, &slow), slow.min);
        // An unvalidated update does not panic.
        let bad = WeightUpdate {
            learning_rate: 0.5,
            min: 3.0,
            max: 1.0,
        };
        assert!(updated_expertise(2.0, true, &bad).is_finite());
    }

    #[test]
    fn choice_agreement_is_voting_for_the_winner() {
        let outcome = Outcome::Choice {
            choice: "yes".into(),
            support: 0.6,
            tally: BTreeMap::new(),
        };
        let votes = [
            vote("a", VoteValue::Choice("yes".into())),
            vote("b", VoteValue::Choice("no".into())),
            vote("c", VoteValue::Ranking(vec!["yes".into(), "no".into()])),
            vote("d", VoteValue::Ranking(vec!["no".into(), "yes".into()])),
            vote("e", VoteValue::Abstain),
            vote("f", VoteValue::Number(1.0)),
        ];
        assert_eq!(
            verdicts(&agreement(&votes, &outcome)),
            [("a", true), ("b", false), ("c", true), ("d", false)]
        );
    }

    #[test]
    fn value_agreement_is_being_within_the_dispersion() {
        let outcome = Outcome::Value {
            value: vec![10.0],
            dispersion: 2.0,
        };
        let votes = [
            vote("a", VoteValue::Number(11.5)),
            vote("b", VoteValue::Number(7.0)),
            vote("c", VoteValue::Vector(vec![12.0])),
            vote("d", VoteValue::Vector(vec![10.0, 1.0])),
            vote(
                "e",
                VoteValue::Offer {
                    value: 3.0,
                    min: 0.0,
                    max: 10.0,
                },
            ),
            vote(
                "f",
                VoteValue::Offer {
                    value: 3.0,
                    min: 0.0,
                    max: 9.0,
                },
            ),
            vote("g", VoteValue::Abstain),
        ];
        assert_eq!(
            verdicts(&agreement(&votes, &outcome)),
            [
                ("a", true),
                ("b", false),
                ("c", true),
                ("e", true),
                ("f", false)
            ]
        );
        let exact = Outcome::Value {
            value: vec![1.0, 2.0],
            dispersion: 0.0,
        };
        let votes = [
            vote("a", VoteValue::Vector(vec![1.0, 2.0])),
            vote("b", VoteValue::Vector(vec![1.0, 2.001])),
        ];
        assert_eq!(
            verdicts(&agreement(&votes, &exact)),
            [("a", true), ("b", false)]
        );
    }

    #[test]
    fn other_outcomes_have_no_agreement() {
        let outcome = Outcome::Leader {
            leader: AgentId::new("a").unwrap(),
        };
        let votes = [vote("b", VoteValue::Choice("a".into()))];
        assert!(agreement(&votes, &outcome).is_empty());
    }
}
