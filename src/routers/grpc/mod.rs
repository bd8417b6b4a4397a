//! gRPC routers: regular and prefill/decode (PD), behind one facade.
//!
//! [`GrpcRouter`] parses a call once ([`Inbound`]), resolves its model (empty
//! means the only gRPC model served), and hands it to the PD router when the
//! model's workers are prefill/decode workers, else to the regular router.
//! Both share [`open`]: start an upstream call and wait for the first bytes
//! of its response body, within the deadline.

mod engine;
pub(crate) mod inbound;
mod pd;
mod regular;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use tokio::time::{Instant, Sleep};

pub use inbound::{append_encoded, append_fields, Inbound, Prompt};
pub use pd::GrpcPdRouter;
pub use regular::GrpcRegularRouter;

use crate::config::LimitsConfig;
use crate::engines::RequestView;
use crate::policies::{PolicyConfig, PolicySet};
use crate::routers::call::ProxyStream;
use crate::routers::rooms::BootstrapRooms;
use crate::routers::select::{
    context_length, is_disaggregated, is_known_model, model_engine, resolve_engine_model,
    resolve_model, served_elsewhere, Retries,
};
use crate::routers::translate;
use crate::routers::{InflightCalls, RouteError};
use crate::telemetry::{CallSpan, Tracer};
use crate::tokenizer::Tokenizers;
use crate::transport::grpc::ResponseStream;
use crate::worker::registry::Snapshot;
use crate::worker::{ConnectionMode, Engine, Worker, WorkerRegistry, WorkerRole};
use opentelemetry::KeyValue;

/// A proxied call's response: headers for the client, and the stream.
pub type Proxied = (HeaderMap, ProxyStream);

/// Routes gRPC `Generate` calls to regular or PD workers.
#[derive(Debug)]
pub struct GrpcRouter {
    registry: Arc<WorkerRegistry>,
    regular: GrpcRegularRouter,
    pd: GrpcPdRouter,
    inflight: Arc<InflightCalls>,
    /// The deadline of a call that sets none.
    default_deadline: Duration,
    /// A relayed stream whose worker sends nothing for this long fails
    /// (`None`: never).
    stream_idle: Option<Duration>,
    /// Models' tokenizers, for `switchyard.v1` text to engine workers.
    tokenizers: Arc<Tokenizers>,
    /// The router's own bound on prompts in tokens (0: none).
    max_prompt_tokens: u32,
    /// Starts each call's span (off by default).
    tracer: Tracer,
}

impl GrpcRouter {
    /// Routers over `registry`, with policies built from `config` (and so
    /// subscribed to the registry's events); a call without a deadline gets
    /// `limits.default_deadline_ms` and a relayed stream silent for
    /// `limits.stream_idle_ms` fails; calls that reach no worker are retried within
    /// `retries`.
    pub fn new(
        registry: Arc<WorkerRegistry>,
        config: &PolicyConfig,
        rooms: BootstrapRooms,
        limits: &LimitsConfig,
        tokenizers: Arc<Tokenizers>,
        retries: Arc<Retries>,
    ) -> Self {
        GrpcRouter {
            tokenizers,
            regular: GrpcRegularRouter::new(
                registry.clone(),
                PolicySet::build(config, &registry),
                retries,
            ),
            pd: GrpcPdRouter::new(registry.clone(), config, rooms),
            registry,
            inflight: Arc::new(InflightCalls::default()),
            default_deadline: limits.default_deadline(),
            stream_idle: limits.stream_idle(),
            max_prompt_tokens: limits.max_prompt_tokens,
            tracer: Tracer::default(),
        }
    }

    /// Traces every call with `tracer` (see `telemetry`).
    pub fn traced(mut self, tracer: Tracer) -> Self {
        self.tracer = tracer;
        self
    }

    /// Its policy sets, named `regular`, `prefill` and `decode`.
    pub fn policy_sets(&self) -> Vec<(&'static str, &PolicySet)> {
        let mut sets = vec![("regular", self.regular.policies())];
        sets.extend(self.pd.policies().sets());
        sets
    }

