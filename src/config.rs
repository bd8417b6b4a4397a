//! One configuration tree for the router.
//!
//! Every knob lives here, as serde structs with defaults and
//! `deny_unknown_fields`; a TOML file (`--config`) fills the tree and command
//! line flags override fields of the same tree (see `cli`). [`Config::validate`]
//! runs once, before anything is built.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admission::hosts::WorkerHostsConfig;
use crate::auth::AuthConfig;
use crate::policies::PolicyConfig;
use crate::transport::grpc::ChannelConfig;
use crate::worker::{CircuitConfig, WorkerRole};

/// The router's default gRPC address: loopback only unless told otherwise.
pub const DEFAULT_GRPC_LISTEN: &str = "127.0.0.1:50051";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this tree.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What the parser said.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the gRPC listener (worker management, inference, health, reflection).
    pub grpc_listen: SocketAddr,
    /// Address of the HTTP listener, if any (inference, models, health,
    /// readiness, worker management).
    pub http_listen: Option<SocketAddr>,
    /// Address of the admin listener, if any (metrics, liveness,
    /// readiness): no keys, so keep it on loopback or fenced.
    pub admin_listen: Option<SocketAddr>,
    /// The HTTP side: upstream timeouts and the request-body limit.
    pub http: HttpConfig,
    /// Runtime worker threads (unset: one per core; 1: a single-threaded
    /// scheduler).
    pub worker_threads: Option<usize>,
    /// Workers registered at startup, before the router reports SERVING.
    pub workers: Vec<StartupWorker>,
    /// Tokenizers by model: a Hugging Face tokenizer directory (or its
    /// `tokenizer.json`), for text and chat requests to workers that take
    /// token ids.
    pub tokenizers: BTreeMap<String, PathBuf>,
    /// Load balancing.
    pub policy: PolicyConfig,
    /// Active health checks of workers.
    pub health_check: HealthCheckConfig,
    /// Connections to workers.
    pub upstream: UpstreamConfig,
    /// Bounds on what one call may hold.
    pub limits: LimitsConfig,
    /// How the router stops on a signal.
    pub shutdown: ShutdownConfig,
    /// Each worker's circuit breaker, fed by its calls.
    pub breaker: CircuitConfig,
    /// Offering a call that reached no worker to another one.
    pub retry: RetryConfig,
    /// API keys, and the headers kept from workers.
    pub auth: AuthConfig,
    /// Which hosts may be registered as workers.
    pub worker_hosts: WorkerHostsConfig,
    /// TLS on the router's listeners.
    pub tls: Option<ServerTlsConfig>,
    /// TLS to `grpcs://` and `https://` workers.
    pub worker_tls: WorkerTlsConfig,
    /// Where dynamically added workers are kept: in this process only
    /// (default), in a state file, or in etcd shared by several routers.
    pub registry: RegistryConfig,
    /// Workers discovered from an orchestrator (Kubernetes pods).
    pub discovery: DiscoveryConfig,
    /// OpenTelemetry traces (see `telemetry`): off unless an endpoint is set.
    pub tracing: TracingConfig,
}

/// OpenTelemetry traces exported over OTLP/gRPC (see `telemetry`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// The collector's OTLP/gRPC endpoint, `http://HOST:4317` (or
    /// `https://`); tracing is off when unset.
    pub otlp_endpoint: Option<String>,
    /// The spans' `service.name`: "switchyard".
    pub service_name: String,
    /// The share of traces started at the router that are sampled, 0 to 1:
    /// 0.01. A client's `traceparent` decides for its own calls (a sampled
    /// one is always traced). A sampled call costs about a quarter more
    /// router instructions (docs/BENCHMARKS.md).
    pub sample_ratio: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        TracingConfig {
            otlp_endpoint: None,
            service_name: "switchyard".into(),
            sample_ratio: 0.01,
        }
    }
}

