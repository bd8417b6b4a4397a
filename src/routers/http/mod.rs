//! HTTP routers, regular and prefill/decode (PD), over the same registry as
//! the gRPC ones (SGLang/vLLM-style `/generate` and OpenAI-compatible
//! endpoints).
//!
//! Per request: parse the JSON body once, for the fields routing needs
//! ([`HttpInput`]), resolve the model (empty: the only HTTP model), and
//! hand the request to the regular router ([`regular`]) or, for a model of
//! prefill/decode workers, the PD router ([`pd`]). Both return the worker's
//! response as a [`Relay`] (status, headers, and a body relayed chunk by
//! chunk as it arrives), which the HTTP service sends; dropping the response
//! (client gone) drops the upstream requests, which cancels them. Load
//! guards live in the relayed body, so they last exactly as long as the
//! streams.

pub(crate) mod input;
mod pd;
mod regular;
mod relay;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use tracing::Instrument;

pub use input::HttpInput;
pub use relay::{Relay, RelayBody};

use crate::config::HttpConfig;
use crate::policies::{PolicyConfig, PolicySet, RequestFacts};
use crate::routers::pd::PdPolicies;
use crate::routers::rooms::BootstrapRooms;
use crate::routers::select::{
    is_disaggregated, is_known_model, resolve_model, served_elsewhere, Retries,
};
use crate::routers::{generate_request_id, RouteError, REQUEST_ID_HEADER, ROUTING_KEY_HEADER};
use crate::telemetry::{CallSpan, Tracer};
use crate::transport::http1::{HttpClient, HttpClientConfig};
use crate::worker::registry::Snapshot;
use crate::worker::{ConnectionMode, WorkerRegistry, WorkerRole};
use opentelemetry::KeyValue;

/// Routes HTTP inference requests to HTTP workers.
#[derive(Debug)]
pub struct HttpRouter {
    registry: Arc<WorkerRegistry>,
    policies: PolicySet,
    pd_policies: PdPolicies,
    rooms: BootstrapRooms,
    client: HttpClient,
    max_body_bytes: usize,
    retries: Arc<Retries>,
    /// Starts each request's span (off by default).
    tracer: Tracer,
}

/// One inference request, parsed: what both HTTP routers need.
#[derive(Debug)]
struct Request<'a> {
    /// `/generate`, `/v1/completions` or `/v1/chat/completions`.
    path: &'static str,
    request_id: &'a str,
    facts: RequestFacts<'a>,
    /// When the body had been read and routing began.
    received: tokio::time::Instant,
    /// The request's span.
    trace: CallSpan,
    /// The registry as the call found it: its model, PD and candidates.
    snapshot: Arc<Snapshot>,
}

impl HttpRouter {
    /// Its policy sets, named `regular`, `prefill` and `decode`.
    pub fn policy_sets(&self) -> Vec<(&'static str, &PolicySet)> {
        let mut sets = vec![("regular", &self.policies)];
        sets.extend(self.pd_policies.sets());
        sets
    }

    /// Routers over `registry`; their policies are built (and subscribed) here.
    pub fn new(
        registry: Arc<WorkerRegistry>,
        policy: &PolicyConfig,
        (config, tls): (&HttpConfig, Option<Arc<rustls::ClientConfig>>),
        rooms: BootstrapRooms,
        retries: Arc<Retries>,
    ) -> Self {
        HttpRouter {
            retries,
            policies: PolicySet::build(policy, &registry),
            pd_policies: PdPolicies::build(policy, &registry),
            registry,
            rooms,
            client: HttpClient::new(&client_config(config, tls)),
            max_body_bytes: config.max_body_bytes,
            tracer: Tracer::default(),
        }
    }

    /// Traces every request with `tracer` (see `telemetry`).
    pub fn traced(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// The configured request-body limit.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    /// Sends one inference request (`path` is `/generate`,
    /// `/v1/completions` or `/v1/chat/completions`) to the chosen worker(s).
    pub async fn forward(
        &self,
        path: &'static str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Relay, RouteError> {
        let received = tokio::time::Instant::now();
        let trace = self.tracer.call(path, headers, || {
            vec![
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("url.path", path),
            ]
        });
        match self
            .route(path, headers, body, received, trace.clone())
            .await
        {
            Ok(relay) => Ok(relay.traced(trace)),
            Err(error) => {
                trace.fail(&error);
                Err(error)
            }
        }
    }

    async fn route(
        &self,
        path: &'static str,
        headers: &HeaderMap,
        body: Bytes,
        received: tokio::time::Instant,
        trace: CallSpan,
    ) -> Result<Relay, RouteError> {
        let input = HttpInput::parse(&body)?;
        let roles = [WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode];
        let snapshot = self.registry.snapshot();
        let model =
            resolve_model(&snapshot, ConnectionMode::Http, &roles, &input.model)?.into_owned();
        if !is_known_model(&snapshot, ConnectionMode::Http, &model) {
            let elsewhere = served_elsewhere(&snapshot, ConnectionMode::Http, &model);
            return Err(RouteError::UnknownModel { model, elsewhere });
        }
        let request_id = headers
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|s| !s.is_empty())
            .map_or_else(generate_request_id, str::to_string);
        let request = Request {
            path,
            request_id: &request_id,
            facts: RequestFacts {
                model: &model,
                text: input.text.as_deref(),
                token_ids: input.token_ids.as_deref(),
                routing_key: headers
                    .get(ROUTING_KEY_HEADER)
                    .and_then(|v| v.to_str().ok()),
            },
            received,
            trace,
            snapshot: snapshot.clone(),
        };
        if request.trace.is_on() {
            request
                .trace
                .set("switchyard.request_id", request_id.clone());
            request.trace.set("switchyard.model", model.clone());
        }
        let span = tracing::debug_span!("http", path, request_id = %request_id, model = %model);
        let pd = is_disaggregated(&snapshot, ConnectionMode::Http, &model);
        // A disabled span still costs a poll wrapper per poll: skip it.
        match (pd, span.is_disabled()) {
            (true, true) => self.forward_pd(&request, &body).await,
            (true, false) => self.forward_pd(&request, &body).instrument(span).await,
            (false, true) => self.forward_regular(&request, body).await,
            (false, false) => self.forward_regular(&request, body).instrument(span).await,
        }
    }
}

/// The client settings of `[http]`, with `tls` for `https://` workers.
pub fn client_config(
    config: &HttpConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> HttpClientConfig {
    HttpClientConfig {
        connect_timeout: Duration::from_millis(config.connect_timeout_ms),
        response_timeout: Duration::from_millis(config.response_timeout_ms),
        pool_idle_per_worker: config.pool_idle_per_worker,
        tls,
    }
}
