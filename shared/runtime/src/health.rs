//! Readiness: a service is ready while every dependency it registered is reachable and it is
//! not shutting down. Each dependency also shows as `mabeam_dependency_up{dependency}`.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

#[derive(Debug, Clone, Default)]
pub struct Readiness {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    checks: std::sync::RwLock<BTreeMap<&'static str, Arc<AtomicBool>>>,
    draining: AtomicBool,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a dependency, initially down.
    pub fn register(&self, name: &'static str) -> Dependency {
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut checks) = self.inner.checks.write() {
            checks.insert(name, flag.clone());
        }
        metrics::gauge!("mabeam_dependency_up", "dependency" => name).set(0.0);
        Dependency { name, flag }
    }

    pub fn set_draining(&self) {
        self.inner.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        !self.inner.draining.load(Ordering::SeqCst) && self.checks().values().all(|ok| *ok)
    }

    pub fn is_draining(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    pub fn checks(&self) -> BTreeMap<&'static str, bool> {
        self.inner
            .checks
            .read()
            .map(|c| {
                c.iter()
                    .map(|(k, v)| (*k, v.load(Ordering::SeqCst)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The handle a connection uses to report its dependency's state.
#[derive(Debug, Clone)]
pub struct Dependency {
    name: &'static str,
    flag: Arc<AtomicBool>,
}

impl Dependency {
    pub fn set(&self, up: bool) {
        let was = self.flag.swap(up, Ordering::SeqCst);
        if was != up {
            metrics::gauge!("mabeam_dependency_up", "dependency" => self.name).set(if up {
                1.0
            } else {
                0.0
            });
            if up {
                tracing::info!(dependency = self.name, "dependency reachable");
            } else {
                tracing::warn!(dependency = self.name, "dependency unreachable");
            }
        }
    }

    pub fn is_up(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_dependency_is_up_and_not_draining() {
        let r = Readiness::new();
        assert!(r.is_ready(), "no dependencies: ready");
        let nats = r.register("nats");
        let redis = r.register("redis");
        assert!(!r.is_ready());
        nats.set(true);
        assert!(!r.is_ready());
        redis.set(true);
        assert!(r.is_ready());
        redis.set(false);
        assert!(!r.is_ready());
        redis.set(true);
        r.set_draining();
        assert!(!r.is_ready());
    }
}
