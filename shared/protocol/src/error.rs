//! Error codes shared by request/reply errors and rejected results.

use serde::{Deserialize, Serialize};

use crate::{codec::impl_message, current_version};

/// Stable, machine-readable error codes. Also used as metric label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    MalformedMessage,
    UnsupportedVersion,
    UnsupportedContentType,
    TooLarge,
    UnknownAlgorithm,
    InvalidParams,
    NoParticipants,
    UnknownParticipants,
    InsufficientParticipants,
    UnknownTask,
    UnknownAgent,
    KeyMismatch,
    InvalidSignature,
    Timeout,
    Unavailable,
    Unauthorized,
    RateLimited,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MalformedMessage => "malformed_message",
            Self::UnsupportedVersion => "unsupported_version",
            Self::UnsupportedContentType => "unsupported_content_type",
            Self::TooLarge => "too_large",
            Self::UnknownAlgorithm => "unknown_algorithm",
            Self::InvalidParams => "invalid_params",
            Self::NoParticipants => "no_participants",
            Self::UnknownParticipants => "unknown_participants",
            Self::InsufficientParticipants => "insufficient_participants",
            Self::UnknownTask => "unknown_task",
            Self::UnknownAgent => "unknown_agent",
            Self::KeyMismatch => "key_mismatch",
            Self::InvalidSignature => "invalid_signature",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::Unauthorized => "unauthorized",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
        }
    }
}

impl From<&crate::DecodeError> for ErrorCode {
    fn from(err: &crate::DecodeError) -> Self {
        use crate::DecodeError as D;
        match err {
            D::TooLarge { .. } => Self::TooLarge,
            D::Empty | D::Malformed { .. } => Self::MalformedMessage,
            D::UnsupportedVersion { .. } => Self::UnsupportedVersion,
            D::UnsupportedContentType(_) => Self::UnsupportedContentType,
        }
    }
}

/// An error inside a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
}

/// The reply to any request that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    #[serde(default = "current_version")]
    pub v: u16,
    pub code: ErrorCode,
    pub message: String,
}

impl_message!(ErrorReply => "error reply");

impl ErrorReply {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            v: current_version(),
            code,
            message: message.into(),
        }
    }
}
