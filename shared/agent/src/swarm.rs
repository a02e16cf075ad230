//! Swarm helpers: work with a named group of agents as one — tell them all something, ask
//! them to agree with a number of votes required, hand them work by a strategy.
//!
//! A [`Swarm`] is a group (fixed agent ids, or every eligible agent with a capability,
//! looked up in the registry when needed) plus a [`TaskClient`]. Consensus and work
//! distribution are ordinary tasks run by the coordinators (`plurality` or `weighted` with
//! `min_votes`, and `work_distribution`), so they get the platform's durability, signatures,
//! fault handling and audit trail; a broadcast is one [`GroupMessage`] to each member's
//! `mabeam.agents.<id>.messages`, which agents receive through
//! [`AgentBuilder::on_message`](crate::AgentBuilder::on_message).
//!
//! ```no_run
//! use std::time::Duration;
//! use mabeam_agent::{
//!     swarm::{ConsensusRequest, Members, Strategy, Swarm, WorkItem},
//!     tasks::TaskClient,
//! };
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = async_nats::connect("nats://127.0.0.1:4222").await?;
//! let swarm = Swarm::new(
//!     TaskClient::new(client),
//!     "fraud-detection",
//!     Members::Capability("fraud-analysis".into()),
//! );
//! swarm
//!     .broadcast("supervisor", "investigate", serde_json::json!({"transaction": "T-12345"}))
//!     .await?;
//! let verdict = swarm
//!     .request_consensus(
//!         ConsensusRequest::new("Block account due to fraud?")
//!             .options(["block", "allow"])
//!             .required_votes(2),
//!     )
//!     .await?;
//! println!("{:?} {:?}", verdict.status, verdict.outcome);
//! let items = (0..10).map(|i| WorkItem::Id(format!("T-{i}"))).collect();
//! let assignments = swarm.distribute_work(items, Strategy::RoundRobin).await?;
//! println!("{assignments:?}");
//! # Ok(())
//! # }
//! ```

use std::{collections::BTreeMap, time::Duration};

use mabeam_consensus::algorithm::DistributionParams;
/// The vocabulary of the helpers' parameters, so callers need no other crate.
pub use mabeam_consensus::algorithm::{OnTie, Strategy, WorkItem};
use mabeam_protocol::{
    codec::encode,
    group::GroupMessage,
    registry::{AgentList, AgentQuery},
    subjects,
    task::{ParticipantSelector, Priority, TaskSubmission},
    AgentId, ContentType, Limits, Outcome, Status, TaskId, TaskResult, PROTOCOL_VERSION,
};
use mabeam_runtime::reply;
use serde_json::{json, Value};

use crate::{
    registry,
    tasks::{TaskClient, TaskError},
};

/// Who belongs to a swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Members {
    /// These agents.
    Agents(Vec<AgentId>),
    /// Every agent the registry lists as eligible with this capability, at the time of each
    /// call.
    Capability(String),
}

/// Why a swarm call failed.
#[derive(Debug, thiserror::Error)]
pub enum SwarmError {
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error("swarm {group} has no members{}", match .capability { Some(c) => format!(" (no eligible agent has capability {c:?})"), None => String::new() })]
    NoMembers {
        group: String,
        capability: Option<String>,
    },
    #[error("swarm {group} has {members} member(s); {required} required votes can never be cast")]
    TooFewMembers {
        group: String,
        members: usize,
        required: u32,
    },
    #[error("the registry did not answer the member lookup: {0}")]
    Registry(String),
    #[error("cannot reach member {agent} on {subject}: {message}")]
    Publish {
        agent: AgentId,
        subject: String,
        message: String,
    },
    /// The task ended without the outcome asked for.
    #[error("task {task_id} ended {status:?}: {reason}")]
    NotDecided {
        task_id: TaskId,
        status: Status,
        reason: String,
    },
}

/// A question for the swarm, decided by a vote in which the winning option needs
/// `required_votes` ballots of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsensusRequest {
    question: Value,
    options: Vec<String>,
    required_votes: u32,
    weighted: bool,
    on_tie: Option<OnTie>,
}

impl ConsensusRequest {
    /// A yes/no question (options `accept` and `reject`) decided by plurality, one required
    /// vote.
    pub fn new(question: impl Into<Value>) -> Self {
        Self {
            question: question.into(),
            options: Vec::new(),
            required_votes: 1,
            weighted: false,
            on_tie: None,
        }
    }

