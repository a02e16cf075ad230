//! The campaign: many seeded runs across algorithms × attack patterns × fault counts ×
//! network conditions, every safety property checked on every run, summarised as a table.

use std::{
    collections::BTreeMap,
    panic::{catch_unwind, AssertUnwindSafe},
    time::Instant,
};

use mabeam_protocol::{result::FaultReason, Status};

use super::{
    check::{self, Verdict},
    scenario::{Algo, Attack, FaultClass, HonestPrefs, Knobs, NetKind, Scenario},
    seeds::panic_message,
    world::{simulate, Report},
};

/// The campaign's mix: byzantine runs weigh more (they are what the fault model is about);
/// electorates of 4 to 13 keep a run to a few milliseconds.
pub(crate) fn knobs() -> Knobs {
    let mut algos = Algo::ALL.to_vec();
    algos.extend([Algo::Byzantine; 5]);
    Knobs {
        algos,
        attacks: Attack::ALL.to_vec(),
        classes: vec![
            FaultClass::Zero,
            FaultClass::WithinF,
            FaultClass::WithinF,
            FaultClass::BeyondF,
        ],
        nets: NetKind::ALL.to_vec(),
        n: (4, 13),
        honest: HonestPrefs::Any,
        equivocate_to_coordinator: None,
        timeout: (2_000, 6_000),
        small_n: None,
    }
}

/// What one run contributes to the summary.
#[derive(Debug)]
pub(crate) struct RunResult {
    pub seed: u64,
    pub row: (Algo, Attack, FaultClass),
    pub status: Option<Status>,
    /// Virtual ms from start to a decision.
    pub time_to_decide: Option<u64>,
    pub violations: Vec<(&'static str, String)>,
    /// A run that should have decided (byzantine, ≤ f faults, lossless network, unanimous
    /// honest agents) and did not.
    pub liveness_miss: Option<String>,
    pub attackers: usize,
    pub detected: usize,
    /// Honest agents listed in `faulty_detected` for anything but silence.
    /// Why honest agents were listed in `faulty_detected` (silence aside).
    pub honest_flagged: Vec<FaultReason>,
    /// Byzantine, ≤ f faulty, lossless network: (honest preference mode, decided).
    pub byzantine_liveness: Option<(&'static str, bool)>,
    /// Honest replicas that decided differently from each other or from the coordinator
    /// with more than f faulty agents (where agreement is not promised).
    pub split_beyond_f: bool,
}

fn record(out: &mut Vec<(&'static str, String)>, name: &'static str, verdict: Verdict) {
    if let Err(e) = verdict {
        out.push((name, e));
    }
}

/// Checks every safety property that applies to `sc`.
pub(crate) fn safety_violations(sc: &Scenario, rep: &Report) -> Vec<(&'static str, String)> {
    let mut v = Vec::new();
    record(
        &mut v,
        "finishes_exactly_once_by_timeout",
        check::finishes_exactly_once(rep),
    );
    if !v.is_empty() {
        return v;
    }
    if sc.algo.is_single_round() {
        record(
            &mut v,
            "agrees_with_offline_tally",
            check::offline_tally_agrees(sc, rep),
        );
    }
    match sc.algo {
        Algo::Byzantine => {
            record(
                &mut v,
                "certificates_verify",
                check::certificate_valid(sc, rep),
            );
            if sc.faulty_count() <= sc.byzantine_f() {
                record(
                    &mut v,
                    "byzantine_agreement",
                    check::byzantine_agreement(sc, rep),
                );
                record(
                    &mut v,
                    "byzantine_validity",
                    check::byzantine_validity(sc, rep),
                );
            } else {
                record(
                    &mut v,
                    "byzantine_beyond_f_safety",
                    check::byzantine_beyond_f_safety(sc, rep),
                );
            }
        }
        Algo::Pipeline => {
            record(&mut v, "pipeline_feeds", check::pipeline_feeds(sc, rep));
            record(
                &mut v,
                "certificates_verify",
                check::certificate_valid(sc, rep),
            );
        }
        Algo::Adaptive => {
            record(
                &mut v,
                "adaptive_switches",
                check::adaptive_switches_recorded(sc, rep),
            );
            record(
                &mut v,
                "certificates_verify",
                check::certificate_valid(sc, rep),
            );
        }
        Algo::Iterative => record(&mut v, "iterative_sound", check::iterative_sound(sc, rep)),
        _ => {}
    }
    v
}

pub(crate) fn run_one(seed: u64, knobs: &Knobs) -> RunResult {
    let sc = Scenario::generate(seed, knobs);
    let row = (sc.algo, sc.attack, sc.class);
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let rep = simulate(&sc);
        let violations = safety_violations(&sc, &rep);
        (rep, violations)
    }));
    let (rep, violations) = match outcome {
        Ok(x) => x,
        Err(panic) => {
            return RunResult {
                seed,
                row,
                status: None,
                time_to_decide: None,
                violations: vec![("no_panic", panic_message(&*panic))],
                liveness_miss: None,
                attackers: 0,
                detected: 0,
                honest_flagged: Vec::new(),
                byzantine_liveness: None,
                split_beyond_f: false,
            }
        }
    };
    let decision = rep.decision();
    let status = decision.map(|d| d.status);
    let time_to_decide = decision
        .filter(|d| d.status == Status::Decided)
        .map(|d| d.finished_ms - d.started_ms);
    let attackers: Vec<usize> = (0..sc.n)
        .filter(|&i| sc.agents[i].behaviour.is_faulty())
        .collect();
    let flagged: Vec<(usize, FaultReason)> = decision
        .map(|d| {
            d.faulty_detected
                .iter()
                .filter_map(|f| {
                    let i = super::keys::ring()
                        .ids
                        .iter()
                        .position(|x| *x == f.agent_id)?;
                    Some((i, f.reason))
                })
                .collect()
        })
        .unwrap_or_default();
    let detected = attackers
        .iter()
        .filter(|&&i| flagged.iter().any(|(j, _)| *j == i))
        .count();
    let honest_flagged: Vec<FaultReason> = flagged
        .iter()
        .filter(|(i, reason)| {
            !sc.agents[*i].behaviour.is_faulty() && *reason != FaultReason::Silent
        })
        .map(|(_, reason)| *reason)
        .collect();
    let byzantine_liveness = (sc.algo == Algo::Byzantine
        && sc.faulty_count() <= sc.byzantine_f()
        && sc.net.is_lossless())
    .then(|| (sc.honest_mode.label(), status == Some(Status::Decided)));
    let liveness_miss = (sc.algo == Algo::Byzantine
        && sc.faulty_count() <= sc.byzantine_f()
        && sc.net.is_lossless()
        && sc.unanimous.is_some()
        && violations.is_empty()
        && status != Some(Status::Decided))
    .then(|| {
        decision
            .and_then(|d| d.reason.clone())
            .unwrap_or_else(|| "no decision".into())
    });
    let split_beyond_f = sc.algo == Algo::Byzantine
        && sc.faulty_count() > sc.byzantine_f()
        && check::byzantine_agreement(&sc, &rep).is_err();
    RunResult {
        seed,
        row,
        status,
        time_to_decide,
        violations,
        liveness_miss,
        attackers: attackers.len(),
        detected,
        honest_flagged,
        byzantine_liveness,
        split_beyond_f,
    }
}

