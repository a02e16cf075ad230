//! NATS connections that reconnect forever with bounded backoff and report their state to
//! readiness and metrics.

use std::time::Duration;

use async_nats::{ConnectOptions, Event};

use crate::{
    config::{redact_url, NatsAuth, NatsConfig},
    health::Dependency,
    RuntimeError, Shutdown,
};

const MAX_BACKOFF: Duration = Duration::from_secs(2);

fn backoff(attempt: usize) -> Duration {
    let ms = 50u64.saturating_mul(1 << attempt.min(6));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

async fn options(
    config: &NatsConfig,
    name: &str,
    dependency: Dependency,
) -> Result<ConnectOptions, RuntimeError> {
    let mut opts =
        match &config.auth {
            NatsAuth::None => ConnectOptions::new(),
            NatsAuth::UserPassword { user, password } => {
                ConnectOptions::with_user_and_password(user.clone(), password.expose().to_owned())
            }
            NatsAuth::Token(t) => ConnectOptions::with_token(t.expose().to_owned()),
            NatsAuth::NkeySeed(seed) => ConnectOptions::with_nkey(seed.expose().to_owned()),
            NatsAuth::CredsFile(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| RuntimeError::NatsCredentials {
                    path: path.display().to_string(),
                    source,
                })?,
        };
    if let Some(tls) = &config.tls {
        opts = opts.require_tls(true);
        if let Some(ca) = &tls.ca {
            opts = opts.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &tls.client_cert {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
    }
    Ok(opts
        .name(name)
        .custom_inbox_prefix(&config.inbox_prefix)
        .connection_timeout(Duration::from_secs(2))
        .max_reconnects(None)
        .reconnect_delay_callback(backoff)
        .event_callback(move |event| {
            let dependency = dependency.clone();
            async move {
                match event {
                    Event::Connected => dependency.set(true),
                    Event::Disconnected => dependency.set(false),
                    Event::SlowConsumer(sid) => {
                        metrics::counter!("mabeam_nats_slow_consumer_total").increment(1);
                        tracing::warn!(subscription = sid, "NATS slow consumer: messages dropped");
                    }
                    Event::ServerError(e) => {
                        metrics::counter!("mabeam_nats_errors_total", "kind" => "server")
                            .increment(1);
                        tracing::warn!(error = %e, "NATS server error");
                    }
                    Event::ClientError(e) => {
                        metrics::counter!("mabeam_nats_errors_total", "kind" => "client")
                            .increment(1);
                        tracing::warn!(error = %e, "NATS client error");
                    }
                    Event::LameDuckMode => tracing::warn!("NATS server entering lame duck mode"),
                    Event::Draining | Event::Closed => dependency.set(false),
                }
            }
        }))
}

/// Connects, retrying with bounded backoff until it succeeds or `shutdown` fires.
pub async fn connect(
    config: &NatsConfig,
    name: &str,
    dependency: Dependency,
    shutdown: &Shutdown,
) -> Result<async_nats::Client, RuntimeError> {
    let mut attempt = 0;
    loop {
        let opts = options(config, name, dependency.clone()).await?;
        match opts.connect(config.url.as_str()).await {
            Ok(client) => {
                dependency.set(true);
                return Ok(client);
            }
            Err(source) => {
                if shutdown.is_cancelled() {
                    return Err(RuntimeError::NatsConnect {
                        url: redact_url(&config.url),
                        source,
                    });
                }
                tracing::warn!(url = %redact_url(&config.url), error = %source, attempt, "NATS not reachable yet; retrying");
                let delay = backoff(attempt);
                attempt += 1;
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Err(RuntimeError::NatsConnect {
                        url: redact_url(&config.url),
                        source,
                    }),
                }
            }
        }
    }
}

/// Returns once the server has processed every subscription made so far on `client`, so a
/// request sent after a service's `start` returns finds a responder. `Client::flush` is not
/// enough: it only empties the socket buffer. The server handles a connection's operations in
/// order, so a message published after the subscriptions coming back proves them in place.
pub async fn confirm_subscriptions(
    client: &async_nats::Client,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    use futures::StreamExt;
    let failed =
        |detail: String| RuntimeError::Service(format!("subscriptions not confirmed: {detail}"));
    let inbox = client.new_inbox();
    let mut probe = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| failed(e.to_string()))?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(|e| failed(e.to_string()))?;
    match tokio::time::timeout(timeout, probe.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(failed("the connection closed".into())),
        Err(_) => Err(failed(format!("no echo within {timeout:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(0), Duration::from_millis(50));
        assert!(backoff(3) > backoff(2));
        assert_eq!(backoff(100), MAX_BACKOFF);
    }
}