    pub fn options<I, S>(mut self, options: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options = options.into_iter().map(Into::into).collect();
        self
    }

    /// Ballots the winning option needs (at least 1).
    pub fn required_votes(mut self, votes: u32) -> Self {
        self.required_votes = votes.max(1);
        self
    }

    /// Weigh ballots by expertise × confidence (`weighted`, more than half the weight
    /// cast) instead of counting them (`plurality`).
    pub fn weighted(mut self) -> Self {
        self.weighted = true;
        self
    }

    /// What a tie does (default: no decision).
    pub fn on_tie(mut self, policy: OnTie) -> Self {
        self.on_tie = Some(policy);
        self
    }

    fn algorithm(&self) -> &'static str {
        if self.weighted {
            "weighted"
        } else {
            "plurality"
        }
    }

    fn params(&self) -> Value {
        let mut params = json!({ "min_votes": self.required_votes });
        if let Some(on_tie) = &self.on_tie {
            params["on_tie"] = serde_json::to_value(on_tie).unwrap_or(Value::Null);
        }
        params
    }
}

/// A named group of agents and the client that talks to them.
#[derive(Debug, Clone)]
pub struct Swarm {
    name: String,
    members: Members,
    tasks: TaskClient,
    priority: Priority,
    content_type: ContentType,
    task_timeout: Duration,
    /// Waiting for a result beyond the task's own timeout.
    wait_margin: Duration,
    request_timeout: Duration,
    limits: Limits,
}

impl Swarm {
    /// Tasks run at normal priority with a 30 s timeout.
    pub fn new(tasks: TaskClient, name: impl Into<String>, members: Members) -> Self {
        Self {
            name: name.into(),
            members,
            tasks,
            priority: Priority::Normal,
            content_type: ContentType::MsgPack,
            task_timeout: Duration::from_secs(30),
            wait_margin: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            limits: Limits::default(),
        }
    }

    /// The priority of the tasks this swarm submits.
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// The timeout of each task this swarm submits.
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = timeout;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The members now: the fixed list, or the registry's eligible agents with the
    /// capability.
    pub async fn members(&self) -> Result<Vec<AgentId>, SwarmError> {
        let members = match &self.members {
            Members::Agents(ids) => ids.clone(),
            Members::Capability(capability) => self.eligible_with(capability).await?,
        };
        if members.is_empty() {
            return Err(SwarmError::NoMembers {
                group: self.name.clone(),
                capability: match &self.members {
                    Members::Capability(c) => Some(c.clone()),
                    Members::Agents(_) => None,
                },
            });
        }
        Ok(members)
    }

    async fn eligible_with(&self, capability: &str) -> Result<Vec<AgentId>, SwarmError> {
        let query = AgentQuery {
            v: PROTOCOL_VERSION,
            capability: Some(capability.to_owned()),
            ..AgentQuery::default()
        };
        let body = encode(ContentType::MsgPack, &query)
            .map_err(|e| SwarmError::Registry(e.to_string()))?;
        let list: AgentList = registry::call(
            self.tasks.client(),
            subjects::REGISTRY_QUERY,
            body.into(),
            self.request_timeout,
            self.limits,
        )
        .await
        .map_err(|e| SwarmError::Registry(e.to_string()))?;
        Ok(list
            .agents
            .into_iter()
            .filter(|a| a.status.is_eligible())
            .map(|a| a.agent_id)
            .collect())
    }

    /// Sends `body` under `topic` to every member; returns who it was sent to. Delivery is
    /// at most once (core NATS): a member that is offline misses it.
    pub async fn broadcast(
        &self,
        from: &str,
        topic: &str,
        body: Value,
    ) -> Result<Vec<AgentId>, SwarmError> {
        let members = self.members().await?;
        let message = GroupMessage {
            v: PROTOCOL_VERSION,
            group: self.name.clone(),
            from: from.to_owned(),
            topic: topic.to_owned(),
            body,
            sent_ms: mabeam_runtime::now_ms(),
        };
        let payload = bytes::Bytes::from(
            encode(ContentType::MsgPack, &message).map_err(|e| TaskError::Encode(e.to_string()))?,
        );
        let client = self.tasks.client();
        for agent in &members {
            let subject = subjects::agent_messages(agent);
            client
                .publish_with_headers(
                    subject.clone(),
                    reply::headers_for(ContentType::MsgPack),
                    payload.clone(),
                )
                .await
                .map_err(|e| SwarmError::Publish {
                    agent: agent.clone(),
                    subject,
                    message: e.to_string(),
                })?;
        }
        // Published means handed to the server, not merely queued in this client.
        client.flush().await.map_err(|e| TaskError::Nats {
            subject: "mabeam.agents.*.messages".into(),
            message: format!("cannot flush the broadcast: {e}"),
        })?;
        Ok(members)
    }

