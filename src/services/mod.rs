//! Services: thin adapters from the wire to the core.
//!
//! Each service converts wire messages (proto, JSON) into domain types at
//! the boundary (`convert`), calls the registry or a router, and maps
//! errors once per wire: to a `tonic::Status` (`status`) or an HTTP
//! response (`http_error`). The gRPC listener (`listener`) serves
//! `Inference` (the hot path, written against HTTP/2 bodies) directly and
//! the tonic services through tonic's routes; the HTTP API (`http`) is axum,
//! served by `http_listener`, with `openai` serving OpenAI and SGLang HTTP
//! for models whose workers are SGLang or vLLM gRPC engines. Both listeners
//! accept through `tls`, which terminates TLS when it is configured, and
//! drain the bodies of requests they answer early (`drain`).

pub mod admin;
pub mod admit;
mod convert;
pub mod dashboard;
mod drain;
mod families;
pub mod http;
mod http_error;
pub mod http_listener;
mod inference;
pub mod listener;
pub mod metrics;
pub mod openai;
pub mod overload;
mod status;
mod tenant_metrics;
pub mod tls;
mod worker_management;

pub use http_error::HttpError;
pub use inference::InferenceService;
pub use worker_management::WorkerManagementService;
