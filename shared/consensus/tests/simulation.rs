//! Deterministic simulations of whole sessions: a coordinator `Session` and simulated agents
//! (honest ones and the attackers of the fault model) on a seeded in-process network with a
//! virtual clock. Each test is named after the property it checks and runs many seeds; a
//! failure lists its seeds with a one-line reproduction:
//!
//! ```text
//! MABEAM_SIM_SEED=123 cargo test -p mabeam-consensus --test simulation <test name>
//! ```
//!
//! `MABEAM_SIM_SEEDS=<n>` runs n seeds per property; `MABEAM_SIM_TRACE=1` prints every
//! coordinator input and output and every agent message of the runs (use with one seed).
//! A seed's scenario is the same in every build, so a seed found in release replays in debug.
//!
//! Signature checks dominate a run. Where the dependencies are built without optimisation an
//! ed25519 check costs about 13 ms instead of about 50 µs, and each property runs only its
//! first few seeds (see `sim::seeds`); `[profile.dev.package."*"] opt-level = 3` in the
//! workspace manifest lets `cargo test` run them all.
//!
//! The campaign (`make sim`) runs `MABEAM_SIM_RUNS` (default 100000) seeded runs across
//! algorithms × attacks × fault counts × networks and prints a summary table:
//!
//! ```text
//! cargo test --release -p mabeam-consensus --test simulation campaign -- --ignored --nocapture
//! ```
//!
//! The last tests are minimal, hand-driven reproductions of what the simulations found.

#[cfg(test)]
mod sim;

use std::cell::Cell;

use mabeam_consensus::{replica::ByzantineReplica, session::Effect};
use mabeam_protocol::{result::FaultReason, session::Phase, Limits, Outcome, Status};
use serde_json::json;
use sim::{
    agent::Behaviour,
    campaign,
    check::{self, Verdict},
    check_seeds,
    keys::ring,
    manual,
    scenario::T0,
    simulate, Algo, Attack, FaultClass, HonestPrefs, Knobs, NetKind, Report, Scenario, Seeds,
};

use FaultClass::{BeyondF, WithinF, Zero};

/// Adds the scenario to a failure, so the report says what ran.
fn explain(sc: &Scenario, rep: &Report, verdict: Verdict) -> Verdict {
    verdict.map_err(|e| {
        let decision = rep.decision().map_or_else(
            || "none".to_owned(),
            |d| {
                format!(
                    "{:?} {:?} reason={:?} rounds={}",
                    d.status, d.outcome, d.reason, d.rounds
                )
            },
        );
        format!(
            "{e}\n    scenario: {}\n    decision: {decision}",
            sc.describe()
        )
    })
}

fn run(seed: u64, knobs: &Knobs, property: impl Fn(&Scenario, &Report) -> Verdict) -> Verdict {
    let sc = Scenario::generate(seed, knobs);
    let rep = simulate(&sc);
    explain(
        &sc,
        &rep,
        check::finishes_exactly_once(&rep).and_then(|()| property(&sc, &rep)),
    )
}

const BYZANTINE: &[Algo] = &[Algo::Byzantine];
const CHOICE_FAMILY: &[Algo] = &[
    Algo::Majority,
    Algo::Supermajority,
    Algo::Unanimous,
    Algo::Plurality,
    Algo::Weighted,
    Algo::RankedChoice,
];

#[test]
fn byzantine_agreement_holds_with_up_to_f_faulty() {
    let seeds = Seeds::new(1_000, 300, 12);
    let knobs = Knobs::new(BYZANTINE)
        .classes(&[Zero, WithinF])
        .n(4, 10)
        .small_n_below(&seeds, 7);
    check_seeds(
        "byzantine_agreement_holds_with_up_to_f_faulty",
        seeds,
        |seed| run(seed, &knobs, check::byzantine_agreement),
    );
}

#[test]
fn byzantine_validity_when_honest_agents_agree() {
    let seeds = Seeds::new(2_000, 300, 12);
    let knobs = Knobs::new(BYZANTINE)
        .classes(&[Zero, WithinF])
        .honest(HonestPrefs::Unanimous)
        .n(4, 10)
        .small_n_below(&seeds, 7);
    check_seeds(
        "byzantine_validity_when_honest_agents_agree",
        seeds,
        |seed| {
            run(seed, &knobs, |sc, rep| {
                check::byzantine_validity(sc, rep)?;
                // Termination: with at most f faulty agents and a network that loses nothing,
                // the honest 2f+1 decide their value.
                if sc.net.is_lossless() {
                    let v = sc.unanimous.as_deref();
                    if rep.decided_choice() != v {
                        return Err(format!(
                            "lossless network, ≤ f faulty, honest unanimous for {v:?}: no decision"
                        ));
                    }
                }
                Ok(())
            })
        },
    );
}