#[derive(Debug, Default)]
struct Row {
    runs: u64,
    decided: u64,
    no_decision: u64,
    violations: u64,
    liveness: u64,
    times: Vec<u64>,
    attackers: u64,
    detected: u64,
    honest_flagged: u64,
    split_beyond_f: u64,
}

/// The campaign's result.
#[derive(Debug)]
pub(crate) struct Summary {
    pub table: String,
    /// Honest agents reported faulty, by reason: (count, example seeds).
    pub honest_flagged: BTreeMap<FaultReason, (u64, Vec<u64>)>,
    /// Byzantine runs with ≤ f faulty agents on a lossless network, by honest preference
    /// mode: (runs, decided).
    pub byzantine_liveness: BTreeMap<&'static str, (u64, u64)>,
    /// (seed, property, detail) of every safety violation.
    pub violations: Vec<(u64, &'static str, String)>,
    pub liveness_misses: Vec<(u64, String)>,
    pub wall: std::time::Duration,
}

fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Runs seeds `first..first+runs` of `knobs` on `threads` threads.
pub(crate) fn run(knobs: &Knobs, first: u64, runs: u64, threads: usize) -> Summary {
    let started = Instant::now();
    let threads = threads.max(1) as u64;
    let results: Vec<Vec<RunResult>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (0..runs)
                        .filter(|i| i % threads == t)
                        .map(|i| run_one(first + i, knobs))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("campaign thread"))
            .collect()
    });
    let mut rows: BTreeMap<(Algo, Attack, FaultClass), Row> = BTreeMap::new();
    let mut total = Row::default();
    let mut violations = Vec::new();
    let mut liveness_misses = Vec::new();
    let mut flagged_by_reason: BTreeMap<FaultReason, (u64, Vec<u64>)> = BTreeMap::new();
    let mut liveness_by_mode: BTreeMap<&'static str, (u64, u64)> = BTreeMap::new();
    for r in results.into_iter().flatten() {
        for row in [rows.entry(r.row).or_default(), &mut total] {
            row.runs += 1;
            match r.status {
                Some(Status::Decided) => row.decided += 1,
                Some(_) => row.no_decision += 1,
                None => {}
            }
            row.violations += u64::from(!r.violations.is_empty());
            row.liveness += u64::from(r.liveness_miss.is_some());
            row.times.extend(r.time_to_decide);
            row.attackers += r.attackers as u64;
            row.detected += r.detected as u64;
            row.honest_flagged += r.honest_flagged.len() as u64;
            row.split_beyond_f += u64::from(r.split_beyond_f);
        }
        for reason in &r.honest_flagged {
            let entry = flagged_by_reason.entry(*reason).or_insert((0, Vec::new()));
            entry.0 += 1;
            if entry.1.len() < 5 && !entry.1.contains(&r.seed) {
                entry.1.push(r.seed);
            }
        }
        if let Some((mode, decided)) = r.byzantine_liveness {
            let entry = liveness_by_mode.entry(mode).or_insert((0, 0));
            entry.0 += 1;
            entry.1 += u64::from(decided);
        }
        for (name, detail) in r.violations {
            violations.push((r.seed, name, detail));
        }
        if let Some(m) = r.liveness_miss {
            liveness_misses.push((r.seed, m));
        }
    }
    let mut table = format!(
        "{:<18} {:<11} {:<6} {:>6} {:>7} {:>7} {:>6} {:>5} {:>7} {:>7} {:>15} {:>7} {:>6}\n",
        "algorithm",
        "attack",
        "faults",
        "runs",
        "decided",
        "no_dec",
        "safety",
        "live",
        "med_ms",
        "p99_ms",
        "detected/attack",
        "hon_flg",
        "split"
    );
    let mut line = |name: String, attack: &str, class: &str, row: &mut Row| {
        row.times.sort_unstable();
        let fmt = |x: Option<u64>| x.map_or_else(|| "-".to_owned(), |v| v.to_string());
        table.push_str(&format!(
            "{:<18} {:<11} {:<6} {:>6} {:>7} {:>7} {:>6} {:>5} {:>7} {:>7} {:>15} {:>7} {:>6}\n",
            name,
            attack,
            class,
            row.runs,
            row.decided,
            row.no_decision,
            row.violations,
            row.liveness,
            fmt(percentile(&row.times, 0.5)),
            fmt(percentile(&row.times, 0.99)),
            format!("{}/{}", row.detected, row.attackers),
            row.honest_flagged,
            row.split_beyond_f
        ));
    };
    for ((algo, attack, class), row) in rows.iter_mut() {
        line(algo.name().to_owned(), attack.label(), class.label(), row);
    }
    line("TOTAL".to_owned(), "", "", &mut total);
    Summary {
        table,
        honest_flagged: flagged_by_reason,
        byzantine_liveness: liveness_by_mode,
        violations,
        liveness_misses,
        wall: started.elapsed(),
    }
}

