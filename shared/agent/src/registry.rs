//! Calls to the registry: signed register / heartbeat / deregister requests and their
//! replies (see the contract in the README: session `registry`, sequence = send time in µs),
//! and the swarm helpers' member queries.

use std::time::Duration;

use bytes::Bytes;
use mabeam_protocol::{
    codec::{encode, ContentType, EncodeError, Message},
    registry::registry_header,
    AgentId, AgentKeypair, ErrorCode, Limits, SignedEnvelope,
};
use mabeam_runtime::reply;

/// Why a registry call failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallError {
    /// The registry answered with an error.
    Refused { code: ErrorCode, message: String },
    /// No registry answered (none running, timeout, connection lost).
    Unreachable(String),
    /// The reply was neither an acknowledgement nor an error.
    BadReply(String),
}

impl CallError {
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Refused { code, .. } => code.as_str(),
            Self::Unreachable(_) => "unreachable",
            Self::BadReply(_) => "bad_reply",
        }
    }

    /// Refusals that retrying the same request cannot fix. Signature and authorisation
    /// refusals are retried: they also cover a sequence the registry saw as a replay after
    /// a clock step, which a later send time fixes.
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(
            self,
            Self::Refused {
                code: ErrorCode::KeyMismatch
                    | ErrorCode::MalformedMessage
                    | ErrorCode::UnsupportedVersion
                    | ErrorCode::UnsupportedContentType
                    | ErrorCode::TooLarge
                    | ErrorCode::InvalidParams,
                ..
            }
        )
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused { code, message } => write!(f, "{}: {message}", code.as_str()),
            Self::Unreachable(e) => write!(f, "registry unreachable: {e}"),
            Self::BadReply(e) => write!(f, "unexpected registry reply: {e}"),
        }
    }
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The next sequence number: the send time in µs, but always above the last one, so
/// sequences keep increasing across restarts and within one microsecond.
pub(crate) fn next_sequence(last: &mut u64, now_us: u64) -> u64 {
    let next = now_us.max(last.saturating_add(1));
    *last = next;
    next
}

/// A registry request body: `body` signed in a registry envelope.
pub(crate) fn signed_request<T: Message>(
    key: &AgentKeypair,
    agent: &AgentId,
    last_sequence: &mut u64,
    body: &T,
) -> Result<Bytes, EncodeError> {
    let sequence = next_sequence(last_sequence, now_us());
    let header = registry_header(agent, mabeam_runtime::now_ms(), sequence);
    let envelope = SignedEnvelope::seal(key, header, body)?;
    Ok(encode(ContentType::MsgPack, &envelope)?.into())
}

/// Sends a request (a signed envelope, or a plain query) and reads the answer: a
/// `RegistryAck`, or for queries an `AgentList`.
pub(crate) async fn call<A: Message>(
    client: &async_nats::Client,
    subject: &'static str,
    body: Bytes,
    timeout: Duration,
    limits: Limits,
) -> Result<A, CallError> {
    let request = async_nats::Request::new()
        .headers(reply::headers_for(ContentType::MsgPack))
        .payload(body)
        .timeout(Some(timeout));
    let message = client
        .send_request(subject, request)
        .await
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
    if let Some(error) = reply::as_error(message.headers.as_ref(), &message.payload) {
        return Err(CallError::Refused {
            code: error.code,
            message: error.message,
        });
    }
    reply::decode_message::<A>(message.headers.as_ref(), &message.payload, &limits)
        .map(|(answer, _)| answer)
        .map_err(|e| CallError::BadReply(e.to_string()))
}

#[cfg(test)]
mod tests {
    use mabeam_protocol::{codec::decode, registry::Heartbeat};

    use super::*;

    #[test]
    fn sequences_strictly_increase_even_when_the_clock_does_not() {
        let mut last = 0;
        assert_eq!(next_sequence(&mut last, 100), 100);
        assert_eq!(next_sequence(&mut last, 100), 101);
        assert_eq!(next_sequence(&mut last, 50), 102, "clock stepped back");
        assert_eq!(next_sequence(&mut last, 500), 500);
    }

    #[test]
    fn requests_are_registry_envelopes_signed_by_the_agent() {
        let key = crate::keys::derive(b"s", &AgentId::new("a").unwrap());
        let agent = AgentId::new("a").unwrap();
        let mut last = 0;
        let hb = Heartbeat {
            v: 1,
            agent_id: agent.clone(),
            load: 1.0,
            capacity: 2.0,
        };
        let first = signed_request(&key, &agent, &mut last, &hb).unwrap();
        let second = signed_request(&key, &agent, &mut last, &hb).unwrap();
        let limits = Limits::default();
        let a: SignedEnvelope = decode(ContentType::MsgPack, &first, &limits).unwrap();
        let b: SignedEnvelope = decode(ContentType::MsgPack, &second, &limits).unwrap();
        a.verify(&key.public_key()).unwrap();
        assert_eq!(
            a.session.as_str(),
            mabeam_protocol::registry::REGISTRY_SESSION
        );
        assert_eq!(a.sender, agent);
        assert!(b.sequence > a.sequence);
        assert_eq!(a.open::<Heartbeat>(&limits).unwrap(), hb);
    }

    #[test]
    fn only_unfixable_refusals_are_permanent() {
        let refused = |code| CallError::Refused {
            code,
            message: String::new(),
        };
        assert!(refused(ErrorCode::KeyMismatch).is_permanent());
        assert!(!refused(ErrorCode::Unavailable).is_permanent());
        assert!(!refused(ErrorCode::InvalidSignature).is_permanent());
        assert!(!CallError::Unreachable("x".into()).is_permanent());
    }
}