#[test]
fn byzantine_terminates_within_timeout_when_faults_at_most_f() {
    let seeds = Seeds::new(3_000, 300, 12);
    let knobs = Knobs::new(BYZANTINE)
        .classes(&[Zero, WithinF])
        .nets(&[NetKind::Jittery])
        .honest(HonestPrefs::SplitAcceptAny)
        .n(4, 10)
        .small_n_below(&seeds, 7);
    check_seeds(
        "byzantine_terminates_within_timeout_when_faults_at_most_f",
        seeds,
        |seed| {
            let mut sc = Scenario::generate(seed, &knobs);
            // Termination needs a round to converge in: a suggestion (a value f+1 agents
            // prepared, so an honest one) that every honest agent accepts. Give the honest
            // agents a value that f+1 of them prefer, and at least two rounds.
            let max_rounds = sc.params["max_rounds"].as_u64().unwrap_or(3).max(2);
            sc.params["max_rounds"] = max_rounds.into();
            let honest: Vec<usize> = sc.honest().collect();
            for &i in honest.iter().take(sc.f + 1) {
                sc.agents[i].pref.choice = sc.honest_values[0].clone();
            }
            let rep = simulate(&sc);
            let verdict = check::finishes_exactly_once(&rep).and_then(|()| {
                let (at, d) = &rep.finishes[0];
                if d.status != Status::Decided {
                    let replicas: Vec<String> = rep
                        .agent_decisions
                        .iter()
                        .enumerate()
                        .filter_map(|(i, d)| d.as_ref().map(|(v, r)| format!("{i}:{v}@r{r}")))
                        .collect();
                    return Err(format!(
                        "no decision by +{} ms: {:?}; replica decisions [{}]",
                        at - rep.start_ms,
                        d.reason,
                        replicas.join(" ")
                    ));
                }
                Ok(())
            });
            explain(&sc, &rep, verdict)
        },
    );
}

#[test]
fn byzantine_never_decides_wrongly_beyond_f() {
    let seeds = Seeds::new(4_000, 300, 10);
    let knobs = Knobs::new(BYZANTINE)
        .attacks(&[
            Attack::Coalition,
            Attack::Equivocate,
            Attack::Adaptive,
            Attack::Mixed,
        ])
        .classes(&[BeyondF])
        .n(4, 13)
        .small_n_below(&seeds, 7);
    check_seeds("byzantine_never_decides_wrongly_beyond_f", seeds, |seed| {
        run(seed, &knobs, |sc, rep| {
            check::byzantine_beyond_f_safety(sc, rep)?;
            check::certificate_valid(sc, rep)
        })
    });
}

#[test]
fn certificates_always_verify() {
    let seeds = Seeds::new(5_000, 300, 12);
    let knobs = Knobs::new(&[Algo::Byzantine, Algo::Byzantine, Algo::Adaptive])
        .classes(&[Zero, WithinF, BeyondF])
        .n(4, 10)
        .small_n_below(&seeds, 7);
    let decided = Cell::new(0u32);
    check_seeds("certificates_always_verify", seeds, |seed| {
        run(seed, &knobs, |sc, rep| {
            if rep.decision().is_some_and(|d| d.certificate.is_some()) {
                decided.set(decided.get() + 1);
            }
            check::certificate_valid(sc, rep)
        })
    });
    assert!(
        decided.get() > 0 || std::env::var("MABEAM_SIM_SEED").is_ok(),
        "no run produced a certificate"
    );
}

