//! The fault layer: which misbehaviours are active (from the fault-injector's
//! [`AgentFaultCommand`]s) and what they do to the agent's ballots, as plain functions the
//! agent's I/O loop applies.
//!
//! Commands: the layer keeps one entry per fault id (the most recent command wins). A command
//! with no behaviour, no unreachable peers and `coordinator_unreachable: false` heals its
//! fault id. When several faults are active they combine:
//! - `crash` (no heartbeats, no answers, session state lost) and `silent` (heartbeats, no
//!   votes) hold while any active fault has them;
//! - the content behaviours (`equivocate`, `replay`, `coalition`, `adaptive`): the most
//!   recently applied one wins;
//! - the delivery behaviours add up: `slow` (the most recent one's delay ± jitter), `drop`
//!   (independent losses), `corrupt`, `invalid_signature`, `timing_attack`;
//! - `unreachable` peers are the union, `coordinator_unreachable` holds while any fault says so.
//!
//! What each behaviour puts on the wire (the agent's vote subject):
//! - `equivocate`: two validly signed ballots with different values for the same round and
//!   phase (Byzantine: prepare and commit for two values);
//! - `coalition {value}`: the coalition's value as a ballot of the round's kind (a number
//!   parsed from it for numeric algorithms);
//! - `replay`: the agent's own envelopes of earlier rounds and sessions, instead of an answer;
//! - `adaptive`: honest until a decision is near (Byzantine: a value one prepare short of a
//!   quorum; other algorithms: right after its honest ballot), then a contradicting ballot;
//! - `slow`: each message leaves after `delay_ms` ± `jitter_ms`;
//! - `drop {percent}`: that share of outgoing messages (ballots and heartbeats) is never sent;
//! - `corrupt`: each ballot goes out as garbage bytes followed by a validly signed envelope
//!   whose payload is not a ballot;
//! - `invalid_signature`: ballots signed with a key other than the registered one;
//! - `timing_attack`: the round's messages are held until [`TIMING_MARGIN_MS`] before the
//!   deadline or the same after it (chosen per round);
//! - `unreachable`: envelopes from those peers are ignored; `coordinator_unreachable`:
//!   proposals are ignored and nothing is published (heartbeats go on: the registry is not
//!   the coordinator).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use mabeam_protocol::{
    fault::{AgentBehaviour, AgentFaultCommand},
    session::{Phase, Proposal, VoteValue},
    AgentId,
};
use rand::Rng;

/// How far from the deadline a timing attacker releases its messages.
pub const TIMING_MARGIN_MS: u64 = 20;

/// The first byte of every corrupted payload: `0xc1` is never valid MessagePack, so neither
/// an envelope nor a ballot can decode from it.
const GARBAGE_MARKER: u8 = 0xc1;

#[derive(Debug, Clone, PartialEq)]
struct Entry {
    behaviour: Option<AgentBehaviour>,
    unreachable: BTreeSet<AgentId>,
    coordinator_unreachable: bool,
    applied: u64,
}

/// The active faults of one agent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultState {
    entries: BTreeMap<String, Entry>,
    applied: u64,
}

/// What a ballot says, as the active faults decide it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Content {
    #[default]
    Honest,
    Equivocate,
    Replay,
    Coalition(String),
    Adaptive,
}

/// What happens to a message on its way out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    /// `(delay_ms, jitter_ms)`.
    pub slow: Option<(u64, u64)>,
    /// Share of messages lost, in `[0, 100]`.
    pub drop_percent: f64,
    pub corrupt: bool,
    pub invalid_signature: bool,
    pub timing_attack: bool,
}

/// The combined effect of every active fault.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effective {
    pub crashed: bool,
    pub silent: bool,
    pub content: Content,
    pub delivery: Delivery,
    pub unreachable: BTreeSet<AgentId>,
    pub coordinator_unreachable: bool,
}

impl Effective {
    /// True when the agent publishes no ballot at all.
    pub fn mute(&self) -> bool {
        self.crashed || self.silent || self.coordinator_unreachable
    }
}

