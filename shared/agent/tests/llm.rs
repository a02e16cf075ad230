//! The LLM decider against a real HTTP server: an OpenAI-compatible stub (axum, on a free
//! loopback port) that answers well, badly, slowly, with errors, or not at all.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use axum::{extract::State, http::HeaderMap, http::StatusCode, routing::post, Json, Router};
use mabeam_agent::{
    llm::{BreakerState, LlmClient, LlmConfig, LlmDecider},
    Decider, Round, Vote,
};
use mabeam_protocol::{
    session::{Phase, Proposal, RoundContext, VoteValue},
    AgentId, SessionId, TaskId,
};
use serde_json::{json, Value};

#[derive(Debug, Clone)]
enum Mode {
    /// 200 with this assistant content.
    Answer(String),
    /// 200 with this raw body.
    Raw(String),
    /// Waits, then answers.
    Slow(Duration, String),
    /// This status for the first `n` requests (all when `None`), then the answer.
    Status(u16, Option<usize>, String),
}

#[derive(Debug)]
struct Stub {
    mode: Mutex<Mode>,
    hits: AtomicUsize,
    last_body: Mutex<Value>,
    last_auth: Mutex<Option<String>>,
}

impl Stub {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn completion(content: &str) -> Value {
    json!({"id": "x", "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
    ]})
}

async fn chat(
    State(stub): State<Arc<Stub>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, String) {
    let n = stub.hits.fetch_add(1, Ordering::SeqCst);
    *stub.last_body.lock().unwrap() = body;
    *stub.last_auth.lock().unwrap() = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mode = stub.mode.lock().unwrap().clone();
    match mode {
        Mode::Answer(content) => (StatusCode::OK, completion(&content).to_string()),
        Mode::Raw(body) => (StatusCode::OK, body),
        Mode::Slow(delay, content) => {
            tokio::time::sleep(delay).await;
            (StatusCode::OK, completion(&content).to_string())
        }
        Mode::Status(status, first, content) => {
            if first.is_none_or(|k| n < k) {
                (
                    StatusCode::from_u16(status).unwrap(),
                    "upstream trouble".into(),
                )
            } else {
                (StatusCode::OK, completion(&content).to_string())
            }
        }
    }
}

