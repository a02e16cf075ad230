//! The audit trail over real NATS and Redis: events land in `mabeam:audit`, queries filter
//! by task, agent and time range over NATS and HTTP, the stream stays bounded, bad queries
//! and bad events get typed errors and counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{
    audit_nats, audit_nats_raw, connect, event, eventually, http_get, metrics_text, publish,
    sample, Telemetry,
};
use mabeam_protocol::{
    codec::{encode, ContentType},
    result::{FaultReason, Status},
    telemetry::{AuditPage, AuditQuery, EventKind, Service},
    AgentId, ErrorCode, ErrorReply, SessionId, TaskId, PROTOCOL_VERSION,
};
use mabeam_runtime::{now_ms, reply};
use mabeam_testkit::Infra;

const WAIT: Duration = Duration::from_secs(10);

fn task(id: &str) -> TaskId {
    TaskId::new(id).unwrap()
}

fn session(id: &str) -> SessionId {
    SessionId::new(id).unwrap()
}

fn agent(id: &str) -> AgentId {
    AgentId::new(id).unwrap()
}

/// The events of one task's session: accepted, started, a rejected ballot from `bad`,
/// finished.
fn task_events(t: &str, s: &str, bad: &str) -> Vec<EventKind> {
    vec![
        EventKind::TaskAccepted {
            task_id: task(t),
            algorithm: "majority".into(),
        },
        EventKind::SessionStarted {
            task_id: task(t),
            session_id: session(s),
            algorithm: "majority".into(),
            participants: 3,
        },
        EventKind::BallotRejected {
            session_id: session(s),
            agent_id: agent(bad),
            reason: FaultReason::InvalidSignature,
        },
        EventKind::SessionFinished {
            task_id: task(t),
            session_id: session(s),
            algorithm: "majority".into(),
            status: Status::Decided,
            rounds: 1,
            duration_ms: 12,
        },
    ]
}

/// Everything: the query with no filter.
fn all() -> AuditQuery {
    AuditQuery {
        v: PROTOCOL_VERSION,
        ..AuditQuery::default()
    }
}

fn kinds(page: &AuditPage) -> Vec<&'static str> {
    page.records.iter().map(|r| r.event.event.name()).collect()
}

