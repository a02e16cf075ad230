//! Pass/fail bounds, as k6 thresholds: defaults from the targets table of the design brief
//! (§6), overridable per scenario. A breach makes the driver exit non-zero with the reason.

use std::{collections::BTreeMap, fmt};

use super::report::ScenarioReport;

/// Bounds of one scenario; `None` is unbounded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bounds {
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Share of sent tasks that ended in an error (no result in time, not decided, refused).
    pub error_rate: Option<f64>,
    /// p99 of latency divided by rounds (iterative: "≤ 5 ms per round").
    pub round_p99_ms: Option<f64>,
    pub max_rounds: Option<f64>,
}

/// The targets table, by scenario name (faulty variants: no errors; latency is theirs to
/// show, not bounded by the table).
pub fn defaults(scenario: &str) -> Bounds {
    let zero_errors = Bounds {
        error_rate: Some(0.0),
        ..Bounds::default()
    };
    match scenario {
        "majority-5" | "majority-5-high" => Bounds {
            p50_ms: Some(1.0),
            p99_ms: Some(5.0),
            ..zero_errors
        },
        "weighted-50" => Bounds {
            p99_ms: Some(10.0),
            ..zero_errors
        },
        "weighted-200" => Bounds {
            p99_ms: Some(25.0),
            ..zero_errors
        },
        "byzantine-13" => Bounds {
            p99_ms: Some(15.0),
            ..zero_errors
        },
        "byzantine-100" => Bounds {
            p99_ms: Some(500.0),
            ..zero_errors
        },
        "iterative-20" => Bounds {
            round_p99_ms: Some(5.0),
            max_rounds: Some(5.0),
            ..zero_errors
        },
        _ => zero_errors,
    }
}

/// Only "no errors": what `make load-smoke` holds on a busy CI machine.
pub fn errors_only() -> Bounds {
    Bounds {
        error_rate: Some(0.0),
        ..Bounds::default()
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ThresholdError {
    #[error("threshold {0:?}: expected <scenario|*>.<metric>=<number|none>")]
    Syntax(String),
    #[error("threshold {0:?}: unknown metric; known: p50_ms p95_ms p99_ms p999_ms max_ms error_rate round_p99_ms max_rounds")]
    Metric(String),
}

/// One override: `majority-5.p99_ms=10`, `*.error_rate=0.01`, `weighted-200.p99_ms=none`.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    pub scenario: String,
    pub metric: String,
    pub value: Option<f64>,
}

/// Parses a comma-separated list of overrides.
pub fn parse(spec: &str) -> Result<Vec<Override>, ThresholdError> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|item| {
            let syntax = || ThresholdError::Syntax(item.to_owned());
            let (key, value) = item.split_once('=').ok_or_else(syntax)?;
            let (scenario, metric) = key.trim().split_once('.').ok_or_else(syntax)?;
            let value = match value.trim() {
                "none" => None,
                v => Some(v.parse::<f64>().map_err(|_| syntax())?),
            };
            let o = Override {
                scenario: scenario.to_owned(),
                metric: metric.to_owned(),
                value,
            };
            slot(&mut Bounds::default(), &o.metric)
                .ok_or_else(|| ThresholdError::Metric(item.to_owned()))?;
            Ok(o)
        })
        .collect()
}

fn slot<'a>(b: &'a mut Bounds, metric: &str) -> Option<&'a mut Option<f64>> {
    Some(match metric {
        "p50_ms" => &mut b.p50_ms,
        "p95_ms" => &mut b.p95_ms,
        "p99_ms" => &mut b.p99_ms,
        "p999_ms" => &mut b.p999_ms,
        "max_ms" => &mut b.max_ms,
        "error_rate" => &mut b.error_rate,
        "round_p99_ms" => &mut b.round_p99_ms,
        "max_rounds" => &mut b.max_rounds,
        _ => return None,
    })
}

/// The bounds of `scenario`: defaults (or errors only), then overrides in order.
pub fn resolve(scenario: &str, errors_only_mode: bool, overrides: &[Override]) -> Bounds {
    let mut b = if errors_only_mode {
        errors_only()
    } else {
        defaults(scenario)
    };
    for o in overrides {
        if o.scenario == "*" || o.scenario == scenario {
            if let Some(s) = slot(&mut b, &o.metric) {
                *s = o.value;
            }
        }
    }
    b
}

/// A bound that was crossed.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Breach {
    pub scenario: String,
    pub metric: String,
    pub limit: f64,
    pub actual: f64,
}

impl fmt::Display for Breach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} = {:.3} exceeds {}",
            self.scenario, self.metric, self.actual, self.limit
        )
    }
}

