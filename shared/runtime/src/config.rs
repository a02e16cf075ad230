//! Configuration: every setting is a `MABEAM_*` key, read from the environment or given as a
//! `--flag`. Each service declares its keys (name, default, help) once; parsing and
//! validation are pure functions over an [`Env`], so tests feed a map.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use thiserror::Error;

/// A source of settings.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

impl Env for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key).cloned()
    }
}

/// One documented setting.
#[derive(Debug, Clone, Copy)]
pub struct ConfigKey {
    pub name: &'static str,
    pub default: Option<&'static str>,
    pub help: &'static str,
}

#[derive(Debug, Error, PartialEq)]
pub enum ConfigError {
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    #[error("unknown flag {0} (see --help)")]
    UnknownFlag(String),
    #[error("flag {0} needs a value")]
    MissingValue(String),
}

impl ConfigError {
    pub fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// Settings every service reads.
pub const COMMON_KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "MABEAM_NATS_URL",
        default: Some("nats://127.0.0.1:4222"),
        help: "NATS server URL(s), comma-separated",
    },
    ConfigKey {
        name: "MABEAM_NATS_USER",
        default: None,
        help: "NATS user name (with MABEAM_NATS_PASSWORD)",
    },
    ConfigKey {
        name: "MABEAM_NATS_PASSWORD",
        default: None,
        help: "NATS password",
    },
    ConfigKey {
        name: "MABEAM_NATS_PASSWORD_FILE",
        default: None,
        help: "file holding the NATS password (instead of MABEAM_NATS_PASSWORD)",
    },
    ConfigKey {
        name: "MABEAM_NATS_TOKEN",
        default: None,
        help: "NATS token",
    },
    ConfigKey {
        name: "MABEAM_NATS_TOKEN_FILE",
        default: None,
        help: "file holding the NATS token",
    },
    ConfigKey {
        name: "MABEAM_NATS_NKEY_SEED",
        default: None,
        help: "NATS nkey seed (SU...)",
    },
    ConfigKey {
        name: "MABEAM_NATS_NKEY_SEED_FILE",
        default: None,
        help: "file holding the NATS nkey seed",
    },
    ConfigKey {
        name: "MABEAM_NATS_CREDS",
        default: None,
        help: "path of a NATS .creds file",
    },
    ConfigKey {
        name: "MABEAM_NATS_TLS_CA",
        default: None,
        help: "CA certificate (PEM) to verify the NATS server; enables TLS",
    },
    ConfigKey {
        name: "MABEAM_NATS_TLS_CERT",
        default: None,
        help: "client certificate (PEM) for mutual TLS",
    },
    ConfigKey {
        name: "MABEAM_NATS_TLS_KEY",
        default: None,
        help: "client key (PEM) for mutual TLS",
    },
    ConfigKey {
        name: "MABEAM_NATS_INBOX_PREFIX",
        default: Some("_INBOX"),
        help: "subject prefix of this connection's reply inboxes (a per-user prefix keeps replies private)",
    },
    ConfigKey {
        name: "MABEAM_REDIS_URL",
        default: Some("redis://127.0.0.1:6379"),
        help: "Redis URL (redis://, or rediss:// for TLS)",
    },
    ConfigKey {
        name: "MABEAM_REDIS_USER",
        default: None,
        help: "Redis ACL user (with MABEAM_REDIS_PASSWORD)",
    },
    ConfigKey {
        name: "MABEAM_REDIS_PASSWORD",
        default: None,
        help: "Redis password (of the ACL user, or requirepass)",
    },
    ConfigKey {
        name: "MABEAM_REDIS_PASSWORD_FILE",
        default: None,
        help: "file holding the Redis password",
    },
    ConfigKey {
        name: "MABEAM_REDIS_TLS_CA",
        default: None,
        help: "CA certificate (PEM) to verify Redis (needs a rediss:// URL)",
    },
    ConfigKey {
        name: "MABEAM_REDIS_TLS_CERT",
        default: None,
        help: "client certificate (PEM) for mutual TLS to Redis",
    },
    ConfigKey {
        name: "MABEAM_REDIS_TLS_KEY",
        default: None,
        help: "client key (PEM) for mutual TLS to Redis",
    },
    ConfigKey {
        name: "MABEAM_HTTP_ADDR",
        default: Some("127.0.0.1:0"),
        help: "address of the /metrics /healthz /readyz listener (port 0 picks a free one)",
    },
    ConfigKey {
        name: "MABEAM_INSTANCE",
        default: None,
        help: "instance name in events and logs (default: hostname-pid)",
    },
    ConfigKey {
        name: "MABEAM_LOG",
        default: Some("info"),
        help: "log filter (tracing EnvFilter syntax)",
    },
    ConfigKey {
        name: "MABEAM_LOG_FORMAT",
        default: Some("json"),
        help: "json or text",
    },
    ConfigKey {
        name: "MABEAM_MAX_MESSAGE_BYTES",
        default: Some("1048576"),
        help: "largest message accepted",
    },
    ConfigKey {
        name: "MABEAM_RATE_LIMIT",
        default: Some("50000"),
        help: "messages per second accepted on each input subject of this instance; more are refused with rate_limited (0 = no limit)",
    },
    ConfigKey {
        name: "MABEAM_RATE_BURST",
        default: Some("50000"),
        help: "burst above MABEAM_RATE_LIMIT",
    },
];

