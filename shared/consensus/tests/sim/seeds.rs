//! Running a property over many seeds: every failure names its seed and how to replay it.
//!
//! `MABEAM_SIM_SEED=<seed>` runs that one seed; `MABEAM_SIM_SEEDS=<count>` overrides how many
//! seeds each property runs. A seed's scenario never depends on the build or the machine, so
//! a seed printed by one build replays in any other.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::OnceLock,
    time::{Duration, Instant},
};

use mabeam_protocol::{
    session::{Ballot, Phase, VoteValue},
    signing::EnvelopeHeader,
    SessionId, SignedEnvelope,
};

use super::{check::Verdict, keys::ring};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Whether signature verification is slow here (an unoptimised ed25519 build: about 13 ms per
/// verification instead of about 50 µs). Properties then run fewer seeds.
pub(crate) fn slow_crypto() -> bool {
    static SLOW: OnceLock<bool> = OnceLock::new();
    *SLOW.get_or_init(|| {
        let ring = ring();
        let header = EnvelopeHeader {
            sender: ring.ids[0].clone(),
            session: SessionId::new("calibration").expect("valid id"),
            round: 1,
            sequence: 1,
            timestamp_ms: 0,
        };
        let ballot = Ballot::new(Phase::Vote, VoteValue::Abstain, 1.0);
        let env = SignedEnvelope::seal(&ring.keys[0], header, &ballot).expect("encodes");
        let key = ring.keys[0].public_key();
        // The fastest of a few: a busy machine only ever makes one slower.
        let fastest = (0..5)
            .map(|_| {
                let start = Instant::now();
                let _ = env.verify(&key);
                start.elapsed()
            })
            .min()
            .unwrap_or_default();
        fastest > Duration::from_millis(1)
    })
}

/// The seeds a property runs: `salt..salt+fast`, or only the first `slow` of them where
/// signature checks are slow (an unoptimised ed25519: about 13 ms per check instead of
/// about 50 µs). `MABEAM_SIM_SEEDS` sets the count; `MABEAM_SIM_SEED` runs one seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seeds {
    pub salt: u64,
    pub fast: u64,
    pub slow: u64,
}

impl Seeds {
    pub(crate) const fn new(salt: u64, fast: u64, slow: u64) -> Self {
        Self { salt, fast, slow }
    }

    pub(crate) fn count(&self) -> u64 {
        env_u64("MABEAM_SIM_SEEDS").unwrap_or(if slow_crypto() { self.slow } else { self.fast })
    }

    /// Seeds below this one run in every build.
    pub(crate) fn always_below(&self) -> u64 {
        self.salt + self.slow
    }

    pub(crate) fn list(&self) -> Vec<u64> {
        match env_u64("MABEAM_SIM_SEED") {
            Some(seed) => vec![seed],
            None => (self.salt..self.salt + self.count()).collect(),
        }
    }
}

/// Checks `property` for every seed of `seeds` and panics listing every failing seed with a
/// one-line reproduction.
pub(crate) fn check_seeds(name: &str, seeds: Seeds, property: impl Fn(u64) -> Verdict) {
    let seeds = seeds.list();
    let mut failures = Vec::new();
    for &seed in &seeds {
        let verdict = catch_unwind(AssertUnwindSafe(|| property(seed)))
            .unwrap_or_else(|panic| Err(format!("panicked: {}", panic_message(&*panic))));
        if let Err(e) = verdict {
            failures.push((seed, e));
        }
    }
    if failures.is_empty() {
        return;
    }
    let mut report = format!(
        "{name}: {} of {} seeds failed\n",
        failures.len(),
        seeds.len()
    );
    for (seed, e) in failures.iter().take(12) {
        report.push_str(&format!(
            "  seed {seed}: {e}\n    reproduce: MABEAM_SIM_SEED={seed} cargo test -p mabeam-consensus --test simulation {name}\n"
        ));
    }
    if failures.len() > 12 {
        let rest: Vec<String> = failures[12..].iter().map(|(s, _)| s.to_string()).collect();
        report.push_str(&format!("  other failing seeds: {}\n", rest.join(" ")));
    }
    panic!("{report}");
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "non-string panic".to_owned())
}
