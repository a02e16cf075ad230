//! The properties, as checks over a scenario and the report of its run. Each returns
//! `Err(explanation)` when the property does not hold.

use std::{
    cell::RefCell,
    collections::{hash_map::DefaultHasher, BTreeMap, BTreeSet, HashMap},
    hash::{Hash as _, Hasher as _},
};

use mabeam_consensus::{
    algorithm::DEFAULT_OPTIONS,
    tally::{self, TallyInput, Vote},
    AlgorithmSpec, Effect, Electorate,
};
use mabeam_protocol::{
    result::FaultReason,
    session::{Ballot, Phase, Proposal, RoundContext, VoteValue},
    AgentId, Limits, Outcome, PublicKey, SessionId, SignedEnvelope, Status,
};
use rand_chacha::{rand_core::SeedableRng, ChaCha8Rng};
use serde_json::Value;

use super::{
    agent::Behaviour,
    keys::ring,
    scenario::{Algo, Scenario},
    world::{electorate, Report},
};

pub(crate) type Verdict = Result<(), String>;

const CLOCK_TOLERANCE_MS: u64 = 30_000;

thread_local! {
    /// Signature checks of the current run, by envelope and key: the checks look at the same
    /// envelopes many times, and verification dominates the cost of a run.
    static VERIFIED: RefCell<HashMap<u64, bool>> = RefCell::new(HashMap::new());
}

/// Forgets the signature checks of the previous run.
pub(crate) fn forget_verifications() {
    VERIFIED.with(|v| v.borrow_mut().clear());
}

/// `env.verify(key).is_ok()`, remembered for the run.
fn verified(env: &SignedEnvelope, key: &PublicKey) -> bool {
    let mut h = DefaultHasher::new();
    (
        env.sender.as_str(),
        env.session.as_str(),
        env.round,
        env.sequence,
        env.timestamp_ms,
    )
        .hash(&mut h);
    env.payload.hash(&mut h);
    env.signature.hash(&mut h);
    key.as_bytes().hash(&mut h);
    let id = h.finish();
    if let Some(ok) = VERIFIED.with(|v| v.borrow().get(&id).copied()) {
        return ok;
    }
    let ok = env.verify(key).is_ok();
    VERIFIED.with(|v| v.borrow_mut().insert(id, ok));
    ok
}

fn ensure(ok: bool, msg: impl FnOnce() -> String) -> Verdict {
    if ok {
        Ok(())
    } else {
        Err(msg())
    }
}

/// The run itself went through: the session accepted the scenario and did not stall.
pub(crate) fn ran(rep: &Report) -> Verdict {
    if let Some(e) = &rep.init_error {
        return Err(format!("the session refused the scenario: {e}"));
    }
    if let Some(s) = &rep.stalled {
        return Err(format!("stalled: {s}"));
    }
    Ok(())
}

/// Exactly one `Finished`, nothing after it, by the session's timeout.
pub(crate) fn finishes_exactly_once(rep: &Report) -> Verdict {
    ran(rep)?;
    ensure(rep.finishes.len() == 1, || {
        format!(
            "{} Finished effects (expected exactly one)",
            rep.finishes.len()
        )
    })?;
    ensure(rep.effects_after_finish == 0, || {
        format!("{} effects after Finished", rep.effects_after_finish)
    })?;
    let (at, d) = &rep.finishes[0];
    ensure(
        matches!(rep.effects.last(), Some((_, Effect::Finished(_)))),
        || "Finished is not the last effect".into(),
    )?;
    ensure(*at <= rep.end_ms, || {
        format!(
            "finished at +{} ms, after the timeout (+{} ms)",
            at - rep.start_ms,
            rep.end_ms - rep.start_ms
        )
    })?;
    ensure(d.finished_ms == *at && d.started_ms == rep.start_ms, || {
        format!(
            "decision timings started={} finished={} do not match the run (start {}, finished effect at {})",
            d.started_ms, d.finished_ms, rep.start_ms, at
        )
    })?;
    ensure(d.status == Status::Decided || d.reason.is_some(), || {
        format!("{:?} without a reason", d.status)
    })?;
    ensure((d.status == Status::Decided) == d.outcome.is_some(), || {
        format!("status {:?} with outcome {:?}", d.status, d.outcome)
    })
}

