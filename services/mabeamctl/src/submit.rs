//! `mabeamctl submit`: publish a task through JetStream on the subject of its priority
//! (`mabeam.tasks.submit` or `mabeam.tasks.submit.high`), and with `--wait` print its result.

use std::{io::Write, path::PathBuf, time::Duration};

use mabeam_agent::tasks::{Submitted, TaskClient, TaskError};
use mabeam_protocol::{
    codec::decode,
    task::{ParticipantSelector, Priority, TaskSubmission},
    AgentId, ContentType, Limits, Status, TaskId, TaskResult, PROTOCOL_VERSION,
};
use serde_json::{Map, Value};

use crate::{
    client::{self, Global},
    error::exit,
    params::{parse_key_value, parse_params_object},
    render, CtlError,
};

/// Body encoding on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WireFormat {
    Msgpack,
    Json,
}

impl From<WireFormat> for ContentType {
    fn from(f: WireFormat) -> Self {
        match f {
            WireFormat::Msgpack => ContentType::MsgPack,
            WireFormat::Json => ContentType::Json,
        }
    }
}

pub(crate) const SUBMIT_HELP: &str = "\
Participants (one of): --agents a1,a2 | --capability gpu [--count 5] | --all

Examples:
  mabeamctl submit -a majority -o A -o B --all --wait
  mabeamctl submit -a weighted --capability ml-eval --count 15 -o resnet -o vit \\
      --proposal 'which model ships' -p threshold=0.6 --wait --json
  mabeamctl submit -a plurality -o block -o allow --agents a1,a2,a3 -p min_votes=2 \\
      --priority high --wait
  mabeamctl submit --file task.json --format json

Without --task-id a task id is generated (ctl-<ms>-<hex>); it is the JetStream dedup id
(Nats-Msg-Id), so re-running with the same --task-id does not queue the task twice.

--priority high queues the task on mabeam.tasks.submit.high: coordinators take every
waiting high task before any normal one.

--wait exit status: 0 decided, 3 no decision, 4 failed or rejected, 5 no result in time.";

/// Waiting beyond the task's own timeout, for the coordinator to publish the result.
const WAIT_MARGIN: Duration = Duration::from_secs(5);
/// The coordinator's default task timeout.
const DEFAULT_TASK_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The task as a JSON file (a TaskSubmission); --task-id may still set its id.
    #[arg(long, short = 'f', value_name = "FILE", conflicts_with_all = [
        "algorithm", "options", "agents", "capability", "count", "all", "params", "param",
        "proposal", "timeout_ms",
    ])]
    pub file: Option<PathBuf>,
    /// Algorithm, e.g. majority, weighted, byzantine.
    #[arg(long, short = 'a', required_unless_present = "file")]
    pub algorithm: Option<String>,
    /// An option to choose from (repeat for each).
    #[arg(long = "option", short = 'o', value_name = "OPTION")]
    pub options: Vec<String>,
    /// Participants by id.
    #[arg(long, value_delimiter = ',', value_name = "ID,ID", conflicts_with_all = ["capability", "all"])]
    pub agents: Vec<AgentId>,
    /// Participants by capability (with --count, at most that many).
    #[arg(long, value_name = "CAPABILITY", conflicts_with = "all")]
    pub capability: Option<String>,
    /// With --capability: at most this many agents.
    #[arg(long, requires = "capability", conflicts_with_all = ["agents", "all"])]
    pub count: Option<u32>,
    /// Every active agent takes part.
    #[arg(long)]
    pub all: bool,
    /// Algorithm parameters as a JSON object.
    #[arg(long, value_name = "JSON", value_parser = parse_params_object)]
    pub params: Option<Map<String, Value>>,
    /// One parameter, overriding --params (repeatable); the value is JSON when it parses.
    #[arg(long, short = 'p', value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub param: Vec<(String, Value)>,
    /// What is decided: JSON, or plain text.
    #[arg(long, value_name = "JSON|TEXT")]
    pub proposal: Option<String>,
    /// The session's timeout.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Task id (and dedup id); generated when absent.
    #[arg(long)]
    pub task_id: Option<TaskId>,
    /// Queue: high tasks overtake normal ones (overrides the file's `priority`).
    #[arg(long, value_name = "normal|high")]
    pub priority: Option<Priority>,
    /// Body encoding on the wire.
    #[arg(long, value_enum, default_value = "msgpack")]
    pub format: WireFormat,
    /// Wait for the result and print it.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (default: the task's timeout plus 5s).
    #[arg(long, requires = "wait", value_parser = client::parse_duration, value_name = "DURATION")]
    pub wait_timeout: Option<Duration>,
}

