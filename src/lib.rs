//! Switchyard: a gRPC-first request router for fleets of LLM inference workers.
//!
//! Operators add and remove workers over gRPC (`switchyard.v1.WorkerManagement`);
//! clients call `switchyard.v1.Inference/Generate` on the router, which resolves
//! candidate workers from the [`worker::WorkerRegistry`] on every call, asks a
//! load-balancing [`policies::Policy`] to pick one and proxies the stream,
//! faithfully, with cancellation, deadlines and load accounting. The same
//! registry feeds prefill/decode (PD) routing and HTTP routers for HTTP
//! workers. The router serves `grpc.health.v1` and checks its workers' health.
//!
//! # Layout
//!
//! - `main.rs`: the `switchyard` binary: [`cli`] → [`config::Config`] → [`app::App`].
//! - [`cli`]: clap definitions; flags override fields of the one config tree; `demo`.
//! - [`config`]: the config tree (serde + defaults + `validate`).
//! - [`app`]: wiring; `App::build(config)` then `serve(listener, shutdown)`.
//! - [`pb`]: generated protobuf code (prost messages and a raw-bytes `Inference`).
//! - [`worker`]: `Worker`, `WorkerId`, roles and modes (`spec`), the registry
//!   (`registry`), load guards (`load`), the HTTP/2 client to gRPC workers
//!   (`upstream`, on the `h2` crate: `Generate`, health checks, `Abort`) and
//!   its connection settings (`client`).
//! - [`health`]: the worker health checker and the router's serving reporter.
//! - [`policies`]: the `Policy` contract, factory and per-model `PolicySet`
//!   (`mod.rs`), their config (`config`), one file per policy, and the
//!   cache-aware `radix_tree`.
//! - [`routers`]: `RouteError`, in-flight calls (`inflight`), the selection core
//!   shared by every router (`select`: candidates, policy choice, and `offer`,
//!   which passes a call no worker received on to another worker), and the gRPC routers (`grpc`: the
//!   facade and `open`, `inbound` parsing, `regular`, `pd`), the HTTP routers
//!   (`http`: regular and PD in `mod.rs`, body `input` parsing, `relay`), and
//!   PD bootstrap `rooms`.
//! - [`proxy`]: the faithful hop: gRPC framing and the raw-bytes codec
//!   (`codec`), metadata, deadlines, `ProxyStream`.
//! - [`services`]: thin tonic services (`inference` is written against HTTP/2
//!   bodies, relaying the worker's body as framed) and the axum HTTP API (`http`), with the
//!   one error → `Status` mapping (`status`) and error → HTTP mapping (`http_error`).
//! - [`mock`]: a configurable fake worker (`mod.rs`: behaviour and counters;
//!   `server`: lifecycle; `http`: the HTTP API; regular, prefill or decode, with a
//!   real TCP rendezvous in `bootstrap`), used by `mock-worker`, `demo` and tests.
//! - `bin/mock_worker.rs`: the `mock-worker` binary.
//!
//! Outside `src/`: `proto/` (the public contract), `tests/` (integration tests,
//! one file per area, helpers in `tests/common`; `tests/python` is the grpcio
//! contract test; `tests/python/test_http.py` drives the HTTP side with the
//! `openai` package and curl), `benches/` (divan micro-benchmarks),
//! `examples/` (`loadgen`, the load generator; `overhead`, direct vs regular
//! vs PD latency; `h2_floor`, the cheapest relay on the HTTP/2 stack, the
//! benchmarks' floor), `bench/` (side-by-side runs against nginx, instruction
//! counts under callgrind, scale checks),
//! `clients/python` (a small grpcio client).

#![forbid(unsafe_code)]

pub mod app;
pub mod cli;
pub mod config;
pub mod health;
pub mod mock;
pub mod pb;
pub mod policies;
pub mod routers;
pub mod services;
pub mod transport;
pub mod worker;

pub use app::{App, AppError};
pub use config::Config;
