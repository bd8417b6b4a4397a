//! The one mapping from Switchyard's errors to gRPC statuses (DESIGN
//! invariant 6), before a response and mid-stream. Messages say what to
//! fix; internal details are logged here, not sent.

use http::HeaderMap;
use tonic::{Code, Status};

use crate::admission::AddError;
use crate::engines::translate::TranslateError;
use crate::routers::RouteError;
use crate::store::StoreError;
use crate::transport::grpc::codec::FrameError;
use crate::transport::Failure;
use crate::worker::RegistryError;

impl From<RegistryError> for Status {
    fn from(err: RegistryError) -> Status {
        match &err {
            RegistryError::AlreadyExists { .. } => Status::already_exists(err.to_string()),
            RegistryError::NotFound { .. } => Status::not_found(err.to_string()),
            RegistryError::RoleConflict { .. } | RegistryError::EngineConflict { .. } => {
                Status::failed_precondition(err.to_string())
            }
            RegistryError::InvalidSpec(_) => Status::invalid_argument(err.to_string()),
            RegistryError::Full { .. } => Status::resource_exhausted(err.to_string()),
        }
    }
}

impl From<StoreError> for Status {
    fn from(err: StoreError) -> Status {
        match err {
            StoreError::Registry(e) => e.into(),
            StoreError::Unavailable(_) => Status::unavailable(err.to_string()),
            StoreError::Discovered { .. } => Status::failed_precondition(err.to_string()),
        }
    }
}

impl From<AddError> for Status {
    fn from(err: AddError) -> Status {
        match err {
            AddError::Registry(e) => e.into(),
            AddError::Identify(e) => Status::failed_precondition(e.to_string()),
            AddError::HostRefused { .. } => Status::permission_denied(err.to_string()),
            AddError::Store(e) => e.into(),
        }
    }
}

/// A client's request body that is not one acceptable message.
pub fn frame_error(err: FrameError) -> Status {
    match err {
        FrameError::Compressed => Status::unimplemented(err.to_string()),
        FrameError::TooLarge(_) => Status::resource_exhausted(err.to_string()),
        FrameError::Several | FrameError::Truncated => Status::invalid_argument(err.to_string()),
    }
}

/// Codes a worker uses when it judged the request itself: the client must
/// hear what it said, not "try again".
fn is_the_requests_fault(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument
            | Code::OutOfRange
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Cancelled
    )
}

/// The gRPC code for a transport failure (the gRPC over HTTP/2 mapping of
/// reset codes; a lost connection is `UNAVAILABLE`).
fn failure_code(failure: &Failure) -> Code {
    match failure {
        Failure::Status(status) => Code::from(status.code),
        Failure::Connect(_) | Failure::ConnectionLost => Code::Unavailable,
        Failure::Reset(0x7) => Code::Unavailable, // REFUSED_STREAM
        Failure::Reset(0x8) => Code::Cancelled,   // CANCEL
        Failure::Reset(0xb) => Code::ResourceExhausted, // ENHANCE_YOUR_CALM
        Failure::Reset(0xc) => Code::PermissionDenied, // INADEQUATE_SECURITY
        Failure::Reset(_) | Failure::Protocol | Failure::NoStatus | Failure::BadReply(_) => {
            Code::Internal
        }
        Failure::TimedOut(_) => Code::DeadlineExceeded,
        // The gRPC over HTTP/2 mapping of HTTP statuses.
        Failure::HttpStatus(status, _) => match status {
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502 | 503 | 504 => Code::Unavailable,
            _ => Code::Unknown,
        },
    }
}

impl From<RouteError> for Status {
    /// A call refused or failed before any response.
    fn from(err: RouteError) -> Status {
        match &err {
            RouteError::WrongEngine { .. }
            | RouteError::Untranslatable(TranslateError::NeedsTokenizer { .. }) => {
                Status::failed_precondition(err.to_string())
            }
            RouteError::Untranslatable(_) => Status::invalid_argument(err.to_string()),
            RouteError::InvalidRequest(_)
            | RouteError::PromptTooLong { .. }
            | RouteError::ModelRequired { .. }
            | RouteError::EngineModelRequired { .. } => Status::invalid_argument(err.to_string()),
            RouteError::UnknownModel { .. } => Status::not_found(err.to_string()),
            RouteError::NoModels
            | RouteError::NoEngineWorkers { .. }
            | RouteError::NoWorkers { .. }
            | RouteError::NoHealthyWorkers { .. }
            | RouteError::Policy { .. } => Status::unavailable(err.to_string()),
            RouteError::WorkerUnreachable { .. } | RouteError::NoReachableWorker { .. } => {
                tracing::warn!(error = %err, "no worker reachable");
                Status::unavailable(err.to_string())
            }
            RouteError::DeadlineExceeded { .. } => Status::deadline_exceeded(err.to_string()),
            RouteError::WorkersBusy { .. } => Status::resource_exhausted(err.to_string()),
            RouteError::WorkerIdle { .. } => Status::unavailable(err.to_string()),
            RouteError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Status::internal("internal error; the router logged the details")
            }
            RouteError::WorkerFailed { worker, failure } => match failure_code(failure) {
                code if matches!(failure, Failure::Status(_)) && is_the_requests_fault(code) => {
                    Status::new(code, failure_message(failure))
                }
                // Everything else (a reset, a lost connection, the worker's
                // own crash) means this worker could not serve it.
                _ => {
                    tracing::warn!(%worker, %failure, "worker failed before responding");
                    Status::unavailable(format!(
                        "worker {worker} failed before responding: {failure}"
                    ))
                }
            },
        }
    }
}

/// The worker's own message for its status; ours for anything else.
fn failure_message(failure: &Failure) -> String {
    match failure {
        Failure::Status(status) => status.message.clone(),
        other => other.to_string(),
    }
}

/// The trailers that end a relayed stream with `err`. A worker's own status
/// after a partial stream is passed on as it sent it (details included);
/// the router's own errors (deadline, a lost connection, the prefill side
/// of a PD call failing) become the status they map to.
pub fn mid_stream_trailers(err: RouteError) -> HeaderMap {
    let status = match err {
        RouteError::WorkerFailed {
            failure: Failure::Status(status),
            ..
        } => return status.trailers,
        RouteError::WorkerFailed { worker, failure } => {
            tracing::debug!(%worker, %failure, "worker failed mid-stream");
            Status::new(failure_code(&failure), failure.to_string())
        }
        other => Status::from(other),
    };
    let mut trailers = HeaderMap::with_capacity(2);
    if let Err(unencodable) = status.add_header(&mut trailers) {
        trailers.clear();
        let _ = unencodable.add_header(&mut trailers);
    }
    trailers
}
