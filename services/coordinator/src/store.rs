//! Session state in Redis, under leases with fencing tokens.
//!
//! A session is a record (the task, its electorate, seed, start time) plus an append-only log
//! of the inputs the session machine consumed (envelope batches and timer firings, each with
//! its `now`). The consensus core is deterministic, so replaying the log rebuilds the exact
//! state: that is how another replica resumes a session whose owner died.
//!
//! Every write goes through a Lua script that first checks the lease still holds this
//! owner's token (`<instance>#<fence>`, the fence from a per-task counter that only grows),
//! so a stale owner — paused, partitioned, presumed dead — can never write over the new one.

use mabeam_consensus::Electorate;
use mabeam_protocol::{
    session::{LiveSession, SessionView, TaskState},
    task::TaskSubmission,
    SessionId, SignedEnvelope, TaskId, TaskResult, PROTOCOL_VERSION,
};
use redis::{aio::ConnectionManager, Script};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// What a session starts from, persisted once when it starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SessionRecord {
    pub(crate) task_id: TaskId,
    pub(crate) session_id: SessionId,
    pub(crate) task: TaskSubmission,
    pub(crate) electorate: Electorate,
    pub(crate) seed: u64,
    pub(crate) started_ms: u64,
    /// When JetStream received the task.
    pub(crate) submitted_ms: Option<u64>,
    pub(crate) clock_tolerance_ms: u64,
}

/// One input the session machine consumed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum LogEntry {
    Envelopes {
        now_ms: u64,
        envelopes: Vec<SignedEnvelope>,
    },
    Timeout {
        now_ms: u64,
    },
}

/// Proof of ownership of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) task_id: TaskId,
    pub(crate) token: String,
}

/// What happened when a replica tried to start a session.
#[derive(Debug)]
pub(crate) enum StartOutcome {
    Started(Lease),
    /// A result exists: the task was already decided (redelivery or duplicate).
    AlreadyFinished,
    /// A live replica owns it.
    OwnedElsewhere,
    /// State exists but no lease: the owner died; resume it.
    Orphaned,
}

const ACTIVE: &str = "mabeam:coord:active";

fn lease_key(task: &TaskId) -> String {
    format!("mabeam:coord:lease:{task}")
}
fn fence_key(task: &TaskId) -> String {
    format!("mabeam:coord:fence:{task}")
}
fn session_key(task: &TaskId) -> String {
    format!("mabeam:coord:session:{task}")
}
fn log_key(task: &TaskId) -> String {
    format!("mabeam:coord:log:{task}")
}
pub(crate) fn result_key(task: &TaskId) -> String {
    format!("mabeam:result:{task}")
}

const START: &str = r"
if redis.call('EXISTS', KEYS[5]) == 1 then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[4]) == 1 then return -2 end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. fence, 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[2]), ARGV[4])
redis.call('HSET', KEYS[4], 'record', ARGV[5], 'round', '0', 'owner', ARGV[1])
return fence
";

const TAKEOVER: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('ZREM', KEYS[3], ARGV[4])
  return -1
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '#' .. fence, 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], tonumber(ARGV[3]) + tonumber(ARGV[2]), ARGV[4])
redis.call('HSET', KEYS[4], 'owner', ARGV[1])
return fence
";

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[3]) + tonumber(ARGV[2]), ARGV[4])
return 1
";

const APPEND: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], 'round', ARGV[3])
return 1
";

const FINISH: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('DEL', KEYS[3], KEYS[4], KEYS[1])
redis.call('ZREM', KEYS[5], ARGV[4])
return 1
";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[2], 0, ARGV[2])
return 1
";

#[derive(Clone)]
pub(crate) struct Store {
    redis: ConnectionManager,
    instance: String,
    lease_ms: u64,
    result_ttl_s: u64,
    scripts: std::sync::Arc<Scripts>,
}

struct Scripts {
    start: Script,
    takeover: Script,
    renew: Script,
    append: Script,
    finish: Script,
    release: Script,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("instance", &self.instance)
            .field("lease_ms", &self.lease_ms)
            .finish_non_exhaustive()
    }
}

fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    rmp_serde::to_vec_named(value).map_err(|e| StoreError::Encode(what, e.to_string()))
}

fn decode<T: for<'de> Deserialize<'de>>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Decode(what, e.to_string()))
}