impl TracingConfig {
    /// Checks the endpoint's form and the ratio's range.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err(format!(
                "tracing.sample_ratio must be between 0 and 1, got {}",
                self.sample_ratio
            ));
        }
        if self.service_name.is_empty() {
            return Err("tracing.service_name must not be empty".into());
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            let uri: http::Uri = endpoint.parse().map_err(|e| {
                format!("tracing.otlp_endpoint (--otlp-endpoint) {endpoint:?}: {e}")
            })?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(format!(
                    "tracing.otlp_endpoint (--otlp-endpoint) {endpoint:?}: expected http://HOST:PORT or https://HOST:PORT (OTLP over gRPC, usually port 4317)"
                ));
            }
        }
        Ok(())
    }
}

/// Which discovery, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DiscoveryKind {
    /// Ready pods matching a label selector (see `discovery`).
    Kubernetes,
}

/// Workers from Kubernetes pods (see `discovery`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Off when unset.
    pub kind: Option<DiscoveryKind>,
    /// The pods' label selector, `KEY=VALUE[,KEY=VALUE...]`.
    pub selector: String,
    /// Their namespace (default: the router's own, or the kubeconfig's).
    pub namespace: Option<String>,
    /// The workers' port, for pods without a `switchyard.io/port` annotation.
    pub port: Option<u16>,
    /// `grpc` (default), `grpcs`, `http` or `https`.
    pub scheme: String,
    /// A kubeconfig file (default: `KUBECONFIG`, `~/.kube/config`, or the
    /// in-cluster service account).
    pub kubeconfig: Option<PathBuf>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            kind: None,
            selector: String::new(),
            namespace: None,
            port: None,
            scheme: "grpc".into(),
            kubeconfig: None,
        }
    }
}

/// Where the workers added over the management APIs live beyond this
/// process (see `store`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`: a registry shared by every
    /// router given the same URL.
    pub url: Option<String>,
    /// Start even when etcd cannot be reached (with no shared workers until
    /// it can); otherwise the router refuses to start.
    pub optional: bool,
    /// One router without etcd: keep the workers added at runtime in this
    /// file across restarts.
    pub state_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc_listen: DEFAULT_GRPC_LISTEN
                .parse()
                .unwrap_or_else(|_| unreachable!("constant address")),
            http_listen: None,
            admin_listen: None,
            worker_threads: None,
            http: HttpConfig::default(),
            workers: Vec::new(),
            tokenizers: BTreeMap::new(),
            policy: PolicyConfig::default(),
            health_check: HealthCheckConfig::default(),
            upstream: UpstreamConfig::default(),
            limits: LimitsConfig::default(),
            shutdown: ShutdownConfig::default(),
            breaker: CircuitConfig::default(),
            retry: RetryConfig::default(),
            auth: AuthConfig::default(),
            worker_hosts: WorkerHostsConfig::default(),
            tls: None,
            worker_tls: WorkerTlsConfig::default(),
            registry: RegistryConfig::default(),
            discovery: DiscoveryConfig::default(),
            tracing: TracingConfig::default(),
        }
    }
}

/// A call that reached no worker (no connection, or the stream refused
/// unprocessed) is offered to another worker while the retry budget
/// allows: retries may add `budget_percent` of the calls of the last
/// `budget_ttl_ms`, plus `min_per_second` always (Linkerd's and Envoy's
/// kind of budget), so a fleet-wide outage does not multiply the load.
/// Each retry waits a jittered backoff first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries as a share of recent calls, in percent: 20.
    pub budget_percent: f32,
    /// Retries allowed per second whatever the traffic: 10.
    pub min_per_second: u32,
    /// How long a call counts toward the budget: 10 s.
    pub budget_ttl_ms: u64,
    /// Most workers one call is offered to: 4.
    pub max_attempts: u32,
    /// The first retry waits up to this (full jitter), doubling per retry
    /// up to 10 times it: 10 ms.
    pub backoff_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            budget_percent: 20.0,
            min_per_second: 10,
            budget_ttl_ms: 10_000,
            max_attempts: 4,
            backoff_ms: 10,
        }
    }
}