    /// Puts `request` to the members and waits for the result (decided or not: check its
    /// `status`). The members are fixed when the task is submitted.
    pub async fn request_consensus(
        &self,
        request: ConsensusRequest,
    ) -> Result<TaskResult, SwarmError> {
        let members = self.members().await?;
        if request.required_votes as usize > members.len() {
            return Err(SwarmError::TooFewMembers {
                group: self.name.clone(),
                members: members.len(),
                required: request.required_votes,
            });
        }
        let task = self.task(
            "consensus",
            request.algorithm(),
            request.question.clone(),
            request.options.clone(),
            members,
            request.params(),
        )?;
        self.run(task).await
    }

    /// Assigns `items` to members by `strategy` (a `work_distribution` task); returns item
    /// id → agent.
    pub async fn distribute_work(
        &self,
        items: Vec<WorkItem>,
        strategy: Strategy,
    ) -> Result<BTreeMap<String, AgentId>, SwarmError> {
        let members = self.members().await?;
        let params = DistributionParams {
            strategy,
            items,
            virtual_nodes: 64,
        };
        let params = serde_json::to_value(&params).map_err(|e| TaskError::Encode(e.to_string()))?;
        let task = self.task(
            "work",
            "work_distribution",
            json!({ "distribute": self.name }),
            Vec::new(),
            members,
            params,
        )?;
        let result = self.run(task).await?;
        match result.outcome {
            Some(Outcome::Assignment { assignments }) if result.status == Status::Decided => {
                Ok(assignments)
            }
            _ => Err(SwarmError::NotDecided {
                task_id: result.task_id,
                status: result.status,
                reason: result
                    .reason
                    .unwrap_or_else(|| "no assignment in the result".into()),
            }),
        }
    }

    fn task(
        &self,
        kind: &str,
        algorithm: &str,
        proposal: Value,
        options: Vec<String>,
        members: Vec<AgentId>,
        params: Value,
    ) -> Result<TaskSubmission, SwarmError> {
        let id = TaskClient::generate_id(&format!("{}-{kind}", self.name))
            .map_err(|e| TaskError::Encode(e.to_string()))?;
        Ok(TaskSubmission {
            v: PROTOCOL_VERSION,
            task_id: Some(id),
            algorithm: algorithm.to_owned(),
            proposal,
            options,
            participants: ParticipantSelector::Agents { agents: members },
            params,
            timeout_ms: Some(self.task_timeout.as_millis() as u64),
            priority: Some(self.priority),
        })
    }

    async fn run(&self, task: TaskSubmission) -> Result<TaskResult, SwarmError> {
        Ok(self
            .tasks
            .decide(
                task,
                self.content_type,
                self.task_timeout + self.wait_margin,
            )
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consensus_request_becomes_plurality_or_weighted_with_min_votes() {
        let plain = ConsensusRequest::new("block?").required_votes(2);
        assert_eq!(plain.algorithm(), "plurality");
        assert_eq!(plain.params(), json!({"min_votes": 2}));
        let weighted = ConsensusRequest::new("block?")
            .weighted()
            .required_votes(0)
            .on_tie(OnTie::Revote { max_revotes: 2 });
        assert_eq!(weighted.algorithm(), "weighted");
        assert_eq!(
            weighted.params(),
            json!({"min_votes": 1, "on_tie": {"policy": "revote", "max_revotes": 2}})
        );
        // What the core accepts: the helper never builds a task the coordinator refuses.
        for request in [plain, weighted] {
            mabeam_consensus::AlgorithmSpec::parse(request.algorithm(), &request.params()).unwrap();
        }
    }
}
