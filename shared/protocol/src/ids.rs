//! Identifiers that end up inside NATS subjects and Redis keys.
//!
//! They are validated on construction and on deserialization, so a subject built from one can
//! never contain a wildcard or a token separator.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest identifier accepted; long enough for UUIDs and hierarchical names.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{kind} must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} is {len} bytes long; the limit is {MAX_ID_LEN}")]
    TooLong { kind: &'static str, len: usize },
    #[error(
        "{kind} {value:?} contains {found:?}; allowed are ASCII letters, digits, '-', '_' and ':'"
    )]
    InvalidChar {
        kind: &'static str,
        value: String,
        found: char,
    },
}

fn validate(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
        });
    }
    if let Some(found) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':')))
    {
        return Err(IdError::InvalidChar {
            kind,
            value: value.to_owned(),
            found,
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(value: &str) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

id_type!(
    /// An agent's identity; bound to one ed25519 public key by the registry.
    AgentId,
    "agent id"
);
id_type!(
    /// A task's identity, chosen by the submitter or generated; also the dedup key.
    TaskId,
    "task id"
);
id_type!(
    /// One coordination session (a task may be retried in a new session after failover).
    SessionId,
    "session id"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_breaking_characters_are_refused() {
        for bad in ["a.b", "a*", ">", "a b", "", "ä"] {
            assert!(AgentId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(AgentId::new("x".repeat(MAX_ID_LEN + 1)).is_err());
        assert_eq!(AgentId::new("gpu-01:a_b").unwrap().as_str(), "gpu-01:a_b");
    }

    #[test]
    fn deserialization_validates() {
        let err = serde_json::from_str::<TaskId>("\"a.b\"").unwrap_err();
        assert!(err.to_string().contains("contains '.'"), "{err}");
    }
}
