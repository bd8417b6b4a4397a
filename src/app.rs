//! Wiring: the registry, policy, router, services and health, built once
//! from a [`Config`] and then served on a listener until a shutdown signal.
//!
//! `App::build` does everything that can fail because of configuration
//! (including registering startup workers) before a socket is touched;
//! `App::serve` runs. Background tasks (health checker, serving reporter)
//! start in `serve` and stop when it returns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic_health::server::HealthReporter;

use crate::admission::hosts::HostPolicy;
use crate::admission::{AddError, Admission, WorkerRequest};
use crate::config::{Config, ConfigError, UpstreamConfig, WorkerTlsConfig};
use crate::engines;
use crate::routers::grpc::GrpcRouter;
use crate::routers::http::HttpRouter;
use crate::routers::rooms::BootstrapRooms;
use crate::routers::select::Retries;
use crate::services::openai::Formats;
use crate::services::tls::ServerTls;
use crate::store::etcd::SharedRegistry;
use crate::store::file::StateFile;
use crate::store::Store;
use crate::telemetry::Telemetry;
use crate::tokenizer::Tokenizers;
use crate::transport::grpc::ChannelConfig;
use crate::transport::http1::{HttpClient, HttpClientConfig};
use crate::transport::tls::WorkerTls;
use crate::worker::{RegistryError, SpecError, WorkerRegistry, WorkerRole};
use tokio_util::task::AbortOnDropHandle;

mod serve;

