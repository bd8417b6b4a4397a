//! One configuration tree for the router: data only.
//!
//! Every knob lives here, as serde structs with defaults and
//! `deny_unknown_fields`; a TOML file (`--config`) fills the tree and command
//! line flags override fields of the same tree (see `cli`). [`Config::validate`]
//! runs once, before anything is built. This module imports nothing else of
//! the crate: each layer builds its runtime objects from its own section
//! (`CallLimit::from_config`, `policies::build`, `app`'s wiring of the
//! transport), and names a worker's role or engine checks them then.
//!
//! One file per concern: [`server`] (listeners, limits, shutdown, retries,
//! traces), [`workers`] (startup workers, health checks, connections, TLS to
//! workers, registry, discovery), [`policy`], [`breaker`], [`auth`],
//! [`hosts`].

pub mod auth;
pub mod breaker;
pub mod hosts;
pub mod policy;
pub mod server;
pub mod tenants;
pub mod workers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use auth::{AuthConfig, ADMIN_KEYS_ENV, CLIENT_KEYS_ENV, MIN_KEY_LEN};
pub use breaker::{CircuitConfig, BREAKER_BUCKETS};
pub use hosts::WorkerHostsConfig;
pub use policy::{
    CacheAwareConfig, ConsistentHashConfig, KvAwareConfig, PdPolicyOverride, PolicyConfig,
    PolicyKind,
};
pub use server::{
    HttpConfig, LimitsConfig, RetryConfig, ServerTlsConfig, ShutdownConfig, TracingConfig,
};
pub use tenants::{Priority, TenantConfig};
pub use workers::{
    DiscoveryConfig, DiscoveryKind, HealthCheckConfig, RegistryConfig, StartupWorker,
    UpstreamConfig, WorkerTlsConfig,
};

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
    /// Tool-call formats by model (`hermes`, `llama3_json`, `mistral`,
    /// `pythonic`, `deepseek_v3`), for
    /// chat requests with `tools`; a model without one has its format
    /// detected from its chat template.
    pub tool_parsers: BTreeMap<String, String>,
    /// Reasoning formats by model (`qwen3`, `deepseek-r1`, `kimi`, `gpt-oss`), for
    /// splitting a reasoning model's thought out of chat answers; a model
    /// without one has its format detected from its chat template.
    pub reasoning_parsers: BTreeMap<String, String>,
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
    /// Tenants: their keys, limits and places in the queue (reloaded on
    /// SIGHUP and when the file changes).
    pub tenants: Vec<TenantConfig>,
    /// The file this config was read from, if any (not a key of it): the
    /// tenants are reloaded from it.
    #[serde(skip)]
    pub source: Option<PathBuf>,
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
            tool_parsers: BTreeMap::new(),
            reasoning_parsers: BTreeMap::new(),
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
            tenants: Vec::new(),
            source: None,
        }
    }
}

impl Config {
    /// Reads a TOML file into a config (defaults for what it leaves out).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        Config::read(path, None)
    }

    /// Reads and parses `path`, with `auth` in place of its `[auth]` if
    /// given; its tenants' errors name their lines.
    fn read(path: &Path, auth: Option<&AuthConfig>) -> Result<Config, ConfigError> {
        let parse = |message: String| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| parse(e.to_string()))?;
        if let Some(auth) = auth {
            config.auth = auth.clone();
        }
        config
            .validate_tenants(Some(&text))
            .map_err(|e| parse(e.to_string()))?;
        config.source = Some(path.to_path_buf());
        Ok(config)
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
            if !url.starts_with("etcd://") {
                return Err(ConfigError::Invalid(format!(
                    "registry.url {url:?}: expected etcd://HOST:PORT[,HOST:PORT...]/PREFIX"
                )));
            }
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
        self.worker_tls.validate().map_err(ConfigError::Invalid)?;
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
                    ADMIN_KEYS_ENV
                ));
            }
        }
        self.retry.validate().map_err(ConfigError::Invalid)?;
        self.validate_tenants(None)?;
        Ok(())
    }

    /// Checks the tenants against each other and the role keys; `text`,
    /// the file's, lets an error name the line.
    pub fn validate_tenants(&self, text: Option<&str>) -> Result<(), ConfigError> {
        let role_keys: Vec<&String> = self
            .auth
            .admin_keys
            .iter()
            .chain(&self.auth.client_keys)
            .collect();
        tenants::validate(&self.tenants, &role_keys, text).map_err(ConfigError::Invalid)
    }

    /// The tenants of the file at `path` (for a reload): the whole file must
    /// parse, and its tenants be valid beside `auth`'s keys.
    pub fn tenants_from_file(
        path: &Path,
        auth: &AuthConfig,
    ) -> Result<Vec<TenantConfig>, ConfigError> {
        Config::read(path, Some(auth)).map(|c| c.tenants)
    }
}

#[cfg(test)]
mod tests;
