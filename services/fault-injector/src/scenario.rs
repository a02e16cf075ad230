//! Scenario files: a named list of timed steps, each injecting a fault or healing one, in
//! TOML or YAML. [`parse`] is pure and checks every step (with the checks the injector
//! makes), so a bad file fails before anything is injected; [`run`] plays the steps against
//! a running injector over NATS.
//!
//! ```toml
//! name = "byzantine attackers, then heal"
//!
//! [[steps]]
//! at_ms = 0
//! inject = { id = "byz", duration_ms = 20000, fault = { target = "agents", agents = ["a1", "a2"], behaviour = { type = "equivocate" } } }
//!
//! [[steps]]
//! at_ms = 1000
//! partition = { id = "split", shape = "clean_split", agents = ["a1", "a2", "a3", "a4"], flap_ms = 500 }
//!
//! [[steps]]
//! at_ms = 10000
//! heal = "byz"          # one fault by id; `heal_all = true` heals every fault
//! ```

use std::{path::Path, time::Duration};

use mabeam_protocol::{
    codec::{decode, encode, ContentType, CONTENT_TYPE_HEADER},
    fault::{FaultHeal, FaultList, FaultSpec},
    subjects, AgentId, Limits, PROTOCOL_VERSION,
};
use serde::Deserialize;
use thiserror::Error;

use crate::{partition::Shape, spec};

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Milliseconds after the start of the run.
    pub at_ms: u64,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Inject(FaultSpec),
    /// One fault by id, or every fault when `None`.
    Heal {
        id: Option<String>,
    },
}

impl Action {
    /// One line for progress output.
    pub fn describe(&self) -> String {
        match self {
            Self::Inject(spec) => {
                let id = spec.id.as_deref().unwrap_or("(new id)");
                let mut s = format!("inject {id}: {}", spec::describe(&spec.fault));
                if spec.start_after_ms > 0 {
                    s.push_str(&format!(", starting after {} ms", spec.start_after_ms));
                }
                if let Some(d) = spec.duration_ms {
                    s.push_str(&format!(", for {d} ms"));
                }
                s
            }
            Self::Heal { id: Some(id) } => format!("heal {id}"),
            Self::Heal { id: None } => "heal every fault".to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
}

impl Format {
    /// By extension: `.toml`, `.yaml` or `.yml`.
    pub fn from_path(path: &Path) -> Result<Self, ScenarioError> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("toml") => Ok(Self::Toml),
            Some("yaml" | "yml") => Ok(Self::Yaml),
            _ => Err(ScenarioError::UnknownFormat(path.display().to_string())),
        }
    }
}

#[derive(Debug, Error)]
pub enum ScenarioError {
    #[error("cannot tell the format of {0}: use a .toml, .yaml or .yml file")]
    UnknownFormat(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid scenario file: {0}")]
    Syntax(String),
    #[error("invalid scenario: {0}")]
    Invalid(String),
    /// A step (1-based, as a person counts them) that cannot run.
    #[error("step {index} (at_ms {at_ms}): {message}")]
    Step {
        index: usize,
        at_ms: u64,
        message: String,
    },
    /// The injector did not answer: the run stops, as later steps would fail the same way.
    #[error("step {index} (at_ms {at_ms}): no answer from the fault injector: {message}")]
    Request {
        index: usize,
        at_ms: u64,
        message: String,
    },
}

/// The file as written: steps stay generic until each is read on its own, so an error can
/// name its step.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    steps: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    at_ms: u64,
    #[serde(default)]
    inject: Option<FaultSpec>,
    #[serde(default)]
    partition: Option<PartitionStep>,
    #[serde(default)]
    heal: Option<String>,
    #[serde(default)]
    heal_all: bool,
}

