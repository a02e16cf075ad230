//! Registry settings: parsed and validated in one pure function.

use std::time::Duration;

use mabeam_consensus::weights::WeightUpdate;
use mabeam_runtime::config::{self, CommonConfig, ConfigError, ConfigKey, Env};

use crate::lifecycle::Liveness;

pub const KEYS: &[ConfigKey] = &[
    ConfigKey {
        name: "MABEAM_SUSPECT_AFTER_MS",
        default: Some("6000"),
        help: "no heartbeat for this long: the agent becomes suspect",
    },
    ConfigKey {
        name: "MABEAM_FAILED_AFTER_MS",
        default: Some("15000"),
        help: "no heartbeat for this long: the agent has failed (must exceed the suspect TTL)",
    },
    ConfigKey {
        name: "MABEAM_SWEEP_INTERVAL_MS",
        default: Some("500"),
        help: "how often heartbeat TTLs are checked (at most MABEAM_SUSPECT_AFTER_MS)",
    },
    ConfigKey {
        name: "MABEAM_CLOCK_TOLERANCE_MS",
        default: Some("30000"),
        help: "largest accepted distance between an envelope's timestamp and the registry clock",
    },
    ConfigKey {
        name: "MABEAM_DYNAMIC_WEIGHTS",
        default: Some("false"),
        help: "update expertise from the coordinators' agreement reports",
    },
    ConfigKey {
        name: "MABEAM_WEIGHT_LEARNING_RATE",
        default: Some("0.1"),
        help: "share of the way to a bound expertise moves per decision, in (0, 1]",
    },
    ConfigKey {
        name: "MABEAM_WEIGHT_MIN",
        default: Some("0.1"),
        help: "lowest expertise dynamic weights reach (> 0)",
    },
    ConfigKey {
        name: "MABEAM_WEIGHT_MAX",
        default: Some("10"),
        help: "highest expertise dynamic weights reach (>= MABEAM_WEIGHT_MIN)",
    },
];

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    pub liveness: Liveness,
    pub sweep_interval: Duration,
    pub clock_tolerance: Duration,
    /// `Some` when dynamic weights are enabled.
    pub dynamic_weights: Option<WeightUpdate>,
}

