//! The NATS side of the live commands: the connection options every command shares, the
//! connection, and request/reply with typed error replies.

use std::{path::PathBuf, time::Duration};

use async_nats::{client::RequestErrorKind, Client, ConnectOptions};
use bytes::Bytes;
use mabeam_protocol::{codec::encode, ContentType, Limits, Message};
use mabeam_runtime::reply;

use crate::CtlError;

/// Connection and output options, accepted before or after the subcommand.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Connection and output")]
pub struct Global {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long,
        global = true,
        env = "MABEAM_NATS_URL",
        default_value = "nats://127.0.0.1:4222",
        value_name = "URL"
    )]
    pub nats_url: String,
    /// How long to wait for a connection and for each answer (e.g. 5s, 500ms, 1m).
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Print JSON (one document, or one line per event) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// NATS credentials file (.creds).
    #[arg(long, global = true, env = "MABEAM_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// NATS token.
    #[arg(long, global = true, env = "MABEAM_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// NATS user (with --nats-password).
    #[arg(
        long,
        global = true,
        env = "MABEAM_NATS_USER",
        requires = "nats_password"
    )]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(
        long,
        global = true,
        env = "MABEAM_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,
    /// CA certificate (PEM) to verify the NATS server; enables TLS.
    #[arg(long, global = true, env = "MABEAM_NATS_TLS_CA", value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --nats-tls-key).
    #[arg(
        long,
        global = true,
        env = "MABEAM_NATS_TLS_CERT",
        value_name = "FILE",
        requires = "nats_tls_key"
    )]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    #[arg(
        long,
        global = true,
        env = "MABEAM_NATS_TLS_KEY",
        value_name = "FILE",
        requires = "nats_tls_cert"
    )]
    pub nats_tls_key: Option<PathBuf>,
    /// Prefix of reply inboxes; deploy/nats gives each user its own (`_INBOX.operator`).
    #[arg(
        long,
        global = true,
        env = "MABEAM_NATS_INBOX_PREFIX",
        default_value = "_INBOX",
        value_name = "PREFIX"
    )]
    pub nats_inbox_prefix: String,
}

/// `5s`, `500ms`, `1.5s`, `2m`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 5s, 500ms or 2m, got {text:?}"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?}; use ms, s, m or h"
            ))
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Connects once (no retry: a CLI should say at once that the server is unreachable).
pub async fn connect(global: &Global) -> Result<Client, CtlError> {
    let failed = |message: String| CtlError::Connect {
        url: global.nats_url.clone(),
        message,
    };
    let mut options = if let Some(path) = &global.nats_creds {
        ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|e| failed(format!("cannot read {}: {e}", path.display())))?
    } else if let Some(token) = &global.nats_token {
        ConnectOptions::with_token(token.clone())
    } else if let (Some(user), Some(password)) = (&global.nats_user, &global.nats_password) {
        ConnectOptions::with_user_and_password(user.clone(), password.clone())
    } else {
        ConnectOptions::new()
    };
    if let Some(ca) = &global.nats_tls_ca {
        options = options.require_tls(true).add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&global.nats_tls_cert, &global.nats_tls_key) {
        options = options
            .require_tls(true)
            .add_client_certificate(cert.clone(), key.clone());
    }
    options
        .name("mabeamctl")
        .custom_inbox_prefix(&global.nats_inbox_prefix)
        .connection_timeout(global.timeout)
        .request_timeout(Some(global.timeout))
        .connect(global.nats_url.as_str())
        .await
        .map_err(|e| failed(e.to_string()))
}

/// Which service answers on a subject, for "is it running?" messages.
fn service_of(subject: &str) -> &'static str {
    if subject.starts_with("mabeam.registry.") {
        "registry"
    } else if subject.starts_with("mabeam.faults.") {
        "fault-injector"
    } else if subject.starts_with("mabeam.sessions.") {
        "coordinator"
    } else if subject.starts_with("mabeam.telemetry.") {
        "telemetry service"
    } else {
        "service"
    }
}

/// Sends `body` (MessagePack) and decodes the answer, or its error reply.
pub async fn request_raw<A: Message>(
    client: &Client,
    subject: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<A, CtlError> {
    let headers = reply::headers_for(ContentType::MsgPack);
    let answer = tokio::time::timeout(
        timeout,
        client.request_with_headers(subject.to_owned(), headers, body),
    )
    .await
    .map_err(|_| CtlError::RequestTimeout {
        subject: subject.to_owned(),
        timeout,
    })?
    .map_err(|e| match e.kind() {
        RequestErrorKind::NoResponders => CtlError::NoResponders {
            service: service_of(subject),
            subject: subject.to_owned(),
        },
        RequestErrorKind::TimedOut => CtlError::RequestTimeout {
            subject: subject.to_owned(),
            timeout,
        },
        _ => CtlError::Nats {
            subject: subject.to_owned(),
            message: e.to_string(),
        },
    })?;
    if let Some(error) = reply::as_error(answer.headers.as_ref(), &answer.payload) {
        return Err(CtlError::Remote(error));
    }
    reply::decode_message::<A>(answer.headers.as_ref(), &answer.payload, &Limits::default())
        .map(|(value, _)| value)
        .map_err(|e| CtlError::Decode {
            subject: subject.to_owned(),
            message: e.to_string(),
        })
}

/// Encodes `query` as MessagePack and calls [`request_raw`].
pub async fn request<Q: Message, A: Message>(
    client: &Client,
    subject: &str,
    query: &Q,
    timeout: Duration,
) -> Result<A, CtlError> {
    let body = encode(ContentType::MsgPack, query).map_err(|e| CtlError::Nats {
        subject: subject.to_owned(),
        message: e.to_string(),
    })?;
    request_raw(client, subject, body.into(), timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
