//! Rate limits on input subjects: token buckets, one per key (an input subject, or a sender
//! where the subject names it, like an agent's vote subject). Work refused here costs a hash
//! lookup, so a flood cannot turn into signature checks, Redis writes or log lines.
//!
//! Refused messages are counted in `mabeam_messages_rate_limited_total{input}`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

/// Messages per second and the burst allowed above that rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: f64,
}

impl Rate {
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refreshed: Instant,
}

/// Token buckets by key, at most `max_keys` of them (idle full buckets are dropped first; a
/// flood of fresh keys cannot grow memory without bound).
#[derive(Debug)]
pub struct RateLimiter {
    rate: Option<Rate>,
    max_keys: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `None` admits everything.
    pub fn new(rate: Option<Rate>, max_keys: usize) -> Self {
        Self {
            rate,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether one more message under `key` fits, at `now`.
    pub fn admit_at(&self, key: &str, now: Instant) -> bool {
        let Some(rate) = self.rate else {
            return true;
        };
        let Ok(mut buckets) = self.buckets.lock() else {
            return true;
        };
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            // Buckets refilled to the brim carry no state worth keeping.
            let full_after = Duration::from_secs_f64(rate.burst / rate.per_second.max(1e-9));
            buckets.retain(|_, b| now.saturating_duration_since(b.refreshed) < full_after);
            if buckets.len() >= self.max_keys {
                return false;
            }
        }
        // Looked up before inserting: admit runs per vote, and the key is owned only on a miss.
        let bucket = match buckets.get_mut(key) {
            Some(bucket) => bucket,
            None => buckets.entry(key.to_owned()).or_insert(Bucket {
                tokens: rate.burst,
                refreshed: now,
            }),
        };
        let elapsed = now
            .saturating_duration_since(bucket.refreshed)
            .as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate.per_second).min(rate.burst);
        bucket.refreshed = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// [`Self::admit_at`] now; a refusal is counted under `input` (a bounded label: the
    /// endpoint or subject pattern, never the key).
    pub fn admit(&self, input: &'static str, key: &str) -> bool {
        let admitted = self.admit_at(key, Instant::now());
        if !admitted {
            metrics::counter!("mabeam_messages_rate_limited_total", "input" => input).increment(1);
        }
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_refills() {
        let limiter = RateLimiter::new(Some(Rate::new(10, 5)), 100);
        let t0 = Instant::now();
        let passed = (0..20).filter(|_| limiter.admit_at("k", t0)).count();
        assert_eq!(passed, 5, "the burst, no more");
        // 10 per second: 100 ms later exactly one more.
        let t1 = t0 + Duration::from_millis(100);
        assert!(limiter.admit_at("k", t1));
        assert!(!limiter.admit_at("k", t1));
        // Refill stops at the burst.
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..20).filter(|_| limiter.admit_at("k", t2)).count(), 5);
    }

    #[test]
    fn keys_are_limited_separately() {
        let limiter = RateLimiter::new(Some(Rate::new(1, 1)), 100);
        let t = Instant::now();
        assert!(limiter.admit_at("a", t));
        assert!(!limiter.admit_at("a", t));
        assert!(limiter.admit_at("b", t));
    }

    #[test]
    fn no_rate_admits_everything() {
        let limiter = RateLimiter::new(None, 1);
        let t = Instant::now();
        assert!((0..10_000).all(|i| limiter.admit_at(&i.to_string(), t)));
    }

    #[test]
    fn key_count_is_bounded_and_idle_buckets_make_room() {
        let limiter = RateLimiter::new(Some(Rate::new(10, 2)), 3);
        let t = Instant::now();
        for k in ["a", "b", "c"] {
            assert!(limiter.admit_at(k, t));
        }
        assert!(!limiter.admit_at("d", t), "table full of active buckets");
        // After the burst has refilled (200 ms), the old buckets are idle and go.
        assert!(limiter.admit_at("d", t + Duration::from_millis(250)));
        assert!(limiter.buckets.lock().unwrap().len() <= 3);
    }
}
