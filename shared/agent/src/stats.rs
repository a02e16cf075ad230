//! The SDK's metrics. Agents of one process (agent-sim) share them, so none has a per-agent
//! label.

use mabeam_consensus::ALGORITHMS;

/// A bounded label for a proposal's algorithm (the wire may carry any string).
fn algorithm_label(algorithm: &str) -> &'static str {
    ALGORITHMS
        .iter()
        .find(|a| **a == algorithm)
        .copied()
        .unwrap_or("other")
}

pub(crate) fn proposal(algorithm: &str) {
    metrics::counter!("mabeam_agent_proposals_total", "algorithm" => algorithm_label(algorithm))
        .increment(1);
}

pub(crate) fn vote_sent() {
    metrics::counter!("mabeam_agent_votes_sent_total").increment(1);
}

pub(crate) fn publish_failed() {
    metrics::counter!("mabeam_agent_publish_failures_total").increment(1);
}

pub(crate) fn faults_active(delta: f64) {
    metrics::gauge!("mabeam_agent_faults_active").increment(delta);
}

pub(crate) fn decide_duration(seconds: f64) {
    metrics::histogram!("mabeam_agent_decide_duration_seconds").record(seconds);
}

pub(crate) fn registered(delta: f64) {
    metrics::gauge!("mabeam_agent_registered").increment(delta);
}

pub(crate) fn registration_failure(reason: &'static str) {
    metrics::counter!("mabeam_agent_registration_failures_total", "reason" => reason).increment(1);
}

pub(crate) fn heartbeat_failure(reason: &'static str) {
    metrics::counter!("mabeam_agent_heartbeat_failures_total", "reason" => reason).increment(1);
}

pub(crate) fn deregistration_failure(reason: &'static str) {
    metrics::counter!("mabeam_agent_deregistration_failures_total", "reason" => reason)
        .increment(1);
}

/// An inbound message the agent could not use.
pub(crate) fn refused(reason: &'static str) {
    metrics::counter!("mabeam_agent_messages_refused_total", "reason" => reason).increment(1);
}

pub(crate) fn byzantine_decided() {
    metrics::counter!("mabeam_agent_byzantine_decided_total").increment(1);
}

pub(crate) fn equivocation_seen() {
    metrics::counter!("mabeam_agent_equivocations_seen_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_algorithms_share_one_label() {
        assert_eq!(algorithm_label("weighted"), "weighted");
        assert_eq!(algorithm_label("anything-else"), "other");
    }
}
