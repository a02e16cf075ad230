//! Typed events: one call logs the event, counts it and publishes it on
//! `mabeam.events.<service>.<kind>` for the telemetry service.

use mabeam_protocol::{
    codec::{encode, ContentType},
    subjects,
    telemetry::{EventKind, Service, TelemetryEvent},
    PROTOCOL_VERSION,
};

#[derive(Debug, Clone)]
pub struct EventSink {
    client: async_nats::Client,
    service: Service,
    instance: String,
}

impl EventSink {
    pub fn new(client: async_nats::Client, service: Service, instance: impl Into<String>) -> Self {
        Self {
            client,
            service,
            instance: instance.into(),
        }
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    pub async fn emit(&self, event: EventKind) {
        let kind = event.name();
        metrics::counter!("mabeam_events_emitted_total", "kind" => kind).increment(1);
        let message = TelemetryEvent {
            v: PROTOCOL_VERSION,
            service: self.service,
            instance: self.instance.clone(),
            at_ms: crate::now_ms(),
            event,
        };
        match serde_json::to_string(&message.event) {
            Ok(fields) => tracing::info!(event = kind, fields = %fields, "event"),
            Err(_) => tracing::info!(event = kind, "event"),
        }
        let body = match encode(ContentType::MsgPack, &message) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot encode event");
                return;
            }
        };
        let subject = subjects::event(self.service, kind);
        if let Err(e) = self.client.publish(subject, body.into()).await {
            metrics::counter!("mabeam_events_dropped_total", "kind" => kind).increment(1);
            tracing::warn!(error = %e, event = kind, "cannot publish event");
        }
    }
}
