//! A decider backed by a large language model: [`LlmDecider`] asks an OpenAI-compatible
//! chat-completions endpoint for a JSON vote (`{"vote", "confidence", "reasoning"}`) and falls
//! back to a rule-based decider whenever that fails, saying so in the vote's reasoning.
//!
//! Resilience, in [`LlmClient`]: a per-request timeout; retries with exponential backoff and
//! jitter on timeouts, refused connections, 429 and 5xx (never on other 4xx, which retrying
//! cannot fix); a circuit breaker that opens after `breaker_failures` consecutive failed
//! requests, answers every round by the rules for `breaker_cooldown`, then lets one trial
//! request through (half-open) and closes again when it succeeds.
//!
//! The answer is parsed robustly ([`parse_answer`]): the first JSON object in the text that
//! has a `vote` (so code fences, prose before and trailing text are fine), a vote matched to
//! the round's options case-insensitively, a confidence given as a number or a numeric
//! string (0.5 when missing). Prompts and responses are logged at debug level
//! (`mabeam_agent::llm`).
//!
//! The model is asked for choice rounds (majority … weighted, Byzantine, adaptive and
//! pipeline stages, leader election) and iterative refinement (a number); the other
//! algorithms (ranked choice, negotiation, auction, work distribution, vectors) go to the
//! rules directly.
//!
//! Settings ([`LlmConfig::from_env`], keys in [`LLM_KEYS`]): `MABEAM_LLM_URL` (enables it),
//! `MABEAM_LLM_MODEL`, `MABEAM_LLM_API_KEY`, `MABEAM_LLM_TIMEOUT_MS`, `MABEAM_LLM_RETRIES`,
//! `MABEAM_LLM_BACKOFF_MS`, `MABEAM_LLM_BREAKER_FAILURES`, `MABEAM_LLM_BREAKER_COOLDOWN_MS`,
//! `MABEAM_LLM_TEMPERATURE`, `MABEAM_LLM_MAX_TOKENS`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mabeam_protocol::session::{RoundContext, VoteValue};
use mabeam_runtime::config::{self, ConfigError, ConfigKey, Env};
use rand::Rng;
use serde_json::{json, Value};

use crate::{
    decide::{Decider, Round, Vote},
    honest::options_of,
    stats,
};

/// The settings of the LLM decider.
pub const LLM_KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "MABEAM_LLM_URL",
        default: None,
        help: "OpenAI-compatible endpoint: a base URL (…/v1) or the full …/chat/completions URL; unset = rules only",
    },
    ConfigKey {
        name: "MABEAM_LLM_MODEL",
        default: Some("gpt-4o-mini"),
        help: "model name sent with each request",
    },
    ConfigKey {
        name: "MABEAM_LLM_API_KEY",
        default: None,
        help: "bearer token (Authorization header); none when unset",
    },
    ConfigKey {
        name: "MABEAM_LLM_TIMEOUT_MS",
        default: Some("20000"),
        help: "timeout of one request",
    },
    ConfigKey {
        name: "MABEAM_LLM_RETRIES",
        default: Some("2"),
        help: "retries after a timeout, refused connection, 429 or 5xx",
    },
    ConfigKey {
        name: "MABEAM_LLM_BACKOFF_MS",
        default: Some("250"),
        help: "first retry delay; doubles each retry, with jitter",
    },
    ConfigKey {
        name: "MABEAM_LLM_BREAKER_FAILURES",
        default: Some("5"),
        help: "consecutive failed requests that open the circuit breaker",
    },
    ConfigKey {
        name: "MABEAM_LLM_BREAKER_COOLDOWN_MS",
        default: Some("30000"),
        help: "how long the breaker stays open before one trial request",
    },
    ConfigKey {
        name: "MABEAM_LLM_TEMPERATURE",
        default: Some("0.2"),
        help: "sampling temperature (0 to 2)",
    },
    ConfigKey {
        name: "MABEAM_LLM_MAX_TOKENS",
        default: Some("300"),
        help: "max_tokens of each answer",
    },
];

