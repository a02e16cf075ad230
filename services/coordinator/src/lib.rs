//! Coordinator service: task intake from JetStream, sessions over NATS, state and leases in Redis