impl Config {
    pub fn from_env(env: &impl Env) -> Result<Self, ConfigError> {
        let common = CommonConfig::from_env(env, &config::default_instance("registry"))?;
        let suspect_after = config::millis(env, KEYS, "MABEAM_SUSPECT_AFTER_MS", 10)?;
        let failed_after = config::millis(env, KEYS, "MABEAM_FAILED_AFTER_MS", 10)?;
        if failed_after <= suspect_after {
            return Err(ConfigError::invalid(
                "MABEAM_FAILED_AFTER_MS",
                format!(
                    "must exceed MABEAM_SUSPECT_AFTER_MS ({} ms), got {} ms",
                    suspect_after.as_millis(),
                    failed_after.as_millis()
                ),
            ));
        }
        let sweep_interval = config::millis(env, KEYS, "MABEAM_SWEEP_INTERVAL_MS", 10)?;
        if sweep_interval > suspect_after {
            // A sweep less often than the TTL would let agents skip the suspect status.
            return Err(ConfigError::invalid(
                "MABEAM_SWEEP_INTERVAL_MS",
                format!(
                    "must not exceed MABEAM_SUSPECT_AFTER_MS ({} ms), got {} ms",
                    suspect_after.as_millis(),
                    sweep_interval.as_millis()
                ),
            ));
        }
        let clock_tolerance = config::millis(env, KEYS, "MABEAM_CLOCK_TOLERANCE_MS", 1)?;
        let weights = WeightUpdate {
            learning_rate: config::parse(env, KEYS, "MABEAM_WEIGHT_LEARNING_RATE")?,
            min: config::parse(env, KEYS, "MABEAM_WEIGHT_MIN")?,
            max: config::parse(env, KEYS, "MABEAM_WEIGHT_MAX")?,
        };
        weights
            .validate()
            .map_err(|e| ConfigError::invalid("MABEAM_WEIGHT_*", e.to_string()))?;
        let dynamic = config::flag(env, KEYS, "MABEAM_DYNAMIC_WEIGHTS")?;
        Ok(Self {
            common,
            liveness: Liveness {
                suspect_after_ms: suspect_after.as_millis() as u64,
                failed_after_ms: failed_after.as_millis() as u64,
            },
            sweep_interval,
            clock_tolerance,
            dynamic_weights: dynamic.then_some(weights),
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
        assert_eq!(
            c.liveness,
            Liveness {
                suspect_after_ms: 6000,
                failed_after_ms: 15_000
            }
        );
        assert_eq!(c.sweep_interval, Duration::from_millis(500));
        assert_eq!(c.clock_tolerance, Duration::from_secs(30));
        assert_eq!(c.dynamic_weights, None);
    }

    #[test]
    fn weight_defaults_are_the_consensus_defaults() {
        let c = Config::from_env(&env(&[("MABEAM_DYNAMIC_WEIGHTS", "true")])).unwrap();
        assert_eq!(c.dynamic_weights, Some(WeightUpdate::default()));
    }

    #[test]
    fn settings_are_read() {
        let c = Config::from_env(&env(&[
            ("MABEAM_SUSPECT_AFTER_MS", "300"),
            ("MABEAM_FAILED_AFTER_MS", "800"),
            ("MABEAM_SWEEP_INTERVAL_MS", "50"),
            ("MABEAM_CLOCK_TOLERANCE_MS", "1000"),
            ("MABEAM_DYNAMIC_WEIGHTS", "yes"),
            ("MABEAM_WEIGHT_LEARNING_RATE", "0.5"),
            ("MABEAM_WEIGHT_MIN", "1"),
            ("MABEAM_WEIGHT_MAX", "2"),
        ]))
        .unwrap();
        assert_eq!(c.liveness.suspect_after_ms, 300);
        assert_eq!(c.liveness.failed_after_ms, 800);
        assert_eq!(c.sweep_interval, Duration::from_millis(50));
        assert_eq!(c.clock_tolerance, Duration::from_secs(1));
        assert_eq!(
            c.dynamic_weights,
            Some(WeightUpdate {
                learning_rate: 0.5,
                min: 1.0,
                max: 2.0
            })
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        for (pairs, key) in [
            (
                &[("MABEAM_SUSPECT_AFTER_MS", "soon")][..],
                "MABEAM_SUSPECT_AFTER_MS",
            ),
            (
                &[("MABEAM_SUSPECT_AFTER_MS", "5")],
                "MABEAM_SUSPECT_AFTER_MS",
            ),
            (
                &[("MABEAM_FAILED_AFTER_MS", "3000")],
                "MABEAM_FAILED_AFTER_MS",
            ),
            (
                &[("MABEAM_FAILED_AFTER_MS", "2000")],
                "MABEAM_FAILED_AFTER_MS",
            ),
            (
                &[("MABEAM_SWEEP_INTERVAL_MS", "7000")],
                "MABEAM_SWEEP_INTERVAL_MS",
            ),
            (
                &[("MABEAM_SWEEP_INTERVAL_MS", "0")],
                "MABEAM_SWEEP_INTERVAL_MS",
            ),
            (
                &[("MABEAM_CLOCK_TOLERANCE_MS", "-1")],
                "MABEAM_CLOCK_TOLERANCE_MS",
            ),
            (
                &[("MABEAM_DYNAMIC_WEIGHTS", "maybe")],
                "MABEAM_DYNAMIC_WEIGHTS",
            ),
            (
                &[("MABEAM_WEIGHT_LEARNING_RATE", "x")],
                "MABEAM_WEIGHT_LEARNING_RATE",
            ),
            (&[("MABEAM_WEIGHT_LEARNING_RATE", "0")], "MABEAM_WEIGHT_*"),
            (&[("MABEAM_WEIGHT_MIN", "0")], "MABEAM_WEIGHT_*"),
            (
                &[("MABEAM_WEIGHT_MIN", "5"), ("MABEAM_WEIGHT_MAX", "1")],
                "MABEAM_WEIGHT_*",
            ),
            (&[("MABEAM_REDIS_URL", "http://x")], "MABEAM_REDIS_URL"),
        ] {
            let e = Config::from_env(&env(pairs)).unwrap_err();
            assert!(e.to_string().starts_with(key), "{pairs:?}: {e}");
        }
    }

    #[test]
    fn weight_errors_say_what_is_wrong() {
        let e = Config::from_env(&env(&[
            ("MABEAM_WEIGHT_MIN", "5"),
            ("MABEAM_WEIGHT_MAX", "1"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("above max"), "{e}");
    }
}
