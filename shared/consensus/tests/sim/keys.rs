//! Agent identities and keys, derived once per process: deriving an ed25519 key costs a
//! scalar multiplication, and every run would otherwise pay it for every agent.

use std::sync::OnceLock;

use mabeam_protocol::{AgentId, AgentKeypair};

/// Most agents a scenario may have.
pub(crate) const MAX_AGENTS: usize = 32;

#[derive(Debug)]
pub(crate) struct KeyRing {
    pub ids: Vec<AgentId>,
    /// The keys the registry knows.
    pub keys: Vec<AgentKeypair>,
    /// Keys nobody registered: what an invalid-signature attacker signs with.
    pub wrong: Vec<AgentKeypair>,
}

pub(crate) fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let secret = |tag: u8, i: usize| {
            let mut bytes = [0u8; 32];
            bytes[0] = tag;
            bytes[1] = i as u8;
            bytes[2..10].copy_from_slice(b"mabeamsm");
            bytes
        };
        KeyRing {
            ids: (0..MAX_AGENTS)
                .map(|i| AgentId::new(format!("agent-{i:02}")).expect("valid agent id"))
                .collect(),
            keys: (0..MAX_AGENTS)
                .map(|i| AgentKeypair::from_secret_bytes(secret(1, i)))
                .collect(),
            wrong: (0..MAX_AGENTS)
                .map(|i| AgentKeypair::from_secret_bytes(secret(2, i)))
                .collect(),
        }
    })
}