#[test]
fn equivocators_are_detected_and_reported() {
    // Byzantine: an equivocator's two prepares reach the coordinator together, one hop after
    // the proposal; a decision takes three hops, and jitter below a third of the base latency
    // keeps it that way, so every equivocator must be caught.
    let seeds1 = Seeds::new(6_000, 200, 8);
    let knobs = Knobs::new(BYZANTINE)
        .attacks(&[Attack::Equivocate])
        .classes(&[WithinF])
        .nets(&[NetKind::Perfect, NetKind::Jittery])
        .equivocate_to_coordinator(true)
        .n(4, 10)
        .small_n_below(&seeds1, 7);
    check_seeds("equivocators_are_detected_and_reported", seeds1, |seed| {
        let mut sc = Scenario::generate(seed, &knobs);
        sc.net.base_ms = sc.net.base_ms.max(3);
        sc.net.jitter_ms = sc.net.jitter_ms.min(sc.net.base_ms / 3);
        let rep = simulate(&sc);
        let verdict = check::finishes_exactly_once(&rep).and_then(|()| {
            check::equivocators_reported(&sc, &rep)?;
            let d = rep.decision().expect("finished");
            let limits = Limits::default();
            for i in (0..sc.n).filter(|&i| matches!(sc.agents[i].behaviour, Behaviour::Equivocate { .. })) {
                let id = &ring().ids[i];
                let key = ring().keys[i].public_key();
                let reported = d
                    .faulty_detected
                    .iter()
                    .any(|f| &f.agent_id == id && f.reason == FaultReason::Equivocation);
                let evidence = rep.effects.iter().any(|(_, e)| {
                    matches!(e, Effect::Equivocation(ev) if &ev.agent_id == id && ev.verify(&key, &limits))
                });
                if !(reported && evidence) {
                    return Err(format!(
                        "equivocator {id} not caught: in faulty_detected={reported}, verified evidence={evidence}; faulty_detected={:?}",
                        d.faulty_detected
                    ));
                }
            }
            Ok(())
        });
        explain(&sc, &rep, verdict)
    });
    // Single-round algorithms may close before the second ballot: caught whenever it
    // arrived strictly before the session finished.
    let seeds2 = Seeds::new(6_500, 200, 12);
    let knobs = Knobs::new(CHOICE_FAMILY)
        .attacks(&[Attack::Equivocate, Attack::Adaptive])
        .classes(&[WithinF, BeyondF])
        .n(4, 10)
        .small_n_below(&seeds2, 8);
    check_seeds("equivocators_are_detected_and_reported", seeds2, |seed| {
        run(seed, &knobs, check::equivocators_reported)
    });
}

#[test]
fn forged_and_replayed_ballots_never_count() {
    let mut algos = Algo::SINGLE_ROUND.to_vec();
    algos.extend([Algo::Byzantine; 3]);
    let seeds = Seeds::new(7_000, 300, 20);
    let knobs = Knobs::new(&algos)
        .attacks(&[Attack::InvalidSignature, Attack::Replay])
        .classes(&[WithinF, BeyondF])
        .honest(HonestPrefs::Unanimous)
        .n(4, 10)
        .small_n_below(&seeds, 7);
    check_seeds("forged_and_replayed_ballots_never_count", seeds, |seed| {
        run(seed, &knobs, check::forged_and_replayed_never_count)
    });
}

#[test]
fn majority_family_agrees_with_offline_tally() {
    // The choice family, and the other single-round tallies (auction, leader election, work
    // distribution) alike, under every attack and network.
    let mut algos = CHOICE_FAMILY.to_vec();
    algos.extend(CHOICE_FAMILY);
    algos.extend([Algo::Auction, Algo::LeaderElection, Algo::WorkDistribution]);
    let seeds = Seeds::new(8_000, 400, 40);
    let knobs = Knobs::new(&algos)
        .classes(&[Zero, WithinF, BeyondF])
        .n(3, 12)
        .small_n_below(&seeds, 8);
    check_seeds("majority_family_agrees_with_offline_tally", seeds, |seed| {
        run(seed, &knobs, check::offline_tally_agrees)
    });
}

#[test]
fn early_close_matches_full_count() {
    let seeds = Seeds::new(9_000, 300, 25);
    let knobs = Knobs::new(&[
        Algo::Majority,
        Algo::Supermajority,
        Algo::Unanimous,
        Algo::Plurality,
        Algo::Weighted,
    ])
    .attacks(&[Attack::None, Attack::Slow])
    .classes(&[Zero, WithinF, BeyondF])
    .nets(&[NetKind::Jittery])
    .n(7, 25)
    .small_n_below(&seeds, 15);
    let early = Cell::new(0u32);
    check_seeds("early_close_matches_full_count", seeds, |seed| {
        run(seed, &knobs, |sc, rep| {
            if check::closed_early(sc, rep) {
                early.set(early.get() + 1);
            }
            check::offline_tally_agrees(sc, rep)
        })
    });
    assert!(
        early.get() > 0 || std::env::var("MABEAM_SIM_SEED").is_ok(),
        "no run closed early: the property was not exercised"
    );
}

