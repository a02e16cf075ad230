//! The HTTP side of every service: `/metrics`, `/healthz` (the process runs), `/readyz`
//! (its dependencies are reachable), plus any routes the service adds.

use std::net::SocketAddr;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::{Readiness, RuntimeError, Shutdown};

#[derive(Clone)]
struct Probes {
    metrics: PrometheusHandle,
    readiness: Readiness,
}

async fn metrics(State(p): State<Probes>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        p.metrics.render(),
    )
}

async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

async fn readyz(State(p): State<Probes>) -> impl IntoResponse {
    let ready = p.readiness.is_ready();
    let body = serde_json::json!({
        "ready": ready,
        "draining": p.readiness.is_draining(),
        "checks": p.readiness.checks(),
    });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// Binds `addr` and serves the probes and `extra` until `shutdown`; returns the bound address
/// (port 0 picks a free one).
pub async fn serve(
    addr: SocketAddr,
    metrics_handle: PrometheusHandle,
    readiness: Readiness,
    extra: Router,
    shutdown: Shutdown,
) -> Result<SocketAddr, RuntimeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RuntimeError::HttpBind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| RuntimeError::HttpBind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Probes {
            metrics: metrics_handle,
            readiness,
        })
        .merge(extra);
    tokio::spawn(async move {
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tracing::info!(addr = %bound, "HTTP listening (/metrics /healthz /readyz)");
    Ok(bound)
}
