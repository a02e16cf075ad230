//! What a scenario reports: named checks (pass/fail with the measured figure), figures for
//! the validation report, and a narrative of what happened.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Map, Value};

/// One requirement and whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    /// The measured figure, e.g. `decided "transformer" in 1.24 s`.
    pub detail: String,
}

/// A scenario's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub scenario: String,
    pub passed: bool,
    pub duration_s: f64,
    pub checks: Vec<Check>,
    /// Named measurements the validation suite reads (seconds, counts, bytes, shares).
    pub figures: Map<String, Value>,
    /// What happened, step by step.
    pub notes: Vec<String>,
    /// Set when the scenario could not run at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ScenarioReport {
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            passed: true,
            duration_s: 0.0,
            checks: Vec::new(),
            figures: Map::new(),
            notes: Vec::new(),
            error: None,
        }
    }

    /// A scenario that could not run: one failed check saying why.
    pub fn failed_to_run(scenario: &str, error: &str) -> Self {
        let mut r = Self::new(scenario);
        r.error = Some(error.to_owned());
        r.check("scenario ran", false, error.to_owned());
        r
    }

    pub fn check(&mut self, name: impl Into<String>, passed: bool, detail: impl Into<String>) {
        let check = Check {
            name: name.into(),
            passed,
            detail: detail.into(),
        };
        tracing::info!(
            scenario = %self.scenario,
            check = %check.name,
            passed,
            detail = %check.detail,
            "check"
        );
        self.passed &= passed;
        self.checks.push(check);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        tracing::info!(scenario = %self.scenario, "{text}");
        self.notes.push(text);
    }

    pub fn figure(&mut self, name: &str, value: impl Into<Value>) {
        self.figures.insert(name.to_owned(), value.into());
    }

    /// A figure as a number, if it is one.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.figures.get(name).and_then(Value::as_f64)
    }

    /// The report as text: notes, then each check, then the verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "== scenario {} ==", self.scenario);
        for n in &self.notes {
            let _ = writeln!(out, "  {n}");
        }
        for c in &self.checks {
            let mark = if c.passed { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "  [{mark}] {}: {}", c.name, c.detail);
        }
        let passed = self.checks.iter().filter(|c| c.passed).count();
        let _ = writeln!(
            out,
            "  => {} ({passed}/{} checks, {:.1} s)",
            if self.passed { "PASS" } else { "FAIL" },
            self.checks.len(),
            self.duration_s
        );
        out
    }
}

/// A stable 64-bit hash of a name (FNV-1a), for per-agent seeds that do not change between
/// runs.
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Seconds with two decimals, for details.
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The `q`-quantile (0..=1) of `values` (nearest rank); `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_check_fails_the_scenario() {
        let mut r = ScenarioReport::new("x");
        r.check("a", true, "1 s");
        assert!(r.passed);
        r.check("b", false, "9 s");
        assert!(!r.passed);
        let text = r.render();
        assert!(text.contains("[PASS] a: 1 s") && text.contains("[FAIL] b: 9 s"));
        assert!(text.contains("=> FAIL (1/2 checks"));
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 1.0), Some(3.0));
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.0), Some(1.0));
    }
}