#[test]
fn iterative_converges_within_max_rounds_when_agents_move_toward_aggregate() {
    let seeds = Seeds::new(10_000, 300, 25);
    let knobs = Knobs::new(&[Algo::Iterative])
        .attacks(&[Attack::None])
        .nets(&[NetKind::Perfect, NetKind::Jittery])
        .n(3, 20)
        .small_n_below(&seeds, 8);
    check_seeds(
        "iterative_converges_within_max_rounds_when_agents_move_toward_aggregate",
        seeds,
        |seed| {
            let mut sc = Scenario::generate(seed, &knobs);
            // Values within [0, 100), every agent moving at least half-way each round: the
            // spread halves per round, so 15 rounds reach a threshold of 1 with room to spare.
            sc.params["max_rounds"] = 15.into();
            sc.params["convergence_threshold"] = 1.0.into();
            sc.params["require_convergence"] = true.into();
            sc.timeout_ms = sc.timeout_ms.max(3_000);
            for a in &mut sc.agents {
                a.pref.step = a.pref.step.max(0.5);
            }
            let rep = simulate(&sc);
            let verdict = check::finishes_exactly_once(&rep).and_then(|()| {
                check::iterative_sound(&sc, &rep)?;
                let d = rep.decision().expect("finished");
                match (&d.status, &d.outcome) {
                    (Status::Decided, Some(Outcome::Value { dispersion, .. }))
                        if *dispersion <= 1.0 =>
                    {
                        Ok(())
                    }
                    _ => Err(format!(
                        "did not converge in {} rounds: {:?}",
                        d.rounds, d.reason
                    )),
                }
            });
            explain(&sc, &rep, verdict)
        },
    );
}

#[test]
fn adaptive_switches_are_recorded_with_reasons() {
    let seeds = Seeds::new(11_000, 300, 14);
    let knobs = Knobs::new(&[Algo::Adaptive])
        .classes(&[Zero, WithinF, BeyondF])
        .n(4, 10)
        .small_n_below(&seeds, 7);
    let switched = Cell::new(0u32);
    check_seeds(
        "adaptive_switches_are_recorded_with_reasons",
        seeds,
        |seed| {
            run(seed, &knobs, |sc, rep| {
                if rep.decision().is_some_and(|d| !d.switches.is_empty()) {
                    switched.set(switched.get() + 1);
                }
                check::adaptive_switches_recorded(sc, rep)?;
                check::certificate_valid(sc, rep)
            })
        },
    );
    assert!(
        switched.get() > 0 || std::env::var("MABEAM_SIM_SEED").is_ok(),
        "no run switched: the property was not exercised"
    );
}

#[test]
fn pipeline_stage_outputs_feed_the_next_stage() {
    let seeds = Seeds::new(12_000, 300, 20);
    let knobs = Knobs::new(&[Algo::Pipeline])
        .classes(&[Zero, WithinF])
        .n(4, 10)
        .small_n_below(&seeds, 7);
    let fed = Cell::new(0u32);
    check_seeds(
        "pipeline_stage_outputs_feed_the_next_stage",
        seeds,
        |seed| {
            run(seed, &knobs, |sc, rep| {
                if rep
                    .proposals
                    .iter()
                    .any(|(_, p)| p.proposal.get("stage").is_some())
                {
                    fed.set(fed.get() + 1);
                }
                check::pipeline_feeds(sc, rep)
            })
        },
    );
    assert!(
        fed.get() > 0 || std::env::var("MABEAM_SIM_SEED").is_ok(),
        "no pipeline reached a second stage"
    );
}

#[test]
fn every_session_finishes_exactly_once_by_its_timeout() {
    let seeds = Seeds::new(13_000, 400, 30);
    let knobs = Knobs::new(&Algo::ALL)
        .classes(&[Zero, WithinF, BeyondF])
        .nets(&[
            NetKind::Lossy,
            NetKind::Partitioned,
            NetKind::Flapping,
            NetKind::Jittery,
        ])
        .n(4, 10)
        .small_n_below(&seeds, 7);
    check_seeds(
        "every_session_finishes_exactly_once_by_its_timeout",
        seeds,
        |seed| run(seed, &knobs, |_, _| Ok(())),
    );
}

