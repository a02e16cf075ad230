//! `mabeamctl events tail`: follow `mabeam.events.>` with optional filters.

use std::{collections::HashSet, io::Write};

use futures::StreamExt as _;
use mabeam_protocol::{
    telemetry::{EventKind, Service, TelemetryEvent},
    Limits, TaskId,
};
use mabeam_runtime::reply;
use serde_json::Value;

use crate::{
    client::{self, Global},
    error::exit,
    render, CtlError,
};

#[derive(Debug, clap::Subcommand)]
pub enum EventsCommand {
    /// Print events as they happen, until Ctrl-C or --count.
    Tail(TailArgs),
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    /// Only events of this service: registry, coordinator, fault_injector, telemetry, agent.
    #[arg(long, value_parser = parse_service)]
    pub service: Option<Service>,
    /// Only events of this kind, e.g. session_finished, ballot_rejected.
    #[arg(long, value_parser = parse_kind)]
    pub kind: Option<String>,
    /// Only events about this task (including its session's ballot and switch events).
    #[arg(long)]
    pub task: Option<TaskId>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

pub fn parse_service(text: &str) -> Result<Service, String> {
    let name = text.trim().to_ascii_lowercase().replace('-', "_");
    serde_json::from_value(Value::String(name)).map_err(|_| {
        format!(
            "unknown service {text:?}; expected registry, coordinator, fault_injector, \
             telemetry or agent"
        )
    })
}

/// A kind is one subject token: lowercase letters and `_`.
pub fn parse_kind(text: &str) -> Result<String, String> {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "an event kind is lowercase letters and '_', e.g. session_finished; got {text:?}"
        ))
    }
}

/// The subject to subscribe: service and kind filter on the server.
pub fn subject(args: &TailArgs) -> String {
    format!(
        "mabeam.events.{}.{}",
        args.service.map_or("*", Service::as_str),
        args.kind.as_deref().unwrap_or("*")
    )
}

/// Keeps events about one task, following its sessions: session-only events (ballots,
/// equivocations, switches) match once a session of the task has been seen.
#[derive(Debug)]
pub struct TaskFilter {
    task: TaskId,
    sessions: HashSet<String>,
}

impl TaskFilter {
    pub fn new(task: TaskId) -> Self {
        Self {
            task,
            sessions: HashSet::new(),
        }
    }

    pub fn keep(&mut self, event: &EventKind) -> bool {
        let (task, session) = match event {
            EventKind::TaskAccepted { task_id, .. } => (Some(task_id), None),
            EventKind::TaskRejected { task_id, .. }
            | EventKind::TaskDeadLettered { task_id, .. } => (task_id.as_ref(), None),
            EventKind::SessionStarted {
                task_id,
                session_id,
                ..
            }
            | EventKind::SessionResumed {
                task_id,
                session_id,
                ..
            }
            | EventKind::SessionFinished {
                task_id,
                session_id,
                ..
            } => (Some(task_id), Some(session_id)),
            EventKind::AlgorithmSwitched { session_id, .. }
            | EventKind::BallotRejected { session_id, .. }
            | EventKind::EquivocationDetected { session_id, .. } => (None, Some(session_id)),
            EventKind::AgentStatusChanged { .. }
            | EventKind::FaultInjected { .. }
            | EventKind::FaultHealed { .. } => (None, None),
        };
        match (task, session) {
            (Some(task), Some(session)) if *task == self.task => {
                self.sessions.insert(session.as_str().to_owned());
                true
            }
            (Some(task), _) => *task == self.task,
            (None, Some(session)) => self.sessions.contains(session.as_str()),
            (None, None) => false,
        }
    }
}

/// One readable line: time, service/instance, kind, then the event's fields.
pub fn line(event: &TelemetryEvent) -> String {
    let mut text = format!(
        "{} {}/{} {}",
        render::utc(event.at_ms),
        event.service.as_str(),
        event.instance,
        event.event.name()
    );
    if let Ok(Value::Object(fields)) = serde_json::to_value(&event.event) {
        for (key, value) in fields.iter().filter(|(k, _)| k.as_str() != "kind") {
            let value = match value {
                Value::String(s) if !s.is_empty() && !s.contains(char::is_whitespace) => s.clone(),
                other => other.to_string(),
            };
            text.push(' ');
            text.push_str(key);
            text.push('=');
            text.push_str(&value);
        }
    }
    text
}