/// Settings that may be given as `<KEY>_FILE`: the path of a file holding the value (as
/// container secrets are mounted), read once at start.
pub const SECRET_KEYS: &[&str] = &[
    "MABEAM_NATS_PASSWORD",
    "MABEAM_NATS_TOKEN",
    "MABEAM_NATS_NKEY_SEED",
    "MABEAM_REDIS_PASSWORD",
];

/// A secret value: `Debug` never shows it, so it cannot reach a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that hands it to a client library.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A URL with any `user:password@` replaced, for logs and errors.
pub fn redact_url(url: &str) -> String {
    url.split(',')
        .map(|part| match (part.find("://"), part.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}<redacted>{}", &part[..scheme + 3], &part[at..])
            }
            (None, Some(at)) => format!("<redacted>{}", &part[at..]),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// How a NATS client authenticates.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum NatsAuth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: Secret,
    },
    Token(Secret),
    NkeySeed(Secret),
    CredsFile(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NatsTls {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Clone, PartialEq)]
pub struct NatsConfig {
    pub url: String,
    pub auth: NatsAuth,
    pub tls: Option<NatsTls>,
    pub inbox_prefix: String,
}

impl std::fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsConfig")
            .field("url", &redact_url(&self.url))
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("inbox_prefix", &self.inbox_prefix)
            .finish()
    }
}

/// TLS to Redis: the CA to verify it (else the system roots) and a client certificate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RedisTls {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Clone, PartialEq)]
pub struct RedisConfig {
    /// As given; may hold `user:password@`, so it is redacted wherever it is shown.
    pub url: String,
    /// ACL user and password; they override any in the URL.
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub tls: Option<RedisTls>,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &redact_url(&self.url))
            .field("user", &self.user)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommonConfig {
    pub nats: NatsConfig,
    pub redis: RedisConfig,
    pub http_addr: SocketAddr,
    pub instance: String,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub max_message_bytes: usize,
    /// Per input subject; `None` when disabled.
    pub rate_limit: Option<crate::ratelimit::Rate>,
}

/// Reads a key, falling back to its declared default.
pub fn value(env: &impl Env, keys: &[ConfigKey], name: &str) -> Option<String> {
    env.get(name).filter(|v| !v.is_empty()).or_else(|| {
        keys.iter()
            .chain(COMMON_KEYS)
            .find(|k| k.name == name)
            .and_then(|k| k.default.map(str::to_owned))
    })
}

pub fn required(env: &impl Env, keys: &[ConfigKey], name: &str) -> Result<String, ConfigError> {
    value(env, keys, name).ok_or_else(|| ConfigError::invalid(name, "is required"))
}

pub fn parse<T: std::str::FromStr>(
    env: &impl Env,
    keys: &[ConfigKey],
    name: &str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let raw = required(env, keys, name)?;
    raw.parse()
        .map_err(|e| ConfigError::invalid(name, format!("cannot parse {raw:?}: {e}")))
}

