//! Signed envelopes for agent messages.
//!
//! An agent signs, with ed25519, the tuple (sender, session, round, sequence, timestamp,
//! SHA-256 of the payload bytes). The payload is carried as opaque bytes, so verification
//! never depends on re-encoding a value the same way twice.

use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{
    codec::{decode, encode, impl_message, ContentType, DecodeError, EncodeError, Limits, Message},
    current_version, AgentId, SessionId,
};

/// Domain separation: a signature over mabeam envelopes can never be replayed as anything else.
const SIGNING_CONTEXT: &[u8] = b"mabeam/envelope/v1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is neither 64 hex characters nor base64 of 32 bytes")]
    Encoding,
    #[error("key decodes to {0} bytes; ed25519 keys are 32 bytes")]
    Length(usize),
    #[error("bytes are not a valid ed25519 public key (not a curve point)")]
    InvalidPoint,
    #[error("public key has small order; such keys let one signature verify for many messages")]
    WeakKey,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature of {sender} does not verify")]
    Invalid { sender: AgentId },
    #[error("signature field is {0} bytes; ed25519 signatures are 64 bytes")]
    Length(usize),
    #[error("public key of {sender} is not a valid ed25519 point")]
    BadKey { sender: AgentId },
    #[error("batch of {0} signatures does not verify as a whole")]
    Batch(usize),
}

fn decode_key_text(text: &str) -> Result<[u8; 32], KeyError> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| KeyError::Encoding)?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text))
            .map_err(|_| KeyError::Encoding)?
    };
    let len = bytes.len();
    bytes.try_into().map_err(|_| KeyError::Length(len))
}

/// An ed25519 public key as it travels on the wire (32 raw bytes) and in configs (hex or base64).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "serde_bytes::ByteBuf", into = "serde_bytes::ByteBuf")]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Refuses non-points and small-order points, so that every key in the system is safe
    /// for batch verification (which, unlike `verify_strict`, does not check key order).
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::InvalidPoint)?;
        if key.is_weak() {
            return Err(KeyError::WeakKey);
        }
        Ok(Self(bytes))
    }

    /// Parses 64 hex characters or base64 (standard or URL-safe) of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        Self::from_bytes(decode_key_text(text)?)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    fn verifying_key(&self) -> Option<VerifyingKey> {
        VerifyingKey::from_bytes(&self.0).ok()
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl TryFrom<serde_bytes::ByteBuf> for PublicKey {
    type Error = KeyError;
    fn try_from(buf: serde_bytes::ByteBuf) -> Result<Self, KeyError> {
        let len = buf.len();
        let bytes: [u8; 32] = buf
            .into_vec()
            .try_into()
            .map_err(|_| KeyError::Length(len))?;
        Self::from_bytes(bytes)
    }
}

impl From<PublicKey> for serde_bytes::ByteBuf {
    fn from(key: PublicKey) -> Self {
        serde_bytes::ByteBuf::from(key.0.to_vec())
    }
}

/// An agent's signing key. The secret never appears in `Debug` output or logs.
#[derive(Clone)]
pub struct AgentKeypair {
    signing: SigningKey,
}

impl AgentKeypair {
    /// A key from 32 secret bytes (e.g. a seeded generator in simulations).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(&secret),
        }
    }

    /// Parses a secret key given as 64 hex characters or base64 of 32 bytes.
    pub fn parse_secret(text: &str) -> Result<Self, KeyError> {
        Ok(Self::from_secret_bytes(decode_key_text(text)?))
    }

    pub fn generate<R: rand_core::CryptoRngCore + ?Sized>(rng: &mut R) -> Self {
        Self {
            signing: SigningKey::generate(rng),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key().to_bytes())
    }

    /// The secret as hex, for writing a key file the agent reads back with `parse_secret`.
    pub fn secret_hex(&self) -> String {
        hex::encode(self.signing.to_bytes())
    }
}

impl std::fmt::Debug for AgentKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentKeypair")
            .field("public", &self.public_key())
            .finish_non_exhaustive()
    }
}

/// The header fields an envelope's signature covers besides the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader {
    pub sender: AgentId,
    pub session: SessionId,
    pub round: u32,
    /// Strictly increasing per sender; the receiver's replay window keys on it.
    pub sequence: u64,
    /// Sender's clock, Unix milliseconds; receivers bound it by a tolerance.
    pub timestamp_ms: u64,
}