/// Every bound `s` crosses.
pub fn check(s: &ScenarioReport, b: &Bounds) -> Vec<Breach> {
    let actual: BTreeMap<&str, (Option<f64>, f64)> = [
        ("p50_ms", (b.p50_ms, s.latency_ms.p50)),
        ("p95_ms", (b.p95_ms, s.latency_ms.p95)),
        ("p99_ms", (b.p99_ms, s.latency_ms.p99)),
        ("p999_ms", (b.p999_ms, s.latency_ms.p999)),
        ("max_ms", (b.max_ms, s.latency_ms.max)),
        ("error_rate", (b.error_rate, s.error_rate)),
        ("round_p99_ms", (b.round_p99_ms, s.round_latency_ms.p99)),
        ("max_rounds", (b.max_rounds, f64::from(s.rounds_max))),
    ]
    .into_iter()
    .collect();
    let mut out: Vec<Breach> = actual
        .into_iter()
        .filter_map(|(metric, (limit, actual))| {
            let limit = limit?;
            // A NaN (nothing measured) breaches rather than passes.
            (actual.is_nan() || actual > limit).then(|| Breach {
                scenario: s.name.clone(),
                metric: metric.to_owned(),
                limit,
                actual,
            })
        })
        .collect();
    // A scenario that sent or completed nothing has no latency to judge: that is its own
    // failure.
    let nothing = if s.sent == 0 {
        Some("sent")
    } else if s.completed == 0 {
        Some("completed")
    } else {
        None
    };
    if let Some(metric) = nothing {
        out.push(Breach {
            scenario: s.name.clone(),
            metric: metric.into(),
            limit: 1.0,
            actual: 0.0,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    use super::super::report::{Latency, RoundLatency};

    fn measured(p99: f64, error_rate: f64, sent: u64, completed: u64) -> ScenarioReport {
        ScenarioReport {
            name: "majority-5".into(),
            algorithm: "majority".into(),
            agents: 5,
            faults: None,
            offered_rate: 10.0,
            achieved_rate: 10.0,
            sent,
            completed,
            latency_ms: Latency {
                p50: 1.0,
                p95: 2.0,
                p99,
                p999: p99,
                max: p99,
            },
            errors: 0,
            error_rate,
            errors_by_kind: BTreeMap::new(),
            rounds_max: 1,
            round_latency_ms: RoundLatency { p50: 1.0, p99 },
            series: Vec::new(),
        }
    }

    fn breached(s: &ScenarioReport, b: &Bounds) -> Vec<String> {
        check(s, b).into_iter().map(|x| x.metric).collect()
    }

    #[test]
    fn a_bound_is_breached_only_when_crossed() {
        let b = Bounds {
            p99_ms: Some(5.0),
            error_rate: Some(0.0),
            ..Bounds::default()
        };
        assert!(breached(&measured(5.0, 0.0, 10, 10), &b).is_empty());
        assert_eq!(breached(&measured(5.1, 0.0, 10, 10), &b), ["p99_ms"]);
        assert_eq!(breached(&measured(1.0, 0.01, 10, 10), &b), ["error_rate"]);
    }

    #[test]
    fn nothing_measured_is_a_breach_not_a_pass() {
        let b = Bounds {
            p99_ms: Some(5.0),
            ..Bounds::default()
        };
        assert_eq!(breached(&measured(f64::NAN, 0.0, 10, 10), &b), ["p99_ms"]);
        assert_eq!(breached(&measured(1.0, 0.0, 0, 0), &b), ["sent"]);
        assert_eq!(breached(&measured(1.0, 0.0, 10, 0), &b), ["completed"]);
    }

    #[test]
    fn overrides_replace_defaults_per_scenario_and_for_all() {
        let o = parse("majority-5.p99_ms=10, *.error_rate=0.01,weighted-200.p99_ms=none").unwrap();
        let m = resolve("majority-5", false, &o);
        assert_eq!(m.p99_ms, Some(10.0));
        assert_eq!(m.p50_ms, Some(1.0));
        assert_eq!(m.error_rate, Some(0.01));
        assert_eq!(resolve("weighted-200", false, &o).p99_ms, None);
        assert_eq!(resolve("majority-5", true, &[]).p99_ms, None);
    }

    #[test]
    fn bad_overrides_name_the_problem() {
        assert!(matches!(
            parse("majority-5=3"),
            Err(ThresholdError::Syntax(_))
        ));
        assert!(matches!(
            parse("x.p98_ms=3"),
            Err(ThresholdError::Metric(_))
        ));
        assert!(matches!(
            parse("x.p99_ms=fast"),
            Err(ThresholdError::Syntax(_))
        ));
    }
}
