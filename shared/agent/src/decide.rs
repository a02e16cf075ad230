//! The user's side of an agent: a [`Decider`] turns a round of a session into a [`Vote`].

use std::future::Future;

use mabeam_protocol::{
    session::{Proposal, VoteValue},
    AgentId,
};

/// What an agent answers to one round.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub value: VoteValue,
    /// In `[0, 1]`; weighted algorithms multiply it with the agent's expertise. Anything
    /// else is clamped before sending (NaN becomes 0), since the coordinator would refuse the
    /// ballot as malformed and hold that against the agent.
    pub confidence: f64,
    pub reasoning: Option<String>,
}

impl Vote {
    /// A vote with full confidence.
    pub fn new(value: VoteValue) -> Self {
        Self {
            value,
            confidence: 1.0,
            reasoning: None,
        }
    }

    /// A vote for one option (or a candidate agent id, for leader election).
    pub fn choice(option: impl Into<String>) -> Self {
        Self::new(VoteValue::Choice(option.into()))
    }

    pub fn abstain() -> Self {
        Self::new(VoteValue::Abstain)
    }

    pub fn with_confidence(mut self, confidence: f64) -> Self {
        self.confidence = confidence;
        self
    }

    pub fn with_reasoning(mut self, reasoning: impl Into<String>) -> Self {
        self.reasoning = Some(reasoning.into());
        self
    }

    /// The confidence as it goes on the wire.
    pub(crate) fn wire_confidence(&self) -> f64 {
        if self.confidence.is_nan() {
            0.0
        } else {
            self.confidence.clamp(0.0, 1.0)
        }
    }
}

/// One round of a session, as the decider sees it.
#[derive(Debug, Clone, Copy)]
pub struct Round<'a> {
    pub agent_id: &'a AgentId,
    /// The coordinator's proposal: algorithm, options, round number and context
    /// (`Open`, `Refine` with the previous aggregate, `Counter` with the current compromise,
    /// `Byzantine` with the electorate and the previous round's suggestion).
    pub proposal: &'a Proposal,
    /// This agent's answer to the previous round of the same session, if any: iterative
    /// refinement and negotiation move from it.
    pub previous: Option<&'a Vote>,
}

/// Decides how the agent votes. Calls may run concurrently (one per open round) and may take
/// as long as they need (an LLM call, a computation); the agent keeps heartbeating and
/// taking part in Byzantine exchanges meanwhile. An answer that arrives after the round's
/// deadline is sent anyway and ignored by the coordinator.
///
/// For Byzantine agreement only a `Choice` (or `Abstain`) is meaningful: the SDK's replica
/// prepares that choice unless it is locked on an earlier value.
pub trait Decider: Send + Sync + 'static {
    fn decide(&self, round: &Round<'_>) -> impl Future<Output = Vote> + Send;
}

/// Any synchronous function of the round is a decider.
impl<F> Decider for F
where
    F: Fn(&Round<'_>) -> Vote + Send + Sync + 'static,
{
    fn decide(&self, round: &Round<'_>) -> impl Future<Output = Vote> + Send {
        std::future::ready(self(round))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_confidence_is_clamped_and_nan_becomes_zero() {
        assert_eq!(
            Vote::choice("a").with_confidence(1.5).wire_confidence(),
            1.0
        );
        assert_eq!(
            Vote::choice("a").with_confidence(-1.0).wire_confidence(),
            0.0
        );
        assert_eq!(
            Vote::choice("a")
                .with_confidence(f64::NAN)
                .wire_confidence(),
            0.0
        );
        assert_eq!(Vote::abstain().with_confidence(0.3).wire_confidence(), 0.3);
    }
}
