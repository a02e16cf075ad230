//! One multiplexed, self-reconnecting Redis connection per service, with a watchdog that
//! pings it so `/readyz` turns false while Redis is unreachable.

use std::time::Duration;

use ::redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Client,
};

use crate::{health::Dependency, RuntimeError, Shutdown};

const PING_EVERY: Duration = Duration::from_millis(500);

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

/// Connects (retrying until `shutdown`) and starts the watchdog.
pub async fn connect(
    url: &str,
    dependency: Dependency,
    shutdown: &Shutdown,
) -> Result<ConnectionManager, RuntimeError> {
    let client = Client::open(url).map_err(RuntimeError::RedisUrl)?;
    let mut attempt: u32 = 0;
    let manager = loop {
        match ConnectionManager::new_with_config(client.clone(), manager_config()).await {
            Ok(m) => break m,
            Err(e) => {
                if shutdown.is_cancelled() {
                    return Err(RuntimeError::RedisConnect(e));
                }
                tracing::warn!(error = %e, attempt, "Redis not reachable yet; retrying");
                let delay = Duration::from_millis(50 * 2u64.pow(attempt.min(5)));
                attempt += 1;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Err(RuntimeError::RedisConnect(e)),
                }
            }
        }
    };
    dependency.set(true);
    let mut probe = manager.clone();
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PING_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            let pong: Result<String, _> = ::redis::cmd("PING").query_async(&mut probe).await;
            dependency.set(pong.is_ok());
        }
    });
    Ok(manager)
}
