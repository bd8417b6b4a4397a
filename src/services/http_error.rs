//! The one mapping from Switchyard's errors to HTTP responses: a status code
//! and an OpenAI-style JSON body, `{"error": {"message", "type", "code"}}`,
//! which OpenAI clients surface as-is, with `"type": "error"` beside it so
//! it is Anthropic's shape too (`{"type": "error", "error": {"type",
//! "message"}}`). Internal details are logged, not sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::admission::AddError;
use crate::auth::Denied;
use crate::routers::RouteError;
use crate::store::StoreError;
use crate::worker::RegistryError;

/// An error on its way to an HTTP client.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    message: String,
    /// Every worker of the model was at its limit of calls in flight.
    busy: bool,
}

/// Marks a response (in its extensions) refused because every worker of
/// the model was at `limits.max_in_flight_per_worker`: the call may wait
/// for one (`admit::until_not_busy`).
#[derive(Debug, Clone, Copy)]
pub struct WorkersBusy;

impl HttpError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
            busy: false,
        }
    }

    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let kind = match self.status {
            StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::REQUEST_TIMEOUT => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::CONFLICT => "conflict_error",
            StatusCode::SERVICE_UNAVAILABLE => "service_unavailable_error",
            StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => "upstream_error",
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            _ => "internal_error",
        };
        let body = serde_json::json!({
            "type": "error",
            "error": { "message": self.message, "type": kind, "code": self.status.as_u16() }
        });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if self.busy {
            response.extensions_mut().insert(WorkersBusy);
        }
        response
    }
}

impl From<RegistryError> for HttpError {
    fn from(err: RegistryError) -> Self {
        let status = match &err {
            RegistryError::InvalidSpec(_) => StatusCode::BAD_REQUEST,
            RegistryError::Full { .. } => StatusCode::TOO_MANY_REQUESTS,
            RegistryError::NotFound { .. } => StatusCode::NOT_FOUND,
            RegistryError::AlreadyExists { .. }
            | RegistryError::RoleConflict { .. }
            | RegistryError::EngineConflict { .. } => StatusCode::CONFLICT,
        };
        HttpError::new(status, err.to_string())
    }
}

impl From<StoreError> for HttpError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Registry(e) => e.into(),
            StoreError::Unavailable(_) => {
                HttpError::new(StatusCode::SERVICE_UNAVAILABLE, err.to_string())
            }
            StoreError::Discovered { .. } => HttpError::new(StatusCode::CONFLICT, err.to_string()),
        }
    }
}

impl From<AddError> for HttpError {
    fn from(err: AddError) -> Self {
        match err {
            AddError::Registry(e) => e.into(),
            // The request is fine; the worker it names could not be
            // reached or identified.
            AddError::Identify(e) => {
                HttpError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            AddError::HostRefused { .. } => HttpError::new(StatusCode::FORBIDDEN, err.to_string()),
            AddError::Store(e) => e.into(),
        }
    }
}

impl From<Denied> for HttpError {
    fn from(denied: Denied) -> Self {
        let status = match denied {
            Denied::Missing | Denied::Invalid | Denied::NoClientCert => StatusCode::UNAUTHORIZED,
            Denied::NotAdmin => StatusCode::FORBIDDEN,
        };
        HttpError::new(status, denied.to_string())
    }
}

impl From<RouteError> for HttpError {
    fn from(err: RouteError) -> Self {
        let status = match &err {
            RouteError::WrongEngine { .. } => StatusCode::CONFLICT,
            RouteError::Untranslatable(_) => StatusCode::BAD_REQUEST,
            RouteError::InvalidRequest(_)
            | RouteError::PromptTooLong { .. }
            | RouteError::ModelRequired { .. }
            | RouteError::EngineModelRequired { .. } => StatusCode::BAD_REQUEST,
            RouteError::UnknownModel { .. } => StatusCode::NOT_FOUND,
            RouteError::NoModels
            | RouteError::NoEngineWorkers { .. }
            | RouteError::NoWorkers { .. }
            | RouteError::NoHealthyWorkers { .. }
            | RouteError::Policy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            RouteError::WorkerFailed { .. }
            | RouteError::WorkerUnreachable { .. }
            | RouteError::NoReachableWorker { .. } => {
                tracing::warn!(error = %err, "upstream failure");
                StatusCode::BAD_GATEWAY
            }
            RouteError::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
            RouteError::WorkersBusy { .. } => {
                return HttpError {
                    busy: true,
                    ..HttpError::new(StatusCode::TOO_MANY_REQUESTS, err.to_string())
                }
            }
            RouteError::WorkerIdle { .. } => StatusCode::BAD_GATEWAY,
            RouteError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                return HttpError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; the router logged the details",
                );
            }
        };
        HttpError::new(status, err.to_string())
    }
}
