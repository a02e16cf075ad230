//! The ballot file `mabeamctl tally` reads.
//!
//! A JSON object:
//!
//! ```json
//! {
//!   "description": "optional free text",
//!   "options": ["A", "B", "C"],
//!   "agents": [
//!     {"id": "a1", "expertise": 2.0, "capabilities": ["gpu"]},
//!     {"id": "a2"}
//!   ],
//!   "params": {"threshold": 0.6},
//!   "ballots": [
//!     {"agent": "a1", "vote": "A", "confidence": 0.9},
//!     {"agent": "a2", "vote": null}
//!   ]
//! }
//! ```
//!
//! - `options` (optional): the choices of choice-based algorithms. When empty, those
//!   algorithms vote on `["accept", "reject"]`, as live sessions do.
//! - `agents` (optional): the electorate. `expertise` defaults to 1 and must be positive;
//!   `capabilities` (default none) are what `work_distribution`'s `capability_match` looks at.
//!   When absent, the electorate is every agent that has a ballot, with expertise 1.
//! - `params` (optional): algorithm parameters, overridden key by key by `--params` and then
//!   by `--param`.
//! - `ballots` (required): one entry per ballot, in arrival order. `confidence` defaults to 1
//!   (outside `[0, 1]` the ballot is rejected, as in sessions). `vote` is, by JSON type:
//!
//! | `vote`                                       | ballot                     | used by |
//! |----------------------------------------------|----------------------------|---------|
//! | `"A"`                                        | a choice (option or agent id) | choice family, ranked choice, byzantine, leader election |
//! | `["B", "A"]` (strings)                       | a ranking, most preferred first | ranked choice |
//! | `0.7`                                        | a number                   | iterative, negotiation (an offer accepting only itself) |
//! | `[0.1, 0.2]` (numbers)                       | a vector                   | iterative |
//! | `{"bid": 10}`                                | a sealed bid               | auction |
//! | `{"offer": {"value": 5, "min": 3, "max": 8}}` | an offer and its accepted range | negotiation |
//! | `{"load": {"load": 1, "capacity": 4}}`       | current load and capacity  | work distribution |
//! | `null`                                       | an abstention              | all |
//!
//! An array is a ranking when all its elements are strings (an empty array is an empty
//! ranking) and a vector when all are numbers; mixing both is an error. Objects may also use
//! the protocol's tagged forms (`{"choice": "A"}`, `{"ranking": [..]}`, `{"number": 1}`,
//! `{"vector": [..]}`), e.g. to vote for an option literally named like a JSON keyword.

use mabeam_protocol::{session::VoteValue, AgentId};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

fn one() -> f64 {
    1.0
}

/// A parsed ballot file (see the module documentation).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BallotFile {
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub agents: Option<Vec<AgentEntry>>,
    #[serde(default)]
    pub params: Map<String, Value>,
    pub ballots: Vec<BallotEntry>,
}

/// A member of the electorate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEntry {
    pub id: AgentId,
    #[serde(default = "one")]
    pub expertise: f64,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// One ballot.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BallotEntry {
    pub agent: AgentId,
    #[serde(deserialize_with = "deserialize_vote")]
    pub vote: VoteValue,
    #[serde(default = "one")]
    pub confidence: f64,
}

fn deserialize_vote<'de, D: Deserializer<'de>>(deserializer: D) -> Result<VoteValue, D::Error> {
    let value = Value::deserialize(deserializer)?;
    vote_from_json(value).map_err(serde::de::Error::custom)
}

/// Reads a `vote` as the table of the module documentation describes.
pub fn vote_from_json(value: Value) -> Result<VoteValue, String> {
    match value {
        Value::Null => Ok(VoteValue::Abstain),
        Value::String(s) => Ok(VoteValue::Choice(s)),
        Value::Number(n) => n
            .as_f64()
            .map(VoteValue::Number)
            .ok_or_else(|| format!("vote {n} is not a representable number")),
        Value::Bool(b) => Err(format!(
            "vote {b} is neither a choice, a ranking, a number, a vector, a bid, an offer, a load \
             nor null (abstain)"
        )),
        Value::Array(items) => {
            if items.iter().all(Value::is_string) {
                Ok(VoteValue::Ranking(
                    items
                        .into_iter()
                        .filter_map(|v| match v {
                            Value::String(s) => Some(s),
                            _ => None,
                        })
                        .collect(),
                ))
            } else if items.iter().all(Value::is_number) {
                Ok(VoteValue::Vector(
                    items.iter().filter_map(Value::as_f64).collect(),
                ))
            } else {
                Err(
                    "a vote array must hold only option names (a ranking) or only numbers (a \
                     vector)"
                        .to_owned(),
                )
            }
        }
        Value::Object(map) => serde_json::from_value(Value::Object(map)).map_err(|e| {
            format!(
                "vote object is not {{\"bid\": n}}, {{\"offer\": {{\"value\", \"min\", \
                 \"max\"}}}} or {{\"load\": {{\"load\", \"capacity\"}}}} ({e})"
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn votes_are_told_apart_by_json_type() {
        let cases = [
            (json!("A"), VoteValue::Choice("A".into())),
            (
                json!(["B", "A"]),
                VoteValue::Ranking(vec!["B".into(), "A".into()]),
            ),
            (json!([]), VoteValue::Ranking(vec![])),
            (json!(0.7), VoteValue::Number(0.7)),
            (json!(3), VoteValue::Number(3.0)),
            (json!([0.1, 2]), VoteValue::Vector(vec![0.1, 2.0])),
            (json!({"bid": 10}), VoteValue::Bid(10.0)),
            (
                json!({"offer": {"value": 5, "min": 3, "max": 8}}),
                VoteValue::Offer {
                    value: 5.0,
                    min: 3.0,
                    max: 8.0,
                },
            ),
            (
                json!({"load": {"load": 1, "capacity": 4}}),
                VoteValue::Load {
                    load: 1.0,
                    capacity: 4.0,
                },
            ),
            (json!(null), VoteValue::Abstain),
            (json!({"choice": "null"}), VoteValue::Choice("null".into())),
        ];
        for (json, expected) in cases {
            assert_eq!(vote_from_json(json.clone()).unwrap(), expected, "{json}");
        }
        for bad in [
            json!(true),
            json!(["A", 1]),
            json!({"bid": "x"}),
            json!({"x": 1}),
        ] {
            assert!(vote_from_json(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ballot_needs_its_vote_and_defaults_its_confidence() {
        let missing = serde_json::from_str::<BallotEntry>(r#"{"agent": "a1"}"#).unwrap_err();
        assert!(
            missing.to_string().contains("missing field `vote`"),
            "{missing}"
        );
        let ballot: BallotEntry = serde_json::from_str(r#"{"agent": "a1", "vote": null}"#).unwrap();
        assert_eq!(ballot.vote, VoteValue::Abstain);
        assert_eq!(ballot.confidence, 1.0);
        let typo =
            serde_json::from_str::<BallotEntry>(r#"{"agent": "a1", "vote": 1, "confidense": 1}"#)
                .unwrap_err();
        assert!(typo.to_string().contains("unknown field"), "{typo}");
    }
}