/// A partition by shape, expanded with [`crate::partition`]'s constructors.
#[derive(Deserialize)]
struct PartitionStep {
    #[serde(default)]
    id: Option<String>,
    agents: Vec<AgentId>,
    #[serde(flatten)]
    shape: Shape,
    #[serde(default)]
    flap_ms: Option<u64>,
    #[serde(default)]
    start_after_ms: u64,
    #[serde(default)]
    duration_ms: Option<u64>,
}

pub fn parse(text: &str, format: Format) -> Result<Scenario, ScenarioError> {
    let raw: RawScenario = match format {
        Format::Toml => toml::from_str(text).map_err(|e| ScenarioError::Syntax(e.to_string()))?,
        Format::Yaml => {
            serde_yaml::from_str(text).map_err(|e| ScenarioError::Syntax(e.to_string()))?
        }
    };
    if raw.name.trim().is_empty() {
        return Err(ScenarioError::Invalid("name must not be empty".into()));
    }
    if raw.steps.is_empty() {
        return Err(ScenarioError::Invalid("it has no steps".into()));
    }
    let mut steps = Vec::with_capacity(raw.steps.len());
    let mut previous_at = 0;
    for (i, value) in raw.steps.into_iter().enumerate() {
        let index = i + 1;
        let at_ms = value.get("at_ms").and_then(|v| v.as_u64()).unwrap_or(0);
        let fail = |message: String| ScenarioError::Step {
            index,
            at_ms,
            message,
        };
        let step: RawStep = serde_json::from_value(value).map_err(|e| fail(e.to_string()))?;
        if step.at_ms < previous_at {
            return Err(fail(format!(
                "steps must be in time order; the previous step is at {previous_at} ms"
            )));
        }
        previous_at = step.at_ms;
        let action = match (step.inject, step.partition, step.heal, step.heal_all) {
            (Some(spec), None, None, false) => Action::Inject(spec),
            (None, Some(p), None, false) => Action::Inject(FaultSpec {
                v: PROTOCOL_VERSION,
                id: p.id,
                fault: p
                    .shape
                    .fault(&p.agents, p.flap_ms)
                    .map_err(|e| fail(e.to_string()))?,
                start_after_ms: p.start_after_ms,
                duration_ms: p.duration_ms,
            }),
            (None, None, Some(id), false) => {
                spec::validate_id(&id).map_err(|e| fail(e.to_string()))?;
                Action::Heal { id: Some(id) }
            }
            (None, None, None, true) => Action::Heal { id: None },
            _ => {
                return Err(fail(
                    "give exactly one of inject, partition, heal or heal_all = true".into(),
                ))
            }
        };
        if let Action::Inject(spec) = &action {
            spec::validate(spec).map_err(|e| fail(e.to_string()))?;
        }
        steps.push(Step { at_ms, action });
    }
    Ok(Scenario {
        name: raw.name,
        steps,
    })
}

/// Reads and parses a file, the format chosen by its extension.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let format = Format::from_path(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, format)
}

/// What one step did: the injector's answer, or its refusal (`code: message`).
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    pub at_ms: u64,
    pub description: String,
    pub result: Result<FaultList, String>,
}

