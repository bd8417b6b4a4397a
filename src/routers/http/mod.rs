//! HTTP routers, regular and prefill/decode (PD), over the same registry as
//! the gRPC ones (SGLang/vLLM-style `/generate` and OpenAI-compatible
//! endpoints).
//!
//! Per request: parse the JSON body once ([`HttpInput`]), resolve the model
//! (empty: the only HTTP model), resolve candidates from the registry, let
//! the model's policy choose, and relay the worker's response, streamed
//! chunk by chunk as it arrives. The body goes to a regular worker unchanged;
//! PD adds `bootstrap_host`, `bootstrap_port` and `bootstrap_room`, sends it
//! to a prefill and a decode worker at once, returns the decode response and
//! drains the prefill one. Dropping the response (client gone) drops the
//! upstream requests, which cancels them. Load guards live in the relayed
//! body, so they last exactly as long as the streams.

mod input;
mod relay;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::oneshot;
use tracing::Instrument;

pub use input::HttpInput;

use crate::policies::{PolicyConfig, PolicySet, RequestFacts};
use crate::proxy::{self, TaskGuard};
use crate::routers::grpc::{DECODE_WORKER_ID_HEADER, PREFILL_WORKER_ID_HEADER};
use crate::routers::rooms::BootstrapRooms;
use crate::routers::select::{is_disaggregated, is_known_model, offer, resolve_model, Candidates};
use crate::routers::RouteError;
use crate::worker::{ConnectionMode, LoadGuard, Worker, WorkerRegistry, WorkerRole};
use relay::Relay;

/// Settings of the HTTP side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Limit on establishing a connection to an HTTP worker.
    pub connect_timeout_ms: u64,
    /// Limit on waiting for a worker's response headers. Streams may run
    /// longer; a non-streaming generation must finish within it. 300 s.
    pub response_timeout_ms: u64,
    /// Largest request body accepted; larger ones get 413. 32 MiB: long
    /// prompts as token ids fit, runaway uploads do not.
    pub max_body_bytes: usize,
    /// Idle pooled connections kept per worker.
    pub pool_idle_per_worker: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout_ms: 2_000,
            response_timeout_ms: 300_000,
            max_body_bytes: 32 << 20,
            pool_idle_per_worker: 64,
        }
    }
}

impl HttpConfig {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.connect_timeout_ms == 0 || self.response_timeout_ms == 0 {
            return Err(
                "http.connect_timeout_ms and http.response_timeout_ms must be at least 1".into(),
            );
        }
        if self.max_body_bytes < 1024 {
            return Err(format!(
                "http.max_body_bytes must be at least 1024, got {}",
                self.max_body_bytes
            ));
        }
        Ok(())
    }
}

/// Routes HTTP inference requests to HTTP workers.
#[derive(Debug)]
pub struct HttpRouter {
    registry: Arc<WorkerRegistry>,
    policies: PolicySet,
    prefill: PolicySet,
    decode: PolicySet,
    rooms: BootstrapRooms,
    upstream: Upstream,
    config: HttpConfig,
}

/// The pooled client to workers and its response timeout.
#[derive(Debug, Clone)]
struct Upstream {
    client: reqwest::Client,
    response_timeout: Duration,
}

impl Upstream {
    /// POSTs `body` to `worker`'s `path`; fails if no response headers arrive in time.
    async fn post(
        &self,
        worker: &Worker,
        path: &str,
        request_id: &str,
        body: Bytes,
    ) -> Result<reqwest::Response, RouteError> {
        let failed = |reason: String| RouteError::Upstream {
            worker: worker.id().clone(),
            reason,
        };
        let send = self
            .client
            .post(format!("{}{path}", worker.url()))
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .header(proxy::REQUEST_ID_HEADER, request_id)
            .body(body)
            .send();
        match tokio::time::timeout(self.response_timeout, send).await {
            Ok(Ok(response)) => Ok(response),
            // No connection, so nothing was sent: another worker may have it.
            Ok(Err(e)) if e.is_connect() => Err(RouteError::WorkerUnreachable {
                worker: worker.id().clone(),
                reason: error_chain(&e),
            }),
            Ok(Err(e)) => Err(failed(error_chain(&e))),
            Err(_) => Err(failed(format!(
                "no response within {:?}",
                self.response_timeout
            ))),
        }
    }
}