impl FaultState {
    /// Applies a command; returns whether anything changed.
    pub fn apply(&mut self, command: &AgentFaultCommand) -> bool {
        let heal = command.behaviour.is_none()
            && command.unreachable.is_empty()
            && !command.coordinator_unreachable;
        if heal {
            return self.entries.remove(&command.fault_id).is_some();
        }
        self.applied += 1;
        let entry = Entry {
            behaviour: command.behaviour.clone(),
            unreachable: command.unreachable.iter().cloned().collect(),
            coordinator_unreachable: command.coordinator_unreachable,
            applied: self.applied,
        };
        self.entries.insert(command.fault_id.clone(), entry);
        true
    }

    /// Number of active fault ids.
    pub fn active(&self) -> usize {
        self.entries.len()
    }

    pub fn effective(&self) -> Effective {
        let mut out = Effective::default();
        let mut by_age: Vec<&Entry> = self.entries.values().collect();
        by_age.sort_by_key(|e| e.applied);
        let mut kept = 1.0;
        for entry in by_age {
            out.unreachable.extend(entry.unreachable.iter().cloned());
            out.coordinator_unreachable |= entry.coordinator_unreachable;
            let Some(behaviour) = &entry.behaviour else {
                continue;
            };
            match behaviour {
                AgentBehaviour::Crash => out.crashed = true,
                AgentBehaviour::Silent => out.silent = true,
                AgentBehaviour::Slow {
                    delay_ms,
                    jitter_ms,
                } => out.delivery.slow = Some((*delay_ms, *jitter_ms)),
                AgentBehaviour::Drop { percent } => {
                    let p = if percent.is_finite() {
                        percent.clamp(0.0, 100.0)
                    } else {
                        0.0
                    };
                    kept *= 1.0 - p / 100.0;
                }
                AgentBehaviour::Corrupt => out.delivery.corrupt = true,
                AgentBehaviour::InvalidSignature => out.delivery.invalid_signature = true,
                AgentBehaviour::TimingAttack => out.delivery.timing_attack = true,
                AgentBehaviour::Equivocate => out.content = Content::Equivocate,
                AgentBehaviour::Replay => out.content = Content::Replay,
                AgentBehaviour::Coalition { value } => {
                    out.content = Content::Coalition(value.clone());
                }
                AgentBehaviour::Adaptive => out.content = Content::Adaptive,
            }
        }
        out.delivery.drop_percent = (1.0 - kept) * 100.0;
        out
    }
}

/// A ballot of another value of the same kind: the second half of an equivocation.
pub fn alternative(honest: &VoteValue, proposal: &Proposal, me: &AgentId) -> VoteValue {
    let other_option = |c: &str| proposal.options.iter().find(|o| *o != c).cloned();
    match honest {
        VoteValue::Choice(c) if proposal.algorithm == "leader_election" => match other_option(c) {
            Some(o) => VoteValue::Choice(o),
            None if c != me.as_str() => VoteValue::Choice(me.to_string()),
            None => VoteValue::Abstain,
        },
        VoteValue::Choice(c) => match other_option(c) {
            Some(o) => VoteValue::Choice(o),
            None if c != "reject" && proposal.options.is_empty() => {
                VoteValue::Choice("reject".into())
            }
            None if proposal.options.is_empty() => VoteValue::Choice("accept".into()),
            None => VoteValue::Abstain,
        },
        VoteValue::Ranking(r) if r.len() > 1 => {
            VoteValue::Ranking(r.iter().rev().cloned().collect())
        }
        VoteValue::Ranking(r) => match r.first().and_then(|first| other_option(first)) {
            Some(o) => VoteValue::Ranking(vec![o]),
            None => VoteValue::Abstain,
        },
        VoteValue::Number(x) => VoteValue::Number(x + 10.0),
        VoteValue::Vector(v) => VoteValue::Vector(v.iter().map(|x| x + 10.0).collect()),
        VoteValue::Bid(b) => VoteValue::Bid(b * 2.0 + 1.0),
        VoteValue::Offer { value, min, max } => VoteValue::Offer {
            value: value + 10.0,
            min: min + 10.0,
            max: max + 10.0,
        },
        VoteValue::Load { load, capacity } => VoteValue::Load {
            load: load + 5.0,
            capacity: *capacity,
        },
        VoteValue::Abstain => match proposal.options.first() {
            Some(o) => VoteValue::Choice(o.clone()),
            None => VoteValue::Number(0.0),
        },
    }
}

