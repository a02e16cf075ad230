//! Errors of the agent SDK.

use mabeam_protocol::{AgentId, ErrorCode, IdError, KeyError};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid agent id: {0}")]
    Id(#[from] IdError),
    #[error("invalid agent setting {setting}: {message}")]
    Config {
        setting: &'static str,
        message: String,
    },
    #[error("invalid agent key: {0}")]
    Key(#[from] KeyError),
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
    #[error("the NATS subscription of agent {0} closed (the client was closed or drained)")]
    SubscriptionClosed(AgentId),
    /// The registry refused the registration for a reason retrying cannot fix (the id is
    /// bound to another key, the request is malformed).
    #[error("the registry refused to register {agent}: {} ({message})", .code.as_str())]
    RegistrationRefused {
        agent: AgentId,
        code: ErrorCode,
        message: String,
    },
}

impl AgentError {
    pub(crate) fn config(setting: &'static str, message: impl Into<String>) -> Self {
        Self::Config {
            setting,
            message: message.into(),
        }
    }
}
