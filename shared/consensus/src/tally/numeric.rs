//! Numeric building blocks of the multi-round algorithms: aggregating values (iterative
//! refinement) and proposing a compromise (negotiation).
//!
//! Weights below zero, and weights that are not numbers, count as zero.

use mabeam_protocol::AgentId;

use super::EPSILON;
use crate::algorithm::Aggregate;

fn clean_weight(w: f64) -> f64 {
    if w.is_finite() && w > 0.0 {
        w
    } else {
        0.0
    }
}

/// Aggregates weighted vectors, coordinate by coordinate.
///
/// Each entry is `(vector, weight)`. `None` when there are no entries, the vectors are empty
/// or differ in dimension, or the total weight is not positive.
///
/// - `WeightedMean`: Σ wᵢ·xᵢ / Σ wᵢ per coordinate (kept within the coordinate's smallest and
///   largest value despite rounding).
/// - `Median`: the *lower* weighted median per coordinate: the smallest value `m` such that the
///   values `<= m` carry at least half the total weight. With equal weights and an even count
///   that is the lower of the two middle values, so the median is always one of the submitted
///   values. Entries of weight zero are never chosen. Values carrying less than half the
///   weight cannot pull it outside the range of the others, whatever they are.
pub fn aggregate(values: &[(Vec<f64>, f64)], method: Aggregate) -> Option<Vec<f64>> {
    let dim = values.first()?.0.len();
    if dim == 0 || values.iter().any(|(v, _)| v.len() != dim) {
        return None;
    }
    let total: f64 = values.iter().map(|&(_, w)| clean_weight(w)).sum();
    if !(total > 0.0 && total.is_finite()) {
        return None;
    }
    (0..dim)
        .map(|d| {
            let column: Vec<(f64, f64)> = values
                .iter()
                .filter_map(|(v, w)| v.get(d).map(|&x| (x, clean_weight(*w))))
                .collect();
            match method {
                Aggregate::WeightedMean => weighted_mean(&column, total),
                Aggregate::Median => lower_weighted_median(column, total),
            }
        })
        .collect()
}

fn weighted_mean(column: &[(f64, f64)], total: f64) -> Option<f64> {
    let sum: f64 = column.iter().map(|&(x, w)| x * w).sum();
    let (lo, hi) = column
        .iter()
        .filter(|&&(_, w)| w > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(x, _)| {
            (lo.min(x), hi.max(x))
        });
    // Rounding in the sum can land a hair outside the values' range.
    Some((sum / total).max(lo).min(hi))
}

fn lower_weighted_median(mut column: Vec<(f64, f64)>, total: f64) -> Option<f64> {
    column.sort_by(|a, b| a.0.total_cmp(&b.0));
    let half = total / 2.0;
    let mut cumulative = 0.0;
    for &(x, w) in &column {
        if w <= 0.0 {
            continue;
        }
        cumulative += w;
        // Relative slack: equal weights summed in a different order may miss half by a hair.
        if cumulative >= half - EPSILON * total {
            return Some(x);
        }
    }
    column
        .iter()
        .rev()
        .find(|&&(_, w)| w > 0.0)
        .map(|&(x, _)| x)
}

/// How far the vectors are spread around `center`: the root mean square of their Euclidean
/// distances to it, every vector counting equally (weights are ignored). 0 when there are no
/// vectors. A coordinate missing on either side counts as 0.
pub fn dispersion(values: &[(Vec<f64>, f64)], center: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let sum_sq: f64 = values
        .iter()
        .map(|(v, _)| {
            let dim = v.len().max(center.len());
            (0..dim)
                .map(|d| {
                    let x = v.get(d).copied().unwrap_or(0.0);
                    let c = center.get(d).copied().unwrap_or(0.0);
                    (x - c) * (x - c)
                })
                .sum::<f64>()
        })
        .sum();
    (sum_sq / values.len() as f64).sqrt()
}

/// One agent's position in a negotiation round.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub agent: AgentId,
    /// The value the agent proposes.
    pub value: f64,
    /// The range of values the agent accepts.
    pub min: f64,
    pub max: f64,
    /// How much the agent's value pulls the proposal (e.g. expertise × confidence).
    pub weight: f64,
}