    /// Calls currently proxied.
    pub fn inflight(&self) -> &Arc<InflightCalls> {
        &self.inflight
    }

    /// Proxies one `Generate` call in `protocol` (the service it was sent
    /// to): the client's `headers` and its message bytes exactly as sent.
    pub async fn generate(
        &self,
        protocol: Engine,
        headers: HeaderMap,
        message: Bytes,
    ) -> Result<Proxied, RouteError> {
        self.generate_viewed(protocol, headers, message, None).await
    }

    /// The registry it routes from.
    pub fn registry(&self) -> &Arc<WorkerRegistry> {
        &self.registry
    }

    /// [`GrpcRouter::generate`], with the message's view already read from
    /// it (by admission) if `view` is given.
    pub async fn generate_viewed(
        &self,
        protocol: Engine,
        headers: HeaderMap,
        message: Bytes,
        view: Option<RequestView>,
    ) -> Result<Proxied, RouteError> {
        // The span of the call, ended with its stream (or its refusal).
        let trace = self
            .tracer
            .call(&protocol.generate_path()[1..], &headers, || {
                vec![
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", protocol.service()),
                    KeyValue::new("rpc.method", "Generate"),
                ]
            });
        match self.route(protocol, headers, message, view, &trace).await {
            Ok((headers, stream)) => Ok((headers, stream.traced(trace))),
            Err(error) => {
                trace.fail(&error);
                Err(error)
            }
        }
    }

    async fn route(
        &self,
        protocol: Engine,
        headers: HeaderMap,
        message: Bytes,
        view: Option<RequestView>,
        trace: &CallSpan,
    ) -> Result<Proxied, RouteError> {
        let inbound =
            Inbound::parse_viewed(protocol, headers, message, self.default_deadline, view)?;
        tracing::Span::current().record("request_id", inbound.request_id.as_str());
        if trace.is_on() {
            trace.set("switchyard.request_id", inbound.request_id.clone());
        }
        // One snapshot answers every question of the call: its model,
        // engine, PD and candidates.
        let snapshot = self.registry.snapshot();
        let snapshot = &*snapshot;
        let model = match protocol.is_switchyard() {
            true => resolve_model(
                snapshot,
                ConnectionMode::Grpc,
                &[WorkerRole::Regular, WorkerRole::Prefill, WorkerRole::Decode],
                &inbound.model,
            )?,
            false => resolve_engine_model(snapshot, protocol, &inbound.model)?,
        }
        .into_owned();
        tracing::Span::current().record("model", model.as_str());
        if trace.is_on() {
            trace.set("switchyard.model", model.clone());
        }
        if protocol.is_switchyard() && !is_known_model(snapshot, ConnectionMode::Grpc, &model) {
            let elsewhere = served_elsewhere(snapshot, ConnectionMode::Grpc, &model);
            return Err(RouteError::UnknownModel { model, elsewhere });
        }
        let served = model_engine(snapshot, &model).unwrap_or(protocol);
        trace.set("switchyard.engine", served.name());
        if served == protocol {
            return self.dispatch(inbound, &model, snapshot, trace).await;
        }
        if !protocol.is_switchyard() {
            return Err(RouteError::WrongEngine {
                hint: format!("call {}/Generate for it", served.service()),
                model,
                served,
            });
        }
        // A switchyard.v1 call to an engine's workers: translated both ways.
        let mut inbound = inbound;
        let tokenizer = self.tokenizers.get(&model);
        let call = translate::request(
            served,
            &inbound.body,
            &inbound.request_id,
            &model,
            tokenizer.as_deref().map_err(Clone::clone),
        )?;
        inbound.body = call.message;
        inbound.protocol = served;
        if let Some(ids) = call.tokenized {
            // Policies see the tokens the engine gets: a text request and a
            // token-id request for one prompt share cache-aware prefixes.
            inbound.prompt = Prompt::TokenIds(ids);
        }
        if let Prompt::TokenIds(ids) = &inbound.prompt {
            self.check_prompt(snapshot, ids.len(), &model)?;
        }
        let stops = call.stops;
        let mut responses = translate::Responses::new(served, inbound.request_id.clone());
        if let Ok(tokenizer) = tokenizer {
            responses = responses.with_text(tokenizer, stops, true);
        }
        let (headers, stream) = self.dispatch(inbound, &model, snapshot, trace).await?;
        Ok((headers, stream.translated(responses)))
    }

