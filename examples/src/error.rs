//! Why a scenario could not run (as opposed to running and failing its checks).

use mabeam_agent::{swarm::SwarmError, tasks::TaskError, AgentError};
use mabeam_ctl::CtlError;

#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// A request to a service, a task submission or a connection failed.
    #[error(transparent)]
    Ctl(#[from] CtlError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("agents {missing:?} did not become eligible within {waited_ms} ms")]
    NotEligible {
        missing: Vec<String>,
        waited_ms: u64,
    },
    /// A task could not be submitted, or its result did not come.
    #[error(transparent)]
    Tasks(#[from] TaskError),
    #[error(transparent)]
    Swarm(#[from] SwarmError),
    #[error("invalid task: {0}")]
    Task(String),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("unknown scenario {0:?} (see --help)")]
    Unknown(String),
    #[error("cannot write the report: {0}")]
    Io(#[from] std::io::Error),
}