/// Plays the steps in order, each at its `at_ms` after the start, waiting at most `timeout`
/// for each answer. A refused step is reported in its outcome and the run goes on; an
/// injector that does not answer stops the run with [`ScenarioError::Request`].
pub async fn run(
    client: &async_nats::Client,
    scenario: &Scenario,
    timeout: Duration,
    mut on_step: impl FnMut(&StepOutcome),
) -> Result<Vec<StepOutcome>, ScenarioError> {
    let start = tokio::time::Instant::now();
    let mut outcomes = Vec::with_capacity(scenario.steps.len());
    for (i, step) in scenario.steps.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_millis(step.at_ms)).await;
        let fail = |message: String| ScenarioError::Request {
            index: i + 1,
            at_ms: step.at_ms,
            message,
        };
        let (subject, body) = match &step.action {
            Action::Inject(spec) => (subjects::FAULTS_INJECT, encode(ContentType::MsgPack, spec)),
            Action::Heal { id } => (
                subjects::FAULTS_HEAL,
                encode(
                    ContentType::MsgPack,
                    &FaultHeal {
                        v: PROTOCOL_VERSION,
                        id: id.clone(),
                    },
                ),
            ),
        };
        let body = body.map_err(|e| fail(e.to_string()))?;
        let result = request(client, subject, body, timeout)
            .await
            .map_err(fail)?;
        let outcome = StepOutcome {
            at_ms: step.at_ms,
            description: step.action.describe(),
            result,
        };
        on_step(&outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

/// One request to the injector: `Err` when there is no answer, `Ok(Err)` for a refusal.
async fn request(
    client: &async_nats::Client,
    subject: &'static str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Result<FaultList, String>, String> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(CONTENT_TYPE_HEADER, ContentType::MsgPack.header_value());
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(body.into())
        .timeout(Some(timeout));
    let reply = client
        .send_request(subject, request)
        .await
        .map_err(|e| e.to_string())?;
    if let Some(err) = mabeam_runtime::reply::as_error(reply.headers.as_ref(), &reply.payload) {
        return Ok(Err(format!("{}: {}", err.code.as_str(), err.message)));
    }
    let ct = mabeam_runtime::reply::content_type(reply.headers.as_ref()).unwrap_or_default();
    Ok(decode::<FaultList>(ct, &reply.payload, &Limits::default())
        .map_err(|e| format!("unreadable answer: {e}")))
}

#[cfg(test)]
mod tests {
    use mabeam_protocol::fault::{AgentBehaviour, FaultKind, Link, LinkFault};

    use super::*;

    const TOML: &str = r#"
name = "demo"

[[steps]]
at_ms = 0
inject = { id = "byz", duration_ms = 5000, fault = { target = "agents", agents = ["a1", "a2"], behaviour = { type = "drop", percent = 30 } } }

[[steps]]
at_ms = 100
partition = { id = "iso", shape = "minority_isolation", isolate = 1, agents = ["a1", "a2", "a3"], flap_ms = 200 }

[[steps]]
at_ms = 200
[steps.inject]
fault = { target = "link", link = "nats", fault = { type = "latency", latency_ms = 50, jitter_ms = 5 } }

[[steps]]
at_ms = 300
heal = "byz"

[[steps]]
at_ms = 300
heal_all = true
"#;

    #[test]
    fn toml_steps_become_actions() {
        let s = parse(TOML, Format::Toml).unwrap();
        assert_eq!(s.name, "demo");
        assert_eq!(s.steps.len(), 5);
        let Action::Inject(spec) = &s.steps[0].action else {
            panic!("inject expected")
        };
        assert_eq!(spec.id.as_deref(), Some("byz"));
        assert_eq!(spec.duration_ms, Some(5000));
        assert!(matches!(
            &spec.fault,
            FaultKind::Agents { behaviour: AgentBehaviour::Drop { percent }, .. } if *percent == 30.0
        ));
        let Action::Inject(spec) = &s.steps[1].action else {
            panic!("partition expected")
        };
        let FaultKind::Partition { groups, flap_ms } = &spec.fault else {
            panic!("partition expected")
        };
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1], [AgentId::new("a3").unwrap()]);
        assert_eq!(*flap_ms, Some(200));
        let Action::Inject(spec) = &s.steps[2].action else {
            panic!("inject expected")
        };
        assert_eq!(
            spec.fault,
            FaultKind::Link {
                link: Link::Nats,
                fault: LinkFault::Latency {
                    latency_ms: 50,
                    jitter_ms: 5
                }
            }
        );
        assert_eq!(
            s.steps[3].action,
            Action::Heal {
                id: Some("byz".into())
            }
        );
        assert_eq!(s.steps[4].action, Action::Heal { id: None });
    }

    #[test]
    fn yaml_reads_the_same_as_toml() {
        let yaml = r#"
name: demo
steps:
  - at_ms: 0
    inject:
      id: byz
      duration_ms: 5000
      fault: {target: agents, agents: [a1, a2], behaviour: {type: drop, percent: 30}}
  - at_ms: 100
    partition: {id: iso, shape: minority_isolation, isolate: 1, agents: [a1, a2, a3], flap_ms: 200}
  - at_ms: 200
    inject:
      fault: {target: link, link: nats, fault: {type: latency, latency_ms: 50, jitter_ms: 5}}
  - at_ms: 300
    heal: byz
  - at_ms: 300
    heal_all: true
"#;
        assert_eq!(
            parse(yaml, Format::Yaml).unwrap(),
            parse(TOML, Format::Toml).unwrap()
        );
    }

    fn step_error(text: &str) -> String {
        let e = parse(text, Format::Toml).unwrap_err();
        assert!(matches!(e, ScenarioError::Step { .. }), "{e}");
        e.to_string()
    }

    #[test]
    fn errors_name_the_step() {
        let e = step_error(
            r#"name = "x"
[[steps]]
at_ms = 0
heal_all = true
[[steps]]
at_ms = 10
inject = { fault = { target = "agents", agents = [], behaviour = { type = "crash" } } }
"#,
        );
        assert!(e.starts_with("step 2 (at_ms 10):"), "{e}");
        assert!(e.contains("no agents"), "{e}");

        let e = step_error(
            r#"name = "x"
[[steps]]
at_ms = 5
inject = { fault = { target = "agents", agents = ["a"], behaviour = { type = "drop", percent = 0 } } }
"#,
        );
        assert!(
            e.starts_with("step 1 (at_ms 5):") && e.contains("percent"),
            "{e}"
        );

        let e = step_error(
            r#"name = "x"
[[steps]]
at_ms = 5
inject = { fault = { target = "agents", agents = ["a"], behaviour = { type = "teleport" } } }
"#,
        );
        assert!(e.starts_with("step 1") && e.contains("teleport"), "{e}");

        let e = step_error(
            r#"name = "x"
[[steps]]
at_ms = 5
heal = "a"
heal_all = true
"#,
        );
        assert!(e.contains("exactly one"), "{e}");

        let e = step_error(
            r#"name = "x"
[[steps]]
at_ms = 50
heal_all = true
[[steps]]
at_ms = 10
heal_all = true
"#,
        );
        assert!(
            e.starts_with("step 2 (at_ms 10)") && e.contains("time order"),
            "{e}"
        );

        let e = step_error(
            r#"name = "x"
[[steps]]
at_ms = 0
partition = { shape = "fragmentation", sizes = [2, 2], agents = ["a", "b", "c"] }
"#,
        );
        assert!(e.contains("add up"), "{e}");

        let e = step_error(
            r#"name = "x"
[[steps]]
at_ms = 0
heal_al = true
"#,
        );
        assert!(e.contains("heal_al"), "{e}");

        let e = step_error(
            r#"name = "x"
[[steps]]
at_ms = 0
partition = { shape = "minority_isolation", isolat = 1, agents = ["a", "b", "c"] }
"#,
        );
        assert!(e.contains("isolat"), "{e}");
    }

    #[test]
    fn files_without_a_name_or_steps_are_refused() {
        assert!(matches!(
            parse("steps = []", Format::Toml),
            Err(ScenarioError::Syntax(_))
        ));
        assert!(matches!(
            parse("name = \"x\"", Format::Toml),
            Err(ScenarioError::Invalid(_))
        ));
        assert!(matches!(
            parse("name: [", Format::Yaml),
            Err(ScenarioError::Syntax(_))
        ));
    }

    #[test]
    fn the_format_follows_the_extension() {
        assert_eq!(
            Format::from_path(Path::new("a/b.toml")).unwrap(),
            Format::Toml
        );
        assert_eq!(Format::from_path(Path::new("b.YML")).unwrap(), Format::Yaml);
        assert!(Format::from_path(Path::new("b.json")).is_err());
    }
}
