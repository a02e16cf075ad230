//! The registry's state in Redis, all under `mabeam:registry:`:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `agent:<id>` | hash | the agent record (see [`FIELDS`]), its `metadata` and `rev`, bumped by every write |
//! | `agents` | set | every registered id |
//! | `status:<status>` | set | ids by status (queries, gauges) |
//! | `capability:<name>` | set | ids by capability |
//! | `seen` | sorted set | ids whose status heartbeat silence can still change, scored by last-seen ms: the sweeper's work list |
//! | `seq:<id>` | string | last accepted envelope sequence; outlives deregistration by twice the clock tolerance, so a deregistered agent's envelopes cannot be replayed |
//! | `quarantined` | set | ids with valid equivocation evidence; outlives deregistration |
//! | `evidence:<id>` | list | the latest evidence (msgpack), newest first, capped |
//! | `sweep_lease` | string | the instance sweeping TTLs, with an expiry |
//!
//! Every write of an agent is a compare-and-set on `rev` in one Lua script, so replicas
//! racing on one agent never lose an update nor announce a transition twice: the loser reads
//! again and decides again. The same script refuses a sequence that is not above the stored
//! one, so two replicas handed the same envelope accept it once.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
};

use mabeam_protocol::{
    registry::{AgentInfo, AgentStatus},
    signing::KeyError,
    AgentId, PublicKey,
};
use redis::{aio::ConnectionManager, Script};

use crate::error::StoreError;

const PREFIX: &str = "mabeam:registry:";
const AGENTS: &str = "mabeam:registry:agents";
const SEEN: &str = "mabeam:registry:seen";
const QUARANTINED: &str = "mabeam:registry:quarantined";
const SWEEP_LEASE: &str = "mabeam:registry:sweep_lease";

/// Evidence kept per agent; older entries are trimmed.
pub const EVIDENCE_KEPT: isize = 16;

fn agent_key(id: &str) -> String {
    format!("{PREFIX}agent:{id}")
}

fn sequence_key(id: &str) -> String {
    format!("{PREFIX}seq:{id}")
}

fn evidence_key(id: &str) -> String {
    format!("{PREFIX}evidence:{id}")
}

fn capability_key(capability: &str) -> String {
    format!("{PREFIX}capability:{capability}")
}

fn status_key(status: AgentStatus) -> String {
    format!("{PREFIX}status:{}", status.as_str())
}

/// `rev` and the [`FIELDS`]: what a read asks for.
fn record_fields() -> Vec<&'static str> {
    std::iter::once("rev").chain(FIELDS).collect()
}

/// Sequences are compared as strings inside Lua (whose numbers are doubles): zero-padding
/// to the width of `u64::MAX` makes string order numeric order.
fn padded(sequence: u64) -> String {
    format!("{sequence:020}")
}

/// Compare-and-set write of one agent; see the module documentation.
///
/// KEYS: 1 agent hash, 2 sequence, 3 id set, 4 seen, 5 old status set, 6 new status set,
/// 7.. capability sets: the first ARGV[6] lose the id, the others gain it.
/// ARGV: 1 `put` | `delete`, 2 expected rev (empty: the agent must not exist), 3 padded
/// sequence (required by `delete`) or empty, 4 id, 5 seen score, empty (unchanged) or `-` (remove), 6 number of
/// capability sets to leave, 7 sequence expiry (ms) on delete, 8.. field/value pairs (put).
const COMMIT: &str = r"
local rev = redis.call('HGET', KEYS[1], 'rev') or ''
if rev ~= ARGV[2] then return 'conflict' end
if ARGV[3] ~= '' then
  local last = redis.call('GET', KEYS[2])
  if last and last >= ARGV[3] then return 'replay' end
end
local id = ARGV[4]
local leave = tonumber(ARGV[6])
for i = 7, 6 + leave do redis.call('SREM', KEYS[i], id) end
redis.call('SREM', KEYS[5], id)
if ARGV[1] == 'delete' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[7])
  return 'ok'
end
if ARGV[3] ~= '' then redis.call('SET', KEYS[2], ARGV[3]) end
for i = 7 + leave, #KEYS do redis.call('SADD', KEYS[i], id) end
redis.call('SADD', KEYS[6], id)
redis.call('SADD', KEYS[3], id)
redis.call('HSET', KEYS[1], 'rev', tostring((tonumber(rev) or 0) + 1), unpack(ARGV, 8))
if ARGV[5] == '-' then
  redis.call('ZREM', KEYS[4], id)
