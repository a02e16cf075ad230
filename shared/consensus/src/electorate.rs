//! The agents taking part in a session, as the registry described them at session start.

use std::collections::BTreeMap;

use mabeam_protocol::{session::ElectorateMember, AgentId, PublicKey};
use serde::{Deserialize, Serialize};

use crate::ConfigError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    pub id: AgentId,
    pub public_key: PublicKey,
    /// Expertise weight (> 0). Weighted algorithms use expertise × confidence.
    pub expertise: f64,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// A non-empty set of distinct participants, ordered by id so every replay of a session
/// iterates them identically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Participant>", into = "Vec<Participant>")]
pub struct Electorate {
    members: Vec<Participant>,
    index: BTreeMap<AgentId, usize>,
}

impl TryFrom<Vec<Participant>> for Electorate {
    type Error = ConfigError;
    fn try_from(members: Vec<Participant>) -> Result<Self, ConfigError> {
        Self::new(members)
    }
}

impl From<Electorate> for Vec<Participant> {
    fn from(e: Electorate) -> Self {
        e.members
    }
}

impl Electorate {
    pub fn new(mut members: Vec<Participant>) -> Result<Self, ConfigError> {
        if members.is_empty() {
            return Err(ConfigError::EmptyElectorate);
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        let mut index = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            if !(m.expertise.is_finite() && m.expertise > 0.0) {
                return Err(ConfigError::params(
                    "electorate",
                    format!(
                        "expertise of {} must be a positive number, got {}",
                        m.id, m.expertise
                    ),
                ));
            }
            if index.insert(m.id.clone(), i).is_some() {
                return Err(ConfigError::DuplicateParticipant(m.id.to_string()));
            }
        }
        Ok(Self { members, index })
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub fn get(&self, id: &AgentId) -> Option<&Participant> {
        self.index.get(id).and_then(|&i| self.members.get(i))
    }

    pub fn contains(&self, id: &AgentId) -> bool {
        self.index.contains_key(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Participant> {
        self.members.iter()
    }

    pub fn ids(&self) -> Vec<AgentId> {
        self.members.iter().map(|m| m.id.clone()).collect()
    }

    pub fn total_expertise(&self) -> f64 {
        self.members.iter().map(|m| m.expertise).sum()
    }

    /// The members as agents and certificates see them (id and key).
    pub fn public_members(&self) -> Vec<ElectorateMember> {
        self.members
            .iter()
            .map(|m| ElectorateMember {
                agent_id: m.id.clone(),
                public_key: m.public_key,
            })
            .collect()
    }

    /// The sub-electorate of the listed agents (pipeline stages); unknown ids are an error.
    pub fn subset(&self, ids: &[AgentId]) -> Result<Self, ConfigError> {
        let members = ids
            .iter()
            .map(|id| {
                self.get(id).cloned().ok_or_else(|| {
                    ConfigError::params(
                        "pipeline",
                        format!("stage participant {id} is not in the electorate"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(members)
    }
}