pub async fn tail(global: &Global, args: &TailArgs, out: &mut dyn Write) -> Result<u8, CtlError> {
    if args.count == Some(0) {
        return Ok(exit::OK);
    }
    let client = client::connect(global).await?;
    let subject = subject(args);
    let nats_error = |e: &dyn std::fmt::Display| CtlError::Nats {
        subject: subject.clone(),
        message: e.to_string(),
    };
    let mut events = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| nats_error(&e))?;
    // Once confirmed the server has the subscription: say so, for scripts that wait for it.
    mabeam_runtime::nats::confirm_subscriptions(&client, global.timeout)
        .await
        .map_err(|e| nats_error(&e))?;
    let mut stderr = std::io::stderr();
    let _ = writeln!(stderr, "listening on {subject} (Ctrl-C to stop)");
    let mut filter = args.task.clone().map(TaskFilter::new);
    let mut printed = 0;
    let interrupted = tokio::signal::ctrl_c();
    tokio::pin!(interrupted);
    loop {
        let message = tokio::select! {
            _ = &mut interrupted => break,
            m = events.next() => m,
        };
        let Some(message) = message else { break };
        let event = match reply::decode_message::<TelemetryEvent>(
            message.headers.as_ref(),
            &message.payload,
            &Limits::default(),
        ) {
            Ok((event, _)) => event,
            Err(e) => {
                let _ = writeln!(
                    stderr,
                    "skipping an undecodable event on {}: {e}",
                    message.subject
                );
                continue;
            }
        };
        if let Some(filter) = &mut filter {
            if !filter.keep(&event.event) {
                continue;
            }
        }
        if global.json {
            let text = serde_json::to_string(&event).map_err(CtlError::Encode)?;
            writeln!(out, "{text}")?;
        } else {
            writeln!(out, "{}", line(&event))?;
        }
        out.flush()?;
        printed += 1;
        if args.count.is_some_and(|n| printed >= n) {
            break;
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use mabeam_protocol::{result::FaultReason, AgentId, SessionId};

    use super::*;

    #[test]
    fn filters_choose_the_subject() {
        let args = TailArgs {
            service: Some(parse_service("fault-injector").unwrap()),
            kind: None,
            task: None,
            count: None,
        };
        assert_eq!(subject(&args), "mabeam.events.fault_injector.*");
        let args = TailArgs {
            service: None,
            kind: Some(parse_kind("session_finished").unwrap()),
            task: None,
            count: None,
        };
        assert_eq!(subject(&args), "mabeam.events.*.session_finished");
        assert!(parse_service("scheduler").is_err());
        assert!(parse_kind("a.b").is_err());
        assert!(parse_kind(">").is_err());
    }

    #[test]
    fn a_task_filter_follows_the_tasks_sessions() {
        let mut filter = TaskFilter::new(TaskId::new("t1").unwrap());
        let ballot = |s: &str| EventKind::BallotRejected {
            session_id: SessionId::new(s).unwrap(),
            agent_id: AgentId::new("a").unwrap(),
            reason: FaultReason::Replay,
        };
        assert!(!filter.keep(&ballot("s1")), "session not known yet");
        assert!(filter.keep(&EventKind::SessionStarted {
            task_id: TaskId::new("t1").unwrap(),
            session_id: SessionId::new("s1").unwrap(),
            algorithm: "majority".into(),
            participants: 3,
        }));
        assert!(filter.keep(&ballot("s1")));
        assert!(!filter.keep(&ballot("s2")));
        assert!(!filter.keep(&EventKind::TaskAccepted {
            task_id: TaskId::new("t2").unwrap(),
            algorithm: "majority".into(),
        }));
    }

    #[test]
    fn lines_show_the_fields() {
        let event = TelemetryEvent {
            v: 1,
            service: Service::Coordinator,
            instance: "c1".into(),
            at_ms: 0,
            event: EventKind::TaskRejected {
                task_id: None,
                code: mabeam_protocol::ErrorCode::UnknownAlgorithm,
                message: "unknown algorithm raft".into(),
            },
        };
        assert_eq!(
            line(&event),
            "1970-01-01T00:00:00.000Z coordinator/c1 task_rejected code=unknown_algorithm \
             message=\"unknown algorithm raft\""
        );
    }
}
