//! The admin listener (`--admin-listen`): what is not client traffic, on a
//! port of its own so it can be fenced. `GET /metrics` (Prometheus),
//! `GET /livez` (the process serves), `GET /readyz` (it can route: not
//! shutting down, and some worker is healthy).
//!
//! No keys: it serves nothing a client could use to change routing, and a
//! scraper or a kubelet probe should not need one. It listens on loopback
//! unless told otherwise.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::watch;

use super::metrics;
use crate::worker::WorkerRegistry;

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Registry>,
    registry: Arc<WorkerRegistry>,
    /// True once the router is shutting down.
    stopping: watch::Receiver<bool>,
}

/// The admin API over `registry`, scraping `metrics`; `stopping` turns
/// true when a shutdown begins.
pub fn routes(
    metrics: Arc<Registry>,
    registry: Arc<WorkerRegistry>,
    stopping: watch::Receiver<bool>,
) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/livez", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .with_state(AdminState {
            metrics,
            registry,
            stopping,
        })
}

async fn scrape(State(s): State<AdminState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::encode(&s.metrics),
    )
        .into_response()
}

async fn ready(State(s): State<AdminState>) -> Response {
    let workers = s.registry.list();
    let healthy = workers.iter().filter(|w| w.is_healthy()).count();
    let stopping = *s.stopping.borrow();
    let (status, why) = match (stopping, healthy) {
        (true, _) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
        (false, 0) => (StatusCode::SERVICE_UNAVAILABLE, "no healthy worker"),
        (false, _) => (StatusCode::OK, "ready"),
    };
    let body = json!({
        "status": why,
        "workers": workers.len(),
        "healthy_workers": healthy,
    });
    (status, Json(body)).into_response()
}
