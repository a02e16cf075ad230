//! Sessions driven by hand: the documented behaviour of each machine on small, readable
//! inputs. The seeded simulation (`simulation.rs`) covers the same machines under faults.
// clippy.toml's test allowances do not reach helper functions of integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mabeam_consensus::{
    replica::{ByzantineReplica, ReplicaEffect},
    AlgorithmSpec, Decision, Effect, Electorate, IntakeSettings, Participant, Session, SessionInit,
};
use mabeam_protocol::{
    result::FaultReason,
    session::{Ballot, Phase, Proposal, VoteValue},
    signing::EnvelopeHeader,
    AgentId, AgentKeypair, Limits, Outcome, SessionId, SignedEnvelope, Status, TaskId,
};
use serde_json::json;

const T0: u64 = 1_700_000_000_000;

struct Fleet {
    keys: Vec<AgentKeypair>,
    ids: Vec<AgentId>,
}

impl Fleet {
    fn new(n: usize) -> Self {
        let keys = (0..n)
            .map(|i| AgentKeypair::from_secret_bytes([i as u8 + 1; 32]))
            .collect();
        let ids = (0..n)
            .map(|i| AgentId::new(format!("a{i:02}")).unwrap())
            .collect();
        Self { keys, ids }
    }

    fn electorate(&self, expertise: impl Fn(usize) -> f64) -> Electorate {
        Electorate::new(
            self.ids
                .iter()
                .zip(&self.keys)
                .enumerate()
                .map(|(i, (id, k))| Participant {
                    id: id.clone(),
                    public_key: k.public_key(),
                    expertise: expertise(i),
                    capabilities: vec![],
                })
                .collect(),
        )
        .unwrap()
    }

    fn ballot(
        &self,
        i: usize,
        round: u32,
        seq: u64,
        phase: Phase,
        value: VoteValue,
        confidence: f64,
    ) -> SignedEnvelope {
        SignedEnvelope::seal(
            &self.keys[i],
            EnvelopeHeader {
                sender: self.ids[i].clone(),
                session: SessionId::new("s1").unwrap(),
                round,
                sequence: seq,
                timestamp_ms: T0 + 10,
            },
            &Ballot::new(phase, value, confidence),
        )
        .unwrap()
    }
}

/// Session `s1` of task `t1` with a 10 s timeout.
fn init(spec: AlgorithmSpec, options: &[&str], electorate: Electorate) -> SessionInit {
    SessionInit {
        task_id: TaskId::new("t1").unwrap(),
        session_id: SessionId::new("s1").unwrap(),
        spec,
        proposal: json!("deploy model v2"),
        options: options.iter().map(|s| s.to_string()).collect(),
        electorate,
        timeout_ms: 10_000,
        seed: 7,
        intake: IntakeSettings::default(),
    }
}

fn start(
    algorithm: &str,
    params: serde_json::Value,
    options: &[&str],
    electorate: Electorate,
) -> (Session, Vec<Effect>) {
    let spec = AlgorithmSpec::parse(algorithm, &params).unwrap();
    let mut session = Session::start(init(spec, options, electorate), T0).unwrap();
    let effects = drain(&mut session);
    (session, effects)
}

fn drain(session: &mut Session) -> Vec<Effect> {
    std::iter::from_fn(|| session.poll_effect()).collect()
}

fn finished(effects: &[Effect]) -> Option<&Decision> {
    effects.iter().find_map(|e| match e {
        Effect::Finished(d) => Some(&**d),
        _ => None,
    })
}

fn choice(s: &str) -> VoteValue {
    VoteValue::Choice(s.into())
}

