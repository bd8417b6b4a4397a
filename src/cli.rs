//! The command line. Flags override fields of the one [`Config`] tree (after
//! `--config FILE`, if given); they are not a second configuration path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, StartupWorker, DEFAULT_GRPC_LISTEN};
use crate::engines;
use crate::policies::PolicyKind;
use crate::worker::{Engine, WorkerRole};

/// Switchyard: a gRPC-first router for fleets of LLM inference workers.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// Log lines as text (for people; colours only on a terminal) or JSON
    /// (one object a line, for log shippers). Level: `RUST_LOG`.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the router.
    Serve(Box<ServeArgs>),
    /// Run the router with two in-process mock workers and print how to call it.
    Demo(DemoArgs),
    /// Manage a running router's workers (list, get, add, remove, watch).
    Workers(crate::ctl::WorkersArgs),
    /// Show a running router's tenants (list).
    Tenants(crate::ctl::TenantsArgs),
    /// Send a prompt to a running router and print the reply as it streams.
    Generate(crate::ctl::GenerateArgs),
    /// Measure a router: replay a production trace (`bench replay`), plot runs (`bench plot`).
    Bench(crate::replay::BenchArgs),
}

/// `switchyard serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// A TOML config file; flags below override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// gRPC listen address (default 127.0.0.1:50051; port 0 picks a free one).
    #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
    pub grpc_listen: Option<SocketAddr>,
    /// HTTP listen address (off unless given), e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
    pub http_listen: Option<SocketAddr>,
    /// Admin listen address (off unless given): Prometheus `/metrics`,
    /// `/livez`, `/readyz`; no keys, so keep it on loopback or fenced.
    #[arg(long, value_name = "ADDR", value_parser = listen_addr)]
    pub admin_listen: Option<SocketAddr>,
    /// Export OpenTelemetry traces to this OTLP/gRPC collector, e.g.
    /// http://127.0.0.1:4317 (off unless given; see `[tracing]`).
    #[arg(long, value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// A worker to register at startup (repeatable), e.g. grpc://127.0.0.1:7001.
    #[arg(long = "worker", value_name = "URL")]
    pub workers: Vec<String>,
    /// The model served by the --worker workers (for SGLang and vLLM
    /// workers, default: the engine's served model name).
    #[arg(long, value_name = "ID")]
    pub model: Option<String>,
    /// The engine (its help names every engine in `engines::ALL`).
    #[arg(long, value_name = "ENGINE", value_parser = engines::by_name,
          help = format!("The engine of the --worker workers: {} (default: ask each worker at startup)", engines::names(" or ")))]
    pub engine: Option<Engine>,
    /// Load-balancing policy.
    #[arg(long, value_name = "NAME")]
    pub policy: Option<PolicyKind>,
    /// Runtime worker threads (default: one per core; 1: single-threaded).
    #[arg(long, value_name = "N")]
    pub worker_threads: Option<usize>,
    /// Health-check interval in milliseconds.
    #[arg(long, value_name = "MS")]
    pub health_interval_ms: Option<u64>,
    /// Health-check timeout in milliseconds.
    #[arg(long, value_name = "MS")]
    pub health_timeout_ms: Option<u64>,
    /// Consecutive failed checks before a worker is unhealthy.
    #[arg(long, value_name = "N")]
    pub unhealthy_threshold: Option<u32>,
    /// A model's tokenizer, MODEL=PATH (a Hugging Face tokenizer directory
    /// or tokenizer.json), for text and chat requests to SGLang and vLLM
    /// workers; repeatable.
    #[arg(long = "tokenizer", value_name = "MODEL=PATH")]
    pub tokenizers: Vec<String>,
    /// A model's tool-call format, MODEL=FORMAT (hermes, llama3_json,
    /// mistral, pythonic or deepseek_v3), for chat requests with tools
    /// (default: detected from the model's chat template).
    #[arg(long = "tool-parser", value_name = "MODEL=FORMAT")]
    pub tool_parsers: Vec<String>,
    /// A model's reasoning format, MODEL=FORMAT (qwen3, deepseek-r1, kimi
    /// or gpt-oss), for splitting its thought into reasoning_content
    /// (default: detected from the model's chat template).
    #[arg(long = "reasoning-parser", value_name = "MODEL=FORMAT")]
    pub reasoning_parsers: Vec<String>,
    /// How often SGLang and vLLM workers are asked for their load
    /// (GetLoads), in milliseconds; 0 turns it off.
    #[arg(long, value_name = "MS")]
    pub loads_interval_ms: Option<u64>,
    /// Consecutive passed checks before a worker is healthy again.
    #[arg(long, value_name = "N")]
    pub healthy_threshold: Option<u32>,
    /// Serve TLS on both listeners with this PEM certificate chain (with
    /// --tls-key; reloaded on SIGHUP or when the files change).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The listeners' PEM private key.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Verify client certificates against this CA bundle; worker
    /// management then requires one.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// The CA bundle that grpcs:// and https:// workers' certificates must
    /// chain to (default: the system's roots).
    #[arg(long, value_name = "PEM")]
    pub worker_ca: Option<PathBuf>,
    /// Share the registry with other routers through etcd:
    /// etcd://HOST:PORT[,HOST:PORT...]/PREFIX.
    #[arg(long, value_name = "URL")]
    pub registry: Option<String>,
    /// Start even if etcd cannot be reached (no shared workers until it can).
    #[arg(long, requires = "registry")]
    pub registry_optional: bool,
    /// Keep the workers added at runtime in this file across restarts
    /// (one router without etcd).
    #[arg(long, value_name = "PATH", conflicts_with = "registry")]
    pub state_file: Option<PathBuf>,
    /// Discover workers: `kubernetes` (Ready pods matching --selector).
    #[arg(long, value_name = "KIND")]
    pub discover: Option<crate::config::DiscoveryKind>,
    /// The pods' label selector, KEY=VALUE[,KEY=VALUE...].
    #[arg(long, value_name = "SELECTOR")]
    pub selector: Option<String>,
    /// The pods' namespace (default: the router's own).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// The workers' port, for pods without a switchyard.io/port annotation.
    #[arg(long, value_name = "PORT")]
    pub pod_port: Option<u16>,
}

