//! The mock worker over HTTP: SGLang-style `/generate`, OpenAI-style
//! `/v1/completions` and `/v1/chat/completions` (server-sent events when
//! `stream` is true), `/health` and `/v1/models`, plus the PD rendezvous
//! (bootstrap fields in the JSON body). Same knobs and counters as gRPC.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::{MockService, Piece, SeenRequest};
use crate::pb;

/// Which API a request came in on; decides the response shape.
#[derive(Debug, Clone, Copy)]
enum Flavor {
    Generate,
    Completions,
    Chat,
}

pub(super) fn routes(service: MockService) -> Router {
    Router::new()
        .route(
            "/generate",
            post(|s, h, b| generate(s, h, b, Flavor::Generate)),
        )
        .route(
            "/v1/completions",
            post(|s, h, b| generate(s, h, b, Flavor::Completions)),
        )
        .route(
            "/v1/chat/completions",
            post(|s, h, b| generate(s, h, b, Flavor::Chat)),
        )
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .with_state(service)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": {"message": message.into(), "code": status.as_u16()}})),
    )
        .into_response()
}

async fn health(State(service): State<MockService>) -> Response {
    service
        .stats
        .health_probes
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if service.config.load().unhealthy {
        error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy")
    } else {
        Json(json!({"status": "ok"})).into_response()
    }
}

async fn models(State(service): State<MockService>) -> Json<Value> {
    let name = service.config.load().name.clone();
    Json(
        json!({"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "mock"}]}),
    )
}

async fn generate(
    State(service): State<MockService>,
    headers: HeaderMap,
    body: axum::body::Bytes,
    flavor: Flavor,
) -> Response {
    let Ok(Value::Object(req)) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body must be a JSON object");
    };
    let disaggregated = req
        .get("bootstrap_room")
        .map(|room| pb::DisaggregatedParams {
            bootstrap_host: req
                .get("bootstrap_host")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            bootstrap_port: req
                .get("bootstrap_port")
                .and_then(Value::as_u64)
                .unwrap_or(0) as u32,
            bootstrap_room: room.as_u64().unwrap_or(0),
        });
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let model = req
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let seen = SeenRequest {
        sampling: None,
        token_ids: Vec::new(),
        kv_transfer_params: None,
        request_id: request_id.clone(),
        model: model.clone(),
        x_request_id: Some(request_id.clone()).filter(|s| !s.is_empty()),
        timeout: None,
        unknown_fields: Default::default(),
        metadata: headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        disaggregated: disaggregated.clone(),
    };
    let config = match service.admit(seen, disaggregated.as_ref()).await {
        Ok(config) => config,
        Err(status) => {
            let code = match status.code() {
                tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument => {
                    StatusCode::BAD_REQUEST
                }
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            return error(code, status.message());
        }
    };
    let requested = req
        .get("sampling_params")
        .and_then(|s| s.get("max_new_tokens"))
        .or_else(|| req.get("max_tokens"))
        .or_else(|| req.get("max_completion_tokens"))
        .and_then(Value::as_u64)
        .filter(|n| *n > 0);
    let tokens = requested.map_or(config.tokens, |n| n.min(u64::from(u32::MAX)) as u32);
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let rx = service.spawn_generation(config, request_id.clone(), tokens, |piece| piece);
    let id = if request_id.is_empty() {
        "mock".to_string()
    } else {
        request_id
    };
    if stream {
        let events = ReceiverStream::new(rx)
            .map(move |piece| Ok::<_, Infallible>(sse_event(flavor, &id, &model, piece)));
        let done = tokio_stream::once(Ok(Event::default().data("[DONE]")));
        return Sse::new(events.chain(done)).into_response();
    }
    // Not streaming: collect, then answer once.
    let mut text = String::new();
    let mut finish = ("length", 0);
    let mut pieces = ReceiverStream::new(rx);
    while let Some(piece) = pieces.next().await {
        match piece {
            Piece::Token(_, t) => text.push_str(&t),
            Piece::Finish(reason, n) => finish = (reason, n),
            Piece::Fail(message) => return error(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
    Json(full_response(flavor, &id, &model, &text, finish)).into_response()
}

fn created() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn sse_event(flavor: Flavor, id: &str, model: &str, piece: Piece) -> Event {
    let (text, finish) = match piece {
        Piece::Token(_, t) => (t, Value::Null),
        Piece::Finish(reason, _) => (String::new(), Value::from(reason)),
        // An error event, then the stream ends: what engines do mid-stream.
        Piece::Fail(message) => {
            return Event::default().data(json!({"error": {"message": message}}).to_string())
        }
    };
    let data = match flavor {
        Flavor::Generate => json!({"text": text, "meta_info": {"id": id, "finish_reason": finish}}),
        Flavor::Completions => json!({
            "id": id, "object": "text_completion", "created": created(), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": null}],
        }),
        Flavor::Chat => json!({
            "id": id, "object": "chat.completion.chunk", "created": created(), "model": model,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": finish}],
        }),
    };
    Event::default().data(data.to_string())
}

fn full_response(
    flavor: Flavor,
    id: &str,
    model: &str,
    text: &str,
    (reason, n): (&str, u32),
) -> Value {
    let usage = json!({"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1});
    match flavor {
        Flavor::Generate => {
            json!({"text": text, "meta_info": {"id": id, "finish_reason": {"type": reason}, "completion_tokens": n}})
        }
        Flavor::Completions => json!({
            "id": id, "object": "text_completion", "created": created(), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": reason, "logprobs": null}], "usage": usage,
        }),
        Flavor::Chat => json!({
            "id": id, "object": "chat.completion", "created": created(), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": reason}],
            "usage": usage,
        }),
    }
}