#[test]
fn majority_decides_as_soon_as_the_outcome_is_certain() {
    let fleet = Fleet::new(5);
    let (mut s, effects) = start(
        "majority",
        json!(null),
        &["A", "B"],
        fleet.electorate(|_| 1.0),
    );
    assert!(matches!(&effects[0], Effect::Propose { to, .. } if to.len() == 5));
    assert!(matches!(effects[1], Effect::ArmTimer { at_ms } if at_ms == T0 + 10_000));
    for i in 0..2 {
        s.handle_envelope(
            T0 + 20,
            fleet.ballot(i, 1, 1, Phase::Vote, choice("A"), 1.0),
        );
        assert!(finished(&drain(&mut s)).is_none());
    }
    // 3 of 5 for A: more than half of the cast weight whatever the last two say.
    s.handle_envelope(
        T0 + 20,
        fleet.ballot(2, 1, 1, Phase::Vote, choice("A"), 1.0),
    );
    let effects = drain(&mut s);
    let d = finished(&effects).expect("decided early");
    assert_eq!(d.status, Status::Decided);
    assert_eq!(d.outcome.as_ref().and_then(Outcome::choice), Some("A"));
    assert!(s.is_finished());
    s.handle_envelope(
        T0 + 30,
        fleet.ballot(3, 1, 1, Phase::Vote, choice("B"), 1.0),
    );
    assert!(drain(&mut s).is_empty(), "nothing after the end");
}

#[test]
fn weighted_vote_follows_expertise_times_confidence() {
    let fleet = Fleet::new(3);
    // a00 is an expert: 5 × 0.9 = 4.5 against 1 × 1.0 + 1 × 1.0 = 2.
    let (mut s, _) = start(
        "weighted",
        json!(null),
        &["A", "B"],
        fleet.electorate(|i| if i == 0 { 5.0 } else { 1.0 }),
    );
    let ballots = vec![
        fleet.ballot(0, 1, 1, Phase::Vote, choice("A"), 0.9),
        fleet.ballot(1, 1, 1, Phase::Vote, choice("B"), 1.0),
        fleet.ballot(2, 1, 1, Phase::Vote, choice("B"), 1.0),
    ];
    s.handle_envelopes(T0 + 5, ballots);
    let effects = drain(&mut s);
    let d = finished(&effects).unwrap();
    let Some(Outcome::Choice {
        choice, support, ..
    }) = &d.outcome
    else {
        panic!("{d:?}")
    };
    assert_eq!(choice, "A");
    // The expert's 4.5 cannot be overturned by the others' at most 2.0, so the round closed
    // as soon as min_participation (2 of 3) was met; support is over the ballots counted.
    assert_eq!(d.history[0].counted, 2);
    assert!((support - 4.5 / 5.5).abs() < 1e-9);
}

/// Votes `values[i]` for agent `i` in `round` (sequence = round) and returns the effects.
fn vote_all(s: &mut Session, fleet: &Fleet, round: u32, values: &[&str]) -> Vec<Effect> {
    let mut effects = Vec::new();
    for (i, v) in values.iter().enumerate() {
        s.handle_envelope(
            T0 + 20,
            fleet.ballot(i, round, u64::from(round), Phase::Vote, choice(v), 1.0),
        );
        effects.extend(drain(s));
    }
    effects
}

fn proposal_to(effects: &[Effect]) -> Option<(Vec<AgentId>, &Proposal)> {
    effects.iter().find_map(|e| match e {
        Effect::Propose { to, proposal } => Some((to.clone(), &**proposal)),
        _ => None,
    })
}

#[test]
fn a_tie_escalated_goes_to_the_supervisor_alone_who_decides_it() {
    let fleet = Fleet::new(5);
    let params = json!({"on_tie": {"policy": "escalate", "supervisor": "a03"}});
    let (mut s, _) = start(
        "majority",
        params,
        &["A", "B", "C"],
        fleet.electorate(|_| 1.0),
    );
    let effects = vote_all(&mut s, &fleet, 1, &["A", "A", "B", "B", "C"]);
    assert!(
        finished(&effects).is_none(),
        "a tie is escalated, not final"
    );
    let (to, p) = proposal_to(&effects).expect("a round for the supervisor");
    assert_eq!(to, vec![fleet.ids[3].clone()]);
    assert_eq!(
        (p.round, p.options.clone()),
        (2, vec!["A".into(), "B".into()])
    );
    // Only the supervisor's ballot counts in its round.
    assert!(finished(&vote_all(&mut s, &fleet, 2, &["B"])).is_none());
    s.handle_envelope(
        T0 + 30,
        fleet.ballot(3, 2, 2, Phase::Vote, choice("A"), 1.0),
    );
    let effects = drain(&mut s);
    let d = finished(&effects).expect("the supervisor decided");
    assert_eq!(d.outcome.as_ref().and_then(Outcome::choice), Some("A"));
    assert_eq!(d.rounds, 2);
}

