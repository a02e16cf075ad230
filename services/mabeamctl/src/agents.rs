//! `mabeamctl agents` (registry query) and `mabeamctl session` (a task's result or live
//! status).

use std::io::Write;

use mabeam_protocol::{
    registry::{AgentList, AgentQuery, AgentStatus},
    session::{SessionQuery, SessionView, TaskState},
    subjects, AgentId, TaskId, PROTOCOL_VERSION,
};

use crate::{
    client::{self, Global},
    error::exit,
    render, submit, CtlError,
};

/// `registered`, `active`, `suspect`, `failed`, `recovered` or `quarantined`.
pub fn parse_status(text: &str) -> Result<AgentStatus, String> {
    serde_json::from_value(serde_json::Value::String(text.to_ascii_lowercase())).map_err(|_| {
        format!(
            "unknown status {text:?}; expected registered, active, suspect, failed, \
             recovered or quarantined"
        )
    })
}

#[derive(Debug, clap::Args)]
pub struct AgentsArgs {
    /// Only agents with this capability.
    #[arg(long)]
    pub capability: Option<String>,
    /// Only agents with this status.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<AgentStatus>,
    /// Only these agents.
    #[arg(long = "agent", value_delimiter = ',', value_name = "ID,ID")]
    pub agents: Vec<AgentId>,
    /// At most this many.
    #[arg(long)]
    pub limit: Option<u32>,
}

pub async fn agents(
    global: &Global,
    args: &AgentsArgs,
    out: &mut dyn Write,
) -> Result<u8, CtlError> {
    let client = client::connect(global).await?;
    let query = AgentQuery {
        v: PROTOCOL_VERSION,
        capability: args.capability.clone(),
        status: args.status,
        agent_ids: args.agents.clone(),
        limit: args.limit,
    };
    let list: AgentList =
        client::request(&client, subjects::REGISTRY_QUERY, &query, global.timeout).await?;
    if global.json {
        let text = serde_json::to_string_pretty(&list).map_err(CtlError::Encode)?;
        writeln!(out, "{text}")?;
        return Ok(exit::OK);
    }
    if list.agents.is_empty() {
        writeln!(out, "no agents")?;
        return Ok(exit::OK);
    }
    let rows: Vec<Vec<String>> = list
        .agents
        .iter()
        .map(|a| {
            vec![
                a.agent_id.to_string(),
                a.kind.clone(),
                a.status.as_str().to_owned(),
                a.expertise.to_string(),
                a.capabilities.join(","),
                format!("{}/{}", a.load, a.capacity),
                a.last_heartbeat_ms
                    .map_or_else(|| "-".to_owned(), render::utc),
            ]
        })
        .collect();
    write!(
        out,
        "{}",
        render::table(
            &[
                "ID",
                "KIND",
                "STATUS",
                "EXPERTISE",
                "CAPABILITIES",
                "LOAD",
                "LAST HEARTBEAT"
            ],
            &rows
        )
    )?;
    Ok(exit::OK)
}

#[derive(Debug, clap::Args)]
pub struct SessionArgs {
    /// The task whose session to show.
    pub task_id: TaskId,
}

pub async fn session(
    global: &Global,
    args: &SessionArgs,
    out: &mut dyn Write,
) -> Result<u8, CtlError> {
    let client = client::connect(global).await?;
    let query = SessionQuery {
        v: PROTOCOL_VERSION,
        task_id: args.task_id.clone(),
    };
    let view: SessionView =
        client::request(&client, subjects::SESSIONS_GET, &query, global.timeout).await?;
    if global.json {
        let text = serde_json::to_string_pretty(&view).map_err(CtlError::Encode)?;
        writeln!(out, "{text}")?;
        return Ok(exit::OK);
    }
    let state = match view.state {
        TaskState::Queued => "queued (not picked up by a coordinator yet)",
        TaskState::Running => "running",
        TaskState::Finished => "finished",
    };
    writeln!(out, "{:<13} {state}", "state")?;
    if view.result.is_none() {
        writeln!(out, "{:<13} {}", "task", view.task_id)?;
    }
    if let Some(live) = &view.live {
        writeln!(out, "{:<13} {}", "session", live.session_id)?;
        writeln!(out, "{:<13} {}", "algorithm", live.algorithm)?;
        writeln!(out, "{:<13} {}", "round", live.round)?;
        writeln!(out, "{:<13} {}", "participants", live.participants)?;
        writeln!(out, "{:<13} {}", "started", render::utc(live.started_ms))?;
        writeln!(out, "{:<13} {}", "deadline", render::utc(live.deadline_ms))?;
        writeln!(out, "{:<13} {}", "owner", live.owner)?;
    }
    if let Some(result) = &view.result {
        submit::print_result(global, result, out)?;
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_by_name() {
        assert_eq!(parse_status("active").unwrap(), AgentStatus::Active);
        assert_eq!(
            parse_status("Quarantined").unwrap(),
            AgentStatus::Quarantined
        );
        assert!(parse_status("alive")
            .unwrap_err()
            .contains("expected registered"));
    }
}
