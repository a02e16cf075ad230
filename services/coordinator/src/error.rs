use mabeam_protocol::ErrorCode;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] mabeam_runtime::RuntimeError),
    #[error("JetStream setup failed: {0}")]
    JetStream(String),
    #[error("NATS micro-service endpoint: {0}")]
    Endpoint(String),
}

/// Why a task cannot run; becomes a `rejected` result with this code.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rejection {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Rejection {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Failures of the session store (Redis).
#[derive(Debug, Error)]
pub(crate) enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot encode {0}: {1}")]
    Encode(&'static str, String),
    #[error("cannot decode {0}: {1}")]
    Decode(&'static str, String),
    /// Another replica holds the session now; this one must stop touching it.
    #[error("lease lost")]
    LeaseLost,
}