elseif ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[5], id)
end
return 'ok'
";

/// Takes or renews the sweep lease. KEYS: 1 lease; ARGV: 1 owner, 2 ttl ms.
const ACQUIRE_LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

/// Removes a work-list entry not seen since. KEYS: 1 seen; ARGV: 1 id, 2 before (ms).
const FORGET_SEEN: &str = r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
";

/// Gives the lease up if held. KEYS: 1 lease; ARGV: 1 owner.
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// The hash fields of an agent record besides `rev`, in the order [`StoredAgent::fields`]
/// writes them and reads (HMGET, after `rev`) return them. The id is the key's last part.
/// A registration also writes `metadata` (JSON), which is never read back: it is there for
/// operators.
const FIELDS: [&str; 9] = [
    "kind",
    "capabilities",
    "expertise",
    "public_key",
    "status",
    "registered_ms",
    "last_heartbeat_ms",
    "load",
    "capacity",
];

/// An agent as stored: its public record and the record's revision.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAgent {
    pub info: AgentInfo,
    /// The revision this record was read at (ignored when writing: the store bumps it).
    pub rev: u64,
}

impl StoredAgent {
    /// The last sign of life: the last heartbeat, or the registration if it is later.
    pub fn last_seen_ms(&self) -> u64 {
        self.info
            .last_heartbeat_ms
            .unwrap_or(0)
            .max(self.info.registered_ms)
    }

    /// The values of [`FIELDS`], in order.
    fn fields(&self) -> [String; FIELDS.len()] {
        let i = &self.info;
        [
            i.kind.clone(),
            serde_json::Value::from(i.capabilities.clone()).to_string(),
            i.expertise.to_string(),
            i.public_key.to_hex(),
            i.status.as_str().to_owned(),
            i.registered_ms.to_string(),
            i.last_heartbeat_ms
                .map(|t| t.to_string())
                .unwrap_or_default(),
            i.load.to_string(),
            i.capacity.to_string(),
        ]
    }

    /// Parses `rev` and the [`FIELDS`] as HMGET returns them; `None` when there is no
    /// record. `key` turns the stored hex into a public key.
    fn parse(
        id: &str,
        values: Vec<Option<String>>,
        key: &mut impl FnMut(&str) -> Result<PublicKey, KeyError>,
    ) -> Result<Option<Self>, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            key: agent_key(id),
            detail,
        };
        let mut values = values.into_iter();
        let Some(rev) = values.next().flatten() else {
            return Ok(None);
        };
        let mut fields = FIELDS.iter().zip(values);
        let mut take = || match fields.next() {
            Some((_, Some(value))) => Ok(value),
            Some((field, None)) => Err(corrupt(format!("field {field} is missing"))),
            None => Err(corrupt("fewer fields than asked for".into())),
        };
        fn number<T: std::str::FromStr>(
            text: &str,
            corrupt: impl Fn(String) -> StoreError,
        ) -> Result<T, StoreError> {
            text.parse()
                .map_err(|_| corrupt(format!("{text:?} is not a number")))
        }
        let kind = take()?;
        let capabilities: Vec<String> =
            serde_json::from_str(&take()?).map_err(|e| corrupt(e.to_string()))?;
        let expertise = number(&take()?, corrupt)?;
        let public_key = key(&take()?).map_err(|e| corrupt(e.to_string()))?;
        let status_text = take()?;
        let status = AgentStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == status_text)
            .ok_or_else(|| corrupt(format!("unknown status {status_text:?}")))?;
        let registered_ms = number(&take()?, corrupt)?;
        let last_heartbeat_ms = match take()?.as_str() {
            "" => None,
            text => Some(number(text, corrupt)?),
        };
        let load = number(&take()?, corrupt)?;
        let capacity = number(&take()?, corrupt)?;
        Ok(Some(Self {
            info: AgentInfo {
                agent_id: AgentId::new(id).map_err(|e| corrupt(e.to_string()))?,
                kind,
                capabilities,
                expertise,
                public_key,
                status,
                registered_ms,
                last_heartbeat_ms,
                load,
                capacity,
            },
            rev: number(&rev, corrupt)?,
        }))
    }
}

/// Public keys parsed from their stored hex. Parsing decompresses a curve point (10–20 µs),
/// which dominated queries over many agents; a hex string always parses to the same key,
/// so entries never go stale. Cleared when it outgrows [`KEY_CACHE_MAX`].
#[derive(Debug, Default)]
struct KeyCache(Mutex<HashMap<String, PublicKey>>);

