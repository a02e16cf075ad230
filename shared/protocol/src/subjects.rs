//! Every NATS subject mabeam uses, built in one place.
//!
//! Tokens come from validated ids ([`crate::ids`]), so a built subject never holds a wildcard.

use crate::{telemetry::Service, AgentId, SessionId, TaskId};

/// Users publish tasks here (JSON or MessagePack).
pub const TASKS_SUBMIT: &str = "mabeam.tasks.submit";
/// JetStream stream capturing [`TASKS_SUBMIT`] (work-queue retention).
pub const TASKS_STREAM: &str = "MABEAM_TASKS";
/// Users publish high-priority tasks here: coordinators take them before normal ones.
pub const TASKS_SUBMIT_HIGH: &str = "mabeam.tasks.submit.high";
/// JetStream stream capturing [`TASKS_SUBMIT_HIGH`] (work-queue retention).
pub const TASKS_HIGH_STREAM: &str = "MABEAM_TASKS_HIGH";
/// Task messages the coordinators gave up on (undeliverable after `max_deliver` attempts),
/// each with its original body and headers plus the reason.
pub const TASKS_DEADLETTER: &str = "mabeam.tasks.deadletter";
/// JetStream stream capturing [`TASKS_DEADLETTER`].
pub const DEADLETTER_STREAM: &str = "MABEAM_DEADLETTER";
/// Header of a dead letter: why the task was given up.
pub const DEADLETTER_REASON_HEADER: &str = "Mabeam-Deadletter-Reason";
/// Header of a dead letter: the task id, when one could be determined.
pub const DEADLETTER_TASK_HEADER: &str = "Mabeam-Task-Id";
/// Header of a dead letter: how many times the task message was delivered.
pub const DEADLETTER_DELIVERIES_HEADER: &str = "Mabeam-Deliveries";
/// Header of a dead letter: the task message's sequence in its task stream.
pub const DEADLETTER_SEQUENCE_HEADER: &str = "Mabeam-Stream-Sequence";
/// Header of a dead letter: the task stream it came from ([`TASKS_STREAM`] or
/// [`TASKS_HIGH_STREAM`]).
pub const DEADLETTER_STREAM_HEADER: &str = "Mabeam-Stream";
/// JetStream stream keeping results for replay.
pub const RESULTS_STREAM: &str = "MABEAM_RESULTS";
/// Every result subject.
pub const RESULTS_ALL: &str = "mabeam.results.>";
/// Request/reply: the result or live status of a task.
pub const SESSIONS_GET: &str = "mabeam.sessions.get";

pub const REGISTRY_REGISTER: &str = "mabeam.registry.register";
pub const REGISTRY_DEREGISTER: &str = "mabeam.registry.deregister";
pub const REGISTRY_HEARTBEAT: &str = "mabeam.registry.heartbeat";
pub const REGISTRY_QUERY: &str = "mabeam.registry.query";
/// Coordinator → registry: equivocation evidence that quarantines an agent.
pub const REGISTRY_EVIDENCE: &str = "mabeam.registry.evidence";
/// Agreement reports for dynamic weights (published by coordinators, no reply).
pub const REGISTRY_AGREEMENT: &str = "mabeam.registry.agreement";

pub const FAULTS_INJECT: &str = "mabeam.faults.inject";
pub const FAULTS_HEAL: &str = "mabeam.faults.heal";
pub const FAULTS_LIST: &str = "mabeam.faults.list";
/// Audit-trail query, answered by telemetry.
pub const TELEMETRY_AUDIT: &str = "mabeam.telemetry.audit";

/// Every event of every service.
pub const EVENTS_ALL: &str = "mabeam.events.>";

/// `mabeam.results.<task_id>`
pub fn results(task: &TaskId) -> String {
    format!("mabeam.results.{task}")
}

/// `mabeam.agents.<agent_id>.inbox`: proposals and session notices for one agent.
pub fn agent_inbox(agent: &AgentId) -> String {
    format!("mabeam.agents.{agent}.inbox")
}

/// `mabeam.agents.<agent_id>.messages`: application messages to one agent (a group
/// broadcast's copy for it).
pub fn agent_messages(agent: &AgentId) -> String {
    format!("mabeam.agents.{agent}.messages")
}

/// `mabeam.agents.<agent_id>.faults`: fault commands for one agent's fault layer.
pub fn agent_faults(agent: &AgentId) -> String {
    format!("mabeam.agents.{agent}.faults")
}

/// `mabeam.sessions.<session_id>.votes.<agent_id>`: where an agent publishes its signed
/// ballots for a session. Server permissions let an agent publish only on its own.
pub fn session_votes(session: &SessionId, agent: &AgentId) -> String {
    format!("mabeam.sessions.{session}.votes.{agent}")
}

/// `mabeam.sessions.<session_id>.votes.*`: every ballot of a session (the coordinator, and
/// Byzantine peers, listen here).
pub fn session_votes_all(session: &SessionId) -> String {
    format!("mabeam.sessions.{session}.votes.*")
}

/// `mabeam.events.<service>.<kind>`
pub fn event(service: Service, kind: &str) -> String {
    format!("mabeam.events.{}.{kind}", service.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_have_the_documented_shape() {
        let agent = AgentId::new("a-1").unwrap();
        let session = SessionId::new("s-9").unwrap();
        let task = TaskId::new("t-3").unwrap();
        assert_eq!(results(&task), "mabeam.results.t-3");
        assert_eq!(agent_inbox(&agent), "mabeam.agents.a-1.inbox");
        assert_eq!(agent_messages(&agent), "mabeam.agents.a-1.messages");
        assert_eq!(
            session_votes(&session, &agent),
            "mabeam.sessions.s-9.votes.a-1"
        );
        assert_eq!(session_votes_all(&session), "mabeam.sessions.s-9.votes.*");
        assert_eq!(
            event(Service::FaultInjector, "fault_injected"),
            "mabeam.events.fault_injector.fault_injected"
        );
    }
}