/// The number a coalition pushes: its value read as a number, or (when it is a name) a
/// number every member derives from the name alike.
fn coalition_number(value: &str) -> f64 {
    match value.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => x,
        _ => (crate::honest::mix(0, value) % 1000) as f64,
    }
}

/// The coalition's value as a ballot of the same kind as the honest one.
pub fn coalition_value(value: &str, honest: &VoteValue) -> VoteValue {
    let x = coalition_number(value);
    match honest {
        VoteValue::Choice(_) | VoteValue::Abstain => VoteValue::Choice(value.to_owned()),
        VoteValue::Ranking(_) => VoteValue::Ranking(vec![value.to_owned()]),
        VoteValue::Number(_) => VoteValue::Number(x),
        VoteValue::Vector(v) => VoteValue::Vector(vec![x; v.len().max(1)]),
        VoteValue::Bid(_) => VoteValue::Bid(x.abs()),
        VoteValue::Offer { .. } => VoteValue::Offer {
            value: x,
            min: x,
            max: x,
        },
        // Claims to be idle with room for everything, to draw the work.
        VoteValue::Load { .. } => VoteValue::Load {
            load: 0.0,
            capacity: x.abs().max(1000.0),
        },
    }
}

/// The values a plain (non-Byzantine) round sends, each with its extra delay in ms.
/// `Replay` sends no new ballot (the caller re-sends old envelopes).
pub fn round_values(
    content: &Content,
    honest: &VoteValue,
    proposal: &Proposal,
    me: &AgentId,
    adaptive_delay_ms: u64,
) -> Vec<(u64, VoteValue)> {
    match content {
        Content::Honest => vec![(0, honest.clone())],
        Content::Equivocate => vec![(0, honest.clone()), (0, alternative(honest, proposal, me))],
        Content::Adaptive => vec![
            (0, honest.clone()),
            (adaptive_delay_ms, alternative(honest, proposal, me)),
        ],
        Content::Coalition(value) => vec![(0, coalition_value(value, honest))],
        Content::Replay => Vec::new(),
    }
}

/// An option other than `value` (the attackers' second value).
pub fn other_than(value: &str, options: &[String]) -> String {
    options
        .iter()
        .find(|o| o.as_str() != value)
        .cloned()
        .unwrap_or_else(|| format!("{value}-other"))
}

/// What a Byzantine round sends.
#[derive(Debug, Clone, PartialEq)]
pub enum ByzantinePlan {
    /// The honest replica's prepares and commits.
    Replica,
    /// These ballots, built by hand.
    Ballots(Vec<(Phase, String)>),
    /// Old envelopes instead of an answer.
    Replay,
}

/// The Byzantine round's plan under `content`, `choice` being the decider's pick.
/// `turned`: an adaptive attacker already turned in this session.
pub fn byzantine_plan(
    content: &Content,
    choice: &str,
    options: &[String],
    turned: bool,
) -> ByzantinePlan {
    let equivocation = || {
        let second = other_than(choice, options);
        ByzantinePlan::Ballots(vec![
            (Phase::Prepare, choice.to_owned()),
            (Phase::Prepare, second.clone()),
            (Phase::Commit, choice.to_owned()),
            (Phase::Commit, second),
        ])
    };
    match content {
        Content::Honest => ByzantinePlan::Replica,
        Content::Adaptive if !turned => ByzantinePlan::Replica,
        Content::Adaptive | Content::Equivocate => equivocation(),
        Content::Coalition(value) => ByzantinePlan::Ballots(vec![
            (Phase::Prepare, value.clone()),
            (Phase::Commit, value.clone()),
        ]),
        Content::Replay => ByzantinePlan::Replay,
    }
}

