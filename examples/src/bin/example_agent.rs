//! A complete mabeam agent in about twenty lines, with a simple rule-based decider.
//!
//! It registers as `MABEAM_AGENT_ID` (default `example-agent`, kind `rule-based`,
//! capability `example`), heartbeats, answers every proposal and deregisters on Ctrl-C.
//! The rule: the shortest option (ties: the first listed), with confidence 0.7; 42 for
//! numbers, an offer of 42 accepting 30 to 60 in negotiations, a bid of 10, a load of 1 out of
//! 4, and itself as leader.
//!
//! ```sh
//! MABEAM_NATS_URL=nats://127.0.0.1:4222 cargo run -p mabeam-examples --bin example-agent
//! ```
//!
//! then submit a task that names it, e.g. on `mabeam.tasks.submit`:
//! `{"algorithm": "majority", "options": ["yes", "no"], "participants": {"agents": ["example-agent"]}}`.
//!
//! Its key comes from `MABEAM_AGENT_KEY` (64 hex characters or base64 of the 32-byte secret);
//! without one it is derived from the id, so restarts keep the registered key, but anyone
//! can derive it: set a real key for anything beyond a demo.

use mabeam_agent::{keys, Agent, Round, Vote};
use mabeam_protocol::{session::VoteValue, AgentId};
use mabeam_runtime::config::LogFormat;

fn decide(round: &Round<'_>) -> Vote {
    match round.proposal.algorithm.as_str() {
        "iterative" => Vote::new(VoteValue::Number(42.0)),
        "negotiation" => Vote::new(VoteValue::Offer {
            value: 42.0,
            min: 30.0,
            max: 60.0,
        }),
        "auction" => Vote::new(VoteValue::Bid(10.0)),
        "work_distribution" => Vote::new(VoteValue::Load {
            load: 1.0,
            capacity: 4.0,
        }),
        "leader_election" => Vote::choice(round.agent_id.to_string()),
        _ => match round.proposal.options.iter().min_by_key(|o| o.len()) {
            Some(option) => Vote::choice(option.clone()).with_confidence(0.7),
            None => Vote::choice("accept").with_reasoning("no options: accept the proposal"),
        },
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    mabeam_runtime::logging::init("info,mabeam_agent=debug", &LogFormat::Text);
    let url = std::env::var("MABEAM_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let id =
        AgentId::new(std::env::var("MABEAM_AGENT_ID").unwrap_or_else(|_| "example-agent".into()))?;
    let key = match std::env::var("MABEAM_AGENT_KEY") {
        Ok(secret) => keys::parse(&secret)?,
        Err(_) => keys::derive(b"mabeam-example", &id),
    };
    let agent = Agent::builder(id.as_str(), "rule-based")
        .capabilities(["example"])
        .keypair(key)
        .decider(decide)
        .build()?;
    let client = async_nats::connect(url).await?;
    agent
        .run(client, mabeam_runtime::shutdown::on_signal())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use mabeam_protocol::{
        session::{Phase, Proposal, RoundContext},
        SessionId, TaskId,
    };

    use super::*;

    fn ask(algorithm: &str, options: &[&str]) -> VoteValue {
        let proposal = Proposal {
            v: 1,
            task_id: TaskId::new("t").unwrap(),
            session_id: SessionId::new("s").unwrap(),
            algorithm: algorithm.into(),
            round: 1,
            phase: Phase::Vote,
            proposal: Default::default(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
            deadline_ms: 0,
            context: RoundContext::Open,
        };
        let me = AgentId::new("example-agent").unwrap();
        decide(&Round {
            agent_id: &me,
            proposal: &proposal,
            previous: None,
        })
        .value
    }

    #[test]
    fn the_rule_answers_every_algorithm() {
        assert_eq!(
            ask("majority", &["maybe", "no", "yes"]),
            VoteValue::Choice("no".into())
        );
        assert_eq!(ask("weighted", &[]), VoteValue::Choice("accept".into()));
        assert_eq!(ask("iterative", &[]), VoteValue::Number(42.0));
        assert_eq!(ask("auction", &[]), VoteValue::Bid(10.0));
        assert_eq!(
            ask("leader_election", &[]),
            VoteValue::Choice("example-agent".into())
        );
        assert!(matches!(ask("negotiation", &[]), VoteValue::Offer { .. }));
        assert!(matches!(
            ask("work_distribution", &[]),
            VoteValue::Load { .. }
        ));
    }
}
