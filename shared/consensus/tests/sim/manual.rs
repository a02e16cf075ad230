//! Hand-driven sessions, for the minimal reproductions in `simulation.rs`: every input is
//! spelled out, no network, no randomness.

use mabeam_consensus::{
    replica::{ByzantineReplica, ReplicaEffect},
    AlgorithmSpec, Decision, Effect, Electorate, IntakeSettings, Participant, Session, SessionInit,
};
use mabeam_protocol::{
    session::{Ballot, Phase, Proposal, VoteValue},
    signing::EnvelopeHeader,
    Limits, SessionId, SignedEnvelope, TaskId,
};

use super::{keys::ring, scenario::T0};

pub(crate) fn session_id() -> SessionId {
    SessionId::new("manual-session").expect("valid id")
}

/// Starts a session over agents `0..n` (expertise 1) at `T0`.
pub(crate) fn start(
    algorithm: &str,
    params: serde_json::Value,
    n: usize,
    options: &[&str],
    timeout_ms: u64,
) -> Session {
    let ring = ring();
    let electorate = Electorate::new(
        (0..n)
            .map(|i| Participant {
                id: ring.ids[i].clone(),
                public_key: ring.keys[i].public_key(),
                expertise: 1.0,
                capabilities: Vec::new(),
            })
            .collect(),
    )
    .expect("valid electorate");
    let init = SessionInit {
        task_id: TaskId::new("manual-task").expect("valid id"),
        session_id: session_id(),
        spec: AlgorithmSpec::parse(algorithm, &params).expect("valid params"),
        proposal: serde_json::json!({"question": "manual"}),
        options: options.iter().map(|o| (*o).to_owned()).collect(),
        electorate,
        timeout_ms,
        seed: 7,
        intake: IntakeSettings::default(),
    };
    Session::start(init, T0).expect("session starts")
}

pub(crate) fn drain(session: &mut Session) -> Vec<Effect> {
    std::iter::from_fn(|| session.poll_effect()).collect()
}

pub(crate) fn proposals(effects: &[Effect]) -> Vec<Proposal> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Propose { proposal, .. } => Some((**proposal).clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn finished(effects: &[Effect]) -> Option<Decision> {
    effects.iter().find_map(|e| match e {
        Effect::Finished(d) => Some((**d).clone()),
        _ => None,
    })
}

/// A ballot in agent `sender`'s name, signed by agent `signer`'s registered key (a forgery
/// when they differ).
#[allow(clippy::too_many_arguments)]
pub(crate) fn ballot(
    signer: usize,
    sender: usize,
    round: u32,
    sequence: u64,
    phase: Phase,
    value: &str,
    at_ms: u64,
) -> SignedEnvelope {
    let ring = ring();
    let header = EnvelopeHeader {
        sender: ring.ids[sender].clone(),
        session: session_id(),
        round,
        sequence,
        timestamp_ms: at_ms,
    };
    let ballot = Ballot::new(phase, VoteValue::Choice(value.to_owned()), 1.0);
    SignedEnvelope::seal(&ring.keys[signer], header, &ballot).expect("encodes")
}

/// Delivers every replica's publications to the replicas `hears(from, to)` allows, until
/// nothing more is published; returns everything published, in order.
pub(crate) fn pump(
    replicas: &mut [ByzantineReplica],
    now: u64,
    hears: impl Fn(usize, usize) -> bool,
) -> Vec<SignedEnvelope> {
    let mut all = Vec::new();
    loop {
        let mut sent = Vec::new();
        for (i, r) in replicas.iter_mut().enumerate() {
            while let Some(effect) = r.poll() {
                if let ReplicaEffect::Publish(env) = effect {
                    sent.push((i, *env));
                }
            }
        }
        if sent.is_empty() {
            return all;
        }
        for (from, env) in sent {
            for (to, r) in replicas.iter_mut().enumerate() {
                if to != from && hears(from, to) {
                    r.handle_envelope(now, &env).expect("same session");
                }
            }
            all.push(env);
        }
    }
}

pub(crate) fn replicas_for(proposal: &Proposal, n: usize) -> Vec<ByzantineReplica> {
    let ring = ring();
    (0..n)
        .map(|i| {
            ByzantineReplica::new(
                ring.ids[i].clone(),
                ring.keys[i].clone(),
                proposal,
                Limits::default(),
            )
            .expect("member of the electorate")
        })
        .collect()
}
