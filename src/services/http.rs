//! The HTTP API (axum): inference endpoints routed to HTTP workers, model
//! discovery, health and readiness, and worker management mirroring the gRPC
//! service on the same registry. Handlers are thin: parse, call the router or
//! registry, map errors through `http_error`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::{json, Value};

use super::convert::{page, worker_json, WorkerJson, WorkerSpecJson};
use super::http_error::{HttpError, WorkersBusy};
use super::openai::{Endpoint, EngineFront};
use crate::admission::{Admission, Target, WorkerRequest};
use crate::auth::Keys;
use crate::routers::http::{HttpRouter, Relay};
use tracing::Instrument;

use crate::services::admit::{admit, cost_of, place_of, until_not_busy, Admitted, Gates, Holding};
use crate::services::tls::Peer;
use crate::tenants::{Cost, Meter, Ticket};
use crate::transport::idle::{BodyIdle, IdleTimeout};
use crate::worker::{ConnectionMode, WorkerRegistry, WorkerRole};

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    registry: Arc<WorkerRegistry>,
    admission: Admission,
    /// OpenAI and SGLang HTTP for models served by gRPC engine workers.
    engines: EngineFront,
    router: Arc<HttpRouter>,
    /// An inference body that sends nothing for this long is refused.
    body_idle: Duration,
    /// Who may call what.
    keys: Arc<Keys>,
    /// The router's limits and tenants, shared with the gRPC side.
    gates: Gates,
    /// The most header bytes an inference request may carry.
    max_metadata: usize,
}

/// The HTTP API over `registry` (adding workers through `admission`),
/// routing with `router`; a request body that sends nothing for
/// `body_idle` is refused with 408.
pub fn routes(
    registry: Arc<WorkerRegistry>,
    admission: Admission,
    router: Arc<HttpRouter>,
    engines: EngineFront,
    (body_idle, max_metadata): (Duration, usize),
    keys: Arc<Keys>,
    gates: Gates,
) -> Router {
    let state = HttpState {
        registry,
        admission,
        engines,
        router,
        body_idle,
        keys,
        gates,
        max_metadata,
    };
    // Worker management needs an admin key (when keys are configured).
    let management = Router::new()
        .route(
            "/workers",
            post(add_worker)
                .get(list_workers)
                .delete(remove_worker_by_query),
        )
        .route("/workers/{id}", get(get_worker).delete(remove_worker))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_admin,
        ));
    // Handlers that take a body read it with `read_body` (size limit and
    // idle timeout in one pass, without a middleware's boxed future per
    // request).
    Router::new()
        .route("/generate", post(generate))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/responses", post(responses))
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/readiness", get(readiness))
        .merge(management)
        .fallback(no_route)
        .with_state(state)
}

/// Anything else: a JSON 404 (405 for a known path, axum's) naming it.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {method} {}: the API serves /generate, /v1/completions, \
             /v1/chat/completions, /v1/responses, /v1/messages, /v1/messages/count_tokens, /v1/models, \
             /health, /readiness and /workers",
            uri.path()
        ),
    )
}

async fn require_admin(
    State(s): State<HttpState>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    // Set when the listener verifies client certificates.
    let client_cert = request
        .extensions()
        .get::<axum::extract::ConnectInfo<Peer>>()
        .is_some_and(|peer| peer.0.client_cert);
    match s.keys.check_admin(request.headers(), client_cert) {
        Ok(()) => next.run(request).await,
        Err(denied) => HttpError::from(denied).into_response(),
    }
}