#[test]
fn the_same_seed_replays_exactly() {
    let seeds = Seeds::new(14_000, 40, 4);
    let knobs = campaign::knobs().n(4, 13).small_n_below(&seeds, 6);
    check_seeds("the_same_seed_replays_exactly", seeds, |seed| {
        let sc = Scenario::generate(seed, &knobs);
        let (a, b) = (simulate(&sc), simulate(&sc));
        let key = |r: &Report| {
            (
                r.finishes.clone(),
                r.deliveries
                    .iter()
                    .map(|(t, e)| (*t, e.signature.clone()))
                    .collect::<Vec<_>>(),
                r.agent_decisions.clone(),
                r.net,
            )
        };
        if key(&a) == key(&b) {
            Ok(())
        } else {
            Err(format!(
                "two runs of one scenario differ: {}",
                sc.describe()
            ))
        }
    });
}

#[test]
fn campaign_smoke() {
    let knobs = campaign::knobs().small_n_below(&SMOKE, 7);
    if let Some(seed) = std::env::var("MABEAM_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        campaign::replay_seed(&knobs, seed);
        return;
    }
    let summary = campaign::run(&knobs, SMOKE.salt, SMOKE.count(), 2);
    assert!(
        summary.violations.is_empty(),
        "campaign_smoke: {} safety violations\n{}\n{}",
        summary.violations.len(),
        summary.table,
        campaign::violation_lines(&summary.violations, "campaign_smoke")
    );
}

/// The smoke campaign's seeds (apart from the long campaign's `0..MABEAM_SIM_RUNS`).
const SMOKE: Seeds = Seeds::new(1_000_000, 300, 30);