impl RetryConfig {
    /// What is wrong with these values, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1000.0).contains(&self.budget_percent) {
            return Err(format!(
                "retry.budget_percent must be between 0 and 1000, got {}",
                self.budget_percent
            ));
        }
        if !(1_000..=60_000).contains(&self.budget_ttl_ms) {
            return Err(format!(
                "retry.budget_ttl_ms must be between 1000 and 60000, got {}",
                self.budget_ttl_ms
            ));
        }
        if self.max_attempts == 0 {
            return Err("retry.max_attempts must be at least 1 (1: never retry)".into());
        }
        Ok(())
    }
}

/// Bounds on what one call may hold, so that no client keeps a resource
/// forever.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// The deadline of a gRPC call that sets none (`grpc-timeout` absent):
    /// 300 s, as the HTTP side waits for a worker. The worker is sent the
    /// remaining time, as for a client's own deadline.
    pub default_deadline_ms: u64,
    /// A request body (gRPC message or HTTP body) that sends nothing for
    /// this long is refused (gRPC `DEADLINE_EXCEEDED`, HTTP 408), so a
    /// client cannot hold a call open by never finishing its request. 10 s:
    /// far longer than any working client pauses inside one small message.
    pub request_body_idle_ms: u64,
    /// The most workers registered at once: 4096. Every worker costs a
    /// health check per interval and a line in `ListWorkers`; past the
    /// limit `AddWorker` is refused with `RESOURCE_EXHAUSTED` (HTTP 429).
    pub max_workers: usize,
    /// Inference calls in flight through the router (both listeners):
    /// 10,000 (0: no limit). Past it, calls wait in a queue.
    pub max_in_flight: usize,
    /// Calls that may wait for one in flight to finish: 1,000. A call
    /// beyond is refused at once with `RESOURCE_EXHAUSTED` (HTTP 429).
    pub queue_size: usize,
    /// How long a call waits in the queue before it is refused: 1 s.
    pub queue_timeout_ms: u64,
    /// Calls in flight to one worker (0, the default: no limit). A worker
    /// at its limit is passed over; when every worker of the model is,
    /// the call is refused with `RESOURCE_EXHAUSTED` (HTTP 429).
    pub max_in_flight_per_worker: u32,
    /// A relayed gRPC stream whose worker sends nothing for this long
    /// (after its first message) fails with `UNAVAILABLE`, and the worker
    /// is told to abort: 60 s (0: never). Checked at this granularity, so
    /// the failure comes between one and two intervals of silence.
    pub stream_idle_ms: u64,
    /// The longest prompt, in tokens, the router sends to an SGLang or
    /// vLLM worker when it has the ids (token-id requests, and text it
    /// tokenized): 0, the default, for no limit of the router's own. A
    /// prompt that does not fit the model's context (the smallest
    /// `max_context_length` its workers report) is refused either way.
    pub max_prompt_tokens: u32,
    /// The most bytes of metadata (gRPC) or headers (HTTP) one request may
    /// carry, counted as HTTP/2 counts a header list (each name and value
    /// plus 32): 16 KiB, what gRPC clients send by default. Over it the
    /// call is refused (`RESOURCE_EXHAUSTED`, HTTP 431) before anything
    /// reaches a worker.
    pub max_metadata_bytes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            default_deadline_ms: 300_000,
            request_body_idle_ms: 10_000,
            max_workers: 4096,
            max_in_flight: 10_000,
            queue_size: 1_000,
            queue_timeout_ms: 1_000,
            max_in_flight_per_worker: 0,
            stream_idle_ms: 60_000,
            max_prompt_tokens: 0,
            max_metadata_bytes: 16 * 1024,
        }
    }
}

impl LimitsConfig {
    /// [`Self::default_deadline_ms`] as a duration.
    pub fn default_deadline(&self) -> Duration {
        Duration::from_millis(self.default_deadline_ms)
    }

