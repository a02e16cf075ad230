//! Coordinator settings: parsed and validated in one pure function.

use std::time::Duration;

use mabeam_runtime::config::{self, CommonConfig, ConfigError, ConfigKey, Env};

pub const KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "MABEAM_MAX_SESSIONS",
        default: Some("10000"),
        help: "sessions this replica runs at once; more tasks wait in the stream",
    },
    ConfigKey {
        name: "MABEAM_LEASE_MS",
        default: Some("1500"),
        help: "session lease; another replica resumes a session whose owner stopped renewing it for this long",
    },
    ConfigKey {
        name: "MABEAM_RESUME_SCAN_MS",
        default: Some("200"),
        help: "how often to look for sessions with expired leases",
    },
    ConfigKey {
        name: "MABEAM_RESULT_TTL_S",
        default: Some("604800"),
        help: "how long results stay in Redis",
    },
    ConfigKey {
        name: "MABEAM_RESULTS_MAX_AGE_S",
        default: Some("86400"),
        help: "how long results stay in the MABEAM_RESULTS stream for replay",
    },
    ConfigKey {
        name: "MABEAM_TASK_ACK_WAIT_MS",
        default: Some("30000"),
        help: "JetStream ack wait of the task consumer (progress is signalled while a session runs)",
    },
    ConfigKey {
        name: "MABEAM_TASK_MAX_DELIVER",
        default: Some("10"),
        help: "deliveries of one task message before JetStream gives up on it",
    },
    ConfigKey {
        name: "MABEAM_TASK_RETRY_BASE_MS",
        default: Some("1000"),
        help: "first redelivery delay of a task that cannot be handled now; doubles per delivery",
    },
    ConfigKey {
        name: "MABEAM_TASK_RETRY_MAX_MS",
        default: Some("60000"),
        help: "longest redelivery delay",
    },
    ConfigKey {
        name: "MABEAM_DEADLETTER_MAX_AGE_S",
        default: Some("2592000"),
        help: "how long given-up tasks stay in the MABEAM_DEADLETTER stream",
    },
    ConfigKey {
        name: "MABEAM_DEDUP_WINDOW_S",
        default: Some("120"),
        help: "JetStream duplicate window for task ids (Nats-Msg-Id)",
    },
    ConfigKey {
        name: "MABEAM_STREAM_REPLICAS",
        default: Some("1"),
        help: "replicas of the MABEAM_TASKS and MABEAM_RESULTS streams when this replica creates them (3 on a 3-node JetStream cluster)",
    },
    ConfigKey {
        name: "MABEAM_LAG_POLL_MS",
        default: Some("5000"),
        help: "how often to read the task consumer's backlog into mabeam_coordinator_tasks_pending",
    },
    ConfigKey {
        name: "MABEAM_REGISTRY_TIMEOUT_MS",
        default: Some("2000"),
        help: "timeout of participant lookups in the registry",
    },
    ConfigKey {
        name: "MABEAM_DRAIN_TIMEOUT_MS",
        default: Some("5000"),
        help: "on shutdown, how long running sessions may take to finish before they are handed back",
    },
    ConfigKey {
        name: "MABEAM_VOTE_RATE_LIMIT",
        default: Some("200"),
        help: "messages per second one agent's vote subject may carry into a session; more are dropped (0 = no limit)",
    },
    ConfigKey {
        name: "MABEAM_VOTE_RATE_BURST",
        default: Some("400"),
        help: "burst above MABEAM_VOTE_RATE_LIMIT",
    },
    ConfigKey {
        name: "MABEAM_CLOCK_TOLERANCE_MS",
        default: Some("30000"),
        help: "accepted skew between a ballot's timestamp and the coordinator's clock",
    },
];

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub max_sessions: usize,
    pub lease: Duration,
    pub resume_scan: Duration,
    pub result_ttl: Duration,
    pub results_max_age: Duration,
    pub ack_wait: Duration,
    pub max_deliver: i64,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub deadletter_max_age: Duration,
    pub dedup_window: Duration,
    pub stream_replicas: usize,
    pub lag_poll: Duration,
    pub registry_timeout: Duration,
    pub drain_timeout: Duration,
    pub clock_tolerance_ms: u64,
    /// Per agent and session; `None` when disabled.
    pub vote_rate: Option<mabeam_runtime::ratelimit::Rate>,
}

