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
//! One line a module; `docs/ARCHITECTURE.md` has the data paths and which
//! module may use which.
//!
//! - `main.rs`: the `switchyard` binary: [`cli`] → [`config::Config`] → [`app::App`], signals.
//! - [`cli`]: clap flags, each overriding a field of the one config tree; `demo`.
//! - [`ctl`]: the admin CLI (`workers list|get|add|remove|watch`, `tenants list`, `generate`) over gRPC.
//! - [`config`]: the config tree, data only, one file per concern (serde + defaults + `validate`); imports nothing else of the crate.
//! - [`app`]: wiring; `App::build(config)`, then `serve(listeners, shutdown)`.
//! - [`auth`]: API keys (admin and client roles), checked in constant time; headers stripped before workers.
//! - [`tenants`]: tenants by key, their token buckets and tickets settled with what calls used, reloads, and the router's limit on calls in flight with its fair queue (priority classes, then weighted start-time fair queueing).
//! - [`pb`]: generated protobuf code, included once.
//! - [`transport`]: the wire to workers: gRPC over HTTP/2 (`grpc`), HTTP/1 (`http1`), idle request bodies (`idle`), TLS to workers and PEM files (`tls`); typed `Failure`s.
//! - [`engines`]: the engine seam (`EngineSeam`) and one file per engine (Switchyard, SGLang, vLLM, TensorRT-LLM, MLX): paths, the request view, PD, `Abort`, loads, model info, tokenizer, health, the engine's messages for translation; detection and the calls made the same way for all.
//! - [`admission`]: the write side: a worker request checked (`hosts`), its URL parsed once, identified through the seam, handed to the store.
//! - [`store`]: where runtime-added workers live beyond the process: memory, a state file (`file`), or etcd shared by several routers (`etcd`, mirrored by a watch).
//! - [`discovery`]: workers from Kubernetes pods (`kube`'s list-and-watch), this router's own.
//! - [`worker`]: the domain: `Worker`, `WorkerSpec`, its `Endpoint` and engine handle, the `WorkerRegistry` (its snapshot and errors), registry events, load guards, circuit breakers, per-worker call counters (`stats`).
//! - [`policies`]: the `Policy` contract and factory, one file per policy, the radix tree.
//! - [`kv`]: routing on the engines' own KV events: the router's chained block hash, the index (confirmed and pending blocks, engine loads), one `SubscribeKvEvents` stream per engine worker (resume, resync), decoded without a vector per block (`wire`).
//! - [`replay`]: `switchyard bench replay|plot`: a Mooncake-format trace replayed against a router, TTFT and hit rates measured.
//! - [`routers`]: `RouteError`, selection and retries from one snapshot per call (`select`), one PD dispatch (`pd`), one attempt's load and abort (`attempt`), running calls (`call`, with `chunk_clock` timing relayed chunks), the `switchyard.v1` ↔ engine translation (`translate`), `grpc` and `http` routers.
//! - [`services`]: the gRPC listener and services, the HTTP API, the HTTP front of gRPC engine workers (`openai`: OpenAI's chat, completions and Responses APIs, Anthropic's Messages, SGLang's `/generate`), admission (`admit`: a tenant's limits, then a slot; a call waiting for a busy model's workers), the metadata limit (`overload`), the listeners' TLS and accept loop (`tls`), the admin listener (`admin`: Prometheus `metrics`, the live `dashboard`), and the one error mapping per wire.
//! - [`tokenizer`]: per-model tokenizers (Hugging Face files), chat templates, incremental detokenization.
//! - [`reasoning`]: a reasoning model's thought split from its answer as the text streams (`<think>` tags, Kimi's, and gpt-oss's harmony channels with their calls), chosen per model or detected from its chat template.
//! - [`tools`]: tool calls read out of a model's streaming text, one file per format (Hermes/Qwen, Llama 3 JSON, Mistral, Llama 4 pythonic, DeepSeek V3), chosen per model or detected from its chat template, and the output of a constrained tool choice.
//! - [`health`]: the worker health checker and the router's serving reporter.
//! - [`telemetry`]: OpenTelemetry traces over OTLP: a span per call, PD sides as children, `traceparent` to workers.
//! - [`mock`]: a configurable fake worker (gRPC in any engine's protocol, or HTTP) for tests, demos and benchmarks, and a simulated engine (`sim`: KV cache, batching scheduler, GPU timing, KV events); knows nothing of the router.
//! - `bin/mock_worker.rs`: the `mock-worker` binary.
//!
//! Outside `src/`: `proto/` (the public contract), `tests/` (integration
//! tests: one crate, `tests/it`, a module per area, and `tests/metrics`,
//! which reads process-wide counters; `tests/python` drives the router from grpcio,
//! the `openai` package and curl), `benches/` (micro-benchmarks), `examples/`
//! (load generator, latency probe, the HTTP/2 floor), `bench/` (side-by-side
//! and instruction-count runs), `clients/python`, `fuzz/` (cargo-fuzz targets
//! over the `fuzzing` module and public parsers; `scripts/fuzz.sh`).

#![forbid(unsafe_code)]

pub mod admission;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod ctl;
pub mod discovery;
pub mod engines;
pub mod health;
pub mod kv;
pub mod mock;
pub mod pb;
pub mod policies;
pub mod reasoning;
pub mod replay;
pub mod routers;
pub mod services;
pub mod store;
pub mod telemetry;
pub mod tenants;
pub mod tokenizer;
pub mod tools;
pub mod transport;
pub mod worker;

/// The parsers of untrusted input, for the fuzz targets (`fuzz/`); not a
/// stable API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::routers::grpc::inbound::Inbound;
    pub use crate::routers::http::input::HttpInput;
}

pub use app::{App, AppError};
pub use config::Config;