/// Why the router could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A startup worker could not be registered.
    #[error("startup worker {url}: {source}")]
    Worker {
        /// The worker's url.
        url: String,
        /// Why.
        source: AddError,
    },
    /// A TLS file of the listeners cannot be used.
    #[error("tls: {0}")]
    Tls(#[from] crate::transport::tls::TlsError),
    /// The shared registry (etcd) cannot be used.
    #[error("registry: {0}")]
    Registry(String),
    /// The state file cannot be used.
    #[error(transparent)]
    StateFile(#[from] crate::store::file::StateFileError),
    /// Discovery cannot start.
    #[error(transparent)]
    Discovery(#[from] crate::discovery::DiscoveryError),
    /// Traces cannot be exported as configured.
    #[error(transparent)]
    Tracing(#[from] crate::telemetry::TracingError),
    /// Reflection could not load the descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// The sockets `App::serve` serves on: gRPC always, HTTP if configured.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC: worker management, inference, health, reflection.
    pub grpc: TcpListener,
    /// HTTP: inference, models, health, readiness, worker management.
    pub http: Option<TcpListener>,
    /// Admin: metrics, liveness and readiness.
    pub admin: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(grpc: TcpListener) -> Self {
        Listeners {
            grpc,
            http: None,
            admin: None,
        }
    }
}

/// A built router, ready to serve.
#[derive(Debug)]
pub struct App {
    config: Config,
    registry: Arc<WorkerRegistry>,
    router: Arc<GrpcRouter>,
    http_router: Arc<HttpRouter>,
    tokenizers: Arc<Tokenizers>,
    /// Tool-call and reasoning formats by model, from the config.
    formats: Arc<Formats>,
    health: HealthReporter,
    /// Which hosts may be added as workers.
    hosts: Arc<HostPolicy>,
    /// The listeners' TLS, if configured.
    server_tls: Option<Arc<ServerTls>>,
    /// TLS to `https://` workers, if configured.
    http_tls: Option<Arc<rustls::ClientConfig>>,
    /// The retry budget both routers share.
    retries: Arc<Retries>,
    /// What adding an HTTP worker asks it with.
    probes: HttpClient,
    /// Where runtime-added workers are kept.
    store: Arc<Store>,
    /// The etcd mirror, if the registry is shared; stops with the app.
    _mirror: Option<AbortOnDropHandle<()>>,
    /// This router's announcement in etcd (the routers sharing tenants'
    /// limits), if the registry is shared; withdrawn with the app.
    _presence: Option<AbortOnDropHandle<()>>,
    /// Kubernetes discovery, if configured; stops with the app.
    _discovery: Option<AbortOnDropHandle<()>>,
    /// The trace exporter, if tracing is on; flushed when serving ends.
    telemetry: Option<Telemetry>,
    /// The tenants, reloaded from the config file.
    tenants: Arc<crate::tenants::Tenants>,
}

impl App {
    /// Validates `config`, builds every component and registers the startup
    /// workers, so they are routable before the router reports SERVING.
    pub async fn build(config: Config) -> Result<App, AppError> {
        config.validate()?;
        let server_tls = config.tls.as_ref().map(ServerTls::load).transpose()?;
        let worker_tls = worker_tls(&config.worker_tls)?;
        let mut channel = channel_config(&config.upstream);
        channel.tls = worker_tls.as_ref().map(|t| t.grpc.clone());
        let http_tls = worker_tls.map(|t| t.http);
        let registry = Arc::new(
            WorkerRegistry::new(channel)
                .with_circuit(config.breaker.clone())
                .with_max_workers(config.limits.max_workers)
                .with_max_in_flight_per_worker(config.limits.max_in_flight_per_worker),
        );
        let hosts = Arc::new(HostPolicy::new(&config.worker_hosts));
        // HTTP workers are asked `GET /health` when added.
        let probes = HttpClient::new(&HttpClientConfig {
            connect_timeout: config.health_check.timeout(),
            response_timeout: config.health_check.timeout(),
            pool_idle_per_worker: 0,
            tls: http_tls.clone(),
        });
        let store = Arc::new(match (&config.registry.url, &config.registry.state_file) {
            (Some(url), _) => Store::Etcd(
                SharedRegistry::connect(url, registry.clone(), config.registry.optional)
                    .await
                    .map_err(AppError::Registry)?,
            ),
            (None, Some(path)) => Store::File(StateFile::new(path.clone())),
            (None, None) => Store::Memory,
        });
        // Read (and refuse a bad file) before contacting any worker.
        let saved = match &*store {
            Store::File(file) => file.load()?,
            _ => Vec::new(),
        };
        let mirror = match &*store {
            Store::Etcd(shared) => Some(AbortOnDropHandle::new(tokio::spawn(
                shared.clone().mirror(),
            ))),
            _ => None,
        };
        let tenants = Arc::new(crate::tenants::Tenants::new(&config.tenants));
        // With a shared registry, each router enforces its share of every
        // tenant's limits.
        let presence = match &*store {
            Store::Etcd(shared) => {
                let tenants = tenants.clone();
                Some(AbortOnDropHandle::new(tokio::spawn(
                    shared.clone().announce(move |n| tenants.set_share(n)),
                )))
            }
            _ => None,
        };
        let admission = Admission::new(
            (registry.clone(), store.clone()),
            &config.health_check,
            hosts.clone(),
            probes.clone(),
        );
        let tokenizers = Tokenizers::load(
            &config
                .tokenizers
                .iter()
                .map(|(m, p)| (m.clone(), p.clone()))
                .collect::<Vec<_>>(),
        );
        // Models without a configured tokenizer get their workers'.
        tokenizers.follow(&registry);
        let formats = Formats {
            tools: parse_formats(&config.tool_parsers, "tool_parsers")?,
            reasoning: parse_formats(&config.reasoning_parsers, "reasoning_parsers")?,
        };
        for w in &config.workers {
            let engine = w
                .engine
                .as_deref()
                .map(engines::by_name)
                .transpose()
                .map_err(|reason| AppError::Worker {
                    url: w.url.clone(),
                    source: AddError::Registry(SpecError::UnknownEngine(reason).into()),
                })?;
            let request = WorkerRequest {
                url: w.url.clone(),
                model_id: w.model_id.clone(),
                role: match w.role.as_str() {
                    "" => Ok(WorkerRole::Regular),
                    role => role.parse(),
                }
                .map_err(|reason| AppError::Worker {
                    url: w.url.clone(),
                    source: AddError::Registry(SpecError::InvalidRole(reason).into()),
                })?,
                bootstrap_port: w.bootstrap_port,
                labels: w.labels.clone(),
                engine,
            };
            match admission.add_startup(request).await {
                Ok(_) => {}
                // Shared registry: another router (or this one, before a
                // restart) registered it already.
                Err(AddError::Registry(RegistryError::AlreadyExists { .. }))
                    if matches!(*store, Store::Etcd(_)) => {}
                Err(source) => {
                    return Err(AppError::Worker {
                        url: w.url.clone(),
                        source,
                    })
                }
            }
        }
        if let Store::File(file) = &*store {
            file.restore(&registry, saved)?;
        }
        let discovery = match config.discovery.kind {
            Some(crate::config::DiscoveryKind::Kubernetes) => {
                let discovery = crate::discovery::KubernetesDiscovery::new(
                    config.discovery.clone(),
                    admission.clone(),
                    registry.clone(),
                )
                .await?;
                Some(AbortOnDropHandle::new(tokio::spawn(
                    discovery.run(std::future::pending()),
                )))
            }
            None => None,
        };
        let rooms = BootstrapRooms::default();
        let retries = Arc::new(Retries::new(&config.retry));
        let (telemetry, tracer) = Telemetry::start(&config.tracing)?;
        if let Some(endpoint) = &config.tracing.otlp_endpoint {
            tracing::info!(%endpoint, sample_ratio = config.tracing.sample_ratio, "exporting traces over OTLP");
        }

        let router = Arc::new(
            GrpcRouter::new(
                registry.clone(),
                &config.policy,
                rooms.clone(),
                &config.limits,
                tokenizers.clone(),
                retries.clone(),
            )
            .traced(tracer.clone()),
        );
        let http_router = Arc::new(
            HttpRouter::new(
                registry.clone(),
                &config.policy,
                (&config.http, http_tls.clone()),
                rooms,
                retries.clone(),
            )
            .traced(tracer),
        );
        Ok(App {
            config,
            registry,
            router,
            http_router,
            tokenizers,
            formats: Arc::new(formats),
            health: HealthReporter::new(),
            hosts,
            server_tls,
            http_tls,
            retries,
            probes,
            store,
            _mirror: mirror,
            _presence: presence,
            _discovery: discovery,
            telemetry,
            tenants,
        })
    }

    /// How workers are added: identified within the health-check timeout.
    fn admission(&self) -> Admission {
        Admission::new(
            (self.registry.clone(), self.store.clone()),
            &self.config.health_check,
            self.hosts.clone(),
            self.probes.clone(),
        )
    }

    /// The registry this app routes from.
    pub fn registry(&self) -> &Arc<WorkerRegistry> {
        &self.registry
    }

    /// The listeners' TLS, when `[tls]` is set (its reload counts).
    pub fn server_tls(&self) -> Option<&Arc<ServerTls>> {
        self.server_tls.as_ref()
    }

    /// The configuration it was built from.
    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// The channel settings of `[upstream]`.
fn channel_config(upstream: &UpstreamConfig) -> ChannelConfig {
    ChannelConfig {
        connect_timeout: Duration::from_millis(upstream.connect_timeout_ms),
        keep_alive_interval: Duration::from_millis(upstream.keep_alive_interval_ms),
        connections: upstream.connections_per_worker,
        stream_window: upstream.stream_window_bytes,
        tls: None,
    }
}

/// The client configs `[worker_tls]`'s files make (`None` when nothing is
/// set: the system's roots then, read only if a TLS worker appears).
fn worker_tls(config: &WorkerTlsConfig) -> Result<Option<WorkerTls>, ConfigError> {
    let identity = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        _ => None,
    };
    if config.ca.is_none() && identity.is_none() {
        return Ok(None);
    }
    WorkerTls::new(config.ca.as_deref(), identity)
        .map(Some)
        .map_err(|e| ConfigError::Invalid(format!("worker_tls: {e}")))
}

/// A config section of formats by model (`[tool_parsers]`,
/// `[reasoning_parsers]`), each parsed, or an error naming the entry.
fn parse_formats<F: std::str::FromStr<Err = String>>(
    section: &std::collections::BTreeMap<String, String>,
    name: &str,
) -> Result<HashMap<String, F>, ConfigError> {
    section
        .iter()
        .map(|(model, format)| {
            format
                .parse::<F>()
                .map(|f| (model.clone(), f))
                .map_err(|e| ConfigError::Invalid(format!("{name}.{model}: {e}")))
        })
        .collect()
}
