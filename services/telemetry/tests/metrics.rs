//! Aggregate metrics derived from events, read from `/metrics`. One test in this binary:
//! the gauges are process-wide, so no other telemetry instance may run beside it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{connect, event, eventually, metrics_text, publish, sample, Telemetry};
use futures::StreamExt as _;
use mabeam_protocol::{
    encode,
    fault::{ActiveFault, FaultKind, FaultList, Link, LinkFault},
    registry::{AgentInfo, AgentList, AgentStatus},
    result::{FaultReason, Status},
    subjects,
    telemetry::{EventKind, Service},
    AgentId, AgentKeypair, ContentType, ErrorCode, SessionId, TaskId, PROTOCOL_VERSION,
};
use mabeam_runtime::{now_ms, reply};
use mabeam_testkit::Infra;

const WAIT: Duration = Duration::from_secs(10);

fn agent_info(id: &str, status: AgentStatus) -> AgentInfo {
    AgentInfo {
        agent_id: AgentId::new(id).unwrap(),
        kind: "test".into(),
        capabilities: vec![],
        expertise: 1.0,
        public_key: AgentKeypair::from_secret_bytes([7; 32]).public_key(),
        status,
        registered_ms: 0,
        last_heartbeat_ms: None,
        load: 0.0,
        capacity: 0.0,
    }
}

/// Answers every request on `subject` with `reply` (a stand-in for the registry or the
/// fault-injector, which own the state the gauges are seeded from).
async fn answer_with(client: &async_nats::Client, subject: &'static str, answer: Bytes) {
    let mut requests = client.subscribe(subject).await.unwrap();
    mabeam_runtime::nats::confirm_subscriptions(client, Duration::from_secs(5))
        .await
        .unwrap();
    let client = client.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let headers = reply::headers_for(ContentType::MsgPack);
            reply::respond(&client, &request, (headers, answer.clone())).await;
        }
    });
}

fn session_finished(
    task: &str,
    algorithm: &str,
    status: Status,
    rounds: u32,
    ms: u64,
) -> EventKind {
    EventKind::SessionFinished {
        task_id: TaskId::new(task).unwrap(),
        session_id: SessionId::new(format!("s-{task}")).unwrap(),
        algorithm: algorithm.into(),
        status,
        rounds,
        duration_ms: ms,
    }
}

fn ballot_rejected(agent: &str, reason: FaultReason) -> EventKind {
    EventKind::BallotRejected {
        session_id: SessionId::new("s-x").unwrap(),
        agent_id: AgentId::new(agent).unwrap(),
        reason,
    }
}

