//! Routers turn one client request into a dispatch to chosen workers.
//!
//! This module holds what every router shares: [`RouteError`], the one error
//! type routers return (mapped to a gRPC status in `services::status` and to
//! an HTTP response in `services::http_error`), the headers routers read and
//! write, and [`InflightCalls`], the table that lets `Abort` find a running
//! request. Routers resolve candidates from the registry on every call; none
//! keeps a worker list of its own.

mod attempt;
pub mod call;
mod chunk_clock;
pub mod grpc;
pub mod http;
mod inflight;
pub mod pd;
pub mod rooms;
pub mod select;
pub mod translate;

use crate::policies::PolicyError;
use crate::transport::Failure;
use crate::worker::{Outcome, WorkerId, WorkerRole};

pub use inflight::{InflightCalls, InflightEntry};

/// Request header naming the request; generated when absent, sent to the
/// worker and back to the client.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Response header naming the worker that served a regular call.
pub const WORKER_ID_HEADER: &str = "x-switchyard-worker-id";
/// Response header naming the prefill worker of a PD call.
pub const PREFILL_WORKER_ID_HEADER: &str = "x-switchyard-prefill-worker-id";
/// Response header naming the decode worker of a PD call.
pub const DECODE_WORKER_ID_HEADER: &str = "x-switchyard-decode-worker-id";
/// Request header naming the model of an engine-protocol call (SGLang's
/// and vLLM's `GenerateRequest` have no model field).
pub const MODEL_HEADER: &str = "x-switchyard-model";
/// Request header for session affinity (consistent hashing).
pub const ROUTING_KEY_HEADER: &str = "x-switchyard-routing-key";