/// Agents running the honest replica code (honest, slow, crashed, timing): their decisions.
fn honest_replica_decisions(sc: &Scenario, rep: &Report) -> Vec<(usize, String)> {
    (0..sc.n)
        .filter(|&i| sc.agents[i].behaviour.runs_honest_code())
        .filter_map(|i| {
            rep.agent_decisions
                .get(i)?
                .as_ref()
                .map(|(v, _)| (i, v.clone()))
        })
        .collect()
}

/// No two honest replicas decide differently, and the coordinator's decision is theirs.
pub(crate) fn byzantine_agreement(sc: &Scenario, rep: &Report) -> Verdict {
    let decisions = honest_replica_decisions(sc, rep);
    if let Some((first_agent, first)) = decisions.first() {
        if let Some((other_agent, other)) = decisions.iter().find(|(_, v)| v != first) {
            return Err(format!(
                "honest replicas disagree: agent {first_agent} decided {first:?}, agent {other_agent} decided {other:?}"
            ));
        }
    }
    if let Some(c) = rep.decided_choice() {
        if let Some((agent, v)) = decisions.iter().find(|(_, v)| v != c) {
            return Err(format!(
                "the coordinator decided {c:?} but honest agent {agent} decided {v:?}"
            ));
        }
    }
    Ok(())
}

/// Honest agents unanimous for v: nothing but v is ever decided.
pub(crate) fn byzantine_validity(sc: &Scenario, rep: &Report) -> Verdict {
    let Some(v) = &sc.unanimous else {
        return Ok(());
    };
    if let Some(c) = rep.decided_choice() {
        ensure(c == v, || {
            format!("honest agents all want {v:?}; the coordinator decided {c:?}")
        })?;
    }
    for (i, d) in honest_replica_decisions(sc, rep) {
        ensure(d == *v, || {
            format!("honest agents all want {v:?}; honest agent {i} decided {d:?}")
        })?;
    }
    Ok(())
}

/// Values some honest agent prefers or accepts.
fn honest_held(sc: &Scenario) -> BTreeSet<String> {
    sc.honest()
        .flat_map(|i| {
            let p = &sc.agents[i].pref;
            std::iter::once(p.choice.clone()).chain(p.acceptable.iter().cloned())
        })
        .collect()
}

/// More than f attackers: a decision, if any, is a value honest agents hold, never the
/// attackers' own; with unanimous honest agents nobody decides anything else.
pub(crate) fn byzantine_beyond_f_safety(sc: &Scenario, rep: &Report) -> Verdict {
    let held = honest_held(sc);
    if let Some(c) = rep.decided_choice() {
        ensure(held.contains(c), || {
            format!(
                "the coordinator decided {c:?}, which no honest agent holds (honest hold {held:?})"
            )
        })?;
    }
    for (i, d) in honest_replica_decisions(sc, rep) {
        ensure(held.contains(&d), || {
            format!("honest agent {i} decided {d:?}, which no honest agent holds (honest hold {held:?})")
        })?;
    }
    byzantine_validity(sc, rep)
}

/// Every certificate in a decision verifies, names the decided value and the session, and is
/// signed by distinct electorate members whose keys the registry trusts.
pub(crate) fn certificate_valid(sc: &Scenario, rep: &Report) -> Verdict {
    let Some(d) = rep.decision() else {
        return Ok(());
    };
    let Some(cert) = &d.certificate else {
        return ensure(
            !(sc.algo == Algo::Byzantine && d.status == Status::Decided),
            || "a byzantine decision without a certificate".into(),
        );
    };
    cert.verify(&Limits::default())
        .map_err(|e| format!("certificate does not verify: {e}"))?;
    let ring = ring();
    cert.verify_keys(|id| {
        let i = ring.ids.iter().position(|x| x == id)?;
        (i < sc.n).then(|| ring.keys[i].public_key())
    })
    .map_err(|e| format!("certificate electorate: {e}"))?;
    ensure(cert.session_id == sc.session_id(), || {
        format!("certificate of session {}", cert.session_id)
    })?;
    ensure(Some(cert.value.as_str()) == rep.decided_choice(), || {
        format!(
            "certificate names {:?}, the decision {:?}",
            cert.value,
            rep.decided_choice()
        )
    })?;
    let signers: BTreeSet<&AgentId> = cert.commits.iter().map(|c| &c.sender).collect();
    ensure(signers.len() == cert.commits.len(), || {
        "certificate repeats a signer".into()
    })?;
    let members: BTreeSet<&AgentId> = cert.electorate.iter().map(|m| &m.agent_id).collect();
    ensure(signers.is_subset(&members), || {
        "certificate signer outside its electorate".into()
    })?;
    ensure(signers.len() >= cert.quorum as usize, || {
        "certificate below its quorum".into()
    })?;
    // Signers are the agents themselves: none of them signed with a key it does not own.
    for c in &cert.commits {
        let i = ring
            .ids
            .iter()
            .position(|x| *x == c.sender)
            .unwrap_or(usize::MAX);
        ensure(i < sc.n && verified(c, &ring.keys[i].public_key()), || {
            format!("commit of {} is not signed by its registered key", c.sender)
        })?;
    }
    Ok(())
}

