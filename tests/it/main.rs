//! The integration tests: one crate, so the library is linked once.
//!
//! Each module is one area; each test starts the real router in-process on
//! 127.0.0.1:0 against real mock workers (helpers in `common`), or the
//! built binaries, or a real etcd, Prometheus or Kubernetes-shaped API.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

mod auth;
mod churn;
mod cli;
mod discovery;
mod engine_mlx;
mod engine_trtllm;
mod engines;
mod faults;
mod health;
mod http;
mod isolation;
mod kv_events;
mod limits;
mod openai_engines;
mod overload;
mod pd;
mod policies;
mod proxy;
mod replay;
mod routing;
mod shutdown;
mod store;
mod tenants;
mod tls;
mod worker_management;
