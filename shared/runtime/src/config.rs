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
        name: "MABEAM_NATS_TOKEN",
        default: None,
        help: "NATS token",
    },
    ConfigKey {
        name: "MABEAM_NATS_NKEY_SEED",
        default: None,
        help: "NATS nkey seed (SU...)",
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
        name: "MABEAM_REDIS_URL",
        default: Some("redis://127.0.0.1:6379"),
        help: "Redis URL (redis:// or rediss:// for TLS; user:password@ for ACL)",
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
];

/// How a NATS client authenticates.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum NatsAuth {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    NkeySeed(String),
    CredsFile(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct NatsTls {
    pub ca: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NatsConfig {
    pub url: String,
    pub auth: NatsAuth,
    pub tls: Option<NatsTls>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommonConfig {
    pub nats: NatsConfig,
    pub redis_url: String,
    pub http_addr: SocketAddr,
    pub instance: String,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub max_message_bytes: usize,
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
            (Some(user), Some(password), None, None, None) => {
                NatsAuth::UserPassword { user, password }
            }
            (None, None, Some(token), None, None) => NatsAuth::Token(token),
            (None, None, None, Some(seed), None) => NatsAuth::NkeySeed(seed),
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
        let cert = value(env, keys, "MABEAM_NATS_TLS_CERT");
        let key = value(env, keys, "MABEAM_NATS_TLS_KEY");
        let client_cert = match (cert, key) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, None) => None,
            _ => {
                return Err(ConfigError::invalid(
                    "MABEAM_NATS_TLS_CERT",
                    "client certificate and key go together",
                ))
            }
        };
        let ca = value(env, keys, "MABEAM_NATS_TLS_CA").map(PathBuf::from);
        let tls = (ca.is_some() || client_cert.is_some() || url.contains("tls://"))
            .then_some(NatsTls { ca, client_cert });

        let redis_url = required(env, keys, "MABEAM_REDIS_URL")?;
        if !(redis_url.starts_with("redis://")
            || redis_url.starts_with("rediss://")
            || redis_url.starts_with("unix://"))
        {
            return Err(ConfigError::invalid(
                "MABEAM_REDIS_URL",
                "must start with redis://, rediss:// or unix://",
            ));
        }
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
        let instance =
            value(env, keys, "MABEAM_INSTANCE").unwrap_or_else(|| default_instance.to_owned());
        if instance.is_empty() || instance.contains(char::is_whitespace) {
            return Err(ConfigError::invalid(
                "MABEAM_INSTANCE",
                "must be non-empty without spaces",
            ));
        }
        Ok(Self {
            nats: NatsConfig { url, auth, tls },
            redis_url,
            http_addr: parse(env, keys, "MABEAM_HTTP_ADDR")?,
            instance,
            log_filter: required(env, keys, "MABEAM_LOG")?,
            log_format,
            max_message_bytes,
        })
    }

    pub fn limits(&self) -> mabeam_protocol::Limits {
        mabeam_protocol::Limits {
            max_message_bytes: self.max_message_bytes,
        }
    }
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
        Invocation::Run(env) => Ok(Some(env)),
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
        assert_eq!(c.redis_url, "redis://127.0.0.1:6379");
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