/// Every agent that sent the coordinator two different ballots for one slot (both before
/// the session finished) is reported with reason equivocation, with evidence that verifies.
pub(crate) fn equivocators_reported(sc: &Scenario, rep: &Report) -> Verdict {
    let Some((finished_at, d)) = rep.finishes.first() else {
        return Err("no decision".into());
    };
    let limits = Limits::default();
    let ring = ring();
    let sid = sc.session_id();
    // Slots (round, phase, sender) → first value, from what reached the coordinator before
    // it finished, with a valid signature.
    let mut first: BTreeMap<(u32, Phase, AgentId), VoteValue> = BTreeMap::new();
    let mut proven: BTreeSet<AgentId> = BTreeSet::new();
    for (t, env) in &rep.deliveries {
        if t > finished_at || env.session != sid {
            continue;
        }
        let Some(i) = ring
            .ids
            .iter()
            .position(|x| *x == env.sender)
            .filter(|&i| i < sc.n)
        else {
            continue;
        };
        if !verified(env, &ring.keys[i].public_key()) {
            continue;
        }
        let Ok(b) = env.open::<Ballot>(&limits) else {
            continue;
        };
        match first.get(&(env.round, b.phase, env.sender.clone())) {
            Some(v) if *v != b.value => {
                proven.insert(env.sender.clone());
            }
            Some(_) => {}
            None => {
                first.insert((env.round, b.phase, env.sender.clone()), b.value);
            }
        }
    }
    let evidence: Vec<_> = rep
        .effects
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::Equivocation(ev) => Some(ev),
            _ => None,
        })
        .collect();
    for ev in &evidence {
        let i = ring.ids.iter().position(|x| *x == ev.agent_id).unwrap_or(0);
        ensure(ev.verify(&ring.keys[i].public_key(), &limits), || {
            format!(
                "equivocation evidence against {} does not verify",
                ev.agent_id
            )
        })?;
        ensure(sc.agents[i].behaviour.lies(), || {
            format!(
                "equivocation evidence against non-lying agent {} ({:?})",
                ev.agent_id, sc.agents[i].behaviour
            )
        })?;
    }
    // Only a slot's first two different values within one batch before the finishing
    // envelope are certain to be seen; require what the coordinator saw strictly before.
    for agent in &proven {
        let reported = d
            .faulty_detected
            .iter()
            .any(|f| &f.agent_id == agent && f.reason == FaultReason::Equivocation);
        let has_evidence = evidence.iter().any(|ev| &ev.agent_id == agent);
        if !(reported && has_evidence) {
            // The session may have finished within the batch that carried the second ballot.
            let seen_before_finish = rep
                .deliveries
                .iter()
                .filter(|(t, e)| t < finished_at && &e.sender == agent)
                .count()
                >= 2;
            if seen_before_finish && proven_before(rep, sc, agent, *finished_at) {
                return Err(format!(
                    "{agent} sent two different ballots for one slot before the session finished; reported={reported} evidence={has_evidence}; faulty_detected={:?}",
                    d.faulty_detected
                ));
            }
        }
    }
    Ok(())
}

/// True when `agent`'s two different ballots for one slot both arrived strictly before `t`.
fn proven_before(rep: &Report, sc: &Scenario, agent: &AgentId, t: u64) -> bool {
    let limits = Limits::default();
    let ring = ring();
    let Some(i) = ring.ids.iter().position(|x| x == agent) else {
        return false;
    };
    let key = ring.keys[i].public_key();
    let sid = sc.session_id();
    let mut first: BTreeMap<(u32, Phase), VoteValue> = BTreeMap::new();
    for (at, env) in &rep.deliveries {
        if *at >= t || &env.sender != agent || env.session != sid || !verified(env, &key) {
            continue;
        }
        let Ok(b) = env.open::<Ballot>(&limits) else {
            continue;
        };
        match first.get(&(env.round, b.phase)) {
            Some(v) if *v != b.value => return true,
            Some(_) => {}
            None => {
                first.insert((env.round, b.phase), b.value);
            }
        }
    }
    false
}