#[test]
fn a_tie_is_revoted_until_it_breaks_or_the_revotes_run_out() {
    let fleet = Fleet::new(4);
    let revote = json!({"on_tie": {"policy": "revote", "max_revotes": 2}});
    let (mut s, _) = start(
        "plurality",
        revote.clone(),
        &["A", "B"],
        fleet.electorate(|_| 1.0),
    );
    let effects = vote_all(&mut s, &fleet, 1, &["A", "A", "B", "B"]);
    let (to, p) = proposal_to(&effects).expect("a second round for everyone");
    assert_eq!((to.len(), p.round), (4, 2));
    let d = finished(&vote_all(&mut s, &fleet, 2, &["A", "A", "A", "B"]))
        .expect("decided on the re-vote")
        .clone();
    assert_eq!(d.outcome.as_ref().and_then(Outcome::choice), Some("A"));

    let (mut s, _) = start("plurality", revote, &["A", "B"], fleet.electorate(|_| 1.0));
    for round in 1..=2 {
        let effects = vote_all(&mut s, &fleet, round, &["A", "B", "A", "B"]);
        assert!(finished(&effects).is_none(), "round {round} is re-voted");
    }
    let effects = vote_all(&mut s, &fleet, 3, &["A", "B", "A", "B"]);
    let d = finished(&effects).expect("no re-votes left");
    assert_eq!(d.status, Status::NoDecision);
    assert!(
        d.reason.as_deref().unwrap_or_default().contains("tie"),
        "{:?}",
        d.reason
    );
    assert_eq!(d.rounds, 3);
}

#[test]
fn tie_policies_are_refused_when_they_cannot_apply() {
    let parse = |params| AlgorithmSpec::parse("majority", &params);
    assert!(parse(json!({"tie_break": "lexicographic", "on_tie": {"policy": "revote"}})).is_err());
    assert!(parse(json!({"on_tie": {"policy": "revote", "max_revotes": 0}})).is_err());
    assert!(parse(json!({"on_tie": {"policy": "ask_someone"}})).is_err());
    assert!(parse(json!({"on_tie": {"policy": "fail"}})).is_ok());
    let fleet = Fleet::new(3);
    let spec = parse(json!({"on_tie": {"policy": "escalate", "supervisor": "outsider"}})).unwrap();
    let refused = Session::start(init(spec, &["A", "B"], fleet.electorate(|_| 1.0)), T0);
    let Err(error) = refused else {
        panic!("the supervisor must take part")
    };
    let error = error.to_string();
    assert!(error.contains("not a participant"), "{error}");
}

#[test]
fn min_votes_needs_that_many_ballots_for_the_winner_whatever_their_weight() {
    let fleet = Fleet::new(3);
    // a00's expertise outweighs both others together, but alone it is one ballot.
    let expert = |i| if i == 0 { 10.0 } else { 1.0 };
    let (mut s, _) = start(
        "weighted",
        json!({"min_votes": 2}),
        &["A", "B"],
        fleet.electorate(expert),
    );
    s.handle_envelope(
        T0 + 20,
        fleet.ballot(0, 1, 1, Phase::Vote, choice("A"), 1.0),
    );
    assert!(
        finished(&drain(&mut s)).is_none(),
        "a safe lead of one ballot is not yet a decision"
    );
    s.handle_envelope(
        T0 + 20,
        fleet.ballot(1, 1, 1, Phase::Vote, choice("A"), 1.0),
    );
    let effects = drain(&mut s);
    let d = finished(&effects).expect("a second ballot for the leader decides at once");
    assert_eq!(d.outcome.as_ref().and_then(Outcome::choice), Some("A"));
    assert_eq!(d.history[0].counted, 2);

    let (mut s, _) = start(
        "weighted",
        json!({"min_votes": 2}),
        &["A", "B"],
        fleet.electorate(expert),
    );
    let effects = vote_all(&mut s, &fleet, 1, &["A", "B", "B"]);
    let d = finished(&effects).expect("every ballot is in");
    assert_eq!(d.status, Status::NoDecision, "{d:?}");
    let reason = d.reason.clone().unwrap_or_default();
    assert!(reason.contains("min_votes needs 2"), "{reason}");
}