/// `make sim`: `MABEAM_SIM_RUNS` (default 100000) runs on every core, then the summary table.
#[test]
#[ignore = "the long campaign; run with `make sim`"]
fn campaign() {
    let knobs = campaign::knobs();
    if let Some(seed) = std::env::var("MABEAM_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        campaign::replay_seed(&knobs, seed);
        return;
    }
    let runs = std::env::var("MABEAM_SIM_RUNS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(100_000u64);
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    println!("campaign: {runs} runs on {threads} threads (seeds 0..{runs})");
    let summary = campaign::run(&knobs, 0, runs, threads);
    println!("{}", summary.table);
    println!(
        "wall time {:.1} s ({:.2} ms per run per thread)",
        summary.wall.as_secs_f64(),
        summary.wall.as_secs_f64() * 1e3 * threads as f64 / runs.max(1) as f64
    );
    println!("byzantine, ≤ f faulty, lossless network: decided / runs by honest preferences");
    for (mode, (runs, decided)) in &summary.byzantine_liveness {
        println!("  {mode:<17} {decided:>6} / {runs:<6}");
    }
    println!(
        "honest agents listed in faulty_detected (silence aside), by reason: count, example seeds"
    );
    for (reason, (count, seeds)) in &summary.honest_flagged {
        println!("  {reason:?}: {count} (seeds {seeds:?})");
    }
    println!(
        "liveness misses (byzantine, ≤ f faulty, lossless network, unanimous honest, no decision): {}",
        summary.liveness_misses.len()
    );
    for (seed, reason) in summary.liveness_misses.iter().take(10) {
        println!("  seed {seed}: {reason}");
    }
    println!("safety violations: {}", summary.violations.len());
    if !summary.violations.is_empty() {
        println!(
            "{}",
            campaign::violation_lines(&summary.violations, "campaign")
        );
    }
    assert!(
        summary.violations.is_empty(),
        "{} safety violations",
        summary.violations.len()
    );
}

// ---- Minimal reproductions ------------------------------------------------------------------
//
// Hand-driven runs of what the simulations found, small enough to read in full.

/// n = 6 gives f = ⌊5/3⌋ = 1 and a quorum of 2f+1 = 3, so two disjoint groups of three honest
/// agents can each gather a "quorum": with no faulty agent at all, honest replicas decide
/// differently (and the certificate of either verifies). Quorums must intersect in f+1
/// agents: ⌈(n+f+1)/2⌉ (4 here), which is 2f+1 only when n = 3f+1.
#[test]
fn honest_replicas_agree_when_n_exceeds_3f_plus_1() {
    let mut session = manual::start("byzantine", json!(null), 6, &["a", "b"], 3_000);
    let proposal = manual::proposals(&manual::drain(&mut session)).remove(0);
    let mut replicas = manual::replicas_for(&proposal, 6);
    for (i, r) in replicas.iter_mut().enumerate() {
        r.handle_proposal(T0 + 1, &proposal, if i < 3 { "a" } else { "b" })
            .expect("joins");
    }
    // Agents 0-2 and 3-5 hear their own group first (a slow link between the groups).
    let published = manual::pump(&mut replicas, T0 + 2, |from, to| (from < 3) == (to < 3));
    let decided: Vec<Option<String>> = replicas
        .iter()
        .map(|r| r.decided().map(str::to_owned))
        .collect();
    session.handle_envelopes(T0 + 3, published);
    let decision = manual::finished(&manual::drain(&mut session));
    assert!(
        decided.iter().all(|d| *d == decided[0]),
        "honest replicas decided {decided:?}; the coordinator decided {:?}",
        decision.and_then(|d| d.outcome)
    );
}

/// Commits that reach the coordinator after a round's deadline are ignored (they are of a
/// closed round), and replicas that decided never answer later rounds
/// (`ByzantineReplica::handle_proposal` returns early once `decided` is set): every honest
/// replica decided "a" in round 1, yet the session ends with no decision.
#[test]
fn coordinator_decides_what_honest_replicas_decided_when_their_commits_arrive_late() {
    let mut session = manual::start("byzantine", json!({"max_rounds": 3}), 4, &["a", "b"], 3_000);
    let round1 = manual::proposals(&manual::drain(&mut session)).remove(0);
    let mut replicas = manual::replicas_for(&round1, 4);
    for r in &mut replicas {
        r.handle_proposal(T0 + 1, &round1, "a").expect("joins");
    }
    let published = manual::pump(&mut replicas, T0 + 2, |_, _| true);
    assert!(
        replicas.iter().all(|r| r.decided() == Some("a")),
        "setup: every replica decides a"
    );
    let limits = Limits::default();
    let (prepares, commits): (Vec<_>, Vec<_>) = published.into_iter().partition(|e| {
        e.open::<mabeam_protocol::session::Ballot>(&limits)
            .is_ok_and(|b| b.phase == Phase::Prepare)
    });
    // The prepares arrive in time; the commits a moment after the round's deadline.
    session.handle_envelopes(T0 + 10, prepares);
    let mut now = round1.deadline_ms;
    session.handle_timeout(now);
    session.handle_envelopes(now + 5, commits);
    let mut decision = None;
    while decision.is_none() {
        let effects = manual::drain(&mut session);
        decision = manual::finished(&effects);
        for p in manual::proposals(&effects) {
            for r in &mut replicas {
                r.handle_proposal(now + 10, &p, "a").expect("same session");
            }
            let published = manual::pump(&mut replicas, now + 11, |_, _| true);
            session.handle_envelopes(now + 12, published);
        }
        if decision.is_none() {
            now = session
                .next_timeout()
                .expect("unfinished session has a timer");
            session.handle_timeout(now);
        }
    }
    let decision = decision.expect("finished");
    assert_eq!(
        decision.outcome.as_ref().and_then(Outcome::choice),
        Some("a"),
        "every honest replica decided a; the session ended {:?}: {:?}",
        decision.status,
        decision.reason
    );
}

/// A network duplicate of an honest agent's ballot that arrived after its round closed (so
/// was rightly ignored) is rejected as a replay, and the honest agent is reported faulty:
/// `Intake::admit` marks the replay window before it checks the round.
#[test]
fn network_duplicates_never_make_an_honest_agent_faulty() {
    let mut session = manual::start("byzantine", json!({"max_rounds": 3}), 4, &["a", "b"], 3_000);
    let round1 = manual::proposals(&manual::drain(&mut session)).remove(0);
    let prepares: Vec<_> = (0..4)
        .map(|i| manual::ballot(i, i, 1, 1, Phase::Prepare, "a", T0 + 5))
        .collect();
    session.handle_envelopes(T0 + 10, prepares);
    // Two commits in time: below the quorum of 3.
    session.handle_envelopes(
        T0 + 20,
        (1..3)
            .map(|i| manual::ballot(i, i, 1, 2, Phase::Commit, "a", T0 + 15))
            .collect(),
    );
    session.handle_timeout(round1.deadline_ms);
    // Agent 0's commit arrives late, and the network delivers it twice.
    let late = manual::ballot(0, 0, 1, 2, Phase::Commit, "a", T0 + 15);
    session.handle_envelope(round1.deadline_ms + 5, late.clone());
    session.handle_envelope(round1.deadline_ms + 6, late);
    // Round 2: everyone prepares and commits a; the session decides.
    let at = round1.deadline_ms + 10;
    let round2: Vec<_> = (0..4)
        .flat_map(|i| {
            [
                manual::ballot(i, i, 2, 3, Phase::Prepare, "a", at),
                manual::ballot(i, i, 2, 4, Phase::Commit, "a", at),
            ]
        })
        .collect();
    session.handle_envelopes(at + 5, round2);
    let effects = manual::drain(&mut session);
    let rejected: Vec<String> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::BallotRejected {
                agent,
                reason,
                detail,
            } => Some(format!("{agent}: {reason:?} ({detail})")),
            _ => None,
        })
        .collect();
    let decision = manual::finished(&effects).expect("decided in round 2");
    assert!(
        rejected.is_empty() && decision.faulty_detected.is_empty(),
        "a duplicated late ballot made an honest agent faulty: rejected {rejected:?}; faulty_detected {:?}",
        decision.faulty_detected
    );
}