    /// Refuses a prompt of `tokens` that the model's workers could not take
    /// (or that passes the router's own bound), before any worker is tried.
    pub fn check_prompt(
        &self,
        snapshot: &Snapshot,
        tokens: usize,
        model: &str,
    ) -> Result<(), RouteError> {
        let context = context_length(snapshot, model);
        let too_long = |limit: u32, why| RouteError::PromptTooLong {
            model: model.to_string(),
            tokens,
            limit,
            why,
        };
        // The context holds the prompt and at least one generated token.
        if context > 0 && tokens >= context as usize {
            return Err(too_long(
                context - 1,
                "its workers' max context length, less one token to generate",
            ));
        }
        if self.max_prompt_tokens > 0 && tokens > self.max_prompt_tokens as usize {
            return Err(too_long(self.max_prompt_tokens, "limits.max_prompt_tokens"));
        }
        Ok(())
    }

    /// Hands a call to the PD or the regular router.
    async fn dispatch(
        &self,
        inbound: Inbound,
        model: &str,
        snapshot: &Snapshot,
        trace: &CallSpan,
    ) -> Result<Proxied, RouteError> {
        let (headers, stream) = if is_disaggregated(snapshot, ConnectionMode::Grpc, model) {
            trace.set("switchyard.route", "pd");
            self.pd
                .generate(inbound, model, snapshot, &self.inflight, trace)
                .await?
        } else {
            trace.set("switchyard.route", "regular");
            self.regular
                .generate(inbound, model, snapshot, &self.inflight, trace)
                .await?
        };
        let stream = match self.stream_idle {
            Some(idle) => stream.idle_after(idle),
            None => stream,
        };
        Ok((headers, stream))
    }

    /// Forwards `Abort(request_id)` to every worker serving it. Returns
    /// whether a running call was found and a worker acknowledged the abort.
    pub async fn abort(&self, request_id: &str) -> Result<bool, RouteError> {
        let Some(workers) = self.inflight.workers_for(request_id) else {
            return Ok(false);
        };
        let mut aborted = false;
        for worker in workers.iter() {
            aborted |= crate::routers::call::abort(worker, request_id)
                .await
                .map_err(|failure| RouteError::WorkerFailed {
                    worker: worker.id().clone(),
                    failure,
                })?;
        }
        Ok(aborted)
    }
}

/// What [`open`] returns: the worker's response headers, its stream with
/// the first chunk of its body (`None` if the stream was empty), and the
/// call's deadline timer, already registered, for the relay to keep.
pub type Opened = (HeaderMap, (Option<Bytes>, ResponseStream), Pin<Box<Sleep>>);

/// Starts `Generate` on `worker` with `headers` and `body` and waits for
/// the first chunk of its response body, all within `deadline`. A failure
/// here is a failure before any response; [`RouteError::WorkerUnreachable`]
/// when none of the call reached the worker.
pub async fn open(
    worker: &Worker,
    headers: HeaderMap,
    body: &[u8],
    deadline: Instant,
) -> Result<Opened, RouteError> {
    let call = async {
        let (headers, mut stream) = worker
            .upstream()
            .call(worker.engine().generate_path(), headers, body)
            .await
            .map_err(|e| RouteError::from_call(worker, e))?;
        let first = stream
            .chunk()
            .await
            .map_err(|failure| RouteError::WorkerFailed {
                worker: worker.id().clone(),
                failure,
            })?;
        Ok((headers, (first, stream)))
    };
    // One timer for the whole call: it bounds the opening here and the
    // relay after.
    let mut timer = Box::pin(tokio::time::sleep_until(deadline));
    tokio::select! {
        biased;
        opened = call => opened.map(|(headers, stream)| (headers, stream, timer)),
        _ = timer.as_mut() => Err(RouteError::DeadlineExceeded {
            worker: worker.id().clone(),
            streaming: false,
        }),
    }
}