#[test]
fn min_votes_ends_the_round_once_no_option_can_reach_it() {
    let fleet = Fleet::new(4);
    let (mut s, _) = start(
        "plurality",
        json!({"min_votes": 3}),
        &["A", "B", "C"],
        fleet.electorate(|_| 1.0),
    );
    assert!(finished(&vote_all(&mut s, &fleet, 1, &["A", "B"])).is_none());
    // A, B and C have one ballot each and one agent is left: nobody can reach 3.
    s.handle_envelope(
        T0 + 20,
        fleet.ballot(2, 1, 1, Phase::Vote, choice("C"), 1.0),
    );
    let effects = drain(&mut s);
    let d = finished(&effects).expect("closed without waiting for the last agent");
    assert_eq!(d.status, Status::NoDecision);
    assert_eq!(d.history[0].counted, 3);
    // Not a tie to settle: none of the tied options could have won.
    let reason = d.reason.clone().unwrap_or_default();
    assert!(reason.contains("min_votes needs 3"), "{reason}");
}

#[test]
fn min_votes_above_the_electorate_is_refused_and_a_lone_supervisor_still_decides() {
    let fleet = Fleet::new(3);
    let spec =
        AlgorithmSpec::parse("majority", &json!({"min_votes": 4})).expect("valid on its own");
    let refused = Session::start(init(spec, &["A", "B"], fleet.electorate(|_| 1.0)), T0);
    let Err(error) = refused else {
        panic!("4 ballots cannot come from 3 agents")
    };
    assert!(error.to_string().contains("min_votes=4"), "{error}");

    let fleet = Fleet::new(4);
    let params = json!({"min_votes": 2, "on_tie": {"policy": "escalate", "supervisor": "a01"}});
    let (mut s, _) = start("plurality", params, &["A", "B"], fleet.electorate(|_| 1.0));
    let effects = vote_all(&mut s, &fleet, 1, &["A", "A", "B", "B"]);
    assert!(proposal_to(&effects).is_some(), "the tie goes to a01");
    s.handle_envelope(
        T0 + 30,
        fleet.ballot(1, 2, 2, Phase::Vote, choice("B"), 1.0),
    );
    let effects = drain(&mut s);
    let d = finished(&effects).expect("the supervisor's one ballot is enough in its round");
    assert_eq!(d.outcome.as_ref().and_then(Outcome::choice), Some("B"));
}

#[test]
fn silent_agents_leave_the_round_to_its_deadline_and_are_reported() {
    let fleet = Fleet::new(4);
    let (mut s, _) = start(
        "unanimous",
        json!(null),
        &["A", "B"],
        fleet.electorate(|_| 1.0),
    );
    for i in 0..3 {
        s.handle_envelope(T0 + 1, fleet.ballot(i, 1, 1, Phase::Vote, choice("A"), 1.0));
    }
    assert!(finished(&drain(&mut s)).is_none(), "a4 could still dissent");
    s.handle_timeout(T0 + 9_999);
    assert!(
        finished(&drain(&mut s)).is_none(),
        "timer fired early: nothing due"
    );
    s.handle_timeout(T0 + 10_000);
    let effects = drain(&mut s);
    let d = finished(&effects).unwrap();
    assert_eq!(d.status, Status::Decided, "unanimous over cast ballots");
    assert_eq!(d.faulty_detected.len(), 1);
    assert_eq!(d.faulty_detected[0].reason, FaultReason::Silent);
}

