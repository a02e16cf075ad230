//! Equivocation over the real stack: the equivocator is detected, quarantined by the
//! registry, and the audit trail keeps the proof itself — two signed ballots that verify
//! against the key the registry bound to the agent's id.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use mabeam_protocol::{
    registry::AgentStatus,
    result::FaultReason,
    subjects,
    telemetry::{AuditPage, AuditQuery, EventKind},
    AgentId, ContentType, Limits, Status, PROTOCOL_VERSION,
};
use mabeam_tests::{Fleet, Stack, StackOptions};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocation_evidence_quarantines_the_agent_and_is_kept_verifiable_in_the_audit_trail() {
    let stack = Stack::start(
        StackOptions::new("evidence").telemetry().fleet(
            Fleet::new("ev", 4)
                .with("MABEAM_SIM_PROFILE", "consensus")
                .with("MABEAM_SIM_BYZANTINE_IDS", "ev-00000")
                .with("MABEAM_SIM_BYZANTINE_BEHAVIOUR", "equivocate"),
        ),
    )
    .await;
    let attacker = AgentId::new("ev-00000").unwrap();
    // n = 4 tolerates f = 1.
    let result = stack
        .decide(
            json!({"task_id": "ev-byz", "algorithm": "byzantine", "proposal": "p",
                   "options": ["deploy", "hold"], "participants": {"all": true},
                   "timeout_ms": 5000}),
            ContentType::MsgPack,
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(result.status, Status::Decided, "{result:?}");
    assert!(
        result
            .faulty_detected
            .iter()
            .any(|f| f.agent_id == attacker && f.reason == FaultReason::Equivocation),
        "{result:?}"
    );

    let key = stack
        .agents()
        .await
        .agents
        .into_iter()
        .find(|a| a.agent_id == attacker)
        .expect("the attacker is registered")
        .public_key;
    let start = Instant::now();
    let (evidence, quarantined) = loop {
        let page: AuditPage = stack
            .request(
                subjects::TELEMETRY_AUDIT,
                &AuditQuery {
                    v: PROTOCOL_VERSION,
                    agent_id: Some(attacker.clone()),
                    ..AuditQuery::default()
                },
            )
            .await
            .expect("audit query");
        let evidence = page.records.iter().find_map(|r| match &r.event.event {
            EventKind::EquivocationDetected { evidence, .. } => evidence.clone(),
            _ => None,
        });
        let quarantined = page.records.iter().any(|r| {
            matches!(
                r.event.event,
                EventKind::AgentStatusChanged {
                    to: AgentStatus::Quarantined,
                    ..
                }
            )
        });
        if let (Some(e), true) = (&evidence, quarantined) {
            break (e.clone(), quarantined);
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "audit trail lacks the evidence or the quarantine: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(quarantined);
    assert_eq!(evidence.agent_id, attacker);
    assert!(
        evidence.verify(&key, &Limits::default()),
        "the audited evidence proves the equivocation with the agent's own key"
    );
    // Anyone else's key does not make it verify.
    let other = stack
        .agents()
        .await
        .agents
        .into_iter()
        .find(|a| a.agent_id != attacker)
        .unwrap()
        .public_key;
    assert!(!evidence.verify(&other, &Limits::default()));
}
