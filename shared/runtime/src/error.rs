use thiserror::Error;

/// Failures of the shared plumbing; services wrap these in their own error types.
#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("cannot connect to NATS at {url}: {source}")]
    NatsConnect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("cannot read NATS credentials from {path}: {source}")]
    NatsCredentials {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid Redis URL: {0}")]
    RedisUrl(#[source] ::redis::RedisError),
    #[error("cannot read Redis TLS material from {path}: {source}")]
    RedisTls {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot connect to Redis: {0}")]
    RedisConnect(#[source] ::redis::RedisError),
    #[error("cannot bind HTTP listener on {addr}: {source}")]
    HttpBind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot install the metrics recorder: {0}")]
    Metrics(String),
    #[error("cannot start the NATS service endpoints: {0}")]
    Service(String),
}
