//! A deterministic simulation harness for `mabeam-consensus`, in the style of raft-rs's test
//! harness and quinn-proto's test `Pair`: one coordinator [`Session`](mabeam_consensus::Session)
//! and N simulated agents on an in-process network with a virtual clock, seeded latency,
//! loss, duplication, reordering and partitions. The same seed replays the same run exactly.
//!
//! - [`scenario`]: a run's whole setup, derived from a seed within a property's [`Knobs`].
//! - [`agent`]: honest agents and the attackers of the fault model.
//! - [`net`]: the network and its event queue.
//! - [`world`]: runs a scenario and records a [`Report`].
//! - [`check`]: the properties, as checks over a scenario and its report.
//! - [`seeds`]: runs a property over many seeds, naming failing seeds.
//! - [`manual`]: hand-driven sessions and replicas for minimal reproductions.
//! - [`keys`]: the agents' identities and keys.
//! - [`campaign`]: many runs across algorithms × attacks × networks, summarised in a table.

pub(crate) mod agent;
pub(crate) mod campaign;
pub(crate) mod check;
pub(crate) mod keys;
pub(crate) mod manual;
pub(crate) mod net;
pub(crate) mod scenario;
pub(crate) mod seeds;
pub(crate) mod world;

pub(crate) use scenario::{Algo, Attack, FaultClass, HonestPrefs, Knobs, NetKind, Scenario};
pub(crate) use seeds::{check_seeds, Seeds};
pub(crate) use world::{simulate, Report};
