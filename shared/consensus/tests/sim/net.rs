//! The simulated network: a virtual clock and a priority queue of in-flight messages keyed by
//! (delivery time, sequence number), with latency (base + jitter, so messages reorder), loss,
//! duplication and partitions that start, heal and flap. Everything random comes from one
//! seeded ChaCha generator, so a seed replays exactly.

use std::collections::BTreeMap;

use rand::Rng as _;
use rand_chacha::{rand_core::SeedableRng, ChaCha8Rng};

/// A node of the simulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Node {
    Coordinator,
    Agent(usize),
}

/// Nodes in different groups cannot reach each other while the partition is active; nodes in
/// no group reach everyone.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Partition {
    pub groups: Vec<Vec<Node>>,
    /// Start, relative to the session start.
    pub from_ms: u64,
    /// Heal time, relative to the session start; never healed when `None`.
    pub heal_ms: Option<u64>,
    /// Intermittent: active for `on` ms, then inactive for `off` ms, repeatedly.
    pub flap: Option<(u64, u64)>,
}

impl Partition {
    fn active(&self, rel_ms: u64) -> bool {
        if rel_ms < self.from_ms || self.heal_ms.is_some_and(|h| rel_ms >= h) {
            return false;
        }
        match self.flap {
            Some((on, off)) => (rel_ms - self.from_ms) % (on + off).max(1) < on,
            None => true,
        }
    }

    fn group_of(&self, node: Node) -> Option<usize> {
        self.groups.iter().position(|g| g.contains(&node))
    }

    fn separates(&self, a: Node, b: Node) -> bool {
        matches!((self.group_of(a), self.group_of(b)), (Some(x), Some(y)) if x != y)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct NetConfig {
    /// Least one-way latency (at least 1 ms is used).
    pub base_ms: u64,
    /// Extra latency drawn uniformly from `0..=jitter_ms` per message.
    pub jitter_ms: u64,
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice (the copy comes later).
    pub dup: f64,
    pub partitions: Vec<Partition>,
}

impl NetConfig {
    /// Every message arrives (possibly late and out of order).
    pub(crate) fn is_lossless(&self) -> bool {
        self.drop == 0.0 && self.partitions.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NetStats {
    pub sent: u64,
    pub dropped: u64,
    pub partitioned: u64,
    pub duplicated: u64,
}

#[derive(Debug)]
pub(crate) enum Event<M> {
    Deliver {
        to: Node,
        msg: M,
    },
    /// An agent's own timer (timing attacks, delayed second votes).
    Wake {
        agent: usize,
        token: u64,
    },
    /// The coordinator asked for `handle_timeout` at this time.
    Timer,
}

#[derive(Debug)]
pub(crate) struct Network<M> {
    cfg: NetConfig,
    rng: ChaCha8Rng,
    start_ms: u64,
    queue: BTreeMap<(u64, u64), Event<M>>,
    seq: u64,
    pub stats: NetStats,
}

impl<M: Clone> Network<M> {
    pub(crate) fn new(cfg: NetConfig, seed: u64, start_ms: u64) -> Self {
        Self {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_7477_6f72_6b21),
            start_ms,
            queue: BTreeMap::new(),
            seq: 0,
            stats: NetStats::default(),
        }
    }

    pub(crate) fn schedule(&mut self, at_ms: u64, event: Event<M>) {
        self.seq += 1;
        self.queue.insert((at_ms, self.seq), event);
    }

    fn blocked(&self, now: u64, from: Node, to: Node) -> bool {
        let rel = now.saturating_sub(self.start_ms);
        self.cfg
            .partitions
            .iter()
            .any(|p| p.active(rel) && p.separates(from, to))
    }

    fn latency(&mut self) -> u64 {
        self.cfg.base_ms.max(1) + self.rng.gen_range(0..=self.cfg.jitter_ms)
    }

    /// Sends `msg` at `now` after the sender's own `delay_ms`: partition and loss are decided
    /// when it leaves the sender.
    pub(crate) fn send(&mut self, now: u64, from: Node, to: Node, msg: M, delay_ms: u64) {
        self.stats.sent += 1;
        let leaves = now + delay_ms;
        if self.blocked(leaves, from, to) {
            self.stats.partitioned += 1;
            return;
        }
        if self.cfg.drop > 0.0 && self.rng.gen_bool(self.cfg.drop.min(1.0)) {
            self.stats.dropped += 1;
            return;
        }
        if self.cfg.dup > 0.0 && self.rng.gen_bool(self.cfg.dup.min(1.0)) {
            self.stats.duplicated += 1;
            let later = leaves + self.latency() + self.latency();
            self.schedule(
                later,
                Event::Deliver {
                    to,
                    msg: msg.clone(),
                },
            );
        }
        let at = leaves + self.latency();
        self.schedule(at, Event::Deliver { to, msg });
    }

    pub(crate) fn next_time(&self) -> Option<u64> {
        self.queue.keys().next().map(|&(t, _)| t)
    }

    /// Removes and returns every event due at `at_ms`, in the order they were scheduled.
    pub(crate) fn pop_due(&mut self, at_ms: u64) -> Vec<Event<M>> {
        let mut due = Vec::new();
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 != at_ms {
                break;
            }
            due.push(entry.remove());
        }
        due
    }
}