/// A duration given in milliseconds, at least `min_ms`.
pub fn millis(
    env: &impl Env,
    keys: &[ConfigKey],
    name: &str,
    min_ms: u64,
) -> Result<Duration, ConfigError> {
    let ms: u64 = parse(env, keys, name)?;
    if ms < min_ms {
        return Err(ConfigError::invalid(
            name,
            format!("must be at least {min_ms} ms, got {ms}"),
        ));
    }
    Ok(Duration::from_millis(ms))
}

pub fn flag(env: &impl Env, keys: &[ConfigKey], name: &str) -> Result<bool, ConfigError> {
    match required(env, keys, name)?.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(ConfigError::invalid(
            name,
            format!("expected true or false, got {other:?}"),
        )),
    }
}

impl CommonConfig {
    pub fn from_env(env: &impl Env, default_instance: &str) -> Result<Self, ConfigError> {
        let keys = COMMON_KEYS;
        let url = required(env, keys, "MABEAM_NATS_URL")?;
        for part in url.split(',') {
            let part = part.trim();
            if !(part.starts_with("nats://")
                || part.starts_with("tls://")
                || part.starts_with("ws://")
                || part.starts_with("wss://")
                || !part.contains("://"))
            {
                return Err(ConfigError::invalid(
                    "MABEAM_NATS_URL",
                    format!("{part:?} is not a nats://, tls:// or host:port address"),
                ));
            }
        }
        let auth = match (
            value(env, keys, "MABEAM_NATS_USER"),
            value(env, keys, "MABEAM_NATS_PASSWORD"),
            value(env, keys, "MABEAM_NATS_TOKEN"),
            value(env, keys, "MABEAM_NATS_NKEY_SEED"),
            value(env, keys, "MABEAM_NATS_CREDS"),
        ) {
            (None, None, None, None, None) => NatsAuth::None,
            (Some(user), Some(password), None, None, None) => NatsAuth::UserPassword {
                user,
                password: Secret::new(password),
            },
            (None, None, Some(token), None, None) => NatsAuth::Token(Secret::new(token)),
            (None, None, None, Some(seed), None) => NatsAuth::NkeySeed(Secret::new(seed)),
            (None, None, None, None, Some(path)) => NatsAuth::CredsFile(PathBuf::from(path)),
            (Some(_), None, ..) | (None, Some(_), ..) => {
                return Err(ConfigError::invalid(
                    "MABEAM_NATS_USER",
                    "user and password go together",
                ))
            }
            _ => {
                return Err(ConfigError::invalid(
                    "MABEAM_NATS_*",
                    "give one NATS authentication method: user/password, token, nkey seed or creds file",
                ))
            }
        };
        let client_cert = client_cert(env, "MABEAM_NATS_TLS_CERT", "MABEAM_NATS_TLS_KEY")?;
        let ca = value(env, keys, "MABEAM_NATS_TLS_CA").map(PathBuf::from);
        let tls = (ca.is_some() || client_cert.is_some() || url.contains("tls://"))
            .then_some(NatsTls { ca, client_cert });
        let inbox_prefix = required(env, keys, "MABEAM_NATS_INBOX_PREFIX")?;
        let valid_token = |t: &str| {
            !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-$".contains(c))
        };
        if !inbox_prefix.split('.').all(valid_token) {
            return Err(ConfigError::invalid(
                "MABEAM_NATS_INBOX_PREFIX",
                "must be dot-separated tokens of letters, digits, _ - $ (no wildcards)",
            ));
        }

        let redis = redis_config(env)?;
        let log_format = match required(env, keys, "MABEAM_LOG_FORMAT")?.as_str() {
            "json" => LogFormat::Json,
            "text" => LogFormat::Text,
            other => {
                return Err(ConfigError::invalid(
                    "MABEAM_LOG_FORMAT",
                    format!("expected json or text, got {other:?}"),
                ))
            }
        };
        let max_message_bytes: usize = parse(env, keys, "MABEAM_MAX_MESSAGE_BYTES")?;
        if !(1024..=64 * 1024 * 1024).contains(&max_message_bytes) {
            return Err(ConfigError::invalid(
                "MABEAM_MAX_MESSAGE_BYTES",
                "must be between 1 KiB and 64 MiB",
            ));
        }
        let rate_limit = rate(env, keys, "MABEAM_RATE_LIMIT", "MABEAM_RATE_BURST")?;
        let instance =
            value(env, keys, "MABEAM_INSTANCE").unwrap_or_else(|| default_instance.to_owned());
        if instance.is_empty() || instance.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "MABEAM_INSTANCE",
                "must be non-empty without spaces",
            ));
        }
        Ok(Self {
            nats: NatsConfig {
                url,
                auth,
                tls,
                inbox_prefix,
            },
            redis,
            http_addr: parse(env, keys, "MABEAM_HTTP_ADDR")?,
            instance,
            log_filter: required(env, keys, "MABEAM_LOG")?,
            log_format,
            max_message_bytes,
            rate_limit,
        })
    }

    pub fn limits(&self) -> mabeam_protocol::Limits {
        mabeam_protocol::Limits {
            max_message_bytes: self.max_message_bytes,
        }
    }
}