/// A signed agent message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedEnvelope {
    #[serde(default = "current_version")]
    pub v: u16,
    pub sender: AgentId,
    pub session: SessionId,
    pub round: u32,
    pub sequence: u64,
    pub timestamp_ms: u64,
    /// The message body, MessagePack-encoded, exactly as signed.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl_message!(SignedEnvelope => "signed envelope");

impl std::fmt::Debug for SignedEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedEnvelope")
            .field("sender", &self.sender)
            .field("session", &self.session)
            .field("round", &self.round)
            .field("sequence", &self.sequence)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

fn signing_bytes(
    sender: &AgentId,
    session: &SessionId,
    round: u32,
    sequence: u64,
    timestamp_ms: u64,
    payload: &[u8],
) -> Vec<u8> {
    // Length-prefixed fields: no two different tuples share an encoding.
    let mut out = Vec::with_capacity(SIGNING_CONTEXT.len() + 2 * 8 + 64 + 32 + 20);
    out.extend_from_slice(SIGNING_CONTEXT);
    for field in [sender.as_str(), session.as_str()] {
        out.extend_from_slice(&(field.len() as u64).to_be_bytes());
        out.extend_from_slice(field.as_bytes());
    }
    out.extend_from_slice(&round.to_be_bytes());
    out.extend_from_slice(&sequence.to_be_bytes());
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out.extend_from_slice(&Sha256::digest(payload));
    out
}

impl SignedEnvelope {
    /// Encodes `body` as MessagePack and signs it with `key`.
    pub fn seal<T: Message>(
        key: &AgentKeypair,
        header: EnvelopeHeader,
        body: &T,
    ) -> Result<Self, EncodeError> {
        let payload = encode(ContentType::MsgPack, body)?;
        Ok(Self::sign_payload(key, header, payload))
    }

    /// Signs already-encoded payload bytes.
    pub fn sign_payload(key: &AgentKeypair, header: EnvelopeHeader, payload: Vec<u8>) -> Self {
        let EnvelopeHeader {
            sender,
            session,
            round,
            sequence,
            timestamp_ms,
        } = header;
        let message = signing_bytes(&sender, &session, round, sequence, timestamp_ms, &payload);
        let signature = key.signing.sign(&message).to_bytes().to_vec();
        Self {
            v: current_version(),
            sender,
            session,
            round,
            sequence,
            timestamp_ms,
            payload,
            signature,
        }
    }

    pub fn header(&self) -> EnvelopeHeader {
        EnvelopeHeader {
            sender: self.sender.clone(),
            session: self.session.clone(),
            round: self.round,
            sequence: self.sequence,
            timestamp_ms: self.timestamp_ms,
        }
    }

    fn signed_message(&self) -> Vec<u8> {
        signing_bytes(
            &self.sender,
            &self.session,
            self.round,
            self.sequence,
            self.timestamp_ms,
            &self.payload,
        )
    }

    fn signature(&self) -> Result<Signature, SignatureError> {
        let bytes: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| SignatureError::Length(self.signature.len()))?;
        Ok(Signature::from_bytes(&bytes))
    }

    /// Strict verification (rejects small-order keys and malleable signatures).
    pub fn verify(&self, key: &PublicKey) -> Result<(), SignatureError> {
        let signature = self.signature()?;
        let verifying = key.verifying_key().ok_or_else(|| SignatureError::BadKey {
            sender: self.sender.clone(),
        })?;
        verifying
            .verify_strict(&self.signed_message(), &signature)
            .map_err(|_| SignatureError::Invalid {
                sender: self.sender.clone(),
            })
    }

    /// Decodes the payload as `T`.
    pub fn open<T: Message>(&self, limits: &Limits) -> Result<T, DecodeError> {
        decode(ContentType::MsgPack, &self.payload, limits)
    }
}

