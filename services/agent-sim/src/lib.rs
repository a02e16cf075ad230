//! Simulated agent fleet: N agents with opinion profiles and Byzantine behaviours in one process