// ---- Offline tallies -----------------------------------------------------------------------

/// What reached the coordinator for one round, in delivery order, as a session should see it.
#[derive(Debug)]
enum Step {
    Vote(Vote),
    /// A second, different ballot: the agent's ballots stop counting.
    Exclude(AgentId),
}

/// Replays the coordinator's admission rules independently: member, session, round, strict
/// signature, clock tolerance, arrival by `until_ms`, decodable vote ballot the algorithm
/// takes; a different second ballot from the same agent is an exclusion. Each step comes
/// with its arrival time.
fn admitted(
    rep: &Report,
    sid: &SessionId,
    round: u32,
    until_ms: u64,
    spec: &AlgorithmSpec,
    options: &[String],
    electorate: &Electorate,
) -> Vec<(u64, Step)> {
    let limits = Limits::default();
    let mut steps = Vec::new();
    let mut first: BTreeMap<AgentId, VoteValue> = BTreeMap::new();
    let mut excluded: BTreeSet<AgentId> = BTreeSet::new();
    for (t, env) in &rep.deliveries {
        if *t > until_ms || env.session != *sid || env.round != round {
            continue;
        }
        let Some(member) = electorate.get(&env.sender) else {
            continue;
        };
        if !verified(env, &member.public_key) || t.abs_diff(env.timestamp_ms) > CLOCK_TOLERANCE_MS {
            continue;
        }
        let Ok(b) = env.open::<Ballot>(&limits) else {
            continue;
        };
        if b.phase != Phase::Vote || excluded.contains(&env.sender) {
            continue;
        }
        match first.get(&env.sender) {
            Some(v) if *v == b.value => continue,
            Some(_) => {
                excluded.insert(env.sender.clone());
                steps.push((*t, Step::Exclude(env.sender.clone())));
                continue;
            }
            None => {
                first.insert(env.sender.clone(), b.value.clone());
            }
        }
        if tally::check_ballot(spec, &b.value, options, electorate).is_err() {
            continue;
        }
        steps.push((
            *t,
            Step::Vote(Vote {
                agent: env.sender.clone(),
                value: b.value,
                confidence: b.confidence,
            }),
        ));
    }
    steps
}

/// The ballots counted after the first `k` steps; with `later`, plus the votes of the steps
/// after them (a closed round's counted ballots stay counted: later exclusions are moot).
fn votes_after(steps: &[(u64, Step)], k: usize, later: bool) -> Vec<Vote> {
    let mut votes: BTreeMap<AgentId, Vote> = BTreeMap::new();
    for (_, step) in &steps[..k] {
        match step {
            Step::Vote(v) => {
                votes.entry(v.agent.clone()).or_insert_with(|| v.clone());
            }
            Step::Exclude(a) => {
                votes.remove(a);
            }
        }
    }
    if later {
        for (_, step) in &steps[k..] {
            if let Step::Vote(v) = step {
                votes.entry(v.agent.clone()).or_insert_with(|| v.clone());
            }
        }
    }
    votes.into_values().collect()
}