/// How to reach the model and how hard to try.
#[derive(Clone)]
pub struct LlmConfig {
    /// The full chat-completions URL.
    pub endpoint: String,
    pub model: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
    pub retries: u32,
    pub backoff: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub temperature: f64,
    pub max_tokens: u32,
}

// The key stays out of logs and panics.
impl std::fmt::Debug for LlmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmConfig")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .field("breaker_failures", &self.breaker_failures)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .finish_non_exhaustive()
    }
}

/// `…/v1` → `…/v1/chat/completions`; a URL already ending in `/chat/completions` stays.
fn endpoint_of(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!("must be an http:// or https:// URL, got {url:?}"));
    }
    if url.ends_with("/chat/completions") {
        Ok(url.to_owned())
    } else {
        Ok(format!("{url}/chat/completions"))
    }
}

impl LlmConfig {
    /// Defaults (those of [`LLM_KEYS`]) for the endpoint at `url`.
    pub fn new(url: &str, model: impl Into<String>) -> Result<Self, ConfigError> {
        let mut env = std::collections::BTreeMap::new();
        env.insert("MABEAM_LLM_URL".to_owned(), url.to_owned());
        env.insert("MABEAM_LLM_MODEL".to_owned(), model.into());
        Self::from_env(&env)?.ok_or_else(|| ConfigError::invalid("MABEAM_LLM_URL", "is required"))
    }

    /// The settings in `env`; `None` when `MABEAM_LLM_URL` is unset (rules only).
    pub fn from_env(env: &impl Env) -> Result<Option<Self>, ConfigError> {
        let Some(url) = config::value(env, LLM_KEYS, "MABEAM_LLM_URL") else {
            return Ok(None);
        };
        let endpoint = endpoint_of(&url).map_err(|m| ConfigError::invalid("MABEAM_LLM_URL", m))?;
        let model = config::required(env, LLM_KEYS, "MABEAM_LLM_MODEL")?;
        let temperature: f64 = config::parse(env, LLM_KEYS, "MABEAM_LLM_TEMPERATURE")?;
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ConfigError::invalid(
                "MABEAM_LLM_TEMPERATURE",
                format!("must be between 0 and 2, got {temperature}"),
            ));
        }
        let breaker_failures: u32 = config::parse(env, LLM_KEYS, "MABEAM_LLM_BREAKER_FAILURES")?;
        if breaker_failures == 0 {
            return Err(ConfigError::invalid(
                "MABEAM_LLM_BREAKER_FAILURES",
                "must be at least 1",
            ));
        }
        let max_tokens: u32 = config::parse(env, LLM_KEYS, "MABEAM_LLM_MAX_TOKENS")?;
        if max_tokens == 0 {
            return Err(ConfigError::invalid(
                "MABEAM_LLM_MAX_TOKENS",
                "must be at least 1",
            ));
        }
        Ok(Some(Self {
            endpoint,
            model,
            api_key: config::value(env, LLM_KEYS, "MABEAM_LLM_API_KEY"),
            timeout: config::millis(env, LLM_KEYS, "MABEAM_LLM_TIMEOUT_MS", 1)?,
            retries: config::parse(env, LLM_KEYS, "MABEAM_LLM_RETRIES")?,
            backoff: config::millis(env, LLM_KEYS, "MABEAM_LLM_BACKOFF_MS", 0)?,
            breaker_failures,
            breaker_cooldown: config::millis(env, LLM_KEYS, "MABEAM_LLM_BREAKER_COOLDOWN_MS", 1)?,
            temperature,
            max_tokens,
        }))
    }

    /// [`from_env`](Self::from_env) over the process environment.
    pub fn from_process_env() -> Result<Option<Self>, ConfigError> {
        let env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
        Self::from_env(&env)
    }
}

