//! Jepsen-style history of a chaos run: every task submission and every result seen (on the
//! results subjects and in Redis), checked afterwards. The checker is pure, so its own tests
//! feed it hand-made histories with the violations it must catch.

use std::collections::{BTreeMap, BTreeSet};

use mabeam_protocol::{AgentId, Limits, PublicKey, Status, TaskId, TaskResult};
use serde::{Deserialize, Serialize};

/// Where a result was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Published on `mabeam.results.<task_id>`.
    Published,
    /// Read back from Redis after the run.
    Stored,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The task stream acknowledged the submission: it is accepted and must get a result.
    Submitted {
        task_id: TaskId,
        algorithm: String,
        at_ms: u64,
    },
    Result {
        source: Source,
        at_ms: u64,
        result: Box<TaskResult>,
    },
}

/// What the checker found wrong; an empty list means the history is sound.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "violation", rename_all = "snake_case")]
pub enum Violation {
    /// Accepted, and no result anywhere.
    Lost { task_id: TaskId },
    /// A result for a task nobody submitted.
    Phantom { task_id: TaskId },
    /// Two different results for one task: decided twice, or differently.
    Conflicting {
        task_id: TaskId,
        first: Box<TaskResult>,
        second: Box<TaskResult>,
    },
    /// A decided Byzantine result without a certificate, or with one that does not verify,
    /// certifies another value, or names keys the registry does not hold.
    BadCertificate { task_id: TaskId, reason: String },
}

impl Violation {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Lost { .. } => "lost",
            Self::Phantom { .. } => "phantom",
            Self::Conflicting { .. } => "conflicting",
            Self::BadCertificate { .. } => "bad_certificate",
        }
    }
}