/// A rate and its burst from two keys; a rate of 0 disables the limit.
pub fn rate(
    env: &impl Env,
    keys: &[ConfigKey],
    rate_key: &str,
    burst_key: &str,
) -> Result<Option<crate::ratelimit::Rate>, ConfigError> {
    let per_second: u32 = parse(env, keys, rate_key)?;
    let burst: u32 = parse(env, keys, burst_key)?;
    if per_second == 0 {
        return Ok(None);
    }
    if burst == 0 {
        return Err(ConfigError::invalid(burst_key, "must be at least 1"));
    }
    Ok(Some(crate::ratelimit::Rate::new(per_second, burst)))
}

/// A client certificate and its key, given together or not at all.
fn client_cert(
    env: &impl Env,
    cert_key: &str,
    key_key: &str,
) -> Result<Option<(PathBuf, PathBuf)>, ConfigError> {
    match (
        value(env, COMMON_KEYS, cert_key),
        value(env, COMMON_KEYS, key_key),
    ) {
        (Some(c), Some(k)) => Ok(Some((PathBuf::from(c), PathBuf::from(k)))),
        (None, None) => Ok(None),
        _ => Err(ConfigError::invalid(
            cert_key,
            "client certificate and key go together",
        )),
    }
}

fn redis_config(env: &impl Env) -> Result<RedisConfig, ConfigError> {
    let keys = COMMON_KEYS;
    let url = required(env, keys, "MABEAM_REDIS_URL")?;
    let tls_url = url.starts_with("rediss://");
    if !(url.starts_with("redis://") || tls_url || url.starts_with("unix://")) {
        return Err(ConfigError::invalid(
            "MABEAM_REDIS_URL",
            "must start with redis://, rediss:// or unix://",
        ));
    }
    let user = value(env, keys, "MABEAM_REDIS_USER");
    let password = value(env, keys, "MABEAM_REDIS_PASSWORD").map(Secret::new);
    if user.is_some() && password.is_none() {
        return Err(ConfigError::invalid(
            "MABEAM_REDIS_USER",
            "an ACL user needs MABEAM_REDIS_PASSWORD (or MABEAM_REDIS_PASSWORD_FILE)",
        ));
    }
    let client_cert = client_cert(env, "MABEAM_REDIS_TLS_CERT", "MABEAM_REDIS_TLS_KEY")?;
    let ca = value(env, keys, "MABEAM_REDIS_TLS_CA").map(PathBuf::from);
    if (ca.is_some() || client_cert.is_some()) && !tls_url {
        return Err(ConfigError::invalid(
            "MABEAM_REDIS_TLS_CA",
            "TLS settings need a rediss:// MABEAM_REDIS_URL",
        ));
    }
    Ok(RedisConfig {
        url,
        user,
        password,
        tls: tls_url.then_some(RedisTls { ca, client_cert }),
    })
}

