//! Agent registry service: registration bound to keys, heartbeats, liveness, queries, quarantine