/// Adaptive attacker: the value of `round` that is one prepare short of `quorum` (counting
/// the peers' prepares in `seen` and the agent's own, `mine`), if any. Once there is one the
/// attacker turns: it prepares and commits another value and commits the near one too.
pub fn adaptive_turn(
    seen: &BTreeMap<(u32, String), BTreeSet<AgentId>>,
    mine: Option<&str>,
    round: u32,
    quorum: usize,
) -> Option<String> {
    seen.range((round, String::new())..)
        .take_while(|((r, _), _)| *r == round)
        .find(|((_, v), peers)| peers.len() + usize::from(mine == Some(v.as_str())) + 1 >= quorum)
        .map(|((_, v), _)| v.clone())
}

/// The ballots an adaptive attacker sends when it turns against `near`.
pub fn adaptive_ballots(near: &str, options: &[String]) -> Vec<(Phase, String)> {
    let other = other_than(near, options);
    vec![
        (Phase::Prepare, other.clone()),
        (Phase::Commit, other),
        (Phase::Commit, near.to_owned()),
    ]
}

/// A message on its way out.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// An encoded payload, signed when it leaves (so sequence numbers follow the order of
    /// publication); with `impostor`, by a key other than the registered one.
    Signed { payload: Vec<u8>, impostor: bool },
    /// Bytes published as they are (replayed envelopes, garbage).
    Raw(Bytes),
}

/// A message with the delay before it leaves.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub delay_ms: u64,
    pub body: Body,
}

fn garbage<R: Rng>(rng: &mut R) -> Vec<u8> {
    let mut bytes = vec![GARBAGE_MARKER];
    bytes.extend((0..15).map(|_| rng.gen::<u8>()));
    bytes
}

/// Applies the delivery faults to one outgoing message. `late` picks the timing attacker's
/// side of the deadline for this round.
pub fn deliver<R: Rng>(
    delivery: &Delivery,
    rng: &mut R,
    now_ms: u64,
    deadline_ms: u64,
    late: bool,
    body: Body,
) -> Vec<Planned> {
    if delivery.drop_percent > 0.0 && rng.gen::<f64>() * 100.0 < delivery.drop_percent {
        return Vec::new();
    }
    let mut delay_ms = 0;
    if delivery.timing_attack {
        let release = if late {
            deadline_ms.saturating_add(TIMING_MARGIN_MS)
        } else {
            deadline_ms.saturating_sub(TIMING_MARGIN_MS)
        };
        delay_ms += release.saturating_sub(now_ms);
    }
    if let Some((delay, jitter)) = delivery.slow {
        let low = delay.saturating_sub(jitter);
        let high = delay.saturating_add(jitter);
        delay_ms += rng.gen_range(low..=high);
    }
    let bodies = match body {
        Body::Signed { impostor, .. } if delivery.corrupt => vec![
            Body::Raw(Bytes::from(garbage(rng))),
            Body::Signed {
                payload: garbage(rng),
                impostor: impostor || delivery.invalid_signature,
            },
        ],
        Body::Signed { payload, impostor } => vec![Body::Signed {
            payload,
            impostor: impostor || delivery.invalid_signature,
        }],
        Body::Raw(_) if delivery.corrupt => vec![Body::Raw(Bytes::from(garbage(rng)))],
        raw @ Body::Raw(_) => vec![raw],
    };
    bodies
        .into_iter()
        .map(|body| Planned { delay_ms, body })
        .collect()
}

#[cfg(test)]
mod tests {
    use mabeam_protocol::{session::RoundContext, SessionId, TaskId};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn command(id: &str, behaviour: Option<AgentBehaviour>) -> AgentFaultCommand {
        AgentFaultCommand {
            v: 1,
            fault_id: id.into(),
            behaviour,
            unreachable: vec![],
            coordinator_unreachable: false,
        }
    }

