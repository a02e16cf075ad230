//! The soak's verdict on resources: does anything grow without bound?
//!
//! Criterion, for every sampled series (RSS and open fds of each process, NATS pending bytes,
//! Redis used memory): the first quarter of the run is warm-up and ignored; the median of the
//! second quarter is the baseline, the median of the last quarter the end level. The series is
//! bounded when `end ≤ baseline × (1 + ratio) + slack`. A leak of a steady rate shows as a
//! rising end level; a plateau, a sawtooth (allocator, GC of expired keys) or a spike that
//! passes stays within it. Medians keep one unlucky reading from deciding. Fewer than
//! [`MIN_SAMPLES`] readings are too few to judge and say so.

use serde::Serialize;

use super::report::{GaugeSeries, ResourceSeries};

/// Readings needed before a series is judged (two per quarter at least).
pub const MIN_SAMPLES: usize = 8;

/// How much growth is tolerated: relative to the baseline, plus an absolute slack.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Allowance {
    pub ratio: f64,
    pub slack: f64,
}

/// RSS: 25 % + 32 MiB (allocator arenas settle late under a steady load).
pub const RSS: Allowance = Allowance {
    ratio: 0.25,
    slack: 32.0 * 1024.0 * 1024.0,
};
/// Open file descriptors: 10 % + 16 (reconnects and short-lived clients come and go).
pub const FDS: Allowance = Allowance {
    ratio: 0.10,
    slack: 16.0,
};
/// NATS bytes pending delivery to clients: 1 MiB, whatever the baseline (it should drain).
pub const NATS_PENDING: Allowance = Allowance {
    ratio: 0.0,
    slack: 1024.0 * 1024.0,
};
/// Redis used memory: 25 % + 32 MiB (results expire after their TTL, so it plateaus).
pub const REDIS_MEMORY: Allowance = RSS;

/// One series' verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Growth {
    pub series: String,
    pub samples: usize,
    /// Median of the second quarter; `None` when too few samples.
    pub baseline: Option<f64>,
    /// Median of the last quarter.
    pub end: Option<f64>,
    /// The most `end` may be.
    pub limit: Option<f64>,
    pub allowance: Allowance,
    /// `None`: not judged (too few samples).
    pub bounded: Option<bool>,
}

impl Growth {
    pub fn unbounded(&self) -> bool {
        self.bounded == Some(false)
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Judges one series of readings in time order.
pub fn judge(series: &str, readings: &[f64], allowance: Allowance) -> Growth {
    let n = readings.len();
    let mut growth = Growth {
        series: series.to_owned(),
        samples: n,
        baseline: None,
        end: None,
        limit: None,
        allowance,
        bounded: None,
    };
    if n < MIN_SAMPLES {
        return growth;
    }
    let quarter = n / 4;
    let baseline = median(&mut readings[quarter..2 * quarter].to_vec());
    let end = median(&mut readings[n - quarter..].to_vec());
    let limit = baseline * (1.0 + allowance.ratio) + allowance.slack;
    growth.baseline = Some(baseline);
    growth.end = Some(end);
    growth.limit = Some(limit);
    growth.bounded = Some(end <= limit);
    growth
}

/// Every series of a run judged: RSS and fds of each watched process, and the gauges.
pub fn judge_all(resources: &[ResourceSeries], gauges: &[GaugeSeries]) -> Vec<Growth> {
    let mut all = Vec::new();
    for r in resources {
        let rss: Vec<f64> = r.readings.iter().map(|x| x.rss_bytes as f64).collect();
        let fds: Vec<f64> = r.readings.iter().map(|x| x.open_fds as f64).collect();
        all.push(judge(&format!("{} rss_bytes", r.process), &rss, RSS));
        all.push(judge(&format!("{} open_fds", r.process), &fds, FDS));
    }
    for g in gauges {
        let allowance = if g.name.starts_with("nats") {
            NATS_PENDING
        } else {
            REDIS_MEMORY
        };
        let values: Vec<f64> = g.points.iter().map(|(_, v)| *v).collect();
        all.push(judge(&g.name, &values, allowance));
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn a_plateau_after_warm_up_is_bounded() {
        // Warm-up climbs from 20 to 100 MiB, then it holds with noise.
        let readings: Vec<f64> = (0..40)
            .map(|i| {
                if i < 10 {
                    (20.0 + 8.0 * f64::from(i)) * MIB
                } else {
                    (100.0 + f64::from(i % 3)) * MIB
                }
            })
            .collect();
        let g = judge("rss", &readings, RSS);
        assert_eq!(g.bounded, Some(true), "{g:?}");
    }

    #[test]
    fn a_steady_leak_is_caught() {
        // 100 MiB growing 4 MiB per reading: +120 MiB between the quarters.
        let readings: Vec<f64> = (0..40)
            .map(|i| (100.0 + 4.0 * f64::from(i)) * MIB)
            .collect();
        let g = judge("rss", &readings, RSS);
        assert!(g.unbounded(), "{g:?}");
    }

    #[test]
    fn a_sawtooth_and_a_passing_spike_are_bounded() {
        let mut readings: Vec<f64> = (0..40).map(|i| f64::from(50 + (i % 5) * 4) * MIB).collect();
        readings[37] = 900.0 * MIB;
        assert_eq!(judge("rss", &readings, RSS).bounded, Some(true));
    }

    #[test]
    fn descriptors_that_keep_opening_are_caught() {
        let leaking: Vec<f64> = (0..20).map(|i| 30.0 + 5.0 * f64::from(i)).collect();
        assert!(judge("fds", &leaking, FDS).unbounded());
        let steady: Vec<f64> = (0..20).map(|i| 30.0 + f64::from(i % 2)).collect();
        assert_eq!(judge("fds", &steady, FDS).bounded, Some(true));
    }

    #[test]
    fn pending_bytes_must_drain() {
        let stuck: Vec<f64> = (0..16).map(|i| f64::from(i) * 0.5 * MIB).collect();
        assert!(judge("nats pending", &stuck, NATS_PENDING).unbounded());
    }

    #[test]
    fn too_few_readings_are_not_judged() {
        let g = judge("rss", &[1.0, 2.0, 3.0], RSS);
        assert_eq!((g.bounded, g.baseline), (None, None));
        assert!(!g.unbounded());
    }
}