impl Config {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env, &config::default_instance("coordinator"))?;
        let max_sessions: usize = config::parse(env, KEYS, "MABEAM_MAX_SESSIONS")?;
        if !(1..=1_000_000).contains(&max_sessions) {
            return Err(ConfigError::invalid(
                "MABEAM_MAX_SESSIONS",
                "must be between 1 and 1000000",
            ));
        }
        let lease = config::millis(env, KEYS, "MABEAM_LEASE_MS", 100)?;
        let resume_scan = config::millis(env, KEYS, "MABEAM_RESUME_SCAN_MS", 10)?;
        if resume_scan > lease {
            return Err(ConfigError::invalid(
                "MABEAM_RESUME_SCAN_MS",
                "must not exceed MABEAM_LEASE_MS",
            ));
        }
        let secs = |name: &str| -> Result<Duration, ConfigError> {
            let s: u64 = config::parse(env, KEYS, name)?;
            if s == 0 {
                return Err(ConfigError::invalid(name, "must be positive"));
            }
            Ok(Duration::from_secs(s))
        };
        let max_deliver: i64 = config::parse(env, KEYS, "MABEAM_TASK_MAX_DELIVER")?;
        if max_deliver < 1 {
            return Err(ConfigError::invalid(
                "MABEAM_TASK_MAX_DELIVER",
                "must be at least 1",
            ));
        }
        let stream_replicas: usize = config::parse(env, KEYS, "MABEAM_STREAM_REPLICAS")?;
        // JetStream allows at most 5 replicas per stream.
        if !(1..=5).contains(&stream_replicas) {
            return Err(ConfigError::invalid(
                "MABEAM_STREAM_REPLICAS",
                "must be between 1 and 5",
            ));
        }
        let retry_base = config::millis(env, KEYS, "MABEAM_TASK_RETRY_BASE_MS", 10)?;
        let retry_max = config::millis(env, KEYS, "MABEAM_TASK_RETRY_MAX_MS", 10)?;
        if retry_max < retry_base {
            return Err(ConfigError::invalid(
                "MABEAM_TASK_RETRY_MAX_MS",
                "must not be below MABEAM_TASK_RETRY_BASE_MS",
            ));
        }
        Ok(Self {
            common,
            max_sessions,
            lease,
            resume_scan,
            result_ttl: secs("MABEAM_RESULT_TTL_S")?,
            results_max_age: secs("MABEAM_RESULTS_MAX_AGE_S")?,
            ack_wait: config::millis(env, KEYS, "MABEAM_TASK_ACK_WAIT_MS", 1000)?,
            max_deliver,
            retry_base,
            retry_max,
            deadletter_max_age: secs("MABEAM_DEADLETTER_MAX_AGE_S")?,
            dedup_window: secs("MABEAM_DEDUP_WINDOW_S")?,
            stream_replicas,
            lag_poll: config::millis(env, KEYS, "MABEAM_LAG_POLL_MS", 100)?,
            registry_timeout: config::millis(env, KEYS, "MABEAM_REGISTRY_TIMEOUT_MS", 10)?,
            drain_timeout: config::millis(env, KEYS, "MABEAM_DRAIN_TIMEOUT_MS", 0)?,
            clock_tolerance_ms: config::parse(env, KEYS, "MABEAM_CLOCK_TOLERANCE_MS")?,
            vote_rate: config::rate(
                env,
                KEYS,
                "MABEAM_VOTE_RATE_LIMIT",
                "MABEAM_VOTE_RATE_BURST",
            )?,
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
        assert_eq!(c.max_sessions, 10_000);
        assert_eq!(c.lease, Duration::from_millis(1500));
        assert!(c.resume_scan < c.lease);
    }

    #[test]
    fn a_scan_slower_than_the_lease_is_refused() {
        let e = Config::from_env(&env(&[
            ("MABEAM_LEASE_MS", "500"),
            ("MABEAM_RESUME_SCAN_MS", "600"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("MABEAM_RESUME_SCAN_MS"), "{e}");
    }

    #[test]
    fn zero_sessions_and_zero_deliveries_are_refused() {
        assert!(Config::from_env(&env(&[("MABEAM_MAX_SESSIONS", "0")])).is_err());
        assert!(Config::from_env(&env(&[("MABEAM_TASK_MAX_DELIVER", "0")])).is_err());
        assert!(Config::from_env(&env(&[("MABEAM_LEASE_MS", "abc")])).is_err());
        let e = Config::from_env(&env(&[
            ("MABEAM_TASK_RETRY_BASE_MS", "5000"),
            ("MABEAM_TASK_RETRY_MAX_MS", "1000"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("MABEAM_TASK_RETRY_MAX_MS"), "{e}");
    }

    #[test]
    fn stream_replicas_are_those_jetstream_allows() {
        assert_eq!(Config::from_env(&env(&[])).unwrap().stream_replicas, 1);
        let c = Config::from_env(&env(&[("MABEAM_STREAM_REPLICAS", "3")])).unwrap();
        assert_eq!(c.stream_replicas, 3);
        for bad in ["0", "6", "three"] {
            let e = Config::from_env(&env(&[("MABEAM_STREAM_REPLICAS", bad)])).unwrap_err();
            assert!(e.to_string().starts_with("MABEAM_STREAM_REPLICAS"), "{e}");
        }
        let e = Config::from_env(&env(&[("MABEAM_LAG_POLL_MS", "5")])).unwrap_err();
        assert!(e.to_string().starts_with("MABEAM_LAG_POLL_MS"), "{e}");
    }
}
