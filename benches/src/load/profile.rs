//! Load profiles: how the arrival rate of every scenario moves over time, as a multiplier of
//! its base rate. Arrivals are scheduled from the rate (open model), never from completions.

use std::{fmt, str::FromStr, time::Duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Constant base rate, about 30 s.
    Smoke,
    /// From zero to twice the base rate, then held.
    Ramp,
    /// Half the base rate, a burst at five times it, back to half.
    Spike,
    /// Constant base rate for minutes, sampling RSS and open fds of every process.
    Soak,
    /// Steps of ×1.5 until the error rate or p99 crosses its bound; reports the knee.
    Stress,
}

impl FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "smoke" => Self::Smoke,
            "ramp" => Self::Ramp,
            "spike" => Self::Spike,
            "soak" => Self::Soak,
            "stress" => Self::Stress,
            other => {
                return Err(format!(
                    "unknown profile {other:?}: smoke, ramp, spike, soak or stress"
                ))
            }
        })
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Smoke => "smoke",
            Self::Ramp => "ramp",
            Self::Spike => "spike",
            Self::Soak => "soak",
            Self::Stress => "stress",
        })
    }
}

/// A piece of the rate curve: the multiplier goes linearly from `from` to `to`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    pub duration: Duration,
    pub from: f64,
    pub to: f64,
}

/// The whole rate curve.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub phases: Vec<Phase>,
}

fn hold(secs: f64, m: f64) -> Phase {
    Phase {
        duration: Duration::from_secs_f64(secs),
        from: m,
        to: m,
    }
}

/// Multiplier of each stress step over the previous one.
pub const STRESS_FACTOR: f64 = 1.5;

impl Profile {
    /// The curve; `duration` (when given) stretches the whole profile to that length.
    pub fn shape(self, duration: Option<Duration>) -> Shape {
        let phases = match self {
            Self::Smoke => vec![hold(30.0, 1.0)],
            Self::Ramp => vec![
                Phase {
                    duration: Duration::from_secs(60),
                    from: 0.05,
                    to: 2.0,
                },
                hold(30.0, 2.0),
            ],
            Self::Spike => vec![hold(20.0, 0.5), hold(10.0, 5.0), hold(20.0, 0.5)],
            Self::Soak => vec![hold(600.0, 1.0)],
            Self::Stress => (0..12).map(|i| hold(10.0, STRESS_FACTOR.powi(i))).collect(),
        };
        let shape = Shape { phases };
        match duration {
            Some(d) => shape.stretched(d),
            None => shape,
        }
    }
}

impl Shape {
    pub fn total(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }

    fn stretched(self, to: Duration) -> Self {
        let total = self.total().as_secs_f64();
        if total <= 0.0 {
            return self;
        }
        let k = to.as_secs_f64() / total;
        Self {
            phases: self
                .phases
                .into_iter()
                .map(|p| Phase {
                    duration: Duration::from_secs_f64(p.duration.as_secs_f64() * k),
                    ..p
                })
                .collect(),
        }
    }

    /// The phase `t` seconds in falls into and the multiplier there; `None` past the end.
    pub fn at(&self, t: f64) -> Option<(usize, f64)> {
        let mut start = 0.0;
        for (i, p) in self.phases.iter().enumerate() {
            let d = p.duration.as_secs_f64();
            if t < start + d {
                let x = if d > 0.0 { (t - start) / d } else { 0.0 };
                return Some((i, p.from + (p.to - p.from) * x));
            }
            start += d;
        }
        None
    }

    /// When phase `i` ends, in seconds from the start.
    pub fn phase_end(&self, i: usize) -> f64 {
        self.phases
            .iter()
            .take(i + 1)
            .map(|p| p.duration.as_secs_f64())
            .sum()
    }
}

/// The intended send times (seconds from the start) of one scenario at `base_rate`: the
/// rate is integrated in steps of at most 10 ms and an arrival is due each time the integral
/// grows by one, so the count follows the curve even where the rate starts near zero.
#[derive(Debug, Clone)]
pub struct Arrivals<'a> {
    shape: &'a Shape,
    base_rate: f64,
    t: f64,
}

impl<'a> Arrivals<'a> {
    pub fn new(shape: &'a Shape, base_rate: f64) -> Self {
        Self {
            shape,
            base_rate,
            t: 0.0,
        }
    }
}

/// Longest integration step, seconds.
const STEP: f64 = 0.01;

impl Iterator for Arrivals<'_> {
    /// (seconds from the start, phase index)
    type Item = (f64, usize);
    fn next(&mut self) -> Option<(f64, usize)> {
        let mut need = 1.0;
        loop {
            let (_, m) = self.shape.at(self.t)?;
            let rate = self.base_rate * m;
            let dt = if rate > 0.0 {
                (need / rate).min(STEP)
            } else {
                STEP
            };
            need -= rate * dt;
            self.t += dt;
            if need <= 1e-9 {
                let (phase, _) = self.shape.at(self.t)?;
                return Some((self.t, phase));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_constant_rate_sends_rate_times_duration() {
        let shape = Profile::Smoke.shape(Some(Duration::from_secs(10)));
        let n = Arrivals::new(&shape, 100.0).count();
        assert!((999..=1000).contains(&n), "{n}");
        let n = Arrivals::new(&shape, 0.5).count();
        assert_eq!(n, 5);
    }

    #[test]
    fn a_ramp_sends_the_area_under_its_curve() {
        let shape = Shape {
            phases: vec![Phase {
                duration: Duration::from_secs(10),
                from: 0.0,
                to: 1.0,
            }],
        };
        let n = Arrivals::new(&shape, 100.0).count() as f64;
        assert!((n - 500.0).abs() < 3.0, "{n}");
        let times: Vec<f64> = Arrivals::new(&shape, 100.0).map(|(t, _)| t).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "in order");
    }

    #[test]
    fn stress_steps_grow_by_the_factor() {
        let shape = Profile::Stress.shape(None);
        let (p0, m0) = shape.at(1.0).unwrap_or_default();
        let (p1, m1) = shape.at(11.0).unwrap_or_default();
        assert_eq!((p0, p1), (0, 1));
        assert!((m1 / m0 - STRESS_FACTOR).abs() < 1e-9);
        assert!(shape.at(shape.total().as_secs_f64() + 1.0).is_none());
    }

    #[test]
    fn profiles_parse_and_print_the_same() {
        for p in ["smoke", "ramp", "spike", "soak", "stress"] {
            assert_eq!(p.parse::<Profile>().map(|x| x.to_string()), Ok(p.into()));
        }
        assert!("flood".parse::<Profile>().is_err());
    }
}