/// Replaces each `<KEY>_FILE` of [`SECRET_KEYS`] by `<KEY>` holding the file's content
/// (one trailing newline removed). Giving both is an error; errors name the key, never a
/// value.
pub fn resolve_secret_files(
    mut settings: BTreeMap<String, String>,
    read: impl Fn(&std::path::Path) -> std::io::Result<String>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    for key in SECRET_KEYS {
        let file_key = format!("{key}_FILE");
        let Some(path) = settings.remove(&file_key).filter(|p| !p.is_empty()) else {
            continue;
        };
        if settings.get(*key).is_some_and(|v| !v.is_empty()) {
            return Err(ConfigError::invalid(
                &file_key,
                format!("give {key} or {file_key}, not both"),
            ));
        }
        let content = read(std::path::Path::new(&path))
            .map_err(|e| ConfigError::invalid(&file_key, format!("cannot read {path}: {e}")))?;
        let content = content
            .strip_suffix('\n')
            .map(|c| c.strip_suffix('\r').unwrap_or(c))
            .unwrap_or(&content);
        if content.is_empty() {
            return Err(ConfigError::invalid(&file_key, format!("{path} is empty")));
        }
        settings.insert((*key).to_owned(), content.to_owned());
    }
    Ok(settings)
}

/// A default instance name: `<service>-<hostname>-<pid>`.
pub fn default_instance(service: &str) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "local".into()
    } else {
        host
    };
    format!("{service}-{host}-{}", std::process::id())
}

/// What the command line asked for.
#[derive(Debug, PartialEq)]
pub enum Invocation {
    Run(BTreeMap<String, String>),
    Help(String),
}

/// Merges the process environment with `--flag value` / `--flag=value` arguments (flags win).
/// `--nats-url` sets `MABEAM_NATS_URL`; only declared keys are accepted.
pub fn from_process(
    service: &str,
    about: &str,
    keys: &[ConfigKey],
    env: impl IntoIterator<Item = (String, String)>,
    args: impl IntoIterator<Item = String>,
) -> Result<Invocation, ConfigError> {
    let mut map: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("MABEAM_"))
        .collect();
    let known = |name: &str| keys.iter().chain(COMMON_KEYS).any(|k| k.name == name);
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "--help" || arg == "-h" {
            return Ok(Invocation::Help(help(service, about, keys)));
        }
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(ConfigError::UnknownFlag(arg));
        };
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (flag, None),
        };
        let key = format!("MABEAM_{}", name.replace('-', "_").to_ascii_uppercase());
        if !known(&key) {
            return Err(ConfigError::UnknownFlag(arg));
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| ConfigError::MissingValue(arg.clone()))?,
        };
        map.insert(key, value);
    }
    Ok(Invocation::Run(map))
}

/// This process's settings (environment, then flags), or `None` once `--help` is printed.
pub fn process_settings(
    service: &str,
    about: &str,
    keys: &[ConfigKey],
) -> Result<Option<BTreeMap<String, String>>, ConfigError> {
    use std::io::Write as _;
    match from_process(
        service,
        about,
        keys,
        std::env::vars(),
        std::env::args().skip(1),
    )? {
        Invocation::Help(text) => {
            // Written, not println!ed: `--help | head` must not panic on a closed pipe.
            let _ = writeln!(std::io::stdout(), "{text}");
            Ok(None)
        }
        Invocation::Run(env) => Ok(Some(resolve_secret_files(env, |p| {
            std::fs::read_to_string(p)
        })?)),
    }
}

