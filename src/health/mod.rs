//! Health: of workers (checked by the router) and of the router itself
//! (served over `grpc.health.v1`).
//!
//! [`HealthChecker`] is one loop, started by `App::serve` and stopped with it,
//! that probes every worker on an interval (gRPC workers with
//! `grpc.health.v1/Check`, HTTP workers with `GET /health`) and flips a worker's state in
//! the registry after N consecutive failures or M consecutive successes.
//! [`LoadPoller`] asks SGLang and vLLM workers for their load (`GetLoads`)
//! for the load-balancing policies.
//! [`ServingReporter`] listens to registry events and keeps the router's own
//! `switchyard.v1.Inference` status true to whether any model can be served.

mod checker;
mod loads;
mod reporter;

pub use checker::HealthChecker;
pub use loads::LoadPoller;
pub use reporter::{can_serve, ServingReporter};