    fn proposal(algorithm: &str, options: &[&str]) -> Proposal {
        Proposal {
            v: 1,
            task_id: TaskId::new("t").unwrap(),
            session_id: SessionId::new("s").unwrap(),
            algorithm: algorithm.into(),
            round: 1,
            phase: Phase::Vote,
            proposal: serde_json::Value::Null,
            options: options.iter().map(|s| (*s).to_owned()).collect(),
            deadline_ms: 0,
            context: RoundContext::Open,
        }
    }

    #[test]
    fn the_latest_command_per_fault_id_wins_and_an_empty_one_heals() {
        let mut f = FaultState::default();
        assert!(f.apply(&command("f1", Some(AgentBehaviour::Equivocate))));
        assert!(f.apply(&command("f1", Some(AgentBehaviour::Silent))));
        assert_eq!(f.active(), 1);
        let e = f.effective();
        assert!(e.silent);
        assert_eq!(e.content, Content::Honest);
        assert!(f.apply(&command("f1", None)));
        assert_eq!(f.active(), 0);
        assert_eq!(f.effective(), Effective::default());
        assert!(
            !f.apply(&command("f1", None)),
            "healing twice changes nothing"
        );
    }

    #[test]
    fn faults_combine() {
        let mut f = FaultState::default();
        f.apply(&command("a", Some(AgentBehaviour::Drop { percent: 50.0 })));
        f.apply(&command("b", Some(AgentBehaviour::Drop { percent: 50.0 })));
        f.apply(&command("c", Some(AgentBehaviour::Equivocate)));
        f.apply(&command(
            "d",
            Some(AgentBehaviour::Coalition { value: "x".into() }),
        ));
        let mut partition = command("p", None);
        partition.unreachable = vec![AgentId::new("peer").unwrap()];
        f.apply(&partition);
        let e = f.effective();
        assert!((e.delivery.drop_percent - 75.0).abs() < 1e-9);
        assert_eq!(e.content, Content::Coalition("x".into()), "most recent");
        assert!(e.unreachable.contains(&AgentId::new("peer").unwrap()));
        assert!(!e.mute());
        f.apply(&command("e", Some(AgentBehaviour::Crash)));
        assert!(f.effective().mute());
    }

    #[test]
    fn equivocation_sends_two_different_values_of_the_same_kind() {
        let me = AgentId::new("me").unwrap();
        let p = proposal("majority", &["a", "b"]);
        let values = round_values(
            &Content::Equivocate,
            &VoteValue::Choice("a".into()),
            &p,
            &me,
            0,
        );
        assert_eq!(
            values,
            vec![
                (0, VoteValue::Choice("a".into())),
                (0, VoteValue::Choice("b".into()))
            ]
        );
        for honest in [
            VoteValue::Ranking(vec!["a".into(), "b".into()]),
            VoteValue::Number(1.0),
            VoteValue::Vector(vec![1.0]),
            VoteValue::Bid(1.0),
            VoteValue::Offer {
                value: 1.0,
                min: 0.0,
                max: 2.0,
            },
            VoteValue::Load {
                load: 1.0,
                capacity: 2.0,
            },
        ] {
            let alt = alternative(&honest, &p, &me);
            assert_ne!(alt, honest);
            assert_eq!(
                std::mem::discriminant(&alt),
                std::mem::discriminant(&honest)
            );
        }
        let adaptive = round_values(&Content::Adaptive, &VoteValue::Number(1.0), &p, &me, 40);
        assert_eq!(adaptive[1].0, 40, "the contradiction comes later");
        assert!(round_values(&Content::Replay, &VoteValue::Number(1.0), &p, &me, 0).is_empty());
    }

    #[test]
    fn coalition_values_match_the_round_kind() {
        assert_eq!(
            coalition_value("optionB", &VoteValue::Choice("a".into())),
            VoteValue::Choice("optionB".into())
        );
        assert_eq!(
            coalition_value("12.5", &VoteValue::Number(1.0)),
            VoteValue::Number(12.5)
        );
        assert_eq!(
            coalition_value("12.5", &VoteValue::Vector(vec![0.0, 0.0])),
            VoteValue::Vector(vec![12.5, 12.5])
        );
        let named = coalition_value("optionB", &VoteValue::Number(1.0));
        assert_eq!(named, coalition_value("optionB", &VoteValue::Number(7.0)));
    }