async fn stub(mode: Mode) -> (Arc<Stub>, String) {
    let stub = Arc::new(Stub {
        mode: Mutex::new(mode),
        hits: AtomicUsize::new(0),
        last_body: Mutex::new(Value::Null),
        last_auth: Mutex::new(None),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (stub, url)
}

fn config(url: &str) -> LlmConfig {
    let mut c = LlmConfig::new(url, "stub-model").unwrap();
    c.api_key = Some("sk-test".into());
    c.timeout = Duration::from_millis(300);
    c.retries = 2;
    c.backoff = Duration::from_millis(10);
    c.breaker_failures = 100;
    c
}

type Rule = fn(&Round<'_>) -> Vote;

fn decider(config: LlmConfig) -> (LlmDecider<Rule>, Arc<LlmClient>) {
    fn rule(_: &Round<'_>) -> Vote {
        Vote::choice("reject")
            .with_confidence(0.3)
            .with_reasoning("rule: reject by default")
    }
    let client = Arc::new(LlmClient::new(config).unwrap());
    let rule: Rule = rule;
    (
        LlmDecider::new(Some(client.clone()), "a careful reviewer", rule),
        client,
    )
}

fn proposal(algorithm: &str, options: &[&str]) -> Proposal {
    Proposal {
        v: 1,
        task_id: TaskId::new("t-1").unwrap(),
        session_id: SessionId::new("s-1").unwrap(),
        algorithm: algorithm.into(),
        round: 1,
        phase: Phase::Vote,
        proposal: json!({"question": "ship release 2.1?"}),
        options: options.iter().map(|o| (*o).to_owned()).collect(),
        deadline_ms: 0,
        context: RoundContext::Open,
    }
}

async fn ask(d: &impl Decider, p: &Proposal) -> Vote {
    let me = AgentId::new("llm-1").unwrap();
    d.decide(&Round {
        agent_id: &me,
        proposal: p,
        previous: None,
    })
    .await
}

fn reasoning(v: &Vote) -> &str {
    v.reasoning.as_deref().unwrap_or_default()
}

const GOOD: &str = r#"{"vote": "approve", "confidence": 0.9, "reasoning": "tests pass"}"#;

#[tokio::test]
async fn a_correct_answer_becomes_the_vote() {
    let (stub, url) = stub(Mode::Answer(GOOD.into())).await;
    let (d, _) = decider(config(&url));
    let v = ask(&d, &proposal("weighted", &["approve", "reject"])).await;
    assert_eq!(v.value, VoteValue::Choice("approve".into()));
    assert_eq!(v.confidence, 0.9);
    assert_eq!(reasoning(&v), "llm: tests pass");
    assert_eq!(stub.hits(), 1);
    let body = stub.last_body.lock().unwrap().clone();
    assert_eq!(body["model"], "stub-model");
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("ship release 2.1?") && user.contains("[\"approve\",\"reject\"]"));
    assert_eq!(
        stub.last_auth.lock().unwrap().as_deref(),
        Some("Bearer sk-test")
    );

    // Fences, prose and trailing text around the object; case-insensitive option; a number.
    stub.set(Mode::Answer(
        "Here you go:\n```json\n{\"vote\": \"REJECT\", \"confidence\": \"0.6\"}\n```\nAnything else?"
            .into(),
    ));
    let v = ask(&d, &proposal("majority", &["approve", "reject"])).await;
    assert_eq!(v.value, VoteValue::Choice("reject".into()));
    assert_eq!(v.confidence, 0.6);
    assert!(reasoning(&v).starts_with("llm:"));
    stub.set(Mode::Answer(r#"{"vote": 41.5, "confidence": 1}"#.into()));
    let v = ask(&d, &proposal("iterative", &[])).await;
    assert_eq!(v.value, VoteValue::Number(41.5));
}

#[tokio::test]
async fn malformed_answers_fall_back_without_retrying() {
    let (stub, url) = stub(Mode::Answer("I would approve, probably.".into())).await;
    let (d, client) = decider(config(&url));
    let p = proposal("weighted", &["approve", "reject"]);
    let v = ask(&d, &p).await;
    assert_eq!(v.value, VoteValue::Choice("reject".into()));
    assert_eq!(v.confidence, 0.3);
    assert_eq!(
        reasoning(&v),
        "fallback (malformed): rule: reject by default"
    );
    assert_eq!(stub.hits(), 1);
    for bad in [
        r#"{"vote": "maybe", "confidence": 0.9}"#,
        r#"{"vote": "approve", "confidence": 3}"#,
    ] {
        stub.set(Mode::Answer(bad.into()));
        assert!(reasoning(&ask(&d, &p).await).starts_with("fallback (malformed)"));
    }
    stub.set(Mode::Raw("<html>gateway</html>".into()));
    assert!(reasoning(&ask(&d, &p).await).starts_with("fallback (malformed)"));
    stub.set(Mode::Raw(r#"{"choices": []}"#.into()));
    assert!(reasoning(&ask(&d, &p).await).starts_with("fallback (malformed)"));
    // The endpoint answered every time: no reason to open the breaker.
    assert_eq!(client.breaker_state(), BreakerState::Closed);
}

#[tokio::test]
async fn slow_answers_time_out_retry_and_fall_back() {
    let (stub, url) = stub(Mode::Slow(Duration::from_secs(3), GOOD.into())).await;
    let mut c = config(&url);
    c.timeout = Duration::from_millis(200);
    c.retries = 1;
    let (d, _) = decider(c);
    let started = Instant::now();
    let v = ask(&d, &proposal("weighted", &["approve", "reject"])).await;
    assert!(reasoning(&v).starts_with("fallback (timeout)"), "{v:?}");
    assert_eq!(stub.hits(), 2, "one retry after the timeout");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    // Two 503s, then an answer: the third attempt wins.
    let (stub, url) = stub(Mode::Status(503, Some(2), GOOD.into())).await;
    let (d, _) = decider(config(&url));
    let v = ask(&d, &proposal("weighted", &["approve", "reject"])).await;
    assert_eq!(v.value, VoteValue::Choice("approve".into()));
    assert_eq!(stub.hits(), 3);

    // Always 500: 1 + 2 retries, then the rules.
    let (stub, url) = self::stub(Mode::Status(500, None, GOOD.into())).await;
    let (d, _) = decider(config(&url));
    let v = ask(&d, &proposal("weighted", &["approve", "reject"])).await;
    assert!(reasoning(&v).starts_with("fallback (status_5xx)"), "{v:?}");
    assert_eq!(stub.hits(), 3);

    // A 400 will not get better: no retry.
    let (stub, url) = self::stub(Mode::Status(400, None, GOOD.into())).await;
    let (d, _) = decider(config(&url));
    let v = ask(&d, &proposal("weighted", &["approve", "reject"])).await;
    assert!(reasoning(&v).starts_with("fallback (status_4xx)"), "{v:?}");
    assert_eq!(stub.hits(), 1);
}

#[tokio::test]
async fn a_refused_connection_falls_back() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let (d, _) = decider(config(&url));
    let v = ask(&d, &proposal("majority", &["approve", "reject"])).await;
    assert!(reasoning(&v).starts_with("fallback (connect)"), "{v:?}");
    assert_eq!(v.value, VoteValue::Choice("reject".into()));
}

#[tokio::test]
async fn the_circuit_breaker_opens_then_recovers_half_open() {
    let (stub, url) = stub(Mode::Status(503, None, GOOD.into())).await;
    let mut c = config(&url);
    c.retries = 0;
    c.breaker_failures = 2;
    c.breaker_cooldown = Duration::from_millis(300);
    let (d, client) = decider(c);
    let p = proposal("weighted", &["approve", "reject"]);
    for _ in 0..2 {
        assert!(reasoning(&ask(&d, &p).await).starts_with("fallback (status_5xx)"));
    }
    assert_eq!(client.breaker_state(), BreakerState::Open);
    // Open: the rules answer and the endpoint is left alone.
    for _ in 0..3 {
        assert!(reasoning(&ask(&d, &p).await).starts_with("fallback (circuit_open)"));
    }
    assert_eq!(stub.hits(), 2);

    // After the cooldown one trial goes out; it fails, so the breaker opens again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(reasoning(&ask(&d, &p).await).starts_with("fallback (status_5xx)"));
    assert_eq!(stub.hits(), 3);
    assert_eq!(client.breaker_state(), BreakerState::Open);
    assert!(reasoning(&ask(&d, &p).await).starts_with("fallback (circuit_open)"));

    // The endpoint recovers: the next trial succeeds and closes the breaker.
    stub.set(Mode::Answer(GOOD.into()));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let v = ask(&d, &p).await;
    assert_eq!(v.value, VoteValue::Choice("approve".into()));
    assert_eq!(client.breaker_state(), BreakerState::Closed);
    assert_eq!(stub.hits(), 4);
    assert!(reasoning(&ask(&d, &p).await).starts_with("llm:"));
}

#[tokio::test]
async fn rules_answer_what_the_model_is_not_asked() {
    let (stub, url) = stub(Mode::Answer(GOOD.into())).await;
    let (d, _) = decider(config(&url));
    let v = ask(&d, &proposal("auction", &[])).await;
    assert!(reasoning(&v).starts_with("fallback (unsupported_algorithm)"));
    assert_eq!(stub.hits(), 0);
    let none: LlmDecider<Rule> =
        LlmDecider::new(None, "x", |_: &Round<'_>| Vote::choice("approve"));
    let v = ask(&none, &proposal("majority", &["approve"])).await;
    assert_eq!(reasoning(&v), "fallback (no_endpoint): rule-based");
}
