//! Telemetry service: event ingest, audit trail in Redis Streams, aggregate metrics