    #[test]
    fn byzantine_plans() {
        let opts = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(
            byzantine_plan(&Content::Honest, "a", &opts, false),
            ByzantinePlan::Replica
        );
        assert_eq!(
            byzantine_plan(&Content::Adaptive, "a", &opts, false),
            ByzantinePlan::Replica
        );
        let ByzantinePlan::Ballots(b) = byzantine_plan(&Content::Equivocate, "a", &opts, false)
        else {
            panic!("expected ballots")
        };
        assert_eq!(b.len(), 4);
        assert_eq!(b[0], (Phase::Prepare, "a".into()));
        assert_eq!(b[1], (Phase::Prepare, "b".into()));
        assert_eq!(
            byzantine_plan(&Content::Coalition("b".into()), "a", &opts, false),
            ByzantinePlan::Ballots(vec![
                (Phase::Prepare, "b".into()),
                (Phase::Commit, "b".into())
            ])
        );
    }

    #[test]
    fn adaptive_turns_one_prepare_short_of_a_quorum() {
        let mut seen: BTreeMap<(u32, String), BTreeSet<AgentId>> = BTreeMap::new();
        let peer = |s: &str| AgentId::new(s).unwrap();
        seen.entry((1, "a".into())).or_default().insert(peer("p1"));
        assert_eq!(adaptive_turn(&seen, Some("a"), 1, 4), None);
        seen.entry((1, "a".into())).or_default().insert(peer("p2"));
        assert_eq!(adaptive_turn(&seen, Some("a"), 1, 4), Some("a".into()));
        assert_eq!(adaptive_turn(&seen, Some("a"), 2, 4), None, "other round");
        let b = adaptive_ballots("a", &["a".into(), "b".into()]);
        assert_eq!(b[0], (Phase::Prepare, "b".into()));
        assert_eq!(b[2], (Phase::Commit, "a".into()));
    }

    #[test]
    fn delivery_faults_transform_messages() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let body = || Body::Signed {
            payload: vec![1, 2, 3],
            impostor: false,
        };
        let clean = deliver(&Delivery::default(), &mut rng, 0, 100, false, body());
        assert_eq!(
            clean,
            vec![Planned {
                delay_ms: 0,
                body: body()
            }]
        );
        let all_lost = Delivery {
            drop_percent: 100.0,
            ..Delivery::default()
        };
        assert!(deliver(&all_lost, &mut rng, 0, 100, false, body()).is_empty());
        let corrupt = Delivery {
            corrupt: true,
            ..Delivery::default()
        };
        let out = deliver(&corrupt, &mut rng, 0, 100, false, body());
        assert_eq!(out.len(), 2);
        let Body::Signed { payload, .. } = &out[1].body else {
            panic!("expected a signed garbage payload")
        };
        assert_eq!(payload[0], GARBAGE_MARKER);
        let forged = Delivery {
            invalid_signature: true,
            ..Delivery::default()
        };
        assert!(matches!(
            deliver(&forged, &mut rng, 0, 100, false, body())[0].body,
            Body::Signed { impostor: true, .. }
        ));
        let slow = Delivery {
            slow: Some((100, 10)),
            ..Delivery::default()
        };
        for _ in 0..50 {
            let d = deliver(&slow, &mut rng, 0, 1000, false, body())[0].delay_ms;
            assert!((90..=110).contains(&d), "{d}");
        }
        let timing = Delivery {
            timing_attack: true,
            ..Delivery::default()
        };
        assert_eq!(
            deliver(&timing, &mut rng, 1000, 2000, false, body())[0].delay_ms,
            1000 - TIMING_MARGIN_MS
        );
        assert_eq!(
            deliver(&timing, &mut rng, 1000, 2000, true, body())[0].delay_ms,
            1000 + TIMING_MARGIN_MS
        );
    }
}