const KEY_CACHE_MAX: usize = 100_000;

impl KeyCache {
    /// A parser for one batch, holding the lock (no await happens while it lives).
    fn parser(&self) -> impl FnMut(&str) -> Result<PublicKey, KeyError> + '_ {
        let mut keys = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        move |hex: &str| {
            if let Some(key) = keys.get(hex) {
                return Ok(*key);
            }
            let key = PublicKey::parse(hex)?;
            if keys.len() >= KEY_CACHE_MAX {
                keys.clear();
            }
            keys.insert(hex.to_owned(), key);
            Ok(key)
        }
    }
}

/// What a mutation reads first: the agent (if registered), the last accepted sequence and
/// whether the id is quarantined.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub agent: Option<StoredAgent>,
    pub last_sequence: Option<u64>,
    pub quarantined: bool,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    Done,
    /// Another write got in between the read and this one: read again and redecide.
    Conflict,
    /// The sequence is not above the last accepted one.
    Replay,
}

/// What a write does to the sweeper's work list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Keep,
    At(u64),
    Forget,
}

#[derive(Debug, Clone)]
pub struct Store {
    redis: ConnectionManager,
    keys: Arc<KeyCache>,
    commit: Script,
    forget: Script,
    acquire: Script,
    release: Script,
}

impl Store {
    pub fn new(redis: ConnectionManager) -> Self {
        Self {
            redis,
            keys: Arc::default(),
            commit: Script::new(COMMIT),
            forget: Script::new(FORGET_SEEN),
            acquire: Script::new(ACQUIRE_LEASE),
            release: Script::new(RELEASE_LEASE),
        }
    }

    pub async fn snapshot(&self, id: &AgentId) -> Result<Snapshot, StoreError> {
        let (values, sequence, quarantined): (Vec<Option<String>>, Option<String>, bool) =
            redis::pipe()
                .hmget(agent_key(id.as_str()), record_fields())
                .get(sequence_key(id.as_str()))
                .sismember(QUARANTINED, id.as_str())
                .query_async(&mut self.redis.clone())
                .await?;
        let last_sequence = match sequence {
            Some(text) => Some(text.parse().map_err(|_| StoreError::Corrupt {
                key: sequence_key(id.as_str()),
                detail: format!("not a sequence number: {text:?}"),
            })?),
            None => None,
        };
        Ok(Snapshot {
            agent: StoredAgent::parse(id.as_str(), values, &mut self.keys.parser())?,
            last_sequence,
            quarantined,
        })
    }

