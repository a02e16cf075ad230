//! A small slice of `make chaos` on every `make test`: two algorithms × three faults, within
//! and beyond f, with a coordinator killed -9 mid-batch, and the history checked — so the
//! matrix runner and the checker cannot rot, and the properties they check hold.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use mabeam_protocol::{Outcome, Status};
use mabeam_tests::{
    chaos::{self, history, Algorithm, Event, Load, Nemesis, Plan, Verdict},
    Stack,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_matrix_never_decides_wrong_loses_or_doubles_a_task() {
    let plan = Plan {
        algorithms: vec![Algorithm::Majority, Algorithm::Byzantine],
        nemeses: Nemesis::all()
            .into_iter()
            .filter(|n| ["silent", "equivocate", "coalition"].contains(&n.name))
            .collect(),
        parallel: 6,
        kill_coordinators: true,
        stack_name: "chaos-smoke".into(),
    };
    let mut stack = Stack::start(chaos::stack_options(&plan)).await;
    let report = chaos::run(&mut stack, &plan, &mut std::io::sink()).await;
    let table = report.markdown();
    assert_eq!(report.cells.len(), 12, "{table}");
    assert!(report.coordinator_kills >= 1);
    assert!(report.passed(), "{table}\n{:?}", report.check.violations);
    // Within f every cell decides what the honest agents want, despite the kills.
    assert!(report.missed().is_empty(), "{table}");
    // Beyond f the Byzantine protocol does not decide against the honest agents: it
    // decides for them or not at all.
    for cell in report
        .cells
        .iter()
        .filter(|c| c.algorithm == Algorithm::Byzantine)
    {
        assert!(
            matches!(cell.verdict, Verdict::Correct | Verdict::NoDecision),
            "{table}"
        );
    }
    // Equivocators within f are caught, and nobody honest is blamed.
    let caught = report
        .cells
        .iter()
        .find(|c| {
            c.algorithm == Algorithm::Byzantine
                && c.nemesis == "equivocate"
                && c.load == Load::WithinF
        })
        .unwrap();
    assert_eq!((caught.detected, caught.false_positives), (2, 0), "{table}");
    // A four-agent coalition outvotes three honest agents in a simple majority — the
    // documented semantics, reported as such.
    let coalition = report
        .cells
        .iter()
        .find(|c| {
            c.algorithm == Algorithm::Majority
                && c.nemesis == "coalition"
                && c.load == Load::BeyondF
        })
        .unwrap();
    assert_eq!(coalition.verdict, Verdict::Outvoted, "{table}");
    // Every task was submitted twice and seen at least twice (published, republished for
    // the duplicate, read back from Redis), always as the same single result.
    let check = &report.check;
    assert_eq!((check.submitted, check.resulted), (12, 12), "{table}");
    assert!(check.results_seen >= 3 * 12, "{check:?}");
    assert!(check.certificates_verified >= 3, "{check:?}");

    // The checker catches a forged certificate on a real result: another value claimed, or
    // the electorate's keys swapped for keys the registry never saw.
    let keys: BTreeMap<_, _> = stack
        .agents()
        .await
        .agents
        .into_iter()
        .map(|a| (a.agent_id, a.public_key))
        .collect();
    let certified = report
        .events
        .iter()
        .find_map(|e| match e {
            Event::Result { result, .. }
                if result.status == Status::Decided && result.certificate.is_some() =>
            {
                Some((**result).clone())
            }
            _ => None,
        })
        .expect("a certified result");
    let mut forged = certified.clone();
    if let Some(Outcome::Choice { choice, .. }) = &mut forged.outcome {
        *choice = "hold".into();
    }
    let mut unknown_keys = certified.clone();
    let cert = unknown_keys.certificate.as_mut().unwrap();
    let stranger = cert.electorate[0].agent_id.clone();
    cert.electorate[0].public_key = keys
        .iter()
        .find(|(id, _)| **id != stranger)
        .map(|(_, k)| *k)
        .unwrap();
    for tampered in [forged, unknown_keys] {
        let events = [
            Event::Submitted {
                task_id: tampered.task_id.clone(),
                algorithm: "byzantine".into(),
                at_ms: 0,
            },
            Event::Result {
                source: history::Source::Published,
                at_ms: 1,
                result: Box::new(tampered),
            },
        ];
        let check = history::check(&events, &keys);
        assert_eq!(
            check
                .violations
                .iter()
                .map(history::Violation::kind)
                .collect::<Vec<_>>(),
            ["bad_certificate"]
        );
    }
}