#[test]
fn forged_replayed_and_equivocating_ballots_are_refused() {
    let fleet = Fleet::new(4);
    let (mut s, _) = start(
        "plurality",
        json!(null),
        &["A", "B"],
        fleet.electorate(|_| 1.0),
    );
    let mut forged = fleet.ballot(0, 1, 1, Phase::Vote, choice("A"), 1.0);
    let tampered = Ballot::new(Phase::Vote, choice("B"), 1.0);
    forged.payload =
        mabeam_protocol::encode(mabeam_protocol::ContentType::MsgPack, &tampered).unwrap();
    s.handle_envelope(T0 + 1, forged);
    // A genuine ballot of agent 1 from another session, replayed into this one.
    let genuine = fleet.ballot(1, 1, 1, Phase::Vote, choice("A"), 1.0);
    let other_session = SignedEnvelope::seal(
        &fleet.keys[1],
        EnvelopeHeader {
            session: SessionId::new("s0").unwrap(),
            ..genuine.header()
        },
        &Ballot::new(Phase::Vote, choice("A"), 1.0),
    )
    .unwrap();
    s.handle_envelope(T0 + 1, other_session);
    s.handle_envelope(T0 + 1, fleet.ballot(2, 1, 1, Phase::Vote, choice("A"), 1.0));
    s.handle_envelope(T0 + 2, fleet.ballot(2, 1, 2, Phase::Vote, choice("B"), 1.0));
    // fleet.ballot seals whatever confidence it is given, NaN included.
    s.handle_envelope(
        T0 + 2,
        fleet.ballot(3, 1, 1, Phase::Vote, choice("A"), f64::NAN),
    );
    let effects = drain(&mut s);
    let reasons: Vec<FaultReason> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::BallotRejected { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            FaultReason::InvalidSignature,
            FaultReason::Replay,
            FaultReason::MalformedBallot
        ]
    );
    let evidence = effects
        .iter()
        .find_map(|e| match e {
            Effect::Equivocation(ev) => Some(ev),
            _ => None,
        })
        .expect("equivocation evidence");
    assert!(evidence.verify(&fleet.keys[2].public_key(), &Limits::default()));
}

/// Runs a byzantine session where every agent is an honest replica preferring `prefs[i]`,
/// delivering every ballot to everyone, in order.
fn run_byzantine(n: usize, prefs: &[&str]) -> Decision {
    let fleet = Fleet::new(n);
    let (mut s, effects) = start(
        "byzantine",
        json!(null),
        &["A", "B"],
        fleet.electorate(|_| 1.0),
    );
    let Some(Effect::Propose { proposal, .. }) = effects.first() else {
        panic!()
    };
    let proposal: Proposal = (**proposal).clone();
    let mut replicas: Vec<ByzantineReplica> = (0..n)
        .map(|i| {
            ByzantineReplica::new(
                fleet.ids[i].clone(),
                fleet.keys[i].clone(),
                &proposal,
                Limits::default(),
            )
            .unwrap()
        })
        .collect();
    let mut wire: Vec<SignedEnvelope> = Vec::new();
    for (i, r) in replicas.iter_mut().enumerate() {
        r.handle_proposal(T0 + 1, &proposal, prefs[i]).unwrap();
    }
    let mut decided = Vec::new();
    for _ in 0..10 {
        for r in &mut replicas {
            while let Some(e) = r.poll() {
                match e {
                    ReplicaEffect::Publish(env) => wire.push(*env),
                    ReplicaEffect::Decided { value, .. } => decided.push(value),
                    ReplicaEffect::Equivocation(_) => panic!("no equivocation among honest agents"),
                }
            }
        }
        let batch = std::mem::take(&mut wire);
        for env in &batch {
            for r in &mut replicas {
                r.handle_envelope(T0 + 2, env).unwrap();
            }
        }
        s.handle_envelopes(T0 + 2, batch);
    }
    let effects = drain(&mut s);
    let d = finished(&effects).cloned().unwrap_or_else(|| {
        s.handle_timeout(T0 + 10_000);
        finished(&drain(&mut s))
            .cloned()
            .expect("finished by the timeout")
    });
    if let Some(choice) = d.outcome.as_ref().and_then(Outcome::choice) {
        assert!(
            decided.iter().all(|v| v == choice),
            "replicas agree with the coordinator"
        );
    }
    d
}

#[test]
fn byzantine_decides_with_a_verifiable_certificate() {
    let d = run_byzantine(4, &["A", "A", "A", "B"]);
    assert_eq!(d.status, Status::Decided);
    let cert = d.certificate.expect("certificate");
    assert_eq!(cert.value, "A");
    assert_eq!(cert.quorum, 3);
    cert.verify(&Limits::default()).unwrap();
}

