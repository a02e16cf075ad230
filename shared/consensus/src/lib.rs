//! The coordination core of mabeam, pure and deterministic.
//!
//! Like quinn-proto, nothing here does I/O or reads a clock: callers feed messages and the
//! current time in and drain effects out (messages to send, timers to arm, decisions). The
//! services are thin async shells around it; the simulation tests drive it with a virtual
//! clock and a seeded network. Randomness (tie-breaks, random elections) comes from a ChaCha
//! generator seeded per session, so replaying a session's inputs replays its decisions.

pub mod algorithm;
pub mod electorate;
pub mod error;
pub mod replica;
pub mod session;
pub mod tally;
pub mod weights;

pub use algorithm::{AlgorithmSpec, ALGORITHMS};
pub use electorate::{Electorate, Participant};
pub use error::ConfigError;
pub use session::{Decision, Effect, IntakeSettings, Session, SessionInit};