/// The checker's summary, for the report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Check {
    pub submitted: usize,
    /// Tasks with a result.
    pub resulted: usize,
    /// Results seen, counting every copy (republished or read back from Redis).
    pub results_seen: usize,
    pub certificates_verified: usize,
    pub violations: Vec<Violation>,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Checks a history: each accepted task has exactly one final result (every copy of it equal,
/// so a redelivered or re-published task did not produce a second decision), no result
/// without a submission, and every decided Byzantine result carries a certificate that
/// verifies against the agents' registered keys and certifies the decided value.
pub fn check(events: &[Event], keys: &BTreeMap<AgentId, PublicKey>) -> Check {
    let mut submitted: BTreeSet<&TaskId> = BTreeSet::new();
    let mut results: BTreeMap<&TaskId, Vec<&TaskResult>> = BTreeMap::new();
    for event in events {
        match event {
            Event::Submitted { task_id, .. } => {
                submitted.insert(task_id);
            }
            Event::Result { result, .. } => {
                results.entry(&result.task_id).or_default().push(result);
            }
        }
    }
    let mut check = Check {
        submitted: submitted.len(),
        resulted: results.len(),
        results_seen: results.values().map(Vec::len).sum(),
        ..Check::default()
    };
    for task in &submitted {
        if !results.contains_key(task) {
            check.violations.push(Violation::Lost {
                task_id: (*task).clone(),
            });
        }
    }
    for (task, seen) in &results {
        if !submitted.contains(task) {
            check.violations.push(Violation::Phantom {
                task_id: (*task).clone(),
            });
        }
        let first = seen[0];
        if let Some(other) = seen.iter().find(|r| **r != first) {
            check.violations.push(Violation::Conflicting {
                task_id: (*task).clone(),
                first: Box::new(first.clone()),
                second: Box::new((*other).clone()),
            });
        }
        match certificate_problem(first, keys) {
            Some(Ok(())) => check.certificates_verified += 1,
            Some(Err(reason)) => check.violations.push(Violation::BadCertificate {
                task_id: (*task).clone(),
                reason,
            }),
            None => {}
        }
    }
    check
}

/// `None` when the result needs no certificate.
fn certificate_problem(
    result: &TaskResult,
    keys: &BTreeMap<AgentId, PublicKey>,
) -> Option<Result<(), String>> {
    if result.algorithm != "byzantine" || result.status != Status::Decided {
        return None;
    }
    let Some(cert) = &result.certificate else {
        return Some(Err("decided without a certificate".into()));
    };
    let verified = cert
        .verify(&Limits::default())
        .map_err(|e| e.to_string())
        .and_then(|()| {
            cert.verify_keys(|id| keys.get(id).copied())
                .map_err(|e| e.to_string())
        })
        .and_then(|()| match &result.outcome {
            Some(mabeam_protocol::Outcome::Choice { choice, .. }) if *choice == cert.value => {
                Ok(())
            }
            other => Err(format!(
                "certifies {:?} but the outcome is {other:?}",
                cert.value
            )),
        });
    Some(verified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mabeam_protocol::{result::Timings, Outcome, PROTOCOL_VERSION};

    fn id(s: &str) -> TaskId {
        TaskId::new(s).unwrap()
    }

    fn submitted(task: &str) -> Event {
        Event::Submitted {
            task_id: id(task),
            algorithm: "majority".into(),
            at_ms: 1,
        }
    }

    fn decided(task: &str, choice: &str, finished_ms: u64) -> TaskResult {
        TaskResult {
            v: PROTOCOL_VERSION,
            task_id: id(task),
            session_id: None,
            algorithm: "majority".into(),
            status: Status::Decided,
            outcome: Some(Outcome::Choice {
                choice: choice.into(),
                support: 1.0,
                tally: BTreeMap::new(),
            }),
            reason: None,
            rounds: 1,
            history: vec![],
            switches: vec![],
            participants: vec![],
            faulty_detected: vec![],
            certificate: None,
            error: None,
            timings: Timings {
                finished_ms: Some(finished_ms),
                ..Timings::default()
            },
        }
    }

    fn seen(source: Source, result: TaskResult) -> Event {
        Event::Result {
            source,
            at_ms: 2,
            result: Box::new(result),
        }
    }

    fn kinds(check: &Check) -> Vec<&'static str> {
        check.violations.iter().map(Violation::kind).collect()
    }

    #[test]
    fn one_result_seen_twice_is_sound() {
        let r = decided("t1", "deploy", 10);
        let events = [
            submitted("t1"),
            submitted("t1"),
            seen(Source::Published, r.clone()),
            seen(Source::Published, r.clone()),
            seen(Source::Stored, r),
        ];
        let check = check(&events, &BTreeMap::new());
        assert!(check.passed(), "{check:?}");
        assert_eq!(
            (check.submitted, check.resulted, check.results_seen),
            (1, 1, 3)
        );
    }

    #[test]
    fn a_task_without_a_result_is_lost() {
        let events = [
            submitted("t1"),
            submitted("t2"),
            seen(Source::Published, decided("t1", "deploy", 1)),
        ];
        assert_eq!(kinds(&check(&events, &BTreeMap::new())), ["lost"]);
    }

    #[test]
    fn a_result_nobody_asked_for_is_a_phantom() {
        let events = [seen(Source::Stored, decided("t9", "deploy", 1))];
        assert_eq!(kinds(&check(&events, &BTreeMap::new())), ["phantom"]);
    }

    #[test]
    fn a_second_decision_conflicts_even_with_the_same_value() {
        let events = [
            submitted("t1"),
            seen(Source::Published, decided("t1", "deploy", 10)),
            seen(Source::Published, decided("t1", "deploy", 11)),
        ];
        assert_eq!(kinds(&check(&events, &BTreeMap::new())), ["conflicting"]);
        let events = [
            submitted("t1"),
            seen(Source::Published, decided("t1", "deploy", 10)),
            seen(Source::Stored, decided("t1", "hold", 10)),
        ];
        assert_eq!(kinds(&check(&events, &BTreeMap::new())), ["conflicting"]);
    }

    #[test]
    fn a_decided_byzantine_result_needs_a_certificate() {
        let mut r = decided("t1", "deploy", 1);
        r.algorithm = "byzantine".into();
        let events = [submitted("t1"), seen(Source::Published, r.clone())];
        assert_eq!(
            kinds(&check(&events, &BTreeMap::new())),
            ["bad_certificate"]
        );
        // Without a decision there is nothing to certify.
        r.status = Status::NoDecision;
        r.outcome = None;
        let events = [submitted("t1"), seen(Source::Published, r)];
        assert!(check(&events, &BTreeMap::new()).passed());
    }
}