#[test]
fn byzantine_split_electorate_ends_without_decision() {
    let d = run_byzantine(4, &["A", "A", "B", "B"]);
    assert_eq!(d.status, Status::NoDecision, "{d:?}");
    assert!(d.certificate.is_none());
}

#[test]
fn iterative_converges_on_the_weighted_mean() {
    let fleet = Fleet::new(3);
    let (mut s, _) = start(
        "iterative",
        json!({"convergence_threshold": 0.5}),
        &[],
        fleet.electorate(|_| 1.0),
    );
    let round1 = [1.0, 2.0, 6.0];
    for (i, x) in round1.iter().enumerate() {
        s.handle_envelope(
            T0 + 1,
            fleet.ballot(i, 1, 1, Phase::Vote, VoteValue::Number(*x), 1.0),
        );
    }
    let effects = drain(&mut s);
    let Some(Effect::Propose { proposal, .. }) =
        effects.iter().find(|e| matches!(e, Effect::Propose { .. }))
    else {
        panic!("second round expected: {effects:?}")
    };
    assert_eq!(proposal.round, 2);
    for (i, x) in [2.9, 3.0, 3.1].iter().enumerate() {
        s.handle_envelope(
            T0 + 2,
            fleet.ballot(i, 2, 2, Phase::Vote, VoteValue::Number(*x), 1.0),
        );
    }
    let effects = drain(&mut s);
    let d = finished(&effects).unwrap();
    let Some(Outcome::Value { value, .. }) = &d.outcome else {
        panic!("{d:?}")
    };
    assert!((value[0] - 3.0).abs() < 1e-9);
    assert_eq!(d.rounds, 2);
    assert_eq!(d.history.len(), 2);
}

#[test]
fn adaptive_falls_back_when_byzantine_cannot_decide_in_time() {
    let fleet = Fleet::new(4);
    let (mut s, _) = start(
        "adaptive",
        json!({"time_pressure": 0.3}),
        &["A", "B"],
        fleet.electorate(|_| 1.0),
    );
    // Nobody answers byzantine; time pressure moves to weighted.
    s.handle_timeout(T0 + 3_000);
    let effects = drain(&mut s);
    let switch = effects
        .iter()
        .find_map(|e| match e {
            Effect::Switched(sw) => Some(sw.clone()),
            _ => None,
        })
        .expect("switched");
    assert_eq!(
        (switch.from.as_str(), switch.to.as_str()),
        ("byzantine", "weighted")
    );
    assert!(
        switch.reason.starts_with("time_pressure"),
        "{}",
        switch.reason
    );
    let round = s.round();
    for i in 0..4 {
        s.handle_envelope(
            T0 + 3_001,
            fleet.ballot(i, round, 10, Phase::Vote, choice("B"), 1.0),
        );
    }
    let effects = drain(&mut s);
    let d = finished(&effects).unwrap();
    assert_eq!(d.outcome.as_ref().and_then(Outcome::choice), Some("B"));
    assert_eq!(d.switches.len(), 1);
}

#[test]
fn pipeline_feeds_each_stage_outcome_into_the_next_proposal() {
    let fleet = Fleet::new(4);
    let params = json!({"stages": [
        {"algorithm": "plurality", "participants": ["a00", "a01"], "options": ["m1", "m2"]},
        {"algorithm": "majority"}
    ]});
    let (mut s, effects) = start("pipeline", params, &[], fleet.electorate(|_| 1.0));
    let Some(Effect::Propose { to, .. }) = effects.first() else {
        panic!()
    };
    assert_eq!(to.len(), 2, "stage 1 has two participants");
    s.handle_envelope(
        T0 + 1,
        fleet.ballot(0, 1, 1, Phase::Vote, choice("m2"), 1.0),
    );
    s.handle_envelope(
        T0 + 1,
        fleet.ballot(1, 1, 1, Phase::Vote, choice("m2"), 1.0),
    );
    let effects = drain(&mut s);
    let Some(Effect::Propose { to, proposal }) =
        effects.iter().find(|e| matches!(e, Effect::Propose { .. }))
    else {
        panic!("{effects:?}")
    };
    assert_eq!(to.len(), 4);
    assert_eq!(proposal.proposal["outcome"]["choice"], "m2");
    assert_eq!(proposal.options, vec!["accept", "reject"]);
}
