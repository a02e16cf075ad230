//! One multiplexed, self-reconnecting Redis connection per service, with a watchdog that
//! pings it so `/readyz` turns false while Redis is unreachable.

use std::time::Duration;

use ::redis::{
    aio::{ConnectionManager, ConnectionManagerConfig},
    Client, ClientTlsConfig, IntoConnectionInfo, TlsCertificates,
};

use crate::{config::RedisConfig, health::Dependency, RuntimeError, Shutdown};

const PING_EVERY: Duration = Duration::from_millis(500);

fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

fn read(path: &std::path::Path) -> Result<Vec<u8>, RuntimeError> {
    std::fs::read(path).map_err(|source| RuntimeError::RedisTls {
        path: path.display().to_string(),
        source,
    })
}

/// A client for the configured URL, ACL credentials and TLS material.
pub fn client(config: &RedisConfig) -> Result<Client, RuntimeError> {
    let mut info = config
        .url
        .as_str()
        .into_connection_info()
        .map_err(RuntimeError::RedisUrl)?;
    if let Some(password) = &config.password {
        let mut settings = info
            .redis_settings()
            .clone()
            .set_password(password.expose());
        if let Some(user) = &config.user {
            settings = settings.set_username(user);
        }
        info = info.set_redis_settings(settings);
    }
    match &config.tls {
        Some(tls) if tls.ca.is_some() || tls.client_cert.is_some() => {
            let root_cert = tls.ca.as_deref().map(read).transpose()?;
            let client_tls = match &tls.client_cert {
                Some((cert, key)) => Some(ClientTlsConfig {
                    client_cert: read(cert)?,
                    client_key: read(key)?,
                }),
                None => None,
            };
            Client::build_with_tls(
                info,
                TlsCertificates {
                    client_tls,
                    root_cert,
                },
            )
            .map_err(RuntimeError::RedisUrl)
        }
        // rediss:// without a CA verifies against the system roots.
        _ => Client::open(info).map_err(RuntimeError::RedisUrl),
    }
}

/// Connects (retrying until `shutdown`) and starts the watchdog.
pub async fn connect(
    config: &RedisConfig,
    dependency: Dependency,
    shutdown: &Shutdown,
) -> Result<ConnectionManager, RuntimeError> {
    let client = client(config)?;
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