    /// [`Self::request_body_idle_ms`] as a duration.
    pub fn request_body_idle(&self) -> Duration {
        Duration::from_millis(self.request_body_idle_ms)
    }

    /// [`Self::stream_idle_ms`] as a duration (`None`: off).
    pub fn stream_idle(&self) -> Option<Duration> {
        (self.stream_idle_ms > 0).then(|| Duration::from_millis(self.stream_idle_ms))
    }

    /// The limit on inference calls in flight these values describe.
    pub fn call_limit(&self) -> crate::services::overload::CallLimit {
        crate::services::overload::CallLimit::new(
            self.max_in_flight,
            self.queue_size,
            Duration::from_millis(self.queue_timeout_ms),
        )
    }
}

/// Stopping on SIGTERM or Ctrl-C: report NOT_SERVING while still answering
/// for `grace_ms` (so load balancers polling health see it and stop
/// sending), then stop accepting and let calls finish for up to
/// `drain_ms`, then cancel what is left (workers are sent `Abort`) and
/// exit. A second signal exits at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// NOT_SERVING, still accepting: 2 s, a couple of probe intervals of a
    /// typical load balancer.
    pub grace_ms: u64,
    /// Calls in flight may finish within this: 30 s, as Kubernetes' default
    /// termination grace period.
    pub drain_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            grace_ms: 2_000,
            drain_ms: 30_000,
        }
    }
}

impl ShutdownConfig {
    /// [`Self::grace_ms`] as a duration.
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms)
    }

    /// [`Self::drain_ms`] as a duration.
    pub fn drain(&self) -> Duration {
        Duration::from_millis(self.drain_ms)
    }
}

/// A worker to register at startup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartupWorker {
    /// `grpc://host:port` or `http://host:port`.
    pub url: String,
    /// The model it serves (SGLang and vLLM workers: empty takes the
    /// engine's served model name).
    #[serde(default)]
    pub model_id: String,
    /// A gRPC worker's engine by name (`switchyard`, `sglang`, `vllm`,
    /// ...: see the README); unset asks the worker at startup. Checked when
    /// the router starts.
    #[serde(default)]
    pub engine: Option<String>,
    /// Its role (default regular).
    #[serde(default)]
    pub role: WorkerRole,
    /// Prefill workers' bootstrap port.
    #[serde(default)]
    pub bootstrap_port: Option<u32>,
    /// Operator labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The HTTP side: the client to HTTP workers and the request-body limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Limit on establishing a connection to an HTTP worker.
    pub connect_timeout_ms: u64,
    /// Limit on waiting for a worker's response headers. Streams may run
    /// longer; a non-streaming generation must finish within it. 300 s.
    pub response_timeout_ms: u64,
    /// Largest request body accepted; larger ones get 413. 32 MiB: long
    /// prompts as token ids fit, runaway uploads do not.
    pub max_body_bytes: usize,
    /// Idle pooled connections kept per worker.
    pub pool_idle_per_worker: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout_ms: 2_000,
            response_timeout_ms: 300_000,
            max_body_bytes: 32 << 20,
            pool_idle_per_worker: 64,
        }
    }
}

impl HttpConfig {
    /// Checks ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.connect_timeout_ms == 0 || self.response_timeout_ms == 0 {
            return Err(
                "http.connect_timeout_ms and http.response_timeout_ms must be at least 1".into(),
            );
        }
        if self.max_body_bytes < 1024 {
            return Err(format!(
                "http.max_body_bytes must be at least 1024, got {}",
                self.max_body_bytes
            ));
        }
        Ok(())
    }
}