/// An error and its sources, for messages ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl HttpRouter {
    /// Routers over `registry`; their policies are built (and subscribed) here.
    pub fn new(
        registry: Arc<WorkerRegistry>,
        policy: &PolicyConfig,
        config: &HttpConfig,
        rooms: BootstrapRooms,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .pool_max_idle_per_host(config.pool_idle_per_worker)
            .tcp_nodelay(true)
            .build()?;
        Ok(HttpRouter {
            policies: PolicySet::build(policy, &registry),
            prefill: PolicySet::new(
                policy.prefill,
                policy.prefill_overrides(),
                policy,
                &registry,
            ),
            decode: PolicySet::new(policy.decode, policy.decode_overrides(), policy, &registry),
            registry,
            rooms,
            upstream: Upstream {
                client,
                response_timeout: Duration::from_millis(config.response_timeout_ms),
            },
            config: config.clone(),
        })
    }

    /// The configured request-body limit.
    pub fn max_body_bytes(&self) -> usize {
        self.config.max_body_bytes
    }

    /// Sends one inference request (`path` is `/generate`,
    /// `/v1/completions` or `/v1/chat/completions`) to the chosen worker(s).
    pub async fn forward(
        &self,
        path: &'static str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response, RouteError> {
        let input = HttpInput::parse(&body)?;
        let roles = [WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode];
        let model =
            resolve_model(&self.registry, ConnectionMode::Http, &roles, &input.model)?.into_owned();
        if !is_known_model(&self.registry, ConnectionMode::Http, &model) {
            return Err(RouteError::UnknownModel { model });
        }
        let request_id = headers
            .get(proxy::REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
            .map_or_else(proxy::generate_request_id, str::to_string);
        let facts = RequestFacts {
            model: &model,
            text: input.text.as_deref(),
            token_ids: input.token_ids.as_deref(),
            routing_key: headers
                .get(proxy::ROUTING_KEY_HEADER)
                .and_then(|v| v.to_str().ok()),
        };
        let span = tracing::debug_span!("http", path, request_id = %request_id, model = %model);
        if is_disaggregated(&self.registry, ConnectionMode::Http, &model) {
            self.forward_pd(path, &request_id, &facts, input.body)
                .instrument(span)
                .await
        } else {
            self.forward_regular(path, &request_id, &facts, body)
                .instrument(span)
                .await
        }
    }

    async fn forward_regular(
        &self,
        path: &'static str,
        request_id: &str,
        facts: &RequestFacts<'_>,
        body: Bytes,
    ) -> Result<Response, RouteError> {
        // A worker that cannot be reached is passed over for another
        // (`offer`): nothing of the request got to it.
        offer(
            &self.registry,
            ConnectionMode::Http,
            WorkerRole::Regular,
            &self.policies,
            facts,
            |worker| {
                let body = body.clone();
                async move {
                    let load = LoadGuard::new(worker.clone());
                    self.policies.for_model(facts.model).record(&worker, facts);
                    let response = self.upstream.post(&worker, path, request_id, body).await?;
                    let relay = Relay::new(response, Box::new(load));
                    let mut out = relay.into_response(request_id);
                    insert_header(&mut out, proxy::WORKER_ID_HEADER, worker.id().as_str());
                    Ok(out)
                }
            },
        )
        .await
    }

    async fn forward_pd(
        &self,
        path: &'static str,
        request_id: &str,
        facts: &RequestFacts<'_>,
        mut body: serde_json::Map<String, Value>,
    ) -> Result<Response, RouteError> {
        let prefill = Candidates::resolve(
            &self.registry,
            ConnectionMode::Http,
            WorkerRole::Prefill,
            facts.model,
        )?
        .choose(&self.prefill, facts)?;
        let decode = Candidates::resolve(
            &self.registry,
            ConnectionMode::Http,
            WorkerRole::Decode,
            facts.model,
        )?
        .choose(&self.decode, facts)?;
        let port = prefill.spec().bootstrap_port.ok_or_else(|| {
            RouteError::Internal(format!(
                "prefill worker {} has no bootstrap port",
                prefill.id()
            ))
        })?;
        let room = self.rooms.claim();
        body.insert(
            "bootstrap_host".into(),
            Value::from(prefill.endpoint().bare_host()),
        );
        body.insert("bootstrap_port".into(), Value::from(port));
        body.insert("bootstrap_room".into(), Value::from(room.id()));
        let body = Bytes::from(
            serde_json::to_vec(&Value::Object(body))
                .map_err(|e| RouteError::Internal(e.to_string()))?,
        );

        let prefill_load = LoadGuard::new(prefill.clone());
        let decode_load = LoadGuard::new(decode.clone());
        self.prefill.for_model(facts.model).record(&prefill, facts);
        self.decode.for_model(facts.model).record(&decode, facts);

        // The prefill side runs as its own task; its failure is reported on
        // `failed_rx`, and the task is cancelled if the decode side fails.
        let (failed_tx, failed_rx) = oneshot::channel::<String>();
        let task = tokio::spawn(drain_prefill(
            self.upstream.clone(),
            prefill.clone(),
            path,
            request_id.to_string(),
            body.clone(),
            prefill_load,
            failed_tx,
        ));
        let prefill_task = TaskGuard::new(task.abort_handle());

        let decode_send = self.upstream.post(&decode, path, request_id, body);
        tokio::pin!(decode_send);
        let mut failed = Some(failed_rx);
        let response = loop {
            tokio::select! {
                response = &mut decode_send => break response?,
                outcome = async { failed.as_mut().expect("guarded by the branch condition").await }, if failed.is_some() => {
                    match outcome {
                        Ok(reason) => return Err(RouteError::Upstream { worker: prefill.id().clone(), reason }),
                        Err(_) => failed = None,
                    }
                }
            }
        };
        let relay = Relay::new(response, Box::new((decode_load, room)))
            .with_companion(failed, prefill_task);
        let mut out = relay.into_response(request_id);
        insert_header(&mut out, PREFILL_WORKER_ID_HEADER, prefill.id().as_str());
        insert_header(&mut out, DECODE_WORKER_ID_HEADER, decode.id().as_str());
        Ok(out)
    }
}