/// Verifies many envelopes at once, which costs about half of verifying them one by one.
///
/// On failure the batch says nothing about which envelope is bad; callers that need to know
/// fall back to [`SignedEnvelope::verify`] per envelope. Batch verification does not check
/// key order as `verify_strict` does; [`PublicKey`] refuses small-order keys on construction.
pub fn verify_batch(items: &[(&SignedEnvelope, &PublicKey)]) -> Result<(), SignatureError> {
    let mut messages = Vec::with_capacity(items.len());
    let mut signatures = Vec::with_capacity(items.len());
    let mut keys = Vec::with_capacity(items.len());
    for (envelope, key) in items {
        signatures.push(envelope.signature()?);
        keys.push(key.verifying_key().ok_or_else(|| SignatureError::BadKey {
            sender: envelope.sender.clone(),
        })?);
        messages.push(envelope.signed_message());
    }
    let message_refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    ed25519_dalek::verify_batch(&message_refs, &signatures, &keys)
        .map_err(|_| SignatureError::Batch(items.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Ballot, Phase, VoteValue};

    fn keypair(seed: u8) -> AgentKeypair {
        AgentKeypair::from_secret_bytes([seed; 32])
    }

    fn header(sender: &str, seq: u64) -> EnvelopeHeader {
        EnvelopeHeader {
            sender: AgentId::new(sender).unwrap(),
            session: SessionId::new("s1").unwrap(),
            round: 1,
            sequence: seq,
            timestamp_ms: 1_700_000_000_000,
        }
    }

    fn ballot(choice: &str) -> Ballot {
        Ballot::new(Phase::Vote, VoteValue::Choice(choice.into()), 0.9)
    }

    #[test]
    fn sealed_envelope_verifies_and_opens() {
        let key = keypair(1);
        let env = SignedEnvelope::seal(&key, header("a", 1), &ballot("x")).unwrap();
        env.verify(&key.public_key()).unwrap();
        let body: Ballot = env.open(&Limits::default()).unwrap();
        assert_eq!(body.value, VoteValue::Choice("x".into()));
    }

    #[test]
    fn any_changed_field_breaks_the_signature() {
        let key = keypair(1);
        let env = SignedEnvelope::seal(&key, header("a", 1), &ballot("x")).unwrap();
        let pk = key.public_key();
        let mut tampered = vec![env.clone(); 6];
        tampered[0].sender = AgentId::new("b").unwrap();
        tampered[1].session = SessionId::new("s2").unwrap();
        tampered[2].round += 1;
        tampered[3].sequence += 1;
        tampered[4].timestamp_ms += 1;
        tampered[5].payload.push(0);
        for t in &tampered {
            assert!(t.verify(&pk).is_err(), "{t:?} verified");
        }
        assert!(env.verify(&keypair(2).public_key()).is_err());
        let mut short = env.clone();
        short.signature.truncate(10);
        assert_eq!(short.verify(&pk), Err(SignatureError::Length(10)));
    }

    #[test]
    fn batch_verification_accepts_good_and_refuses_one_bad() {
        let keys: Vec<_> = (1..=8).map(keypair).collect();
        let envs: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                SignedEnvelope::seal(k, header(&format!("a{i}"), 1), &ballot("x")).unwrap()
            })
            .collect();
        let pks: Vec<_> = keys.iter().map(AgentKeypair::public_key).collect();
        let items: Vec<_> = envs.iter().zip(&pks).collect();
        verify_batch(&items).unwrap();
        let mut bad = envs.clone();
        bad[3].payload = encode(ContentType::MsgPack, &ballot("y")).unwrap();
        let items: Vec<_> = bad.iter().zip(&pks).collect();
        assert_eq!(verify_batch(&items), Err(SignatureError::Batch(8)));
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let pk = keypair(7).public_key();
        assert_eq!(PublicKey::parse(&pk.to_hex()).unwrap(), pk);
        assert_eq!(PublicKey::parse(&pk.to_base64()).unwrap(), pk);
        assert_eq!(PublicKey::parse("not a key!"), Err(KeyError::Encoding));
        assert_eq!(PublicKey::parse("AAAA"), Err(KeyError::Length(3)));
        // The identity point: a valid encoding of a small-order point.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(PublicKey::from_bytes(identity), Err(KeyError::WeakKey));
        let sk = keypair(7);
        assert_eq!(
            AgentKeypair::parse_secret(&sk.secret_hex())
                .unwrap()
                .public_key(),
            pk
        );
        assert!(!format!("{sk:?}").contains(&sk.secret_hex()));
    }
}