/// A ballot forged in an honest agent's name is refused (right), but the claimed sender is
/// recorded as faulty (`Intake::reject` on an invalid signature). `SingleRound::exclude`
/// then treats that honest agent as done: when an equivocator is excluded, the round closes
/// without waiting for the honest agents' real votes. Here agents 0 and 1 vote a, agent 2
/// votes b, and the attacker (3) decides the outcome: b.
#[test]
fn forged_ballots_never_cost_an_honest_agent_its_vote() {
    let mut session = manual::start(
        "majority",
        json!({"min_participation": 0.0}),
        4,
        &["a", "b"],
        3_000,
    );
    let _ = manual::drain(&mut session);
    // The attacker forges ballots in the names of agents 0 and 1, signed with its own key.
    session.handle_envelope(
        T0 + 10,
        manual::ballot(3, 0, 1, 1, Phase::Vote, "b", T0 + 9),
    );
    session.handle_envelope(
        T0 + 10,
        manual::ballot(3, 1, 1, 1, Phase::Vote, "b", T0 + 9),
    );
    session.handle_envelope(
        T0 + 11,
        manual::ballot(2, 2, 1, 1, Phase::Vote, "b", T0 + 10),
    );
    // The attacker equivocates and is excluded.
    session.handle_envelope(
        T0 + 12,
        manual::ballot(3, 3, 1, 1, Phase::Vote, "a", T0 + 11),
    );
    session.handle_envelope(
        T0 + 12,
        manual::ballot(3, 3, 1, 2, Phase::Vote, "b", T0 + 11),
    );
    // The honest agents' real votes.
    session.handle_envelope(
        T0 + 13,
        manual::ballot(0, 0, 1, 1, Phase::Vote, "a", T0 + 12),
    );
    session.handle_envelope(
        T0 + 13,
        manual::ballot(1, 1, 1, 1, Phase::Vote, "a", T0 + 12),
    );
    session.handle_timeout(T0 + 3_000);
    let decision = manual::finished(&manual::drain(&mut session)).expect("finished");
    assert_eq!(
        decision.outcome.as_ref().and_then(Outcome::choice),
        Some("a"),
        "agents 0 and 1 voted a, agent 2 b; decided {:?} at +{} ms with tally {:?}",
        decision.outcome.as_ref().and_then(Outcome::choice),
        decision.finished_ms - T0,
        decision.history.first().map(|r| &r.tally)
    );
}

