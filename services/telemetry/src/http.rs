//! `GET /audit?task_id=&agent_id=&since_ms=&until_ms=&limit=` on the service's HTTP port:
//! the same query as `mabeam.telemetry.audit`, answered with a JSON [`AuditPage`], or a
//! JSON [`ErrorReply`] with status 400 (bad query) or 503 (Redis unavailable).
//!
//! [`AuditPage`]: mabeam_protocol::telemetry::AuditPage

use std::sync::{Arc, OnceLock};

use axum::{
    extract::{rejection::QueryRejection, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use mabeam_protocol::{
    telemetry::AuditQuery, AgentId, ErrorCode, ErrorReply, TaskId, PROTOCOL_VERSION,
};
use mabeam_runtime::reply::{record_refusal, ERROR_HEADER};

use crate::{AuditError, AuditStore};

/// The store, filled in once Redis is connected (the HTTP listener comes up first).
pub(crate) type StoreSlot = Arc<OnceLock<AuditStore>>;

pub(crate) fn routes(slot: StoreSlot) -> Router {
    Router::new().route("/audit", get(audit)).with_state(slot)
}

async fn audit(
    State(slot): State<StoreSlot>,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let result = match params {
        Ok(Query(pairs)) => match parse(&pairs) {
            Ok(query) => match slot.get() {
                Some(store) => store.query(&query).await,
                None => Err(AuditError::Unavailable("still connecting to Redis".into())),
            },
            Err(e) => Err(e),
        },
        Err(rejection) => Err(AuditError::InvalidQuery(rejection.body_text())),
    };
    match result {
        Ok(page) => Json(page).into_response(),
        Err(e) => {
            let code = e.code();
            let message = e.to_string();
            record_refusal("http_audit", code, &message);
            let status = match code {
                ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
                _ => StatusCode::BAD_REQUEST,
            };
            (
                status,
                [(ERROR_HEADER, code.as_str())],
                Json(ErrorReply::new(code, message)),
            )
                .into_response()
        }
    }
}

/// Reads the query string; unknown or repeated parameters are refused so a typo does not
/// silently widen the query.
fn parse(pairs: &[(String, String)]) -> Result<AuditQuery, AuditError> {
    let mut query = AuditQuery {
        v: PROTOCOL_VERSION,
        ..AuditQuery::default()
    };
    let mut seen = Vec::new();
    for (key, value) in pairs {
        if seen.contains(&key.as_str()) {
            return Err(AuditError::InvalidQuery(format!("{key} is given twice")));
        }
        seen.push(key.as_str());
        let number = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                AuditError::InvalidQuery(format!("{key} must be a non-negative integer, got {v:?}"))
            })
        };
        let invalid = |e: mabeam_protocol::IdError| AuditError::InvalidQuery(e.to_string());
        match key.as_str() {
            "task_id" => query.task_id = Some(TaskId::new(value.as_str()).map_err(invalid)?),
            "agent_id" => query.agent_id = Some(AgentId::new(value.as_str()).map_err(invalid)?),
            "since_ms" => query.since_ms = Some(number(value)?),
            "until_ms" => query.until_ms = Some(number(value)?),
            "limit" => {
                let limit = number(value)?;
                query.limit = Some(u32::try_from(limit).unwrap_or(u32::MAX));
            }
            other => {
                return Err(AuditError::InvalidQuery(format!(
                    "unknown parameter {other:?}; expected task_id, agent_id, since_ms, \
                     until_ms or limit"
                )))
            }
        }
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn every_parameter_is_read() {
        let q = parse(&pairs(&[
            ("task_id", "t1"),
            ("agent_id", "a1"),
            ("since_ms", "5"),
            ("until_ms", "9"),
            ("limit", "7"),
        ]))
        .unwrap();
        assert_eq!(q.task_id.unwrap().as_str(), "t1");
        assert_eq!(q.agent_id.unwrap().as_str(), "a1");
        assert_eq!(
            (q.since_ms, q.until_ms, q.limit),
            (Some(5), Some(9), Some(7))
        );
    }

    #[test]
    fn bad_parameters_are_refused_with_a_reason() {
        for (list, needle) in [
            (vec![("task", "t1")], "unknown parameter"),
            (vec![("task_id", "a.b")], "contains '.'"),
            (vec![("agent_id", "")], "must not be empty"),
            (vec![("since_ms", "yesterday")], "non-negative integer"),
            (vec![("limit", "-1")], "non-negative integer"),
            (vec![("limit", "1"), ("limit", "2")], "given twice"),
        ] {
            let e = parse(&pairs(&list)).unwrap_err();
            assert!(e.to_string().contains(needle), "{list:?}: {e}");
            assert_eq!(e.code(), ErrorCode::InvalidParams);
        }
    }
}