/// The compromise of one negotiation round.
#[derive(Debug, Clone, PartialEq)]
pub struct NegotiationRound {
    pub proposal: f64,
    /// Every agent accepts the proposal and it respects the hard bounds.
    pub agreed: bool,
    /// Agents whose accepted range excludes the proposal, sorted by id.
    pub holdouts: Vec<AgentId>,
}

/// Proposes a compromise from a round's offers.
///
/// The proposal starts as the weighted mean of the offered values. When the agents' accepted
/// ranges have a common part inside the hard `bounds` (`(min, max)`, either optional), the
/// proposal is moved to the nearest point of that common part: the agents then agree. When
/// they do not, it is only moved inside the hard bounds, and the agents whose range excludes
/// it are the holdouts, expected to widen their range or move their value next round.
///
/// Range checks allow a slack of 1e-9. An offer with `min > max` accepts nothing and always
/// holds out. `None` when there are no offers or their total weight is not positive.
pub fn negotiate(offers: &[Offer], bounds: (Option<f64>, Option<f64>)) -> Option<NegotiationRound> {
    let total: f64 = offers.iter().map(|o| clean_weight(o.weight)).sum();
    if offers.is_empty() || !(total > 0.0 && total.is_finite()) {
        return None;
    }
    let mean = offers
        .iter()
        .map(|o| o.value * clean_weight(o.weight))
        .sum::<f64>()
        / total;
    let (bound_lo, bound_hi) = (
        bounds.0.unwrap_or(f64::NEG_INFINITY),
        bounds.1.unwrap_or(f64::INFINITY),
    );
    let common_lo = offers.iter().map(|o| o.min).fold(bound_lo, f64::max);
    let common_hi = offers.iter().map(|o| o.max).fold(bound_hi, f64::min);
    // Written with max/min rather than f64::clamp, which panics on an empty range.
    let proposal = if common_lo <= common_hi {
        mean.max(common_lo).min(common_hi)
    } else {
        mean.max(bound_lo).min(bound_hi)
    };
    let accepts = |lo: f64, hi: f64| proposal >= lo - EPSILON && proposal <= hi + EPSILON;
    let mut holdouts: Vec<AgentId> = offers
        .iter()
        .filter(|o| !(o.min <= o.max && accepts(o.min, o.max)))
        .map(|o| o.agent.clone())
        .collect();
    holdouts.sort();
    holdouts.dedup();
    let agreed = holdouts.is_empty() && accepts(bound_lo, bound_hi);
    Some(NegotiationRound {
        proposal,
        agreed,
        holdouts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn offer(agent: &str, value: f64, min: f64, max: f64, weight: f64) -> Offer {
        Offer {
            agent: AgentId::new(agent).unwrap(),
            value,
            min,
            max,
            weight,
        }
    }

    #[test]
    fn weighted_mean_per_coordinate() {
        let values = vec![(vec![0.0, 10.0], 1.0), (vec![4.0, 20.0], 3.0)];
        let mean = aggregate(&values, Aggregate::WeightedMean).unwrap();
        assert!(close(mean[0], 3.0) && close(mean[1], 17.5), "{mean:?}");
    }

    #[test]
    fn nothing_to_aggregate() {
        assert_eq!(aggregate(&[], Aggregate::WeightedMean), None);
        let ragged = vec![(vec![1.0], 1.0), (vec![1.0, 2.0], 1.0)];
        assert_eq!(aggregate(&ragged, Aggregate::Median), None);
        let weightless = vec![(vec![1.0], 0.0), (vec![2.0], -1.0)];
        assert_eq!(aggregate(&weightless, Aggregate::WeightedMean), None);
        assert_eq!(aggregate(&[(vec![], 1.0)], Aggregate::WeightedMean), None);
    }

    #[test]
    fn negative_weights_count_as_zero() {
        let values = vec![(vec![1.0], 1.0), (vec![100.0], -5.0)];
        assert_eq!(aggregate(&values, Aggregate::WeightedMean), Some(vec![1.0]));
        assert_eq!(aggregate(&values, Aggregate::Median), Some(vec![1.0]));
    }

    #[test]
    fn median_is_the_lower_weighted_median() {
        let even = vec![
            (vec![4.0], 1.0),
            (vec![1.0], 1.0),
            (vec![3.0], 1.0),
            (vec![2.0], 1.0),
        ];
        assert_eq!(aggregate(&even, Aggregate::Median), Some(vec![2.0]));
        let heavy = vec![(vec![1.0], 1.0), (vec![2.0], 1.0), (vec![9.0], 5.0)];
        assert_eq!(aggregate(&heavy, Aggregate::Median), Some(vec![9.0]));
        let outlier = vec![
            (vec![1.0, 5.0], 1.0),
            (vec![1.1, 5.2], 1.0),
            (vec![1e9, -1e9], 1.0),
        ];
        assert_eq!(aggregate(&outlier, Aggregate::Median), Some(vec![1.1, 5.0]));
    }

    #[test]
    fn dispersion_is_the_rms_distance() {
        let values = vec![(vec![0.0, 0.0], 5.0), (vec![3.0, 4.0], 1.0)];
        // Distances 0 and 5: sqrt((0 + 25) / 2).
        assert!(close(dispersion(&values, &[0.0, 0.0]), (12.5f64).sqrt()));
        assert_eq!(dispersion(&[], &[1.0]), 0.0);
        assert_eq!(dispersion(&[(vec![2.0], 1.0)], &[2.0]), 0.0);
    }

    #[test]
    fn overlapping_ranges_agree_on_the_nearest_common_value() {
        // Mean 70/3 ≈ 23.3; common range [20, 22] -> 22.
        let offers = [
            offer("a", 10.0, 5.0, 22.0, 1.0),
            offer("b", 30.0, 20.0, 40.0, 1.0),
            offer("c", 30.0, 15.0, 35.0, 1.0),
        ];
        let round = negotiate(&offers, (None, None)).unwrap();
        assert!(close(round.proposal, 22.0), "{round:?}");
        assert!(round.agreed);
        assert!(round.holdouts.is_empty());
    }

    #[test]
    fn the_weighted_mean_inside_the_common_range_stays() {
        let offers = [
            offer("a", 10.0, 0.0, 100.0, 3.0),
            offer("b", 30.0, 0.0, 100.0, 1.0),
        ];
        let round = negotiate(&offers, (None, None)).unwrap();
        assert!(close(round.proposal, 15.0));
        assert!(round.agreed);
    }

    #[test]
    fn disjoint_ranges_leave_holdouts() {
        let offers = [
            offer("zed", 10.0, 0.0, 12.0, 1.0),
            offer("amy", 30.0, 28.0, 40.0, 1.0),
            offer("bob", 20.0, 0.0, 40.0, 1.0),
        ];
        let round = negotiate(&offers, (None, None)).unwrap();
        assert!(close(round.proposal, 20.0));
        assert!(!round.agreed);
        let holdouts: Vec<&str> = round.holdouts.iter().map(AgentId::as_str).collect();
        assert_eq!(holdouts, ["amy", "zed"]);
    }

    #[test]
    fn hard_bounds_win_over_the_agents() {
        // The agents agree on [50, 60], but the hard maximum is 40.
        let offers = [
            offer("a", 55.0, 50.0, 60.0, 1.0),
            offer("b", 58.0, 50.0, 60.0, 1.0),
        ];
        let round = negotiate(&offers, (Some(0.0), Some(40.0))).unwrap();
        assert!(close(round.proposal, 40.0));
        assert!(!round.agreed);
        assert_eq!(round.holdouts.len(), 2);
        // The common range within the bounds is [50, 55].
        let round = negotiate(&offers, (None, Some(55.0))).unwrap();
        assert!(close(round.proposal, 55.0));
        assert!(round.agreed);
    }

    #[test]
    fn no_offers_no_round() {
        assert_eq!(negotiate(&[], (None, None)), None);
        assert_eq!(
            negotiate(&[offer("a", 1.0, 0.0, 2.0, 0.0)], (None, None)),
            None
        );
    }

    #[test]
    fn an_empty_range_always_holds_out() {
        let offers = [
            offer("a", 1.0, 2.0, 0.0, 1.0),
            offer("b", 1.0, 0.0, 2.0, 1.0),
        ];
        let round = negotiate(&offers, (None, None)).unwrap();
        assert!(!round.agreed);
        assert_eq!(round.holdouts, vec![AgentId::new("a").unwrap()]);
    }
}