fn offline(
    spec: &AlgorithmSpec,
    votes: &[Vote],
    options: &[String],
    electorate: &Electorate,
    seed: u64,
) -> Option<Outcome> {
    let input = TallyInput {
        votes,
        options,
        electorate,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    tally::tally_single_round(spec, &input, &mut rng).and_then(|r| r.outcome)
}

/// The part of an outcome that says what was decided (not how strongly).
fn decisive(outcome: &Option<Outcome>) -> Option<String> {
    outcome.as_ref().map(|o| match o {
        Outcome::Choice { choice, .. } => format!("choice {choice}"),
        Outcome::Award { winner, price, .. } => format!("award {winner} at {price}"),
        Outcome::Leader { leader } => format!("leader {leader}"),
        Outcome::Assignment { assignments } => format!("assignment {assignments:?}"),
        Outcome::Value { value, .. } => format!("value {value:?}"),
    })
}

/// One single-round stage checked against offline tallies of what reached the coordinator.
///
/// The session's outcome must be the tally of the ballots it had when it closed: a prefix of
/// the admitted steps, all of those that arrived before the closing instant and some of the
/// batch that arrived at it. And it must decide what the full count decides: those ballots
/// plus every later one admitted by the deadline (early close never changes the result).
#[allow(clippy::too_many_arguments)]
fn stage_agrees(
    sc: &Scenario,
    rep: &Report,
    spec: &AlgorithmSpec,
    round: u32,
    options: &[String],
    electorate: &Electorate,
    closed_ms: u64,
    deadline_ms: u64,
    outcome: &Option<Outcome>,
) -> Verdict {
    let options: Vec<String> = if options.is_empty() && spec.uses_options() {
        DEFAULT_OPTIONS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        options.to_vec()
    };
    let sid = sc.session_id();
    let steps = admitted(rep, &sid, round, deadline_ms, spec, &options, electorate);
    let before = steps.iter().filter(|(t, _)| *t < closed_ms).count();
    let upto = steps.iter().filter(|(t, _)| *t <= closed_ms).count();
    let tally = |votes: Vec<Vote>| offline(spec, &votes, &options, electorate, sc.seed);
    let prefixes: Vec<usize> = (before..=upto)
        .filter(|&k| tally(votes_after(&steps, k, false)) == *outcome)
        .collect();
    if prefixes.is_empty() {
        return Err(format!(
            "round {round}: the session's outcome {outcome:?} is the offline tally of none of its first {before}..={upto} admitted ballots (all {upto} give {:?})",
            tally(votes_after(&steps, upto, false))
        ));
    }
    let fulls: Vec<Option<Outcome>> = prefixes
        .iter()
        .map(|&k| tally(votes_after(&steps, k, true)))
        .collect();
    ensure(
        fulls.iter().any(|full| decisive(full) == decisive(outcome)),
        || {
            format!(
            "round {round}: the session decided {:?} at +{} ms but counting the {} later ballots admitted by the deadline (+{} ms) decides {:?}",
            decisive(outcome),
            closed_ms - rep.start_ms,
            steps.len() - upto,
            deadline_ms - rep.start_ms,
            fulls.iter().map(decisive).collect::<Vec<_>>()
        )
        },
    )
}

/// Single-round algorithms: the decision is the offline tally of the delivered ballots.
pub(crate) fn offline_tally_agrees(sc: &Scenario, rep: &Report) -> Verdict {
    let Some((at, d)) = rep.finishes.first() else {
        return Err("no decision".into());
    };
    let Some((_, p)) = rep.proposals.first() else {
        return Err("no proposal".into());
    };
    let spec = AlgorithmSpec::parse(sc.algo.name(), &sc.params).map_err(|e| e.to_string())?;
    stage_agrees(
        sc,
        rep,
        &spec,
        p.round,
        &p.options,
        &electorate(sc),
        *at,
        p.deadline_ms,
        &d.outcome,
    )
}

/// True when the early close happened: the session finished before ballots it would have
/// counted had arrived (so the property of [`offline_tally_agrees`] is about an early close).
pub(crate) fn closed_early(sc: &Scenario, rep: &Report) -> bool {
    let Some((at, _)) = rep.finishes.first() else {
        return false;
    };
    let sid = sc.session_id();
    rep.deliveries
        .iter()
        .any(|(t, e)| t > at && e.session == sid && e.round == 1 && *t <= rep.end_ms)
}

// ---- Pipelines -----------------------------------------------------------------------------

/// Each stage's outcome is the next stage's proposal, and each stage's outcome is what its
/// ballots decide.
pub(crate) fn pipeline_feeds(sc: &Scenario, rep: &Report) -> Verdict {
    let Some((finished_at, d)) = rep.finishes.first() else {
        return Err("no decision".into());
    };
    let stages = sc.params["stages"].as_array().cloned().unwrap_or_default();
    let full = electorate(sc);
    // Group proposals by stage: a proposal carrying {"stage": k} opens stage k+1.
    let mut by_stage: Vec<Vec<(u64, &Proposal, Vec<AgentId>)>> = vec![Vec::new()];
    let targets: Vec<Vec<AgentId>> = rep
        .effects
        .iter()
        .filter_map(|(_, e)| match e {
            Effect::Propose { to, .. } => Some(to.clone()),
            _ => None,
        })
        .collect();
    for ((t, p), to) in rep.proposals.iter().zip(targets) {
        let opens = p.proposal.get("stage").and_then(Value::as_u64);
        if let Some(k) = opens {
            ensure(k as usize == by_stage.len(), || {
                format!(
                    "proposal of round {} says stage {k} ended; {} stages ran so far",
                    p.round,
                    by_stage.len()
                )
            })?;
            by_stage.push(Vec::new());
        }
        by_stage
            .last_mut()
            .expect("one stage at least")
            .push((*t, p, to));
    }
    for (k, rounds) in by_stage.iter().enumerate() {
        let Some(stage) = stages.get(k) else {
            return Err(format!(
                "{} stages ran; the pipeline has {}",
                by_stage.len(),
                stages.len()
            ));
        };
        let algorithm = stage["algorithm"].as_str().unwrap_or_default();
        let spec = AlgorithmSpec::parse(algorithm, &stage["params"]).map_err(|e| e.to_string())?;
        let Some(&(_, last, ref to)) = rounds.last() else {
            continue;
        };
        let electorate = full
            .subset(to)
            .map_err(|e| format!("stage {}: {e}", k + 1))?;
        if let Some(ids) = stage.get("participants").and_then(Value::as_array) {
            let want: Vec<String> = ids
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let got: Vec<String> = to.iter().map(ToString::to_string).collect();
            let mut want_sorted = want.clone();
            want_sorted.sort();
            ensure(want_sorted == got, || {
                format!(
                    "stage {} proposed to {got:?}, its participants are {want:?}",
                    k + 1
                )
            })?;
        }
        // What the stage produced: the next stage's proposal, or the final decision.
        let (closed_at, outcome) = match by_stage.get(k + 1).and_then(|r| r.first()) {
            Some(&(t, next, _)) => {
                let outcome: Option<Outcome> = next
                    .proposal
                    .get("outcome")
                    .cloned()
                    .and_then(|o| serde_json::from_value(o).ok());
                ensure(
                    next.proposal.get("algorithm").and_then(Value::as_str) == Some(algorithm),
                    || {
                        format!(
                            "stage {} proposal names algorithm {:?}, the stage ran {algorithm}",
                            k + 2,
                            next.proposal.get("algorithm")
                        )
                    },
                )?;
                ensure(outcome.is_some(), || {
                    format!(
                        "stage {} proposal carries no outcome: {}",
                        k + 2,
                        next.proposal
                    )
                })?;
                (t, outcome)
            }
            None => {
                if k + 1 < stages.len() {
                    // The pipeline stopped here: this stage must have ended without a decision.
                    ensure(d.status != Status::Decided, || {
                        format!("pipeline decided after stage {} of {}", k + 1, stages.len())
                    })?;
                    ensure(
                        d.reason
                            .as_deref()
                            .is_some_and(|r| r.contains(&format!("stage {}", k + 1))),
                        || {
                            format!(
                                "pipeline stopped at stage {} with reason {:?}",
                                k + 1,
                                d.reason
                            )
                        },
                    )?;
                    continue;
                }
                (*finished_at, d.outcome.clone())
            }
        };
        if spec.name() == "byzantine" {
            // The stage's value must carry a quorum of valid commits of one of its rounds (a
            // late quorum of an earlier round counts too).
            if let Some(Outcome::Choice { choice, .. }) = &outcome {
                let quorum = match &last.context {
                    RoundContext::Byzantine { quorum, .. } => *quorum as usize,
                    _ => usize::MAX,
                };
                let commits = rounds
                    .iter()
                    .map(|(_, p, _)| {
                        valid_commits(rep, sc, p.round, choice, closed_at, &electorate)
                    })
                    .max()
                    .unwrap_or(0);
                ensure(commits >= quorum, || {
                    format!(
                        "stage {} decided {choice:?} with at most {commits} valid commits in one round; quorum {quorum}",
                        k + 1
                    )
                })?;
            }
            continue;
        }
        stage_agrees(
            sc,
            rep,
            &spec,
            last.round,
            &last.options,
            &electorate,
            closed_at,
            last.deadline_ms,
            &outcome,
        )
        .map_err(|e| format!("stage {} ({algorithm}): {e}", k + 1))?;
    }
    Ok(())
}

fn valid_commits(
    rep: &Report,
    sc: &Scenario,
    round: u32,
    value: &str,
    until: u64,
    electorate: &Electorate,
) -> usize {
    let sid = sc.session_id();
    let limits = Limits::default();
    let signers: BTreeSet<&AgentId> = rep
        .deliveries
        .iter()
        .filter(|(t, e)| *t <= until && e.session == sid && e.round == round)
        .filter(|(_, e)| {
            electorate
                .get(&e.sender)
                .is_some_and(|m| verified(e, &m.public_key))
        })
        .filter(|(_, e)| {
            e.open::<Ballot>(&limits).is_ok_and(|b| {
                b.phase == Phase::Commit && b.value == VoteValue::Choice(value.to_owned())
            })
        })
        .map(|(_, e)| &e.sender)
        .collect();
    signers.len()
}

// ---- Iterative refinement -------------------------------------------------------------------

/// Rounds never exceed `max_rounds`; each round's published aggregate is the aggregate of the
/// values it counted; a decision has converged (or says why not).
pub(crate) fn iterative_sound(sc: &Scenario, rep: &Report) -> Verdict {
    let Some((_, d)) = rep.finishes.first() else {
        return Err("no decision".into());
    };
    let max_rounds = sc.params["max_rounds"].as_u64().unwrap_or(5) as u32;
    let threshold = sc.params["convergence_threshold"].as_f64().unwrap_or(0.05);
    ensure(d.rounds <= max_rounds, || {
        format!("{} rounds; max_rounds is {max_rounds}", d.rounds)
    })?;
    ensure(d.history.len() as u32 <= max_rounds, || {
        format!("{} round records", d.history.len())
    })?;
    for pair in rep.proposals.windows(2) {
        let (prev, next) = (&pair[0].1, &pair[1].1);
        let RoundContext::Refine {
            aggregate,
            dispersion,
        } = &next.context
        else {
            return Err(format!(
                "round {} carries {:?}, not the previous aggregate",
                next.round, next.context
            ));
        };
        let record = d
            .history
            .iter()
            .find(|r| r.round == prev.round)
            .ok_or_else(|| format!("round {} is not recorded", prev.round))?;
        ensure(record.aggregate.as_ref() == Some(aggregate), || {
            format!(
                "round {} recorded aggregate {:?}, published {aggregate:?}",
                prev.round, record.aggregate
            )
        })?;
        ensure(record.dispersion == Some(*dispersion), || {
            format!(
                "round {} recorded dispersion {:?}, published {dispersion}",
                prev.round, record.dispersion
            )
        })?;
    }
    if let (Status::Decided, Some(Outcome::Value { dispersion, .. })) = (&d.status, &d.outcome) {
        let required = sc.params["require_convergence"].as_bool().unwrap_or(true);
        ensure(*dispersion <= threshold || !required, || {
            format!("decided with dispersion {dispersion} above the threshold {threshold}")
        })?;
    }
    Ok(())
}

// ---- Adaptive --------------------------------------------------------------------------------

/// Every switch is announced, recorded in the decision in order, moves forward along the
/// chain, and names a trigger that actually held.
pub(crate) fn adaptive_switches_recorded(sc: &Scenario, rep: &Report) -> Verdict {
    let Some((_, d)) = rep.finishes.first() else {
        return Err("no decision".into());
    };
    let announced: Vec<(u64, &mabeam_protocol::result::AlgorithmSwitch)> = rep
        .effects
        .iter()
        .filter_map(|(t, e)| match e {
            Effect::Switched(s) => Some((*t, s)),
            _ => None,
        })
        .collect();
    ensure(announced.len() == d.switches.len(), || {
        format!(
            "{} Switched effects, {} switches recorded",
            announced.len(),
            d.switches.len()
        )
    })?;
    let chain: Vec<String> = sc.params["chain"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|s| s["algorithm"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_else(|| vec!["byzantine".into(), "weighted".into(), "majority".into()]);
    let pressure = sc.params["time_pressure"].as_f64().unwrap_or(0.5);
    let ratio = sc.params["failure_ratio"].as_f64().unwrap_or(0.34);
    let mut position = 0usize;
    for ((t, effect), recorded) in announced.iter().zip(&d.switches) {
        ensure(*effect == recorded, || {
            format!("announced {effect:?}, recorded {recorded:?}")
        })?;
        let s = recorded;
        ensure(!s.reason.trim().is_empty(), || {
            format!("switch {} → {} without a reason", s.from, s.to)
        })?;
        let from = chain
            .iter()
            .skip(position)
            .position(|a| *a == s.from)
            .map(|p| p + position);
        let to = from.and_then(|f| {
            chain
                .iter()
                .skip(f + 1)
                .position(|a| *a == s.to)
                .map(|p| p + f + 1)
        });
        let (Some(_), Some(to)) = (from, to) else {
            return Err(format!(
                "switch {} → {} does not move forward along the chain {chain:?}",
                s.from, s.to
            ));
        };
        position = to;
        ensure(s.elapsed_ms == t - rep.start_ms, || {
            format!(
                "switch elapsed_ms {} but announced at +{} ms",
                s.elapsed_ms,
                t - rep.start_ms
            )
        })?;
        ensure(s.at_round <= d.rounds, || {
            format!("switch at round {} of {}", s.at_round, d.rounds)
        })?;
        let reason = s.reason.as_str();
        if let Some(rest) = reason.strip_prefix("time_pressure ") {
            let share = s.elapsed_ms as f64 / sc.timeout_ms as f64;
            ensure(share + 1e-3 >= pressure, || {
                format!("time_pressure switch at {share:.3} of the timeout; the trigger is {pressure}: {rest}")
            })?;
        } else if let Some(rest) = reason.strip_prefix("failure_ratio ") {
            let observed: f64 = rest
                .split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .ok_or_else(|| format!("unparsable reason {reason:?}"))?;
            ensure(observed + 0.005 >= ratio, || {
                format!("failure_ratio switch at {observed} < {ratio}")
            })?;
        } else if !(reason.starts_with("quality ") || reason.starts_with("no decision")) {
            return Err(format!("switch reason {reason:?} names no known trigger"));
        }
    }
    // Completeness: a chain starting with byzantine, with more silent agents than the failure
    // ratio allows, must leave byzantine once a round has shown them silent.
    let silent = sc
        .agents
        .iter()
        .filter(|a| a.behaviour == Behaviour::Silent)
        .count();
    let first_deadline = rep
        .proposals
        .first()
        .map_or(u64::MAX, |(_, p)| p.deadline_ms);
    let needs_switch = chain.first().map(String::as_str) == Some("byzantine")
        && silent as f64 / sc.n as f64 >= ratio + 1e-9
        && sc.net.is_lossless()
        && chain.len() > 1
        && d.finished_ms >= first_deadline;
    if needs_switch {
        ensure(!d.switches.is_empty(), || {
            format!("{silent} of {} agents silent (failure_ratio {ratio}) and no switch away from byzantine", sc.n)
        })?;
    }
    Ok(())
}

/// Agents whose ballots a session must never count.
pub(crate) fn forgers(sc: &Scenario) -> BTreeSet<usize> {
    (0..sc.n)
        .filter(|&i| {
            matches!(
                sc.agents[i].behaviour,
                Behaviour::InvalidSignature | Behaviour::Replay
            )
        })
        .collect()
}

/// Forged and replayed ballots never count: no counted ballot, no certificate commit, is
/// from a forger or from another session; the outcome is what the genuine ballots give.
pub(crate) fn forged_and_replayed_never_count(sc: &Scenario, rep: &Report) -> Verdict {
    let Some((_, d)) = rep.finishes.first() else {
        return Err("no decision".into());
    };
    let forgers = forgers(sc);
    let ids = &ring().ids;
    if let Some(cert) = &d.certificate {
        for c in &cert.commits {
            let i = ids
                .iter()
                .position(|x| *x == c.sender)
                .unwrap_or(usize::MAX);
            ensure(!forgers.contains(&i), || {
                format!("certificate counts a commit of forger {}", c.sender)
            })?;
            ensure(c.session == sc.session_id(), || {
                format!("certificate counts a commit of session {}", c.session)
            })?;
        }
    }
    for r in &d.history {
        for key in r.tally.keys() {
            if let Some(i) = ids.iter().position(|x| x.as_str() == key) {
                // Auctions and distributions tally per agent.
                if matches!(sc.algo, Algo::Auction | Algo::WorkDistribution) {
                    ensure(!forgers.contains(&i), || {
                        format!("round {} tallies forger {key}", r.round)
                    })?;
                }
            }
        }
    }
    if sc.algo.is_single_round() {
        offline_tally_agrees(sc, rep)?;
    }
    if sc.algo == Algo::Byzantine {
        certificate_valid(sc, rep)?;
        byzantine_validity(sc, rep)?;
    }
    Ok(())
}