/// The task the flags (or the file) describe.
pub fn build(args: &SubmitArgs) -> Result<TaskSubmission, CtlError> {
    let mut task = match &args.file {
        Some(path) => {
            let text = std::fs::read(path).map_err(|e| {
                CtlError::usage(format!("cannot read task file {}: {e}", path.display()))
            })?;
            decode::<TaskSubmission>(ContentType::Json, &text, &Limits::default()).map_err(|e| {
                CtlError::usage(format!("invalid task file {}: {e}", path.display()))
            })?
        }
        None => {
            let participants = if !args.agents.is_empty() {
                ParticipantSelector::Agents {
                    agents: args.agents.clone(),
                }
            } else if let Some(capability) = &args.capability {
                ParticipantSelector::Capability {
                    capability: capability.clone(),
                    count: args.count,
                }
            } else if args.all {
                ParticipantSelector::All { all: true }
            } else {
                return Err(CtlError::usage(
                    "say who takes part: --agents a,b | --capability x [--count n] | --all",
                ));
            };
            let mut params = args.params.clone().unwrap_or_default();
            params.extend(args.param.iter().cloned());
            TaskSubmission {
                v: PROTOCOL_VERSION,
                task_id: None,
                algorithm: args.algorithm.clone().unwrap_or_default(),
                proposal: args
                    .proposal
                    .as_deref()
                    .map(|text| {
                        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()))
                    })
                    .unwrap_or(Value::Null),
                options: args.options.clone(),
                participants,
                params: if params.is_empty() {
                    Value::Null
                } else {
                    Value::Object(params)
                },
                timeout_ms: args.timeout_ms,
                priority: None,
            }
        }
    };
    if let Some(id) = &args.task_id {
        task.task_id = Some(id.clone());
    }
    if task.task_id.is_none() {
        task.task_id =
            Some(TaskClient::generate_id("ctl").map_err(|e| CtlError::usage(e.to_string()))?);
    }
    if args.priority.is_some() {
        task.priority = args.priority;
    }
    Ok(task)
}

pub async fn run(global: &Global, args: &SubmitArgs, out: &mut dyn Write) -> Result<u8, CtlError> {
    let task = build(args)?;
    let Some(task_id) = task.task_id.clone() else {
        return Err(CtlError::usage("the task has no id"));
    };
    let ct = ContentType::from(args.format);
    let tasks = TaskClient::with_request_timeout(client::connect(global).await?, global.timeout);
    // Subscribed before publishing, so even an instant result is not missed.
    let mut watch = if args.wait {
        Some(tasks.watch(&task_id).await.map_err(task_error)?)
    } else {
        None
    };
    let submitted = tasks.submit(&task, ct).await.map_err(task_error)?;

    let Some(watch) = &mut watch else {
        print_receipt(global, &submitted, out)?;
        return Ok(exit::OK);
    };

    let waited = args.wait_timeout.unwrap_or_else(|| {
        Duration::from_millis(task.timeout_ms.unwrap_or(DEFAULT_TASK_TIMEOUT_MS)) + WAIT_MARGIN
    });
    let result = watch.result(&submitted, waited).await.map_err(task_error)?;
    print_result(global, &result, out)?;
    Ok(match result.status {
        Status::Decided => exit::OK,
        Status::NoDecision => exit::NO_DECISION,
        Status::Failed | Status::Rejected => exit::FAILED,
    })
}

fn print_receipt(
    global: &Global,
    submitted: &Submitted,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    let task_id = &submitted.task_id;
    if global.json {
        let receipt = serde_json::json!({
            "task_id": task_id,
            "stream": submitted.stream,
            "sequence": submitted.sequence,
            "duplicate": submitted.duplicate,
        });
        writeln!(out, "{receipt}")?;
    } else if submitted.duplicate {
        writeln!(
            out,
            "task {task_id} was already submitted (same id within the stream's \
             duplicate window): not queued again"
        )?;
    } else {
        writeln!(
            out,
            "submitted task {task_id} (stream {}, sequence {})",
            submitted.stream, submitted.sequence
        )?;
    }
    Ok(())
}