fn status_changed(agent: &str, from: Option<AgentStatus>, to: AgentStatus) -> EventKind {
    EventKind::AgentStatusChanged {
        agent_id: AgentId::new(agent).unwrap(),
        from,
        to,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_aggregate_metrics_and_gauges_start_from_the_owners_state() {
    let infra = Infra::start();
    let client = connect(&infra).await;
    let agents = AgentList {
        v: PROTOCOL_VERSION,
        agents: vec![
            agent_info("a1", AgentStatus::Active),
            agent_info("a2", AgentStatus::Active),
            agent_info("a3", AgentStatus::Active),
            agent_info("a4", AgentStatus::Suspect),
        ],
    };
    let faults = FaultList {
        v: PROTOCOL_VERSION,
        faults: vec![ActiveFault {
            id: "f0".into(),
            fault: FaultKind::Link {
                link: Link::Redis,
                fault: LinkFault::Blackhole,
            },
            started_ms: 0,
            ends_ms: None,
        }],
    };
    let msgpack = |m: Vec<u8>| Bytes::from(m);
    answer_with(
        &client,
        subjects::REGISTRY_QUERY,
        msgpack(encode(ContentType::MsgPack, &agents).unwrap()),
    )
    .await;
    answer_with(
        &client,
        subjects::FAULTS_LIST,
        msgpack(encode(ContentType::MsgPack, &faults).unwrap()),
    )
    .await;

    let telemetry = Telemetry::start(&infra, &[]).await;
    let http = telemetry.http();
    eventually(
        WAIT,
        "gauges seeded from the registry and injector",
        || async {
            let text = metrics_text(http).await;
            (sample(&text, "mabeam_agents", &[("status", "active")]) == Some(3.0)
                && sample(&text, "mabeam_agents", &[("status", "suspect")]) == Some(1.0)
                && sample(&text, "mabeam_agents", &[("status", "failed")]) == Some(0.0)
                && sample(&text, "mabeam_faults_active", &[]) == Some(1.0))
            .then_some(())
        },
    )
    .await;

    let coordinator = [
        session_finished("t1", "majority", Status::Decided, 1, 250),
        session_finished("t2", "majority", Status::Decided, 1, 250),
        session_finished("t3", "byzantine", Status::NoDecision, 3, 1200),
        session_finished("t4", "raft", Status::Failed, 1, 5),
        EventKind::TaskRejected {
            task_id: None,
            code: ErrorCode::UnknownAlgorithm,
            message: "raft".into(),
        },
        EventKind::TaskRejected {
            task_id: Some(TaskId::new("t5").unwrap()),
            code: ErrorCode::InvalidParams,
            message: "threshold".into(),
        },
        EventKind::TaskRejected {
            task_id: Some(TaskId::new("t6").unwrap()),
            code: ErrorCode::InvalidParams,
            message: "threshold".into(),
        },
        ballot_rejected("m1", FaultReason::InvalidSignature),
        ballot_rejected("m1", FaultReason::InvalidSignature),
        ballot_rejected("m2", FaultReason::Replay),
        ballot_rejected("m3", FaultReason::Untimely),
        EventKind::EquivocationDetected {
            session_id: SessionId::new("s-x").unwrap(),
            agent_id: AgentId::new("m4").unwrap(),
            evidence: None,
        },
        EventKind::AlgorithmSwitched {
            session_id: SessionId::new("s-x").unwrap(),
            from: "byzantine".into(),
            to: "weighted".into(),
            reason: "failure_ratio 0.40 >= 0.34".into(),
        },
    ];
    for kind in coordinator {
        publish(&client, &event(Service::Coordinator, now_ms(), kind)).await;
    }
    for kind in [
        status_changed("a4", Some(AgentStatus::Suspect), AgentStatus::Failed),
        status_changed("a5", None, AgentStatus::Registered),
        status_changed("a1", Some(AgentStatus::Active), AgentStatus::Quarantined),
    ] {
        publish(&client, &event(Service::Registry, now_ms(), kind)).await;
    }
    for kind in [
        EventKind::FaultInjected {
            fault_id: "f1".into(),
            description: "a1 equivocates".into(),
        },
        EventKind::FaultInjected {
            fault_id: "f2".into(),
            description: "partition".into(),
        },
        EventKind::FaultHealed {
            fault_id: "f1".into(),
        },
    ] {
        publish(&client, &event(Service::FaultInjector, now_ms(), kind)).await;
    }

    let text = eventually(WAIT, "every event counted", || async {
        let text = metrics_text(http).await;
        let counted = |service, kind| {
            sample(
                &text,
                "mabeam_telemetry_events_total",
                &[("service", service), ("kind", kind)],
            )
        };
        (counted("fault_injector", "fault_healed") == Some(1.0)
            && counted("registry", "agent_status_changed") == Some(3.0)
            && counted("coordinator", "algorithm_switched") == Some(1.0)
            && sample(&text, "mabeam_faults_active", &[]) == Some(2.0)
            && sample(&text, "mabeam_agents", &[("status", "quarantined")]) == Some(1.0))
        .then_some(text)
    })
    .await;
    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{text}"))
    };

    assert_eq!(
        value(
            "mabeam_telemetry_events_total",
            &[("service", "coordinator"), ("kind", "session_finished")]
        ),
        4.0
    );
    assert_eq!(
        value(
            "mabeam_sessions_total",
            &[("algorithm", "majority"), ("status", "decided")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "mabeam_sessions_total",
            &[("algorithm", "byzantine"), ("status", "no_decision")]
        ),
        1.0
    );
    // Unknown algorithm names share one label value.
    assert_eq!(
        value(
            "mabeam_sessions_total",
            &[("algorithm", "other"), ("status", "failed")]
        ),
        1.0
    );

    // Decision latency: a real histogram (buckets), in seconds.
    assert_eq!(
        value(
            "mabeam_decision_duration_seconds_bucket",
            &[("algorithm", "majority"), ("le", "0.25")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "mabeam_decision_duration_seconds_bucket",
            &[("algorithm", "byzantine"), ("le", "1")]
        ),
        0.0
    );
    assert_eq!(
        value(
            "mabeam_decision_duration_seconds_bucket",
            &[("algorithm", "byzantine"), ("le", "2.5")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "mabeam_decision_duration_seconds_sum",
            &[("algorithm", "majority")]
        ),
        0.5
    );
    assert_eq!(
        value(
            "mabeam_decision_duration_seconds_count",
            &[("algorithm", "majority")]
        ),
        2.0
    );
    assert_eq!(
        value(
            "mabeam_session_rounds_bucket",
            &[("algorithm", "byzantine"), ("le", "2")]
        ),
        0.0
    );
    assert_eq!(
        value(
            "mabeam_session_rounds_bucket",
            &[("algorithm", "byzantine"), ("le", "3")]
        ),
        1.0
    );

    assert_eq!(
        value("mabeam_tasks_rejected_total", &[("code", "invalid_params")]),
        2.0
    );
    assert_eq!(
        value(
            "mabeam_tasks_rejected_total",
            &[("code", "unknown_algorithm")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "mabeam_ballots_rejected_total",
            &[("reason", "invalid_signature")]
        ),
        2.0
    );
    assert_eq!(
        value("mabeam_ballots_rejected_total", &[("reason", "untimely")]),
        1.0
    );
    assert_eq!(
        value(
            "mabeam_byzantine_detections_total",
            &[("kind", "invalid_signature")]
        ),
        2.0
    );
    assert_eq!(
        value("mabeam_byzantine_detections_total", &[("kind", "replay")]),
        1.0
    );
    assert_eq!(
        value(
            "mabeam_byzantine_detections_total",
            &[("kind", "equivocation")]
        ),
        1.0
    );
    // Untimely ballots are not attacks.
    assert_eq!(
        sample(
            &text,
            "mabeam_byzantine_detections_total",
            &[("kind", "untimely")]
        ),
        None
    );
    assert_eq!(
        value(
            "mabeam_algorithm_switches_total",
            &[("from", "byzantine"), ("to", "weighted")]
        ),
        1.0
    );

    // Seeded 3 active + 1 suspect; a4 suspect → failed, a5 registered, a1 quarantined.
    for (status, count) in [
        ("registered", 1.0),
        ("active", 2.0),
        ("suspect", 0.0),
        ("failed", 1.0),
        ("recovered", 0.0),
        ("quarantined", 1.0),
    ] {
        assert_eq!(
            value("mabeam_agents", &[("status", status)]),
            count,
            "{status}"
        );
    }
    // Seeded f0; f1 and f2 injected, f1 healed.
    assert_eq!(value("mabeam_faults_active", &[]), 2.0);
    telemetry.stop().await;
}
