//! The router's own side: its HTTP listener and client, what one call may
//! hold, how it stops, retries, traces, and TLS on its listeners.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// `reload_check_ms` when a `[tls]` section leaves it out: 5 s.
pub fn default_reload_check_ms() -> u64 {
    5_000
}
