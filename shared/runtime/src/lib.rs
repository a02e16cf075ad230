//! The I/O plumbing every mabeam service shares, so each service stays a thin shell around
//! its own logic: configuration from env/flags, NATS and Redis connections that report their
//! health, the `/metrics` `/healthz` `/readyz` HTTP endpoints, typed events that log, count
//! and publish in one place, request/reply helpers, JSON logs and shutdown.

pub mod base;
pub mod config;
pub mod error;
pub mod events;
pub mod health;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod nats;
pub mod ratelimit;
pub mod redis;
pub mod reply;
pub mod shutdown;

pub use config::{CommonConfig, ConfigError, ConfigKey, Env};
pub use error::RuntimeError;
pub use events::EventSink;
pub use health::Readiness;
pub use shutdown::Shutdown;

/// Milliseconds since the Unix epoch: the clock every service stamps messages with.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
