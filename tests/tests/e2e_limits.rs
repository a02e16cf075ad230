//! Rate limits on input subjects over the real stack: a flood of registry requests gets
//! `rate_limited` replies beyond the configured rate, a flood on one agent's vote subject is
//! dropped before it reaches the session log, both are counted, and the stack keeps deciding.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use mabeam_protocol::{
    registry::{AgentList, AgentQuery},
    session::TaskState,
    subjects, ContentType, ErrorCode, Status, PROTOCOL_VERSION,
};
use mabeam_testkit::metric_sample;
use mabeam_tests::{Fleet, Stack, StackOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_are_refused_beyond_the_rate_counted_and_the_stack_keeps_deciding() {
    let stack = Stack::start(
        StackOptions::new("limits")
            // 50 requests per second per input subject, a burst of 50.
            .with("MABEAM_RATE_LIMIT", "50")
            .with("MABEAM_RATE_BURST", "50")
            .with("MABEAM_VOTE_RATE_LIMIT", "20")
            .with("MABEAM_VOTE_RATE_BURST", "20")
            .fleet(
                Fleet::new("lim", 3)
                    .with("MABEAM_SIM_BYZANTINE_IDS", "lim-00002")
                    .with("MABEAM_SIM_BYZANTINE_BEHAVIOUR", "silent"),
            ),
    )
    .await;
    // The start-up traffic (registrations, the harness's own queries) has used some burst:
    // let it refill.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // 300 registry queries at once: about the burst is answered, the rest refused.
    let query = AgentQuery {
        v: PROTOCOL_VERSION,
        ..AgentQuery::default()
    };
    let answers = futures::future::join_all(
        (0..300).map(|_| stack.request::<_, AgentList>(subjects::REGISTRY_QUERY, &query)),
    )
    .await;
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Err(e) if e.code == ErrorCode::RateLimited))
        .count();
    let answered = answers.iter().filter(|a| a.is_ok()).count();
    assert_eq!(refused + answered, 300, "only answers or rate_limited");
    assert!((40..=120).contains(&answered), "answered {answered}");
    let metrics = stack.registry.metrics();
    assert_eq!(
        metric_sample(
            &metrics,
            "mabeam_messages_rate_limited_total",
            &[("input", "query")]
        )
        .unwrap_or(0.0),
        refused as f64,
        "{metrics}"
    );

    // A session that waits for its silent member (unanimity of the whole electorate) while
    // one vote subject is flooded.
    let mut result = stack.watch("flooded").await;
    stack
        .submit(
            json!({"task_id": "flooded", "algorithm": "unanimous", "proposal": "p",
                   "options": ["a", "b"], "participants": {"all": true},
                   "params": {"basis": "eligible"}, "timeout_ms": 4000}),
            ContentType::Json,
        )
        .await;
    let start = Instant::now();
    let session = loop {
        if let Ok(view) = stack.session("flooded").await {
            if view.state == TaskState::Running {
                if let Some(live) = view.live {
                    break live.session_id;
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "session not running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let flood_subject = format!("mabeam.sessions.{session}.votes.lim-00001");
    for _ in 0..2000 {
        stack
            .client
            .publish(flood_subject.clone(), b"junk".as_slice().into())
            .await
            .unwrap();
    }
    stack.client.flush().await.unwrap();
    let result = Stack::result(&mut result, Duration::from_secs(15)).await;
    // The honest ballots still counted; the silent member denies unanimity.
    assert_eq!(result.status, Status::NoDecision, "{result:?}");
    let counted = result.history.last().map(|r| r.counted);
    assert_eq!(
        counted,
        Some(2),
        "both honest ballots were counted: {result:?}"
    );
    let metrics = stack.coordinators[0].metrics();
    let dropped = metric_sample(
        &metrics,
        "mabeam_messages_rate_limited_total",
        &[("input", "votes")],
    )
    .unwrap_or(0.0);
    let malformed: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("mabeam_coordinator_votes_malformed_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(dropped >= 1900.0, "dropped {dropped}: {metrics}");
    assert!(malformed <= 100.0, "{malformed} junk votes were decoded");

    // Still deciding afterwards.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let ok = stack
        .decide(
            json!({"task_id": "after-flood", "algorithm": "majority", "proposal": "p",
                   "options": ["a", "b"], "participants": {"all": true}}),
            ContentType::Json,
            Duration::from_secs(15),
        )
        .await;
    assert_eq!(ok.status, Status::Decided, "{ok:?}");
}
