//! The one mapping from Switchyard's errors to gRPC status codes
//! (DESIGN invariant 6). Messages say what to fix; internal details are
//! logged here, not sent.

use tonic::{Code, Status};

use crate::routers::RouteError;
use crate::worker::RegistryError;

impl From<RegistryError> for Status {
    fn from(err: RegistryError) -> Status {
        match &err {
            RegistryError::AlreadyExists { .. } => Status::already_exists(err.to_string()),
            RegistryError::NotFound { .. } => Status::not_found(err.to_string()),
            RegistryError::RoleConflict { .. } => Status::failed_precondition(err.to_string()),
            RegistryError::InvalidSpec(_) => Status::invalid_argument(err.to_string()),
        }
    }
}

impl From<RouteError> for Status {
    fn from(err: RouteError) -> Status {
        match &err {
            RouteError::InvalidRequest(_) | RouteError::ModelRequired { .. } => {
                Status::invalid_argument(err.to_string())
            }
            RouteError::NoModels
            | RouteError::UnknownModel { .. }
            | RouteError::Upstream { .. }
            | RouteError::NoWorkers { .. }
            | RouteError::NoHealthyWorkers { .. }
            | RouteError::Policy { .. } => Status::unavailable(err.to_string()),
            RouteError::WorkerUnreachable { worker, reason } => {
                tracing::warn!(%worker, %reason, "worker unreachable");
                Status::unavailable(err.to_string())
            }
            RouteError::NoReachableWorker { .. } => {
                tracing::warn!(error = %err, "no worker reachable");
                Status::unavailable(err.to_string())
            }
            RouteError::DeadlineExceeded { .. } => Status::deadline_exceeded(err.to_string()),
            RouteError::BodyTooLarge { .. } => Status::resource_exhausted(err.to_string()),
            RouteError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::internal("internal error; the router logged the details")
            }
            RouteError::WorkerFailed { worker, status } => match status.code() {
                // The worker judged the request itself: the client must hear
                // what it said, not "try again".
                Code::InvalidArgument
                | Code::OutOfRange
                | Code::FailedPrecondition
                | Code::ResourceExhausted
                | Code::DeadlineExceeded
                | Code::Cancelled => Status::new(status.code(), status.message()),
                // Everything else (connection refused, reset, the worker's own
                // crash) means this worker could not serve it.
                _ => {
                    tracing::warn!(%worker, code = ?status.code(), message = status.message(), "worker failed before responding");
                    Status::unavailable(err.to_string())
                }
            },
        }
    }
}