impl HttpConfig {
    /// The client settings these values describe, with `tls` for
    /// `https://` workers.
    pub fn client_config(
        &self,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> crate::transport::http1::HttpClientConfig {
        crate::transport::http1::HttpClientConfig {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            response_timeout: Duration::from_millis(self.response_timeout_ms),
            pool_idle_per_worker: self.pool_idle_per_worker,
            tls,
        }
    }
}

/// Active health checking: `grpc.health.v1/Check` on every gRPC worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheckConfig {
    /// Time between checks of one worker.
    pub interval_ms: u64,
    /// A check that takes longer counts as a failure.
    pub timeout_ms: u64,
    /// Consecutive failures before a healthy worker is marked unhealthy.
    pub unhealthy_threshold: u32,
    /// Consecutive successes before an unhealthy worker is marked healthy.
    pub healthy_threshold: u32,
    /// The `grpc.health.v1` service name asked of workers. Empty (the
    /// default): each engine's own service for SGLang and vLLM workers
    /// (they report NOT_SERVING there while warming up or draining), the
    /// whole server ("") for Switchyard workers.
    pub service: String,
    /// How often SGLang and vLLM workers are asked for their load
    /// (`GetLoads`), for the load-balancing policies; 0 turns it off.
    /// Switchyard workers are never asked.
    pub loads_interval_ms: u64,
}

impl Default for HealthCheckConfig {
    /// Every 5 s with a 2 s timeout: a dead worker is out of rotation within
    /// about 15 s (3 failures) without probes adding noticeable load, and one
    /// slow probe is not mistaken for death. Two successes before recovery
    /// keep a flapping worker from being chosen on a single lucky probe.
    fn default() -> Self {
        HealthCheckConfig {
            interval_ms: 5_000,
            timeout_ms: 2_000,
            unhealthy_threshold: 3,
            healthy_threshold: 2,
            service: String::new(),
            loads_interval_ms: 1_000,
        }
    }
}

impl HealthCheckConfig {
    /// Time between checks.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Per-check timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    /// Time between `GetLoads` polls; `None` when off.
    pub fn loads_interval(&self) -> Option<Duration> {
        (self.loads_interval_ms > 0).then(|| Duration::from_millis(self.loads_interval_ms))
    }
}

/// Connections to workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Limit on establishing a connection to a worker.
    pub connect_timeout_ms: u64,
    /// HTTP/2 keep-alive ping interval on gRPC worker connections; a
    /// connection whose ping goes unanswered for one more interval is
    /// closed, failing its calls as `UNAVAILABLE` instead of leaving them hung.
    pub keep_alive_interval_ms: u64,
    /// HTTP/2 connections per gRPC worker (calls rotate over them).
    pub connections_per_worker: usize,
    /// HTTP/2 receive window per stream from a gRPC worker: the most one
    /// call's response can have waiting in the router when its client
    /// reads slower than the worker writes. The worker is held back at
    /// this point for that stream alone.
    pub stream_window_bytes: u32,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        let c = ChannelConfig::default();
        UpstreamConfig {
            connect_timeout_ms: c.connect_timeout.as_millis() as u64,
            keep_alive_interval_ms: c.keep_alive_interval.as_millis() as u64,
            connections_per_worker: c.connections,
            stream_window_bytes: c.stream_window,
        }
    }
}

impl UpstreamConfig {
    /// The channel settings these values describe.
    pub fn channel_config(&self) -> ChannelConfig {
        ChannelConfig {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            keep_alive_interval: Duration::from_millis(self.keep_alive_interval_ms),
            connections: self.connections_per_worker,
            stream_window: self.stream_window_bytes,
            tls: None,
        }
    }
}

/// TLS on both listeners (`[tls]`): PEM files, read at startup and again
/// on `SIGHUP` or when they change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// A CA bundle: when set, clients may present a certificate signed by
    /// it, and admin calls (worker management) must.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// How often the files are checked for changes (0: only on `SIGHUP`).
    #[serde(default = "default_reload_check_ms")]
    pub reload_check_ms: u64,
}

pub(crate) fn default_reload_check_ms() -> u64 {
    5_000
}