/// A failed submission or wait, as mabeamctl reports it.
pub(crate) fn task_error(e: TaskError) -> CtlError {
    match e {
        TaskError::NoTaskStream { .. } => CtlError::NoTaskStream,
        TaskError::NoResult { task_id, waited } => CtlError::ResultTimeout { task_id, waited },
        TaskError::NoTaskId | TaskError::Encode(_) => CtlError::usage(e.to_string()),
        TaskError::Nats { subject, message } => CtlError::Nats { subject, message },
    }
}

pub fn print_result(
    global: &Global,
    result: &TaskResult,
    out: &mut dyn Write,
) -> Result<(), CtlError> {
    if global.json {
        let text = serde_json::to_string_pretty(result).map_err(CtlError::Encode)?;
        writeln!(out, "{text}")?;
    } else {
        write!(out, "{}", render::result(result))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::{Cli, Command};

    fn args(line: &[&str]) -> SubmitArgs {
        let mut full = vec!["mabeamctl", "submit"];
        full.extend_from_slice(line);
        match Cli::try_parse_from(full).unwrap().command {
            Command::Submit(a) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn flags_build_a_task() {
        let task = build(&args(&[
            "--algorithm",
            "weighted",
            "-o",
            "A",
            "-o",
            "B",
            "--agents",
            "a1,a2",
            "--params",
            r#"{"threshold": 0.6, "inclusive": true}"#,
            "-p",
            "threshold=0.7",
            "--proposal",
            "which one",
            "--timeout-ms",
            "900",
            "--task-id",
            "t-9",
        ]))
        .unwrap();
        assert_eq!(task.task_id.unwrap().as_str(), "t-9");
        assert_eq!(task.algorithm, "weighted");
        assert_eq!(task.options, ["A", "B"]);
        assert_eq!(
            task.participants,
            ParticipantSelector::Agents {
                agents: vec![AgentId::new("a1").unwrap(), AgentId::new("a2").unwrap()]
            }
        );
        assert_eq!(
            task.params,
            serde_json::json!({"threshold": 0.7, "inclusive": true})
        );
        assert_eq!(task.proposal, Value::String("which one".into()));
        assert_eq!(task.timeout_ms, Some(900));
        assert_eq!(task.priority, None, "the subject decides unless asked");
        let urgent = build(&args(&["-a", "majority", "--all", "--priority", "high"])).unwrap();
        assert_eq!(urgent.priority, Some(Priority::High));
        assert_eq!(
            urgent.requested_priority().subject(),
            "mabeam.tasks.submit.high"
        );

        let task = build(&args(&[
            "-a",
            "iterative",
            "--capability",
            "gpu",
            "--count",
            "5",
            "--proposal",
            "[0.5, 1]",
        ]))
        .unwrap();
        assert_eq!(task.proposal, serde_json::json!([0.5, 1]));
        assert_eq!(task.params, Value::Null);
        assert!(task.task_id.unwrap().as_str().starts_with("ctl-"));
        assert_eq!(
            build(&args(&["-a", "majority", "--all"]))
                .unwrap()
                .participants,
            ParticipantSelector::All { all: true }
        );
    }

    #[test]
    fn participants_are_required_and_exclusive() {
        let e = build(&args(&["-a", "majority"])).unwrap_err();
        assert!(e.to_string().contains("who takes part"), "{e}");
        assert_eq!(e.exit_code(), exit::USAGE);
        for line in [
            vec!["submit", "-a", "m", "--agents", "a", "--all"],
            vec!["submit", "-a", "m", "--capability", "x", "--all"],
            vec!["submit", "-a", "m", "--count", "3", "--all"],
            vec!["submit", "-a", "m", "--agents", "a.b"],
            vec!["submit", "--file", "t.json", "-a", "m"],
            vec!["submit", "--all"],
            vec!["submit", "-a", "m", "--all", "--wait-timeout", "3s"],
            vec!["submit", "-a", "m", "--all", "--priority", "urgent"],
        ] {
            let mut full = vec!["mabeamctl"];
            full.extend(line.iter().copied());
            assert!(Cli::try_parse_from(&full).is_err(), "{line:?} accepted");
        }
    }
}
