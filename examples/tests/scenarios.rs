//! The fast subset of every scenario (small agent counts) and the validation report, against
//! a whole stack started from the built binaries (`mabeam_tests::Stack`: NATS, Redis,
//! registry, coordinator, fault-injector, telemetry).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{sync::Arc, time::Duration};

use axum::{routing::post, Json, Router};
use mabeam_agent::llm::{LlmClient, LlmConfig};
use mabeam_examples::{
    fleet::Ctx,
    scenarios::{self, Size},
    validate,
};
use mabeam_tests::{Stack, StackOptions};
use serde_json::{json, Value};

/// An OpenAI-compatible model on a free port: it votes for the first option of the prompt
/// that mentions "hybrid" (else the first), answering in a code fence with trailing text.
async fn stub_llm() -> String {
    async fn chat(Json(body): Json<Value>) -> Json<Value> {
        let prompt = body["messages"][1]["content"].as_str().unwrap_or_default();
        let options: Vec<String> = prompt
            .split_once("spelled as given: ")
            .and_then(|(_, rest)| rest.split_once(".\n"))
            .and_then(|(list, _)| serde_json::from_str(list).ok())
            .unwrap_or_default();
        let vote = options
            .iter()
            .find(|o| o.contains("hybrid"))
            .or(options.first())
            .cloned()
            .unwrap_or_default();
        let content = format!(
            "```json\n{}\n```\nLet me know if you need more.",
            json!({"vote": vote, "confidence": 0.85, "reasoning": "storage smooths both sources"})
        );
        Json(
            json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}),
        )
    }
    let app = Router::new().route("/v1/chat/completions", post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// The warnings and errors the services logged: CI keeps only the test's output.
fn print_service_warnings(stack: &Stack) {
    let services = std::iter::once(&stack.registry)
        .chain(&stack.coordinators)
        .chain(&stack.fault_injector)
        .chain(&stack.telemetry);
    for service in services {
        let path = service.log_path();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"WARN\"") || l.contains("\"ERROR\""))
            .collect();
        eprintln!(
            "== {} ({} warnings/errors; last 40)",
            path.display(),
            lines.len()
        );
        for line in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_passes_its_checks_with_small_counts() {
    let stack = Stack::start(StackOptions::new("scenarios").fault_injector().telemetry()).await;
    // The harness's registry suspects an agent after 1.5 s without a heartbeat.
    let mut ctx = Ctx::new(stack.client.clone(), Duration::from_millis(300))
        .await
        .unwrap();
    let mut pids: Vec<u32> = stack.coordinators.iter().filter_map(|c| c.pid()).collect();
    pids.extend(stack.registry.pid());
    pids.extend(stack.fault_injector.as_ref().and_then(|f| f.pid()));
    pids.extend(stack.telemetry.as_ref().and_then(|t| t.pid()));
    ctx.stack_pids = Some(pids);

    let v = validate::run(&ctx, Size::Small).await.unwrap();
    for r in &v.scenarios {
        eprint!("{}", r.render());
    }
    let dir = tempfile::tempdir().unwrap();
    v.write(dir.path()).unwrap();
    let md = std::fs::read_to_string(dir.path().join("validation-report.md")).unwrap();
    assert!(md.contains("Readiness score"), "{md}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("validation-report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["criteria"].as_array().unwrap().len(), v.criteria.len());

    let unmet: Vec<_> = v
        .criteria
        .iter()
        .filter(|c| c.met != Some(true))
        .map(|c| format!("{}: {}", c.requirement, c.measured))
        .collect();
    eprintln!("readiness {:.2}; not met: {unmet:#?}", v.readiness_score);

    let failed: Vec<String> = v
        .scenarios
        .iter()
        .flat_map(|r| {
            r.checks
                .iter()
                .filter(|c| !c.passed)
                .map(move |c| format!("{}: {}: {}", r.scenario, c.name, c.detail))
        })
        .collect();
    if !failed.is_empty() {
        print_service_warnings(&stack);
    }
    assert!(failed.is_empty(), "failed checks:\n{}", failed.join("\n"));
    for r in &v.scenarios {
        assert!(!r.checks.is_empty(), "{}: checked nothing", r.scenario);
    }
    // Every functional and integration criterion but cross-environment consistency is
    // measurable at this size, and met.
    let misjudged: Vec<_> = v
        .criteria
        .iter()
        .filter(|c| matches!(c.category, "functional" | "integration"))
        .filter(|c| !c.requirement.starts_with("Consistent behaviour across"))
        .filter(|c| c.met != Some(true))
        .map(|c| format!("{}: {}", c.requirement, c.measured))
        .collect();
    assert!(misjudged.is_empty(), "not met: {misjudged:#?}");

    // The ensemble again, its agents asking a model over HTTP.
    let config = LlmConfig::new(&stub_llm().await, "stub-model").unwrap();
    ctx.llm = Some(Arc::new(LlmClient::new(config).unwrap()));
    let r = scenarios::run(&ctx, "ensemble", Size::Small).await.unwrap();
    eprint!("{}", r.render());
    assert!(r.passed, "{}", r.render());
    assert_eq!(r.number("rule_answers"), Some(0.0), "{}", r.render());
    // An agent whose session closed early (the outcome could no longer change) may not answer.
    assert!(
        r.number("llm_answers").is_some_and(|n| n >= 20.0),
        "{}",
        r.render()
    );
}
