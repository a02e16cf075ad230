//! Why a `mabeamctl` command could not run, and the exit status that says so.

use std::{path::PathBuf, time::Duration};

use mabeam_consensus::ConfigError;
use mabeam_protocol::{ErrorReply, TaskId};

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("cannot read ballot file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The ballot file is not JSON, or not a ballot file. `line` and `column` are 1-based
    /// (0 when the problem has no position, e.g. an empty file).
    #[error("invalid ballot file {path} at line {line}, column {column}: {message}")]
    BallotFile {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// The ballot file parsed but cannot be tallied (duplicate agents, no agents...).
    #[error("invalid ballot file {path}: {message}")]
    BallotContent { path: PathBuf, message: String },
    /// Unknown algorithm (the message lists the known ones), invalid parameters, or an
    /// electorate the algorithm cannot run over.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{algorithm} cannot be tallied offline: it needs live agents ({why}); submit it as a \
         task to a running coordinator instead"
    )]
    NeedsLiveAgents {
        algorithm: &'static str,
        why: &'static str,
    },
    #[error("cannot encode the result as JSON")]
    Encode(#[source] serde_json::Error),

    /// A live command's flags or input file are invalid; nothing was sent.
    #[error("{0}")]
    Usage(String),
    #[error("cannot connect to NATS at {url}: {message} (is mabeam running? set --nats-url or MABEAM_NATS_URL)")]
    Connect { url: String, message: String },
    /// JetStream answered "no stream" for `mabeam.tasks.submit`.
    #[error("no coordinator has created the task stream — is mabeam running?")]
    NoTaskStream,
    /// A service answered with an error reply.
    #[error("{}: {}", .0.code.as_str(), .0.message)]
    Remote(ErrorReply),
    #[error("no {service} answered on {subject} — is it running?")]
    NoResponders {
        service: &'static str,
        subject: String,
    },
    #[error("{subject}: no answer within {timeout:?}")]
    RequestTimeout { subject: String, timeout: Duration },
    #[error("{subject}: {message}")]
    Nats { subject: String, message: String },
    #[error("cannot decode the answer on {subject}: {message}")]
    Decode { subject: String, message: String },
    #[error(
        "no result for task {task_id} within {waited:?}; it may still be running \
         (see `mabeamctl session {task_id}`)"
    )]
    ResultTimeout { task_id: TaskId, waited: Duration },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(String),
    #[error("scenario: {0}")]
    Scenario(String),
    #[error("demo: {0}")]
    Demo(String),
}

/// Exit statuses of live commands (`tally` keeps 0 and 1).
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    pub const USAGE: u8 = 2;
    /// `submit --wait`: the session ended without a decision.
    pub const NO_DECISION: u8 = 3;
    /// `submit --wait`: the task failed or was rejected.
    pub const FAILED: u8 = 4;
    /// `submit --wait`: no result in time.
    pub const TIMED_OUT: u8 = 5;
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::ResultTimeout { .. } => exit::TIMED_OUT,
            _ => exit::ERROR,
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::Usage(message.into())
    }
}
