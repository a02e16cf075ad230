//! Telemetry settings: parsed and validated in one pure function.

use std::time::Duration;

use mabeam_runtime::config::{self, CommonConfig, ConfigError, ConfigKey, Env};

pub const KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "MABEAM_AUDIT_MAX_LEN",
        default: Some("100000"),
        help: "approximate bound of the mabeam:audit stream (XADD MAXLEN ~)",
    },
    ConfigKey {
        name: "MABEAM_AUDIT_BATCH",
        default: Some("1024"),
        help: "most events written to Redis in one pipelined round trip",
    },
    ConfigKey {
        name: "MABEAM_AUDIT_QUEUE",
        default: Some("65536"),
        help:
            "events buffered while Redis is slow or down; beyond this they are dropped and counted",
    },
    ConfigKey {
        name: "MABEAM_TELEMETRY_SEED_MS",
        default: Some("30000"),
        help: "how often agent statuses (registry) and active faults (fault-injector) are re-read",
    },
    ConfigKey {
        name: "MABEAM_TELEMETRY_REQUEST_TIMEOUT_MS",
        default: Some("2000"),
        help: "timeout of the registry and fault-injector requests that seed the gauges",
    },
];

/// Largest `MABEAM_AUDIT_MAX_LEN`: about 1 KiB per entry, so 10 M entries is ~10 GB of Redis.
const MAX_STREAM_LEN: u64 = 10_000_000;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub audit_max_len: u64,
    pub batch: usize,
    pub queue: usize,
    pub seed_every: Duration,
    pub request_timeout: Duration,
}

impl Config {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env, &config::default_instance("telemetry"))?;
        let audit_max_len: u64 = config::parse(env, KEYS, "MABEAM_AUDIT_MAX_LEN")?;
        if !(1..=MAX_STREAM_LEN).contains(&audit_max_len) {
            return Err(ConfigError::invalid(
                "MABEAM_AUDIT_MAX_LEN",
                format!("must be between 1 and {MAX_STREAM_LEN}"),
            ));
        }
        let batch: usize = config::parse(env, KEYS, "MABEAM_AUDIT_BATCH")?;
        if !(1..=100_000).contains(&batch) {
            return Err(ConfigError::invalid(
                "MABEAM_AUDIT_BATCH",
                "must be between 1 and 100000",
            ));
        }
        let queue: usize = config::parse(env, KEYS, "MABEAM_AUDIT_QUEUE")?;
        if !(1..=10_000_000).contains(&queue) {
            return Err(ConfigError::invalid(
                "MABEAM_AUDIT_QUEUE",
                "must be between 1 and 10000000",
            ));
        }
        Ok(Self {
            common,
            audit_max_len,
            batch,
            queue,
            seed_every: config::millis(env, KEYS, "MABEAM_TELEMETRY_SEED_MS", 100)?,
            request_timeout: config::millis(env, KEYS, "MABEAM_TELEMETRY_REQUEST_TIMEOUT_MS", 10)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use mabeam_runtime::config::settings as env;

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_env(&env(&[])).unwrap();
        assert_eq!(c.audit_max_len, 100_000);
        assert_eq!(c.batch, 1024);
        assert_eq!(c.queue, 65_536);
        assert_eq!(c.seed_every, Duration::from_secs(30));
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        for (key, value) in [
            ("MABEAM_AUDIT_MAX_LEN", "0"),
            ("MABEAM_AUDIT_MAX_LEN", "-5"),
            ("MABEAM_AUDIT_MAX_LEN", "20000000"),
            ("MABEAM_AUDIT_BATCH", "0"),
            ("MABEAM_AUDIT_QUEUE", "0"),
            ("MABEAM_TELEMETRY_SEED_MS", "5"),
            ("MABEAM_TELEMETRY_REQUEST_TIMEOUT_MS", "soon"),
        ] {
            let e = Config::from_env(&env(&[(key, value)])).unwrap_err();
            assert!(e.to_string().starts_with(key), "{key}={value}: {e}");
        }
    }
}