impl ServeArgs {
    /// The config file (or defaults) with these flags applied.
    pub fn to_config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        // Keys from the environment too, never from flags.
        config.auth.add_env_keys();
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            let reload_check_ms = config
                .tls
                .as_ref()
                .map_or_else(crate::config::server::default_reload_check_ms, |t| {
                    t.reload_check_ms
                });
            config.tls = Some(crate::config::ServerTlsConfig {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
                reload_check_ms,
            });
        }
        if let Some(ca) = &self.worker_ca {
            config.worker_tls.ca = Some(ca.clone());
        }
        if let Some(url) = &self.registry {
            config.registry.url = Some(url.clone());
        }
        config.registry.optional |= self.registry_optional;
        if let Some(kind) = self.discover {
            config.discovery.kind = Some(kind);
        }
        if let Some(selector) = &self.selector {
            config.discovery.selector = selector.clone();
        }
        if let Some(ns) = &self.namespace {
            config.discovery.namespace = Some(ns.clone());
        }
        if let Some(port) = self.pod_port {
            config.discovery.port = Some(port);
        }
        if let Some(path) = &self.state_file {
            config.registry.state_file = Some(path.clone());
        }
        if let Some(addr) = self.grpc_listen {
            config.grpc_listen = addr;
        }
        if let Some(addr) = self.http_listen {
            config.http_listen = Some(addr);
        }
        if let Some(addr) = self.admin_listen {
            config.admin_listen = Some(addr);
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            config.tracing.otlp_endpoint = Some(endpoint.clone());
        }
        if !self.workers.is_empty() {
            config
                .workers
                .extend(self.workers.iter().map(|url| StartupWorker {
                    url: url.clone(),
                    model_id: self.model.clone().unwrap_or_default(),
                    engine: self.engine.map(|e| e.name().to_string()),
                    role: WorkerRole::Regular.to_string(),
                    bootstrap_port: None,
                    labels: Default::default(),
                }));
        } else if self.model.is_some() || self.engine.is_some() {
            return Err(ConfigError::Invalid(
                "--model and --engine apply to --worker; give at least one --worker URL".into(),
            ));
        }
        for t in &self.tokenizers {
            let (model, path) = model_pair(t, "--tokenizer", "MODEL=PATH", "llama=/models/llama")?;
            config.tokenizers.insert(model.to_string(), path.into());
        }
        for t in &self.tool_parsers {
            let (model, format) = model_pair(t, "--tool-parser", "MODEL=FORMAT", "qwen=hermes")?;
            config
                .tool_parsers
                .insert(model.to_string(), format.to_string());
        }
        for t in &self.reasoning_parsers {
            let (model, format) =
                model_pair(t, "--reasoning-parser", "MODEL=FORMAT", "r1=deepseek-r1")?;
            config
                .reasoning_parsers
                .insert(model.to_string(), format.to_string());
        }
        if let Some(n) = self.worker_threads {
            config.worker_threads = Some(n);
        }
        if let Some(policy) = self.policy {
            config.policy.name = policy;
        }
        let hc = &mut config.health_check;
        hc.interval_ms = self.health_interval_ms.unwrap_or(hc.interval_ms);
        hc.loads_interval_ms = self.loads_interval_ms.unwrap_or(hc.loads_interval_ms);
        hc.timeout_ms = self.health_timeout_ms.unwrap_or(hc.timeout_ms);
        hc.unhealthy_threshold = self.unhealthy_threshold.unwrap_or(hc.unhealthy_threshold);
        hc.healthy_threshold = self.healthy_threshold.unwrap_or(hc.healthy_threshold);
        config.validate()?;
        Ok(config)
    }
}

