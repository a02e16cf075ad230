//! The SDK's metrics. Agents of one process (agent-sim) share them, so none has a per-agent
//! label.

use mabeam_consensus::ALGORITHMS;
use mabeam_runtime::metrics::Described;

/// Help texts of the SDK's metrics; a process running agents passes them to
/// `mabeam_runtime::metrics::describe`.
pub const METRICS: &[Described] = &[
    Described::Counter(
        "mabeam_agent_proposals_total",
        "Proposals received by the agents, by algorithm.",
    ),
    Described::Counter(
        "mabeam_agent_votes_sent_total",
        "Signed ballots the agents published.",
    ),
    Described::Counter(
        "mabeam_agent_publish_failures_total",
        "Ballots or heartbeats the agents could not publish.",
    ),
    Described::Gauge(
        "mabeam_agent_faults_active",
        "Fault commands currently applied to the agents.",
    ),
    Described::Histogram(
        "mabeam_agent_decide_duration_seconds",
        "Time the agents' deciders took per proposal.",
    ),
    Described::Gauge(
        "mabeam_agent_registered",
        "Agents currently registered with the registry.",
    ),
    Described::Counter(
        "mabeam_agent_registration_failures_total",
        "Failed registrations by reason.",
    ),
    Described::Counter(
        "mabeam_agent_heartbeat_failures_total",
        "Failed heartbeats by reason.",
    ),
    Described::Counter(
        "mabeam_agent_deregistration_failures_total",
        "Failed deregistrations by reason.",
    ),
    Described::Counter(
        "mabeam_agent_messages_refused_total",
        "Inbound messages the agents could not use, by reason.",
    ),
    Described::Counter(
        "mabeam_agent_byzantine_decided_total",
        "Byzantine sessions in which an agent saw a commit quorum.",
    ),
    Described::Counter(
        "mabeam_agent_equivocations_seen_total",
        "Equivocating peers the agents' Byzantine replicas noticed.",
    ),
    Described::Counter(
        "mabeam_agent_group_messages_total",
        "Group messages (swarm broadcasts) the agents received, by outcome: handled, or unhandled when the agent has no message handler.",
    ),
];

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

/// A group message reached an agent; `handled` when it has a handler.
pub(crate) fn group_message(handled: bool) {
    let outcome = if handled { "handled" } else { "unhandled" };
    metrics::counter!("mabeam_agent_group_messages_total", "outcome" => outcome).increment(1);
}

pub(crate) fn equivocation_seen() {
    metrics::counter!("mabeam_agent_equivocations_seen_total").increment(1);
}

/// One request to the LLM endpoint and how it ended (`ok` or an `LlmError` kind).
pub(crate) fn llm_request(outcome: &'static str, seconds: f64) {
    metrics::counter!("mabeam_agent_llm_requests_total", "outcome" => outcome).increment(1);
    metrics::histogram!("mabeam_agent_llm_request_duration_seconds").record(seconds);
}

/// A round answered by the rules instead of the model, and why.
pub(crate) fn llm_fallback(reason: &str) {
    let reason = match reason {
        "no_endpoint" => "no_endpoint",
        "unsupported_algorithm" => "unsupported_algorithm",
        "circuit_open" => "circuit_open",
        "malformed" => "malformed",
        "timeout" => "timeout",
        "connect" => "connect",
        "status_5xx" | "status_429" | "status_4xx" => "status",
        _ => "other",
    };
    metrics::counter!("mabeam_agent_llm_fallbacks_total", "reason" => reason).increment(1);
}

/// The circuit breaker moved to `to` (`open`, `half_open`, `closed`).
pub(crate) fn llm_breaker(to: &'static str) {
    metrics::counter!("mabeam_agent_llm_breaker_transitions_total", "to" => to).increment(1);
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
