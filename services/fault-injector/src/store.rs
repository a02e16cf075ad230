//! Active and scheduled faults in Redis, so a restarted injector re-applies them and still
//! heals them on time. Times are absolute (ms since the epoch) for that reason.

use mabeam_protocol::fault::{ActiveFault, FaultKind};
use redis::{aio::ConnectionManager, AsyncCommands};
use serde::{Deserialize, Serialize};

/// Hash: fault id → JSON [`Record`].
pub const ACTIVE_KEY: &str = "mabeam:faults:active";
/// Counter behind generated ids (`f-<n>`), unique across restarts.
pub const SEQ_KEY: &str = "mabeam:faults:seq";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub fault: FaultKind,
    pub created_ms: u64,
    pub starts_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_ms: Option<u64>,
}

impl Record {
    pub fn view(&self) -> ActiveFault {
        ActiveFault {
            id: self.id.clone(),
            fault: self.fault.clone(),
            started_ms: self.starts_ms,
            ends_ms: self.ends_ms,
        }
    }
}

pub async fn save(redis: &mut ConnectionManager, record: &Record) -> redis::RedisResult<()> {
    let json = serde_json::to_string(record).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::Client,
            "cannot encode fault record",
            e.to_string(),
        ))
    })?;
    redis.hset(ACTIVE_KEY, &record.id, json).await
}

pub async fn delete(redis: &mut ConnectionManager, ids: &[String]) -> redis::RedisResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    redis.hdel(ACTIVE_KEY, ids).await
}

/// Every stored record; unreadable ones are logged, counted and skipped (not deleted, so
/// an operator can look at them).
pub async fn load(redis: &mut ConnectionManager) -> redis::RedisResult<Vec<Record>> {
    let raw: Vec<(String, String)> = redis.hgetall(ACTIVE_KEY).await?;
    let mut records = Vec::with_capacity(raw.len());
    for (id, json) in raw {
        match serde_json::from_str::<Record>(&json) {
            Ok(r) if r.id == id => records.push(r),
            Ok(_) => {
                tracing::warn!(fault_id = %id, "stored fault record names another id; skipped")
            }
            Err(e) => {
                metrics::counter!("mabeam_fault_injector_unreadable_records_total").increment(1);
                tracing::warn!(fault_id = %id, error = %e, "unreadable stored fault record; skipped");
            }
        }
    }
    Ok(records)
}

pub async fn next_id(redis: &mut ConnectionManager) -> redis::RedisResult<String> {
    let n: u64 = redis.incr(SEQ_KEY, 1).await?;
    Ok(format!("f-{n}"))
}
