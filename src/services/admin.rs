//! The admin listener (`--admin-listen`): what is not client traffic, on a
//! port of its own so it can be fenced. `GET /metrics` (Prometheus),
//! `GET /livez` (the process serves), `GET /readyz` (it can route: not
//! shutting down, and some worker is healthy; its `registry` field says
//! where workers are kept and, for etcd, whether it is reachable: routing
//! goes on without it, so that alone does not make the router unready),
//! and the live dashboard:
//! `GET /` (the page), `GET /events` (its server-sent snapshots) and
//! `GET /api/snapshot` (one snapshot as JSON, for scripts).
//!
//! No keys: it serves nothing a client could use to change routing, and a
//! scraper or a kubelet probe should not need one. It listens on loopback
//! unless told otherwise.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::sync::watch;

use super::metrics::Policies;
use super::overload::CallLimit;
use super::{dashboard, metrics};
use crate::store::Store;
use crate::tenants::Tenants;
use crate::worker::WorkerRegistry;

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Registry>,
    registry: Arc<WorkerRegistry>,
    limit: Arc<CallLimit>,
    store: Arc<Store>,
    policies: Policies,
    tenants: Arc<Tenants>,
    /// True once the router is shutting down.
    stopping: watch::Receiver<bool>,
}

/// The admin API over `registry` (kept by `store`), scraping `metrics`;
/// `stopping` turns true when a shutdown begins.
pub fn routes(
    metrics: Arc<Registry>,
    (registry, limit, store, policies, tenants): (
        Arc<WorkerRegistry>,
        Arc<CallLimit>,
        Arc<Store>,
        Policies,
        Arc<Tenants>,
    ),
    stopping: watch::Receiver<bool>,
) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/livez", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/", get(page))
        .route("/events", get(events))
        .route("/api/snapshot", get(snapshot))
        .with_state(AdminState {
            metrics,
            registry,
            limit,
            store,
            policies,
            tenants,
            stopping,
        })
}

async fn events(State(s): State<AdminState>) -> Response {
    dashboard::events(s.registry, (s.limit, s.tenants), s.policies).into_response()
}

async fn page(State(s): State<AdminState>) -> Html<String> {
    Html(dashboard::page(&dashboard::History::default().snapshot(
        &s.registry,
        (&s.limit, &s.tenants),
        &s.policies,
    )))
}

async fn snapshot(State(s): State<AdminState>) -> Json<serde_json::Value> {
    Json(dashboard::History::default().snapshot(&s.registry, (&s.limit, &s.tenants), &s.policies))
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
        "registry": s.store.status(),
    });
    (status, Json(body)).into_response()
}