/// The same root cause inflates an adaptive session's failure ratio: two forged ballots
/// (from anyone on the bus) in honest agents' names make half of the electorate "failed", and
/// the session leaves its first algorithm although every agent is honest and answering.
#[test]
fn forged_ballots_never_trigger_an_adaptive_switch() {
    let params = json!({"chain": [{"algorithm": "weighted"}, {"algorithm": "majority"}], "failure_ratio": 0.34});
    let mut session = manual::start("adaptive", params, 4, &["a", "b"], 3_000);
    let _ = manual::drain(&mut session);
    session.handle_envelope(
        T0 + 10,
        manual::ballot(3, 0, 1, 1, Phase::Vote, "b", T0 + 9),
    );
    session.handle_envelope(
        T0 + 10,
        manual::ballot(3, 1, 1, 1, Phase::Vote, "b", T0 + 9),
    );
    session.handle_envelope(
        T0 + 11,
        manual::ballot(2, 2, 1, 1, Phase::Vote, "a", T0 + 10),
    );
    let switches: Vec<_> = manual::drain(&mut session)
        .into_iter()
        .filter_map(|e| match e {
            Effect::Switched(s) => Some(s),
            _ => None,
        })
        .collect();
    assert!(
        switches.is_empty(),
        "switched on forged ballots alone: {switches:?}"
    );
}

/// n = 4, f = 1, quorum 3. Agent 0 equivocates: prepare and commit "a" to agents 1 and 3,
/// "x" to agent 2, both to the coordinator (which excludes it). Agents 1 and 3 see prepares
/// a from {0, 1, 2}, commit, see commits a from {0, 1, 3} and decide a. The coordinator
/// rightly discards agent 0's commit and holds two. In round 2 (suggestion a) replicas 1 and
/// 3 stay silent, because `ByzantineReplica::handle_proposal` returns early once `decided`
/// is set; agent 2 alone prepares, and the session ends with no decision although two honest
/// replicas decided a and the third accepts it.
#[test]
fn coordinator_decides_what_honest_replicas_decided_despite_an_excluded_equivocator() {
    let mut session = manual::start(
        "byzantine",
        json!({"max_rounds": 3}),
        4,
        &["a", "b", "x"],
        3_000,
    );
    let round1 = manual::proposals(&manual::drain(&mut session)).remove(0);
    let mut replicas = manual::replicas_for(&round1, 4);
    let now = T0 + 5;
    // The equivocator's ballots.
    let (pa, px) = (
        manual::ballot(0, 0, 1, 1, Phase::Prepare, "a", now),
        manual::ballot(0, 0, 1, 2, Phase::Prepare, "x", now),
    );
    let (ca, cx) = (
        manual::ballot(0, 0, 1, 3, Phase::Commit, "a", now),
        manual::ballot(0, 0, 1, 4, Phase::Commit, "x", now),
    );
    for (i, env) in [(1, &pa), (3, &pa), (2, &px), (1, &ca), (3, &ca), (2, &cx)] {
        replicas[i].handle_envelope(now, env).expect("same session");
    }
    session.handle_envelopes(now + 1, vec![pa, px, ca, cx]);
    for (i, choice) in [(1, "a"), (2, "a"), (3, "b")] {
        replicas[i]
            .handle_proposal(now + 2, &round1, choice)
            .expect("joins");
    }
    // Honest agents hear each other (agent 0 gets nothing more from anyone).
    let published = manual::pump(&mut replicas, now + 3, |from, to| from != 0 && to != 0);
    session.handle_envelopes(now + 4, published);
    let decided: Vec<Option<&str>> = replicas.iter().map(ByzantineReplica::decided).collect();
    assert_eq!(
        decided[1..],
        [Some("a"), None, Some("a")],
        "setup: replicas 1 and 3 decide a"
    );
    let mut now = round1.deadline_ms;
    session.handle_timeout(now);
    let decision = loop {
        let effects = manual::drain(&mut session);
        if let Some(decision) = manual::finished(&effects) {
            break decision;
        }
        let proposals = manual::proposals(&effects);
        for p in &proposals {
            for r in replicas.iter_mut().skip(1) {
                r.handle_proposal(now + 1, p, "a").expect("same session");
            }
            let published = manual::pump(&mut replicas, now + 2, |from, to| from != 0 && to != 0);
            session.handle_envelopes(now + 3, published);
        }
        if proposals.is_empty() {
            now = session
                .next_timeout()
                .expect("unfinished session has a timer");
            session.handle_timeout(now);
        }
    };
    assert_eq!(
        decision.outcome.as_ref().and_then(Outcome::choice),
        Some("a"),
        "honest replicas 1 and 3 decided a and replica 2 accepts a; the session ended {:?}: {:?}",
        decision.status,
        decision.reason
    );
}