    /// Writes `new` if the agent is still as `old` was read (absent when `None`), with the
    /// agent's `metadata` if given, recording `sequence` if given. Only changed fields are
    /// sent.
    pub async fn put(
        &self,
        old: Option<&StoredAgent>,
        new: &StoredAgent,
        metadata: Option<&BTreeMap<String, String>>,
        sequence: Option<u64>,
        seen: Seen,
    ) -> Result<Committed, StoreError> {
        let id = new.info.agent_id.as_str();
        let old_caps: &[String] = old.map(|a| a.info.capabilities.as_slice()).unwrap_or(&[]);
        let new_caps = &new.info.capabilities;
        let leave: Vec<&String> = old_caps.iter().filter(|c| !new_caps.contains(c)).collect();
        let join: Vec<&String> = new_caps.iter().filter(|c| !old_caps.contains(c)).collect();
        let mut call = self.commit.prepare_invoke();
        call.key(agent_key(id))
            .key(sequence_key(id))
            .key(AGENTS)
            .key(SEEN)
            .key(status_key(old.map_or(new.info.status, |a| a.info.status)))
            .key(status_key(new.info.status));
        for cap in leave.iter().chain(&join) {
            call.key(capability_key(cap));
        }
        call.arg("put")
            .arg(old.map(|a| a.rev.to_string()).unwrap_or_default())
            .arg(sequence.map(padded).unwrap_or_default())
            .arg(id)
            .arg(match seen {
                Seen::Keep => String::new(),
                Seen::At(ms) => ms.to_string(),
                Seen::Forget => "-".to_owned(),
            })
            .arg(leave.len())
            .arg(0);
        let old_values = old.map(StoredAgent::fields);
        for (i, value) in new.fields().into_iter().enumerate() {
            if old_values.as_ref().is_none_or(|old| old[i] != value) {
                call.arg(FIELDS[i]).arg(value);
            }
        }
        if let Some(metadata) = metadata {
            let json: serde_json::Map<String, serde_json::Value> = metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone().into()))
                .collect();
            call.arg("metadata")
                .arg(serde_json::Value::Object(json).to_string());
        }
        self.run_commit(&call).await
    }

    /// Removes the agent if it is still as read, recording `sequence`, which then expires
    /// after `sequence_ttl_ms`.
    pub async fn delete(
        &self,
        old: &StoredAgent,
        sequence: u64,
        sequence_ttl_ms: u64,
    ) -> Result<Committed, StoreError> {
        let id = old.info.agent_id.as_str();
        let status = status_key(old.info.status);
        let mut call = self.commit.prepare_invoke();
        call.key(agent_key(id))
            .key(sequence_key(id))
            .key(AGENTS)
            .key(SEEN)
            .key(&status)
            .key(&status);
        for cap in &old.info.capabilities {
            call.key(capability_key(cap));
        }
        call.arg("delete")
            .arg(old.rev.to_string())
            .arg(padded(sequence))
            .arg(id)
            .arg("")
            .arg(old.info.capabilities.len())
            .arg(sequence_ttl_ms.max(1));
        self.run_commit(&call).await
    }

    async fn run_commit(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<Committed, StoreError> {
        let outcome: String = call.invoke_async(&mut self.redis.clone()).await?;
        match outcome.as_str() {
            "ok" => Ok(Committed::Done),
            "conflict" => Ok(Committed::Conflict),
            "replay" => Ok(Committed::Replay),
            _ => Err(StoreError::Script(outcome)),
        }
    }

    /// Ids with `capability` and `status` (each filter optional), in no particular order.
    pub async fn ids(
        &self,
        capability: Option<&str>,
        status: Option<AgentStatus>,
    ) -> Result<Vec<String>, StoreError> {
        let cmd = match (capability, status) {
            (Some(c), Some(s)) => redis::Cmd::sinter(&[capability_key(c), status_key(s)]),
            (Some(c), None) => redis::Cmd::smembers(capability_key(c)),
            (None, Some(s)) => redis::Cmd::smembers(status_key(s)),
            (None, None) => redis::Cmd::smembers(AGENTS),
        };
        Ok(cmd.query_async(&mut self.redis.clone()).await?)
    }

    /// The agents with these ids, in one pipelined round trip; absent ids are left out and
    /// corrupt records skipped (and logged), so one bad record cannot break every query.
    pub async fn agents(&self, ids: &[String]) -> Result<Vec<StoredAgent>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hmget(agent_key(id), record_fields());
        }
        let records: Vec<Vec<Option<String>>> = pipe.query_async(&mut self.redis.clone()).await?;
        let mut key = self.keys.parser();
        Ok(ids
            .iter()
            .zip(records)
            .filter_map(
                |(id, values)| match StoredAgent::parse(id, values, &mut key) {
                    Ok(agent) => agent,
                    Err(e) => {
                        tracing::warn!(error = %e, "skipping a corrupt agent record");
                        None
                    }
                },
            )
            .collect())
    }

    /// Agents on the sweeper's work list last seen at or before `before_ms`.
    pub async fn silent_since(&self, before_ms: u64) -> Result<Vec<String>, StoreError> {
        Ok(redis::Cmd::zrangebyscore(SEEN, "-inf", before_ms)
            .query_async(&mut self.redis.clone())
            .await?)
    }

    /// Takes an id off the sweeper's work list if it was last seen at or before `before_ms`.
    pub async fn forget_seen(&self, id: &str, before_ms: u64) -> Result<(), StoreError> {
        let _: i64 = self
            .forget
            .key(SEEN)
            .arg(id)
            .arg(before_ms)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Records valid evidence and marks the id quarantined, atomically.
    pub async fn keep_evidence(&self, id: &AgentId, evidence: Vec<u8>) -> Result<(), StoreError> {
        let key = evidence_key(id.as_str());
        Ok(redis::pipe()
            .atomic()
            .lpush(&key, evidence)
            .ignore()
            .ltrim(&key, 0, EVIDENCE_KEPT - 1)
            .ignore()
            .sadd(QUARANTINED, id.as_str())
            .ignore()
            .query_async(&mut self.redis.clone())
            .await?)
    }

    /// Number of agents per status.
    pub async fn status_counts(&self) -> Result<Vec<(AgentStatus, u64)>, StoreError> {
        let mut pipe = redis::pipe();
        for status in AgentStatus::ALL {
            pipe.scard(status_key(status));
        }
        let counts: Vec<u64> = pipe.query_async(&mut self.redis.clone()).await?;
        Ok(AgentStatus::ALL.into_iter().zip(counts).collect())
    }

    /// Takes or renews the sweep lease for `ttl_ms`; false while another instance holds it.
    pub async fn acquire_sweep_lease(&self, owner: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        let held: i64 = self
            .acquire
            .key(SWEEP_LEASE)
            .arg(owner)
            .arg(ttl_ms.max(1))
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(held == 1)
    }

    pub async fn release_sweep_lease(&self, owner: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .release
            .key(SWEEP_LEASE)
            .arg(owner)
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mabeam_protocol::AgentKeypair;

    fn sample() -> StoredAgent {
        StoredAgent {
            info: AgentInfo {
                agent_id: AgentId::new("a-1").unwrap(),
                kind: "llm".into(),
                capabilities: vec!["gpu".into(), "ml \"eval\"".into()],
                expertise: 0.1 + 0.2,
                public_key: AgentKeypair::from_secret_bytes([3; 32]).public_key(),
                status: AgentStatus::Recovered,
                registered_ms: 1_700_000_000_000,
                last_heartbeat_ms: Some(1_700_000_000_500),
                load: 1.5,
                capacity: 1e-300,
            },
            rev: 7,
        }
    }

    /// What HMGET returns for `agent`.
    fn stored(agent: &StoredAgent) -> Vec<Option<String>> {
        std::iter::once(agent.rev.to_string())
            .chain(agent.fields())
            .map(Some)
            .collect()
    }

    #[test]
    fn records_survive_the_hash_encoding_exactly() {
        for heartbeat in [Some(1_700_000_000_500), None] {
            let mut agent = sample();
            agent.info.last_heartbeat_ms = heartbeat;
            let parsed = StoredAgent::parse("a-1", stored(&agent), &mut PublicKey::parse)
                .unwrap()
                .unwrap();
            assert_eq!(parsed, agent);
            assert_eq!(parsed.info.expertise.to_bits(), (0.1f64 + 0.2).to_bits());
        }
        let absent = vec![None; FIELDS.len() + 1];
        assert_eq!(
            StoredAgent::parse("a-1", absent, &mut PublicKey::parse).unwrap(),
            None
        );
        assert_eq!(record_fields().len(), FIELDS.len() + 1);
    }

    #[test]
    fn damaged_records_are_reported_not_trusted() {
        let good = stored(&sample());
        let at = |field: &str| 1 + FIELDS.iter().position(|f| *f == field).unwrap();
        for (field, value) in [
            ("status", Some("asleep")),
            ("expertise", Some("lots")),
            ("public_key", Some("00")),
            ("capabilities", Some("[1")),
            ("load", None),
        ] {
            let mut values = good.clone();
            values[at(field)] = value.map(str::to_owned);
            let err = StoredAgent::parse("a-1", values, &mut PublicKey::parse).unwrap_err();
            assert!(
                err.to_string().contains("mabeam:registry:agent:a-1"),
                "{err}"
            );
        }
        let mut values = good.clone();
        values[0] = Some("x".into());
        assert!(StoredAgent::parse("a-1", values, &mut PublicKey::parse).is_err());
    }

    #[test]
    fn cached_keys_are_the_parsed_keys() {
        let cache = KeyCache::default();
        let key = AgentKeypair::from_secret_bytes([3; 32]).public_key();
        let mut parse = cache.parser();
        assert_eq!(parse(&key.to_hex()), Ok(key));
        assert_eq!(parse(&key.to_hex()), Ok(key));
        assert_eq!(parse("zz"), Err(KeyError::Encoding));
    }

    #[test]
    fn padded_sequences_order_as_numbers() {
        let mut seqs = [0, 9, 10, 1_700_000_000_000_000, u64::MAX];
        seqs.sort_by_key(|s| padded(*s));
        assert_eq!(seqs, [0, 9, 10, 1_700_000_000_000_000, u64::MAX]);
        assert_eq!(padded(u64::MAX).len(), 20);
    }

    #[test]
    fn last_seen_is_the_later_of_heartbeat_and_registration() {
        let mut a = sample();
        assert_eq!(a.last_seen_ms(), 1_700_000_000_500);
        a.info.registered_ms = 1_700_000_001_000;
        assert_eq!(a.last_seen_ms(), 1_700_000_001_000);
        a.info.last_heartbeat_ms = None;
        assert_eq!(a.last_seen_ms(), 1_700_000_001_000);
    }
}
