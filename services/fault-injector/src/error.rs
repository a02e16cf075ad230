use std::net::SocketAddr;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Runtime(#[from] mabeam_runtime::RuntimeError),
    #[error("cannot bind the {link} fault proxy on {addr}: {source}")]
    ProxyBind {
        link: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("NATS micro-service endpoint: {0}")]
    Endpoint(String),
    #[error("cannot read the stored faults from Redis: {0}")]
    Restore(#[source] redis::RedisError),
}