/// Reads an inference request's body: at most `limit` bytes, each part
/// arriving within `idle` of the last; else 413 or 408.
async fn read_body(body: Body, limit: usize, idle: Duration) -> Result<Bytes, HttpError> {
    match Limited::new(IdleTimeout::new(body, idle), limit)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than the {limit}-byte limit"),
        )),
        Err(e) if BodyIdle::is_in(&*e) => Err(HttpError::new(
            StatusCode::REQUEST_TIMEOUT,
            "the request body stopped arriving before it was complete",
        )),
        Err(e) => Err(HttpError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

async fn forward(
    state: &HttpState,
    path: &'static str,
    endpoint: Endpoint,
    request: Request,
) -> Response {
    let tenant = match state.gates.tenants.check(&state.keys, request.headers()) {
        Ok(tenant) => tenant,
        Err(denied) => return HttpError::from(denied).into_response(),
    };
    if let Err(message) =
        crate::services::overload::check_metadata(request.headers(), state.max_metadata)
    {
        return HttpError::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, message)
            .into_response();
    }
    let (parts, body) = request.into_parts();
    let bytes = match read_body(body, state.router.max_body_bytes(), state.body_idle).await {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    let cost = match tenant.is_some() || state.gates.tenants.any() {
        true => cost_of(&bytes),
        false => Cost::default(),
    };
    let admitted = match admit(&state.gates.limit, tenant.as_ref(), cost, None).await {
        Ok(admitted) => admitted,
        Err(refused) => return refused.http(),
    };
    let Admitted { slot, mut ticket } = admitted;
    let meter = ticket.as_mut().map(Ticket::meter);
    let span = tracing::debug_span!("call", path, tenant = tenant.as_ref().map(|t| t.name()));
    let headers = &parts.headers;
    let routed = async {
        match state.registry.max_in_flight_per_worker() {
            0 => dispatch(state, (path, endpoint), headers, bytes, meter).await,
            // Every worker of the model may be at its limit: the call then
            // waits its turn for one.
            _ => {
                let place = place_of(tenant.as_ref(), cost, None);
                let gate = (&state.gates.busy, &place, state.registry.slot_freed());
                let busy = |r: &Response| r.extensions().get::<WorkersBusy>().is_some();
                until_not_busy(gate, busy, || {
                    dispatch(
                        state,
                        (path, endpoint),
                        headers,
                        bytes.clone(),
                        meter.clone(),
                    )
                })
                .await
            }
        }
    };
    let response = routed.instrument(span).await;
    if slot.is_none() && ticket.is_none() {
        return response;
    }
    // Refused (by the router or a worker) before anything was generated:
    // the tenant is not charged.
    if !response.status().is_success() {
        if let Some(ticket) = ticket.take() {
            ticket.refused();
        }
    }
    // The slot and ticket go with the body, released (and the ticket
    // settled) when it ends.
    response.map(|body| Holding::body(body, (slot, ticket)))
}

async fn dispatch(
    state: &HttpState,
    (path, endpoint): (&'static str, Endpoint),
    headers: &HeaderMap,
    bytes: Bytes,
    meter: Option<Arc<Meter>>,
) -> Response {
    // A model served by SGLang or vLLM gRPC workers: the router tokenizes
    // and calls them over gRPC. Looked at only when such workers exist.
    if state.engines.any() {
        #[derive(Deserialize)]
        struct Named<'a> {
            #[serde(borrow, default)]
            model: std::borrow::Cow<'a, str>,
        }
        let model = serde_json::from_slice::<Named<'_>>(&bytes)
            .map(|n| n.model.into_owned())
            .unwrap_or_default();
        if let Some(engine) = state.engines.engine_of(&model) {
            return state
                .engines
                .serve(endpoint, engine, headers, &bytes, meter)
                .await
                .unwrap_or_else(IntoResponse::into_response);
        }
    }
    state
        .router
        .forward(path, headers, bytes)
        .await
        .map(relay_response)
        .map_err(HttpError::from)
        .unwrap_or_else(IntoResponse::into_response)
}

/// A worker's relayed response as the client's.
fn relay_response(relay: Relay) -> Response {
    let mut response = Response::new(Body::new(relay.body));
    *response.status_mut() = relay.status;
    *response.headers_mut() = relay.headers;
    response
}

async fn generate(State(s): State<HttpState>, request: Request) -> Response {
    forward(&s, "/generate", Endpoint::Generate, request).await
}

async fn completions(State(s): State<HttpState>, request: Request) -> Response {
    forward(&s, "/v1/completions", Endpoint::Completions, request).await
}

async fn chat_completions(State(s): State<HttpState>, request: Request) -> Response {
    forward(&s, "/v1/chat/completions", Endpoint::Chat, request).await
}

async fn responses(State(s): State<HttpState>, request: Request) -> Response {
    forward(&s, "/v1/responses", Endpoint::Responses, request).await
}

async fn messages(State(s): State<HttpState>, request: Request) -> Response {
    forward(&s, "/v1/messages", Endpoint::Messages, request).await
}

async fn count_tokens(State(s): State<HttpState>, request: Request) -> Response {
    forward(
        &s,
        "/v1/messages/count_tokens",
        Endpoint::CountTokens,
        request,
    )
    .await
}

/// Every model with a worker, any mode, in OpenAI's list format.
async fn models(
    State(s): State<HttpState>,
    headers: axum::http::HeaderMap,
) -> Result<Json<Value>, HttpError> {
    s.gates.tenants.check(&s.keys, &headers)?;
    let names: std::collections::BTreeSet<String> = s
        .registry
        .list()
        .iter()
        .map(|w| w.model().to_string())
        .collect();
    let data: Vec<Value> = names
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "switchyard"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Per model (HTTP workers): ready when it can serve a request now.
async fn readiness(State(s): State<HttpState>) -> Response {
    let snapshot = s.registry.snapshot();
    let count = |role, model: &str| {
        snapshot
            .group(ConnectionMode::Http, role, model)
            .map_or((0, 0), |g| {
                (g.iter().filter(|w| w.is_healthy()).count(), g.len())
            })
    };
    let mut models = BTreeMap::new();
    let names: std::collections::BTreeSet<String> =
        [WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode]
            .iter()
            .flat_map(|r| snapshot.models(ConnectionMode::Http, *r))
            .map(|m| m.to_string())
            .collect();
    for model in names {
        let (healthy, total) = count(WorkerRole::Regular, &model);
        let (ph, pt) = count(WorkerRole::Prefill, &model);
        let (dh, dt) = count(WorkerRole::Decode, &model);
        let entry = if pt + dt > 0 {
            let ready = ph > 0 && dh > 0;
            json!({"status": status(ready), "prefill_healthy": ph, "decode_healthy": dh, "prefill_total": pt, "decode_total": dt})
        } else {
            json!({"status": status(healthy > 0), "healthy_workers": healthy, "total_workers": total})
        };
        models.insert(model, entry);
    }
    let ready = models.values().any(|m| m["status"] == "ready");
    let body = if models.len() == 1 {
        let (name, only) = models.into_iter().next().unwrap_or_default();
        let mut only = only;
        only["model"] = Value::from(name);
        only
    } else {
        json!({"status": status(ready), "models": models})
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

fn status(ready: bool) -> &'static str {
    if ready {
        "ready"
    } else {
        "not_ready"
    }
}

async fn add_worker(State(s): State<HttpState>, body: Body) -> Result<Response, HttpError> {
    let bytes = read_body(body, s.router.max_body_bytes(), s.body_idle).await?;
    let spec: WorkerSpecJson = serde_json::from_slice(&bytes)
        .map_err(|e| HttpError::bad_request(format!("invalid worker spec: {e}")))?;
    let worker = s.admission.add(WorkerRequest::from(spec)).await?;
    tracing::info!(worker = %worker.id(), url = worker.url(), "worker added over HTTP");
    Ok((StatusCode::CREATED, Json(worker_json(&worker))).into_response())
}

/// `GET /workers` filters; every one given must match.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    model_id: Option<String>,
    role: Option<WorkerRole>,
    connection_mode: Option<String>,
    #[serde(default)]
    page_size: usize,
    #[serde(default)]
    page_token: String,
}

async fn list_workers(
    State(s): State<HttpState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let Query(q) = query.map_err(|e| HttpError::bad_request(format!("invalid filters: {e}")))?;
    let mode = match q.connection_mode.as_deref() {
        None => None,
        Some("grpc") => Some(ConnectionMode::Grpc),
        Some("http") => Some(ConnectionMode::Http),
        Some(other) => {
            return Err(HttpError::bad_request(format!(
                "invalid connection_mode {other:?}: use grpc or http"
            )))
        }
    };
    let all = s.registry.list();
    let matching = all
        .iter()
        .filter(|w| {
            q.model_id
                .as_deref()
                .is_none_or(|m| w.model().as_ref() == m)
        })
        .filter(|w| q.role.is_none_or(|r| w.role() == r))
        .filter(|w| mode.is_none_or(|m| w.mode() == m));
    let (page, next) =
        page(matching, q.page_size, &q.page_token).map_err(HttpError::bad_request)?;
    let workers: Vec<WorkerJson> = page.into_iter().map(|w| worker_json(w)).collect();
    Ok(Json(json!({ "workers": workers, "next_page_token": next })))
}

/// `/workers/{id}`: an id, or a worker URL (percent-encoded in the path,
/// `grpc%3A%2F%2Fhost%3A7001`), as gRPC takes either.
async fn get_worker(
    State(s): State<HttpState>,
    Path(target): Path<String>,
) -> Result<Json<WorkerJson>, HttpError> {
    let worker = match target.contains("://") {
        true => s.registry.get_by_url(&target)?,
        false => s.registry.get(&target)?,
    };
    Ok(Json(worker_json(&worker)))
}

async fn remove_worker(
    State(s): State<HttpState>,
    Path(target): Path<String>,
) -> Result<Json<WorkerJson>, HttpError> {
    let worker = s
        .admission
        .remove(match target.contains("://") {
            true => Target::Url(&target),
            false => Target::Id(&target),
        })
        .await?;
    tracing::info!(worker = %worker.id(), url = worker.url(), "worker removed over HTTP");
    Ok(Json(worker_json(&worker)))
}

#[derive(Debug, Deserialize)]
struct UrlQuery {
    url: String,
}

/// `DELETE /workers?url=...`: by URL, without encoding it into the path.
async fn remove_worker_by_query(
    State(s): State<HttpState>,
    query: Result<Query<UrlQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<WorkerJson>, HttpError> {
    let Query(q) = query.map_err(|_| {
        HttpError::bad_request("DELETE /workers needs ?url=WORKER_URL (or use /workers/{id})")
    })?;
    remove_worker(State(s), Path(q.url)).await
}
