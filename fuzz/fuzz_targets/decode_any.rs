//! Feeds arbitrary bytes to the decoder of every protocol message.
//!
//! The first byte picks the content type (even: MessagePack, odd: JSON); the rest is the
//! body. Decoding must return `Ok` or a typed `DecodeError`, never panic, abort or hang.
//! Envelopes that decode are also verified against a fixed key and opened as ballots.
//!
//! Run with `cargo +nightly fuzz run decode_any` from the repository root.

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mabeam_protocol::{
    decode,
    fault::{AgentFaultCommand, FaultHeal, FaultList, FaultSpec},
    registry::{AgentList, AgentQuery, Deregistration, Heartbeat, Registration, RegistryAck},
    session::{Ballot, EquivocationEvidence, Proposal, SessionClosed, SessionQuery},
    task::TaskSubmission,
    telemetry::TelemetryEvent,
    AgentKeypair, ContentType, ErrorReply, Limits, Message, PublicKey, SignedEnvelope, TaskResult,
};

/// The key envelopes are checked against; the fuzzer cannot forge its signatures, but it
/// drives `verify` through every length and encoding of key and signature fields.
static KEY: LazyLock<PublicKey> =
    LazyLock::new(|| AgentKeypair::from_secret_bytes([7; 32]).public_key());

fn check<T: Message>(content_type: ContentType, body: &[u8], limits: &Limits) -> Option<T> {
    let message = decode::<T>(content_type, body, limits).ok()?;
    // `decode` promises to return only messages of this build's version.
    assert_eq!(message.version(), mabeam_protocol::PROTOCOL_VERSION);
    Some(message)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = if selector % 2 == 0 {
        ContentType::MsgPack
    } else {
        ContentType::Json
    };
    let limits = Limits::default();

    check::<TaskSubmission>(content_type, body, &limits);
    check::<Ballot>(content_type, body, &limits);
    check::<Proposal>(content_type, body, &limits);
    check::<SessionClosed>(content_type, body, &limits);
    check::<SessionQuery>(content_type, body, &limits);
    check::<ErrorReply>(content_type, body, &limits);
    check::<Registration>(content_type, body, &limits);
    check::<Heartbeat>(content_type, body, &limits);
    check::<Deregistration>(content_type, body, &limits);
    check::<AgentQuery>(content_type, body, &limits);
    check::<AgentList>(content_type, body, &limits);
    check::<RegistryAck>(content_type, body, &limits);
    check::<FaultSpec>(content_type, body, &limits);
    check::<FaultHeal>(content_type, body, &limits);
    check::<FaultList>(content_type, body, &limits);
    check::<AgentFaultCommand>(content_type, body, &limits);
    check::<TelemetryEvent>(content_type, body, &limits);

    if let Some(evidence) = check::<EquivocationEvidence>(content_type, body, &limits) {
        let _ = evidence.verify(&KEY, &limits);
    }
    if let Some(result) = check::<TaskResult>(content_type, body, &limits) {
        if let Some(certificate) = result.certificate {
            let _ = certificate.verify(&limits);
        }
    }
    if let Some(envelope) = check::<SignedEnvelope>(content_type, body, &limits) {
        let _ = envelope.verify(&KEY);
        let _ = envelope.open::<Ballot>(&limits);
        let _ = envelope.header();
    }
});
