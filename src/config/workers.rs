//! Workers: those registered at startup, how they are checked and
//! reached (health checks, connections, TLS), where runtime-added ones are
//! kept (registry), and discovery.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// Its role: `regular` (the default; also an empty string), `prefill`
    /// or `decode`. Checked when the router starts.
    #[serde(default = "regular")]
    pub role: String,
    /// Prefill workers' bootstrap port.
    #[serde(default)]
    pub bootstrap_port: Option<u32>,
    /// Operator labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn regular() -> String {
    "regular".into()
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
    /// Take a worker registered without being contacted (engine and model
    /// given, or a switchyard worker) as healthy at once, as routers before
    /// this setting did. Off (the default): it is listed `unchecked`, kept
    /// out of rotation, checked at once, and joins when that check passes.
    pub trust_unchecked: bool,
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
            trust_unchecked: false,
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
    /// The transport's own defaults (`transport::grpc::ChannelConfig`; a
    /// test in `app` keeps the two equal).
    fn default() -> Self {
        UpstreamConfig {
            connect_timeout_ms: 2_000,
            keep_alive_interval_ms: 30_000,
            connections_per_worker: 2,
            stream_window_bytes: 64 * 1024,
        }
    }
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
    /// What is wrong with these values, if anything (the files are read
    /// when the router starts).
    pub fn validate(&self) -> Result<(), String> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(
                "worker_tls.cert and worker_tls.key go together: set both or neither".into(),
            );
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
