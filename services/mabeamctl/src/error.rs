//! Why a `mabeamctl` command could not run. Every variant is a usage or input error: the
//! binary prints it on stderr and exits with status 1.

use std::path::PathBuf;

use mabeam_consensus::ConfigError;

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
}
