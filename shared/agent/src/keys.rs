//! An agent's signing key: generated, loaded from text, or derived from a seed and the id.

use mabeam_protocol::{AgentId, AgentKeypair, KeyError};
use sha2::{Digest as _, Sha256};

/// A fresh random key (from the operating system's generator).
pub fn generate() -> AgentKeypair {
    AgentKeypair::generate(&mut rand::rngs::OsRng)
}

/// A secret key given as 64 hex characters or base64 of 32 bytes (e.g. from a key file or
/// an environment variable).
pub fn parse(secret: &str) -> Result<AgentKeypair, KeyError> {
    AgentKeypair::parse_secret(secret)
}

/// The key of agent `id` derived from `seed`: the same seed and id always give the same key,
/// so a fleet restarted with its seed keeps its registered keys. Anyone knowing the seed
/// knows the keys: use it for simulations and tests, not for agents that must be trusted.
pub fn derive(seed: &[u8], id: &AgentId) -> AgentKeypair {
    let mut hash = Sha256::new();
    hash.update(b"mabeam/agent-key/v1");
    hash.update((seed.len() as u64).to_be_bytes());
    hash.update(seed);
    hash.update(id.as_str().as_bytes());
    AgentKeypair::from_secret_bytes(hash.finalize().into())
}

/// The key an agent with the `invalid_signature` fault signs with: fixed per agent, never
/// its registered one.
pub(crate) fn impostor(key: &AgentKeypair) -> AgentKeypair {
    let mut hash = Sha256::new();
    hash.update(b"mabeam/impostor-key/v1");
    hash.update(key.secret_hex().as_bytes());
    AgentKeypair::from_secret_bytes(hash.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_keys_depend_on_seed_and_id_only() {
        let a = AgentId::new("a").unwrap();
        let b = AgentId::new("b").unwrap();
        assert_eq!(derive(b"s", &a).public_key(), derive(b"s", &a).public_key());
        assert_ne!(derive(b"s", &a).public_key(), derive(b"s", &b).public_key());
        assert_ne!(derive(b"s", &a).public_key(), derive(b"t", &a).public_key());
        assert_ne!(generate().public_key(), generate().public_key());
    }

    #[test]
    fn keys_load_from_hex_and_base64_and_impostors_differ() {
        let key = derive(b"s", &AgentId::new("a").unwrap());
        assert_eq!(
            parse(&key.secret_hex()).unwrap().public_key(),
            key.public_key()
        );
        assert!(parse("nope").is_err());
        assert_ne!(impostor(&key).public_key(), key.public_key());
        assert_eq!(impostor(&key).public_key(), impostor(&key).public_key());
    }
}