fn by_task(t: &str) -> AuditQuery {
    AuditQuery {
        task_id: Some(task(t)),
        ..all()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_are_queried_by_task_agent_and_time_over_nats_and_http() {
    let infra = Infra::start();
    let telemetry = Telemetry::start(&infra, &[]).await;
    let client = connect(&infra).await;

    for kind in task_events("t-1", "s-1", "mallory") {
        publish(&client, &event(Service::Coordinator, now_ms(), kind)).await;
    }
    publish(
        &client,
        &event(
            Service::Registry,
            now_ms(),
            EventKind::AgentStatusChanged {
                agent_id: agent("mallory"),
                from: None,
                to: mabeam_protocol::registry::AgentStatus::Registered,
            },
        ),
    )
    .await;
    let page = eventually(WAIT, "task t-1 in the audit trail", || async {
        let page = audit_nats(&client, &by_task("t-1"), ContentType::MsgPack)
            .await
            .unwrap();
        (page.records.len() == 4).then_some(page)
    })
    .await;
    // Newest first, and the session-only ballot rejection is found through its session.
    assert_eq!(
        kinds(&page),
        [
            "session_finished",
            "ballot_rejected",
            "session_started",
            "task_accepted"
        ]
    );
    assert!(page.records.windows(2).all(|w| w[0].id > w[1].id));
    assert_eq!(page.records[0].event.instance, "test-1");

    // Second task, after a gap, for the time range.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let between = now_ms();
    tokio::time::sleep(Duration::from_millis(30)).await;
    for kind in task_events("t-2", "s-2", "eve") {
        publish(&client, &event(Service::Coordinator, now_ms(), kind)).await;
    }
    eventually(WAIT, "task t-2 in the audit trail", || async {
        let page = audit_nats(&client, &by_task("t-2"), ContentType::MsgPack)
            .await
            .unwrap();
        (page.records.len() == 4).then_some(())
    })
    .await;

    // By agent: the ballot rejection and the status change of mallory, not eve's.
    let page = audit_nats(
        &client,
        &AuditQuery {
            agent_id: Some(agent("mallory")),
            ..all()
        },
        ContentType::MsgPack,
    )
    .await
    .unwrap();
    assert_eq!(kinds(&page), ["agent_status_changed", "ballot_rejected"]);

    // Time range: only what came after `between`; then only what came before it.
    let later = audit_nats(
        &client,
        &AuditQuery {
            since_ms: Some(between),
            ..all()
        },
        ContentType::MsgPack,
    )
    .await
    .unwrap();
    assert_eq!(
        kinds(&later),
        [
            "session_finished",
            "ballot_rejected",
            "session_started",
            "task_accepted"
        ]
    );
    assert!(matches!(
        &later.records[3].event.event,
        EventKind::TaskAccepted { task_id, .. } if task_id.as_str() == "t-2"
    ));
    let earlier = audit_nats(
        &client,
        &AuditQuery {
            until_ms: Some(between),
            ..all()
        },
        ContentType::Json,
    )
    .await
    .unwrap();
    assert_eq!(earlier.records.len(), 5);
    // Limit: the newest ones.
    let two = audit_nats(
        &client,
        &AuditQuery {
            limit: Some(2),
            ..all()
        },
        ContentType::MsgPack,
    )
    .await
    .unwrap();
    assert_eq!(kinds(&two), ["session_finished", "ballot_rejected"]);

    // The same over HTTP, as JSON.
    let (status, body) = http_get(telemetry.http(), "/audit?task_id=t-2&limit=3").await;
    assert_eq!(status, 200, "{body}");
    let page: AuditPage = serde_json::from_str(&body).unwrap();
    assert_eq!(
        kinds(&page),
        ["session_finished", "ballot_rejected", "session_started"]
    );
    let (status, body) = http_get(
        telemetry.http(),
        &format!("/audit?agent_id=eve&since_ms={between}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let page: AuditPage = serde_json::from_str(&body).unwrap();
    assert_eq!(kinds(&page), ["ballot_rejected"]);
    let (_, body) = http_get(telemetry.http(), &format!("/audit?until_ms={between}")).await;
    let page: AuditPage = serde_json::from_str(&body).unwrap();
    assert_eq!(page.records.len(), 5);

    telemetry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_audit_queries_get_typed_errors() {
    let infra = Infra::start();
    let telemetry = Telemetry::start(&infra, &[]).await;
    let client = connect(&infra).await;

    let refused = |r: Result<AuditPage, ErrorReply>| r.expect_err("refused");
    let e = refused(
        audit_nats(
            &client,
            &AuditQuery {
                limit: Some(0),
                ..all()
            },
            ContentType::MsgPack,
        )
        .await,
    );
    assert_eq!(e.code, ErrorCode::InvalidParams);
    assert!(e.message.contains("limit"), "{}", e.message);
    let e = refused(
        audit_nats(
            &client,
            &AuditQuery {
                limit: Some(10_001),
                ..all()
            },
            ContentType::Json,
        )
        .await,
    );
    assert_eq!(e.code, ErrorCode::InvalidParams);
    let e = refused(
        audit_nats(
            &client,
            &AuditQuery {
                since_ms: Some(20),
                until_ms: Some(10),
                ..all()
            },
            ContentType::MsgPack,
        )
        .await,
    );
    assert_eq!(e.code, ErrorCode::InvalidParams);
    assert!(e.message.contains("after until_ms"), "{}", e.message);
    let e = refused(
        audit_nats_raw(
            &client,
            reply::headers_for(ContentType::Json),
            "{\"task_id\": \"a.b\"}".into(),
        )
        .await,
    );
    assert_eq!(e.code, ErrorCode::MalformedMessage);
    let e = refused(
        audit_nats_raw(
            &client,
            reply::headers_for(ContentType::MsgPack),
            vec![0xc1].into(),
        )
        .await,
    );
    assert_eq!(e.code, ErrorCode::MalformedMessage);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "text/csv");
    let e = refused(audit_nats_raw(&client, headers, "x".into()).await);
    assert_eq!(e.code, ErrorCode::UnsupportedContentType);

    for (path, needle) in [
        ("/audit?limit=0", "limit must be between"),
        ("/audit?limit=abc", "non-negative integer"),
        ("/audit?since_ms=9&until_ms=1", "after until_ms"),
        ("/audit?task=t1", "unknown parameter"),
        ("/audit?agent_id=a%20b", "contains ' '"),
    ] {
        let (status, body) = http_get(telemetry.http(), path).await;
        assert_eq!(status, 400, "{path}: {body}");
        let err: ErrorReply = serde_json::from_str(&body).unwrap();
        assert_eq!(err.code, ErrorCode::InvalidParams, "{path}");
        assert!(err.message.contains(needle), "{path}: {}", err.message);
    }
    let metrics = metrics_text(telemetry.http()).await;
    assert!(
        sample(
            &metrics,
            "mabeam_requests_refused_total",
            &[("endpoint", "http_audit"), ("code", "invalid_params")]
        )
        .unwrap()
            >= 5.0
    );
    telemetry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_stays_bounded() {
    let infra = Infra::start();
    let telemetry = Telemetry::start(
        &infra,
        &[
            ("MABEAM_AUDIT_MAX_LEN", "500"),
            ("MABEAM_AUDIT_BATCH", "64"),
        ],
    )
    .await;
    let client = connect(&infra).await;
    for i in 0..5_000u32 {
        let kind = EventKind::TaskAccepted {
            task_id: task(&format!("bulk-{i}")),
            algorithm: "majority".into(),
        };
        publish(&client, &event(Service::Coordinator, now_ms(), kind)).await;
    }
    eventually(WAIT, "the last event in the audit trail", || async {
        let page = audit_nats(&client, &by_task("bulk-4999"), ContentType::MsgPack)
            .await
            .unwrap();
        (page.records.len() == 1).then_some(())
    })
    .await;
    let mut redis = redis::Client::open(infra.redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg("mabeam:audit")
        .query_async(&mut redis)
        .await
        .unwrap();
    // MAXLEN ~ trims whole stream nodes (100 entries by default).
    assert!((500..=600).contains(&len), "XLEN {len}");
    // The oldest are gone, the newest kept.
    assert!(
        audit_nats(&client, &by_task("bulk-0"), ContentType::MsgPack)
            .await
            .unwrap()
            .records
            .is_empty()
    );
    telemetry.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_counted_by_reason_and_ignored() {
    let infra = Infra::start();
    let telemetry = Telemetry::start(&infra, &[]).await;
    let client = connect(&infra).await;
    let good = event(
        Service::Coordinator,
        now_ms(),
        EventKind::TaskAccepted {
            task_id: task("fine"),
            algorithm: "majority".into(),
        },
    );
    // Garbage, empty, wrong version, wrong content type, and a valid event on a subject
    // that names another service.
    client
        .publish(
            "mabeam.events.coordinator.task_accepted",
            "\u{1}garbage".into(),
        )
        .await
        .unwrap();
    client
        .publish("mabeam.events.coordinator.task_accepted", "".into())
        .await
        .unwrap();
    let mut old = good.clone();
    old.v = 99;
    client
        .publish(
            "mabeam.events.coordinator.task_accepted",
            encode(ContentType::MsgPack, &old).unwrap().into(),
        )
        .await
        .unwrap();
    let mut csv = async_nats::HeaderMap::new();
    csv.insert("Content-Type", "text/csv");
    client
        .publish_with_headers("mabeam.events.coordinator.task_accepted", csv, "a,b".into())
        .await
        .unwrap();
    client
        .publish(
            "mabeam.events.registry.task_accepted",
            encode(ContentType::MsgPack, &good).unwrap().into(),
        )
        .await
        .unwrap();
    // A JSON event is fine.
    let mut json = async_nats::HeaderMap::new();
    json.insert("Content-Type", "application/json");
    client
        .publish_with_headers(
            "mabeam.events.coordinator.task_accepted",
            json,
            serde_json::to_vec(&good).unwrap().into(),
        )
        .await
        .unwrap();

    let expected = [
        "malformed",
        "empty",
        "unsupported_version",
        "unsupported_content_type",
        "subject_mismatch",
    ];
    eventually(WAIT, "every invalid event counted", || async {
        let text = metrics_text(telemetry.http()).await;
        expected
            .iter()
            .all(|reason| {
                sample(
                    &text,
                    "mabeam_telemetry_events_invalid_total",
                    &[("reason", reason)],
                ) == Some(1.0)
            })
            .then_some(())
    })
    .await;
    let page = eventually(WAIT, "the valid JSON event stored", || async {
        let page = audit_nats(&client, &all(), ContentType::MsgPack)
            .await
            .unwrap();
        (!page.records.is_empty()).then_some(page)
    })
    .await;
    assert_eq!(page.records.len(), 1, "only the valid event is stored");
    assert_eq!(page.records[0].event, good);
    telemetry.stop().await;
}
