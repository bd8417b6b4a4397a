//! Routers turn one client request into a dispatch to chosen workers.
//!
//! This module holds what every router shares: [`RouteError`], the one error
//! type routers return (mapped to a gRPC status in `services::status`), and
//! [`InflightCalls`], the table that lets `Abort` find a running request.
//! Routers resolve candidates from the registry on every call; none keeps a
//! worker list of its own.

pub mod grpc;
pub mod http;
mod inflight;
pub mod rooms;
pub mod select;

use crate::policies::PolicyError;
use crate::worker::{WorkerId, WorkerRole};

pub use inflight::{InflightCalls, InflightEntry};

/// Why a call could not be routed or served.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// The request itself is malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
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
    /// Workers of the needed role serve the model, but none is healthy.
    #[error("no healthy {}workers for model {model:?} ({total} registered, all unhealthy)", role_label(*.role))]
    NoHealthyWorkers {
        /// The requested model.
        model: String,
        /// The role that is missing.
        role: WorkerRole,
        /// Registered workers of that model and role.
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
    /// The chosen worker failed before sending any response.
    #[error("worker {worker} failed before responding: {}", .status.message())]
    WorkerFailed {
        /// The worker.
        worker: WorkerId,
        /// What the worker (or the connection to it) said.
        status: tonic::Status,
    },
    /// Nothing of the call reached the chosen worker (no connection could
    /// be made, or it refused the stream unprocessed): the call may go to
    /// another worker.
    #[error("worker {worker} could not be reached: {reason}")]
    WorkerUnreachable {
        /// The worker.
        worker: WorkerId,
        /// What the connection attempt said.
        reason: String,
    },
    /// Every worker the call was offered to was unreachable.
    #[error(
        "none of the {} workers tried for model {model:?} could be reached ({}); the last said: {reason}",
        .tried.len(),
        .tried.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    NoReachableWorker {
        /// The requested model.
        model: String,
        /// The workers tried, in order.
        tried: Vec<WorkerId>,
        /// What the last attempt said.
        reason: String,
    },
    /// The model has no workers of this router's kind at all (HTTP: 404).
    #[error("unknown model {model:?}: no workers serve it")]
    UnknownModel {
        /// The requested model.
        model: String,
    },
    /// An HTTP worker could not be reached or failed before responding.
    #[error("worker {worker} failed: {reason}")]
    Upstream {
        /// The worker.
        worker: WorkerId,
        /// What went wrong.
        reason: String,
    },
    /// The request body is larger than the configured limit.
    #[error("request body larger than the {limit}-byte limit")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A bug: logged in full, reported to the client as INTERNAL only.
    #[error("internal error: {0}")]
    Internal(String),
    /// The client's deadline passed before the worker answered.
    #[error("deadline exceeded before worker {worker} responded")]
    DeadlineExceeded {
        /// The worker that was waited for.
        worker: WorkerId,
    },
}

impl RouteError {
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