/// Settings from literal pairs, as tests and tools build them.
pub fn settings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The `--help` text: every key as flag and env var, with defaults.
pub fn help(service: &str, about: &str, keys: &[ConfigKey]) -> String {
    let mut out =
        format!("{service}: {about}\n\nEvery option is a flag or an environment variable.\n\n");
    for k in keys.iter().chain(COMMON_KEYS) {
        let flag = k
            .name
            .trim_start_matches("MABEAM_")
            .to_ascii_lowercase()
            .replace('_', "-");
        let default = k
            .default
            .map(|d| format!(" [default: {d}]"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  --{flag:<24} {:<28} {}{default}\n",
            k.name, k.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        settings(pairs)
    }

    #[test]
    fn defaults_give_a_loopback_config() {
        let c = CommonConfig::from_env(&env(&[]), "x").unwrap();
        assert_eq!(c.nats.url, "nats://127.0.0.1:4222");
        assert_eq!(c.nats.auth, NatsAuth::None);
        assert!(c.nats.tls.is_none());
        assert_eq!(c.redis.url, "redis://127.0.0.1:6379");
        assert!(c.redis.tls.is_none() && c.redis.password.is_none());
        assert_eq!(c.nats.inbox_prefix, "_INBOX");
        assert_eq!(
            c.rate_limit,
            Some(crate::ratelimit::Rate::new(50_000, 50_000))
        );
        let off = CommonConfig::from_env(&env(&[("MABEAM_RATE_LIMIT", "0")]), "x").unwrap();
        assert_eq!(off.rate_limit, None);
        let e = CommonConfig::from_env(&env(&[("MABEAM_RATE_BURST", "0")]), "x").unwrap_err();
        assert!(e.to_string().starts_with("MABEAM_RATE_BURST"), "{e}");
        assert_eq!(c.instance, "x");
        assert_eq!(c.log_format, LogFormat::Json);
    }

    #[test]
    fn half_given_credentials_are_refused() {
        let e = CommonConfig::from_env(&env(&[("MABEAM_NATS_USER", "a")]), "x").unwrap_err();
        assert!(e.to_string().contains("together"), "{e}");
        let e = CommonConfig::from_env(
            &env(&[("MABEAM_NATS_TOKEN", "t"), ("MABEAM_NATS_NKEY_SEED", "S")]),
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("one NATS authentication"), "{e}");
    }

    #[test]
    fn bad_urls_and_numbers_name_their_key() {
        let e = CommonConfig::from_env(&env(&[("MABEAM_REDIS_URL", "http://x")]), "x").unwrap_err();
        assert!(e.to_string().starts_with("MABEAM_REDIS_URL"), "{e}");
        let e = CommonConfig::from_env(&env(&[("MABEAM_HTTP_ADDR", "nope")]), "x").unwrap_err();
        assert!(e.to_string().starts_with("MABEAM_HTTP_ADDR"), "{e}");
        let e =
            CommonConfig::from_env(&env(&[("MABEAM_MAX_MESSAGE_BYTES", "3")]), "x").unwrap_err();
        assert!(e.to_string().contains("1 KiB"), "{e}");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let c = CommonConfig::from_env(
            &env(&[
                ("MABEAM_NATS_URL", "nats://svc:natspw-in-url@h:4222"),
                ("MABEAM_NATS_USER", "svc"),
                ("MABEAM_NATS_PASSWORD", "natspw-7f3a"),
                ("MABEAM_REDIS_URL", "rediss://u:redispw-in-url@h:6380"),
                ("MABEAM_REDIS_USER", "mabeam"),
                ("MABEAM_REDIS_PASSWORD", "redispw-91bc"),
            ]),
            "x",
        )
        .unwrap();
        let shown = format!("{c:?} {c:#?}");
        for secret in [
            "natspw-7f3a",
            "natspw-in-url",
            "redispw-91bc",
            "redispw-in-url",
        ] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("<redacted>"));
        assert_eq!(c.redis.password.as_ref().unwrap().expose(), "redispw-91bc");
        assert!(c.redis.tls.is_some());
        let token = CommonConfig::from_env(&env(&[("MABEAM_NATS_TOKEN", "tok-55")]), "x").unwrap();
        assert!(!format!("{token:?}").contains("tok-55"));
        let seed = CommonConfig::from_env(&env(&[("MABEAM_NATS_NKEY_SEED", "SUAB")]), "x").unwrap();
        assert!(!format!("{seed:?}").contains("SUAB"));
    }

    #[test]
    fn redact_url_hides_user_info_only() {
        assert_eq!(
            redact_url("nats://a:b@h1:4222,nats://h2:4222"),
            "nats://<redacted>@h1:4222,nats://h2:4222"
        );
        assert_eq!(redact_url("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redact_url("u:p@h:1"), "<redacted>@h:1");
    }

    #[test]
    fn secret_files_replace_their_keys() {
        let files = |p: &std::path::Path| match p.to_str() {
            Some("/run/secrets/nats") => Ok("from-file\n".to_owned()),
            Some("/run/secrets/empty") => Ok("\n".to_owned()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let resolved = resolve_secret_files(
            env(&[("MABEAM_NATS_PASSWORD_FILE", "/run/secrets/nats")]),
            files,
        )
        .unwrap();
        assert_eq!(resolved["MABEAM_NATS_PASSWORD"], "from-file");
        assert!(!resolved.contains_key("MABEAM_NATS_PASSWORD_FILE"));
        let e = resolve_secret_files(
            env(&[
                ("MABEAM_REDIS_PASSWORD", "x"),
                ("MABEAM_REDIS_PASSWORD_FILE", "/run/secrets/nats"),
            ]),
            files,
        )
        .unwrap_err();
        assert!(e.to_string().contains("not both"), "{e}");
        let e =
            resolve_secret_files(env(&[("MABEAM_NATS_TOKEN_FILE", "/nope")]), files).unwrap_err();
        assert!(e.to_string().starts_with("MABEAM_NATS_TOKEN_FILE"), "{e}");
        let e = resolve_secret_files(
            env(&[("MABEAM_NATS_NKEY_SEED_FILE", "/run/secrets/empty")]),
            files,
        )
        .unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
    }

    #[test]
    fn redis_acl_and_tls_settings_are_checked() {
        let e = CommonConfig::from_env(&env(&[("MABEAM_REDIS_USER", "u")]), "x").unwrap_err();
        assert!(e.to_string().starts_with("MABEAM_REDIS_USER"), "{e}");
        let e =
            CommonConfig::from_env(&env(&[("MABEAM_REDIS_TLS_CA", "/ca.pem")]), "x").unwrap_err();
        assert!(e.to_string().contains("rediss://"), "{e}");
        let e = CommonConfig::from_env(
            &env(&[
                ("MABEAM_REDIS_URL", "rediss://h:6380"),
                ("MABEAM_REDIS_TLS_CERT", "/c.pem"),
            ]),
            "x",
        )
        .unwrap_err();
        assert!(e.to_string().contains("together"), "{e}");
        let c = CommonConfig::from_env(
            &env(&[
                ("MABEAM_REDIS_URL", "rediss://h:6380"),
                ("MABEAM_REDIS_TLS_CA", "/ca.pem"),
            ]),
            "x",
        )
        .unwrap();
        assert_eq!(c.redis.tls.unwrap().ca.unwrap(), PathBuf::from("/ca.pem"));
        let e = CommonConfig::from_env(&env(&[("MABEAM_NATS_INBOX_PREFIX", "_INBOX.*")]), "x")
            .unwrap_err();
        assert!(e.to_string().starts_with("MABEAM_NATS_INBOX_PREFIX"), "{e}");
    }

    #[test]
    fn tls_is_enabled_by_a_ca_or_a_tls_url() {
        let c = CommonConfig::from_env(&env(&[("MABEAM_NATS_TLS_CA", "/ca.pem")]), "x").unwrap();
        assert_eq!(c.nats.tls.unwrap().ca.unwrap(), PathBuf::from("/ca.pem"));
        let c = CommonConfig::from_env(&env(&[("MABEAM_NATS_URL", "tls://h:4222")]), "x").unwrap();
        assert!(c.nats.tls.is_some());
    }

    #[test]
    fn flags_override_the_environment() {
        let inv = from_process(
            "svc",
            "about",
            &[],
            [("MABEAM_NATS_URL".to_owned(), "nats://a:1".to_owned())],
            [
                "--nats-url".to_owned(),
                "nats://b:2".to_owned(),
                "--log=debug".to_owned(),
            ],
        )
        .unwrap();
        let Invocation::Run(map) = inv else {
            panic!("expected run")
        };
        assert_eq!(map["MABEAM_NATS_URL"], "nats://b:2");
        assert_eq!(map["MABEAM_LOG"], "debug");
    }

    #[test]
    fn unknown_flags_and_missing_values_are_errors() {
        let e =
            from_process("s", "a", &[], [], ["--bogus".to_owned(), "1".to_owned()]).unwrap_err();
        assert_eq!(e, ConfigError::UnknownFlag("--bogus".into()));
        let e = from_process("s", "a", &[], [], ["--log".to_owned()]).unwrap_err();
        assert_eq!(e, ConfigError::MissingValue("--log".into()));
    }

    #[test]
    fn help_lists_every_key_with_its_flag() {
        let Invocation::Help(text) =
            from_process("svc", "does things", &[], [], ["--help".to_owned()]).unwrap()
        else {
            panic!("expected help")
        };
        for k in COMMON_KEYS {
            assert!(text.contains(k.name), "{} missing", k.name);
        }
        assert!(text.contains("--nats-url"));
    }
}
