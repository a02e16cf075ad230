//! Turns a task's participant selector into an electorate, asking the registry.

use std::time::Duration;

use mabeam_consensus::{Electorate, Participant};
use mabeam_protocol::{
    codec::{decode, encode, ContentType},
    registry::{AgentInfo, AgentList, AgentQuery},
    subjects,
    task::ParticipantSelector,
    ErrorCode, Limits,
};
use mabeam_runtime::reply;

use crate::error::Rejection;

/// The eligible agents a query finds; none is a `no_participants` rejection.
async fn eligible(
    nats: &async_nats::Client,
    agent_query: AgentQuery,
    timeout: Duration,
    none: impl FnOnce() -> String,
) -> Result<Vec<AgentInfo>, ResolveError> {
    let found: Vec<AgentInfo> = query(nats, agent_query, timeout)
        .await?
        .into_iter()
        .filter(|a| a.status.is_eligible())
        .collect();
    if found.is_empty() {
        return Err(reject(ErrorCode::NoParticipants, none()));
    }
    Ok(found)
}

/// Why participants could not be resolved.
#[derive(Debug)]
pub(crate) enum ResolveError {
    /// The task is at fault: reject it.
    Invalid(Rejection),
    /// The registry did not answer: retry the task later.
    Unavailable(String),
}

async fn query(
    nats: &async_nats::Client,
    query: AgentQuery,
    timeout: Duration,
) -> Result<Vec<AgentInfo>, ResolveError> {
    let body = encode(ContentType::MsgPack, &query)
        .map_err(|e| ResolveError::Unavailable(e.to_string()))?;
    let request = async_nats::Request::new()
        .payload(body.into())
        .headers(reply::headers_for(ContentType::MsgPack))
        .timeout(Some(timeout));
    let response = nats
        .send_request(subjects::REGISTRY_QUERY, request)
        .await
        .map_err(|e| ResolveError::Unavailable(format!("registry query failed: {e}")))?;
    if let Some(err) = reply::as_error(response.headers.as_ref(), &response.payload) {
        // Retrying cannot make the selection fit in one reply: refuse the task instead of
        // redelivering it until JetStream gives up.
        if err.code == ErrorCode::TooLarge {
            return Err(reject(
                ErrorCode::TooLarge,
                format!(
                    "the selection is too large for one registry reply: {}",
                    err.message
                ),
            ));
        }
        return Err(ResolveError::Unavailable(format!(
            "registry refused the query: {}: {}",
            err.code.as_str(),
            err.message
        )));
    }
    let list: AgentList = decode(
        ContentType::MsgPack,
        &response.payload,
        &Limits {
            max_message_bytes: usize::MAX,
        },
    )
    .map_err(|e| ResolveError::Unavailable(format!("bad registry reply: {e}")))?;
    Ok(list.agents)
}

fn participant(info: AgentInfo) -> Participant {
    Participant {
        id: info.agent_id,
        public_key: info.public_key,
        expertise: info.expertise,
        capabilities: info.capabilities,
    }
}

fn reject(code: ErrorCode, message: String) -> ResolveError {
    ResolveError::Invalid(Rejection::new(code, message))
}

pub(crate) async fn resolve(
    nats: &async_nats::Client,
    selector: &ParticipantSelector,
    timeout: Duration,
) -> Result<Electorate, ResolveError> {
    let chosen: Vec<AgentInfo> = match selector {
        ParticipantSelector::Agents { agents } => {
            if agents.is_empty() {
                return Err(reject(
                    ErrorCode::NoParticipants,
                    "participants.agents is empty".into(),
                ));
            }
            let found = query(
                nats,
                AgentQuery {
                    agent_ids: agents.clone(),
                    ..AgentQuery::default()
                },
                timeout,
            )
            .await?;
            let missing: Vec<String> = agents
                .iter()
                .filter(|id| !found.iter().any(|a| &a.agent_id == *id))
                .map(ToString::to_string)
                .collect();
            if !missing.is_empty() {
                return Err(reject(
                    ErrorCode::UnknownParticipants,
                    format!("not registered: {}", missing.join(", ")),
                ));
            }
            let ineligible: Vec<String> = found
                .iter()
                .filter(|a| !a.status.is_eligible())
                .map(|a| format!("{} ({})", a.agent_id, a.status.as_str()))
                .collect();
            if !ineligible.is_empty() {
                return Err(reject(
                    ErrorCode::InsufficientParticipants,
                    format!("not eligible: {}", ineligible.join(", ")),
                ));
            }
            found
        }
        ParticipantSelector::Capability { capability, count } => {
            let query = AgentQuery {
                capability: Some(capability.clone()),
                ..AgentQuery::default()
            };
            let mut found = eligible(nats, query, timeout, || {
                format!("no eligible agent has capability {capability:?}")
            })
            .await?;
            // The most expert first, so a bounded count picks the strongest electorate.
            found.sort_by(|a, b| {
                b.expertise
                    .total_cmp(&a.expertise)
                    .then_with(|| a.agent_id.cmp(&b.agent_id))
            });
            if let Some(n) = count {
                found.truncate(*n as usize);
            }
            found
        }
        ParticipantSelector::All { all: false } => {
            return Err(reject(
                ErrorCode::NoParticipants,
                "participants.all is false: nobody selected".into(),
            ))
        }
        ParticipantSelector::All { all: true } => {
            eligible(nats, AgentQuery::default(), timeout, || {
                "no eligible agent is registered".into()
            })
            .await?
        }
    };
    Electorate::new(chosen.into_iter().map(participant).collect())
        .map_err(|e| reject(e.code(), e.to_string()))
}