/// TLS to workers (`[worker_tls]`), for `grpcs://` and `https://` URLs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerTlsConfig {
    /// The CA bundle workers' certificates must chain to (unset: the
    /// system's trusted roots).
    pub ca: Option<PathBuf>,
    /// A client certificate to present to workers (mTLS), with `key`.
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

impl WorkerTlsConfig {
    /// The client configs these files make (`None` when nothing is set:
    /// the system's roots then, read only if a TLS worker appears).
    pub fn load(&self) -> Result<Option<crate::transport::tls::WorkerTls>, ConfigError> {
        let identity = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "worker_tls.cert and worker_tls.key go together: set both or neither".into(),
                ))
            }
        };
        if self.ca.is_none() && identity.is_none() {
            return Ok(None);
        }
        crate::transport::tls::WorkerTls::new(self.ca.as_deref(), identity)
            .map(Some)
            .map_err(|e| ConfigError::Invalid(format!("worker_tls: {e}")))
    }
}

impl Config {
    /// Reads a TOML file into a config (defaults for what it leaves out).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Checks ranges and relations between values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let d = &self.discovery;
        if d.kind.is_some() {
            let valid = !d.selector.is_empty()
                && d.selector.split(',').all(|term| {
                    term.split_once('=')
                        .is_some_and(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
                });
            if !valid {
                return Err(ConfigError::Invalid(format!(
                    "discovery.selector (--selector) {:?}: expected KEY=VALUE[,KEY=VALUE...], e.g. app=sglang-worker",
                    d.selector
                )));
            }
            if !matches!(d.scheme.as_str(), "grpc" | "grpcs" | "http" | "https") {
                return Err(ConfigError::Invalid(format!(
                    "discovery.scheme {:?}: use grpc, grpcs, http or https",
                    d.scheme
                )));
            }
        } else if !d.selector.is_empty() || d.namespace.is_some() || d.port.is_some() {
            return Err(ConfigError::Invalid(
                "--selector, --namespace and --pod-port apply to discovery: add --discover kubernetes".into(),
            ));
        }
        if let Some(url) = &self.registry.url {
            if self.registry.state_file.is_some() {
                return Err(ConfigError::Invalid(
                    "registry.url and registry.state_file (--registry and --state-file) are exclusive: with etcd the workers are kept in etcd; give one".into(),
                ));
            }
            crate::store::etcd::EtcdUrl::parse(url)
                .map_err(|e| ConfigError::Invalid(format!("registry.url {url:?}: {e}")))?;
        } else if self.registry.optional {
            return Err(ConfigError::Invalid(
                "registry.optional (--registry-optional) applies to an etcd registry: give --registry etcd://HOST:PORT/PREFIX".into(),
            ));
        }
        let hc = &self.health_check;
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if hc.interval_ms < 10 {
            return invalid(format!(
                "health_check.interval_ms must be at least 10 (got {})",
                hc.interval_ms
            ));
        }
        if hc.timeout_ms == 0 || hc.timeout_ms > hc.interval_ms {
            return invalid(format!(
                "health_check.timeout_ms must be between 1 and interval_ms ({}), got {}",
                hc.interval_ms, hc.timeout_ms
            ));
        }
        if hc.unhealthy_threshold == 0 || hc.healthy_threshold == 0 {
            return invalid("health_check thresholds must be at least 1".into());
        }
        if self.worker_threads == Some(0) {
            return invalid("worker_threads must be at least 1 (or unset for one per core)".into());
        }
        if self.upstream.connect_timeout_ms == 0 {
            return invalid("upstream.connect_timeout_ms must be at least 1".into());
        }
        self.policy.validate().map_err(ConfigError::Invalid)?;
        self.http.validate().map_err(ConfigError::Invalid)?;
        self.tracing.validate().map_err(ConfigError::Invalid)?;
        if !(1..=64).contains(&self.upstream.connections_per_worker) {
            return invalid("upstream.connections_per_worker must be between 1 and 64".into());
        }
        if self.upstream.keep_alive_interval_ms < 1_000 {
            return invalid("upstream.keep_alive_interval_ms must be at least 1000".into());
        }
        // Below 16 KiB a frame of the default size no longer fits; past
        // 16 MiB one stalled stream could hold that much.
        if !(16 * 1024..=16 * 1024 * 1024).contains(&self.upstream.stream_window_bytes) {
            return invalid(format!(
                "upstream.stream_window_bytes must be between 16384 and 16777216, got {}",
                self.upstream.stream_window_bytes
            ));
        }
        if self.limits.default_deadline_ms == 0 || self.limits.request_body_idle_ms == 0 {
            return invalid(
                "limits.default_deadline_ms and limits.request_body_idle_ms must be at least 1"
                    .into(),
            );
        }
        if self.shutdown.drain_ms == 0 {
            return invalid("shutdown.drain_ms must be at least 1".into());
        }
        self.breaker.validate().map_err(ConfigError::Invalid)?;
        self.auth.validate().map_err(ConfigError::Invalid)?;
        self.worker_hosts.validate().map_err(ConfigError::Invalid)?;
        if self.limits.max_metadata_bytes < 1024 {
            return invalid(format!(
                "limits.max_metadata_bytes must be at least 1024, got {}",
                self.limits.max_metadata_bytes
            ));
        }
        if self.limits.max_workers == 0 {
            return invalid("limits.max_workers must be at least 1".into());
        }
        // A client certificate is an admin's credential too.
        let client_certs = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        if self.auth.admin_keys.is_empty() && !client_certs {
            let wide = std::iter::once(self.grpc_listen)
                .chain(self.http_listen)
                .find(|a| !a.ip().is_loopback());
            if let Some(addr) = wide {
                return invalid(format!(
                    "no admin keys are configured, so worker management would be open to anyone \
                     who reaches {addr}: set auth.admin_keys in the config file (or {}), \
                     require client certificates (tls.client_ca), or listen on a loopback \
                     address",
                    crate::auth::ADMIN_KEYS_ENV
                ));
            }
        }
        self.retry.validate().map_err(ConfigError::Invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_listen_on_loopback() {
        let c = Config::default();
        c.validate().unwrap();
        assert!(c.grpc_listen.ip().is_loopback());
    }

    #[test]
    fn toml_fills_the_tree_and_rejects_unknown_fields() {
        let c: Config = toml::from_str(
            r#"
            grpc_listen = "0.0.0.0:6000"
            [health_check]
            interval_ms = 100
            timeout_ms = 50
            [[workers]]
            url = "grpc://127.0.0.1:7001"
            model_id = "llama"
            "#,
        )
        .unwrap();
        assert_eq!(c.grpc_listen.port(), 6000);
        assert_eq!(c.health_check.unhealthy_threshold, 3);
        assert_eq!(c.workers[0].role, WorkerRole::Regular);
        let err = toml::from_str::<Config>("grpc_listn = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("grpc_listn"), "{err}");
    }

    #[test]
    fn a_bad_trace_endpoint_or_ratio_is_refused_naming_it() {
        let mut c = Config::default();
        for (endpoint, ok) in [
            ("http://collector:4317", true),
            ("https://collector:4317", true),
            ("collector:4317", false),
            ("grpc://collector:4317", false),
            ("http://", false),
        ] {
            c.tracing.otlp_endpoint = Some(endpoint.into());
            match c.validate() {
                Ok(()) => assert!(ok, "{endpoint} accepted"),
                Err(e) => {
                    assert!(!ok, "{endpoint}: {e}");
                    assert!(e.to_string().contains("tracing.otlp_endpoint"), "{e}");
                }
            }
        }
        c.tracing.otlp_endpoint = None;
        c.tracing.sample_ratio = 1.5;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("tracing.sample_ratio"), "{err}");
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut c = Config::default();
        c.health_check.timeout_ms = c.health_check.interval_ms + 1;
        assert!(c.validate().unwrap_err().to_string().contains("timeout_ms"));
    }
}