/// Why the model's answer was not used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    #[error("the circuit breaker is open")]
    CircuitOpen,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("HTTP status {status}: {body}")]
    Status { status: u16, body: String },
    #[error("request failed: {0}")]
    Transport(String),
    #[error("malformed answer: {0}")]
    Malformed(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl LlmError {
    /// Worth another attempt: the endpoint may answer next time.
    fn retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Connect(_) | Self::Transport(_) => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::CircuitOpen | Self::Malformed(_) | Self::Client(_) => false,
        }
    }

    /// A bounded label for metrics and the fallback note.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit_open",
            Self::Timeout(_) => "timeout",
            Self::Connect(_) => "connect",
            Self::Status { status, .. } if *status >= 500 => "status_5xx",
            Self::Status { status: 429, .. } => "status_429",
            Self::Status { .. } => "status_4xx",
            Self::Transport(_) => "transport",
            Self::Malformed(_) => "malformed",
            Self::Client(_) => "client",
        }
    }
}

/// The state of the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
enum Breaker {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial request is out; everyone else waits for its outcome.
    HalfOpen,
}

impl Breaker {
    /// May a request go out now?
    fn admit(&mut self, now: Instant) -> bool {
        match self {
            Self::Closed { .. } => true,
            Self::Open { until } if now >= *until => {
                *self = Self::HalfOpen;
                stats::llm_breaker("half_open");
                true
            }
            Self::Open { .. } | Self::HalfOpen => false,
        }
    }

    fn record(&mut self, ok: bool, now: Instant, threshold: u32, cooldown: Duration) {
        let next = match (&*self, ok) {
            (_, true) => Self::Closed { failures: 0 },
            (Self::Closed { failures }, false) if failures + 1 < threshold => Self::Closed {
                failures: failures + 1,
            },
            (Self::Open { until }, false) => Self::Open { until: *until },
            (_, false) => Self::Open {
                until: now + cooldown,
            },
        };
        let transition = match (&*self, &next) {
            (Self::Closed { .. } | Self::HalfOpen, Self::Open { .. }) => Some("open"),
            (Self::HalfOpen | Self::Open { .. }, Self::Closed { .. }) => Some("closed"),
            _ => None,
        };
        if let Some(to) = transition {
            stats::llm_breaker(to);
            tracing::info!(to, "LLM circuit breaker");
        }
        *self = next;
    }

    fn state(&self) -> BreakerState {
        match self {
            Self::Closed { .. } => BreakerState::Closed,
            Self::Open { .. } => BreakerState::Open,
            Self::HalfOpen => BreakerState::HalfOpen,
        }
    }
}

/// An OpenAI-compatible chat-completions client with timeout, retries and a circuit breaker.
/// Share one (in an `Arc`) between agents that call the same endpoint, so they share the
/// breaker and the connection pool.
#[derive(Debug)]
pub struct LlmClient {
    http: reqwest::Client,
    config: LlmConfig,
    breaker: Mutex<Breaker>,
}

