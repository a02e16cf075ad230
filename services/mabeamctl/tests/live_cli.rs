//! Runs the real `mabeamctl` binary against real NATS (and Redis), with the registry and
//! the fault-injector started in-process; the test itself plays the coordinator where one
//! is needed (it creates the task stream, reads tasks and publishes results).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeMap,
    process::{Output, Stdio},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_nats::jetstream::{self, stream::RetentionPolicy};
use futures::StreamExt as _;
use mabeam_protocol::{
    codec::{decode, encode},
    fault::FaultList,
    registry::{registry_header, AgentList, AgentStatus, Registration, RegistryAck},
    result::{FaultReason, FaultyAgent, Outcome, Timings},
    session::{SessionView, TaskState},
    subjects,
    task::{ParticipantSelector, TaskSubmission},
    telemetry::{EventKind, Service, TelemetryEvent},
    AgentId, AgentKeypair, ContentType, ErrorCode, Limits, SignedEnvelope, Status, TaskId,
    TaskResult, PROTOCOL_VERSION,
};
use mabeam_runtime::{reply, Shutdown};
use mabeam_testkit::{free_port, Infra};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

const BIN: &str = env!("CARGO_BIN_EXE_mabeamctl");
const WAIT: Duration = Duration::from_secs(20);

fn command(nats_url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env("MABEAM_NATS_URL", nats_url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs the binary to completion.
async fn ctl(nats_url: &str, args: &[&str]) -> Output {
    tokio::time::timeout(WAIT, command(nats_url, args).output())
        .await
        .expect("mabeamctl finishes")
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn assert_status(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// Waits for a line of the child's stderr containing `needle`; the rest stays readable.
async fn wait_for_stderr(
    child: &mut Child,
    needle: &str,
) -> BufReader<tokio::process::ChildStderr> {
    let mut lines = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(WAIT, async {
        loop {
            line.clear();
            assert!(
                lines.read_line(&mut line).await.unwrap() > 0,
                "stderr closed"
            );
            if line.contains(needle) {
                return;
            }
        }
    })
    .await
    .expect("the expected stderr line");
    lines
}

async fn finish(child: Child) -> Output {
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("mabeamctl finishes")
        .unwrap()
}

/// The task stream, as the coordinator creates it.
async fn create_task_stream(client: &async_nats::Client) -> jetstream::stream::Stream {
    jetstream::new(client.clone())
        .create_stream(jetstream::stream::Config {
            name: subjects::TASKS_STREAM.into(),
            subjects: vec![subjects::TASKS_SUBMIT.into()],
            retention: RetentionPolicy::WorkQueue,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .unwrap()
}

fn result(task: &TaskId, status: Status) -> TaskResult {
    TaskResult {
        v: PROTOCOL_VERSION,
        task_id: task.clone(),
        session_id: None,
        algorithm: "majority".into(),
        status,
        outcome: (status == Status::Decided).then(|| Outcome::Choice {
            choice: "A".into(),
            support: 0.75,
            tally: BTreeMap::from([("A".into(), 3.0), ("B".into(), 1.0)]),
        }),
        reason: (status == Status::NoDecision).then(|| "tie between A and B".into()),
        rounds: 1,
        history: vec![],
        switches: vec![],
        participants: ["a1", "a2", "a3", "a4"]
            .iter()
            .map(|a| AgentId::new(*a).unwrap())
            .collect(),
        faulty_detected: vec![FaultyAgent {
            agent_id: AgentId::new("a4").unwrap(),
            reason: FaultReason::Equivocation,
        }],
        certificate: None,
        error: (status == Status::Rejected).then(|| mabeam_protocol::error::ErrorBody {
            code: ErrorCode::UnknownAlgorithm,
            message: "unknown algorithm raft".into(),
        }),
        timings: Timings {
            duration_ms: 7,
            ..Timings::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2_before_connecting() {
    // Nothing listens on this port: a usage error must not even try to connect.
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    for args in [
        vec!["submit", "-a", "majority"],
        vec!["submit", "-a", "majority", "--agents", "a1", "--all"],
        vec!["submit", "--all"],
        vec!["submit", "-a", "majority", "--all", "--params", "[1]"],
        vec!["submit", "--file", "/nonexistent/task.json"],
        vec![
            "fault",
            "inject",
            "--agents",
            "a1",
            "--behaviour",
            "explode",
        ],
        vec!["fault", "inject", "--partition", "a1,a2"],
        vec!["fault", "inject", "--link", "nats"],
        vec!["fault", "heal"],
        vec!["events", "tail", "--service", "scheduler"],
        vec!["session", "not.an.id"],
        vec!["scenario", "run", "steps.txt"],
        vec!["frobnicate"],
    ] {
        let out = ctl(&nowhere, &args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with("error:"),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    // tally keeps its own status for usage errors.
    let out = ctl(&nowhere, &["tally", "--algorithm", "majority"]).await;
    assert_status(&out, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_nats_server_is_reported() {
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    for args in [
        vec!["agents"],
        vec!["submit", "-a", "majority", "--all"],
        vec!["events", "tail"],
    ] {
        let out = ctl(&nowhere, &args).await;
        assert_status(&out, 1);
        let err = stderr(&out);
        assert!(
            err.contains("cannot connect to NATS at nats://127.0.0.1:"),
            "{err}"
        );
        assert!(err.contains("is mabeam running?"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_without_a_task_stream_says_mabeam_is_not_running() {
    let infra = Infra::start();
    let out = ctl(&infra.nats.url(), &["submit", "-a", "majority", "--all"]).await;
    assert_status(&out, 1);
    assert_eq!(
        stderr(&out).trim(),
        "error: no coordinator has created the task stream — is mabeam running?"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_publishes_the_task_with_its_id_as_dedup_id() {
    let infra = Infra::start();
    let url = infra.nats.url();
    let client = async_nats::connect(&url).await.unwrap();
    let stream = create_task_stream(&client).await;

    let out = ctl(
        &url,
        &[
            "submit",
            "-a",
            "weighted",
            "-o",
            "A",
            "-o",
            "B",
            "--capability",
            "gpu",
            "--count",
            "3",
            "-p",
            "threshold=0.6",
            "--proposal",
            "which one",
            "--timeout-ms",
            "900",
            "--task-id",
            "t-flags",
        ],
    )
    .await;
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out).trim(),
        "submitted task t-flags (stream MABEAM_TASKS, sequence 1)"
    );
    let message = stream.get_raw_message(1).await.unwrap();
    assert_eq!(
        message.headers.get("Nats-Msg-Id").unwrap().as_str(),
        "t-flags"
    );
    assert_eq!(
        message.headers.get("Content-Type").unwrap().as_str(),
        "application/msgpack"
    );
    let task: TaskSubmission =
        decode(ContentType::MsgPack, &message.payload, &Limits::default()).unwrap();
    assert_eq!(task.task_id.unwrap().as_str(), "t-flags");
    assert_eq!(task.algorithm, "weighted");
    assert_eq!(task.options, ["A", "B"]);
    assert_eq!(
        task.participants,
        ParticipantSelector::Capability {
            capability: "gpu".into(),
            count: Some(3)
        }
    );
    assert_eq!(task.params, serde_json::json!({"threshold": 0.6}));
    assert_eq!(task.proposal, serde_json::json!("which one"));
    assert_eq!(task.timeout_ms, Some(900));

    // From a file, as JSON on the wire, with a generated id; --json prints the receipt.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("task.json");
    std::fs::write(
        &file,
        r#"{"algorithm": "majority", "options": ["x", "y"], "participants": {"all": true}}"#,
    )
    .unwrap();
    let out = ctl(
        &url,
        &[
            "submit",
            "--file",
            file.to_str().unwrap(),
            "--format",
            "json",
            "--json",
        ],
    )
    .await;
    assert_status(&out, 0);
    let receipt: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["sequence"], 2);
    assert_eq!(receipt["duplicate"], false);
    let id = receipt["task_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("ctl-"), "{id}");
    let message = stream.get_raw_message(2).await.unwrap();
    assert_eq!(
        message.headers.get("Content-Type").unwrap().as_str(),
        "application/json"
    );
    assert_eq!(message.headers.get("Nats-Msg-Id").unwrap().as_str(), id);
    let task: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(task["task_id"], id.as_str());
    assert_eq!(task["participants"], serde_json::json!({"all": true}));

    // The same id again is a duplicate: acknowledged, not queued twice.
    let out = ctl(
        &url,
        &["submit", "-a", "majority", "--all", "--task-id", "t-flags"],
    )
    .await;
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains("already submitted"),
        "{}",
        stdout(&out)
    );
    assert_eq!(stream.get_info().await.unwrap().state.messages, 2);

    // A bad task file: exit 2 with the reason.
    std::fs::write(&file, r#"{"algorithm": "majority"}"#).unwrap();
    let out = ctl(&url, &["submit", "--file", file.to_str().unwrap()]).await;
    assert_status(&out, 2);
    assert!(stderr(&out).contains("participants"), "{}", stderr(&out));
}

/// Plays the coordinator for one task: reads it from the task subject and publishes
/// `status` as its result. Returns the task.
async fn answer_next_task(
    tasks: &mut async_nats::Subscriber,
    client: &async_nats::Client,
    status: Status,
) -> TaskSubmission {
    let message = tokio::time::timeout(WAIT, tasks.next())
        .await
        .expect("a task")
        .unwrap();
    let (task, _) = reply::decode_message::<TaskSubmission>(
        message.headers.as_ref(),
        &message.payload,
        &Limits::default(),
    )
    .unwrap();
    let id = task.task_id.clone().unwrap();
    let body = encode(ContentType::MsgPack, &result(&id, status)).unwrap();
    client
        .publish(subjects::results(&id), body.into())
        .await
        .unwrap();
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_prints_the_result_and_exits_by_its_status() {
    let infra = Infra::start();
    let url = infra.nats.url();
    let client = async_nats::connect(&url).await.unwrap();
    create_task_stream(&client).await;
    let mut tasks = client.subscribe(subjects::TASKS_SUBMIT).await.unwrap();
    mabeam_runtime::nats::confirm_subscriptions(&client, WAIT)
        .await
        .unwrap();

    // Decided, readable.
    let child = command(
        &url,
        &[
            "submit", "-a", "majority", "-o", "A", "-o", "B", "--all", "--wait",
        ],
    )
    .spawn()
    .unwrap();
    let task = answer_next_task(&mut tasks, &client, Status::Decided).await;
    assert!(task.task_id.unwrap().as_str().starts_with("ctl-"));
    let out = finish(child).await;
    assert_status(&out, 0);
    let text = stdout(&out);
    for needle in [
        "status        decided",
        "outcome       A (support 0.750; A 3, B 1)",
        "participants  4: a1, a2, a3, a4",
        "faulty        a4 (equivocation)",
        "timings       ran 7 ms",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in\n{text}");
    }

    // No decision, as JSON: exit 3.
    let child = command(
        &url,
        &[
            "submit",
            "-a",
            "majority",
            "--all",
            "--wait",
            "--json",
            "--task-id",
            "t-tie",
        ],
    )
    .spawn()
    .unwrap();
    answer_next_task(&mut tasks, &client, Status::NoDecision).await;
    let out = finish(child).await;
    assert_status(&out, 3);
    let printed: TaskResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed,
        result(&TaskId::new("t-tie").unwrap(), Status::NoDecision)
    );

    // Rejected: exit 4, with the error.
    let child = command(&url, &["submit", "-a", "raft", "--all", "--wait"])
        .spawn()
        .unwrap();
    answer_next_task(&mut tasks, &client, Status::Rejected).await;
    let out = finish(child).await;
    assert_status(&out, 4);
    assert!(
        stdout(&out).contains("error         unknown_algorithm: unknown algorithm raft"),
        "{}",
        stdout(&out)
    );

    // Nobody answers: exit 5 after --wait-timeout, saying so.
    let out = ctl(
        &url,
        &[
            "submit",
            "-a",
            "majority",
            "--all",
            "--wait",
            "--wait-timeout",
            "300ms",
            "--task-id",
            "t-lost",
        ],
    )
    .await;
    assert_status(&out, 5);
    assert!(
        stderr(&out).contains("error: no result for task t-lost within 300ms"),
        "{}",
        stderr(&out)
    );
}

fn telemetry_event(service: Service, kind: EventKind) -> TelemetryEvent {
    TelemetryEvent {
        v: PROTOCOL_VERSION,
        service,
        instance: "i-1".into(),
        at_ms: 1_000,
        event: kind,
    }
}

async fn publish_event(client: &async_nats::Client, event: &TelemetryEvent) {
    client
        .publish(
            subjects::event(event.service, event.event.name()),
            encode(ContentType::MsgPack, event).unwrap().into(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_tail_prints_matching_events_until_count() {
    let infra = Infra::start();
    let url = infra.nats.url();
    let client = async_nats::connect(&url).await.unwrap();
    let accepted = |task: &str| EventKind::TaskAccepted {
        task_id: TaskId::new(task).unwrap(),
        algorithm: "majority".into(),
    };
    let status_change = EventKind::AgentStatusChanged {
        agent_id: AgentId::new("a1").unwrap(),
        from: None,
        to: AgentStatus::Registered,
    };

    let mut child = command(
        &url,
        &["events", "tail", "--service", "coordinator", "--count", "2"],
    )
    .spawn()
    .unwrap();
    wait_for_stderr(&mut child, "listening on mabeam.events.coordinator.*").await;
    publish_event(
        &client,
        &telemetry_event(Service::Registry, status_change.clone()),
    )
    .await;
    publish_event(
        &client,
        &telemetry_event(Service::Coordinator, accepted("t1")),
    )
    .await;
    client
        .publish("mabeam.events.coordinator.task_accepted", "junk".into())
        .await
        .unwrap();
    publish_event(
        &client,
        &telemetry_event(Service::Coordinator, accepted("t2")),
    )
    .await;
    publish_event(
        &client,
        &telemetry_event(Service::Coordinator, accepted("t3")),
    )
    .await;
    let out = finish(child).await;
    assert_status(&out, 0);
    assert_eq!(
        stdout(&out),
        "1970-01-01T00:00:01.000Z coordinator/i-1 task_accepted algorithm=majority task_id=t1\n\
         1970-01-01T00:00:01.000Z coordinator/i-1 task_accepted algorithm=majority task_id=t2\n"
    );

    // --task follows the task's session; --json prints one event per line.
    let mut child = command(
        &url,
        &["events", "tail", "--task", "t9", "--count", "2", "--json"],
    )
    .spawn()
    .unwrap();
    wait_for_stderr(&mut child, "listening on mabeam.events.*.*").await;
    let started = EventKind::SessionStarted {
        task_id: TaskId::new("t9").unwrap(),
        session_id: mabeam_protocol::SessionId::new("s9").unwrap(),
        algorithm: "byzantine".into(),
        participants: 4,
    };
    let rejected = EventKind::BallotRejected {
        session_id: mabeam_protocol::SessionId::new("s9").unwrap(),
        agent_id: AgentId::new("a4").unwrap(),
        reason: FaultReason::InvalidSignature,
    };
    publish_event(
        &client,
        &telemetry_event(Service::Coordinator, accepted("t8")),
    )
    .await;
    publish_event(&client, &telemetry_event(Service::Registry, status_change)).await;
    publish_event(
        &client,
        &telemetry_event(Service::Coordinator, started.clone()),
    )
    .await;
    publish_event(
        &client,
        &telemetry_event(Service::Coordinator, rejected.clone()),
    )
    .await;
    let out = finish(child).await;
    assert_status(&out, 0);
    let events: Vec<TelemetryEvent> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events.iter().map(|e| e.event.clone()).collect::<Vec<_>>(),
        [started, rejected]
    );
}

/// Answers every request on `subject` with `answer` (headers and body).
async fn respond_with(
    client: &async_nats::Client,
    subject: &'static str,
    answer: (async_nats::HeaderMap, bytes::Bytes),
) {
    let mut requests = client.subscribe(subject).await.unwrap();
    mabeam_runtime::nats::confirm_subscriptions(client, WAIT)
        .await
        .unwrap();
    let client = client.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            reply::respond(&client, &request, answer.clone()).await;
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_prints_the_view_or_the_error_reply() {
    let infra = Infra::start();
    let url = infra.nats.url();

    let out = ctl(&url, &["session", "t1"]).await;
    assert_status(&out, 1);
    assert_eq!(
        stderr(&out).trim(),
        "error: no coordinator answered on mabeam.sessions.get — is it running?"
    );

    // A stand-in coordinator: the session service is the lead's.
    let client = async_nats::connect(&url).await.unwrap();
    let task = TaskId::new("t1").unwrap();
    let view = SessionView {
        v: PROTOCOL_VERSION,
        task_id: task.clone(),
        state: TaskState::Finished,
        live: None,
        result: Some(result(&task, Status::Decided)),
    };
    respond_with(
        &client,
        subjects::SESSIONS_GET,
        reply::ok_body(ContentType::MsgPack, &view),
    )
    .await;
    let out = ctl(&url, &["session", "t1"]).await;
    assert_status(&out, 0);
    assert!(
        stdout(&out).starts_with("state         finished\ntask          t1\n"),
        "{}",
        stdout(&out)
    );
    let out = ctl(&url, &["--json", "session", "t1"]).await;
    assert_status(&out, 0);
    assert_eq!(
        serde_json::from_slice::<SessionView>(&out.stdout).unwrap(),
        view
    );

    let infra = Infra::start();
    let client = async_nats::connect(infra.nats.url()).await.unwrap();
    respond_with(
        &client,
        subjects::SESSIONS_GET,
        reply::error_body(ContentType::MsgPack, ErrorCode::UnknownTask, "no task t2"),
    )
    .await;
    let out = ctl(&infra.nats.url(), &["session", "t2"]).await;
    assert_status(&out, 1);
    assert_eq!(stderr(&out).trim(), "error: unknown_task: no task t2");
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

async fn register(client: &async_nats::Client, name: &str, seed: u8, capabilities: &[&str]) {
    let key = AgentKeypair::from_secret_bytes([seed; 32]);
    let id = AgentId::new(name).unwrap();
    let registration = Registration {
        v: PROTOCOL_VERSION,
        agent_id: id.clone(),
        kind: "llm".into(),
        capabilities: capabilities.iter().map(|c| (*c).to_owned()).collect(),
        expertise: 2.0,
        public_key: key.public_key(),
        metadata: BTreeMap::new(),
    };
    let us = now_us();
    let envelope =
        SignedEnvelope::seal(&key, registry_header(&id, us / 1000, us), &registration).unwrap();
    let answer = client
        .request_with_headers(
            subjects::REGISTRY_REGISTER,
            reply::headers_for(ContentType::MsgPack),
            encode(ContentType::MsgPack, &envelope).unwrap().into(),
        )
        .await
        .unwrap();
    assert!(reply::as_error(answer.headers.as_ref(), &answer.payload).is_none());
    let _: RegistryAck = decode(ContentType::MsgPack, &answer.payload, &Limits::default()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_lists_what_the_registry_knows() {
    let infra = Infra::start();
    let url = infra.nats.url();
    let out = ctl(&url, &["agents"]).await;
    assert_status(&out, 1);
    assert_eq!(
        stderr(&out).trim(),
        "error: no registry answered on mabeam.registry.query — is it running?"
    );

    let shutdown = Shutdown::new();
    let config = mabeam_registry::Config::from_env(&infra.env()).unwrap();
    let registry = mabeam_registry::start(config, shutdown.clone())
        .await
        .unwrap();
    let client = async_nats::connect(&url).await.unwrap();
    register(&client, "gpu-1", 1, &["gpu", "ml-eval"]).await;
    register(&client, "cpu-1", 2, &["ml-eval"]).await;

    let out = ctl(&url, &["agents"]).await;
    assert_status(&out, 0);
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].starts_with("ID     KIND  STATUS"), "{lines:?}");
    assert!(
        lines[1].starts_with("cpu-1  llm   registered  2"),
        "{lines:?}"
    );
    assert!(lines[2].contains("gpu,ml-eval"), "{lines:?}");

    let out = ctl(&url, &["agents", "--capability", "gpu", "--json"]).await;
    assert_status(&out, 0);
    let list: AgentList = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.agents.len(), 1);
    assert_eq!(list.agents[0].agent_id.as_str(), "gpu-1");

    let out = ctl(&url, &["agents", "--status", "quarantined"]).await;
    assert_status(&out, 0);
    assert_eq!(stdout(&out).trim(), "no agents");

    // The demo needs a fleet.
    let out = ctl(&url, &["demo", "--wait", "500ms"]).await;
    assert_status(&out, 1);
    assert_eq!(
        stderr(&out).trim(),
        "error: demo: the demo needs at least 4 eligible agents, found 2"
    );

    shutdown.cancel();
    registry.handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_injected_listed_and_healed_through_the_injector() {
    let infra = Infra::start();
    let url = infra.nats.url();
    let shutdown = Shutdown::new();
    let config = mabeam_fault_injector::Config::from_env(&infra.env()).unwrap();
    let injector = mabeam_fault_injector::start(config, shutdown.clone())
        .await
        .unwrap();

    let out = ctl(&url, &["fault", "list"]).await;
    assert_status(&out, 0);
    assert_eq!(stdout(&out).trim(), "no active faults");

    let out = ctl(
        &url,
        &[
            "fault",
            "inject",
            "--id",
            "slow-1",
            "--agents",
            "a1,a2",
            "--behaviour",
            "slow:200:50",
            "--duration-ms",
            "60000",
        ],
    )
    .await;
    assert_status(&out, 0);
    let text = stdout(&out);
    assert!(text.starts_with("injected:\nID"), "{text}");
    assert!(text.contains("slow-1"), "{text}");
    let out = ctl(
        &url,
        &[
            "fault",
            "inject",
            "--id",
            "split",
            "--partition",
            "a1,a2|a3",
            "--flap-ms",
            "500",
        ],
    )
    .await;
    assert_status(&out, 0);

    let out = ctl(&url, &["fault", "list", "--json"]).await;
    assert_status(&out, 0);
    let list: FaultList = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = list.faults.iter().map(|f| f.id.as_str()).collect();
    assert_eq!(ids, ["slow-1", "split"]);
    assert!(list.faults[0].ends_ms.is_some());

    // Refusals come back as `error: <code>: <message>`.
    let out = ctl(
        &url,
        &["fault", "inject", "--link", "nats", "--latency", "100:20"],
    )
    .await;
    assert_status(&out, 1);
    assert!(
        stderr(&out).starts_with("error: unavailable: no fault proxy on the nats link"),
        "{}",
        stderr(&out)
    );
    let out = ctl(&url, &["fault", "heal", "nope"]).await;
    assert_status(&out, 1);
    assert!(
        stderr(&out).starts_with("error: invalid_params: "),
        "{}",
        stderr(&out)
    );

    let out = ctl(&url, &["fault", "heal", "slow-1"]).await;
    assert_status(&out, 0);
    assert!(stdout(&out).starts_with("healed:\n"), "{}", stdout(&out));
    let out = ctl(&url, &["fault", "heal", "--all"]).await;
    assert_status(&out, 0);
    assert!(stdout(&out).contains("split"), "{}", stdout(&out));
    let out = ctl(&url, &["fault", "list"]).await;
    assert_eq!(stdout(&out).trim(), "no active faults");

    // A scenario: checked, then played step by step.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("attack.toml");
    std::fs::write(
        &file,
        r#"
name = "equivocators, then heal"

[[steps]]
at_ms = 0
inject = { id = "byz", fault = { target = "agents", agents = ["a1", "a2"], behaviour = { type = "equivocate" } } }

[[steps]]
at_ms = 200
heal = "byz"
"#,
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let out = ctl(&url, &["scenario", "run", path, "--check"]).await;
    assert_status(&out, 0);
    assert!(
        stdout(&out).contains("2 step(s), valid"),
        "{}",
        stdout(&out)
    );
    let out = ctl(&url, &["scenario", "run", path]).await;
    assert_status(&out, 0);
    let lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("inject byz") && lines[0].ends_with("ok, 1 active fault(s)"),
        "{lines:?}"
    );
    assert!(lines[1].contains("heal byz"), "{lines:?}");

    // A step the injector refuses: reported, exit 1.
    std::fs::write(
        &file,
        r#"
name = "heal twice"

[[steps]]
at_ms = 0
inject = { id = "once", fault = { target = "agents", agents = ["a1"], behaviour = { type = "silent" } } }

[[steps]]
at_ms = 0
inject = { id = "once", fault = { target = "agents", agents = ["a1"], behaviour = { type = "silent" } } }
"#,
    )
    .unwrap();
    let out = ctl(&url, &["scenario", "run", path, "--json"]).await;
    assert_status(&out, 1);
    let steps: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(steps[0]["ok"], true);
    assert_eq!(steps[1]["ok"], false);
    assert!(steps[1]["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid_params"));

    // An invalid file: exit 2, nothing injected.
    std::fs::write(&file, "name = \"empty\"\nsteps = []\n").unwrap();
    let out = ctl(&url, &["scenario", "run", path]).await;
    assert_status(&out, 2);
    assert!(stderr(&out).contains("no steps"), "{}", stderr(&out));

    shutdown.cancel();
    injector.join.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_the_injector_show_up_in_the_tail() {
    let infra = Infra::start();
    let url = infra.nats.url();
    let shutdown = Shutdown::new();
    let config = mabeam_fault_injector::Config::from_env(&infra.env()).unwrap();
    let injector = mabeam_fault_injector::start(config, shutdown.clone())
        .await
        .unwrap();
    let mut child = command(
        &url,
        &["events", "tail", "--kind", "fault_injected", "--count", "1"],
    )
    .spawn()
    .unwrap();
    wait_for_stderr(&mut child, "listening").await;
    let out = ctl(
        &url,
        &[
            "fault",
            "inject",
            "--id",
            "c1",
            "--agents",
            "a1",
            "--behaviour",
            "crash",
        ],
    )
    .await;
    assert_status(&out, 0);
    let out = finish(child).await;
    assert_status(&out, 0);
    let line = stdout(&out);
    assert!(line.contains(" fault_injector/"), "{line}");
    assert!(
        line.contains(" fault_injected ") && line.contains(" fault_id=c1"),
        "{line}"
    );
    shutdown.cancel();
    injector.join.await.unwrap();
}
