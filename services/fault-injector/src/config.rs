//! Fault-injector settings: parsed and validated in one pure function.

use std::{net::SocketAddr, time::Duration};

use mabeam_protocol::fault::Link;
use mabeam_runtime::config::{self, CommonConfig, ConfigError, ConfigKey, Env};

pub const KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "MABEAM_PROXY_NATS_LISTEN",
        default: None,
        help: "address of the NATS fault proxy (services under test connect here); with MABEAM_PROXY_NATS_UPSTREAM",
    },
    ConfigKey {
        name: "MABEAM_PROXY_NATS_UPSTREAM",
        default: None,
        help: "host:port of the NATS server behind the proxy",
    },
    ConfigKey {
        name: "MABEAM_PROXY_REDIS_LISTEN",
        default: None,
        help: "address of the Redis fault proxy (services under test connect here); with MABEAM_PROXY_REDIS_UPSTREAM",
    },
    ConfigKey {
        name: "MABEAM_PROXY_REDIS_UPSTREAM",
        default: None,
        help: "host:port of the Redis server behind the proxy",
    },
    ConfigKey {
        name: "MABEAM_FAULT_RESEND_MS",
        default: Some("2000"),
        help: "how often the commands of active agent faults and partitions are sent again (restarted agents pick them up)",
    },
];

/// One TCP fault proxy: listens on `listen`, forwards to `upstream` (resolved per connection,
/// so a DNS name follows its target).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyConfig {
    pub link: Link,
    pub listen: SocketAddr,
    pub upstream: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub common: CommonConfig,
    pub proxies: Vec<ProxyConfig>,
    pub resend_every: Duration,
}

impl Config {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env, &config::default_instance("fault-injector"))?;
        let mut proxies = Vec::new();
        for (link, listen_key, upstream_key) in [
            (
                Link::Nats,
                "MABEAM_PROXY_NATS_LISTEN",
                "MABEAM_PROXY_NATS_UPSTREAM",
            ),
            (
                Link::Redis,
                "MABEAM_PROXY_REDIS_LISTEN",
                "MABEAM_PROXY_REDIS_UPSTREAM",
            ),
        ] {
            if let Some(p) = proxy(env, link, listen_key, upstream_key)? {
                proxies.push(p);
            }
        }
        Ok(Self {
            common,
            proxies,
            resend_every: config::millis(env, KEYS, "MABEAM_FAULT_RESEND_MS", 100)?,
        })
    }
}

fn proxy(
    env: &impl Env,
    link: Link,
    listen_key: &str,
    upstream_key: &str,
) -> Result<Option<ProxyConfig>, ConfigError> {
    let listen = config::value(env, KEYS, listen_key);
    let upstream = config::value(env, KEYS, upstream_key);
    match (listen, upstream) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(ConfigError::invalid(
            upstream_key,
            format!("is required with {listen_key}"),
        )),
        (None, Some(_)) => Err(ConfigError::invalid(
            listen_key,
            format!("is required with {upstream_key}"),
        )),
        (Some(listen), Some(upstream)) => {
            let listen = listen.parse().map_err(|e| {
                ConfigError::invalid(listen_key, format!("cannot parse {listen:?}: {e}"))
            })?;
            check_host_port(upstream_key, &upstream)?;
            Ok(Some(ProxyConfig {
                link,
                listen,
                upstream,
            }))
        }
    }
}

fn check_host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    let ok = value.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok_and(|p| p > 0)
    });
    if ok {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            key,
            format!("expected host:port, got {value:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use mabeam_runtime::config::settings as env;

    #[test]
    fn no_proxy_by_default() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert!(c.proxies.is_empty());
        assert_eq!(c.resend_every, Duration::from_secs(2));
    }

    #[test]
    fn each_proxy_needs_both_addresses() {
        let c = Config::from_env(&env(&[
            ("MABEAM_PROXY_REDIS_LISTEN", "127.0.0.1:0"),
            ("MABEAM_PROXY_REDIS_UPSTREAM", "redis.svc:6379"),
        ]))
        .unwrap();
        assert_eq!(
            c.proxies,
            [ProxyConfig {
                link: Link::Redis,
                listen: "127.0.0.1:0".parse().unwrap(),
                upstream: "redis.svc:6379".into()
            }]
        );
        let e = Config::from_env(&env(&[("MABEAM_PROXY_NATS_LISTEN", "127.0.0.1:1")])).unwrap_err();
        assert!(
            e.to_string().starts_with("MABEAM_PROXY_NATS_UPSTREAM"),
            "{e}"
        );
        let e = Config::from_env(&env(&[("MABEAM_PROXY_NATS_UPSTREAM", "h:4222")])).unwrap_err();
        assert!(e.to_string().starts_with("MABEAM_PROXY_NATS_LISTEN"), "{e}");
    }

    #[test]
    fn bad_addresses_name_their_key() {
        let e = Config::from_env(&env(&[
            ("MABEAM_PROXY_NATS_LISTEN", "nowhere"),
            ("MABEAM_PROXY_NATS_UPSTREAM", "h:4222"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("MABEAM_PROXY_NATS_LISTEN"), "{e}");
        for bad in ["h", "h:x", ":4222", "h:0", "nats://h", "nats://h:4222"] {
            let e = Config::from_env(&env(&[
                ("MABEAM_PROXY_NATS_LISTEN", "127.0.0.1:0"),
                ("MABEAM_PROXY_NATS_UPSTREAM", bad),
            ]))
            .unwrap_err();
            assert!(e.to_string().contains("host:port"), "{bad}: {e}");
        }
        let e = Config::from_env(&env(&[("MABEAM_FAULT_RESEND_MS", "5")])).unwrap_err();
        assert!(e.to_string().starts_with("MABEAM_FAULT_RESEND_MS"), "{e}");
    }
}
