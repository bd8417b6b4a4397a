//! Services: thin adapters from the wire to the core.
//!
//! Each service converts proto messages into domain types at the boundary
//! (`convert`), calls the registry or a router, and maps errors to a
//! `tonic::Status` in exactly one place (`status`). The gRPC listener
//! (`listener`) serves `Inference` (the hot path, written against HTTP/2
//! bodies) directly and the tonic services through tonic's routes.

mod convert;
pub mod http;
mod http_error;
mod inference;
pub mod listener;
mod status;
mod worker_management;

pub use http_error::HttpError;
pub use inference::InferenceService;
pub use worker_management::WorkerManagementService;
