use mabeam_agent::AgentError;
use mabeam_protocol::{AgentId, IdError};
use mabeam_runtime::RuntimeError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("invalid agent id: {0}")]
    Id(#[from] IdError),
    #[error("cannot build simulated agent {id}: {source}")]
    Agent {
        id: AgentId,
        #[source]
        source: AgentError,
    },
}
