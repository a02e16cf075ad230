//! Encoding and decoding of every message, with size limits and version checks.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::PROTOCOL_VERSION;

/// The header that selects the body encoding of a NATS message.
pub const CONTENT_TYPE_HEADER: &str = "Content-Type";

/// Body encodings. MessagePack is the default; JSON is for humans and other languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentType {
    #[default]
    MsgPack,
    Json,
}

impl ContentType {
    /// Interprets a `Content-Type` header value; absent means MessagePack.
    ///
    /// Parameters such as `; charset=utf-8` are ignored.
    pub fn from_header(value: Option<&str>) -> Result<Self, DecodeError> {
        let Some(value) = value else {
            return Ok(Self::MsgPack);
        };
        let essence = value
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "" | "application/msgpack" | "application/x-msgpack" | "application/vnd.msgpack" => {
                Ok(Self::MsgPack)
            }
            "application/json" | "text/json" => Ok(Self::Json),
            _ => Err(DecodeError::UnsupportedContentType(value.to_owned())),
        }
    }

    pub fn header_value(self) -> &'static str {
        match self {
            Self::MsgPack => "application/msgpack",
            Self::Json => "application/json",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::MsgPack => "msgpack",
            Self::Json => "json",
        }
    }
}

/// Decoder limits; configurable per service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body accepted, in bytes.
    pub max_message_bytes: usize,
}

impl Limits {
    /// 1 MiB: the NATS server's default `max_payload`.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: Self::DEFAULT_MAX_MESSAGE_BYTES,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("message is empty")]
    Empty,
    #[error("malformed {format} {kind}: {detail}")]
    Malformed {
        format: &'static str,
        kind: &'static str,
        detail: String,
    },
    #[error("{kind} has protocol version {found}; this build speaks version {supported}")]
    UnsupportedVersion {
        kind: &'static str,
        found: u16,
        supported: u16,
    },
    #[error("unsupported content type {0:?}; use application/msgpack or application/json")]
    UnsupportedContentType(String),
}

impl DecodeError {
    /// A short stable label, used as a metric label value.
    pub fn label(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Empty => "empty",
            Self::Malformed { .. } => "malformed",
            Self::UnsupportedVersion { .. } => "unsupported_version",
            Self::UnsupportedContentType(_) => "unsupported_content_type",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode {kind} as msgpack: {source}")]
    MsgPack {
        kind: &'static str,
        #[source]
        source: rmp_serde::encode::Error,
    },
    #[error("cannot encode {kind} as json: {source}")]
    Json {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// A versioned protocol message.
pub trait Message: Serialize + DeserializeOwned {
    /// Human-readable name used in errors and metrics.
    const KIND: &'static str;
    /// The `v` field of this value.
    fn version(&self) -> u16;
}

/// Implements [`Message`] for structs with a `v: u16` field.
macro_rules! impl_message {
    ($($ty:ty => $kind:literal),* $(,)?) => {
        $(impl $crate::codec::Message for $ty {
            const KIND: &'static str = $kind;
            fn version(&self) -> u16 {
                self.v
            }
        })*
    };
}
pub(crate) use impl_message;

pub fn encode<T: Message>(content_type: ContentType, message: &T) -> Result<Vec<u8>, EncodeError> {
    match content_type {
        ContentType::MsgPack => {
            rmp_serde::to_vec_named(message).map_err(|source| EncodeError::MsgPack {
                kind: T::KIND,
                source,
            })
        }
        ContentType::Json => serde_json::to_vec(message).map_err(|source| EncodeError::Json {
            kind: T::KIND,
            source,
        }),
    }
}

/// Only the version field, to tell "other version" apart from "garbage" when a full decode
/// fails: a newer peer may have added fields this build cannot parse.
#[derive(Deserialize)]
struct VersionProbe {
    v: Option<u16>,
}

/// Deepest nesting accepted, as serde_json's own limit: rmp-serde's default (1024) lets a
/// 1 KiB message exhaust a 2 MiB thread stack in a debug build.
const MAX_MSGPACK_DEPTH: usize = 128;

fn decode_as<T: DeserializeOwned>(content_type: ContentType, bytes: &[u8]) -> Result<T, String> {
    match content_type {
        ContentType::MsgPack => {
            let mut de = rmp_serde::Deserializer::new(std::io::Cursor::new(bytes));
            de.set_max_depth(MAX_MSGPACK_DEPTH);
            let value = T::deserialize(&mut de).map_err(|e| e.to_string())?;
            // A body is exactly one message, as JSON decoding insists too.
            let consumed = de.position();
            if consumed != bytes.len() as u64 {
                return Err(format!(
                    "{} trailing byte(s) after the message",
                    bytes.len() as u64 - consumed
                ));
            }
            Ok(value)
        }
        ContentType::Json => serde_json::from_slice(bytes).map_err(|e| e.to_string()),
    }
}

pub fn decode<T: Message>(
    content_type: ContentType,
    bytes: &[u8],
    limits: &Limits,
) -> Result<T, DecodeError> {
    if bytes.len() > limits.max_message_bytes {
        return Err(DecodeError::TooLarge {
            size: bytes.len(),
            limit: limits.max_message_bytes,
        });
    }
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let version_error = |found: u16| DecodeError::UnsupportedVersion {
        kind: T::KIND,
        found,
        supported: PROTOCOL_VERSION,
    };
    match decode_as::<T>(content_type, bytes) {
        Ok(message) if message.version() == PROTOCOL_VERSION => Ok(message),
        Ok(message) => Err(version_error(message.version())),
        Err(detail) => match decode_as::<VersionProbe>(content_type, bytes) {
            Ok(VersionProbe { v: Some(found) }) if found != PROTOCOL_VERSION => {
                Err(version_error(found))
            }
            _ => Err(DecodeError::Malformed {
                format: content_type.name(),
                kind: T::KIND,
                detail,
            }),
        },
    }
}
