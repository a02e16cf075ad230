//! Heartbeat TTLs: every sweep interval, the replica holding the sweep lease moves silent
//! agents along the lifecycle (suspect, failed) and announces each move; every replica
//! refreshes its `mabeam_registry_agents{status}` gauge.
//!
//! The lease keeps one replica sweeping at a time; the compare-and-set writes keep a
//! transition from happening (and being announced) twice even if two sweeps overlap, e.g.
//! when the lease expired under a slow sweep.

use std::{collections::HashSet, time::Duration};

use futures::StreamExt as _;
use mabeam_runtime::{now_ms, Shutdown};
use tokio::time::Instant;

use crate::{
    error::StoreError,
    lifecycle::{self, timed_transition},
    service::Registry,
    store::{Committed, Seen, StoredAgent},
};

/// Sweep intervals the lease lasts without renewal: a dead sweeper is replaced after this.
const LEASE_INTERVALS: u32 = 3;
/// Compare-and-set attempts per agent per sweep; a lost race is retried on the next sweep.
const MAX_ATTEMPTS: usize = 4;
/// Agents moved concurrently within one sweep.
const EXPIRIES_IN_FLIGHT: usize = 32;

/// A lease call slower than this was stuck behind a stalled store even if it succeeded in
/// the end: heartbeats were stuck behind it too.
const STALLED_CALL: Duration = Duration::from_secs(1);

pub(crate) async fn run(
    registry: &Registry,
    interval: Duration,
    owner: String,
    shutdown: Shutdown,
) {
    let lease_ms = (interval * LEASE_INTERVALS).as_millis() as u64;
    let mut store = StoreWatch::new(Duration::from_millis(registry.liveness.suspect_after_ms));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => break,
        }
        let asked = Instant::now();
        let lease = registry.store.acquire_sweep_lease(&owner, lease_ms).await;
        let answered = Instant::now();
        let trouble = match lease {
            Err(e) => {
                tracing::warn!(error = %e, "cannot take the sweep lease");
                true
            }
            Ok(_) if answered - asked >= STALLED_CALL => {
                tracing::warn!(
                    waited_ms = (answered - asked).as_millis() as u64,
                    "the store stalled; judging heartbeat silence later"
                );
                true
            }
            Ok(held) => {
                let may_judge = store.answered(answered);
                if held && may_judge {
                    match registry.sweep(now_ms()).await {
                        Ok(()) => false,
                        Err(e) => {
                            tracing::warn!(error = %e, "sweep failed; retrying next interval");
                            true
                        }
                    }
                } else {
                    false
                }
            }
        };
        if trouble {
            store.trouble();
        }
        refresh_gauges(registry).await;
    }
    // Hand the lease over at once rather than after it expires.
    if let Err(e) = registry.store.release_sweep_lease(&owner).await {
        tracing::warn!(error = %e, "cannot release the sweep lease");
    }
}

/// Whether heartbeat silence may be judged. Heartbeats sent while the store was failing or
/// stalled were lost on the registry's side, not the agents': after trouble, silence is judged
/// only once the store has answered again for a whole grace period (a suspect TTL), so agents
/// have had time to be heard. The period starts when the store answers, not when it last
/// failed: a call can hang through most of an outage and succeed right after it.
#[derive(Debug)]
struct StoreWatch {
    grace: Duration,
    troubled: bool,
    judge_from: Option<Instant>,
}

impl StoreWatch {
    fn new(grace: Duration) -> Self {
        Self {
            grace,
            troubled: false,
            judge_from: None,
        }
    }

    fn trouble(&mut self) {
        self.troubled = true;
        self.judge_from = None;
    }

    /// The store answered at `now`: whether silence may be judged.
    fn answered(&mut self, now: Instant) -> bool {
        if std::mem::take(&mut self.troubled) {
            self.judge_from = Some(now + self.grace);
        }
        self.judge_from.is_none_or(|from| now >= from)
    }
}

async fn refresh_gauges(registry: &Registry) {
    match registry.store.status_counts().await {
        Ok(counts) => {
            for (status, n) in counts {
                metrics::gauge!("mabeam_registry_agents", "status" => status.as_str())
                    .set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count agents by status"),
    }
}

impl Registry {
    /// Applies the TTL transitions due at `now_ms`.
    pub(crate) async fn sweep(&self, now_ms: u64) -> Result<(), StoreError> {
        let due = now_ms.saturating_sub(self.liveness.suspect_after_ms);
        let ids = self.store.silent_since(due).await?;
        let agents = self.store.agents(&ids).await?;
        let present: HashSet<&str> = agents.iter().map(|a| a.info.agent_id.as_str()).collect();
        // Entries without a record (removed behind the registry's back) are dropped, unless
        // the id registered again meanwhile and was seen after `due`.
        for id in ids.iter().filter(|id| !present.contains(id.as_str())) {
            self.store.forget_seen(id, due).await?;
        }
        // Concurrent, so a fleet going silent at once is swept in a few round trips' time.
        let failures: Vec<StoreError> = futures::stream::iter(agents)
            .map(|agent| self.expire(agent, now_ms))
            .buffer_unordered(EXPIRIES_IN_FLIGHT)
            .filter_map(|r| async move { r.err() })
            .collect()
            .await;
        match failures.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn expire(&self, mut agent: StoredAgent, now_ms: u64) -> Result<(), StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let from = agent.info.status;
            // An agent time can no longer change only leaves the work list.
            let (to, seen) = if lifecycle::is_timed(from) {
                match timed_transition(from, agent.last_seen_ms(), now_ms, &self.liveness) {
                    Some(to) if lifecycle::is_timed(to) => (to, Seen::Keep),
                    Some(to) => (to, Seen::Forget),
                    None => return Ok(()),
                }
            } else {
                (from, Seen::Forget)
            };
            let mut next = agent.clone();
            next.info.status = to;
            match self
                .store
                .put(Some(&agent), &next, None, None, seen)
                .await?
            {
                Committed::Done => {
                    self.announce(&agent.info.agent_id, Some(from), to).await;
                    return Ok(());
                }
                // A heartbeat (or another sweeper) got there first: decide on what is now.
                Committed::Conflict => {
                    match self.store.snapshot(&agent.info.agent_id).await?.agent {
                        Some(current) => agent = current,
                        None => return Ok(()),
                    }
                }
                Committed::Replay => return Err(StoreError::Script("replay".into())),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_millis(1500);

    #[test]
    fn silence_is_judged_while_the_store_keeps_answering() {
        let mut store = StoreWatch::new(GRACE);
        let t0 = Instant::now();
        assert!(store.answered(t0));
        assert!(store.answered(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn after_trouble_the_grace_runs_from_the_first_answer_not_the_last_failure() {
        let mut store = StoreWatch::new(GRACE);
        let t0 = Instant::now();
        store.trouble();
        // The store comes back long after it last failed: a grace counted from the failure
        // would already be over here, and every agent would be judged on lost heartbeats.
        let back = t0 + Duration::from_secs(10);
        assert!(!store.answered(back));
        assert!(!store.answered(back + GRACE - Duration::from_millis(1)));
        assert!(store.answered(back + GRACE));
        assert!(store.answered(back + GRACE * 4));
    }

    #[test]
    fn trouble_during_the_grace_starts_it_again() {
        let mut store = StoreWatch::new(GRACE);
        let t0 = Instant::now();
        store.trouble();
        assert!(!store.answered(t0));
        store.trouble();
        let back = t0 + GRACE;
        assert!(!store.answered(back));
        assert!(store.answered(back + GRACE));
    }
}