/// A fresh request id: 128 random bits in hex.
pub fn generate_request_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Why a call could not be routed or served.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The request itself is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The prompt is longer than the model (or the router) takes.
    #[error(
        "the prompt is {tokens} tokens; model {model:?} takes at most {limit} ({why}): shorten it"
    )]
    PromptTooLong {
        /// The model.
        model: String,
        /// The prompt's length.
        tokens: usize,
        /// The longest prompt allowed.
        limit: u32,
        /// Where the bound comes from.
        why: &'static str,
    },
    /// `model` was empty while several models are served.
    #[error("the request names no model and {} models are served ({}): set `model`", .models.len(), .models.join(", "))]
    ModelRequired {
        /// The models served.
        models: Vec<String>,
    },
    /// No worker of the right kind is registered at all.
    #[error("no workers are registered for this router")]
    NoModels,
    /// No worker of the needed role serves the model.
    #[error("no {}workers serve model {model:?}", role_label(*.role))]
    NoWorkers {
        /// The requested model.
        model: String,
        /// The role that is missing.
        role: WorkerRole,
    },
    /// Workers of the needed role serve the model, but none can take a
    /// call: unhealthy, or passed over while their circuit breaker is open.
    #[error("no healthy {}workers for model {model:?} ({total} registered: {} failing health checks, {unchecked} not checked yet, {ejected} failing their calls, circuit open)", role_label(*.role), .total - .ejected - .unchecked)]
    NoHealthyWorkers {
        /// The requested model.
        model: String,
        /// The role that is missing.
        role: WorkerRole,
        /// Registered workers of that model and role.
        total: usize,
        /// Of them, healthy ones whose circuit is open.
        ejected: usize,
        /// Of them, ones registered without contact whose first health
        /// check has not run yet.
        unchecked: usize,
    },
    /// Every available worker of the model is at its limit of calls in
    /// flight (`limits.max_in_flight_per_worker`).
    #[error("all {total} workers of model {model:?} are at their limit of calls in flight (limits.max_in_flight_per_worker); retry shortly")]
    WorkersBusy {
        /// The requested model.
        model: String,
        /// Its workers.
        total: usize,
    },
    /// The policy refused.
    #[error("no worker could be selected for model {model:?}: {source}")]
    Policy {
        /// The requested model.
        model: String,
        /// Why.
        source: PolicyError,
    },
    /// The chosen worker failed: before any response when a router
    /// returns it, after a partial one when a relayed stream ends with it.
    #[error("worker {worker} failed: {failure}")]
    WorkerFailed {
        /// The worker.
        worker: WorkerId,
        /// What went wrong.
        failure: Failure,
    },
    /// Nothing of the call reached the chosen worker (no connection could
    /// be made, or it refused the stream unprocessed): the call may go to
    /// another worker.
    #[error("worker {worker} could not be reached: {failure}")]
    WorkerUnreachable {
        /// The worker.
        worker: WorkerId,
        /// Why.
        failure: Failure,
    },
    /// Every worker the call was offered to was unreachable.
    #[error(
        "none of the {} workers tried for model {model:?} could be reached ({}); the last said: {last}",
        .tried.len(),
        .tried.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    NoReachableWorker {
        /// The requested model.
        model: String,
        /// The workers tried, in order.
        tried: Vec<WorkerId>,
        /// Why the last one could not be reached.
        last: Failure,
    },
    /// The model has no workers of this listener's kind at all
    /// (`NOT_FOUND` / 404).
    #[error("unknown model {model:?}: no workers serve it{}", elsewhere.map(|e| format!(" here; {e}")).unwrap_or_default())]
    UnknownModel {
        /// The requested model.
        model: String,
        /// Where the model is served instead, if it is.
        elsewhere: Option<&'static str>,
    },
    /// The call's protocol is not the engine of the model's workers.
    #[error("model {model:?} is served by {served} workers; {hint}")]
    WrongEngine {
        /// The model.
        model: String,
        /// Its workers' engine.
        served: crate::worker::Engine,
        /// What the caller can do.
        hint: String,
    },
    /// A `switchyard.v1` call that cannot be put in the engine's protocol.
    #[error(transparent)]
    Untranslatable(#[from] crate::engines::translate::TranslateError),
    /// A call in an engine's protocol, and no worker runs that engine.
    #[error("no {engine} workers are registered: add one (AddWorker with engine {engine}, or let it be detected)")]
    NoEngineWorkers {
        /// The engine.
        engine: crate::worker::Engine,
    },
    /// Several models are served by workers of an engine and the call
    /// names none (`x-switchyard-model`).
    #[error("the call names no model and {engine} workers serve {} models ({}): set the x-switchyard-model metadata", .models.len(), .models.join(", "))]
    EngineModelRequired {
        /// The engine.
        engine: crate::worker::Engine,
        /// Its models.
        models: Vec<String>,
    },
    /// The worker sent nothing on a relayed stream for this long
    /// (`limits.stream_idle_ms`).
    #[error("worker {worker} sent nothing for {silent:?} (limits.stream_idle_ms); the call was cancelled")]
    WorkerIdle {
        /// The worker.
        worker: WorkerId,
        /// How long it was silent.
        silent: std::time::Duration,
    },
    /// A bug: logged in full, reported to the client as INTERNAL only.
    #[error("internal error: {0}")]
    Internal(String),
    /// The call's deadline passed, before the worker answered
    /// (`streaming` false) or while its stream was relayed.
    #[error("deadline exceeded {} worker {worker}", if *.streaming { "while streaming from" } else { "before a response from" })]
    DeadlineExceeded {
        /// The worker that was waited for.
        worker: WorkerId,
        /// Whether part of the response had been relayed.
        streaming: bool,
    },
}

impl RouteError {
    /// A failed call to `worker`: unreachable if nothing of it got there,
    /// else failed.
    pub fn from_call(worker: &crate::worker::Worker, error: crate::transport::CallError) -> Self {
        let worker = worker.id().clone();
        match error.unsent {
            true => RouteError::WorkerUnreachable {
                worker,
                failure: error.failure,
            },
            false => RouteError::WorkerFailed {
                worker,
                failure: error.failure,
            },
        }
    }

    /// What the error says about the worker that was called, for its
    /// circuit breaker: a failure if it is the worker's (unreachable, its
    /// own server error, no answer before the deadline), else nothing.
    pub fn outcome(&self) -> Outcome {
        match self {
            RouteError::WorkerUnreachable { .. } => Outcome::Failure,
            RouteError::WorkerFailed { failure, .. } if failure.is_workers_fault() => {
                Outcome::Failure
            }
            RouteError::DeadlineExceeded {
                streaming: false, ..
            }
            | RouteError::WorkerIdle { .. } => Outcome::Failure,
            _ => Outcome::Neutral,
        }
    }

    /// Whether the call can be offered to another worker: nothing of it
    /// reached the one that failed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RouteError::WorkerUnreachable { .. })
    }
}

/// "prefill " or "decode " in messages; nothing for regular workers.
fn role_label(role: WorkerRole) -> &'static str {
    match role {
        WorkerRole::Regular => "",
        WorkerRole::Prefill => "prefill ",
        WorkerRole::Decode => "decode ",
    }
}
