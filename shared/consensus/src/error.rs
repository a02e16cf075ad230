//! Why a task cannot run as given.

use mabeam_protocol::ErrorCode;

/// A task's algorithm, parameters or electorate is impossible. Each variant maps to the
/// stable [`ErrorCode`] the coordinator puts in the `rejected` result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown algorithm {name:?}; known: {known}")]
    UnknownAlgorithm { name: String, known: String },
    #[error("invalid parameters for {algorithm}: {detail}")]
    InvalidParams {
        algorithm: &'static str,
        detail: String,
    },
    #[error("the electorate is empty")]
    EmptyElectorate,
    #[error("{algorithm} needs at least {needed} participants, got {got}{why}")]
    InsufficientParticipants {
        algorithm: &'static str,
        needed: usize,
        got: usize,
        why: String,
    },
    #[error("participant {0} appears more than once")]
    DuplicateParticipant(String),
    #[error("{algorithm} needs {what}")]
    MissingInput {
        algorithm: &'static str,
        what: &'static str,
    },
}

impl ConfigError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnknownAlgorithm { .. } => ErrorCode::UnknownAlgorithm,
            Self::InvalidParams { .. } | Self::MissingInput { .. } => ErrorCode::InvalidParams,
            Self::EmptyElectorate => ErrorCode::NoParticipants,
            Self::InsufficientParticipants { .. } | Self::DuplicateParticipant(_) => {
                ErrorCode::InsufficientParticipants
            }
        }
    }

    pub(crate) fn params(algorithm: &'static str, detail: impl Into<String>) -> Self {
        Self::InvalidParams {
            algorithm,
            detail: detail.into(),
        }
    }
}
