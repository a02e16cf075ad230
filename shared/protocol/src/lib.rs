//! The wire protocol of mabeam.
//!
//! Every message the services and agents exchange is a typed struct here with a `v`
//! (protocol version) field. Bytes on the wire are MessagePack with named fields
//! (`rmp_serde::to_vec_named`), except where a human or another language publishes (task
//! intake), where JSON is accepted too, chosen by the `Content-Type` header.
//!
//! Decoding never panics: oversized, malformed, truncated and wrong-version input all map to
//! [`DecodeError`]. Agent messages travel in a [`SignedEnvelope`] (ed25519, strict
//! verification). NATS subjects are built only by the functions in [`subjects`].

pub mod codec;
pub mod error;
pub mod fault;
pub mod group;
pub mod ids;
pub mod registry;
pub mod result;
pub mod session;
pub mod signing;
pub mod subjects;
pub mod task;
pub mod telemetry;

pub use codec::{decode, encode, ContentType, DecodeError, EncodeError, Limits, Message};
pub use error::{ErrorCode, ErrorReply};
pub use ids::{AgentId, IdError, SessionId, TaskId};
pub use result::{Certificate, Outcome, Status, TaskResult};
pub use signing::{
    verify_batch, AgentKeypair, EnvelopeHeader, KeyError, PublicKey, SignatureError, SignedEnvelope,
};

/// The protocol version this crate speaks. Decoders refuse any other.
pub const PROTOCOL_VERSION: u16 = 1;

/// Serde default for the `v` field, so JSON publishers may omit it.
pub(crate) fn current_version() -> u16 {
    PROTOCOL_VERSION
}
