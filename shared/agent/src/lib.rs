//! The mabeam agent SDK: an agent in about twenty lines.
//!
//! An agent has an id, a kind, capabilities, an expertise weight and an ed25519 key
//! ([`keys`]: generated, loaded from hex/base64, or derived from a seed and the id). Running
//! it ([`Agent::run`]) subscribes to its inbox and fault subjects, registers with the
//! registry (retrying with backoff until one answers, and again whenever a heartbeat finds
//! the registry has forgotten it), heartbeats with jitter carrying load and capacity, answers
//! every proposal with the user's [`Decider`], and deregisters on shutdown.
//!
//! ```no_run
//! use mabeam_agent::{Agent, Round, Vote};
//! use mabeam_protocol::session::VoteValue;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let agent = Agent::builder("reviewer-1", "rule-based")
//!     .capabilities(["code-review"])
//!     .expertise(2.0)
//!     .decider(|round: &Round<'_>| match round.proposal.options.first() {
//!         Some(first) => Vote::choice(first.clone()).with_confidence(0.8),
//!         None => Vote::new(VoteValue::Abstain),
//!     })
//!     .build()?;
//! let shutdown = tokio_util::sync::CancellationToken::new();
//! agent.run(client, shutdown).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Proposals: single-round algorithms get one vote; multi-round ones one vote per round
//! (`Round::previous` is the agent's answer to the round before; [`honest`] has the honest
//! moves: toward the aggregate for iterative refinement, an [`honest::Offer`] conceding
//! toward a negotiation's counter-proposal). Byzantine sessions run
//! `mabeam_consensus::replica::ByzantineReplica` over the session's vote subjects: the
//! decider picks the value to prepare (the round's suggestion is in the proposal's context),
//! and an agent re-sends its round's envelopes once peers that joined after it published
//! show up. A proposal re-sent for a round already answered gets the same envelopes again;
//! `SessionClosed` drops the session; session state expires after the deadline plus a grace
//! period. Envelope sequence numbers are the send time in µs, strictly increasing per
//! session; timestamps come from the wall clock.
//!
//! Every agent carries the fault layer ([`faults`]) that the fault-injector drives with
//! `AgentFaultCommand`s on `mabeam.agents.<id>.faults`.
//!
//! The client side is here too: [`tasks`] submits tasks (at normal or high priority) and
//! waits for their results; [`swarm`] works with a group of agents as one — broadcast to
//! them (agents receive it through [`AgentBuilder::on_message`]), ask them for consensus
//! with a number of required votes, distribute work among them by a strategy.
//!
//! Metrics (shared by every agent of a process): `mabeam_agent_proposals_total{algorithm}`,
//! `mabeam_agent_votes_sent_total`, `mabeam_agent_publish_failures_total`,
//! `mabeam_agent_faults_active`, `mabeam_agent_decide_duration_seconds`,
//! `mabeam_agent_registered`, `mabeam_agent_registration_failures_total{reason}`,
//! `mabeam_agent_heartbeat_failures_total{reason}`,
//! `mabeam_agent_deregistration_failures_total{reason}`,
//! `mabeam_agent_messages_refused_total{reason}`, `mabeam_agent_byzantine_decided_total`,
//! `mabeam_agent_equivocations_seen_total`, `mabeam_agent_group_messages_total{outcome}`;
//! the LLM decider ([`llm`]) adds
//! `mabeam_agent_llm_requests_total{outcome}`, `mabeam_agent_llm_request_duration_seconds`,
//! `mabeam_agent_llm_fallbacks_total{reason}` and
//! `mabeam_agent_llm_breaker_transitions_total{to}`.

mod agent;
mod decide;
mod error;
pub mod faults;
pub mod honest;
pub mod keys;
pub mod llm;
mod registry;
mod runner;
mod stats;
pub mod swarm;
pub mod tasks;

pub use agent::{Agent, AgentBuilder, LoadHandle};
pub use decide::{Decider, Round, Vote};
pub use error::AgentError;
pub use honest::Opinion;
pub use mabeam_protocol::AgentKeypair;
pub use stats::METRICS;