impl LlmClient {
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| LlmError::Client(e.to_string()))?;
        Ok(Self {
            http,
            config,
            breaker: Mutex::new(Breaker::Closed { failures: 0 }),
        })
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    pub fn breaker_state(&self) -> BreakerState {
        self.lock_breaker().state()
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // A panic elsewhere while holding it cannot leave the breaker inconsistent: every
        // update is one assignment.
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends the conversation, retrying what may succeed later; the assistant's text.
    pub async fn complete(&self, system: &str, user: &str) -> Result<String, LlmError> {
        let mut attempt = 0;
        loop {
            if !self.lock_breaker().admit(Instant::now()) {
                return Err(LlmError::CircuitOpen);
            }
            let started = Instant::now();
            let outcome = self.attempt(system, user).await;
            stats::llm_request(
                outcome.as_ref().err().map_or("ok", LlmError::kind),
                started.elapsed().as_secs_f64(),
            );
            // A reachable endpoint that answers nonsense is the model's problem, not an
            // outage: it does not count toward opening the breaker.
            let up = match &outcome {
                Ok(_) => true,
                Err(e) => !e.retryable(),
            };
            let (threshold, cooldown) =
                (self.config.breaker_failures, self.config.breaker_cooldown);
            self.lock_breaker()
                .record(up, Instant::now(), threshold, cooldown);
            match outcome {
                Err(e) if e.retryable() && attempt < self.config.retries => {
                    let delay = backoff(self.config.backoff, attempt);
                    tracing::debug!(error = %e, attempt, ?delay, "LLM request failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn attempt(&self, system: &str, user: &str) -> Result<String, LlmError> {
        let body = json!({
            "model": self.config.model,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
            "response_format": {"type": "json_object"},
        });
        let mut request = self
            .http
            .post(&self.config.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| self.transport(&e))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| self.transport(&e))?;
        if !status.is_success() {
            return Err(LlmError::Status {
                status: status.as_u16(),
                body: truncate(&text, 200),
            });
        }
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| LlmError::Malformed(format!("not a JSON response: {e}")))?;
        value
            .pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| LlmError::Malformed("no choices[0].message.content".into()))
    }

    fn transport(&self, e: &reqwest::Error) -> LlmError {
        if e.is_timeout() {
            LlmError::Timeout(self.config.timeout)
        } else if e.is_connect() {
            LlmError::Connect(e.to_string())
        } else {
            LlmError::Transport(e.to_string())
        }
    }
}

/// `base × 2^attempt`, ± 25 % jitter, at most 30 s.
fn backoff(base: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.min(16));
    let jitter = rand::thread_rng().gen_range(0.75..=1.25);
    exp.mul_f64(jitter).min(Duration::from_secs(30))
}

fn truncate(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// What kind of vote a round wants from the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// One of these options (matched case-insensitively).
    Choice(Vec<String>),
    Number,
}

/// The question a round asks, or `None` when the rules answer it.
pub fn expect_of(round: &Round<'_>) -> Option<Expect> {
    let p = round.proposal;
    match p.algorithm.as_str() {
        "ranked_choice" | "negotiation" | "auction" | "work_distribution" => None,
        "iterative" => match &p.context {
            RoundContext::Refine { aggregate, .. } if aggregate.len() > 1 => None,
            _ if matches!(round.previous.map(|v| &v.value), Some(VoteValue::Vector(_))) => None,
            _ => Some(Expect::Number),
        },
        "leader_election" if p.options.is_empty() => None,
        _ => Some(Expect::Choice(options_of(p))),
    }
}

/// The model's vote, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub value: VoteValue,
    pub confidence: f64,
    pub reasoning: String,
}

/// Finds the first JSON object with a `vote` in `text` (inside code fences, after prose,
/// before trailing text) and checks it against what the round wants.
pub fn parse_answer(text: &str, expect: &Expect) -> Result<Answer, String> {
    let object = json_objects(text)
        .find(|v| v.get("vote").is_some())
        .ok_or_else(|| "no JSON object with a \"vote\" in the answer".to_owned())?;
    let vote = &object["vote"];
    let value = match expect {
        Expect::Choice(options) => {
            let said = match vote {
                Value::String(s) => s.trim().to_owned(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => return Err(format!("vote is not a string: {other}")),
            };
            let option = options
                .iter()
                .find(|o| **o == said)
                .or_else(|| options.iter().find(|o| o.eq_ignore_ascii_case(&said)))
                .ok_or_else(|| format!("vote {said:?} is not one of the options {options:?}"))?;
            VoteValue::Choice(option.clone())
        }
        Expect::Number => {
            let number = number_in(vote).ok_or_else(|| format!("vote is not a number: {vote}"))?;
            VoteValue::Number(number)
        }
    };
    let confidence = match object.get("confidence") {
        None | Some(Value::Null) => 0.5,
        Some(c) => number_in(c)
            .filter(|c| (0.0..=1.0).contains(c))
            .ok_or_else(|| format!("confidence is not a number in [0, 1]: {c}"))?,
    };
    let reasoning = object
        .get("reasoning")
        .and_then(Value::as_str)
        .map(|r| truncate(r.trim(), 500))
        .unwrap_or_default();
    Ok(Answer {
        value,
        confidence,
        reasoning,
    })
}

fn number_in(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|x: &f64| x.is_finite())
}

