//! Example agents and scenarios run against a live mabeam stack.
//!
//! The scenarios of the validation framework ([`scenarios`]) start their own agents in this
//! process with the SDK, drive the services over NATS (tasks through JetStream, faults
//! through the fault-injector), check their requirements and report figures
//! ([`report::ScenarioReport`]). [`validate`] runs them all and judges the success criteria.
//! The binary is `mabeam-scenario`.

mod error;
pub mod fleet;
pub mod report;
pub mod scenarios;
pub mod validate;

pub use error::ScenarioError;