/// Runs one store operation, recording its duration and (except lost leases) its failures.
async fn timed<T>(
    op: &'static str,
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = std::time::Instant::now();
    let r = work.await;
    metrics::histogram!("mabeam_coordinator_store_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
    if let Err(e) = &r {
        if !matches!(e, StoreError::LeaseLost) {
            metrics::counter!("mabeam_coordinator_store_errors_total", "op" => op).increment(1);
        }
    }
    r
}

impl Store {
    pub(crate) fn new(
        redis: ConnectionManager,
        instance: &str,
        lease_ms: u64,
        result_ttl_s: u64,
    ) -> Self {
        Self {
            redis,
            instance: instance.to_owned(),
            lease_ms,
            result_ttl_s,
            scripts: std::sync::Arc::new(Scripts {
                start: Script::new(START),
                takeover: Script::new(TAKEOVER),
                renew: Script::new(RENEW),
                append: Script::new(APPEND),
                finish: Script::new(FINISH),
                release: Script::new(RELEASE),
            }),
        }
    }

    fn lease(&self, task: &TaskId, fence: i64) -> Lease {
        Lease {
            task_id: task.clone(),
            token: format!("{}#{fence}", self.instance),
        }
    }

    pub(crate) async fn start(
        &self,
        record: &SessionRecord,
        now_ms: u64,
    ) -> Result<StartOutcome, StoreError> {
        timed("start", async {
            let task = &record.task_id;
            let code: i64 = self
                .scripts
                .start
                .key(lease_key(task))
                .key(fence_key(task))
                .key(ACTIVE)
                .key(session_key(task))
                .key(result_key(task))
                .arg(&self.instance)
                .arg(self.lease_ms)
                .arg(now_ms)
                .arg(task.as_str())
                .arg(encode("session record", record)?)
                .invoke_async(&mut self.redis.clone())
                .await?;
            Ok(match code {
                -1 => StartOutcome::AlreadyFinished,
                -2 => StartOutcome::Orphaned,
                0 => StartOutcome::OwnedElsewhere,
                fence => StartOutcome::Started(self.lease(task, fence)),
            })
        })
        .await
    }

    /// Claims a session whose lease expired. `None` when someone else holds it or it is gone.
    pub(crate) async fn take_over(
        &self,
        task: &TaskId,
        now_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        let code: i64 = self
            .scripts
            .takeover
            .key(lease_key(task))
            .key(fence_key(task))
            .key(ACTIVE)
            .key(session_key(task))
            .arg(&self.instance)
            .arg(self.lease_ms)
            .arg(now_ms)
            .arg(task.as_str())
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok((code > 0).then(|| self.lease(task, code)))
    }

    /// Renews many leases in one pipeline; returns the tasks whose lease was lost.
    pub(crate) async fn renew(
        &self,
        leases: &[Lease],
        now_ms: u64,
    ) -> Result<Vec<TaskId>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        // Pipelined scripts go by SHA only; loading first makes them survive a Redis restart
        // (which empties the script cache).
        pipe.cmd("SCRIPT").arg("LOAD").arg(RENEW).ignore();
        for l in leases {
            pipe.invoke_script(
                self.scripts
                    .renew
                    .key(lease_key(&l.task_id))
                    .key(ACTIVE)
                    .arg(&l.token)
                    .arg(self.lease_ms)
                    .arg(now_ms)
                    .arg(l.task_id.as_str()),
            );
        }
        let codes: Vec<i64> = pipe.query_async(&mut self.redis.clone()).await?;
        Ok(leases
            .iter()
            .zip(codes)
            .filter(|(_, c)| *c == 0)
            .map(|(l, _)| l.task_id.clone())
            .collect())
    }

    pub(crate) async fn append(
        &self,
        lease: &Lease,
        entry: &LogEntry,
        round: u32,
    ) -> Result<(), StoreError> {
        let task = &lease.task_id;
        let mut invocation = self.scripts.append.prepare_invoke();
        invocation
            .key(lease_key(task))
            .key(log_key(task))
            .key(session_key(task))
            .arg(&lease.token)
            .arg(encode("log entry", entry)?)
            .arg(round);
        self.fenced("append", &invocation).await
    }

    /// Stores the result and deletes the session state, atomically and only while owning it.
    pub(crate) async fn finish(
        &self,
        lease: &Lease,
        result: &TaskResult,
    ) -> Result<(), StoreError> {
        let task = &lease.task_id;
        let mut invocation = self.scripts.finish.prepare_invoke();
        invocation
            .key(lease_key(task))
            .key(result_key(task))
            .key(session_key(task))
            .key(log_key(task))
            .key(ACTIVE)
            .arg(&lease.token)
            .arg(encode("result", result)?)
            .arg(self.result_ttl_s)
            .arg(task.as_str());
        self.fenced("finish", &invocation).await
    }

    /// Runs a script that writes only while `lease` still holds (it answers 1, else 0).
    async fn fenced(
        &self,
        op: &'static str,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<(), StoreError> {
        timed(op, async {
            let ok: i64 = invocation.invoke_async(&mut self.redis.clone()).await?;
            if ok == 1 {
                Ok(())
            } else {
                Err(StoreError::LeaseLost)
            }
        })
        .await
    }

    /// Gives a session back (shutdown): its lease disappears and it is marked for immediate
    /// resumption by another replica.
    pub(crate) async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .release
            .key(lease_key(&lease.task_id))
            .key(ACTIVE)
            .arg(&lease.token)
            .arg(lease.task_id.as_str())
            .invoke_async(&mut self.redis.clone())
            .await?;
        Ok(())
    }

    /// Stores the result of a task that never had a session (rejected); the first one wins.
    pub(crate) async fn store_unsessioned_result(
        &self,
        result: &TaskResult,
    ) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(result_key(&result.task_id))
            .arg(encode("result", result)?)
            .arg("NX")
            .arg("EX")
            .arg(self.result_ttl_s)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(set.is_some())
    }

    pub(crate) async fn result(&self, task: &TaskId) -> Result<Option<TaskResult>, StoreError> {
        let bytes: Option<Vec<u8>> = redis::cmd("GET")
            .arg(result_key(task))
            .query_async(&mut self.redis.clone())
            .await?;
        bytes.map(|b| decode("result", &b)).transpose()
    }

    /// The record and log of a session, for replay.
    pub(crate) async fn load(
        &self,
        task: &TaskId,
    ) -> Result<Option<(SessionRecord, Vec<LogEntry>)>, StoreError> {
        let (record, log): (Option<Vec<u8>>, Vec<Vec<u8>>) = redis::pipe()
            .hget(session_key(task), "record")
            .lrange(log_key(task), 0, -1)
            .query_async(&mut self.redis.clone())
            .await?;
        let Some(record) = record else {
            return Ok(None);
        };
        let record = decode("session record", &record)?;
        let log = log
            .iter()
            .map(|e| decode("log entry", e))
            .collect::<Result<_, _>>()?;
        Ok(Some((record, log)))
    }

    /// Tasks whose lease expired by `now_ms` (their owner stopped renewing).
    pub(crate) async fn orphans(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<TaskId>, StoreError> {
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(ACTIVE)
            .arg("-inf")
            .arg(now_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(ids
            .into_iter()
            .filter_map(|id| TaskId::new(id).ok())
            .collect())
    }

    /// Whether a task has its result, a session, or neither: two EXISTS, for pollers.
    pub(crate) async fn progress(&self, task: &TaskId) -> Result<TaskState, StoreError> {
        let (finished, running): (bool, bool) = redis::pipe()
            .exists(result_key(task))
            .exists(session_key(task))
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(match (finished, running) {
            (true, _) => TaskState::Finished,
            (false, true) => TaskState::Running,
            (false, false) => TaskState::Queued,
        })
    }

    /// What `mabeam.sessions.get` reports.
    pub(crate) async fn view(&self, task: &TaskId) -> Result<Option<SessionView>, StoreError> {
        type Fields = (
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<u32>,
            Option<String>,
        );
        let (result, record, round, owner): Fields = redis::pipe()
            .get(result_key(task))
            .hget(session_key(task), "record")
            .hget(session_key(task), "round")
            .hget(session_key(task), "owner")
            .query_async(&mut self.redis.clone())
            .await?;
        if let Some(bytes) = result {
            return Ok(Some(SessionView {
                v: PROTOCOL_VERSION,
                task_id: task.clone(),
                state: TaskState::Finished,
                live: None,
                result: Some(decode("result", &bytes)?),
            }));
        }
        let Some(record) = record else {
            return Ok(None);
        };
        let record: SessionRecord = decode("session record", &record)?;
        let timeout = record
            .task
            .timeout_ms
            .unwrap_or(mabeam_consensus::session::DEFAULT_TIMEOUT_MS);
        Ok(Some(SessionView {
            v: PROTOCOL_VERSION,
            task_id: task.clone(),
            state: TaskState::Running,
            live: Some(LiveSession {
                session_id: record.session_id,
                algorithm: record.task.algorithm,
                round: round.unwrap_or(0),
                participants: record.electorate.len() as u32,
                started_ms: record.started_ms,
                deadline_ms: record.started_ms.saturating_add(timeout),
                owner: owner.unwrap_or_default(),
            }),
            result: None,
        }))
    }
}
