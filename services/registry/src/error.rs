//! Errors: why the service could not start or stopped, why the store failed, and why a
//! request was refused (a code from the protocol plus a message for the caller).

use mabeam_protocol::{DecodeError, ErrorCode};
use mabeam_runtime::RuntimeError;
use thiserror::Error;

/// Why the registry could not start or stopped abnormally.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("cannot add the NATS endpoint {subject}: {detail}")]
    Endpoint {
        subject: &'static str,
        detail: String,
    },
    #[error("cannot subscribe to {subject}: {detail}")]
    Subscribe {
        subject: &'static str,
        detail: String,
    },
    #[error("a registry task panicked: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Failures of the Redis store.
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("stored agent record {key} is corrupt: {detail}")]
    Corrupt { key: String, detail: String },
    #[error("unexpected reply {0:?} from a registry script")]
    Script(String),
}

/// A refused request: what the caller gets back as an `ErrorReply`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code:?}: {message}")]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<DecodeError> for Refusal {
    fn from(e: DecodeError) -> Self {
        Self::new(ErrorCode::from(&e), e.to_string())
    }
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Redis(e) => Self::new(
                ErrorCode::Unavailable,
                format!("registry store unavailable: {e}"),
            ),
            other => Self::new(ErrorCode::Internal, other.to_string()),
        }
    }
}