/// Runs the prefill request to its end, discarding its body. Reports a
/// failure (no response, a non-success status, a broken body) on `failed`.
async fn drain_prefill(
    upstream: Upstream,
    worker: Arc<Worker>,
    path: &'static str,
    request_id: String,
    body: Bytes,
    _load: LoadGuard,
    failed: oneshot::Sender<String>,
) {
    use tokio_stream::StreamExt;
    let outcome = match upstream.post(&worker, path, &request_id, body).await {
        Err(e) => Err(e.to_string()),
        Ok(response) if !response.status().is_success() => {
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            Err(format!(
                "prefill worker {} answered {status}: {}",
                worker.id(),
                text.chars().take(500).collect::<String>()
            ))
        }
        Ok(response) => {
            let mut stream = response.bytes_stream();
            let mut result = Ok(());
            while let Some(chunk) = stream.next().await {
                if let Err(e) = chunk {
                    result = Err(format!(
                        "prefill worker {} broke off its response: {}",
                        worker.id(),
                        error_chain(&e)
                    ));
                    break;
                }
            }
            result
        }
    };
    if let Err(reason) = outcome {
        tracing::debug!(worker = %worker.id(), %reason, "prefill failed");
        let _ = failed.send(reason);
    }
}

fn insert_header(response: &mut Response<Body>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, v);
    }
}