/// Every balanced `{…}` in `text` (strings and escapes respected) that parses as a JSON
/// object, in order of their opening brace.
fn json_objects(text: &str) -> impl Iterator<Item = Value> + '_ {
    text.char_indices()
        .filter(|(_, c)| *c == '{')
        .filter_map(move |(start, _)| {
            let end = balanced_end(&text[start..])?;
            serde_json::from_str::<Value>(&text[start..start + end])
                .ok()
                .filter(Value::is_object)
        })
}

/// The length of the balanced object starting at the first byte of `text` (a `{`).
fn balanced_end(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' => depth += 1,
            '}' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The two messages sent for a round.
pub fn prompt(persona: &str, round: &Round<'_>, expect: &Expect) -> (String, String) {
    let system = format!(
        "You are {persona}, one agent in a group that decides together by voting. \
         Answer with exactly one JSON object and nothing else: \
         {{\"vote\": <your vote>, \"confidence\": <number from 0 to 1>, \
         \"reasoning\": \"<one or two sentences>\"}}."
    );
    let p = round.proposal;
    let mut user = format!(
        "Decision ({} voting, round {}):\n{}\n",
        p.algorithm,
        p.round,
        serde_json::to_string_pretty(&p.proposal).unwrap_or_default()
    );
    match expect {
        Expect::Choice(options) => {
            user.push_str(&format!(
                "Vote for exactly one of these options, spelled as given: {}.\n",
                serde_json::to_string(options).unwrap_or_default()
            ));
        }
        Expect::Number => user.push_str("Your vote is a single number.\n"),
    }
    match &p.context {
        RoundContext::Refine {
            aggregate,
            dispersion,
        } => user.push_str(&format!(
            "The group's aggregate after the previous round is {aggregate:?} (dispersion \
             {dispersion:.4}); reconsider your number in its light.\n"
        )),
        RoundContext::Byzantine {
            suggestion: Some(s),
            ..
        } => user.push_str(&format!(
            "Most agents prepared {s:?} in the previous round.\n"
        )),
        _ => {}
    }
    if let Some(previous) = round.previous {
        user.push_str(&format!(
            "Your previous answer: {}.\n",
            serde_json::to_string(&previous.value).unwrap_or_default()
        ));
    }
    (system, user)
}

/// A decider that asks the model and falls back to `fallback` on any failure; the vote's
/// reasoning then starts with `fallback (<why>)`. Answers from the model start with `llm:`.
#[derive(Debug)]
pub struct LlmDecider<F> {
    client: Option<Arc<LlmClient>>,
    persona: String,
    fallback: F,
}

impl<F: Decider> LlmDecider<F> {
    /// Asks `client` (rules only when `None`: no endpoint configured) as `persona`
    /// (e.g. "a mathematician checking the numbers").
    pub fn new(client: Option<Arc<LlmClient>>, persona: impl Into<String>, fallback: F) -> Self {
        Self {
            client,
            persona: persona.into(),
            fallback,
        }
    }

    async fn fall_back(&self, round: &Round<'_>, why: &str) -> Vote {
        stats::llm_fallback(why);
        let vote = self.fallback.decide(round).await;
        let rule = vote
            .reasoning
            .clone()
            .unwrap_or_else(|| "rule-based".into());
        vote.with_reasoning(format!("fallback ({why}): {rule}"))
    }
}

impl<F: Decider> Decider for LlmDecider<F> {
    async fn decide(&self, round: &Round<'_>) -> Vote {
        let Some(client) = &self.client else {
            return self.fall_back(round, "no_endpoint").await;
        };
        let Some(expect) = expect_of(round) else {
            return self.fall_back(round, "unsupported_algorithm").await;
        };
        let (system, user) = prompt(&self.persona, round, &expect);
        tracing::debug!(agent = %round.agent_id, session = %round.proposal.session_id, %system, %user, "LLM prompt");
        let text = match client.complete(&system, &user).await {
            Ok(text) => text,
            Err(e) => {
                tracing::debug!(agent = %round.agent_id, error = %e, "LLM request failed");
                return self.fall_back(round, e.kind()).await;
            }
        };
        tracing::debug!(agent = %round.agent_id, session = %round.proposal.session_id, response = %text, "LLM response");
        match parse_answer(&text, &expect) {
            Ok(answer) => Vote::new(answer.value)
                .with_confidence(answer.confidence)
                .with_reasoning(format!("llm: {}", answer.reasoning)),
            Err(e) => {
                tracing::debug!(agent = %round.agent_id, error = %e, "unusable LLM answer");
                self.fall_back(round, "malformed").await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn choice(options: &[&str]) -> Expect {
        Expect::Choice(options.iter().map(|o| (*o).to_owned()).collect())
    }

    #[test]
    fn answers_parse_through_fences_prose_and_trailing_text() {
        let e = choice(&["approve", "reject"]);
        let fenced = "Sure!\n```json\n{\"vote\": \"Approve\", \"confidence\": \"0.8\", \"reasoning\": \"fine {really}\"}\n```\nHope it helps {";
        let a = parse_answer(fenced, &e).unwrap();
        assert_eq!(a.value, VoteValue::Choice("approve".into()));
        assert_eq!(a.confidence, 0.8);
        assert_eq!(a.reasoning, "fine {really}");
        let nested = r#"{"meta": {"x": 1}} then {"vote": "reject"}"#;
        let a = parse_answer(nested, &e).unwrap();
        assert_eq!(a.value, VoteValue::Choice("reject".into()));
        assert_eq!(a.confidence, 0.5);
        assert_eq!(
            parse_answer(r#"{"vote": "12.5", "confidence": 1}"#, &Expect::Number)
                .unwrap()
                .value,
            VoteValue::Number(12.5)
        );
    }

    #[test]
    fn unusable_answers_are_refused() {
        let e = choice(&["approve", "reject"]);
        for text in [
            "",
            "I approve.",
            "{\"vote\": \"maybe\"}",
            "{\"vote\": [1]}",
            "{\"vote\": \"approve\", \"confidence\": 7}",
            "{\"vote\": \"approve\"",
        ] {
            assert!(parse_answer(text, &e).is_err(), "{text:?} accepted");
        }
        assert!(parse_answer("{\"vote\": \"NaN\"}", &Expect::Number).is_err());
    }

    #[test]
    fn the_breaker_opens_half_opens_and_closes() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(10);
        let mut b = Breaker::Closed { failures: 0 };
        b.record(false, t0, 2, cool);
        assert_eq!(b.state(), BreakerState::Closed);
        b.record(false, t0, 2, cool);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.admit(t0 + Duration::from_secs(9)));
        assert!(b.admit(t0 + cool));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.admit(t0 + cool), "one trial at a time");
        b.record(false, t0 + cool, 2, cool);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit(t0 + cool * 2));
        b.record(true, t0 + cool * 2, 2, cool);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn settings_are_validated() {
        let env = |pairs: &[(&str, &str)]| config::settings(pairs);
        assert!(LlmConfig::from_env(&env(&[])).unwrap().is_none());
        let c = LlmConfig::from_env(&env(&[("MABEAM_LLM_URL", "http://h:1/v1/")]))
            .unwrap()
            .unwrap();
        assert_eq!(c.endpoint, "http://h:1/v1/chat/completions");
        assert_eq!(c.retries, 2);
        assert!(!format!("{c:?}").contains("secret"));
        for bad in [
            [("MABEAM_LLM_URL", "ftp://h")],
            [("MABEAM_LLM_TEMPERATURE", "3")],
            [("MABEAM_LLM_BREAKER_FAILURES", "0")],
            [("MABEAM_LLM_TIMEOUT_MS", "soon")],
        ] {
            let mut pairs = vec![
                ("MABEAM_LLM_URL", "http://h/v1"),
                ("MABEAM_LLM_API_KEY", "secret"),
            ];
            pairs.extend(bad);
            let err = LlmConfig::from_env(&env(&pairs)).unwrap_err();
            assert!(err.to_string().contains(bad[0].0), "{err}");
        }
    }
}