/// `switchyard demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the router listens.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_GRPC_LISTEN, value_parser = listen_addr)]
    pub grpc_listen: SocketAddr,
    /// Tokens each mock worker streams per request.
    #[arg(long, default_value_t = 16)]
    pub tokens: u32,
    /// Pause before each token, in milliseconds, so streaming is visible.
    #[arg(long, default_value_t = 50)]
    pub token_delay_ms: u64,
}

impl DemoArgs {
    /// Per-token delay.
    pub fn token_delay(&self) -> Duration {
        Duration::from_millis(self.token_delay_ms)
    }
}

/// A listen address: `IP:PORT`, or `HOST:PORT` with a name that resolves
/// (`localhost:50051`; an IPv4 address is preferred when it has both).
pub fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("{text:?} is not HOST:PORT or IP:PORT ({e})"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// A `MODEL=VALUE` flag's two halves, both non-empty.
fn model_pair<'a>(
    given: &'a str,
    flag: &str,
    shape: &str,
    example: &str,
) -> Result<(&'a str, &'a str), ConfigError> {
    given
        .split_once('=')
        .filter(|(m, v)| !m.is_empty() && !v.is_empty())
        .ok_or_else(|| {
            ConfigError::Invalid(format!(
                "{flag} {given:?}: expected {shape}, e.g. {flag} {example}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_take_names() {
        assert_eq!(
            listen_addr("localhost:50052").unwrap(),
            "127.0.0.1:50052".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(listen_addr("[::1]:7").unwrap().port(), 7);
        assert!(listen_addr("localhost").unwrap_err().contains("HOST:PORT"));
    }

    fn serve(args: &[&str]) -> Result<Config, ConfigError> {
        let cli = Cli::try_parse_from([&["switchyard", "serve"], args].concat()).unwrap();
        let Command::Serve(serve) = cli.command else {
            unreachable!()
        };
        serve.to_config()
    }

    #[test]
    fn flags_override_the_tree() {
        let c = serve(&[
            "--grpc-listen",
            "127.0.0.1:0",
            "--worker",
            "grpc://h:1",
            "--worker",
            "grpc://h:2",
            "--model",
            "m",
            "--unhealthy-threshold",
            "5",
        ])
        .unwrap();
        assert_eq!(c.grpc_listen.port(), 0);
        assert_eq!(c.workers.len(), 2);
        assert_eq!(c.workers[1].model_id, "m");
        assert_eq!(c.health_check.unhealthy_threshold, 5);
    }

    #[test]
    fn worker_without_model_leaves_it_to_the_engine() {
        let c = serve(&["--worker", "grpc://h:1", "--engine", "sglang"]).unwrap();
        assert_eq!(c.workers[0].model_id, "");
        assert_eq!(c.workers[0].engine.as_deref(), Some("sglang"));
        let err = serve(&["--engine", "vllm"]).unwrap_err().to_string();
        assert!(err.contains("--worker"), "{err}");
        let err = Cli::try_parse_from(["switchyard", "serve", "--engine", "tgi"])
            .unwrap_err()
            .to_string();
        // Every engine is named, as `engines::ALL` lists them.
        assert!(err.contains("\"tgi\""), "{err}");
        for seam in engines::ALL {
            assert!(err.contains(seam.engine().name()), "{err}");
        }
    }

    #[test]
    fn unknown_policy_lists_the_known_ones() {
        let err = Cli::try_parse_from(["switchyard", "serve", "--policy", "fastest"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("round_robin"), "{err}");
    }
}