/// The safety violations, grouped by property, with reproductions of the first few.
pub(crate) fn violation_lines(violations: &[(u64, &'static str, String)], test: &str) -> String {
    let mut by_property: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (seed, name, _) in violations {
        by_property.entry(name).or_default().push(*seed);
    }
    let mut out = String::new();
    for (name, seeds) in &by_property {
        let shown: Vec<String> = seeds.iter().take(40).map(u64::to_string).collect();
        out.push_str(&format!(
            "  {name}: {} run(s); seeds {}\n",
            seeds.len(),
            shown.join(" ")
        ));
    }
    for (seed, name, detail) in violations.iter().take(8) {
        out.push_str(&format!(
            "  seed {seed} [{name}]: {detail}\n    reproduce: MABEAM_SIM_SEED={seed} cargo test --release -p mabeam-consensus --test simulation {test} -- --exact --include-ignored --nocapture\n"
        ));
    }
    out
}

/// Replays one seed of a campaign, printing what happened.
pub(crate) fn replay_seed(knobs: &Knobs, seed: u64) {
    let sc = Scenario::generate(seed, knobs);
    let rep = simulate(&sc);
    let violations = safety_violations(&sc, &rep);
    println!("seed {seed}: {}", sc.describe());
    println!("decision: {:?}", rep.decision());
    println!("replica decisions: {:?}", rep.agent_decisions);
    println!("network: {:?}", rep.net);
    for (name, detail) in &violations {
        println!("violation [{name}]: {detail}");
    }
    assert!(violations.is_empty(), "seed {seed}: {violations:?}");
}
