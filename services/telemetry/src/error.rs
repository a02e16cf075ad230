use mabeam_protocol::ErrorCode;
use thiserror::Error;

/// Why the service could not start.
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] mabeam_runtime::RuntimeError),
    #[error("cannot subscribe to {subject}: {message}")]
    Subscribe { subject: String, message: String },
    #[error("NATS micro-service endpoint: {0}")]
    Endpoint(String),
}

/// Why an audit query was refused or failed; each maps to a wire [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuditError {
    /// The query itself is wrong (limit out of range, empty time range, bad id, unknown
    /// parameter).
    #[error("{0}")]
    InvalidQuery(String),
    /// The request body could not be decoded.
    #[error("{message}")]
    Decode { code: ErrorCode, message: String },
    /// Redis is unreachable or failed.
    #[error("audit trail unavailable: {0}")]
    Unavailable(String),
}

impl AuditError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidQuery(_) => ErrorCode::InvalidParams,
            Self::Decode { code, .. } => *code,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}
